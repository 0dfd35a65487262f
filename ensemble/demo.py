"""`ensemble demo`: the whole pipeline on the embedded offline default.

The default experiment is ``ensemble/demo.toml`` (also at ``configs/demo.toml``): the
project's own small model, pretrained from scratch on synthetic AIME-style problems
(cached after the first run), a population of LoRA variants trained from it with one
GRPO recipe that differ only in data order and mask, their answers through vLLM
multi-LoRA serving, and the vote, fit and report stages.

``simulated=True`` skips the models: answers come from :mod:`ensemble.simulate` (a
population of simulated variants with their own blind spots and one model sampled
repeatedly), which shows the aggregation stages in seconds.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from ensemble.core.rundir import RunDir
from ensemble.voting.config import VoteConfig
from fits.config import FitConfig

DEMO_CONFIG = Path(__file__).with_name("demo.toml")


@dataclass
class DemoResult:
    run_dir: Path
    fit: object
    report: object
    headline: str


def demo_config(out: Path | None = None, variants: int | None = None, seed: int | None = None):
    """The embedded default experiment, with the demo command's overrides."""
    from ensemble.pipeline import ExperimentConfig

    if variants is not None and variants < 2:
        raise ValueError(f"variants={variants}: voting needs at least 2 voters")
    return ExperimentConfig.from_toml(DEMO_CONFIG, out=str(out) if out else None,
                                      seed=seed, **{"train.variants": variants})


def run_demo(out: Path | None = None, variants: int | None = None, seed: int | None = None,
             fresh: bool = False, simulated: bool = False, progress: bool = True,
             log=print) -> DemoResult:
    """Run the demo experiment (or its simulated stand-in) into ``out``."""
    if simulated:
        return _simulated(Path(out or "runs/demo-simulated"), variants or 32, seed or 0,
                          fresh, progress)
    from ensemble.pipeline import fresh_start, run_experiment

    cfg = demo_config(out, variants, seed)
    if fresh:
        fresh_start(cfg.out)
    res = run_experiment(cfg, progress=progress, log=log)
    return DemoResult(res.run_dir, res.fit, res.report, res.headline)


def _simulated(out: Path, variants: int, seed: int, fresh: bool, progress: bool) -> DemoResult:
    from ensemble.simulate import SimConfig, simulate_answers, write_run_answers
    from ensemble.voting.votes import run_vote
    from fits.fitting import run_fit
    from fits.report import headline, write_report

    if variants < 2:
        raise ValueError(f"variants={variants}: voting needs at least 2 voters")
    if fresh and out.exists():
        shutil.rmtree(out)
    if not RunDir(out).answers.is_dir():
        table = simulate_answers(SimConfig(variants=variants, samples=variants, seed=seed))
        write_run_answers(table, out)
    run_vote(VoteConfig(input=out, seed=seed), progress=progress)
    fit = run_fit(FitConfig(votes=RunDir(out).votes.path, seed=seed))
    report = write_report(out)
    return DemoResult(out, fit, report, headline(out, fit))
