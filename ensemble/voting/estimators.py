"""Majority-vote accuracy of random committees: exact, Monte-Carlo and pass@k.

Everything here is pure numpy on in-memory arrays: no I/O, no pandas.

Vocabulary
----------
For one problem, the *histogram* of a voter pool is ``(g, others, a)``:

* ``g``      - voters whose answer is correct (they all vote for the gold class),
* ``others`` - sizes of the wrong-answer classes (one entry per distinct wrong answer),
* ``a``      - abstainers (no answer could be extracted).

``N = g + sum(others) + a`` voters in all.  A committee of size ``k`` is a uniformly
random k-subset of the N voters (without replacement).  It votes by plurality over
non-null answers; a tie among ``t`` answers is won by each with probability ``1/t``;
a committee without any non-null answer is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import as_strided
from scipy.special import gammaln

__all__ = [
    "Histogram",
    "histogram",
    "exact_accuracy",
    "exact_matrix",
    "pass_at_k",
    "pass_at_k_matrix",
    "monte_carlo",
    "MonteCarloResult",
]


@dataclass(frozen=True)
class Histogram:
    """Answer histogram of one problem over one voter pool (see module docstring)."""

    g: int
    others: tuple[int, ...]
    a: int

    def __post_init__(self):
        # The estimator merges wrong classes smallest first and the cache keys on the
        # histogram, so the class sizes are kept sorted whatever order they came in.
        others = tuple(sorted(int(c) for c in self.others))
        if self.g < 0 or self.a < 0 or (others and others[0] < 1):
            raise ValueError(f"{self}: counts must be >= 0 and wrong classes >= 1 voter")
        object.__setattr__(self, "others", others)

    @property
    def n(self) -> int:
        return self.g + sum(self.others) + self.a


def histogram(codes: np.ndarray, gold: int) -> Histogram:
    """Histogram of one problem from integer answer codes.

    Parameters
    ----------
    codes : array of int
        One code per voter; ``-1`` means no answer.
    gold : int
        The code of the gold answer (a code no voter uses is fine: nobody is right).

    Returns
    -------
    Histogram
        With the wrong classes sorted by size, so equal pools give equal (hashable) keys.

    Examples
    --------
    >>> histogram(np.array([3, 3, 1, -1, 2, 1, 1]), gold=3)
    Histogram(g=2, others=(1, 3), a=1)
    """
    codes = np.asarray(codes)
    a = int(np.count_nonzero(codes < 0))
    g = int(np.count_nonzero(codes == gold))
    wrong = codes[(codes >= 0) & (codes != gold)]
    _, counts = np.unique(wrong, return_counts=True)
    return Histogram(g, tuple(int(c) for c in counts), a)


@lru_cache(maxsize=8)
def _log_factorials(n: int) -> np.ndarray:
    return gammaln(np.arange(n + 2, dtype=np.float64) + 1.0)


def _hyp_weights(lf: np.ndarray, n: int, c: int, w: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Hypergeometric pmf P(W = w) for a v-subset of n items of which c are marked.

    Shape ``(len(v), len(w))``; zero where the draw is impossible.
    """
    vv = v[:, None]
    ww = w[None, :]
    rest = vv - ww
    ok = (rest >= 0) & (rest <= n - c) & (ww <= c) & (vv <= n)
    rest_c = np.clip(rest, 0, n - c)
    ww_c = np.clip(ww, 0, c)
    vv_c = np.clip(vv, 0, n)
    log_p = (
        lf[c] - lf[ww_c] - lf[c - ww_c]
        + lf[n - c] - lf[rest_c] - lf[n - c - rest_c]
        - (lf[n] - lf[vv_c] - lf[n - vv_c])
    )
    return np.where(ok, np.exp(np.where(ok, log_p, 0.0)), 0.0)


@lru_cache(maxsize=65536)
def _exact_cached(h: Histogram, k_max: int) -> np.ndarray:
    return _exact_row(h, k_max)


