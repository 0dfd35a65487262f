"""The pipeline: one experiment config for every stage, and `ensemble run` over it.

An experiment file is TOML with a few top-level keys shared by the stages and one table
per stage, holding that stage's own config keys::

    out = "runs/demo"          # the run directory
    base = "demo"              # a local dir, a hub id, "smollm2-135m", or "demo"
    seed = 0                   # the experiment seed, given to every stage

    [pretrain]                 # only for base = "demo" (train_variants.pretrain)
    [train]                    # train_variants.config.TrainConfig keys
    [answer]                   # eval.config.AnswerConfig keys
    [vote]                     # ensemble.voting.config.VoteConfig keys
    [fit]                      # fits.config.FitConfig keys

`run_experiment` writes the resolved file to ``<out>/config.toml`` once and refuses a
run directory whose config.toml differs in anything that changes results.  Every stage
skips work already on disk (finished variants, answered units), and vote, fit and
report are cheap and deterministic, so an interrupted run started again finishes with
the results of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ensemble.core.config import (SHARED_KEYS, StrictConfig, check_keys, check_types, dump_toml,
                                  read_toml, setting)
from ensemble.core.files import check_writable_dir, write_text
from ensemble.core.models import DEMO_BASE, cache_root
from ensemble.core.rundir import RunDir
from ensemble.voting.config import VoteConfig
from eval.config import AnswerConfig
from fits.config import FitConfig
from train_variants.config import TrainConfig

STAGES = ("pretrain", "train", "answer", "vote", "fit")
# The config class of each stage table; its run-only keys may change between reruns.
STAGE_CONFIGS: dict[str, type[StrictConfig]] = {"train": TrainConfig, "answer": AnswerConfig,
                                                "vote": VoteConfig, "fit": FitConfig}


@dataclass
class ExperimentConfig(StrictConfig):
    """An experiment file: the keys every stage shares, and one table per stage."""

    TABLE: ClassVar[str] = "experiment config"
    REQUIRED: ClassVar[tuple[str, ...]] = ("out", "base")
    MISSING_HINT: ClassVar[str] = " at the top level of the experiment config"
    KNOWN_HINT: ClassVar[str] = (f"top-level keys are {', '.join(SHARED_KEYS)} and the "
                                 f"tables [{'], ['.join(STAGES)}]")

    out: Path = setting(help="The run directory (the contract in docs/architecture.md).")
    base: str = setting(help='A local dir, a hub id, a name ensemble.core.models knows, or '
                        '"demo".')
    seed: int = setting(0, "The experiment seed; each stage derives its own streams from it.")
    pretrain: dict[str, Any] = setting(help="train_variants.pretrain settings (base = demo).",
                                       default_factory=dict)
    train: dict[str, Any] = setting(help="The [train] table.", default_factory=dict)
    answer: dict[str, Any] = setting(help="The [answer] table.", default_factory=dict)
    vote: dict[str, Any] = setting(help="The [vote] table.", default_factory=dict)
    fit: dict[str, Any] = setting(help="The [fit] table.", default_factory=dict)

    def __post_init__(self):
        self.out = Path(self.out)
        from ensemble.core.config import check_seed

        check_seed(self.seed)
        _check_pretrain_base(self.pretrain, self.base)
        for stage in ("train", "answer"):
            table = getattr(self, stage)
            clash = sorted(k for k in SHARED_KEYS if k in table)
            if clash:
                raise ValueError(f"[{stage}] sets {', '.join(clash)}, which the experiment sets "
                                 "for every stage; move it to the top of the file")
        self._check_keys()

    @classmethod
    def from_toml(cls, path: Path, **overrides) -> "ExperimentConfig":
        data = read_toml(Path(path))
        for key, value in overrides.items():
            if value is None:
                continue
            stage, _, name = key.rpartition(".")
            (data.setdefault(stage, {}) if stage else data)[name] = value
        return cls.from_dict(data)

    def _check_keys(self) -> None:
        """Unknown keys in any stage table, found before anything runs."""
        for stage, cls in STAGE_CONFIGS.items():
            check_keys(cls, getattr(self, stage), f"[{stage}]", hidden=("input", "votes"))
            check_types(cls, getattr(self, stage), f"[{stage}]")
        if self.pretrain:
            from train_variants.pretrain import PretrainConfig

            PretrainConfig.from_overrides(**self.pretrain)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["out"] = str(self.out)
        return {k: v for k, v in d.items() if v != {}}

    # --- the stage configs ---------------------------------------------------------

    def train_config(self, base: str) -> TrainConfig:
        _require(self.train, "train", "pool", "a .jsonl/.json/.parquet/.csv file, a dataset "
                 "id or synthetic:N")
        return TrainConfig.from_dict({"seed": self.seed, **self.train, "base": base,
                                      "out": self.out})

    def answer_config(self, base: str) -> AnswerConfig:
        _require(self.answer, "answer", "benchmark", "a problem file, a preset (aime24, "
                 "aime25, math500), a dataset id or synthetic:N")
        return AnswerConfig.from_dict({"seed": self.seed, **self.answer, "base": base,
                                       "out": self.out})

    def vote_config(self) -> VoteConfig:
        return VoteConfig(**{"seed": self.seed, **self.vote, "input": self.out})

    def fit_config(self) -> FitConfig:
        return FitConfig(**{"seed": self.seed, **self.fit, "votes": RunDir(self.out).votes.path})


# --- config.toml in the run directory ------------------------------------------------

def _results_view(d: dict[str, Any]) -> dict[str, Any]:
    """The experiment without the keys each stage declares run-only (workers, shard, ...)."""
    out = {k: v for k, v in d.items() if not isinstance(v, dict)}
    for stage in STAGES:
        table = d.get(stage, {})
        out[stage] = STAGE_CONFIGS[stage].results_view(table) if stage in STAGE_CONFIGS else table
    return out


def claim_run_dir(cfg: ExperimentConfig) -> Path:
    """Write ``<out>/config.toml``, or check that the one there describes this experiment."""
    import tomllib

    check_writable_dir(cfg.out)
    run = RunDir(cfg.out)
    path = run.config
    text = dump_toml(cfg.to_dict())
    if not path.exists():
        # Stage outputs without a config.toml were made by something else (single-stage
        # commands, a simulated demo): this experiment must not resume from them.
        foreign = run.result_dirs()
        if foreign:
            raise ValueError(f"{cfg.out} already holds {', '.join(d + '/' for d in foreign)} "
                             "from another run and no config.toml; use another --out, or "
                             f"delete {cfg.out} to start over")
    else:
        old = _results_view(tomllib.loads(path.read_text()))
        new = _results_view(tomllib.loads(text))
        if old != new:
            key = _first_difference(old, new)
            raise ValueError(f"{path} describes another experiment ({key}: {_get(old, key)!r} there, "
                             f"{_get(new, key)!r} now); use another --out, or delete {cfg.out} "
                             "to start over")
    write_text(path, text)  # run-only keys (workers, launcher) may have changed
    return path


def _get(d: dict, key: str):
    stage, _, name = key.rpartition(".")
    return (d.get(stage, {}) if stage else d).get(name)


def _first_difference(old: dict, new: dict) -> str:
    # Top-level keys (out, base, seed) first: a different base says more than whatever
    # stage setting happens to sort before it.
    for k in sorted(set(old) | set(new), key=lambda k: (isinstance(old.get(k, new.get(k)),
                                                               dict), k)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) or isinstance(b, dict):
            a, b = a or {}, b or {}
            for kk in sorted(set(a) | set(b)):
                if a.get(kk) != b.get(kk):
                    return f"{k}.{kk}"
        elif a != b:
            return k
    return "?"


# --- running it ------------------------------------------------------------------------

@dataclass
class ExperimentResult:
    run_dir: Path
    base: str
    train: Any
    answer: Any
    fit: Any
    report: Any
    headline: str


def _require(table: dict, stage: str, key: str, what: str) -> None:
    """A key an experiment's stage table must set (there are no flags to give it with)."""
    if table.get(key) in (None, ""):
        raise ValueError(f"the experiment's [{stage}] table needs {key} = ... ({what})")


