"""The report stage: ``report.md`` and figures from a votes directory and its fits."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ensemble.config import FitConfig
from ensemble.runio import atomic_path, write_text
from fits.stage import FitResult, Votes, fit_votes, load_votes

COLORS = {"collaboration": "#1f77b4", "repetition": "#d62728"}
TABLE_KS = (1, 2, 4, 8, 16, 32, 64, 128, 198, 256, 512, 1024)


@dataclass
class Report:
    path: Path
    figures: list[Path]
    fit: FitResult


def _votes_dir(path: Path) -> Path:
    path = Path(path)
    return path / "votes" if (path / "votes").is_dir() else path


def _fit_for(votes: Votes, votes_dir: Path) -> tuple[FitResult, dict]:
    """The fit of these votes: read fits/fit.json when it exists, else fit in memory."""
    fit_json = votes_dir.parent / "fits" / "fit.json"
    cfg = FitConfig(votes=votes_dir)
    if fit_json.exists():
        # Same settings as the saved fit (k_min, seed, bootstrap), so the numbers agree.
        saved = json.loads(fit_json.read_text()).get("config", {})
        cfg = FitConfig.from_dict({**saved, "votes": votes_dir, "out": saved.get("out")})
    result = fit_votes(votes, cfg)
    return result, result.to_dict()


def scaling_figure(votes: Votes, fit: FitResult, path: Path) -> Path:
    """Accuracy versus k on a log axis: both conditions, CI bands, fitted lines, pass@k."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for cond, d in votes.curve.groupby("condition", sort=True):
        color = COLORS.get(cond)
        ax.plot(d["k"], d["accuracy"], marker="o" if len(d) <= 40 else None, ms=3,
                color=color, label=f"{cond}: majority vote")
        if d["ci_low"].notna().any():
            ax.fill_between(d["k"], d["ci_low"], d["ci_high"], color=color, alpha=0.15, lw=0)
        ax.plot(d["k"], d["pass_at_k"], ls="--", color=color, alpha=0.6,
                label=f"{cond}: pass@k (coverage)")
        if cond in fit.conditions:
            f = fit.conditions[cond].log
            kk = np.geomspace(f.k_min, f.k_max, 100)
            # The fitted equation goes in the legend: annotations at the line's end
            # collide with the curves when the two conditions end close together.
            ax.plot(kk, f.predict(kk), ls=":", color=color, lw=1.4, alpha=0.9,
                    label=f"{cond}: fit {f.a:.3f} + {f.b:.4f} ln k")
    ax.set_xscale("log")
    ax.set_xlabel("committee size k (log scale)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title("Majority-vote accuracy vs committee size (bands: 95% bootstrap CI)")
    ax.legend(fontsize=7.5, loc="best", framealpha=0.9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)
    return path


def voter_histogram(voters: pd.DataFrame, path: Path) -> Path:
    """Histogram of single-voter accuracy per condition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    sns.histplot(voters, x="accuracy", hue="condition", palette=COLORS, element="step",
                 stat="count", common_norm=False, bins=min(30, max(5, len(voters) // 4)), ax=ax)
    for cond, d in voters.groupby("condition"):
        ax.axvline(d["accuracy"].mean(), color=COLORS.get(cond, "gray"), ls="--", lw=1)
    ax.set_xlabel("accuracy of one voter (dashed: mean)")
    ax.set_title("Per-voter accuracy")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)
    return path


def _curve_table(curve: pd.DataFrame) -> str:
    conds = sorted(curve["condition"].unique())
    ks_all = sorted(curve["k"].unique())
    kmax = max(ks_all)
    ks = [k for k in TABLE_KS if k in ks_all and k <= kmax] + (
        [kmax] if kmax not in TABLE_KS else [])
    head = "| k | " + " | ".join(f"{c} (95% CI) | {c} pass@k" for c in conds) + " |"
    sep = "|---|" + "---|---|" * len(conds)
    lines = [head, sep]
    for k in sorted(set(ks)):
        cells = []
        for c in conds:
            r = curve[(curve["condition"] == c) & (curve["k"] == k)]
            if r.empty:
                cells += ["—", "—"]
                continue
            r = r.iloc[0]
            ci = f" [{r.ci_low:.3f}, {r.ci_high:.3f}]" if pd.notna(r.ci_low) else ""
            cells += [f"{r.accuracy:.3f}{ci}", f"{r.pass_at_k:.3f}"]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_markdown(votes: Votes, fit: FitResult, figures: list[Path], root: Path) -> str:
    meta = votes.meta
    cfg = meta.get("config", {})
    n_problems = int(votes.curve["n_problems"].iloc[0])
    lines = ["# Collective intelligence report", ""]
    lines += ["## Settings", ""]
    lines.append(f"- input: `{cfg.get('input')}` (sha256 `{str(meta.get('input_sha256'))[:16]}…`)")
    lines.append(f"- estimator: {cfg.get('estimator')}; bootstrap resamples over problems: "
                 f"{cfg.get('bootstrap')} (seed {cfg.get('seed')}); CI level {cfg.get('ci')}")
    lines.append(f"- problems: {n_problems}")
    for name, c in meta.get("conditions", {}).items():
        models = f" from {c['n_models']} model(s)" if name == "repetition" else ""
        lines.append(f"- {name}: {c['n_voters']} voters{models}, k up to {c['k_max']}")
    missing = {k: v for k, v in meta.get("missing_answers", {}).items() if v}
    if missing:
        lines.append(f"- missing answers counted as no answer: {missing}")
    lines += ["", "## Accuracy by committee size", "", _curve_table(votes.curve), ""]
    lines += ["## Fits: accuracy ≈ a + b·ln k", "",
              "| condition | a | a 95% CI | b | b 95% CI | R² | k range | AIC prefers |",
              "|---|---|---|---|---|---|---|---|"]
    for name, f in fit.conditions.items():
        L = f.log
        sat = ""
        if f.saturating is not None and f.saturating.converged:
            s = f.saturating
            if s.beta < 0.01:  # c − d·k^−β → (c − d) + dβ·ln k as β → 0: the log law
                sat = f" (saturating fit degenerates to the log law, β={s.beta:.1e})"
            else:
                sat = (f" (saturating {s.c:.3f} − {s.d:.3f}·k^−{s.beta:.2f}, "
                       f"ΔAIC {s.aic - L.aic:+.1f})")
        lines.append(f"| {name} | {L.a:.4f} | [{L.a_ci[0]:.4f}, {L.a_ci[1]:.4f}] | {L.b:.4f} | "
                     f"[{L.b_ci[0]:.4f}, {L.b_ci[1]:.4f}] | {L.r2:.3f} | {L.k_min}–{L.k_max} | "
                     f"{f.preferred}{sat} |")
    lines.append("")
    if fit.comparison:
        c = fit.comparison
        lines += ["## Collaboration versus repetition", "",
                  f"- accuracy gap at k = {c['k']} (collaboration − repetition): "
                  f"**{c['gap']:+.4f}** [{c['gap_ci'][0]:+.4f}, {c['gap_ci'][1]:+.4f}] "
                  f"({c['accuracy_collaboration']:.4f} vs {c['accuracy_repetition']:.4f})",
                  f"- slope difference b_collab − b_rep: **{c['slope_diff']:+.4f}** "
                  f"[{c['slope_diff_ci'][0]:+.4f}, {c['slope_diff_ci'][1]:+.4f}]",
                  "- CIs pair the two conditions on the same resampled problems.", ""]
    lines += ["## Figures", ""]
    for f in figures:
        lines.append(f"![{f.stem}]({f.relative_to(root).as_posix()})")
    lines += ["", "## Caveats", "",
              "- The points of a curve are correlated, not independent: every k averages "
              "over the same "
              "problems and voters, so R² and OLS standard errors overstate precision. The "
              "bootstrap CIs (resampling problems) are the honest ones.",
              f"- With {n_problems} problems (AIME has 30), one problem moves accuracy by "
              f"{1 / max(n_problems, 1):.3f}; CIs are wide and differences of a few points are "
              "within noise.",
              "- The bootstrap treats voters as fixed; a different population of variants "
              "would add variance it does not show.",
              "- ln k grows without bound while accuracy cannot pass the coverage (pass@k); "
              "extrapolating the fit beyond the measured k range is not supported by the data.",
              ""]
    return "\n".join(lines)


def write_report(path: Path, out: Path | None = None) -> Report:
    """Write ``report.md`` and ``figures/*.png`` for a run or votes directory.

    The report goes to the run directory (the parent of ``votes/``) unless ``out``
    names another directory.
    """
    votes_dir = _votes_dir(Path(path))
    votes = load_votes(votes_dir)
    fit, _ = _fit_for(votes, votes_dir)
    root = Path(out) if out is not None else votes_dir.parent
    figs = [scaling_figure(votes, fit, root / "figures" / "scaling.png")]
    voters_csv = votes_dir / "voters.csv"
    if voters_csv.exists():
        figs.append(voter_histogram(pd.read_csv(voters_csv), root / "figures" / "voter_accuracy.png"))
    report = root / "report.md"
    write_text(report, render_markdown(votes, fit, figs, root))
    return Report(report, figs, fit)