def _exact_row(h: Histogram, k_max: int) -> np.ndarray:
    g, a = h.g, h.a
    n_all = h.n
    k_max = min(k_max, n_all)
    out = np.zeros(k_max + 1)
    if g == 0 or k_max == 0:
        return out
    lf = _log_factorials(n_all)
    v = np.arange(k_max + 1)
    others = np.asarray(h.others, dtype=np.int64)  # ascending
    # The representation below keeps, for the voters merged so far (n of them), the
    # *fraction* q[t, v] of their v-subsets that satisfy "every class merged so far has
    # at most j members, exactly t of them have j", instead of the raw count.  Merging a
    # class of size c then weights the old fractions by hypergeometric probabilities,
    # so every number stays in [0, 1]: no overflow for any N, unlike the counting
    # polynomial C(c, v) whose coefficients pass 1e308 near N = 1030.
    #
    # Rivals (wrong classes that can reach j) are merged smallest first.  Then the
    # voters not yet merged when rival i joins are exactly the classes larger than it
    # in sorted order, whatever j is, so the pool size n_i = N - (sum of larger classes)
    # and with it rival i's weight matrix hyp(w; n_i, c_i, v) are the same for every j:
    # computed once here, sliced to w <= j below.
    larger = np.concatenate([np.cumsum(others[::-1])[::-1][1:], [0]])
    n_at = n_all - larger
    w_max = int(min(g, others.max())) if len(others) else 0
    weights = [
        _hyp_weights(lf, int(n_at[i]), int(c), np.arange(min(int(c), w_max) + 1), v)
        for i, c in enumerate(others)
    ]
    small_sum = np.concatenate([[0], np.cumsum(others)])  # sum of the i smallest classes
    j_top = min(g, k_max)
    js = np.arange(1, j_top + 1)
    firsts = np.searchsorted(others, js)  # for gold count j the rivals are others[first:]
    gold_w = {}
    for first in np.unique(firsts):
        free = a + int(small_sum[first])  # voters that can never beat j votes
        # Free voters impose no constraint (q = 1 wherever a subset exists); merging
        # gold with exactly j members then leaves q[v] = P(j gold in a v-subset), which
        # the hypergeometric weight already sets to 0 where v - j > free.
        sel = js[firsts == first]
        gold_w.update(zip(sel.tolist(), _hyp_weights(lf, free + g, g, sel, v).T))
    for j, first in zip(js.tolist(), firsts.tolist()):
        q = gold_w.pop(j)[None, :]
        for i in range(first, len(others)):
            hw = weights[i]  # (k+1, c+1)
            t_rows = q.shape[0]
            new = np.zeros((t_rows + 1, k_max + 1))
            # fewer than j from this class: sum over w = 0..j-1 of q[v-w] * hyp(w | v)
            padded = np.concatenate([np.zeros((t_rows, j - 1)), q], axis=1)
            s0, s1 = padded.strides
            win = as_strided(padded[:, j - 1:], shape=(t_rows, k_max + 1, j),
                             strides=(s0, s1, -s1), writeable=False)  # win[t, v, w] = q[t, v-w]
            new[:t_rows] = np.einsum("tvw,vw->tv", win, hw[:, :j])
            # exactly j from this class: one more tie with gold
            new[1:, j:] += q[:, : k_max + 1 - j] * hw[j:, j][None, :]
            q = new
        # Integrate y^t over [0, 1] = 1/(t+1): the tie among gold and t rivals is won
        # by gold with probability 1/(t+1).
        out += (1.0 / np.arange(1, q.shape[0] + 1)) @ q
    out[0] = 0.0
    return np.clip(out, 0.0, 1.0)