def _check_pretrain_base(pretrain: dict, base: str) -> None:
    if pretrain and base != DEMO_BASE:
        raise ValueError(f"a [pretrain] table needs base = {DEMO_BASE!r} (got base = "
                         f"{base!r}); drop the table or the base")


def pretrain_settings(data: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    """The ``[pretrain]`` table and seed of an experiment file (``ensemble pretrain FILE``),
    checked as ``ensemble run`` checks them."""
    part = {k: data[k] for k in ("base", "seed", "pretrain") if k in data}
    check_types(ExperimentConfig, part, "experiment config")
    table = dict(part.get("pretrain") or {})
    _check_pretrain_base(table, part.get("base", DEMO_BASE))
    return table, part.get("seed")


def resolve_base(base: str, pretrain: dict | None = None, progress: bool = True) -> str:
    """The base model as a path or id both transformers and vLLM load.

    ``demo`` with a ``[pretrain]`` table pretrains the project's own model with those
    settings (once, cached under :func:`ensemble.core.models.cache_root`; the defaults
    are the shipped model); everything else is :func:`ensemble.core.models.resolve_base`.
    """
    if base == DEMO_BASE and pretrain:
        from train_variants.pretrain import build_demo_base

        return str(build_demo_base(cache_root() / "models", progress=progress, **pretrain))
    from ensemble.core.models import resolve_base as resolve

    return resolve(base, progress=progress)


def run_experiment(cfg: ExperimentConfig, progress: bool = True, log=print) -> ExperimentResult:
    """Every stage of ``cfg`` in order, resuming whatever is already done.

    Stage configs are built (and so checked) before the first model is loaded, except
    for the base model path itself, which ``demo`` only knows after pretraining.
    """
    from ensemble.voting.votes import run_vote
    from eval.shards import launch_answer
    from fits.fitting import run_fit
    from fits.report import headline, write_report
    from train_variants.training import run_train

    # Validate every table with a stand-in base before any expensive step.
    stand_in = cfg.base if cfg.base != DEMO_BASE else "demo-base"
    cfg.train_config(stand_in)
    cfg.answer_config(stand_in)
    cfg.vote_config()
    cfg.fit_config()
    claim_run_dir(cfg)
    log(f"[1/5] base model: {cfg.base}")
    base = resolve_base(cfg.base, cfg.pretrain, progress=progress)
    train_cfg = cfg.train_config(base)
    answer_cfg = cfg.answer_config(base)
    run = RunDir(cfg.out)
    log(f"[2/5] train {train_cfg.variants} variants -> {run.variants}")
    train = run_train(train_cfg, progress=progress)
    failed = getattr(train, "failed", None)
    usable = len(train.done) + len(train.skipped)
    if failed and usable < 2:  # voting needs two voters; say why rather than fail later
        vid, err = sorted(failed.items())[0]
        raise RuntimeError(f"only {usable} of {len(train.planned)} variants trained; {vid} "
                           f"failed with {err} (all failures: `ensemble status {cfg.out}`)")
    if failed:
        log(f"      {len(failed)} variant(s) failed: {', '.join(sorted(failed))} "
            "(see `ensemble status`); answering with the rest")
    log(f"[3/5] answer ({answer_cfg.backend}) -> {run.answers}")
    answer = launch_answer(answer_cfg, progress=progress)
    if answer.failed:
        raise RuntimeError(f"{len(answer.failed)} answering unit(s) failed: "
                           + "; ".join(f"{k}: {v}" for k, v in answer.failed.items()))
    log(f"      {answer.tokens} tokens in {answer.seconds:.1f} s "
        f"({answer.tokens_per_s:.0f} tokens/s)")
    log("[4/5] vote, fit")
    run_vote(cfg.vote_config(), progress=progress)
    fit = run_fit(cfg.fit_config())
    log("[5/5] report")
    report = write_report(cfg.out)
    return ExperimentResult(cfg.out, base, train, answer, fit, report, headline(cfg.out, fit))


def fresh_start(out: Path) -> None:
    """Delete a run directory (``--fresh``), refusing paths that are not run directories."""
    out = Path(out)
    if out.exists():
        if not RunDir(out).config.exists() and any(out.iterdir()):
            raise ValueError(f"{out} is not a run directory (no config.toml); refusing to delete it")
        shutil.rmtree(out)
