"""Why a population beats repetition, or does not: how differently its voters answer.

A majority vote gains from voters whose mistakes differ.  The vote curves say *whether*
k variants beat k samples of one model; these diagnostics say *why*, from the same answers:

* **answer disagreement**: the probability that two voters who both answered a problem
  gave different answers, for two voters from different models (two variants) and for
  two samples of one model;
* **correctness correlation beyond difficulty** (``icc_model``): how much more two
  samples of one model agree in being right or wrong than two voters from different
  models do, *given the problem*.  It is the intraclass correlation of correctness with
  models as groups, pooled over problems (one-way random effects; Fisher 1925, Shrout &
  Fleiss 1979)::

      rho = sum_i Var_m(q_mi) / sum_i p_i (1 - p_i)

  where ``q_mi`` is model m's chance of answering problem i correctly and ``p_i`` its
  mean over models.  Difficulty (``p_i``) is conditioned away, which is what "beyond
  difficulty" means here;
* **effective number of independent voters** (Kish's design effect, 1965): k voters whose
  correctness is correlated ``rho`` given the problem carry as much information about
  the problem's answer as ``k / (1 + (k - 1) * pi * rho)`` independent ones, ``pi`` being
  the share of a committee's voter pairs that come from one model (1 for repetition,
  0 for one answer per variant).  It tends to ``1 / rho`` for repetition however many
  samples are drawn;
* **difficulty correlation** (``icc_problem``): the share of a voter's correctness
  variance that the problem alone sets (two voters from different models on the same
  problem); no population removes it;
* **headroom**: pass@k minus the vote's accuracy, what a better aggregation rule than
  plurality could still win from the same k answers (pass@k is the oracle's accuracy).

Why not "the correlation of two voters' correctness across problems after subtracting
each problem's mean": centred within a problem, the residuals of any N exchangeable
voters sum to zero, so their average pairwise correlation is -1/(N-1) whatever the
voters are.  The pair counts below avoid that: ``E[q_m q_m']`` over *different* models
estimates ``p_i^2`` without bias, so ``P(same model, both right) - P(different models,
both right)`` estimates ``Var_m(q_mi)`` without bias.

All functions are pure numpy; the vote stage calls :func:`diversity` per condition and
writes the results to ``vote.json`` and ``diversity.csv``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


class Estimate(NamedTuple):
    """A point estimate with its percentile bootstrap interval (NaN when not resampled)."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        if np.isnan(self.low):
            return f"{self.value:.3f}"
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


@dataclass(frozen=True)
class PairCounts:
    """Ordered voter-pair counts per problem of one condition, split by model.

    "Same" pairs are two different voters (samples) of one model, "cross" pairs two
    voters of different models.  Every array has one entry per problem.
    """

    n: np.ndarray  # voters
    correct: np.ndarray  # voters whose answer is the gold one
    same_pairs: np.ndarray  # ordered same-model pairs (all voters)
    same_both_correct: np.ndarray
    same_answered: np.ndarray  # ordered same-model pairs where both answered
    same_agree: np.ndarray  # ... and gave the same answer
    cross_pairs: np.ndarray
    cross_both_correct: np.ndarray
    cross_answered: np.ndarray
    cross_agree: np.ndarray
    committee_same_share: float  # share of a random committee's pairs from one model, for
    # committees drawn from all voters at once (collaboration's)
    models: "ModelCounts | None" = None  # per-model pieces, to resample the models


@dataclass(frozen=True)
class ModelCounts:
    """The per-model pieces of :class:`PairCounts` (rows: models in first-seen order,
    columns: problems), from which the counts of any multiset of the models follow."""

    n: np.ndarray  # (M, P) voters of each model
    correct: np.ndarray  # (M, P)
    answered: np.ndarray  # (M, P)
    same_agree: np.ndarray  # (M, P) ordered pairs of one model's answered voters that agree
    agree: np.ndarray  # (M, M, P) pairs (a's voter, b's voter) that agree; 0 on the diagonal


def _pairs(x: np.ndarray) -> np.ndarray:
    return x * (x - 1)


