"""Plurality-vote accuracy for large voter pools: windowed exact evaluation, histogram
Monte-Carlo, and the dispatcher the vote stage calls.

Pure numpy/scipy on in-memory histograms: no I/O.  Vocabulary as in
:mod:`ensemble.voting.estimators`: a problem's pool is a :class:`~ensemble.voting.estimators.Histogram`
``(g, others, a)`` of N voters, a committee is a uniformly random k-subset of them, it
votes by plurality over non-null answers, a t-way tie at the top that includes gold is
won with probability ``1/t``, and a committee without a gold vote is wrong.

:func:`ensemble.voting.estimators.exact_accuracy` computes every committee size ``1..k_max`` in
about ``O(m^2 N^3)`` time and ``O(m N^2)`` memory (m wrong classes): fine for hundreds
of voters, out of reach at 10^4-10^5.  :func:`windowed_accuracy` computes only the
requested sizes, at a cost per (problem, k) that does not grow with N (it grows with the
standard deviation of the vote counts, at most ``sqrt(k)``, and with the number of
wrong classes that come near gold), and returns a proven bound on its truncation error.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
from scipy import fft as _fft
from scipy.special import gammaln, roots_legendre
from scipy.stats import binom

from ensemble.voting.estimators import Histogram, exact_matrix

__all__ = [
    "windowed_accuracy",
    "histogram_monte_carlo",
    "accuracy_matrix",
    "MCHalfwidth",
]

#: computed tail bounds are multiplied by this, covering the relative rounding error
#: of the log-gamma differences they are built from (about 1e-10 at N = 10^5).
_INFLATE = 1.0 + 1e-6
#: complex scratch per column block of the Fourier sum (bytes), bounds peak memory.
_BLOCK_BYTES = 32 * 2**20
#: problems with at most this many voters always use the polynomial method.
_EXACT_ALWAYS_N = 256
#: the polynomial method's weight matrices may use at most this many bytes.
_EXACT_MAX_BYTES = 256 * 2**20


# ----------------------------------------------------------------- hypergeometric tails
#
# X ~ Hypergeom(N, K, n): n of N voters drawn, K of them marked.  Its pmf is log-concave
# (the ratio p(x+1)/p(x) = (K-x)(n-x) / ((x+1)(N-K-n+x+1)) decreases in x), so past the
# mode P(X >= x) = p(x) sum_d prod_{y<x+d} p(y+1)/p(y) <= p(x) / (1 - p(x+1)/p(x)), and
# symmetrically below it.  These bounds are tight to a factor 1/(1 - ratio) and cost
# one log-gamma evaluation; everything below works with arrays (broadcast K, n, x).


def _bounds(x, N: int, K, n):
    """``(dn, up)`` with ``dn >= P(X <= x)`` and ``up >= P(X >= x)``, X ~ HG(N, K, n).

    Exact 0 / 1 outside the support; 1 where the geometric bound does not apply
    (x on the wrong side of the mode).  ``x, K, n`` broadcast; floats are fine.
    """
    x, K, n = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (x, K, n)))
    lo_s = np.maximum(0.0, n - (N - K))
    hi_s = np.minimum(n, K)
    xc = np.clip(x, lo_s, hi_s)
    lp = (gammaln(K + 1.0) + gammaln(N - K + 1.0) - gammaln(N + 1.0) + gammaln(n + 1.0)
          + gammaln(N - n + 1.0) - gammaln(xc + 1.0) - gammaln(K - xc + 1.0)
          - gammaln(n - xc + 1.0) - gammaln(N - K - n + xc + 1.0))
    pmf = np.exp(lp) * _INFLATE
    den_u = (xc + 1.0) * (N - K - n + xc + 1.0)
    gap_u = den_u - (K - xc) * (n - xc)  # den * (1 - ratio up)
    den_d = (K - xc + 1.0) * (n - xc + 1.0)
    gap_d = den_d - xc * (N - K - n + xc)  # den * (1 - ratio down)
    up = np.where(gap_u > 0, pmf * den_u / np.where(gap_u > 0, gap_u, 1.0), 1.0)
    dn = np.where(gap_d > 0, pmf * den_d / np.where(gap_d > 0, gap_d, 1.0), 1.0)
    up = np.where(x > hi_s, 0.0, np.where(x <= lo_s, 1.0, np.minimum(up, 1.0)))
    dn = np.where(x < lo_s, 0.0, np.where(x >= hi_s, 1.0, np.minimum(dn, 1.0)))
    return dn, up


def _upper_tail(x, N: int, K, n) -> np.ndarray:
    """Upper bound on P(X >= x) for X ~ Hypergeom(N, K, n) (0 past the support)."""
    return _bounds(x, N, K, n)[1]


def _windows(N: int, K, n, eps: float):
    """Windows [lo, hi] holding all but a proven <= ~eps per side of Hypergeom(N, K, n).

    Vectorised over broadcast ``K, n``.  Returns int arrays ``lo, hi`` and float arrays
    ``below >= P(X < lo)``, ``above >= P(X > hi)`` (0 where the window reaches the
    end of the support).  A first window comes from Bernstein's inequality (valid for
    sampling without replacement by Hoeffding's convex-order theorem, with the smaller
    variance proxy of HG(N,K,n) = HG(N,n,K) and of their complements); its edges are
    then moved in to where the geometric tail bound is still <= eps, searched on a
    coarse and then a fine grid (any passing grid point is a valid edge; the grids
    only make it tight).
    """
    K, n = np.broadcast_arrays(np.asarray(K, dtype=np.float64), np.asarray(n, dtype=np.float64))
    shape = K.shape
    K, n = K.ravel(), n.ravel()
    lo_s = np.maximum(0.0, n - (N - K))
    hi_s = np.minimum(n, K)
    p, q = K / max(N, 1), n / max(N, 1)
    var = np.minimum(np.minimum(n, N - n) * p * (1 - p), np.minimum(K, N - K) * q * (1 - q))
    ln = math.log(1.0 / eps)
    t = ln / 3.0 + np.sqrt(ln * ln / 9.0 + 2.0 * var * ln) + 1.0
    mu = n * p
    a = np.maximum(lo_s, np.floor(mu - t) - 1.0)
    b = np.minimum(hi_s, np.ceil(mu + t) + 1.0)
    Kc, nc, muc = K[:, None], n[:, None], mu[:, None]
    G = 41
    fr = np.linspace(0.0, 1.0, G)[None, :]
    x = np.round(a[:, None] + (b - a)[:, None] * fr)
    dn, up = _bounds(x, N, Kc, nc)
    okl = (dn <= eps) & (x <= muc)
    oku = (up <= eps) & (x >= muc)
    il = np.where(okl.any(axis=1), G - 1 - np.argmax(okl[:, ::-1], axis=1), -1)
    iu = np.where(oku.any(axis=1), np.argmax(oku, axis=1), G)
    rows = np.arange(len(K))
    # fine grids from the last passing to the first failing coarse point
    l0 = x[rows, np.maximum(il, 0)]
    l1 = x[rows, np.minimum(il + 1, G - 1)]
    u0 = x[rows, np.maximum(iu - 1, 0)]
    u1 = x[rows, np.minimum(iu, G - 1)]
    xl = np.round(l0[:, None] + (l1 - l0)[:, None] * fr)
    xu = np.round(u0[:, None] + (u1 - u0)[:, None] * fr)
    dl, _ = _bounds(xl, N, Kc, nc)
    _, uu = _bounds(xu, N, Kc, nc)
    okl2 = (dl <= eps) & (xl <= muc) & (il >= 0)[:, None]
    oku2 = (uu <= eps) & (xu >= muc) & (iu < G)[:, None]
    has_l, has_u = okl2.any(axis=1), oku2.any(axis=1)
    jl = G - 1 - np.argmax(okl2[:, ::-1], axis=1)
    ju = np.argmax(oku2, axis=1)
    lo = np.where(has_l, xl[rows, jl] + 1.0, a)
    hi = np.where(has_u, xu[rows, ju] - 1.0, b)
    bad = hi < lo  # only for eps near 1: keep the Bernstein window
    lo, hi = np.where(bad, a, lo), np.where(bad, b, hi)
    has_l &= ~bad
    has_u &= ~bad
    # tails just outside; recomputed where no grid point passed (Bernstein edges)
    below = np.where(has_l, dl[rows, jl], 0.0)
    above = np.where(has_u, uu[rows, ju], 0.0)
    need = ~has_l & (lo > lo_s)
    if need.any():
        below[need] = _bounds(lo[need] - 1.0, N, K[need], n[need])[0]
    need = ~has_u & (hi < hi_s)
    if need.any():
        above[need] = _bounds(hi[need] + 1.0, N, K[need], n[need])[1]
    at = lo <= lo_s
    lo, below = np.where(at, lo_s, lo), np.where(at, 0.0, below)
    at = hi >= hi_s
    hi, above = np.where(at, hi_s, hi), np.where(at, 0.0, above)
    return (lo.astype(np.int64).reshape(shape), hi.astype(np.int64).reshape(shape),
            below.reshape(shape), above.reshape(shape))


# ------------------------------------------------------------------ the Fourier kernel


def _bernstein_halfwidth(var: float, eps: float) -> float:
    """t with exp(-t^2 / (2 (var + t/3))) = eps: Bernstein's tail for a sum of Bernoullis."""
    ln = math.log(1.0 / eps)
    return ln / 3.0 + math.sqrt(ln * ln / 9.0 + 2.0 * var * ln) + 1.0


