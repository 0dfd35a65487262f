"""`ensemble demo`: every stage that exists, on the embedded offline default.

Until the training and answering stages exist (issues #3, #4), the demo's answers
come from :mod:`ensemble.simulate` (a population of simulated variants with their own
blind spots, and one model sampled repeatedly); vote, fit and report are the real
stages.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from ensemble.config import FitConfig, VoteConfig
from ensemble.simulate import SimConfig, simulate_answers, write_run_answers
from ensemble.vote import run_vote
from fits.report import Report, write_report
from fits.stage import FitResult, run_fit


@dataclass
class DemoResult:
    run_dir: Path
    fit: FitResult
    report: Report
    headline: str


def run_demo(out: Path = Path("runs/demo"), variants: int = 32, seed: int = 0,
             fresh: bool = False, progress: bool = True) -> DemoResult:
    """Simulate answers (unless already there), then vote, fit and report."""
    out = Path(out)
    if variants < 2:
        raise ValueError(f"variants={variants}: voting needs at least 2 voters")
    if fresh and out.exists():
        shutil.rmtree(out)
    if not (out / "answers").is_dir():
        table = simulate_answers(SimConfig(variants=variants, samples=variants, seed=seed))
        write_run_answers(table, out)
    run_vote(VoteConfig(input=out, seed=seed), progress=progress)
    fit = run_fit(FitConfig(votes=out / "votes", seed=seed))
    report = write_report(out)
    return DemoResult(out, fit, report, headline(out, fit))


def headline(run_dir: Path, fit: FitResult) -> str:
    import pandas as pd

    curve = pd.read_csv(Path(run_dir) / "votes" / "curve.csv")
    lines = []
    for cond, d in curve.groupby("condition"):
        first, last = d.iloc[0], d.iloc[-1]
        f = fit.conditions[cond].log
        lines.append(
            f"{cond:>13}: k=1 {first.accuracy:.3f}  k={int(last.k)} {last.accuracy:.3f} "
            f"[{last.ci_low:.3f}, {last.ci_high:.3f}]  slope b={f.b:.4f} "
            f"[{f.b_ci[0]:.4f}, {f.b_ci[1]:.4f}]"
        )
    if fit.comparison:
        c = fit.comparison
        lines.append(f"{'gap':>13}: collaboration - repetition at k={c['k']}: {c['gap']:+.3f} "
                     f"[{c['gap_ci'][0]:+.3f}, {c['gap_ci'][1]:+.3f}]")
    return "\n".join(lines)