def _histograms(codes: np.ndarray, width: int) -> np.ndarray:
    """Answer counts per problem, shape (problems, width); -1 (no answer) left out."""
    P = codes.shape[0]
    ok = codes >= 0
    rows = np.broadcast_to(np.arange(P)[:, None], codes.shape)
    return np.bincount(rows[ok] * width + codes[ok], minlength=P * width).reshape(P, width)


def _agreeing_pairs(codes: np.ndarray) -> np.ndarray:
    """Ordered pairs of answered voters with the same answer, per problem (row)."""
    if not (codes >= 0).any():
        return np.zeros(codes.shape[0], dtype=np.int64)
    return _pairs(_histograms(codes, int(codes.max()) + 1)).sum(axis=1)


def pair_counts(codes: np.ndarray, gold: np.ndarray, groups, by_model: bool = False
                ) -> PairCounts:
    """Count voter pairs by answer agreement and joint correctness, within and across models.

    Parameters
    ----------
    codes : ndarray of int, shape (problems, voters)
        Answer codes, comparable within a problem; -1 is no answer (never correct).
    gold : ndarray of int, shape (problems,)
        The gold answer's code per problem.
    groups : sequence, length voters
        The model each voter comes from (any hashable labels).
    by_model : bool
        Also keep the per-model pieces (:class:`ModelCounts`), so that the models can be
        resampled (:func:`resampled_counts`); for a few control models, not for a pool of
        one-answer variants (its (M, M, P) agreement table would be large).

    Returns
    -------
    PairCounts

    Examples
    --------
    Two models with two samples each on one problem whose gold code is 0:

    >>> pc = pair_counts(np.array([[0, 0, 0, 1]]), np.array([0]), ["a", "a", "b", "b"])
    >>> int(pc.same_pairs[0]), int(pc.same_both_correct[0]), int(pc.cross_both_correct[0])
    (4, 2, 4)
    """
    codes = np.asarray(codes, dtype=np.int64)
    gold = np.asarray(gold, dtype=np.int64)
    labels = np.asarray([str(g) for g in groups])
    if codes.ndim != 2 or codes.shape[1] != len(labels) or gold.shape != (codes.shape[0],):
        raise ValueError(f"codes {codes.shape}, gold {gold.shape} and {len(labels)} group "
                         "labels do not match: codes must be (problems, voters)")
    right = codes == gold[:, None]
    answered = codes >= 0
    P = codes.shape[0]
    # One row per model, in first-seen order (the sums do not depend on it).
    groups = [labels == g for g in dict.fromkeys(labels)]
    sizes = [int(cols.sum()) for cols in groups]
    per_n = np.array([np.full(P, size, dtype=np.int64) for size in sizes])  # (M, P)
    per_right = np.array([right[:, cols].sum(axis=1) for cols in groups])
    per_ans = np.array([answered[:, cols].sum(axis=1) for cols in groups])
    per_agree = np.array([_agreeing_pairs(codes[:, cols]) for cols in groups])
    same_pairs, same_right = _pairs(per_n).sum(axis=0), _pairs(per_right).sum(axis=0)
    same_ans, same_agree = _pairs(per_ans).sum(axis=0), per_agree.sum(axis=0)
    models = None
    if by_model:
        width = int(codes.max()) + 1 if answered.any() else 1
        hist = np.stack([_histograms(codes[:, cols], width) for cols in groups])  # (M, P, W)
        agree = np.einsum("apw,bpw->abp", hist, hist)
        agree[np.arange(len(groups)), np.arange(len(groups))] = 0
        models = ModelCounts(per_n, per_right, per_ans, per_agree, agree)
    n = np.full(P, codes.shape[1], dtype=np.int64)
    S = right.sum(axis=1)
    total_ans = _pairs(answered.sum(axis=1))
    V = codes.shape[1]
    share = (sum(s * (s - 1) for s in sizes) / (V * (V - 1))) if V > 1 else 1.0
    return PairCounts(
        n=n, correct=S,
        same_pairs=same_pairs, same_both_correct=same_right, same_answered=same_ans,
        same_agree=same_agree,
        cross_pairs=_pairs(n) - same_pairs, cross_both_correct=_pairs(S) - same_right,
        cross_answered=total_ans - same_ans, cross_agree=_agreeing_pairs(codes) - same_agree,
        committee_same_share=float(share), models=models,
    )