def exact_accuracy(h: Histogram, k_max: int | None = None) -> np.ndarray:
    """Exact expected plurality-vote accuracy for every committee size 1..k_max.

    Parameters
    ----------
    h : Histogram
        The problem's answer histogram over the voter pool.
    k_max : int, optional
        Largest committee size (default: all N voters).

    Returns
    -------
    numpy.ndarray
        ``acc`` of length ``k_max + 1``; ``acc[k]`` is P(gold wins) for a uniformly
        random k-subset, ties split evenly; ``acc[0] = 0``.

    Notes
    -----
    The expectation over all C(N, k) committees is a sum over j, the number of gold
    votes in the committee, of the probability that every wrong class gets at most j
    votes, with ``1/(t+1)`` for a t-way tie at j (multivariate hypergeometric draw).
    Classes that cannot reach j are merged with the abstainers (Vandermonde's
    identity); the others are merged one at a time with a tie-count dimension.
    Cost is about ``sum_j m_j**2 * j * k_max`` where ``m_j`` counts wrong classes
    of size >= j: trivial for hundreds of voters, minutes for 10^5 voters with many
    large classes and every k (use a k grid with a smaller ``k_max`` there).

    Results are exact up to float rounding (relative error about ``log(N!) * 1e-16``).

    Examples
    --------
    Two voters right, one wrong: a committee of two has a 1/3 chance of being
    {right, right} (wins) and 2/3 of a 1-1 tie (wins half the time).

    >>> float(exact_accuracy(Histogram(2, (1,), 0))[2].round(12))
    0.666666666667
    """
    k = h.n if k_max is None else int(k_max)
    if not 0 <= k <= h.n:
        raise ValueError(f"k_max={k} is outside 0..{h.n}, the voters of this pool; lower k_max")
    return _exact_cached(h, k).copy()


def exact_matrix(hists: list[Histogram], ks: np.ndarray) -> np.ndarray:
    """Per-problem exact accuracy matrix ``W[problem, i] = acc(ks[i])``.

    Parameters
    ----------
    hists : list of Histogram
        One per problem; all must have the same number of voters N.
    ks : array of int
        Committee sizes, each in 1..N (a larger k is a ValueError).

    Returns
    -------
    numpy.ndarray
        Shape ``(len(hists), len(ks))``.
    """
    ks = np.asarray(ks, dtype=np.int64)
    if len(hists) == 0:
        return np.zeros((0, len(ks)))
    k_max = int(ks.max()) if len(ks) else 0
    # A committee larger than the pool does not exist: padding it with zeros once
    # dragged a repetition curve down silently, so it is refused here.
    small = [h.n for h in hists if h.n < k_max]
    if small:
        raise ValueError(f"k={k_max} exceeds a pool of {min(small)} voters; every k must be "
                         "within the voters of every problem's pool")
    return np.stack([_exact_cached(h, k_max)[ks] for h in hists])


def pass_at_k(n: int, c: int, ks: np.ndarray) -> np.ndarray:
    """Unbiased pass@k: probability that a random k-subset holds a correct voter.

    Parameters
    ----------
    n : int
        Voters in the pool.
    c : int
        Correct voters.
    ks : array of int
        Committee sizes in 0..n.

    Returns
    -------
    numpy.ndarray
        ``1 - C(n - c, k) / C(n, k)`` for each k.

    Notes
    -----
    The ratio is built as the running product ``prod_{i<k} (n-c-i)/(n-i)``, so it
    never forms a binomial coefficient and cannot overflow (Chen et al., 2021,
    "Evaluating Large Language Models Trained on Code", eq. 1 and its numpy form).

    Examples
    --------
    >>> pass_at_k(10, 1, np.array([1, 5, 10]))
    array([0.1, 0.5, 1. ])
    """
    ks = np.asarray(ks, dtype=np.int64)
    k_max = int(ks.max()) if ks.size else 0
    if k_max > n:
        raise ValueError(f"k={k_max} exceeds the {n} voters; pass@k needs k <= n")
    i = np.arange(k_max)
    factors = np.clip((n - c - i) / np.maximum(n - i, 1), 0.0, 1.0)
    miss = np.concatenate([[1.0], np.cumprod(factors)])
    return 1.0 - miss[ks]


