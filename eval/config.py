"""The answering stage's typed config (TOML file, flags override it)."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BACKENDS = ("vllm", "hf", "auto")  # auto: vllm on CUDA GPUs, hf (transformers) without
CONDITIONS = ("collaboration", "repetition", "both")
LAUNCHERS = ("local", "ray")
# vLLM sizes its LoRA kernels for these ranks only (vllm.config.lora.MaxLoRARanks).
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# The prompt of the Qwen2.5-Math evaluation harness: reason, then box the answer.
DEFAULT_TEMPLATE = "{problem}\n\nPlease reason step by step, and put your final answer within \\boxed{{}}."


@dataclass
class AnswerConfig:
    base: str  # Hugging Face id or local path of the base model
    out: Path  # run directory; answers go to out/answers/<condition>/<model_id>.parquet
    benchmark: str  # local file, preset (aime24, aime25, math500), synthetic[:N], or dataset id
    adapters: Path | None = None  # directory of PEFT adapters; default <out>/variants
    problem_field: str = "problem"
    answer_field: str = "answer"
    id_field: str | None = "id"
    split: str = "train"
    limit: int | None = None  # first N problems only (smoke tests)
    kind: str = "auto"  # grading: aime (integers 0-999), math (LaTeX), auto: aime if all golds are
    backend: str = "vllm"  # vllm: multi-LoRA serving; hf: transformers + PEFT reference; auto
    condition: str = "both"
    temperature: float = 0.6  # the usual reasoning-model setting; both conditions share it
    top_p: float = 0.95
    max_tokens: int = 4096  # AIME solutions are long; lower it for small models
    seed: int = 0  # each request's seed derives from (seed, model, problem, sample)
    samples: int = 1  # answers per variant per problem (collaboration)
    # The repetition control: several models, so the comparison is with "a typical
    # variant sampled repeatedly", not with whichever variant happened to be first (one
    # model's own accuracy can explain the whole gap), and the spread between them is seen.
    repetition_model: list[str] = field(default_factory=list)  # default: see repetition_models
    repetition_models: int = 4  # control models spread evenly over the variants (all if fewer)
    repetition_samples: int | None = None  # per control model; default: as many as variants
    max_loras: int = 8  # adapters resident in the engine at once
    max_lora_rank: int = 64  # must be >= every adapter's rank (checked before loading)
    adapters_per_batch: int | None = None  # adapters per generate call; default max_loras
    prompt_template: str = DEFAULT_TEMPLATE
    system_prompt: str | None = None
    keep_text: bool = False  # store completions (large) in the answers table
    dtype: str = "auto"  # auto: the checkpoint's dtype, the same in both backends
    # --- the vLLM engine: None is computed from the base's config.json, the adapters and
    # the prompts (eval.budget) and recorded in answers.json -------------------------------
    max_model_len: int | None = None  # longest prompt + max_tokens (the KV cache's unit)
    tensor_parallel_size: int | None = None  # GPUs per engine (shard): weights + LoRA slots + KV
    gpu_memory_utilization: float = 0.9  # vLLM's default share of each GPU
    gpu_memory_gb: float | None = None  # one GPU's memory; the visible GPU's, else 80
    # LoRA slots only on these modules (vLLM's lora_target_modules, PEFT names): None is the
    # adapters' own targets, so attention-only adapters on a MoE base get no expert slots.
    lora_target_modules: list[str] | None = None
    # vLLM's batch-invariant kernels (VLLM_BATCH_INVARIANT): answers independent of how
    # requests are batched, so sharded, resumed and whole runs agree on CUDA too.  None: on
    # for CUDA GPUs of compute capability 9.0+ (what vLLM documents), off elsewhere.
    batch_invariant: bool | None = None
    shard: str = "0/1"  # i/n: this process answers work units i, i+n, i+2n, ...
    launcher: str = "local"  # ray: one engine per GPU (or CPU task) over the shards
    workers: int = 1  # shards run by the ray launcher
    engine_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to vllm.LLM as is
    # Seconds without a finished request before the work in flight fails (eval.watchdog);
    # generous, as one long reasoning request on a big model can take many minutes. 0: off.
    stall_timeout: float = 1800.0

    def __post_init__(self):
        self.out = Path(self.out)
        if self.adapters is not None:
            self.adapters = Path(self.adapters)
        for name, value, allowed in (("backend", self.backend, BACKENDS),
                                     ("condition", self.condition, CONDITIONS),
                                     ("launcher", self.launcher, LAUNCHERS),
                                     ("kind", self.kind, ("auto", "aime", "math"))):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not one of {', '.join(allowed)}")
        if not 0 <= self.temperature <= 5:
            raise ValueError(f"temperature={self.temperature} must lie in [0, 5]")
        if self.stall_timeout < 0:
            raise ValueError(f"stall_timeout={self.stall_timeout} must be >= 0 seconds (0 turns "
                             "the watchdog off)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must lie in (0, 1]")
        for name in ("max_tokens", "samples", "max_loras", "max_lora_rank", "workers",
                     "repetition_models"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        for name in ("max_model_len", "tensor_parallel_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1; leave it out "
                                 "to compute it from the model's size")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization={self.gpu_memory_utilization} must lie in "
                             "(0, 1]")
        if self.gpu_memory_gb is not None and self.gpu_memory_gb <= 0:
            raise ValueError(f"gpu_memory_gb={self.gpu_memory_gb} must be positive")
        if isinstance(self.lora_target_modules, str):
            self.lora_target_modules = [self.lora_target_modules]
        if self.max_lora_rank not in LORA_RANKS:
            raise ValueError(f"max_lora_rank={self.max_lora_rank} is not a rank vLLM supports; "
                             f"use one of {', '.join(map(str, LORA_RANKS))} (at least the "
                             "largest adapter rank)")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit={self.limit} must be at least 1 (the first N problems); "
                             "leave it out to answer every problem")
        if self.repetition_samples is not None and self.repetition_samples < 1:
            raise ValueError(f"repetition_samples={self.repetition_samples} must be at least 1")
        if isinstance(self.repetition_model, str):
            self.repetition_model = [self.repetition_model]
        self.shard_index, self.shard_count = parse_shard(self.shard)
        if "{problem}" not in self.prompt_template:
            raise ValueError("prompt_template must contain {problem}")

    @property
    def adapters_dir(self) -> Path:
        return self.adapters if self.adapters is not None else self.out / "variants"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}

    # Settings that change what the answers are; a rerun into the same run directory
    # must agree on them (others, like shard or workers, only change who does the work).
    OUTPUT_KEYS = ("base", "benchmark", "problem_field", "answer_field", "id_field", "split",
                   "limit", "kind", "backend", "temperature", "top_p", "max_tokens", "seed",
                   "samples", "prompt_template", "system_prompt", "dtype")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AnswerConfig":
        from ensemble.strict import from_dict

        return from_dict(cls, data, "answer config", ("base", "out", "benchmark"),
                         ": give --{key} or set it in the config file")


def parse_shard(spec: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)/(\d+)", str(spec).strip())
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise ValueError(f"shard={spec!r} must be i/n with 0 <= i < n, e.g. 0/4")
    return int(m.group(1)), int(m.group(2))


SHARED_KEYS = ("out", "base", "seed")  # top-level keys of an experiment file


def read_toml(path: Path, section: str | None = None) -> dict[str, Any]:
    """A TOML config file as a dict (one section of it when ``section`` is given)."""
    path = Path(path)
    if path.is_dir():
        if not (path / "config.toml").is_file():
            raise ValueError(f"{path} is a directory without config.toml; give a config "
                             "file (.toml) or a run directory made by `ensemble run`")
        path = path / "config.toml"  # a run directory: resume it with its own config
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: config file not found") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file; a config is TOML text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML ({exc})") from None
    if section is not None and section in data:
        # An experiment file (`ensemble run`): its shared top-level keys apply to every
        # stage, so `ensemble train EXPERIMENT.toml` trains what `ensemble run` would.
        shared = {k: data[k] for k in SHARED_KEYS if k in data}
        return {**shared, **data[section]}
    return data