def resampled_counts(pc: PairCounts, idx: np.ndarray, midx: np.ndarray | None = None
                     ) -> PairCounts:
    """The pair counts of every bootstrap resample, each array of shape (B, problems).

    Parameters
    ----------
    pc : PairCounts
        With :attr:`PairCounts.models` when ``midx`` is given.
    idx : ndarray of int, shape (B, P)
        Resampled problems (:func:`ensemble.core.bootstrap.problem_resamples`).
    midx : ndarray of int, shape (B, M), optional
        Resampled models (:func:`ensemble.core.bootstrap.model_resamples`): resample b
        holds model m ``w_bm`` times.  Same-model pairs are summed over the copies;
        cross-model pairs are the pairs of *different* original models, ``sum_{a != b}
        w_a w_b x_a x_b`` (two copies of one model are one draw, not two models).

    Notes
    -----
    With models resampled the diversity intervals carry which control models were
    drawn (the problems alone covered the population's rho 0.73-0.90 in simulation).
    """
    if midx is None or pc.models is None:
        fields = {f: getattr(pc, f)[idx] for f in (
            "n", "correct", "same_pairs", "same_both_correct", "same_answered", "same_agree",
            "cross_pairs", "cross_both_correct", "cross_answered", "cross_agree")}
        return PairCounts(**fields, committee_same_share=pc.committee_same_share)
    mc = pc.models
    M = mc.n.shape[0]
    w = np.stack([np.bincount(r, minlength=M) for r in midx]).astype(float)  # (B, M)

    def same(x):  # sum over copies of a per-model pair count
        return w @ x

    def cross(x):  # pairs of different models' voters: (sum w x)^2 - sum w^2 x^2
        return (w @ x) ** 2 - (w * w) @ (x * x)

    n, c, a = (mc.n.astype(float), mc.correct.astype(float), mc.answered.astype(float))
    fields = {
        "n": w @ n, "correct": w @ c,
        "same_pairs": same(_pairs(n)), "same_both_correct": same(_pairs(c)),
        "same_answered": same(_pairs(a)), "same_agree": same(mc.same_agree.astype(float)),
        "cross_pairs": cross(n), "cross_both_correct": cross(c), "cross_answered": cross(a),
        "cross_agree": np.einsum("ia,abp,ib->ip", w, mc.agree.astype(float), w),
    }
    return PairCounts(**{k: np.take_along_axis(v, idx, axis=1) for k, v in fields.items()},
                      committee_same_share=pc.committee_same_share)


@dataclass(frozen=True)
class Diversity:
    """How differently the voters of one condition answer (see the module docstring).

    Statistics that a condition's pairs cannot estimate are None: there are no
    same-model pairs with one answer per variant, and no cross-model pairs with one
    control model (then ``icc_model`` uses the ``reference`` condition's cross pairs).
    """

    condition: str
    n_voters: int
    n_models: int
    committee_same_share: float
    disagreement_cross: Estimate | None  # two voters of different models
    disagreement_same: Estimate | None  # two samples of one model
    icc_problem: Estimate | None  # correctness correlation set by the problem
    icc_model: Estimate | None  # extra correlation of one model's samples, given the problem
    reference: str | None = None  # where icc_model's cross pairs came from, if elsewhere

    def n_eff(self, k) -> np.ndarray:
        """Effective number of independent voters in a committee of k (Kish 1965).

        A negative ``icc_model`` estimate (sampling noise: the quantity is a variance
        ratio) counts as 0.
        """
        k = np.asarray(k, dtype=float)
        rho = 0.0 if self.icc_model is None else max(self.icc_model.value, 0.0)
        return k / (1.0 + (k - 1.0) * self.committee_same_share * rho)

    @property
    def n_eff_limit(self) -> float:
        """``n_eff`` as k grows without bound: ``1 / (pi * rho)`` (inf if uncorrelated)."""
        rho = 0.0 if self.icc_model is None else max(self.icc_model.value, 0.0)
        return float("inf") if rho * self.committee_same_share == 0 else \
            1.0 / (self.committee_same_share * rho)

    def to_dict(self) -> dict:
        def est(e):
            return None if e is None else {"value": e.value, "ci_low": e.low, "ci_high": e.high}

        lim = self.n_eff_limit
        return {"n_voters": self.n_voters, "n_models": self.n_models,
                "committee_same_model_share": self.committee_same_share,
                "disagreement_different_models": est(self.disagreement_cross),
                "disagreement_same_model": est(self.disagreement_same),
                "icc_problem": est(self.icc_problem), "icc_model": est(self.icc_model),
                "icc_model_reference": self.reference,
                "n_eff_limit": None if np.isinf(lim) else lim}

    def __repr__(self) -> str:
        parts = [f"Diversity({self.condition}: {self.n_voters} voters, {self.n_models} models"]
        for name in ("disagreement_cross", "disagreement_same", "icc_problem", "icc_model"):
            e = getattr(self, name)
            if e is not None:
                parts.append(f"{name}={e}")
        return ", ".join(parts) + ")"