def pass_at_k_matrix(n: int, correct_counts: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """pass@k for many problems of one pool: shape ``(len(correct_counts), len(ks))``."""
    return np.stack([pass_at_k(n, int(c), ks) for c in correct_counts]) if len(
        correct_counts
    ) else np.zeros((0, len(ks)))


@dataclass(frozen=True)
class MonteCarloResult:
    """Monte-Carlo committee estimate.

    Attributes
    ----------
    per_problem : ndarray, shape (problems, len(ks))
        Per-problem accuracy W[problem, k] averaged over the B committees.
    committee_acc : ndarray, shape (B, len(ks))
        Accuracy of each committee averaged over problems (its spread is the
        committee-to-committee variation a single fixed ensemble would show).
    """

    per_problem: np.ndarray
    committee_acc: np.ndarray

    @property
    def sd(self) -> np.ndarray:
        return self.committee_acc.std(axis=0, ddof=1) if len(self.committee_acc) > 1 else (
            np.zeros(self.committee_acc.shape[1])
        )


def monte_carlo(
    codes: np.ndarray, gold: np.ndarray, ks: np.ndarray, committees: int, seed: int
) -> MonteCarloResult:
    """Plurality vote of B random committees per k, the same committee on every problem.

    Parameters
    ----------
    codes : ndarray of int, shape (problems, voters)
        Answer codes per problem and voter, ``-1`` for no answer.  Codes are compared
        only within a problem.
    gold : ndarray of int, shape (problems,)
        The gold code per problem.
    ks : array of int
        Committee sizes in 1..voters.
    committees : int
        B, committees drawn per k.
    seed : int
        Seed of the numpy generator; equal seeds give equal results.

    Returns
    -------
    MonteCarloResult

    Notes
    -----
    Ties are scored by their expectation ``1/t`` rather than a coin flip, which removes
    one source of noise without changing the mean.  Committees are drawn as the first
    k of a random permutation (uniform k-subsets without replacement).
    """
    codes = np.asarray(codes)
    gold = np.asarray(gold)
    ks = np.asarray(ks, dtype=np.int64)
    p, n = codes.shape
    if committees < 1:
        raise ValueError(f"committees={committees} must be at least 1")
    rng = np.random.default_rng(seed)
    # Remap each problem's codes to 0..C-1 with the gold class at 0, abstainers at C.
    dense = np.empty_like(codes)
    n_classes = 1
    for i in range(p):
        row = codes[i]
        uniq = np.unique(row[(row >= 0) & (row != gold[i])])
        n_classes = max(n_classes, len(uniq) + 1)
    abstain = n_classes
    for i in range(p):
        row = codes[i]
        uniq = np.unique(row[(row >= 0) & (row != gold[i])])
        d = np.full(n, abstain)
        d[row == gold[i]] = 0
        wrong = (row >= 0) & (row != gold[i])
        d[wrong] = np.searchsorted(uniq, row[wrong]) + 1
        dense[i] = d
    width = n_classes + 1
    W = np.zeros((p, len(ks)))
    committee_acc = np.zeros((committees, len(ks)))
    for ki, k in enumerate(ks):
        k = int(k)
        if not 1 <= k <= n:
            raise ValueError(f"k={k} is outside 1..{n} voters; choose k within the pool")
        members = np.argsort(rng.random((committees, n)), axis=1)[:, :k]  # (B, k)
        votes = dense[:, members]  # (P, B, k)
        offsets = (np.arange(p * committees) * width).reshape(p, committees, 1)
        counts = np.bincount((votes + offsets).ravel(), minlength=p * committees * width)
        counts = counts.reshape(p, committees, width)[:, :, :n_classes]
        gold_votes = counts[:, :, 0]
        top = counts.max(axis=2)
        ties = (counts == top[:, :, None]).sum(axis=2)
        win = np.where((gold_votes == top) & (gold_votes > 0), 1.0 / ties, 0.0)  # (P, B)
        W[:, ki] = win.mean(axis=1)
        committee_acc[:, ki] = win.mean(axis=0)
    return MonteCarloResult(W, committee_acc)
