"""One experiment config for every stage, and `ensemble run` / `ensemble demo` over it.

An experiment file is TOML with a few top-level keys shared by the stages and one table
per stage, holding that stage's own config keys::

    out = "runs/demo"          # the run directory
    base = "demo"              # a local dir, a hub id, "smollm2-135m", or "demo"
    seed = 0                   # the experiment seed, given to every stage

    [pretrain]                 # only for base = "demo" (train_variants.pretrain)
    [train]                    # train_variants.config.TrainConfig keys
    [answer]                   # eval.config.AnswerConfig keys
    [vote]                     # ensemble.config.VoteConfig keys
    [fit]                      # ensemble.config.FitConfig keys

`run_experiment` writes the resolved file to ``<out>/config.toml`` once and refuses a
run directory whose config.toml differs in anything that changes results.  Every stage
skips work already on disk (finished variants, answered units), and vote, fit and
report are cheap and deterministic, so an interrupted run started again finishes with
the results of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ensemble.config import FitConfig, VoteConfig
from ensemble.strict import check_types
from eval.config import SHARED_KEYS as SHARED  # the top-level keys every stage shares

STAGES = ("pretrain", "train", "answer", "vote", "fit")
RESULT_DIRS = ("variants", "answers", "votes", "fits")  # what the stages write in a run dir
DEMO_BASE = "demo"  # base = "demo": the project's own model, pretrained on first use
# Keys that decide who does the work and how fast, never what the results are: a rerun
# may change them without being refused.
RUN_ONLY = {"train": ("launcher", "workers", "cpus_per_variant", "ray_address",
                      "gpus_per_variant", "micro_batch", "vllm_memory_share",
                      "vllm_max_model_len", "gpu_memory_gb"),
            "answer": ("launcher", "workers", "shard", "adapters_per_batch", "stall_timeout",
                       "max_model_len", "tensor_parallel_size", "gpu_memory_utilization",
                       "gpu_memory_gb", "lora_target_modules")}


def cache_root() -> Path:
    """Where pretrained and converted base models are kept between runs."""
    env = os.environ.get("ENSEMBLE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "ensemble"


@dataclass
class ExperimentConfig:
    out: Path  # the run directory (the contract in docs/architecture.md)
    base: str  # local dir, hub id, a name ensemble.models knows, or "demo"
    seed: int = 0  # the experiment seed; each stage derives its own streams from it
    pretrain: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    answer: dict[str, Any] = field(default_factory=dict)
    vote: dict[str, Any] = field(default_factory=dict)
    fit: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.out = Path(self.out)
        if self.pretrain and self.base != DEMO_BASE:
            raise ValueError(f"a [pretrain] table needs base = {DEMO_BASE!r} (got base = "
                             f"{self.base!r}); drop the table or the base")
        for stage in ("train", "answer"):
            table = getattr(self, stage)
            clash = sorted(k for k in SHARED if k in table)
            if clash:
                raise ValueError(f"[{stage}] sets {', '.join(clash)}, which the experiment sets "
                                 "for every stage; move it to the top of the file")
        self._check_keys()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExperimentConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown experiment key(s) {', '.join(unknown)}; top-level keys are "
                             f"{', '.join(SHARED)} and the tables [{'], ['.join(STAGES)}]")
        missing = [k for k in ("out", "base") if not data.get(k)]
        if missing:
            raise ValueError(f"the experiment config needs {' and '.join(missing)} at its top level")
        check_types(cls, data, "experiment config")
        return cls(**data)

    @classmethod
    def from_toml(cls, path: Path, **overrides) -> "ExperimentConfig":
        from eval.config import read_toml

        data = read_toml(Path(path))
        for key, value in overrides.items():
            if value is None:
                continue
            stage, _, name = key.rpartition(".")
            (data.setdefault(stage, {}) if stage else data)[name] = value
        return cls.from_dict(data)

    def _check_keys(self) -> None:
        """Unknown keys in any stage table, found before anything runs."""
        from eval.config import AnswerConfig
        from train_variants.config import TrainConfig

        for stage, cls in (("train", TrainConfig), ("answer", AnswerConfig),
                           ("vote", VoteConfig), ("fit", FitConfig)):
            names = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(getattr(self, stage)) - names)
            if unknown:
                raise ValueError(f"unknown [{stage}] key(s) {', '.join(unknown)}; known keys: "
                                 f"{', '.join(sorted(names - {'input', 'votes'}))}")
            check_types(cls, getattr(self, stage), f"[{stage}]")
        if self.pretrain:
            from train_variants.pretrain import PretrainConfig

            PretrainConfig.from_overrides(**self.pretrain)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["out"] = str(self.out)
        return {k: v for k, v in d.items() if v != {}}

    # --- the stage configs ---------------------------------------------------------

    def train_config(self, base: str):
        from train_variants.config import TrainConfig

        return TrainConfig.from_dict({"seed": self.seed, **self.train, "base": base,
                                      "out": self.out})

    def answer_config(self, base: str):
        from eval.config import AnswerConfig

        return AnswerConfig.from_dict({"seed": self.seed, **self.answer, "base": base,
                                       "out": self.out})

    def vote_config(self) -> VoteConfig:
        return VoteConfig(**{"seed": self.seed, **self.vote, "input": self.out})

    def fit_config(self) -> FitConfig:
        return FitConfig(**{"seed": self.seed, **self.fit, "votes": self.out / "votes"})


# --- config.toml in the run directory ------------------------------------------------

def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{v} cannot be written to TOML")
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, (str, Path)):
        s = str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{s}"'
    raise ValueError(f"{v!r} ({type(v).__name__}) cannot be written to TOML")


def dump_toml(data: dict[str, Any]) -> str:
    """Flat TOML for a dict of scalars, lists and one level of tables (None is left out)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items()
             if not isinstance(v, dict) and v is not None]
    for name, table in data.items():
        if isinstance(table, dict):
            lines += ["", f"[{name}]"]
            for k, v in table.items():
                if isinstance(v, dict):
                    raise ValueError(f"[{name}].{k}: nested tables are not supported")
                if v is not None:
                    lines.append(f"{k} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


def _results_view(d: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in d.items() if not isinstance(v, dict)}
    for stage in STAGES:
        skip = RUN_ONLY.get(stage, ())
        out[stage] = {k: v for k, v in d.get(stage, {}).items() if k not in skip}
    return out


def claim_run_dir(cfg: ExperimentConfig) -> Path:
    """Write ``<out>/config.toml``, or check that the one there describes this experiment."""
    import tomllib

    from ensemble.runio import write_text

    path = cfg.out / "config.toml"
    text = dump_toml(cfg.to_dict())
    if not path.exists():
        # Stage outputs without a config.toml were made by something else (single-stage
        # commands, a simulated demo): this experiment must not resume from them.
        foreign = [d for d in RESULT_DIRS if (cfg.out / d).exists()]
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
    for k in sorted(set(old) | set(new)):
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


def demo_base_path(pretrain: dict | None = None, progress: bool = True) -> str:
    """``base = "demo"`` as a model directory: the shipped model for the default
    ``[pretrain]`` settings, else pretrained (once) into :func:`cache_root`."""
    from train_variants.pretrain import build_demo_base

    return str(build_demo_base(cache_root() / "models", progress=progress, **(pretrain or {})))


def resolve_base(cfg: ExperimentConfig, progress: bool = True) -> str:
    """The base model as a path or id both transformers and vLLM load.

    ``demo`` pretrains the project's own small model on first use (cached under
    :func:`cache_root`); other names are resolved by :mod:`ensemble.models`.
    """
    if cfg.base == DEMO_BASE:
        return demo_base_path(cfg.pretrain, progress=progress)
    if Path(cfg.base).is_dir():  # a local checkpoint: nothing to resolve
        return cfg.base
    from ensemble.models import resolve_base as resolve

    return resolve(cfg.base, progress=progress)


def run_experiment(cfg: ExperimentConfig, progress: bool = True, log=print) -> ExperimentResult:
    """Every stage of ``cfg`` in order, resuming whatever is already done.

    Stage configs are built (and so checked) before the first model is loaded, except
    for the base model path itself, which ``demo`` only knows after pretraining.
    """
    from ensemble.demo import headline
    from ensemble.vote import run_vote
    from eval.launch import launch_answer
    from fits.report import write_report
    from fits.stage import run_fit
    from train_variants.stage import run_train

    # Validate every table with a stand-in base before any expensive step.
    stand_in = cfg.base if cfg.base != DEMO_BASE else "demo-base"
    cfg.train_config(stand_in)
    cfg.answer_config(stand_in)
    cfg.vote_config()
    cfg.fit_config()
    claim_run_dir(cfg)
    log(f"[1/5] base model: {cfg.base}")
    base = resolve_base(cfg, progress=progress)
    train_cfg = cfg.train_config(base)
    answer_cfg = cfg.answer_config(base)
    log(f"[2/5] train {train_cfg.variants} variants -> {cfg.out / 'variants'}")
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
    log(f"[3/5] answer ({answer_cfg.backend}) -> {cfg.out / 'answers'}")
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
        if not (out / "config.toml").exists() and any(out.iterdir()):
            raise ValueError(f"{out} is not a run directory (no config.toml); refusing to delete it")
        shutil.rmtree(out)
