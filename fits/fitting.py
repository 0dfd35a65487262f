"""The fit stage: votes directory -> ``fits/fit.json`` (and a printed summary).

Every condition is fitted on one common, log-spaced k grid over the k range that all
conditions share (:func:`fits.scaling.fit_grid`), so slopes are comparable and do not
depend on the ``--k`` spec of the vote.  Uncertainty is a bootstrap over problems,
paired between conditions (one resample index for all), with the repetition control's
models resampled together with the problems when there are several of them.  The log
law is checked by extrapolation (fit on k <= k_max/4, compare the prediction at k_max
with the measurement).  The collaboration - repetition gap is reported at several k
with the interval method chosen by :func:`fits.intervals.gap_interval`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ensemble.core.bootstrap import (ci_sources, model_resamples, percentile_ci, problem_resamples,
                                resampled_model_means)
from fits.config import FitConfig
from ensemble.core.answers import COLLABORATION as COLLAB, REPETITION as REPET
from ensemble.core.files import (check_output_dir, check_same_source, exclusive, read_json,
                                 sibling_lock, write_json)
from ensemble.core.rundir import FIT_FILE, votes_dir_of
from ensemble.core.versions import versions
from fits.intervals import gap_interval
from fits.scaling import (LogFit, SaturatingFit, fit_grid, holdout_error, log_fit,
                          log_fit_many, saturating_fit)



class VotesError(ValueError):
    """The votes directory is missing or incomplete."""


@dataclass
class Votes:
    """What the vote stage wrote, loaded back."""

    curve: pd.DataFrame
    per_problem: pd.DataFrame
    meta: dict
    per_problem_by_model: pd.DataFrame | None = None
    sha256: str = ""  # of the files read, so a fit can tell which votes it belongs to

    def matrix(self, condition: str) -> tuple[np.ndarray, np.ndarray]:
        """(ks, W[problem, k]) of one condition, problems in a fixed order."""
        d = self.per_problem[self.per_problem["condition"] == condition]
        W = d.pivot(index="problem_id", columns="k", values="accuracy")
        W = W.reindex(sorted(W.index))
        return W.columns.to_numpy(dtype=np.int64), W.to_numpy()

    def model_matrix(self, condition: str) -> tuple[np.ndarray, np.ndarray]:
        """(ks, W[model, problem, k]): each control model's own matrix; (1, P, K) otherwise."""
        ks, W = self.matrix(condition)
        by = self.per_problem_by_model
        if by is None or not (by["condition"] == condition).any():
            return ks, W[None]
        d = by[by["condition"] == condition]
        mats = []
        for _, m in d.groupby("model_id", sort=True):
            Wm = m.pivot(index="problem_id", columns="k", values="accuracy")
            mats.append(Wm.reindex(index=sorted(Wm.index), columns=ks).to_numpy())
        return ks, np.stack(mats)


def load_votes(votes_dir: Path) -> Votes:
    """Read a votes directory back, refusing files that are not what the vote stage wrote.

    A hand-edited, truncated or foreign file must fail here with its name, not as a
    pandas error inside the fit or, worse, as NaN accuracies from a grid with holes.
    """
    vd = votes_dir_of(votes_dir)
    votes_dir = vd.path
    if votes_dir.exists() and not votes_dir.is_dir():
        raise VotesError(f"{votes_dir} is a file, not a votes directory; give the directory "
                         "`ensemble vote` wrote (RUN/votes), or its run directory")
    missing = [n for n in vd.REQUIRED if not (votes_dir / n).exists()]
    if missing:
        raise VotesError(
            f"{vd.path}: missing {', '.join(missing)}; run `ensemble vote` on the answers first"
        )
    fix = f"rerun `ensemble vote` to rewrite {votes_dir}"
    digest = hashlib.sha256()
    for name in vd.REQUIRED:
        digest.update((votes_dir / name).read_bytes())
    curve = _votes_table(vd.curve_parquet, ("condition", "k", "accuracy"), (), fix)
    per_problem = _votes_table(vd.per_problem,
                               ("condition", "problem_id", "k", "accuracy"),
                               ("condition", "problem_id", "k"), fix)
    meta = read_json(vd.meta, fix)
    by_model = vd.per_problem_by_model
    by = None
    if by_model.exists():
        by = _votes_table(by_model, ("condition", "model_id", "problem_id", "k", "accuracy"),
                          ("condition", "model_id", "problem_id", "k"), fix)
    if set(curve["condition"]) != set(per_problem["condition"]):
        raise VotesError(f"{votes_dir}: curve.parquet and per_problem.parquet name different "
                         "conditions, so they are not one vote's files; " + fix)
    return Votes(curve, per_problem, meta, by, digest.hexdigest())


