"""The `ensemble` command line: thin wrappers that build a config and call one function."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import click

from ensemble import __version__
from ensemble.flags import config_options, merge
from ensemble.voting.config import VoteConfig
from eval.config import AnswerConfig
from fits.config import FitConfig
from train_variants.config import TrainConfig


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


def _echo_warnings(caught) -> None:
    for w in caught:
        click.echo(f"warning: {w.message}", err=True)


def one_line(exc: BaseException) -> str:
    """A foreseeable error as one line: the file or value and what went wrong."""
    if isinstance(exc, OSError) and exc.filename is not None:
        what = exc.strerror or type(exc).__name__
        hint = {PermissionError: "check its permissions or choose another path",
                FileNotFoundError: "check the path",
                IsADirectoryError: "give a file, not a directory",
                NotADirectoryError: "a part of the path is a file, not a directory",
                FileExistsError: "choose another path"}.get(type(exc), "")
        return f"{exc.filename}: {what}" + (f"; {hint}" if hint else "")
    if isinstance(exc, MemoryError):
        return ("out of memory; lower the sizes (--k, --bootstrap, --committees, batch sizes) "
                "or use a bigger machine")
    if isinstance(exc, UnicodeDecodeError):
        return f"cannot read a file as UTF-8 text ({exc.reason} at byte {exc.start})"
    return str(exc) or type(exc).__name__


class _Group(click.Group):
    """Turns foreseeable errors into one line and exit 1; anything else is a bug report.

    Commands already turn the library's ValueErrors into ``ClickException``; this catches
    what reaches the top from below them: file-system errors, absurd sizes, bad text.
    """

    FORESEEABLE = (OSError, ValueError, OverflowError, MemoryError, ImportError)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except self.FORESEEABLE as exc:
            raise click.ClickException(one_line(exc)) from None
        except Exception:
            import traceback

            traceback.print_exc()
            click.echo(f"\nThis is a bug in ensemble {__version__}, not a problem with your "
                       "input: please report it on the project's issue tracker with the "
                       "command you ran and the traceback above.", err=True)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ensemble")
def main():
    """Measure the collective intelligence of LoRA populations."""


@main.command()
@click.argument("input", type=click.Path(path_type=Path))
@config_options(VoteConfig, ("out", "k", "estimator", "committees", "seed", "bootstrap", "ci",
                             "canonical", "force"), show_defaults=True)
def vote(input, **flags):
    """Majority-vote accuracy versus committee size k for every condition in INPUT.

    INPUT is a run directory (answers/**.parquet) or one answers file
    (.parquet, .csv, .jsonl).
    """
    from ensemble.voting.votes import run_vote

    try:
        cfg = VoteConfig(input=input, **flags)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = run_vote(cfg)
    except ValueError as exc:
        raise _fail(exc) from None
    _echo_warnings(caught)
    import numpy as np

    for name, c in result.conditions.items():
        acc = c.per_problem.mean(axis=0)
        bound = np.nanmax(c.error_bound) if np.isfinite(c.error_bound).any() else None
        click.echo(f"{name}: {c.n_voters} voters, {len(result.problems)} problems, "
                   f"k=1 {acc[0]:.4f} -> k={int(c.ks[-1])} {acc[-1]:.4f}"
                   + (f" (error bound {bound:.1e})" if bound else ""))
    click.echo(f"wrote {cfg.out_dir}/curve.csv")


@main.command()
@click.argument("votes_dir", type=click.Path(path_type=Path))
@config_options(FitConfig, ("out", "k_min", "bootstrap", "seed", "force"), show_defaults=True)
def fit(votes_dir, **flags):
    """Fit accuracy = a + b ln k per condition and compare the conditions."""
    from fits.fitting import run_fit

    try:
        cfg = FitConfig(votes=votes_dir, **flags)
        result = run_fit(cfg)
    except ValueError as exc:
        raise _fail(exc) from None
    click.echo(result.summary())
    click.echo(f"wrote {cfg.out_dir}/fit.json")


@main.command()
@click.argument("run_or_votes_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Directory for report.md and figures/ [default: the run directory, or "
              "NAME_report beside a votes directory NAME_votes].")
@click.option("--force", is_flag=True, help="Replace a report of other votes in --out.")
def report(run_or_votes_dir, out, force):
    """Write report.md and figures/*.png for a run (or votes) directory."""
    from fits.report import write_report

    try:
        rep = write_report(run_or_votes_dir, out, force=force)
    except ValueError as exc:
        raise _fail(exc) from None
    click.echo(f"wrote {rep.path}")
    for f in rep.figures:
        click.echo(f"wrote {f}")


@main.command()
@click.argument("config_or_run", required=False, type=click.Path(path_type=Path))
@config_options(AnswerConfig, (
    "base", "adapters", "benchmark", "out", "backend", "condition", "temperature", "top_p",
    "max_tokens", "samples", "repetition_model", "repetition_models", "repetition_samples",
    "seed", "limit", "max_loras", "stall_timeout", "max_lora_rank", "problem_field",
    "answer_field", "id_field", "shard", "launcher", "workers", "tensor_parallel_size",
    "keep_text", "dtype"))
def answer(config_or_run, **flags):
    """Collect every variant's answers (and the repetition control) on a benchmark.

    CONFIG_OR_RUN is a TOML config (its [answer] table, or the whole file) or a run
    directory holding config.toml; flags override it.
    """
    from eval.shards import launch_answer

    cfg_file = None
    if config_or_run is not None:
        p = Path(config_or_run)
        cfg_file = p  # a run directory: read_toml reads its config.toml, or says it has none
        if p.is_dir() and flags.get("out") is None:
            flags["out"] = p
    try:
        cfg = AnswerConfig.from_dict(merge(cfg_file, "answer", flags))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            summary = launch_answer(cfg)
    except (ValueError, ImportError) as exc:
        raise _fail(exc) from None
    _echo_warnings(caught)
    for mid, why in summary.skipped_adapters.items():
        click.echo(f"skipped adapter {mid}: {why}", err=True)
    for unit, why in summary.failed.items():
        click.echo(f"failed {unit}: {why}", err=True)
    click.echo(f"answered {len(summary.done)} model(s), {len(summary.skipped_done)} already done, "
               f"{len(summary.failed)} failed; {summary.tokens} tokens in "
               f"{summary.seconds:.1f} s ({summary.tokens_per_s:.1f} tokens/s)")
    click.echo(f"answers in {cfg.out / 'answers'}")
    if summary.failed:
        raise SystemExit(1)


def _print_result(result) -> None:
    click.echo(result.headline)
    click.echo(f"report: {result.report.path}")
    for f in result.report.figures:
        click.echo(f"figure: {f}")


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run directory [default: runs/demo, or runs/demo-simulated].")
@click.option("--variants", type=int, default=None, help="Population size [default: the "
              "demo config's].")
@click.option("--seed", type=int, default=None, help="Experiment seed [default: 0].")
@click.option("--fresh", is_flag=True, help="Delete OUT first instead of resuming it.")
@click.option("--simulated", is_flag=True,
              help="Skip the models: vote, fit and report simulated answers (seconds).")
def demo(out, variants, seed, fresh, simulated):
    """Run every stage on the embedded offline default (see README).

    Starts from the project's own small model (shipped with the package, pretrained on
    synthetic AIME-style problems), trains a population of LoRA variants from it,
    answers with vLLM multi-LoRA, votes, fits and writes the report.  Rerunning resumes
    whatever is done.
    """
    from ensemble.demo import run_demo

    try:
        result = run_demo(out, variants=variants, seed=seed, fresh=fresh, simulated=simulated,
                          log=lambda m: click.echo(m, err=True))
    except (ValueError, ImportError, RuntimeError) as exc:
        raise _fail(exc) from None
    _print_result(result)


@main.command()
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run directory [default: the config's out].")
@click.option("--fresh", is_flag=True, help="Delete the run directory first.")
def run(config, out, fresh):
    """Run every stage of one experiment CONFIG in order, resuming what is done.

    CONFIG is an experiment file (.toml) or a run directory (its config.toml). A run
    directory remembers its config and refuses a different one.
    """
    from ensemble.pipeline import ExperimentConfig, fresh_start, run_experiment

    try:
        cfg = ExperimentConfig.from_toml(config, out=str(out) if out else None)
        if fresh:
            fresh_start(cfg.out)
        result = run_experiment(cfg, log=lambda m: click.echo(m, err=True))
    except (ValueError, ImportError, RuntimeError) as exc:
        raise _fail(exc) from None
    _print_result(result)


@main.command()
@click.argument("config", required=False, type=click.Path(path_type=Path))
@config_options(TrainConfig, ("base", "pool"))
@click.option("--variants", help="Population size N, or a:b to train variants a..b-1.")
@config_options(TrainConfig, (
    "out", "steps", "lora_rank", "mask_fraction", "seed", "problem_field", "answer_field",
    "id_field", "split", "limit", "launcher", "workers", "gpus_per_variant", "micro_batch",
    "device", "trainer", "population_size"))
@click.option("--plan-only", is_flag=True, help="Print the plan as JSON lines; train nothing.")
def train(config, variants, plan_only, **flags):
    """Train a population of LoRA variants of one base with one GRPO recipe.

    CONFIG is a TOML file (its [train] table, or the whole file) or a run directory
    holding config.toml; flags override it.  Finished variants are skipped.
    """
    from train_variants.config import parse_variants

    cfg_file = None
    if config is not None:
        cfg_file = config  # a run directory: read_toml reads its config.toml
        if config.is_dir() and flags.get("out") is None:
            flags["out"] = config
    try:
        if variants is not None:
            flags["first"], flags["variants"] = parse_variants(variants)
        cfg = TrainConfig.from_dict(merge(cfg_file, "train", flags))
        if plan_only:
            from train_variants.plan import make_plan, plan_lines

            for line in plan_lines(make_plan(cfg), cfg.indices):
                click.echo(line)
            return
        from train_variants.training import run_train

        summary = run_train(cfg, progress=True)
    except (ValueError, ImportError) as exc:
        raise _fail(exc) from None
    for vid, why in summary.failed.items():
        click.echo(f"failed {vid}: {why}", err=True)
    click.echo(summary.line())
    click.echo(f"variants in {cfg.out / 'variants'}")
    if summary.failed:
        raise SystemExit(1)


@main.command()
@click.argument("config", required=False, type=click.Path(path_type=Path))
@click.option("--seed", type=int, default=None, help="Pretraining seed [default: the "
              "config's seed, or 0].")
@click.option("--steps", type=int, default=None, help="Optimiser steps [default: 400].")
@click.option("--fresh", is_flag=True, help="Pretrain even when the shipped model has these "
              "settings (to compare this machine's own).")
def pretrain(config, seed, steps, fresh):
    """Pretrain the demo base model (base = "demo") and print where it is.

    CONFIG is an experiment file whose [pretrain] table and seed are used.  The default
    settings return the shipped model at once; others pretrain into the model cache
    ($ENSEMBLE_CACHE/models or ~/.cache/ensemble/models), a few minutes on 2 cores.
    """
    from ensemble.core.config import read_toml
    from ensemble.core.models import cache_root
    from ensemble.pipeline import pretrain_settings
    from train_variants.pretrain import build_demo_base

    try:
        data: dict = {}
        if config is not None:
            data, file_seed = pretrain_settings(read_toml(config))
            seed = file_seed if seed is None else seed
        if steps is not None:
            data["steps"] = steps
        path = build_demo_base(cache_root() / "models", seed=seed or 0, fresh=fresh, **data)
        info = json.loads((path / "pretrain.json").read_text())
    except (ValueError, TypeError, OSError) as exc:
        raise _fail(exc) from None
    ev = info["eval"]
    click.echo(f"held-out accuracy ({ev['problems']} problems, difficulty {ev['difficulty']}): "
               + ", ".join(f"{k} {v:.2f}" for k, v in ev.items()
                           if k == "greedy" or k.startswith("sampled")))
    click.echo(str(path))


@main.command()
@click.argument("run", type=click.Path(path_type=Path))
def status(run):
    """List a run's variants: done, running, interrupted, failed or pending."""
    from train_variants.training import variant_status

    try:
        rows = variant_status(run)
    except ValueError as exc:
        raise _fail(exc) from None
    click.echo(f"{'id':<8}{'state':<13}{'steps':>6}{'reward':>9}{'wall_s':>9}  host / error")
    for r in rows:
        reward = "" if r["final_reward"] is None else f"{r['final_reward']:.3f}"
        wall = "" if r["wall_seconds"] is None else f"{r['wall_seconds']:.1f}"
        steps = "" if r["steps"] is None else str(r["steps"])
        click.echo(f"{r['id']:<8}{r['state']:<13}{steps:>6}{reward:>9}{wall:>9}  "
                   f"{r['error'] or r['host'] or ''}")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    click.echo(", ".join(f"{n} {state}" for state, n in sorted(counts.items())))


if __name__ == "__main__":
    main()
