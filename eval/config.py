"""The answering stage's typed config (the ``[answer]`` table; flags override it)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ensemble.core.answers import CONDITIONS as ANSWER_CONDITIONS
from ensemble.core.config import StrictConfig, check_seed, setting
from ensemble.core.models import LORA_RANKS
from ensemble.core.prompts import DEFAULT_TEMPLATE, check_template
from ensemble.core.rundir import RunDir

BACKENDS = ("vllm", "hf", "auto")  # auto: vllm on CUDA GPUs, hf (transformers) without
CONDITIONS = (*ANSWER_CONDITIONS, "both")  # the answer table's conditions, or both
LAUNCHERS = ("local", "ray")
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class AnswerConfig(StrictConfig):
    """Every setting of ``ensemble answer``; see the field help for why each default."""

    TABLE: ClassVar[str] = "answer config"
    REQUIRED: ClassVar[tuple[str, ...]] = ("base", "out", "benchmark")
    MISSING_HINT: ClassVar[str] = ": give --{key} or set it in the config file"

    base: str = setting(help="Base model: Hugging Face id or local path.")
    out: Path = setting(help="Run directory; answers go to OUT/answers/<condition>/<model>"
                        ".parquet.")
    benchmark: str = setting(help="Problem file, preset (aime24, aime25, math500), "
                             "synthetic[:N][:dD][:sS], or dataset id.")
    adapters: Path | None = setting(None, "Directory of PEFT adapters [default: "
                                    "RUN/variants].")
    problem_field: str = setting("problem", "Benchmark field holding the problem text.")
    answer_field: str = setting("answer", "Benchmark field holding the gold answer.")
    id_field: str | None = setting("id", "Benchmark field holding a stable problem id.")
    split: str = setting("train", "Dataset split of a hub benchmark.")
    limit: int | None = setting(None, "Answer only the first N problems.")
    kind: str = setting("auto", "Grading: aime (integers 0-999), math (LaTeX); auto: aime "
                        "if every gold is one.", choices=("auto", "aime", "math"))
    backend: str = setting("vllm", "vllm: multi-LoRA serving; hf: transformers + PEFT, the "
                           "reference; auto: vllm on CUDA GPUs, hf without.", choices=BACKENDS)
    condition: str = setting("both", "Which condition(s) to answer.", choices=CONDITIONS)
    temperature: float = setting(0.6, "Sampling temperature, shared by both conditions "
                                 "(0.6: the usual reasoning-model setting).")
    top_p: float = setting(0.95, "Nucleus sampling mass.")
    max_tokens: int = setting(4096, "Longest completion; AIME solutions are long, lower it "
                              "for small models.")
    seed: int = setting(0, "Each request's seed derives from (seed, model, problem, "
                        "sample).")
    samples: int = setting(1, "Answers per variant per problem.")
    # The repetition control: several models, so the comparison is with "a typical
    # variant sampled repeatedly", not with whichever variant happened to be first (one
    # model's own accuracy can explain the whole gap), and the spread between them is seen.
    repetition_model: list[str] = setting(
        help="Model(s) for the control (adapter id or 'base') [default: see "
        "--repetition-models].", default_factory=list)
    repetition_models: int = setting(4, "Control models spread over the variants when "
                                     "--repetition-model is not given.")
    repetition_samples: int | None = setting(None, "Samples per control model [default: as "
                                             "many as there are variants].")
    max_loras: int = setting(8, "Adapters resident in the engine at once.")
    max_lora_rank: int = setting(64, "At least every adapter's rank (checked before "
                                 "loading).")
    adapters_per_batch: int | None = setting(None, "Adapters per generate call [default: "
                                             "max_loras].", run_only=True)
    prompt_template: str = setting(DEFAULT_TEMPLATE, "The prompt; must contain {problem}.")
    system_prompt: str | None = setting(None, "A system turn before every prompt.")
    keep_text: bool = setting(False, "Store completions (large) in the answers table.")
    dtype: str = setting("auto", "Weights dtype [default: auto, the checkpoint's own, the "
                         "same in both backends].", choices=DTYPES)
    # --- the vLLM engine: None is computed from the base's config.json, the adapters and
    # the prompts (eval.budget) and recorded in answers.json -------------------------------
    max_model_len: int | None = setting(None, "Context length of the vLLM engine [default: "
                                        "the longest prompt + max_tokens].", run_only=True)
    tensor_parallel_size: int | None = setting(None, "GPUs per vLLM engine [default: from the "
                                               "model's size].", run_only=True)
    gpu_memory_utilization: float = setting(0.9, "vLLM's share of each GPU.", run_only=True)
    gpu_memory_gb: float | None = setting(None, "One GPU's memory [default: the visible GPU's, "
                                          "else 80].", run_only=True)
    # None: the adapters' own targets, so attention-only adapters on a MoE base get no
    # expert slots.
    lora_target_modules: list[str] | None = setting(None, "LoRA slots only on these modules "
                                                    "(vLLM's lora_target_modules).",
                                                    run_only=True)
    # The base model's answers independent of how requests are batched, so sharded,
    # resumed and whole runs agree on CUDA too (vLLM's LoRA kernels stay batch-dependent
    # in the last bits: eval/answering.py); None: on for CUDA GPUs of compute capability
    # 9.0+ (what vLLM documents), off elsewhere.
    batch_invariant: bool | None = setting(None, "vLLM's batch-invariant kernels "
                                           "(VLLM_BATCH_INVARIANT).")
    shard: str = setting("0/1", "i/n: answer this share of the work units.", run_only=True)
    launcher: str = setting("local", "local: this process; ray: one engine per GPU (or CPU "
                            "task) over the shards.", choices=LAUNCHERS, run_only=True)
    workers: int = setting(1, "Shards (engines) for the ray launcher.", run_only=True)
    ray_address: str | None = setting(None, "Ray cluster [default: RAY_ADDRESS or a new "
                                      "local one].", run_only=True)
    engine_kwargs: dict[str, Any] = setting(help="Passed to vllm.LLM as is.",
                                            default_factory=dict)
    # Generous: one long reasoning request on a big model can take many minutes.
    stall_timeout: float = setting(1800.0, "Seconds without a finished request before the "
                                   "work in flight fails [default: 1800; 0: never].",
                                   run_only=True)

    # Settings that shape each answer (hashed into every answer file's provenance); the
    # others choose which units there are (conditions, control models) or how they run.
    OUTPUT_KEYS: ClassVar[tuple[str, ...]] = (
        "base", "benchmark", "problem_field", "answer_field", "id_field", "split", "limit",
        "kind", "backend", "temperature", "top_p", "max_tokens", "seed", "samples",
        "prompt_template", "system_prompt", "dtype")

    def __post_init__(self):
        super().__post_init__()
        self.out = Path(self.out)
        if self.adapters is not None:
            self.adapters = Path(self.adapters)
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
        check_template(self.prompt_template)
        check_seed(self.seed)
        if self.adapters_per_batch is not None and self.adapters_per_batch < 1:
            raise ValueError(f"adapters_per_batch={self.adapters_per_batch} must be at least 1 "
                             "(or left out for the default)")

    @property
    def adapters_dir(self) -> Path:
        return self.adapters if self.adapters is not None else RunDir(self.out).variants


def parse_shard(spec: str) -> tuple[int, int]:
    """``"i/n"`` as ``(i, n)``, checked.

    Examples
    --------
    >>> parse_shard("1/4")
    (1, 4)
    """
    m = re.fullmatch(r"(\d+)/(\d+)", str(spec).strip())
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise ValueError(f"shard={spec!r} must be i/n with 0 <= i < n, e.g. 0/4")
    return int(m.group(1)), int(m.group(2))
