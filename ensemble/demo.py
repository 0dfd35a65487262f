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

from ensemble.config import FitConfig, VoteConfig

DEMO_CONFIG = Path(__file__).with_name("demo.toml")


@dataclass
class DemoResult:
    run_dir: Path
    fit: object
    report: object
    headline: str


def demo_config(out: Path | None = None, variants: int | None = None, seed: int | None = None):
    """The embedded default experiment, with the demo command's overrides."""
    from ensemble.experiment import ExperimentConfig

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
    from ensemble.experiment import fresh_start, run_experiment

    cfg = demo_config(out, variants, seed)
    if fresh:
        fresh_start(cfg.out)
    res = run_experiment(cfg, progress=progress, log=log)
    return DemoResult(res.run_dir, res.fit, res.report, res.headline)


MAX_SIMULATED = 10_000  # simulated variants: ~150 answer rows each, voted in seconds to minutes
SIM_MARKER = "simulation.json"  # what a simulated demo's answers were drawn with


def _simulated(out: Path, variants: int, seed: int, fresh: bool, progress: bool) -> DemoResult:
    from ensemble.config import check_seed
    from ensemble.runio import check_writable_dir, read_json, write_json
    from ensemble.simulate import SimConfig, simulate_answers, write_run_answers
    from ensemble.vote import run_vote
    from fits.report import write_report
    from fits.stage import run_fit

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
    fit = run_fit(FitConfig(votes=out / "votes", seed=seed))
    report = write_report(out)
    return DemoResult(out, fit, report, headline(out, fit))


def headline(run_dir: Path, fit) -> str:
    """Accuracy at k=1 and the largest k per condition, the slopes, the gaps and why."""
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
        for g in c["gaps"]:
            lines.append(f"{'gap':>13}: collaboration - repetition at k={g['k']}: "
                         f"{g['gap']:+.3f} [{g['ci_low']:+.3f}, {g['ci_high']:+.3f}]")
        lo, hi = c["slope_diff_ci"]
        lines.append(f"{'slope diff':>13}: b_collaboration - b_repetition over k="
                     f"{c['k_range'][0]}..{c['k_range'][1]}: {c['slope_diff']:+.4f} "
                     f"[{lo:+.4f}, {hi:+.4f}]")
        why = _why(Path(run_dir) / "votes", c["gaps"][-1]["k"])
        if why:
            lines.append(f"{'why':>13}: {why}")
    return "\n".join(lines)


def _why(votes_dir: Path, k: int) -> str:
    """The diversity diagnostics in one line (ensemble.diversity), or "" without them."""
    import json

    import pandas as pd

    try:
        div = json.loads((votes_dir / "vote.json").read_text())["diversity"]
        per_k = pd.read_csv(votes_dir / "diversity.csv")
        col = div["collaboration"]["disagreement_different_models"]["value"]
        rep = div["repetition"]["disagreement_same_model"]["value"]
        icc = div["repetition"]["icc_model"]
        n_eff = per_k[(per_k.condition == "repetition") & (per_k.k == k)]["n_eff"].iloc[0]
    except (OSError, KeyError, TypeError, IndexError, ValueError):
        return ""
    ci = (f" [{icc['ci_low']:.3f}, {icc['ci_high']:.3f}]" if icc.get("ci_low") is not None
          else "")
    return (f"two variants give different answers {col:.1%} of the time, two samples of one "
            f"model {rep:.1%}; beyond difficulty a model's samples correlate rho={icc['value']:.3f}"
            f"{ci}, so {k} of them are worth {n_eff:.1f} independent voters")