def _votes_table(path: Path, columns: tuple[str, ...], key: tuple[str, ...],
                 fix: str) -> pd.DataFrame:
    """One parquet file of a votes directory, checked: columns, types, one row per key,
    and every (problem, k) cell of each group present."""
    import pyarrow as pa

    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise VotesError(f"{path}: cannot be read as parquet ({exc}); {fix}") from None
    absent = [c for c in columns if c not in df.columns]
    if absent:
        raise VotesError(f"{path}: missing column(s) {', '.join(absent)}; {fix}")
    if not pd.api.types.is_integer_dtype(df["k"]):
        raise VotesError(f"{path}: column k holds {df['k'].dtype}, not integers; {fix}")
    acc = df["accuracy"]
    if not pd.api.types.is_numeric_dtype(acc) or not acc.between(0, 1).all():
        raise VotesError(f"{path}: column accuracy must hold numbers in [0, 1]; {fix}")
    if key:
        dup = df.duplicated(list(key))
        if dup.any():
            row = df[dup].iloc[0]
            raise VotesError(f"{path}: two rows for " + ", ".join(
                f"{c}={row[c]}" for c in key) + f"; {fix}")
        groups = [c for c in key if c not in ("problem_id", "k")]
        for name, d in df.groupby(groups):
            if len(d) != d["problem_id"].nunique() * d["k"].nunique():
                raise VotesError(f"{path}: {'/'.join(map(str, name))} lacks some (problem, k) "
                                 f"rows; {fix}")
    return df


@dataclass(frozen=True)
class Holdout:
    """The extrapolation check: the log law fitted on k <= k_fit_max, judged at k_top."""

    k_fit_max: int
    k_top: int
    measured: float
    predicted: float
    ci: tuple[float, float] = (float("nan"), float("nan"))  # of measured - predicted

    @property
    def error(self) -> float:
        return self.measured - self.predicted

    def verdict(self) -> str:
        lo, hi = self.ci
        if not np.isfinite(lo):
            return "no CI"
        if lo <= 0 <= hi:
            return "consistent with ln k"
        return "below the ln k prediction" if hi < 0 else "above the ln k prediction"


@dataclass
class ConditionFit:
    log: LogFit
    n_models: int
    sources: tuple[str, ...]  # the variance the CIs include
    holdout: Holdout | None = None
    saturating: SaturatingFit | None = None
    saturating_holdout: float | None = None  # measured - predicted at k_top, fitted below

    def to_dict(self) -> dict:
        L = self.log
        d = {"a": L.a, "b": L.b, "a_ci": list(L.a_ci), "b_ci": list(L.b_ci), "k_min": L.k_min,
             "k_max": L.k_max, "n_points": L.n_points, "n_models": self.n_models,
             "ci_sources": list(self.sources), "holdout": None, "saturating": None}
        if self.holdout is not None:
            h = self.holdout
            d["holdout"] = {"k_fit_max": h.k_fit_max, "k_top": h.k_top, "measured": h.measured,
                            "predicted": h.predicted, "error": h.error, "error_ci": list(h.ci),
                            "verdict": h.verdict()}
        if self.saturating is not None:
            s = self.saturating
            d["saturating"] = {"c": s.c, "d": s.d, "beta": s.beta, "converged": s.converged,
                               "holdout_error": self.saturating_holdout}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ConditionFit":
        log = LogFit(d["a"], d["b"], d["k_min"], d["k_max"], d["n_points"],
                     tuple(_num(d["a_ci"])), tuple(_num(d["b_ci"])))
        h = d.get("holdout")
        hold = None if h is None else Holdout(h["k_fit_max"], h["k_top"], h["measured"],
                                              h["predicted"], tuple(_num(h["error_ci"])))
        s = d.get("saturating")
        sat = None if s is None else SaturatingFit(*_num([s["c"], s["d"], s["beta"]]),
                                                   s["converged"])
        return cls(log, d["n_models"], tuple(d["ci_sources"]), hold, sat,
                   None if s is None else s.get("holdout_error"))


