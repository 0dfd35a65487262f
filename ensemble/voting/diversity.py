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


def _pairs(x: np.ndarray) -> np.ndarray:
    return x * (x - 1)


def _agreeing_pairs(codes: np.ndarray) -> np.ndarray:
    """Ordered pairs of answered voters with the same answer, per problem (row)."""
    P = codes.shape[0]
    ok = codes >= 0
    if not ok.any():
        return np.zeros(P, dtype=np.int64)
    width = int(codes.max()) + 1
    rows = np.broadcast_to(np.arange(P)[:, None], codes.shape)
    counts = np.bincount((rows[ok] * width + codes[ok]), minlength=P * width).reshape(P, width)
    return _pairs(counts).sum(axis=1)


def pair_counts(codes: np.ndarray, gold: np.ndarray, groups) -> PairCounts:
    """Count voter pairs by answer agreement and joint correctness, within and across models.

    Parameters
    ----------
    codes : ndarray of int, shape (problems, voters)
        Answer codes, comparable within a problem; -1 is no answer (never correct).
    gold : ndarray of int, shape (problems,)
        The gold answer's code per problem.
    groups : sequence, length voters
        The model each voter comes from (any hashable labels).

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
    z = np.zeros(P, dtype=np.int64)
    same_pairs, same_right, same_ans, same_agree = z.copy(), z.copy(), z.copy(), z.copy()
    sizes = []
    for g in dict.fromkeys(labels):  # first-seen order; sums do not depend on it
        cols = labels == g
        sizes.append(int(cols.sum()))
        same_pairs += _pairs(np.full(P, cols.sum(), dtype=np.int64))
        same_right += _pairs(right[:, cols].sum(axis=1))
        same_ans += _pairs(answered[:, cols].sum(axis=1))
        same_agree += _agreeing_pairs(codes[:, cols])
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
        committee_same_share=float(share),
    )


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


def _ratio(num: np.ndarray, den: np.ndarray, idx: np.ndarray | None, level: float) -> Estimate:
    """sum(num) / sum(den) over problems, with a bootstrap CI over resampled problems."""
    value = float(num.sum() / den.sum())
    if idx is None or not len(idx):
        return Estimate(value, np.nan, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = num[idx].sum(axis=1) / den[idx].sum(axis=1)
    return Estimate(value, *_interval(boot, level))


def _interval(boot: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval of the finite resamples (NaN, NaN if there are none)."""
    boot = boot[np.isfinite(boot)]
    if not len(boot):
        return float("nan"), float("nan")
    a = (1 - level) / 2
    lo, hi = np.quantile(boot, [a, 1 - a])
    return float(lo), float(hi)


def _mean_fraction(num, den, idx, level) -> Estimate | None:
    """Mean over problems (those with pairs) of num/den per problem."""
    has = den > 0
    if not has.any():
        return None
    frac = np.where(has, num / np.where(has, den, 1), 0.0)
    return _ratio(frac, has.astype(float), idx, level)


def _difficulty_icc(pc: PairCounts, idx, level) -> Estimate | None:
    """Cov(two voters of different models, same problem) / Var(one voter).

    ``p_bar^2`` is estimated by the mean over pairs of *different* problems of
    ``p_i p_j``, which is unbiased, as the cross pairs are for ``p_i^2``.
    """
    # The voter count is the same on every problem, so either every problem has cross
    # pairs or none has (one model).
    if not (pc.cross_pairs > 0).all() or len(pc.n) < 2:
        return None
    p = pc.correct / pc.n
    both = pc.cross_both_correct / pc.cross_pairs

    def stat(pp, bb):
        P = pp.shape[-1]
        s = pp.sum(axis=-1)
        p2 = (s * s - (pp * pp).sum(axis=-1)) / (P * (P - 1))
        with np.errstate(invalid="ignore", divide="ignore"):
            return (bb.mean(axis=-1) - p2) / (s / P - p2)

    value = float(stat(p, both))
    if idx is None or not len(idx):
        return Estimate(value, np.nan, np.nan)
    boot = stat(p[idx], both[idx])
    return Estimate(value, *_interval(boot, level))


def diversity(condition: str, pc: PairCounts, n_models: int, *, committees: str = "pool",
              idx: np.ndarray | None = None, level: float = 0.95,
              reference: tuple[str, PairCounts] | None = None) -> Diversity:
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
    pairs); the intervals resample problems, not models.

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
    same_ok = pc.same_pairs > 0
    cross = pc
    ref_name = None
    if not (pc.cross_pairs > 0).any() and reference is not None:
        ref_name, cross = reference
    icc_model = None
    both_have = same_ok & (cross.cross_pairs > 0)
    if both_have.any():
        p_same = np.where(both_have, pc.same_both_correct / np.where(same_ok, pc.same_pairs, 1), 0)
        p_cross = np.where(both_have,
                           cross.cross_both_correct / np.where(both_have, cross.cross_pairs, 1), 0)
        # With a reference, p_i is the population's (the reference's voters); otherwise
        # the condition's own voters.
        src = cross if ref_name else pc
        p = np.where(both_have, src.correct / src.n, 0)
        den = p - p_cross
        if den.sum() > 0:
            icc_model = _ratio(p_same - p_cross, den, idx, level)
    return Diversity(
        condition=condition, n_voters=int(pc.n[0]) if len(pc.n) else 0, n_models=n_models,
        committee_same_share=1.0 if committees == "model" else pc.committee_same_share,
        disagreement_cross=_mean_fraction(pc.cross_answered - pc.cross_agree, pc.cross_answered,
                                          idx, level),
        disagreement_same=_mean_fraction(pc.same_answered - pc.same_agree, pc.same_answered,
                                         idx, level),
        icc_problem=_difficulty_icc(pc, idx, level),
        icc_model=icc_model,
        reference=ref_name,
    )
