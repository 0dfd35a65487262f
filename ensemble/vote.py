"""The vote stage: answers -> accuracy-versus-k curves with uncertainty.

Reads an answers table (see :mod:`ensemble.answers`), builds the voter pools, computes
the per-problem accuracy matrix W[problem, k] for every condition (exact estimator or
Monte-Carlo committees), pass@k, and bootstrap CIs over problems, and writes

* ``curve.csv`` / ``curve.parquet``: one row per (condition, k),
* ``curve_by_model.csv``: the repetition control per model,
* ``per_problem.parquet``: W in long form (condition, problem_id, k, accuracy, pass_at_k),
* ``voters.csv``: accuracy of every single voter (condition, voter, accuracy),
* ``vote.json``: settings, input hash, versions.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ensemble import answers as A
from ensemble import voting
from ensemble.bootstrap import percentile_ci, problem_resamples, resampled_means
from ensemble.config import VoteConfig, parse_k
from ensemble.runio import versions, write_csv, write_json, write_parquet


@dataclass
class ConditionResult:
    """W and pass@k of one condition (for repetition: averaged over its models)."""

    name: str
    ks: np.ndarray
    W: np.ndarray  # (problems, K)
    pass_k: np.ndarray  # (problems, K)
    n_voters: int
    n_models: int = 1
    committee_sd: np.ndarray | None = None  # Monte-Carlo only
    per_model: list[tuple[str, int, np.ndarray, np.ndarray]] = field(default_factory=list)


@dataclass
class VoteResult:
    problems: list[str]
    conditions: dict[str, ConditionResult]
    curve: pd.DataFrame
    by_model: pd.DataFrame
    per_problem: pd.DataFrame
    voters: pd.DataFrame  # accuracy of every single voter (condition, voter, accuracy)
    missing: dict[str, int]


def _pool_curves(pool: A.Pool, ks: np.ndarray, cfg: VoteConfig):
    if cfg.estimator == "exact":
        hists = [voting.histogram(pool.codes[p], pool.gold[p]) for p in range(len(pool.gold))]
        W = voting.exact_matrix(hists, ks)
        sd = None
    else:
        mc = voting.monte_carlo(pool.codes, pool.gold, ks, cfg.committees, cfg.seed)
        W, sd = mc.W, mc.sd
    pk = voting.pass_at_k_matrix(pool.n_voters, pool.correct_counts(), ks)
    return W, pk, sd


def _grid(cfg: VoteConfig, pool: A.Pool, what: str) -> np.ndarray:
    try:
        return parse_k(cfg.k, pool.n_voters)
    except ValueError as exc:
        if "exceeds" in str(exc):
            k = parse_k(cfg.k, None if cfg.k is None else 10**12).max()
            raise ValueError(
                f"k={int(k)} exceeds the {pool.n_voters} voters of {what} in {cfg.input}; "
                "lower --k"
            ) from None
        raise


def compute(table: pd.DataFrame, cfg: VoteConfig, progress: bool = False) -> VoteResult:
    """Curves of every condition in ``table`` (pure computation, no files)."""
    pools = A.build_pools(table)
    conds: dict[str, ConditionResult] = {}
    jobs = [(n, [p]) for n, p in pools.pools.items()] + list(pools.by_model.items())
    for name, plist in tqdm(jobs, desc="voting", disable=not progress, leave=False):
        if name == A.REPETITION:
            # Every model must support the grid: check them all before computing.
            grids = [_grid(cfg, p, f"{p.name}") for p in plist]
            ks = grids[int(np.argmin([len(g) for g in grids]))] if cfg.k is None else grids[0]
            if cfg.k is None and len({p.n_voters for p in plist}) > 1:
                warnings.warn(
                    f"repetition models have different sample counts "
                    f"({', '.join(f'{p.name}={p.n_voters}' for p in plist)}); the curve stops "
                    f"at k={int(ks.max())}, the smallest",
                    stacklevel=2,
                )
            per_model = []
            for p in plist:
                W, pk, sd = _pool_curves(p, ks, cfg)
                per_model.append((p.name.split("/", 1)[1], p.n_voters, W, pk, sd))
            W = np.mean([m[2] for m in per_model], axis=0)
            pk = np.mean([m[3] for m in per_model], axis=0)
            sd = None if cfg.estimator == "exact" else np.mean([m[4] for m in per_model], axis=0)
            conds[name] = ConditionResult(
                name, ks, W, pk, min(p.n_voters for p in plist), len(plist), sd,
                [(m, n, w, q) for m, n, w, q, _ in per_model],
            )
        else:
            pool = plist[0]
            ks = _grid(cfg, pool, f"condition {name}")
            W, pk, sd = _pool_curves(pool, ks, cfg)
            conds[name] = ConditionResult(name, ks, W, pk, pool.n_voters, 1, sd)
    idx = problem_resamples(len(pools.problems), cfg.bootstrap, cfg.seed)
    curve_rows, model_rows, long_rows = [], [], []
    for name, c in conds.items():
        boot = resampled_means(c.W, idx)
        lo, hi = percentile_ci(boot, cfg.ci)
        plo, phi = percentile_ci(resampled_means(c.pass_k, idx), cfg.ci)
        curve_rows.append(pd.DataFrame({
            "condition": name, "k": c.ks, "accuracy": c.W.mean(axis=0), "ci_low": lo,
            "ci_high": hi, "pass_at_k": c.pass_k.mean(axis=0), "pass_ci_low": plo,
            "pass_ci_high": phi,
            "committee_sd": c.committee_sd if c.committee_sd is not None else np.nan,
            "n_voters": c.n_voters, "n_models": c.n_models, "n_problems": len(pools.problems),
            "estimator": cfg.estimator,
        }))
        for model, n, W, pk in c.per_model:
            model_rows.append(pd.DataFrame({
                "condition": name, "model_id": model, "k": c.ks, "accuracy": W.mean(axis=0),
                "pass_at_k": pk.mean(axis=0), "n_voters": n,
            }))
        P, K = c.W.shape
        long_rows.append(pd.DataFrame({
            "condition": name, "problem_id": np.repeat(pools.problems, K),
            "k": np.tile(c.ks, P), "accuracy": c.W.ravel(), "pass_at_k": c.pass_k.ravel(),
        }))
    curve = pd.concat(curve_rows, ignore_index=True)
    by_model = (pd.concat(model_rows, ignore_index=True) if model_rows else
                pd.DataFrame(columns=["condition", "model_id", "k", "accuracy", "pass_at_k",
                                      "n_voters"]))
    per_problem = pd.concat(long_rows, ignore_index=True)
    all_pools = [(n, p) for n, p in pools.pools.items()]
    all_pools += [(n, p) for n, pl in pools.by_model.items() for p in pl]
    voters = pd.concat([
        pd.DataFrame({"condition": n, "voter": [f"{p.name.split('/', 1)[-1]}/{v}"
                                                 if n == A.REPETITION else v for v in p.voters],
                      "accuracy": (p.codes == p.gold[:, None]).mean(axis=0)})
        for n, p in all_pools
    ], ignore_index=True)
    missing = {p.name: p.missing for p in pools.pools.values()}
    missing.update({p.name: p.missing for pl in pools.by_model.values() for p in pl})
    return VoteResult(pools.problems, conds, curve, by_model, per_problem, voters, missing)


def run_vote(cfg: VoteConfig, progress: bool = True) -> VoteResult:
    """Read the answers named by ``cfg``, compute the curves and write the votes directory."""
    table, digest = A.load_answers(cfg.input)
    result = compute(table, cfg, progress=progress)
    out = cfg.out_dir
    write_csv(out / "curve.csv", result.curve)
    write_parquet(out / "curve.parquet", result.curve)
    write_csv(out / "curve_by_model.csv", result.by_model)
    write_parquet(out / "per_problem.parquet", result.per_problem)
    write_csv(out / "voters.csv", result.voters)
    write_json(out / "vote.json", {
        "config": cfg.to_dict(),
        "input_sha256": digest,
        "n_rows": len(table),
        "problems": len(result.problems),
        "conditions": {n: {"n_voters": c.n_voters, "n_models": c.n_models,
                           "k_max": int(c.ks.max())} for n, c in result.conditions.items()},
        "missing_answers": result.missing,
        "versions": versions(),
    })
    return result