@dataclass
class FitResult:
    conditions: dict[str, ConditionFit]
    comparison: dict | None
    k_grid: list[int]
    config: FitConfig
    votes_sha256: str = ""

    def summary(self) -> str:
        """The fits and the comparison in plain text (the CLI, the report and the demo)."""
        lines = [f"fit grid: {len(self.k_grid)} log-spaced k from {self.k_grid[0]} to "
                 f"{self.k_grid[-1]}, the same for every condition"]
        lines.append(f"{'condition':<14} {'a':>7} {'b':>8} {'b 95% CI':>19}   "
                     "ln k extrapolated to k_max (measured - predicted)")
        for name, f in self.conditions.items():
            L, h = f.log, f.holdout
            check = "grid too short for the check"
            if h is not None:
                check = (f"k<={h.k_fit_max} -> k={h.k_top}: {h.error:+.4f} "
                         f"[{h.ci[0]:+.4f}, {h.ci[1]:+.4f}] {h.verdict()}")
            lines.append(f"{name:<14} {L.a:7.4f} {L.b:8.4f} "
                         f"{f'[{L.b_ci[0]:.4f}, {L.b_ci[1]:.4f}]':>19}   {check}")
        lines += [f"{label}: {text}" for label, text in self.comparison_rows()]
        if self.comparison:
            lines.append(f"CIs include: {', '.join(self.comparison['ci_sources'])}")
        return "\n".join(lines)

    def comparison_rows(self) -> list[tuple[str, str]]:
        """The comparison as (label, text) rows: the gaps at several k, the slope
        difference.  The one rendering of it: :meth:`summary` and the run headline
        (``fits.report.headline``) both print these rows."""
        if not self.comparison:
            return []
        c = self.comparison
        rows = [("gap", f"collaboration - repetition at k={g['k']}: {g['gap']:+.3f} "
                        f"[{g['ci_low']:+.3f}, {g['ci_high']:+.3f}] ({g['method']})")
                for g in c["gaps"]]
        lo, hi = c["slope_diff_ci"]
        rows.append(("slope diff", f"b_collaboration - b_repetition over k={c['k_range'][0]}.."
                                   f"{c['k_range'][1]}: {c['slope_diff']:+.4f} "
                                   f"[{lo:+.4f}, {hi:+.4f}]"))
        return rows

    def __repr__(self) -> str:
        return f"FitResult(\n{self.summary()}\n)"

    def to_dict(self) -> dict:
        return {"k_grid": self.k_grid,
                "conditions": {n: f.to_dict() for n, f in self.conditions.items()},
                "comparison": self.comparison, "config": self.config.to_dict(),
                "votes_sha256": self.votes_sha256, "versions": versions()}

    @classmethod
    def from_dict(cls, d: dict) -> "FitResult":
        conds = {n: ConditionFit.from_dict(c) for n, c in d["conditions"].items()}
        comp = d.get("comparison")
        if comp is not None:
            comp = {**comp, "slope_diff_ci": _num(comp["slope_diff_ci"]),
                    "gaps": [{**g, **dict(zip(("ci_low", "ci_high"),
                                              _num([g["ci_low"], g["ci_high"]])))}
                             for g in comp["gaps"]]}
        return cls(conds, comp, list(d["k_grid"]), FitConfig.from_dict(d["config"]),
                   d.get("votes_sha256", ""))


def _num(values) -> list[float]:
    """JSON null (how NaN is written) back to NaN."""
    return [float("nan") if v is None else float(v) for v in values]


def _grid(mats: dict, cfg: FitConfig) -> np.ndarray:
    """The common fit grid of all conditions (see module docstring)."""
    common = None
    for c, (ks, _) in mats.items():
        common = ks if common is None else np.intersect1d(common, ks)
    common = common[common >= cfg.k_min]
    if len(common) < 2:
        ranges = ", ".join(f"{c} {ks.min()}..{ks.max()}" for c, (ks, _) in mats.items())
        raise ValueError(
            f"--k-min={cfg.k_min} leaves {len(common)} k value(s) that every condition has "
            f"({ranges}); lower --k-min or vote on more k"
        )
    return fit_grid(common, cfg.k_min, int(common.max()), cfg.grid_points)


def fit_votes(votes: Votes, cfg: FitConfig) -> FitResult:
    """Fit every condition on the common grid and compare the conditions (no files)."""
    reps = cfg.bootstrap if cfg.bootstrap is not None else int(
        votes.meta.get("config", {}).get("bootstrap", 1000))
    conds = sorted(votes.curve["condition"].unique())
    mats = {c: votes.model_matrix(c) for c in conds}
    grid = _grid(mats, cfg)
    n_problems = next(iter(mats.values()))[1].shape[1]
    idx = problem_resamples(n_problems, reps, cfg.seed)
    fits: dict[str, ConditionFit] = {}
    boot_b: dict[str, np.ndarray] = {}  # slope of every resampled curve, paired resamples
    for c in conds:
        ks, Wm = mats[c]
        Wm = Wm[:, :, np.searchsorted(ks, grid)]
        measured = Wm.mean(axis=(0, 1))
        boot = resampled_model_means(Wm, idx, model_resamples(Wm.shape[0], reps, cfg.seed))
        fit = log_fit(grid, measured)
        boot_b[c] = np.zeros(0)
        if len(boot):
            a_b, b_b = log_fit_many(grid, boot)
            boot_b[c] = b_b
            (alo, blo), (ahi, bhi) = percentile_ci(np.column_stack([a_b, b_b]), cfg.ci)
            fit = LogFit(**{**fit.__dict__, "a_ci": (float(alo), float(ahi)),
                            "b_ci": (float(blo), float(bhi))})
        fits[c] = ConditionFit(fit, Wm.shape[0], ci_sources(Wm.shape[0]),
                               *_holdout(grid, measured, boot, cfg))
    comparison = None
    if COLLAB in fits and REPET in fits:
        comparison = _compare(mats, grid, boot_b, fits, idx, cfg)
    return FitResult(fits, comparison, grid.tolist(), cfg, votes.sha256)