def _interval(boot: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval of the finite resamples (NaN, NaN if there are none)."""
    boot = boot[np.isfinite(boot)]
    if not len(boot):
        return float("nan"), float("nan")
    a = (1 - level) / 2
    lo, hi = np.quantile(boot, [a, 1 - a])
    return float(lo), float(hi)


# The statistics, each of pair counts whose arrays end with the problems axis: (P,) for
# the estimate, (B, P) for the resamples of resampled_counts.

def _fraction(num: np.ndarray, den: np.ndarray):
    """Mean over problems (those with pairs) of num/den per problem."""
    has = den > 0
    frac = np.where(has, num / np.where(has, den, 1), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return frac.sum(axis=-1) / has.sum(axis=-1)


def _disagreement_cross(pc: PairCounts):
    return _fraction(pc.cross_answered - pc.cross_agree, pc.cross_answered)


def _disagreement_same(pc: PairCounts):
    return _fraction(pc.same_answered - pc.same_agree, pc.same_answered)


def _icc_problem(pc: PairCounts):
    """Cov(two voters of different models, same problem) / Var(one voter).

    ``p_bar^2`` is estimated by the mean over pairs of *different* problems of
    ``p_i p_j``, which is unbiased, as the cross pairs are for ``p_i^2``.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        pp = pc.correct / pc.n
        bb = pc.cross_both_correct / pc.cross_pairs
        P = pp.shape[-1]
        s = pp.sum(axis=-1)
        p2 = (s * s - (pp * pp).sum(axis=-1)) / (P * (P - 1))
        return (bb.mean(axis=-1) - p2) / (s / P - p2)


def _icc_model_terms(pc: PairCounts, cross: PairCounts, own: bool):
    """``(sum_i (P_same_i - P_cross_i), sum_i (p_i - P_cross_i))`` over the problems with
    both kinds of pairs; ``p_i`` from ``pc`` when ``own``, else from ``cross`` (the
    reference population's voters)."""
    same_ok = pc.same_pairs > 0
    both = same_ok & (cross.cross_pairs > 0)
    p_same = np.where(both, pc.same_both_correct / np.where(same_ok, pc.same_pairs, 1), 0)
    p_cross = np.where(both, cross.cross_both_correct / np.where(both, cross.cross_pairs, 1), 0)
    src = pc if own else cross
    p = np.where(both, src.correct / src.n, 0)
    return (p_same - p_cross).sum(axis=-1), (p - p_cross).sum(axis=-1)


def _icc_model(pc: PairCounts, cross: PairCounts, own: bool):
    num, den = _icc_model_terms(pc, cross, own)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def _estimate(stat, value, boot, level) -> Estimate:
    if boot is None:
        return Estimate(float(value), np.nan, np.nan)
    return Estimate(float(value), *_interval(np.asarray(stat(boot), dtype=float), level))


def diversity(condition: str, pc: PairCounts, n_models: int, *, committees: str = "pool",
              idx: np.ndarray | None = None, level: float = 0.95,
              reference: tuple[str, PairCounts] | None = None,
              midx: np.ndarray | None = None) -> Diversity:
    """The diagnostics of one condition from its pair counts.

    Parameters
    ----------
    condition : str
        Its name (kept in the result).
    pc : PairCounts
        From :func:`pair_counts`.
    n_models : int
        How many models the voters come from.
    committees : {"pool", "model"}
        How the vote draws a committee: k voters of the whole pool (collaboration), or
        k samples of one model (repetition, whose curve averages its models' curves).
    idx : ndarray of int, shape (B, problems), optional
        Bootstrap resamples of the problems (:func:`ensemble.core.bootstrap.problem_resamples`);
        the same ones as the vote curves', so the intervals are paired with theirs.
    level : float
        Confidence level of the percentile intervals.
    reference : (name, PairCounts), optional
        Cross-model pairs to use when ``pc`` has none (one control model): the
        population's pairs stand for "two different models".
    midx : ndarray of int, shape (B, M), optional
        Resampled models, with ``idx`` (:func:`resampled_counts`; ``pc`` needs its
        per-model pieces): the intervals then include which control models were drawn.
        Without it they are conditional on these models.

    Returns
    -------
    Diversity

    Notes
    -----
    ``icc_model`` is ``sum_i (P_same_i - P_cross_i) / sum_i (p_i - P_cross_i)``, with
    ``P_same_i`` and ``P_cross_i`` the fractions of same-model and cross-model voter
    pairs both right on problem i and ``p_i`` the fraction of voters right.  With the
    models a random draw from a population, the numerator's terms are unbiased for
    ``Var_m(q_mi)`` and the denominator's for ``p_i (1 - p_i)``.  Disagreements are
    means over problems of per-problem pair fractions (abstentions are left out of the
    pairs); the intervals resample problems, and with ``midx`` the models too (a
    condition whose models are a sample: the repetition control; a collaboration pool
    is fixed, part of the estimand).

    References
    ----------
    Kish, L. (1965). *Survey Sampling*, the design effect ``1 + (m - 1) rho``.
    Shrout, P. E. & Fleiss, J. L. (1979). Intraclass correlations. *Psychol. Bull.* 86.

    Examples
    --------
    Two models that each answer every problem the same way on every sample, one always
    right and one always wrong: samples of one model agree completely beyond difficulty.

    >>> codes = np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    >>> pc = pair_counts(codes, np.array([0, 0]), "aabb")
    >>> d = diversity("repetition", pc, 2, committees="model")
    >>> d.icc_model.value, d.disagreement_same.value, d.disagreement_cross.value
    (1.0, 0.0, 1.0)
    >>> float(d.n_eff(16))
    1.0
    """
    if committees not in ("pool", "model"):
        raise ValueError(f"committees={committees!r} must be 'pool' or 'model'")
    cross = pc
    ref_name = None
    if not (pc.cross_pairs > 0).any() and reference is not None:
        ref_name, cross = reference
    resample = idx is not None and len(idx) > 0
    boot = resampled_counts(pc, idx, midx) if resample else None
    # The reference population (a fixed pool) is resampled over the same problems only.
    cross_boot = (resampled_counts(cross, idx) if ref_name else boot) if resample else None
    icc_model = None
    num, den = _icc_model_terms(pc, cross, own=not ref_name)
    if ((pc.same_pairs > 0) & (cross.cross_pairs > 0)).any() and den > 0:
        icc_model = _estimate(lambda b: _icc_model(b[0], b[1], own=not ref_name), num / den,
                              None if boot is None else (boot, cross_boot), level)
    stats = {}
    for name, stat, den in (("disagreement_cross", _disagreement_cross, pc.cross_answered),
                            ("disagreement_same", _disagreement_same, pc.same_answered)):
        stats[name] = (_estimate(stat, stat(pc), boot, level) if (den > 0).any() else None)
    # The voter count is the same on every problem, so either every problem has cross
    # pairs or none has (one model).
    icc_problem = None
    if (pc.cross_pairs > 0).all() and len(pc.n) >= 2:
        icc_problem = _estimate(_icc_problem, _icc_problem(pc), boot, level)
    return Diversity(
        condition=condition, n_voters=int(pc.n[0]) if len(pc.n) else 0, n_models=n_models,
        committee_same_share=1.0 if committees == "model" else pc.committee_same_share,
        disagreement_cross=stats["disagreement_cross"],
        disagreement_same=stats["disagreement_same"],
        icc_problem=icc_problem,
        icc_model=icc_model,
        reference=ref_name,
    )
