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


MAX_SIMULATED = 10_000  # simulated variants: ~150 answer rows each, voted in seconds to minutes
SIM_MARKER = "simulation.json"  # what a simulated demo's answers were drawn with


def _simulated(out: Path, variants: int, seed: int, fresh: bool, progress: bool) -> DemoResult:
    from ensemble.core.config import check_seed
    from ensemble.core.files import check_writable_dir, read_json, write_json
    from ensemble.simulate import SimConfig, simulate_answers, write_run_answers
    from ensemble.voting.votes import run_vote
    from fits.fitting import run_fit
    from fits.report import headline, write_report

    if not 2 <= variants <= MAX_SIMULATED:
        raise ValueError(f"variants={variants}: a simulated demo takes 2 to {MAX_SIMULATED} "
                         "(voting needs at least 2 voters)")
    check_seed(seed)
    check_writable_dir(out)
    marker, settings = out / SIM_MARKER, {"variants": variants, "seed": seed}
    if out.is_dir() and any(out.iterdir()) and not marker.is_file():
        raise ValueError(f"{out} holds files but is not a simulated demo (no {SIM_MARKER}); "
                         "give --out a new directory (one an older ensemble made "
                         "has no marker: delete it to start over)")
    if fresh and out.exists():
        shutil.rmtree(out)
    if marker.is_file():
        old = read_json(marker, "pass --fresh to start over")
        if {k: old.get(k) for k in settings} != settings:
            raise ValueError(f"{out} was simulated with variants={old.get('variants')}, "
                             f"seed={old.get('seed')}, not variants={variants}, seed={seed}; "
                             "pass --fresh to start over, or another --out")
    if not (marker.is_file() and read_json(marker, "pass --fresh").get("answers_complete")):
        # The marker first, so a killed simulation is recognised as ours and redone.
        write_json(marker, {**settings, "answers_complete": False})
        shutil.rmtree(out / "answers", ignore_errors=True)
        table = simulate_answers(SimConfig(variants=variants, samples=variants, seed=seed))
        write_run_answers(table, out)
        write_json(marker, {**settings, "answers_complete": True})
    run_vote(VoteConfig(input=out, seed=seed), progress=progress)
    fit = run_fit(FitConfig(votes=RunDir(out).votes.path, seed=seed))
    report = write_report(out)
    return DemoResult(out, fit, report, headline(out, fit))
