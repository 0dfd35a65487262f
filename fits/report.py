"""The report stage: ``report.md`` and figures from a votes directory and its fits."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ensemble.core.files import (atomic_path, check_same_source, check_writable_dir,
                                 read_json, write_json, write_text)
from ensemble.core.rundir import FIT_FILE, RunDir, VotesDir, default_output, votes_dir_of
from ensemble.core.versions import versions
from fits.config import FitConfig
from fits.fitting import FitResult, Votes, load_votes

COLORS = {"collaboration": "#1f77b4", "repetition": "#d62728"}
TABLE_KS = (1, 2, 4, 8, 16, 32, 64, 128, 198, 256, 512, 1024)


@dataclass
class Report:
    path: Path
    figures: list[Path]
    fit: FitResult


def load_fit(votes: Votes, votes_dir: Path) -> FitResult:
    """The fit of these votes, read from ``fits/fit.json`` beside them.

    A report renders fit.json, it never refits: the numbers in the report are the
    numbers in the file.  A fit.json made from other votes (the votes were redone since)
    is refused rather than shown beside a table it does not describe.
    """
    fit_json = FitConfig(votes=votes_dir).out_dir / FIT_FILE  # where `ensemble fit` writes
    if not fit_json.exists():
        raise ValueError(f"{fit_json} does not exist: a report renders the fit of its votes; "
                         f"run `ensemble fit {votes_dir}` first")
    rerun = f"rerun `ensemble fit {votes_dir}`"
    data = read_json(fit_json, rerun)
    try:
        fit = FitResult.from_dict(data)
    except KeyError as exc:
        raise ValueError(f"{fit_json}: not a fit this version can read (no {exc.args[0]!r} "
                         f"in it); {rerun}") from None
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{fit_json}: not a fit this version can read ({exc}); {rerun}") \
            from None
    if fit.votes_sha256 != votes.sha256:
        raise ValueError(f"{fit_json} was fitted to other votes than {votes_dir} holds now; "
                         f"rerun `ensemble fit {votes_dir}`")
    return fit


def _k_axis(ax, kmax: int, which: str = "x") -> None:
    """A log axis of voter counts labelled 1, 2, 4, ... (matplotlib's default says 2×10⁰)."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator, ScalarFormatter

    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    ticks = [2 ** i for i in range(int(np.log2(max(kmax, 1))) + 1)]
    if len(ticks) > 9:  # thousands of voters: every other power of two
        ticks = ticks[::2]
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(ScalarFormatter())
    axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())


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
            sat = fit.conditions[cond].saturating
            if sat is not None and sat.converged and sat.beta >= 0.01:
                ax.plot(kk, sat.predict(kk), ls="-.", color=color, lw=1.0, alpha=0.6,
                        label=f"{cond}: saturating {sat.c:.3f} − {sat.d:.3f}·k^−{sat.beta:.2f}")
    _k_axis(ax, int(votes.curve["k"].max()))
    ax.set_xlabel("committee size k (log scale)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title("Majority-vote accuracy vs committee size (bands: 95% CI)")
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


def diversity_figure(div: pd.DataFrame, meta: dict, path: Path) -> Path:
    """Why the conditions differ: effective independent voters, and headroom over the vote.

    Left: how often two voters give different answers, two variants against two samples
    of one model.  Middle: the effective number of independent voters
    (``ensemble.voting.diversity``) against k, with k itself for reference.  Right: pass@k -
    accuracy with its CI, what a better aggregation rule could still win from the same
    answers.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    fig, (a0, a1, a2) = plt.subplots(1, 3, figsize=(15, 4.2),
                                     gridspec_kw={"width_ratios": [0.7, 1, 1]})
    bars = []
    for cond in sorted(meta):
        for key, what in (("disagreement_different_models", "two variants"),
                          ("disagreement_same_model", "two samples\nof one model")):
            e = meta[cond].get(key)
            if e and (cond == "collaboration" or key == "disagreement_same_model"):
                bars.append((what, e, COLORS.get(cond, "gray")))
    for i, (what, e, color) in enumerate(bars):
        err = None
        if e.get("ci_low") is not None and np.isfinite(e["ci_low"]):
            err = [[e["value"] - e["ci_low"]], [e["ci_high"] - e["value"]]]
        a0.bar(i, e["value"], color=color, alpha=0.8, yerr=err, capsize=4)
    a0.set_xticks(range(len(bars)), [b[0] for b in bars])
    a0.set_ylim(0, 1)
    a0.set_ylabel("P(two answers differ)")
    a0.set_title("Disagreement on a problem")
    kmax = int(div["k"].max())
    a1.plot([1, kmax], [1, kmax], color="gray", lw=1, ls=":", label="k independent voters")
    for cond, d in div.groupby("condition", sort=True):
        color = COLORS.get(cond)
        info = meta.get(cond, {})
        rho = (info.get("icc_model") or {}).get("value")
        label = cond + (f" (ρ = {rho:.3f} within a model)" if rho is not None else "")
        a1.plot(d["k"], d["n_eff"], color=color, marker="o" if len(d) <= 40 else None, ms=3,
                label=label)
        a2.plot(d["k"], d["headroom"], color=color, label=cond)
        a2.fill_between(d["k"], d["headroom_ci_low"], d["headroom_ci_high"], color=color,
                        alpha=0.15, lw=0)
    for ax in (a1, a2):
        _k_axis(ax, kmax)
        ax.set_xlabel("committee size k")
    _k_axis(a1, kmax, which="y")
    a1.set_ylabel("effective independent voters")
    a1.set_title("Voters worth, given the problem")
    a1.legend(loc="upper left", fontsize=8)
    a2.set_ylabel("pass@k − majority-vote accuracy")
    a2.set_title("Headroom left by plurality voting (95% CI)")
    a2.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)
    return path


def format_estimate(e: dict | None, missing: str = "—") -> str:
    """``value [ci_low, ci_high]`` of a vote.json estimate; ``missing`` for None, "n/a" for an
    undefined value, the value alone when there is no interval."""
    if not e:
        return missing
    if e.get("value") is None:  # undefined on this data (e.g. every voter always right)
        return "n/a"
    if e.get("ci_low") is None or not np.isfinite(e["ci_low"]):
        return f"{e['value']:.3f}"
    return f"{e['value']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}]"


def diversity_section(meta: dict, div: pd.DataFrame | None, k: int | None) -> list[str]:
    """The report's "why" section from vote.json's diversity and diversity.csv."""
    info = meta.get("diversity")
    if not info:
        return []
    conds = sorted(info)
    lines = ["## Why: how differently the voters answer", "",
             "From the same answers (`ensemble.voting.diversity`; CIs resample problems). "
             "Correlations are of being right or wrong; \"given the problem\" means the "
             "problem's difficulty is conditioned away, so what remains is what samples of "
             "one model share and variants of a population do not.", "",
             "| | " + " | ".join(conds) + " |", "|---|" + "---|" * len(conds)]

    def row(label, key, missing="—"):
        lines.append(f"| {label} | " + " | ".join(format_estimate(info[c].get(key), missing)
                                                   for c in conds) + " |")

    row("two voters of different models give different answers", "disagreement_different_models")
    row("two samples of one model give different answers", "disagreement_same_model",
        "— (one answer per model)")
    row("correctness correlation set by the problem (difficulty)", "icc_problem")
    row("extra correlation of one model's samples, given the problem", "icc_model",
        "— (one answer per model)")
    if div is not None and k is not None:
        cells, heads = [], []
        for c in conds:
            r = div[(div["condition"] == c) & (div["k"] == k)]
            cells.append(f"{r['n_eff'].iloc[0]:.1f}" if len(r) else "—")
            heads.append(f"{r['headroom'].iloc[0]:.3f} [{r['headroom_ci_low'].iloc[0]:.3f}, "
                         f"{r['headroom_ci_high'].iloc[0]:.3f}]" if len(r) else "—")
        lines.append(f"| effective independent voters at k = {k} | " + " | ".join(cells) + " |")
        lines.append("| ... as k grows without bound | " + " | ".join(
            "k" if info[c].get("n_eff_limit") is None else f"{info[c]['n_eff_limit']:.1f}"
            for c in conds) + " |")
        lines.append(f"| headroom pass@k − vote at k = {k} | " + " | ".join(heads) + " |")
    lines += ["", _diversity_reading(info, div, k), ""]
    return lines


def _diversity_reading(info: dict, div: pd.DataFrame | None, k: int | None) -> str:
    """One plain paragraph on what the diagnostics say."""
    rep, col = info.get("repetition"), info.get("collaboration")
    if not rep or not col:
        return ""
    out = []
    dc = (col.get("disagreement_different_models") or {}).get("value")
    ds = (rep.get("disagreement_same_model") or {}).get("value")
    if dc is not None and ds is not None:
        out.append(f"Two variants give different answers to a problem {dc:.1%} of the time, "
                   f"two samples of one control model {ds:.1%}.")
    icc = rep.get("icc_model")
    if icc and icc.get("value") is not None:
        lo = icc.get("ci_low")
        sure = lo is not None and np.isfinite(lo) and lo > 0
        n_eff = None
        if div is not None and k is not None:
            r = div[(div["condition"] == "repetition") & (div["k"] == k)]
            n_eff = float(r["n_eff"].iloc[0]) if len(r) else None
        tail = (f": {k} samples of one model are worth about {n_eff:.1f} independent voters, "
                f"{k} variants about {k}" if n_eff is not None else "")
        out.append(("Beyond difficulty, samples of one model are more alike in being right "
                    f"than voters of different models (ρ = {icc['value']:.3f}, CI above 0)"
                    if sure else
                    "Beyond difficulty, the data cannot show samples of one model to be more "
                    f"alike than voters of different models (ρ = {icc['value']:.3f}, CI holds 0)")
                   + tail + ".")
    return " ".join(out)


def _curve_table(curve: pd.DataFrame) -> str:
    conds = sorted(curve["condition"].unique())
    ks_all = sorted(curve["k"].unique())
    # The usual sizes, and every condition's largest k (where its comparison ends).
    ks = [k for k in TABLE_KS if k in ks_all] + [
        int(d["k"].max()) for _, d in curve.groupby("condition")]
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


def _sources(sources, n_models: int) -> str:
    if "control models" in sources:
        return f"problems + choice of control model ({n_models} models)"
    return "problems"


def _verdict(c: dict) -> str:
    """The comparison at the largest k in one plain sentence."""
    g = c["gaps"][-1]
    lo, hi = g["ci_low"], g["ci_high"]
    if not np.isfinite(lo):
        return f"At k = {g['k']} the gap is {g['gap']:+.4f} (no CI: bootstrap was off)."
    if lo > 0:
        return (f"At k = {g['k']} collaboration beats repetition by {g['gap']:+.4f} "
                f"(95% CI [{lo:+.4f}, {hi:+.4f}] excludes 0).")
    if hi < 0:
        return (f"At k = {g['k']} repetition beats collaboration by {-g['gap']:.4f} "
                f"(95% CI [{lo:+.4f}, {hi:+.4f}] excludes 0).")
    return (f"At k = {g['k']} the data cannot tell the conditions apart: the gap "
            f"{g['gap']:+.4f} has a 95% CI [{lo:+.4f}, {hi:+.4f}] that holds 0.")


def render_markdown(votes: Votes, fit: FitResult, figures: list[Path], root: Path,
                    diversity: pd.DataFrame | None = None) -> str:
    """report.md: the settings, the curves, the fits and their check, the comparison, why,
    the figures and the caveats, all read from the votes and ``fit.json``."""
    n_problems = int(votes.curve["n_problems"].iloc[0])
    lines = ["# Collective intelligence report", ""]
    lines += _settings_section(votes.meta, n_problems)
    lines += ["", "## Accuracy by committee size", "", _curve_table(votes.curve), ""]
    lines += _fits_section(fit)
    lines += _holdout_section(fit)
    if fit.comparison:
        lines += _comparison_section(fit.comparison)
    k_div = fit.comparison["gaps"][-1]["k"] if fit.comparison else int(votes.curve["k"].max())
    lines += diversity_section(votes.meta, diversity, k_div)
    lines += ["## Figures", ""]
    lines += [f"![{f.stem}]({f.relative_to(root).as_posix()})" for f in figures]
    lines += _caveats(n_problems)
    return "\n".join(lines)


def _settings_section(meta: dict, n_problems: int) -> list[str]:
    cfg = meta.get("config", {})
    lines = ["## Settings", ""]
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
    return lines


def _fits_section(fit: FitResult) -> list[str]:
    lines = ["## Fits: accuracy ≈ a + b·ln k", "",
             f"Every condition is fitted on the same {len(fit.k_grid)} log-spaced committee "
             f"sizes from k = {fit.k_grid[0]} to {fit.k_grid[-1]} "
             f"({', '.join(map(str, fit.k_grid))}), so each decade of k weighs the same and "
             "the slopes are comparable.", "",
             "| condition | a | a 95% CI | b | b 95% CI | CI includes |",
             "|---|---|---|---|---|---|"]
    for name, f in fit.conditions.items():
        L = f.log
        lines.append(f"| {name} | {L.a:.4f} | [{L.a_ci[0]:.4f}, {L.a_ci[1]:.4f}] | {L.b:.4f} | "
                     f"[{L.b_ci[0]:.4f}, {L.b_ci[1]:.4f}] | {_sources(f.sources, f.n_models)} |")
    return lines


def _holdout_section(fit: FitResult) -> list[str]:
    ratio = f"{fit.config.holdout_ratio:g}"
    lines = ["", "### Does ln k extrapolate on this data?", "",
             f"Each curve is fitted again on its lower part only (k ≤ k_max / {ratio}) and "
             "the fit's prediction at k_max is compared with the measured accuracy there. A "
             "difference whose CI holds 0 means the log law carried over the held-out range; "
             "a negative one means the curve bends down (saturates) faster than ln k.", "",
             "| condition | fitted on k ≤ | k_max | measured | predicted | measured − predicted "
             "(95% CI) | verdict | saturating fit, same check |",
             "|---|---|---|---|---|---|---|---|"]
    for name, f in fit.conditions.items():
        h = f.holdout
        if h is None:
            lines.append(f"| {name} | — | — | — | — | — | grid too short (needs 3 points at "
                         f"k ≤ k_max/{ratio}) | — |")
            continue
        sat = "—" if f.saturating_holdout is None else f"{f.saturating_holdout:+.4f}"
        lines.append(f"| {name} | {h.k_fit_max} | {h.k_top} | {h.measured:.4f} | "
                     f"{h.predicted:.4f} | {h.error:+.4f} [{h.ci[0]:+.4f}, {h.ci[1]:+.4f}] | "
                     f"{h.verdict()} | {sat} |")
    return lines + [""]


def _comparison_section(c: dict) -> list[str]:
    lines = ["## Collaboration versus repetition", "",
             "| k | collaboration | repetition | gap (collaboration − repetition) | "
             "95% CI | interval method |", "|---|---|---|---|---|---|"]
    for g in c["gaps"]:
        lines.append(f"| {g['k']} | {g['accuracy_collaboration']:.4f} | "
                     f"{g['accuracy_repetition']:.4f} | **{g['gap']:+.4f}** | "
                     f"[{g['ci_low']:+.4f}, {g['ci_high']:+.4f}] | {g['method']} |")
    lo, hi = c["slope_diff_ci"]
    models = (". With one control model the comparison is conditional on that model."
              if "control models" not in c["ci_sources"] else
              " (control models resampled together with the problems).")
    return lines + [
        "", f"- slope difference b_collab − b_rep over k = {c['k_range'][0]}.."
        f"{c['k_range'][1]}: **{c['slope_diff']:+.4f}** [{lo:+.4f}, {hi:+.4f}]",
        f"- {_verdict(c)}",
        f"- The CIs include the variance from: {', '.join(c['ci_sources'])}" + models
        + " Both conditions are paired on the same resampled problems; the population of "
        "variants itself is held fixed.", ""]


def _caveats(n_problems: int) -> list[str]:
    return ["", "## Caveats", "",
            "- The points of a curve are correlated, not independent: every k averages "
            "over the same problems and voters, so R², AIC and OLS standard errors would "
            "overstate precision and are not reported. The CIs (over problems, and control "
            "models where there are several: Wilson intervals for the curve points, the "
            "bootstrap for the fits) are the honest ones.",
            f"- With {n_problems} problems (AIME has 30), one problem moves accuracy by "
            f"{1 / max(n_problems, 1):.3f}; CIs are wide and differences of a few points are "
            "within noise.",
            "- The CIs treat the population of variants as fixed; a different population "
            "would add variance they do not show.",
            "- ln k grows without bound while accuracy cannot pass the coverage (pass@k); "
            "extrapolating the fit beyond the measured k range is not supported by the data.",
            ""]


def write_report(path: Path, out: Path | None = None, force: bool = False) -> Report:
    """Write ``report.md`` and ``figures/*.png`` for a run or votes directory.

    The report goes to the run directory (the parent of ``votes/``), or to
    ``<name>_report`` beside a votes directory of another name, unless ``out`` names
    another directory; a report of other votes there is replaced only with ``force``.
    ``report.md`` and ``report.json`` are removed first and written after every figure,
    so a report.md on disk always sits beside the figures it was written with, even after
    a ``kill -9``.
    """
    vd = votes_dir_of(Path(path))
    votes = load_votes(vd.path)
    run = RunDir(out if out is not None else default_output(vd.path, "report"))
    check_writable_dir(run.root)
    check_same_source(run.report_json, "votes", vd.path, force, "report")
    fit = load_fit(votes, vd.path)
    report = run.report
    for stale in (report, run.report_json):  # the old set goes before the new is begun
        stale.unlink(missing_ok=True)
    figs = [scaling_figure(votes, fit, run.figures / "scaling.png")]
    if vd.voters.exists():
        figs.append(voter_histogram(pd.read_csv(vd.voters), run.figures / "voter_accuracy.png"))
    div = None
    if vd.diversity.exists() and votes.meta.get("diversity"):
        div = pd.read_csv(vd.diversity)
        figs.append(diversity_figure(div, votes.meta["diversity"],
                                     run.figures / "diversity.png"))
    write_text(report, render_markdown(votes, fit, figs, run.root, div))
    write_json(run.report_json, {"config": {"votes": str(vd.path), "out": str(run.root)},
                                 "votes_sha256": votes.sha256,
                                 "figures": [str(f.relative_to(run.root)) for f in figs],
                                 "versions": versions()})
    return Report(report, figs, fit)


def headline(run_dir: Path, fit) -> str:
    """What a run found, in a few lines: accuracy at k = 1 and the largest k per condition,
    the slopes, the gaps and why (``ensemble run`` and ``ensemble demo`` print it)."""
    votes = RunDir(run_dir).votes
    curve = pd.read_csv(votes.curve_csv)
    lines = []
    for cond, d in curve.groupby("condition"):
        first, last = d.iloc[0], d.iloc[-1]
        f = fit.conditions[cond].log
        lines.append(
            f"{cond:>13}: k=1 {first.accuracy:.3f}  k={int(last.k)} {last.accuracy:.3f} "
            f"[{last.ci_low:.3f}, {last.ci_high:.3f}]  slope b={f.b:.4f} "
            f"[{f.b_ci[0]:.4f}, {f.b_ci[1]:.4f}]"
        )
    lines += [f"{label:>13}: {text}" for label, text in fit.comparison_rows()]
    if fit.comparison:
        why = _why(votes, fit.comparison["gaps"][-1]["k"])
        if why:
            lines.append(f"{'why':>13}: {why}")
    return "\n".join(lines)


def _why(votes: VotesDir, k: int) -> str:
    """The diversity diagnostics in one line (ensemble.voting.diversity), or "" without them.

    A statistic the data leaves undefined (null in vote.json: too few samples, or every
    voter always right) is left out of the line rather than printed as a number.
    """
    try:
        div = json.loads(votes.meta.read_text())["diversity"]
        per_k = pd.read_csv(votes.diversity)
        col = div["collaboration"]["disagreement_different_models"]["value"]
        rep = div["repetition"]["disagreement_same_model"]["value"]
        icc = div["repetition"].get("icc_model") or {}
        n_eff = per_k[(per_k.condition == "repetition") & (per_k.k == k)]["n_eff"].iloc[0]
    except (OSError, KeyError, TypeError, IndexError, ValueError, AttributeError):
        return ""
    if col is None or rep is None:
        return ""
    line = (f"two variants give different answers {col:.1%} of the time, two samples of one "
            f"model {rep:.1%}")
    if icc.get("value") is None or not np.isfinite(n_eff):
        return line
    return (f"{line}; beyond difficulty a model's samples correlate rho="
            f"{format_estimate(icc)}, so {k} of them are worth {n_eff:.1f} independent voters")