def _holdout(grid, measured, boot, cfg: FitConfig):
    """The extrapolation checks of one condition: (Holdout, SaturatingFit, its error)."""
    k_fit_max = int(grid[-1] // cfg.holdout_ratio)
    sat = saturating_fit(grid, measured) if len(grid) >= 4 else None
    if (grid <= k_fit_max).sum() < 3:  # two points always fit a line exactly: no check
        return None, sat, None
    err = holdout_error(grid, measured, k_fit_max)[0]
    ci = (float("nan"),) * 2
    if len(boot):
        lo, hi = percentile_ci(holdout_error(grid, boot, k_fit_max)[:, None], cfg.ci)
        ci = (float(lo[0]), float(hi[0]))
    hold = Holdout(k_fit_max, int(grid[-1]), float(measured[-1]),
                   float(measured[-1] - err), ci)
    sat_err = None
    low = grid <= k_fit_max
    if low.sum() >= 4:
        s_low = saturating_fit(grid[low], measured[low])
        if s_low.converged:
            sat_err = float(measured[-1] - s_low.predict(grid[-1]))
    return hold, sat, sat_err


def gap_ks(grid: np.ndarray) -> list[int]:
    """k = 1 (or the smallest), the geometric middle and the largest k of the grid.

    The middle is never k = 2 next to k = 1: two voters who disagree tie, a tie is
    split, so without abstentions the expected accuracy at k = 2 equals the one at k = 1
    exactly and its gap would repeat the k = 1 gap (a 1..6 grid gets 1, 3, 6).
    """
    grid = np.asarray(grid)
    lo, hi = int(grid[0]), int(grid[-1])
    inner = grid[(grid != 2) | (lo != 1)]
    mid = int(inner[np.abs(np.log(inner) - 0.5 * (np.log(lo) + np.log(hi))).argmin()])
    return sorted({lo, mid, hi})


def _compare(mats, grid, boot_b, fits, idx, cfg: FitConfig) -> dict:
    slope = fits[COLLAB].log.b - fits[REPET].log.b
    out = {"k_range": [int(grid[0]), int(grid[-1])], "slope_diff": float(slope),
           "slope_diff_ci": [float("nan")] * 2, "gaps": [],
           "ci_sources": list(fits[REPET].sources)}
    if len(boot_b[COLLAB]):
        # Paired: both slopes of a resample come from the same resampled problems.
        lo, hi = percentile_ci((boot_b[COLLAB] - boot_b[REPET])[:, None], cfg.ci)
        out["slope_diff_ci"] = [float(lo[0]), float(hi[0])]
    (kc, Wc), (kr, Wr) = mats[COLLAB], mats[REPET]
    for k in gap_ks(grid):
        wc = Wc[0, :, np.searchsorted(kc, k)]
        wr = Wr[:, :, np.searchsorted(kr, k)]
        g = gap_interval(wc, wr, level=cfg.ci, reps=max(len(idx), 1), seed=cfg.seed)
        out["gaps"].append({"k": int(k), "gap": float(g.gap), "ci_low": float(g.low),
                            "ci_high": float(g.high), "method": g.method,
                            "accuracy_collaboration": float(wc.mean()),
                            "accuracy_repetition": float(wr.mean())})
    return out


def run_fit(cfg: FitConfig) -> FitResult:
    """Load the votes directory, fit, and write ``fit.json`` under ``cfg.out_dir``."""
    votes = load_votes(cfg.votes)  # a missing or broken input is the first thing to say
    check_output_dir(cfg.out_dir, "fits directory", FIT_FILE)
    check_same_source(cfg.out_dir / FIT_FILE, "votes", cfg.votes, cfg.force, "fit")
    with exclusive(sibling_lock(cfg.out_dir), f"{cfg.out_dir}"):
        result = fit_votes(votes, cfg)
        write_json(cfg.out_dir / FIT_FILE, result.to_dict())
    return result
