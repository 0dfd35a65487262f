"""The vote stage: answers -> accuracy-versus-k curves with uncertainty.

Reads an answers table (see :mod:`ensemble.core.answers`), builds the voter pools, computes
the per-problem accuracy matrix W[problem, k] for every condition (exact estimator or
Monte-Carlo committees), pass@k, and bootstrap CIs over problems, and writes

* ``curve.csv`` / ``curve.parquet``: one row per (condition, k),
* ``curve_by_model.csv``: the repetition control per model,
* ``per_problem.parquet``: W in long form (condition, problem_id, k, accuracy, pass_at_k),
* ``per_problem_by_model.parquet``: the same for each repetition control model
  (condition, model_id, problem_id, k, accuracy, pass_at_k),
* ``voters.csv``: accuracy of every single voter (condition, voter, accuracy),
* ``diversity.csv``: per (condition, k) the effective number of independent voters and
  the headroom pass@k - accuracy with its CI (see :mod:`ensemble.voting.diversity`),
* ``vote.json``: settings, input hash, versions, and per condition the diversity
  diagnostics (disagreement, correctness correlations, effective-voter limit).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ensemble.core.answers import answer_files, load_answers
from ensemble.voting import estimators as voting
from ensemble.voting.pools import Pool, Pools, build_pools
from ensemble.voting.diversity import Diversity, diversity, pair_counts
from ensemble.voting.scale import accuracy_matrix, histogram_monte_carlo
from ensemble.core.proportions import curve_intervals
from ensemble.core.bootstrap import ci_sources, model_resamples, problem_resamples
from ensemble.voting.config import VoteConfig, parse_k
from ensemble.core.files import (atomic_dir, check_output_dir, check_same_source, exclusive,
                            sibling_lock, write_csv, write_json, write_parquet)
from ensemble.core.rundir import VOTE_MARKER, VotesDir
from ensemble.core.versions import versions



@dataclass
class ModelCurve:
    """One repetition control model: its own samples voted on their own."""

    model_id: str
    n_voters: int
    per_problem: np.ndarray  # W[problem, k]: expected accuracy, shape (problems, K)
    pass_k: np.ndarray  # (problems, K)
    committee_sd: np.ndarray | None = None  # Monte-Carlo only
    error_bound: np.ndarray | None = None  # per k, see _pool_curves


@dataclass
class ConditionResult:
    """Per-problem accuracy W and pass@k of one condition (repetition: averaged over its models)."""

    name: str
    ks: np.ndarray
    per_problem: np.ndarray  # W[problem, k]: expected accuracy, shape (problems, K)
    pass_k: np.ndarray  # (problems, K)
    n_voters: int
    n_models: int = 1
    committee_sd: np.ndarray | None = None  # Monte-Carlo only
    per_model: list[ModelCurve] = field(default_factory=list)
    error_bound: np.ndarray | None = None  # per k: the largest over this condition's pools

    @property
    def model_per_problem(self) -> np.ndarray:
        """W of every control model, shape (models, problems, K); (1, P, K) otherwise."""
        if self.per_model:
            return np.stack([m.per_problem for m in self.per_model])
        return self.per_problem[None]

    @property
    def model_pass_k(self) -> np.ndarray:
        """pass@k of every control model, shape (models, problems, K), as model_per_problem."""
        if self.per_model:
            return np.stack([m.pass_k for m in self.per_model])
        return self.pass_k[None]


@dataclass
class VoteResult:
    problems: list[str]
    conditions: dict[str, ConditionResult]
    curve: pd.DataFrame
    by_model: pd.DataFrame
    per_problem: pd.DataFrame
    per_problem_by_model: pd.DataFrame
    voters: pd.DataFrame  # accuracy of every single voter (condition, voter, accuracy)
    missing: dict[str, int]
    diversity: dict[str, Diversity] = field(default_factory=dict)
    diversity_curve: pd.DataFrame | None = None  # per (condition, k): n_eff, headroom


def _pool_curves(pool: Pool, ks: np.ndarray, cfg: VoteConfig):
    """(W, pass@k, committee sd or None, error bound per k) of one pool.

    The error bound is what the estimator guarantees for every cell: the exact
    estimator's proved truncation bound (0 where the polynomial method ran, see
    :func:`ensemble.voting.scale.accuracy_matrix`), or the Hoeffding half-width of the
    histogram Monte-Carlo at 1 - 1e-3 confidence; NaN for committee Monte-Carlo, whose
    spread is reported as committee_sd instead.
    """
    if int(ks.max()) > pool.n_voters:  # the grid logic below must never let this through
        raise AssertionError(f"k={int(ks.max())} above the {pool.n_voters} voters of {pool.name}")
    sd = None
    if cfg.estimator == "monte-carlo":
        mc = voting.monte_carlo(pool.codes, pool.gold, ks, cfg.committees, cfg.seed)
        W, sd, bound = mc.per_problem, mc.sd, np.full(len(ks), np.nan)
    else:
        hists = [voting.histogram(pool.codes[p], pool.gold[p]) for p in range(len(pool.gold))]
        if cfg.estimator == "exact":
            W, bound = accuracy_matrix(hists, ks)
        else:
            W, half = histogram_monte_carlo(hists, ks, cfg.committees, cfg.seed)
            bound = np.full(len(ks), half.cell)
    pk = voting.pass_at_k_matrix(pool.n_voters, pool.correct_counts(), ks)
    return W, pk, sd, bound


def _is_log(spec: str | None) -> bool:
    return spec is not None and str(spec).replace(" ", "").startswith("log:")


def condition_grids(spec: str | None, pools: dict[str, list[Pool]],
                    source) -> dict[str, np.ndarray]:
    """The k grid of every condition, each k within every pool of that condition.

    Parameters
    ----------
    spec : str or None
        The ``--k`` spec (see :func:`ensemble.voting.config.parse_k`).
    pools : dict
        Condition name -> its voter pools (one for collaboration, one per control model
        for repetition).
    source : path-like
        Named in messages.

    Returns
    -------
    dict
        Condition -> sorted k.  A condition whose pools have different sizes gets the k
        up to its smallest pool, with a warning naming every pool and its size; an
        explicit k above a condition's largest pool is an error.  For ``log:M`` each
        condition's grid also holds the log grid up to the smallest pool of all
        conditions, so the conditions share one log-spaced grid over their common range
        (the fit uses it).
    """
    sizes = {name: [p.n_voters for p in pl] for name, pl in pools.items()}
    common = min(min(s) for s in sizes.values())
    explicit = spec is not None and str(spec).strip() not in ("", "all") and not _is_log(spec)
    grids = {}
    for name, plist in pools.items():
        n_min = min(sizes[name])
        if explicit:
            try:
                wanted = parse_k(spec, max(sizes[name]))
            except ValueError as exc:
                if "exceeds" not in str(exc):
                    raise
                if len(plist) == 1:
                    raise ValueError(f"{exc} of condition {name} in {source}; lower --k") from None
                raise ValueError(
                    f"{str(exc).split(' exceeds')[0]} exceeds the voters of every {name} model "
                    f"in {source} ({', '.join(f'{p.name}={p.n_voters}' for p in plist)}); "
                    "lower --k") from None
            ks = wanted[wanted <= n_min]
            if not ks.size:
                raise ValueError(
                    f"k={int(wanted.min())} exceeds the voters of some {name} models in "
                    f"{source} ({', '.join(f'{p.name}={p.n_voters}' for p in plist)}); lower --k")
            cut = wanted.max() > n_min
        else:
            ks = parse_k(spec, n_min)
            cut = max(sizes[name]) > n_min
            if _is_log(spec):
                ks = np.union1d(ks, parse_k(spec, common))
        if cut:
            warnings.warn(
                f"{name} models have different sample counts "
                f"({', '.join(f'{p.name}={p.n_voters}' for p in plist)}); every model is voted "
                f"on its own samples only, so the {name} curve stops at k={int(ks.max())}, "
                "its smallest model's count",
                stacklevel=2,
            )
        grids[name] = ks
    return grids


def compute(table: pd.DataFrame, cfg: VoteConfig, progress: bool = False) -> VoteResult:
    """Curves of every condition in ``table`` (pure computation, no files)."""
    pools = build_pools(table)
    for name, plist in pools.by_model.items():
        if len(plist) == 2:
            # Measured (docs/results.md, "Curve intervals"): the gap's interval covered
            # 0.89-0.93, with 3 models 0.93-0.95.
            warnings.warn(
                f"{name} has 2 control models: the spread between models is estimated from "
                "one degree of freedom (often as 0), so intervals for a typical control "
                "model cover less than their level; use 3 or more (--repetition-models)",
                stacklevel=2)
    by_cond = {n: [p] for n, p in pools.pools.items()} | dict(pools.by_model)
    grids = condition_grids(cfg.k, by_cond, cfg.input)
    conds = _condition_results(by_cond, grids, set(pools.by_model), cfg, progress)
    idx = problem_resamples(len(pools.problems), cfg.bootstrap, cfg.seed)
    curve, by_model, per_problem, per_problem_by_model = _curve_tables(conds, pools.problems,
                                                                        cfg)
    missing = {p.name: p.missing for plist in by_cond.values() for p in plist}
    div = _diversity(pools, idx, cfg)
    div_curve = pd.concat([_diversity_rows(c, div[name], cfg) for name, c in conds.items()],
                          ignore_index=True)
    return VoteResult(pools.problems, conds, curve, by_model, per_problem, per_problem_by_model,
                      _voter_table(by_cond, set(pools.by_model)), missing, div, div_curve)


def _condition_results(by_cond: dict[str, list[Pool]], grids: dict[str, np.ndarray],
                       per_model: set[str], cfg: VoteConfig,
                       progress: bool) -> dict[str, ConditionResult]:
    """Vote every pool on its condition's grid; a condition's curve averages its pools
    (the repetition control's models, each on its own samples)."""
    jobs = [(name, p) for name, plist in by_cond.items() for p in plist]
    curves: dict[str, list[ModelCurve]] = {name: [] for name in by_cond}
    for name, p in tqdm(jobs, desc="voting", disable=not progress, leave=False):
        W, pk, sd, bound = _pool_curves(p, grids[name], cfg)
        curves[name].append(ModelCurve(p.name.split("/", 1)[-1], p.n_voters, W, pk, sd, bound))
    conds = {}
    for name, mc in curves.items():
        sd = (np.mean([m.committee_sd for m in mc], axis=0) if cfg.estimator == "monte-carlo"
              else None)
        conds[name] = ConditionResult(
            name, grids[name], np.mean([m.per_problem for m in mc], axis=0),
            np.mean([m.pass_k for m in mc], axis=0), min(m.n_voters for m in mc), len(mc), sd,
            mc if name in per_model else [], np.max([m.error_bound for m in mc], axis=0),
        )
    return conds


def _curve_row(name: str, c: ConditionResult, n_problems: int,
               cfg: VoteConfig) -> pd.DataFrame:
    """One condition's curve.csv rows, with their CIs.

    Each CI is Wilson's with the effective sample size of a crossed design
    (:func:`ensemble.core.proportions.curve_intervals`): with several control models it
    includes the choice of control model, its between-model part on M - 1 degrees of
    freedom.  (The percentile bootstrap over problems and models covered 0.89-0.91 for
    4 control models that differ by skill alone; docs/results.md.)
    """
    lo, hi = curve_intervals(c.model_per_problem, cfg.ci)
    plo, phi = curve_intervals(c.model_pass_k, cfg.ci)
    return pd.DataFrame({
        "condition": name, "k": c.ks, "accuracy": c.per_problem.mean(axis=0), "ci_low": lo,
        "ci_high": hi, "pass_at_k": c.pass_k.mean(axis=0), "pass_ci_low": plo,
        "pass_ci_high": phi,
        "committee_sd": c.committee_sd if c.committee_sd is not None else np.nan,
        "error_bound": c.error_bound,
        "n_voters": c.n_voters, "n_models": c.n_models, "n_problems": n_problems,
        "estimator": cfg.estimator,
    })


def _long(W: np.ndarray, pass_k: np.ndarray, problems: list[str], ks: np.ndarray,
          **labels) -> pd.DataFrame:
    """A per-problem matrix W[problem, k] in long form (per_problem*.parquet)."""
    P, K = W.shape
    return pd.DataFrame({**labels, "problem_id": np.repeat(problems, K), "k": np.tile(ks, P),
                         "accuracy": W.ravel(), "pass_at_k": pass_k.ravel()})


def _curve_tables(conds: dict[str, ConditionResult], problems: list[str],
                  cfg: VoteConfig):
    """curve, curve_by_model, per_problem and per_problem_by_model as data frames."""
    curve_rows, model_rows, long_rows, long_model_rows = [], [], [], []
    for name, c in conds.items():
        curve_rows.append(_curve_row(name, c, len(problems), cfg))
        for m in c.per_model:
            model_rows.append(pd.DataFrame({
                "condition": name, "model_id": m.model_id, "k": c.ks,
                "accuracy": m.per_problem.mean(axis=0), "pass_at_k": m.pass_k.mean(axis=0),
                "n_voters": m.n_voters,
            }))
            long_model_rows.append(_long(m.per_problem, m.pass_k, problems, c.ks, condition=name,
                                         model_id=m.model_id))
        long_rows.append(_long(c.per_problem, c.pass_k, problems, c.ks, condition=name))
    curve = pd.concat(curve_rows, ignore_index=True)
    by_model = (pd.concat(model_rows, ignore_index=True) if model_rows else
                pd.DataFrame(columns=["condition", "model_id", "k", "accuracy", "pass_at_k",
                                      "n_voters"]))
    per_problem_by_model = (
        pd.concat(long_model_rows, ignore_index=True) if long_model_rows else
        pd.DataFrame(columns=["condition", "model_id", "problem_id", "k", "accuracy",
                              "pass_at_k"]))
    return curve, by_model, pd.concat(long_rows, ignore_index=True), per_problem_by_model


def _voter_table(by_cond: dict[str, list[Pool]], per_model: set[str]) -> pd.DataFrame:
    """voters.csv: every voter's own accuracy (control models' samples as model/sample)."""
    return pd.concat([
        pd.DataFrame({"condition": n, "voter": [f"{p.name.split('/', 1)[-1]}/{v}"
                                                 if n in per_model else v for v in p.voters],
                      "accuracy": (p.codes == p.gold[:, None]).mean(axis=0)})
        for n, plist in by_cond.items() for p in plist
    ], ignore_index=True)


def _diversity(pools: Pools, idx: np.ndarray, cfg: VoteConfig) -> dict[str, Diversity]:
    """The diagnostics of :mod:`ensemble.voting.diversity` for every condition.

    Collaboration's voters are grouped by the variant they come from (``model/sample``);
    repetition's by control model.  With one control model, the collaboration pool's
    pairs of different variants stand for "two different models".  Several control
    models are resampled with the problems (the pool is fixed: part of the estimand).
    """
    counts, out = {}, {}
    for name, p in pools.pools.items():
        groups = [v.split("/", 1)[0] for v in p.voters]
        counts[name] = (pair_counts(p.codes, p.gold, groups), len(set(groups)), "pool")
    for name, plist in pools.by_model.items():
        codes = np.concatenate([p.codes for p in plist], axis=1)
        groups = [p.name for p in plist for _ in range(p.n_voters)]
        counts[name] = (pair_counts(codes, plist[0].gold, groups, by_model=len(plist) > 1),
                        len(plist), "model")
    pool_names = [n for n in counts if counts[n][2] == "pool"]
    reference = (pool_names[0], counts[pool_names[0]][0]) if pool_names else None
    for name, (pc, n_models, committees) in counts.items():
        midx = (model_resamples(n_models, cfg.bootstrap, cfg.seed)
                if committees == "model" and n_models > 1 else None)
        out[name] = diversity(name, pc, n_models, committees=committees, idx=idx, level=cfg.ci,
                              reference=None if committees == "pool" else reference, midx=midx)
    return out


def _diversity_rows(c: ConditionResult, d: Diversity, cfg: VoteConfig) -> pd.DataFrame:
    """Per k: the effective number of independent voters and the headroom over the vote."""
    head = c.model_pass_k - c.model_per_problem
    lo, hi = curve_intervals(head, cfg.ci)  # as the curve's CIs (_curve_row)
    return pd.DataFrame({
        "condition": c.name, "k": c.ks, "n_eff": d.n_eff(c.ks),
        "accuracy": c.per_problem.mean(axis=0), "pass_at_k": c.pass_k.mean(axis=0),
        "headroom": head.mean(axis=(0, 1)), "headroom_ci_low": lo, "headroom_ci_high": hi,
    })


def _condition_meta(c: ConditionResult) -> dict:
    bound = float(np.max(c.error_bound)) if np.isfinite(c.error_bound).all() else None
    return {"n_voters": c.n_voters, "n_models": c.n_models, "k_max": int(c.ks.max()),
            "error_bound": bound,
            "models": [m.model_id for m in c.per_model] or None,
            "ci_sources": list(ci_sources(c.n_models))}


def run_vote(cfg: VoteConfig, progress: bool = True) -> VoteResult:
    """Read the answers named by ``cfg``, compute the curves and write the votes directory."""
    answer_files(cfg.input)  # a missing input is the first thing to say
    check_output_dir(cfg.out_dir, "votes directory", VOTE_MARKER)
    check_same_source(cfg.out_dir / VOTE_MARKER, "input", cfg.input, cfg.force, "votes")
    with exclusive(sibling_lock(cfg.out_dir), f"{cfg.out_dir}"):
        return _vote_into(cfg, progress)


def _vote_into(cfg: VoteConfig, progress: bool) -> VoteResult:
    table, digest = load_answers(cfg.input, cfg.canonical)
    result = compute(table, cfg, progress=progress)
    with atomic_dir(cfg.out_dir, "votes directory", VOTE_MARKER) as tmp:
        out = VotesDir(tmp)
        write_csv(out.curve_csv, result.curve)
        write_parquet(out.curve_parquet, result.curve)
        write_csv(out.curve_by_model, result.by_model)
        write_parquet(out.per_problem, result.per_problem)
        write_parquet(out.per_problem_by_model, result.per_problem_by_model)
        write_csv(out.voters, result.voters)
        write_csv(out.diversity, result.diversity_curve)
        write_json(out.meta, {
            "config": cfg.to_dict(),
            "input_sha256": digest,
            "n_rows": len(table),
            "problems": len(result.problems),
            "conditions": {n: _condition_meta(c) for n, c in result.conditions.items()},
            "missing_answers": result.missing,
            "diversity": {n: d.to_dict() for n, d in result.diversity.items()},
            "versions": versions(),
        })
    return result
