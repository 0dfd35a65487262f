"""The fit stage: votes directory -> ``fits/fit.json`` (and a printed table)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ensemble.bootstrap import percentile_ci, problem_resamples, resampled_means
from ensemble.config import FitConfig
from ensemble.runio import versions, write_json
from fits.scaling import LogFit, SaturatingFit, log_fit, log_fit_many, saturating_fit

COLLAB, REPET = "collaboration", "repetition"


class VotesError(ValueError):
    """The votes directory is missing or incomplete."""


@dataclass
class Votes:
    """What the vote stage wrote, loaded back."""

    curve: pd.DataFrame
    per_problem: pd.DataFrame
    meta: dict

    def matrix(self, condition: str) -> tuple[np.ndarray, np.ndarray]:
        """(ks, W[problem, k]) of one condition, problems in a fixed order."""
        d = self.per_problem[self.per_problem["condition"] == condition]
        W = d.pivot(index="problem_id", columns="k", values="accuracy")
        W = W.reindex(sorted(W.index))
        return W.columns.to_numpy(dtype=np.int64), W.to_numpy()


def load_votes(votes_dir: Path) -> Votes:
    votes_dir = Path(votes_dir)
    if (votes_dir / "votes").is_dir() and not (votes_dir / "curve.parquet").exists():
        votes_dir = votes_dir / "votes"
    need = ["curve.parquet", "per_problem.parquet", "vote.json"]
    missing = [n for n in need if not (votes_dir / n).exists()]
    if missing:
        raise VotesError(
            f"{votes_dir}: missing {', '.join(missing)}; run `ensemble vote` on the answers first"
        )
    return Votes(pd.read_parquet(votes_dir / "curve.parquet"),
                 pd.read_parquet(votes_dir / "per_problem.parquet"),
                 json.loads((votes_dir / "vote.json").read_text()))


@dataclass
class ConditionFit:
    log: LogFit
    saturating: SaturatingFit | None
    preferred: str  # "log" or "saturating" by AIC

    def to_dict(self) -> dict:
        d = {"a": self.log.a, "b": self.log.b, "a_se": self.log.a_se, "b_se": self.log.b_se,
             "a_ci": list(self.log.a_ci), "b_ci": list(self.log.b_ci), "r2": self.log.r2,
             "k_min": self.log.k_min, "k_max": self.log.k_max, "n_points": self.log.n_points,
             "aic_log": self.log.aic, "preferred_by_aic": self.preferred}
        if self.saturating is not None:
            s = self.saturating
            d["saturating"] = {"c": s.c, "d": s.d, "beta": s.beta, "r2": s.r2, "aic": s.aic,
                               "converged": s.converged}
        return d


@dataclass
class FitResult:
    conditions: dict[str, ConditionFit]
    comparison: dict | None
    config: FitConfig

    def table(self) -> str:
        """A short plain-text table of the fits and the comparison."""
        lines = [f"{'condition':<14} {'a':>8} {'b':>8} {'b 95% CI':>20} {'R2':>7} "
                 f"{'k range':>10} {'AIC pick':>10}"]
        for name, f in self.conditions.items():
            L = f.log
            lines.append(f"{name:<14} {L.a:8.4f} {L.b:8.4f} "
                         f"{f'[{L.b_ci[0]:.4f}, {L.b_ci[1]:.4f}]':>20} {L.r2:7.4f} "
                         f"{f'{L.k_min}..{L.k_max}':>10} {f.preferred:>10}")
        if self.comparison:
            c = self.comparison
            lines.append(
                f"collaboration - repetition: slope {c['slope_diff']:+.4f} "
                f"[{c['slope_diff_ci'][0]:+.4f}, {c['slope_diff_ci'][1]:+.4f}], "
                f"gap at k={c['k']} {c['gap']:+.4f} [{c['gap_ci'][0]:+.4f}, {c['gap_ci'][1]:+.4f}]"
            )
        lines.append("R2 and OLS errors treat the k points as independent; they share one "
                     "pool of problems and voters, so trust the bootstrap CIs.")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"conditions": {n: f.to_dict() for n, f in self.conditions.items()},
                "comparison": self.comparison, "config": self.config.to_dict(),
                "versions": versions()}


def fit_votes(votes: Votes, cfg: FitConfig) -> FitResult:
    """Fit every condition and compare collaboration with repetition (no files)."""
    reps = cfg.bootstrap if cfg.bootstrap is not None else int(
        votes.meta.get("config", {}).get("bootstrap", 1000))
    conds = sorted(votes.curve["condition"].unique())
    mats = {c: votes.matrix(c) for c in conds}
    n_problems = next(iter(mats.values()))[1].shape[0]
    idx = problem_resamples(n_problems, reps, cfg.seed)
    fits: dict[str, ConditionFit] = {}
    boot_ab: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for c in conds:
        ks, W = mats[c]
        keep = ks >= cfg.k_min
        if keep.sum() < 2:
            raise ValueError(
                f"condition {c}: --k-min={cfg.k_min} leaves {int(keep.sum())} k value(s) "
                f"(k runs {ks.min()}..{ks.max()}); lower --k-min"
            )
        ks, W = ks[keep], W[:, keep]
        fit = log_fit(ks, W.mean(axis=0))
        boot = resampled_means(W, idx)
        a_b, b_b = log_fit_many(ks, boot) if len(boot) else (np.array([]), np.array([]))
        if len(boot):
            alo, ahi = percentile_ci(a_b[:, None], cfg.ci)
            blo, bhi = percentile_ci(b_b[:, None], cfg.ci)
            fit = LogFit(**{**fit.__dict__, "a_ci": (float(alo[0]), float(ahi[0])),
                            "b_ci": (float(blo[0]), float(bhi[0]))})
        sat = saturating_fit(ks, W.mean(axis=0)) if len(ks) >= 4 else None
        preferred = "saturating" if sat is not None and sat.aic < fit.aic - 2 else "log"
        fits[c] = ConditionFit(fit, sat, preferred)
        boot_ab[c] = (ks, boot, b_b)
    comparison = None
    if COLLAB in fits and REPET in fits:
        comparison = _compare(mats, fits, boot_ab, cfg)
    return FitResult(fits, comparison, cfg)


def _compare(mats, fits, boot_ab, cfg: FitConfig) -> dict:
    kc, Wc = mats[COLLAB]
    kr, Wr = mats[REPET]
    common = np.intersect1d(kc[kc >= cfg.k_min], kr[kr >= cfg.k_min])
    k = int(common.max())
    gc = Wc[:, np.searchsorted(kc, k)]
    gr = Wr[:, np.searchsorted(kr, k)]
    gap = float(gc.mean() - gr.mean())
    slope = fits[COLLAB].log.b - fits[REPET].log.b
    out = {"k": k, "gap": gap, "slope_diff": float(slope),
           "gap_ci": [float("nan")] * 2, "slope_diff_ci": [float("nan")] * 2,
           "accuracy_collaboration": float(gc.mean()), "accuracy_repetition": float(gr.mean())}
    bc, br = boot_ab[COLLAB][2], boot_ab[REPET][2]
    if len(bc):
        # Paired: the same resampled problems for both conditions (same seed and index).
        idx = problem_resamples(len(gc), len(bc), cfg.seed)
        gb = resampled_means((gc - gr)[:, None], idx)[:, 0]
        lo, hi = percentile_ci(gb[:, None], cfg.ci)
        out["gap_ci"] = [float(lo[0]), float(hi[0])]
        lo, hi = percentile_ci((bc - br)[:, None], cfg.ci)
        out["slope_diff_ci"] = [float(lo[0]), float(hi[0])]
    return out


def run_fit(cfg: FitConfig) -> FitResult:
    """Load the votes directory, fit, and write ``fit.json`` under ``cfg.out_dir``."""
    votes = load_votes(cfg.votes)
    result = fit_votes(votes, cfg)
    write_json(cfg.out_dir / "fit.json", result.to_dict())
    return result