# Long on purpose: one pass of the windowed recursion whose truncation bound is proved in
# windowed_accuracy's docstring; splitting it would hand a dozen coupled arrays and
# window offsets between pieces and hide which truncation each line accounts for.
def _rival_numerator(k: int, j_lo: int, gold_pmf: np.ndarray, rivals: list,
                     free_lo: int, free_pmf: np.ndarray, p: float,
                     eps: float) -> tuple[float, float]:
    """sum_m P(B0 = m) E[1{rivals <= m} / (1 + ties) ; S = k] with independent binomials.

    ``rivals`` holds ``(lo, pmf, mult, size)``: ``mult`` identical rivals of ``size``
    voters whose binomial pmf on ``lo, lo+1, ...`` is ``pmf``; the free voters' pmf
    starts at ``free_lo``.  Returns ``(numerator, alias)``, ``alias`` bounding the
    numerator's excess from aliasing (see below).

    For every gold count m the tie-weighted, m-truncated convolution R_m of the
    rivals is built in the frequency domain from prefix sums (over m) of each rival's
    DFT terms, transformed back and summed against the free voters' pmf at the totals
    that complete the committee to k.  ``1/(1+T) = int_0^1 y^T dy`` is integrated by
    Gauss-Legendre on [0, 1], exact for the polynomial degree ``sum(mult)``.

    The DFT length L covers the rival totals that can meet the free voters' window
    and Bernstein's window of Bin(C_R, p) (C_R voters in the kept rivals).  R_m's
    circular copy adds to each needed total u the R_m(u') with u' = u mod L outside
    that span; as R_m <= the law of Bin(C_R, p) pointwise (tie weights <= 1,
    truncation only removes mass), the excess is at most
    ``sum_m P(B0 = m) * max(free pmf) * P(Bin(C_R, p) outside the span)``.
    If L would exceed R_m's whole support, that support is used: no aliasing.
    A single rival is summed directly, without transforms.
    """
    nJ = len(gold_pmf)
    J = j_lo + np.arange(nJ)
    nF = len(free_pmf)
    xF = free_lo + np.arange(nF)
    if len(rivals) == 1 and rivals[0][2] == 1:
        lo, pmf, _, _ = rivals[0]
        w = lo + np.arange(len(pmf))
        # weight of rival count w against gold count m: 1 below, 1/2 at a tie, 0 above
        wt = np.where(w[None, :] < J[:, None], 1.0, np.where(w[None, :] == J[:, None], 0.5, 0.0))
        t = k - J[:, None] - w[None, :] - free_lo  # free voters' local index
        ok = (t >= 0) & (t < nF)
        f = np.where(ok, free_pmf[np.clip(t, 0, nF - 1)], 0.0)
        return float(gold_pmf @ ((wt * f) @ pmf)), 0.0
    off = sum(mult * lo for lo, _, mult, _ in rivals)
    span = sum(mult * (len(pmf) - 1) for _, pmf, mult, _ in rivals)
    # rival totals (local, 0..span) that meet the free window for some m in J
    ua = max(0, k - int(J[-1]) - int(xF[-1]) - off)
    ub = min(span, k - int(J[0]) - int(xF[0]) - off)
    if ua > ub:
        return 0.0, 0.0
    C = sum(mult * size for _, _, mult, size in rivals)
    t_b = _bernstein_halfwidth(C * p * (1 - p), eps)
    ua = max(0, min(ua, int(math.floor(C * p - t_b)) - off))
    ub = min(span, max(ub, int(math.ceil(C * p + t_b)) - off))
    alias = 0.0
    if ub - ua + 1 >= span + 1:
        L = span + 1
    else:
        L = ub - ua + 1
        tail = (binom.cdf(off + ua - 1, C, p) if ua > 0 else 0.0) + (
            binom.sf(off + ub, C, p) if ub < span else 0.0)
        alias = float(np.sum(gold_pmf)) * float(np.max(free_pmf)) * float(tail) * _INFLATE
    nl = L // 2 + 1
    tw = np.exp(-2j * np.pi * np.arange(L) / L)
    ell = np.arange(nl)
    r = sum(mult for _, _, mult, _ in rivals)
    xq, wq = roots_legendre(r // 2 + 1)
    yq, wq = (xq + 1.0) / 2.0, wq / 2.0
    # rival i's DFT term of count m is pmf_i(m) * tw[(m - lo_i) l mod L]
    #   = pmf_i(m) * tw[(m - j_lo) l] * tw[(j_lo - lo_i) l]: one shared phase matrix
    bases, weights, shifts = [], [], []
    for lo, pmf, mult, _ in rivals:
        nb = int(np.clip(j_lo - lo, 0, len(pmf)))
        if nb:
            folded = np.bincount(np.arange(nb) % L, weights=pmf[:nb], minlength=L)
            bases.append(_fft.rfft(folded))
        else:
            bases.append(np.zeros(nl, complex))
        u = J - lo
        inside = (u >= 0) & (u < len(pmf))
        weights.append(np.where(inside, pmf[np.clip(u, 0, len(pmf) - 1)], 0.0))
        shifts.append(tw[((j_lo - lo) % L) * ell % L])
    block = max(1, min(nJ, _BLOCK_BYTES // (16 * nl * (2 * len(rivals) + 3))))
    total = 0.0
    running = [np.zeros(nl, complex) for _ in rivals]  # rows above the block, unshifted
    for r0 in range(0, nJ, block):
        sl = slice(r0, min(nJ, r0 + block))
        phase = tw[(np.arange(r0, sl.stop)[:, None] * ell[None, :]) % L]
        phis, terms = [], []
        for i, w in enumerate(weights):
            term = w[sl, None] * phase
            phi = np.cumsum(term, axis=0)
            phi -= term  # exclusive prefix sum within the block
            phi += running[i]
            running[i] = phi[-1] + term[-1]
            phi *= shifts[i]
            phi += bases[i]
            term *= shifts[i]
            phis.append(phi)
            terms.append(term)
        X = np.zeros_like(phis[0])
        for y, wy in zip(yq, wq):
            prod = None
            for (_, _, mult, _), phi, term in zip(rivals, phis, terms):
                f = phi + y * term
                if mult > 1:
                    f = f ** mult
                prod = f if prod is None else prod * f
            X += wy * prod
        R = _fft.irfft(X, n=L, axis=1)  # R[m, u mod L]: rivals' local total u
        u = k - J[sl, None] - xF[None, :] - off
        ok = (u >= 0) & (u <= span)
        Rv = np.take_along_axis(R, u % L, axis=1)
        total += float(gold_pmf[sl] @ (np.where(ok, Rv, 0.0) @ free_pmf))
    return total, alias


# ------------------------------------------------------------------- windowed accuracy


def _full_pool(h: Histogram) -> float:
    if h.g == 0:
        return 0.0
    top = max((h.g, *h.others))
    return 0.0 if h.g < top else 1.0 / sum(1 for c in (h.g, *h.others) if c == top)


# Long on purpose: the window search, the pmf evaluations and the bound are batched over
# every k in a few numpy calls (the speed of the large-N path); see the docstring's steps.
def _windowed_batch(h: Histogram, ks: np.ndarray, eps: float):
    """acc and bound for committee sizes ``ks``, each in 1..N-1, with g >= 1.

    Window searches and pmf evaluations are batched over all k (few numpy calls per
    problem); the per-k work left is the rival screening and the rival kernel.
    """
    g, N = h.g, h.n
    nk = len(ks)
    acc = np.zeros(nk)
    bound = np.zeros(nk)
    sizes = np.unique(np.asarray(h.others, dtype=np.int64))
    mult_of = dict(zip(*np.unique(np.asarray(h.others, dtype=np.int64), return_counts=True)))
    # 1. gold count windows J = [j_lo, j_hi] (G = 0 loses, so j >= 1)
    glo, ghi, gbelow, gabove = _windows(N, g, ks, eps)
    j_lo = np.maximum(1, glo)
    j_hi = ghi
    bound += gabove + np.where(glo > 1, gbelow, 0.0)
    # 2. every wrong class's window and its chance of reaching j_lo, for every k
    if len(sizes):
        wlo, whi, wbelow, wabove = _windows(N, sizes[None, :], ks[:, None], eps)
        reach = _upper_tail(j_lo[:, None], N, sizes[None, :], ks[:, None])
    plans = []
    free = np.full(nk, h.a, dtype=np.int64)
    for i, k in enumerate(ks.tolist()):
        jl, jh = int(j_lo[i]), int(j_hi[i])
        if jh < jl:
            plans.append(None)
            continue
        # rivals that cannot reach j_lo (bound < eps) join the free voters.  A kept
        # rival's window may raise j_lo: gold counts below it lose to that rival
        # inside the windows (their terms are exactly 0).  Rivals that cannot reach
        # the raised j_lo are dropped too; repeat.
        idx = np.arange(len(sizes))
        rch = reach[i] if len(sizes) else np.zeros(0)
        while True:
            keep = rch >= eps
            drop = idx[~keep]
            bound[i] += float(np.sum(rch[~keep] * np.array([mult_of[c] for c in sizes[drop]])))
            free[i] += int(sum(int(c) * int(mult_of[c]) for c in sizes[drop]))
            idx = idx[keep]
            if len(idx) == 0:
                break
            new_lo = max(jl, int(wlo[i, idx].max()))
            if new_lo == jl:
                break
            jl = new_lo
            if jh < jl:
                break
            rch = _upper_tail(jl, N, sizes[idx], k)
        if jh < jl:
            plans.append(None)
            continue
        groups = []
        dead = False
        for s in idx.tolist():
            lo, hi, m = int(wlo[i, s]), int(whi[i, s]), int(mult_of[sizes[s]])
            bound[i] += m * float(wbelow[i, s])
            if hi >= jh:  # above j_hi a rival beats gold anyway: no truncation
                hi = jh
            else:
                bound[i] += m * float(wabove[i, s])
            if hi < lo:  # these rivals always out-vote gold inside the windows
                dead = True
            groups.append((lo, hi, m, int(sizes[s])))
        plans.append(None if dead else (jl, jh, groups))
    # 3. free voters' windows, then every binomial pmf (p = k/N) in one call
    flo, fhi, fbelow, fabove = _windows(N, free, ks, eps)
    xs, ns, ps, segs = [], [], [], []
    for i, k in enumerate(ks.tolist()):
        plan = plans[i]
        if plan is None:
            continue
        jl, jh, groups = plan
        p = k / N
        J = np.arange(jl, jh + 1)
        if not groups:  # P(G = j) = Bin(g,p)(j) Bin(N-g,p)(k-j) / Bin(N,p)(k)
            parts = [(J, g), (k - J, N - g), (np.array([k]), N)]
        else:
            bound[i] += float(fbelow[i] + fabove[i])
            parts = [(J, g), (np.arange(flo[i], fhi[i] + 1), int(free[i])), (np.array([k]), N)]
            parts += [(np.arange(lo, hi + 1), c) for lo, hi, _, c in groups]
        seg = []
        for x, nn in parts:
            xs.append(x)
            ns.append(np.full(len(x), nn))
            ps.append(np.full(len(x), p))
            seg.append(len(x))
        segs.append((i, seg))
    if xs:
        allp = binom.pmf(np.concatenate(xs), np.concatenate(ns), np.concatenate(ps))
    pos = 0
    for i, seg in segs:
        pm = []
        for n_ in seg:
            pm.append(allp[pos:pos + n_])
            pos += n_
        k = int(ks[i])
        jl, jh, groups = plans[i]
        norm = float(pm[2][0])
        if not groups:
            a_ = float(np.dot(pm[0], pm[1])) / norm
        else:
            rivals = [(lo, pmf, m, c) for (lo, _, m, c), pmf in zip(groups, pm[3:])]
            num, alias = _rival_numerator(k, jl, pm[0], rivals, int(flo[i]), pm[1], k / N, eps)
            a_ = num / norm
            bound[i] += alias / norm
        acc[i] = min(max(a_, 0.0), 1.0)
    return acc, np.minimum(bound, 1.0)


def windowed_accuracy(h: Histogram, ks, eps: float = 1e-13) -> tuple[np.ndarray, np.ndarray]:
    """Plurality-vote accuracy of random k-committees for the requested k only.

    Parameters
    ----------
    h : Histogram
        The problem's answer histogram over its N voters.
    ks : int or sequence of int
        Committee sizes, each in ``0..N`` (``k = 0`` gives 0).
    eps : float, default 1e-13
        Truncation level in ``(0, 1)``: every tail of a vote count that is cut off,
        and every wrong class that is ignored, has proven probability <= about ``eps``.

    Returns
    -------
    acc : numpy.ndarray
        ``acc[i]`` = P(gold wins) for a uniformly random ``ks[i]``-subset, ties split.
    bound : numpy.ndarray
        ``|acc[i] - exact[i]| <= bound[i]``, up to float rounding (about 1e-14 at
        N = 10^5; rounding is not part of the bound).  A few times ``eps`` per
        wrong class that comes near gold; 0 for ``k = N``, ``g = 0`` and ``k = 0``.

    Notes
    -----
    **Representation.** With independent ``B_c ~ Bin(size_c, p)`` per class (any
    ``p``, here ``p = k/N``), the committee's class counts are the ``B`` conditioned on
    ``S = sum_c B_c = k``; ``S ~ Bin(N, p)``.  So ``P(gold wins) = E[f(B); S = k] /
    P(S = k)`` with ``f = 1{B_gold >= 1, every rival <= B_gold} / (1 + #ties)``.

    **Truncation** (all probabilities under the committee's law, i.e. the
    hypergeometric marginals, bounded with the log-concave geometric tail bound
    ``P(X >= x) <= p(x) / (1 - p(x+1)/p(x))``):

    1. the gold count G is restricted to ``J = [j_lo, j_hi]``; dropped: P(G not in J,
       G >= 1);
    2. a rival with ``P(X_i >= j_lo) < eps`` is merged with the abstainers; it can only
       change f when it reaches G, i.e. when ``G < j_lo`` (already counted) or
       ``X_i >= j_lo``: dropped ``P(X_i >= j_lo)``;
    3. each kept rival's count and the free voters' count are restricted to windows
       (a rival's window extends to ``j_hi`` at least, above which f = 0 anyway);
       dropped: their tail probabilities.  Gold counts below a kept rival's window
       then contribute exactly 0 and are skipped (step 2 is repeated with the raised
       ``j_lo``).

    The computed value equals ``E[f' ; all counts in their windows]`` where ``f' = f``
    outside the union of the dropped events, and ``f, f'`` are in [0, 1], so the error
    is at most the probability of that union, at most the sum reported in ``bound``.

    **Evaluation.** For each gold count m the m-truncated, tie-weighted convolution
    R_m of the kept rivals (``1/(1+T) = int_0^1 y^T dy``, Gauss-Legendre exact for the
    degree) is built by a DFT (prefix sums over m of each rival's DFT terms) and summed
    against the free voters' pmf at the totals that complete size k.  The DFT covers
    the rival totals that can meet the free window and Bernstein's window of the
    rivals' total; 4. the circular wrap-around can only add mass of R_m from outside
    that span, at most ``sum_m P(B_gold = m) * max(free pmf) * P(Bin(C_R, p) outside)
    / P(S = k)``, also added to ``bound`` (0 when the DFT covers R_m's support).  A
    single rival is summed directly.

    **Cost** per k is about ``|J| * L * (rivals kept) * (rivals kept / 2 + 1)``, with
    ``|J|, L`` a few multiples of ``sqrt(2 ln(1/eps))`` standard deviations of the vote
    counts (at most ``~sqrt(k)``), independent of N; with no rival near gold it is a
    handful of vectorised pmf evaluations.  Window searches and pmf evaluations are
    batched over all requested k.

    References
    ----------
    W. Hoeffding (1963), "Probability inequalities for sums of bounded random
    variables", JASA 58, Thm. 4 (sampling without replacement; Bernstein window).
    N. L. Johnson, A. W. Kemp, S. Kotz (2005), *Univariate Discrete Distributions*,
    3rd ed., Wiley, ch. 6 (hypergeometric; log-concavity, multivariate form as
    conditioned binomials).

    Examples
    --------
    Two voters right, one wrong (see :func:`ensemble.voting.estimators.exact_accuracy`):

    >>> from ensemble.voting.estimators import Histogram
    >>> acc, bound = windowed_accuracy(Histogram(2, (1,), 0), [1, 2, 3])
    >>> [round(float(x), 12) for x in acc]
    [0.666666666667, 0.666666666667, 1.0]

    A pool of 100,000 voters, 38% right, a rival at 37% and many small classes:

    >>> h = Histogram(38_000, (37_000, 10_000, 5_000, 5_000) + (100,) * 40, 1_000)
    >>> acc, bound = windowed_accuracy(h, [1, 101, 10_001])
    >>> [round(float(x), 3) for x in acc]
    [0.38, 0.546, 0.888]
    >>> bool(bound.max() <= 1e-10)
    True
    """
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps={eps} must be in (0, 1)")
    ks = np.atleast_1d(np.asarray(ks, dtype=np.int64))
    if ks.size and (ks.min() < 0 or ks.max() > h.n):
        raise ValueError(f"committee sizes {ks.tolist()} must lie in 0..{h.n} (the voters)")
    acc = np.zeros(len(ks))
    bound = np.zeros(len(ks))
    if h.g == 0:
        return acc, bound
    full = ks == h.n
    acc[full] = _full_pool(h)
    mid = np.nonzero((ks > 0) & ~full)[0]
    if len(mid):
        acc[mid], bound[mid] = _windowed_batch(h, ks[mid], float(eps))
    return acc, bound


# ---------------------------------------------------------------- histogram Monte-Carlo


class MCHalfwidth(NamedTuple):
    """Hoeffding half-widths of :func:`histogram_monte_carlo` at confidence ``1 - delta``.

    Attributes
    ----------
    cell : float
        For one entry ``W[problem, i]``: ``sqrt(ln(2/delta) / (2 draws))``.
    mean : float
        For the mean over problems ``W[:, i].mean()``:
        ``sqrt(ln(2/delta) / (2 draws P))``.
    """

    cell: float
    mean: float


def histogram_monte_carlo(hists: Sequence[Histogram], ks, draws: int, seed: int,
                          delta: float = 1e-3,
                          chunk_bytes: int = 32 * 2**20) -> tuple[np.ndarray, MCHalfwidth]:
    """Monte-Carlo committee accuracy drawn directly from the histograms.

    Parameters
    ----------
    hists : sequence of Histogram
        One per problem.
    ks : sequence of int
        Committee sizes, each in ``1..N`` of every problem.
    draws : int
        Committees drawn per (problem, k), independently for every cell.
    seed : int
        Seed of ``numpy.random.default_rng``; equal seeds give equal results.
    delta : float, default 1e-3
        Failure probability of the Hoeffding half-widths.
    chunk_bytes : int, optional
        Bounds the memory of one batch of drawn committees.

    Returns
    -------
    W : numpy.ndarray
        Shape ``(len(hists), len(ks))``, the mean score over ``draws`` committees (1 for
        a gold win, ``1/t`` for a t-way tie including gold: the tie's expectation).
    halfwidth : MCHalfwidth
        ``cell``: with probability >= 1 - delta, ``|W[p, i] - acc_p(k_i)| <= cell`` for
        any one fixed cell; ``mean``: the same for ``W[:, i].mean()`` against the
        exact mean over problems (draws are independent across problems, so the mean
        averages ``draws * P`` independent [0, 1] scores).  Neither is simultaneous
        over cells (union-bound with ``delta / cells`` for that).

    Notes
    -----
    A committee's vote counts per class are one multivariate hypergeometric draw
    (numpy's ``Generator.multivariate_hypergeometric``, method ``'marginals'``: O(classes)
    per draw, independent of N), so no voter array is materialised.  Scores lie in
    [0, 1]; Hoeffding's inequality gives the half-widths.

    References
    ----------
    W. Hoeffding (1963), "Probability inequalities for sums of bounded random
    variables", JASA 58, Thm. 1 and 2.

    Examples
    --------
    >>> from ensemble.voting.estimators import Histogram
    >>> W, hw = histogram_monte_carlo([Histogram(2, (1,), 0)], [2], draws=20000, seed=0)
    >>> bool(abs(W[0, 0] - 2 / 3) <= hw.cell)
    True
    >>> round(hw.cell, 4)
    0.0138
    """
    ks = np.atleast_1d(np.asarray(ks, dtype=np.int64))
    draws = int(draws)
    if draws < 1:
        raise ValueError(f"draws={draws} must be at least 1")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta={delta} must be in (0, 1)")
    rng = np.random.default_rng(seed)
    P = len(hists)
    W = np.zeros((P, len(ks)))
    for pi, h in enumerate(hists):
        colors = np.array([h.g, *h.others, h.a], dtype=np.int64)
        for ki, k in enumerate(ks.tolist()):
            if not 1 <= k <= h.n:
                raise ValueError(f"k={k} is outside 1..{h.n} voters of problem {pi}")
            if h.g == 0:
                continue
            per = max(1, chunk_bytes // (8 * len(colors) * 3))
            total, done = 0.0, 0
            while done < draws:
                b = min(per, draws - done)
                x = rng.multivariate_hypergeometric(colors, k, size=b, method="marginals")
                votes = x[:, :-1]  # gold first, then wrong classes
                gold = votes[:, 0]
                top = votes.max(axis=1)
                ties = (votes == top[:, None]).sum(axis=1)
                win = (gold == top) & (gold > 0)
                total += float(np.sum(win / ties))
                done += b
            W[pi, ki] = total / draws
    ln = math.log(2.0 / delta)
    cell = math.sqrt(ln / (2.0 * draws))
    mean = math.sqrt(ln / (2.0 * draws * max(P, 1)))
    return W, MCHalfwidth(cell, mean)


# -------------------------------------------------------------------------- dispatcher


def _exact_cost(h: Histogram, k_max: int) -> tuple[float, float]:
    """Predicted (seconds, bytes) of ``voting._exact_row(h, k_max)``.

    Per gold count j each of the m_j wrong classes of size >= j is merged with a
    (t, k_max, j) einsum, t growing to m_j; the constants are rough fits (a few ns per
    multiply-add, ~15 us per numpy call).  Memory: the per-class weight matrices.
    """
    k_max = min(k_max, h.n)
    others = np.asarray(h.others, dtype=np.float64)
    j = np.arange(1, min(h.g, k_max) + 1, dtype=np.float64)
    if len(j) == 0:
        return 0.0, 0.0
    m = (others[None, :] >= j[:, None]).sum(axis=1) if len(others) else np.zeros(len(j))
    flops = float(np.sum((k_max + 1) * (j + 1) * m * (m + 1) / 2))
    secs = 2e-9 * flops + 1.5e-5 * float(np.sum(m + 1))
    w_max = min(h.g, int(others.max())) if len(others) else 0
    mem = 8.0 * (k_max + 1) * float(np.sum(np.minimum(others, w_max) + 1))
    return secs, mem


def _windowed_cost(h: Histogram, ks: np.ndarray) -> float:
    """Rough predicted seconds of :func:`windowed_accuracy` (pessimistic: all near rivals)."""
    N = max(h.n, 1)
    k = ks.astype(np.float64)
    sd = np.sqrt(k * (1 - k / N) / 4.0) + 1.0
    width = 8.0 * sd + 10.0
    near = 1.0 + min(len(h.others), 3)
    return float(np.sum(1e-3 + 2.5e-8 * width * width * near * near))


def _choose_exact(hists: Sequence[Histogram], ks: np.ndarray, method: str) -> np.ndarray:
    """Per problem: True where :func:`accuracy_matrix` uses the polynomial method."""
    if method != "auto":
        return np.full(len(hists), method == "exact")
    k_max = int(ks.max())
    out = np.zeros(len(hists), dtype=bool)
    for pi, h in enumerate(hists):
        if h.n <= _EXACT_ALWAYS_N:
            out[pi] = True
        else:
            secs, mem = _exact_cost(h, k_max)
            out[pi] = mem <= _EXACT_MAX_BYTES and secs <= _windowed_cost(h, ks)
    return out


def accuracy_matrix(hists: Sequence[Histogram], ks, eps: float = 1e-13,
                    method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Accuracy matrix ``W[problem, i] = acc(ks[i])`` with a proven error bound per k.

    Parameters
    ----------
    hists : sequence of Histogram
        One per problem (any pool sizes).
    ks : sequence of int
        Committee sizes, each in ``1..N`` of every problem.
    eps : float, default 1e-13
        Truncation level of :func:`windowed_accuracy`.
    method : {"auto", "exact", "windowed"}, default "auto"
        ``"auto"`` picks per problem: :func:`ensemble.voting.estimators.exact_matrix` (the
        polynomial method, bound 0, bit-identical to it) for pools of at most 256
        voters and wherever its predicted cost is below the windowed method's (and
        its memory is small), :func:`windowed_accuracy` otherwise.

    Returns
    -------
    W : numpy.ndarray
        Shape ``(len(hists), len(ks))``.
    bound : numpy.ndarray
        Shape ``(len(ks),)``: the largest error bound of any problem at each k, so it
        also bounds the error of ``W.mean(axis=0)`` (a mean of errors <= bound).

    Notes
    -----
    The exact method computes every k up to ``max(ks)`` at once (time about
    ``m^2 N^3``), the windowed one only the requested k; for a k grid such as
    ``log:40`` at 10^4-10^5 voters the windowed method is the only feasible one.
    See :func:`windowed_accuracy` for the bound's proof.

    References
    ----------
    :func:`ensemble.voting.estimators.exact_accuracy` (the polynomial method) and
    :func:`windowed_accuracy` (and the references given there).

    Examples
    --------
    >>> from ensemble.voting.estimators import Histogram, exact_matrix
    >>> hs = [Histogram(3, (1, 2), 0), Histogram(1, (1,), 4)]
    >>> W, bound = accuracy_matrix(hs, [1, 3, 6])
    >>> bool((W == exact_matrix(hs, [1, 3, 6])).all()), bound.tolist()
    (True, [0.0, 0.0, 0.0])
    """
    if method not in ("auto", "exact", "windowed"):
        raise ValueError(f"method={method!r}: use 'auto', 'exact' or 'windowed'")
    ks = np.atleast_1d(np.asarray(ks, dtype=np.int64))
    hists = list(hists)
    P = len(hists)
    W = np.zeros((P, len(ks)))
    B = np.zeros((P, len(ks)))
    if P == 0 or len(ks) == 0:
        return W, np.zeros(len(ks))
    for pi, h in enumerate(hists):
        if ks.min() < 1 or ks.max() > h.n:
            raise ValueError(f"committee sizes must lie in 1..{h.n}, the voters of problem {pi}")
    use_exact = _choose_exact(hists, ks, method)
    sel = np.nonzero(use_exact)[0]
    if len(sel):
        W[sel] = exact_matrix([hists[i] for i in sel], ks)
    for pi in np.nonzero(~use_exact)[0].tolist():
        W[pi], B[pi] = windowed_accuracy(hists[pi], ks, eps)
    return W, B.max(axis=0)
