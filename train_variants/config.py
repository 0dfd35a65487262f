"""The training stage's typed config (the ``[train]`` table of a TOML file; flags override it).

Every field has a default chosen for a GPU run of a real reasoning model, with the reason
next to it; the CPU smoke tests and the demo override the sizes.  Unknown keys are errors
(a typo in a config must not silently train with a default).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.config import DEFAULT_TEMPLATE, LORA_RANKS, read_toml

LAUNCHERS = ("local", "ray")
# trl: one TRL GRPOTrainer per variant (the reference); population: the variants of a chunk
# trained together on one base (train_variants.population)
TRAINERS = ("trl", "population")
MAX_VARIANTS = 100_000
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")
ALPHA_RULES = ("fixed", "linear", "sqrt")
# Factors a plan may vary between variants.  "order" and "mask" are the data factors of the
# reference experiment; the others are options for studying what else drives diversity.
FACTORS = ("order", "mask", "init_seed", "sampling_seed", "rank", "lora_init")
# LoRA inits that leave the base weights untouched and start as (near) no-ops: PiSSA/OLoRA
# rewrite the base weights, so their adapters could not be served on the shared base.
LORA_INITS = ("default", "gaussian", "orthogonal")
# Every projection of a Llama/Qwen block: LoRA on all linear layers is what matches full
# fine-tuning in RL ("LoRA without regret", Thinking Machines 2025).
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class TrainConfig:
    base: str  # Hugging Face id or local path of the base model
    out: Path  # run directory; variants go to out/variants/<vid>/
    pool: str  # training pool: local file, dataset id, synthetic[:N][:dD][:sS] (eval.problems)
    problem_field: str = "problem"
    answer_field: str = "answer"
    id_field: str | None = "id"  # missing: rows are numbered (ids must be stable for the hashes)
    split: str = "train"
    limit: int | None = None  # first N pool rows only (smoke tests)
    kind: str = "auto"  # grading: aime (integers 0-999), math (LaTeX); auto decides from the golds
    # --- the population -----------------------------------------------------------------
    variants: int = 8  # population size N: variants v000 .. v{N-1}
    first: int = 0  # train only indices first .. variants-1 (the CLI's --variants a:b)
    mask_fraction: float = 0.1  # share of the pool each variant drops (its mask)
    seed: int = 0  # experiment seed: variant i's generators are seeded by (seed, i, factor)
    vary: tuple[str, ...] = ("order", "mask")  # the reference experiment varies data only
    init_seed: int = 0  # LoRA init seed when "init_seed" is not varied
    sampling_seed: int = 0  # generation/trainer seed when "sampling_seed" is not varied
    rank_choices: tuple[int, ...] = (8, 16, 32)  # drawn from when "rank" is varied
    lora_init_choices: tuple[str, ...] = ("default", "gaussian")  # when "lora_init" is varied
    # --- LoRA ---------------------------------------------------------------------------
    lora_rank: int = 32  # vLLM serves ranks 1, 8, 16, 32, 64, ...; 32 is ample for RL updates
    lora_alpha: float = 32.0  # alpha at lora_rank (scale alpha/r = 1)
    alpha_rule: str = "fixed"  # how alpha follows a varied rank: fixed, linear (a∝r), sqrt (a∝√r)
    target_modules: tuple[str, ...] = DEFAULT_TARGETS
    lora_dropout: float = 0.0  # dropout would add randomness the plan does not record
    lora_init: str = "default"  # PEFT init: B = 0, so every variant starts at the base model
    # --- GRPO (TRL GRPOTrainer) ---------------------------------------------------------
    learning_rate: float = 1e-5  # LoRA RL wants ~10x the full fine-tuning rate
    steps: int = 100  # optimiser steps per variant
    batch_size: int = 8  # prompts per optimiser step (each gets num_generations completions)
    grad_accum: int = 1  # gradient accumulation steps per optimiser step
    num_generations: int = 8  # group size for GRPO's group-relative advantage
    max_completion_length: int = 2048  # AIME solutions are long; lower it for small models
    temperature: float = 1.0  # on-policy sampling at the model's own distribution
    top_p: float = 1.0
    beta: float = 0.0  # KL to the base; TRL's default (recent GRPO recipes drop the KL term)
    loss_type: str = "dapo"  # TRL's default token-level normalisation
    format_reward: float = 0.0  # weight of a reward for a \boxed{} in the completion
    prompt_template: str = DEFAULT_TEMPLATE  # the answering stage's prompt, so train = test
    system_prompt: str | None = None
    gradient_checkpointing: bool = True  # long completions on large models; off for tiny ones
    # --- where it runs ------------------------------------------------------------------
    # Which trainer: "trl" (one GRPOTrainer per variant) stays the default until the demo
    # is re-measured with "population" (train_variants.population).  Named in the recipe:
    # the two sample from different random streams, so their variants are not the same bits.
    trainer: str = "trl"
    # Population trainer: variants trained together per chunk; None: all of the run that
    # fit in half the free memory (train_variants.population.population_size)
    population_size: int | None = None
    launcher: str = "local"  # local: this machine; ray: one task per variant on a cluster
    workers: int = 1  # local: processes (one per GPU on a GPU box); ray: ignored
    device: str = "auto"  # auto: cuda when available, else cpu
    dtype: str = "auto"  # auto: bfloat16 on cuda, float32 on cpu
    use_vllm: bool | None = None  # TRL's vLLM generation; None: only with CUDA and vllm installed
    # torch threads per training process on CPU; None: cores / workers.  On a shared machine
    # use 1: OpenMP threads that spin while another process holds the core made GRPO steps
    # of the tiny test model 30-50x slower here (2 threads) than one thread.
    cpu_threads: int | None = None
    cpus_per_variant: float = 1.0  # Ray task request on CPU; on GPUs each task asks one GPU
    ray_address: str | None = None  # None: join a running cluster (RAY_ADDRESS) or start one

    def __post_init__(self):
        self.out = Path(self.out)
        for name in ("vary", "rank_choices", "lora_init_choices", "target_modules"):
            v = getattr(self, name)
            setattr(self, name, (v,) if isinstance(v, (str, int)) else tuple(v))
        for name, value, allowed in (("launcher", self.launcher, LAUNCHERS),
                                     ("device", self.device, DEVICES),
                                     ("dtype", self.dtype, DTYPES),
                                     ("trainer", self.trainer, TRAINERS),
                                     ("alpha_rule", self.alpha_rule, ALPHA_RULES),
                                     ("lora_init", self.lora_init, LORA_INITS),
                                     ("kind", self.kind, ("auto", "aime", "math"))):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not one of {', '.join(allowed)}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit={self.limit} must be at least 1 (the first N pool rows); "
                             "leave it out to use the whole pool")
        if not 0 <= self.mask_fraction < 1:
            raise ValueError(f"mask_fraction={self.mask_fraction} must lie in [0, 1): it is the "
                             "share of the pool each variant drops (0.1 drops 10%)")
        bad = [f for f in self.vary if f not in FACTORS]
        if bad:
            raise ValueError(f"vary: unknown factor {bad[0]!r}; factors are {', '.join(FACTORS)}")
        if not self.vary:
            raise ValueError("vary is empty: variants would be identical; vary at least one of "
                             f"{', '.join(FACTORS)}")
        if len(set(self.vary)) != len(self.vary):
            raise ValueError(f"vary={list(self.vary)} names a factor twice")
        for name in ("variants", "steps", "batch_size", "grad_accum", "num_generations",
                     "max_completion_length", "workers"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if self.variants > MAX_VARIANTS:
            raise ValueError(f"variants={self.variants}: at most {MAX_VARIANTS} (the plan holds "
                             "every variant's data order in memory)")
        if not 0 <= self.first < self.variants:
            raise ValueError(f"first={self.first} must lie in [0, variants={self.variants})")
        if self.num_generations < 2:
            raise ValueError(f"num_generations={self.num_generations}: GRPO compares completions "
                             "of one prompt, so it needs at least 2")
        for r in (self.lora_rank, *self.rank_choices):
            if r not in LORA_RANKS:
                raise ValueError(f"LoRA rank {r} is not one vLLM serves; use one of "
                                 f"{', '.join(map(str, LORA_RANKS))}")
        bad = [i for i in self.lora_init_choices if i not in LORA_INITS]
        if bad:
            raise ValueError(f"lora_init_choices: {bad[0]!r} is not one of {', '.join(LORA_INITS)}")
        if self.lora_alpha <= 0 or not 0 <= self.lora_dropout < 1:
            raise ValueError("lora_alpha must be positive and lora_dropout in [0, 1)")
        if not 0 < self.temperature <= 5:
            raise ValueError(f"temperature={self.temperature} must lie in (0, 5]: GRPO samples")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must lie in (0, 1]")
        if self.learning_rate <= 0 or self.beta < 0 or self.format_reward < 0:
            raise ValueError("learning_rate must be positive; beta and format_reward >= 0")
        if "{problem}" not in self.prompt_template:
            raise ValueError("prompt_template must contain {problem}")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ValueError(f"cpu_threads={self.cpu_threads} must be at least 1")
        if self.population_size is not None and self.population_size < 1:
            raise ValueError(f"population_size={self.population_size} must be at least 1 (variants "
                             "trained together); leave it out for as many as fit in memory")
        if self.cpus_per_variant <= 0:
            raise ValueError(f"cpus_per_variant={self.cpus_per_variant} must be positive")

    @property
    def indices(self) -> range:
        """The variant indices this run trains."""
        return range(self.first, self.variants)

    def alpha_for(self, rank: int) -> float:
        """LoRA alpha for ``rank`` under :attr:`alpha_rule` (``lora_alpha`` at ``lora_rank``)."""
        if self.alpha_rule == "linear":
            return self.lora_alpha * rank / self.lora_rank
        if self.alpha_rule == "sqrt":
            return self.lora_alpha * (rank / self.lora_rank) ** 0.5
        return float(self.lora_alpha)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in d.items()}

    # Keys that only say where and how fast the work runs, or which part of the population
    # this invocation trains: they never change a variant, so the recipe hash leaves them out.
    RUN_KEYS = ("out", "variants", "first", "launcher", "workers", "cpus_per_variant",
                "ray_address", "cpu_threads", "population_size")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Build a config from a dict (a TOML table merged with flags); unknown keys and
        values of the wrong type are errors."""
        from ensemble.strict import from_dict

        return from_dict(cls, data, "train config", ("base", "pool", "out"),
                         ": give --{key} or set it in the [train] table of the config file")

    @classmethod
    def from_toml(cls, path: Path, **overrides) -> "TrainConfig":
        """The ``[train]`` table of a TOML file (or the whole file), ``overrides`` on top."""
        data = read_toml(path, "train")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(data)


def parse_variants(spec: str | int) -> tuple[int, int]:
    """``N`` or ``a:b`` → ``(first, variants)``: ``"8"`` is (0, 8), ``"100:200"`` is (100, 200).

    Examples
    --------
    >>> parse_variants("16"), parse_variants("4:8")
    ((0, 16), (4, 8))
    """
    m = re.fullmatch(r"\s*(?:(\d+)\s*:\s*)?(\d+)\s*", str(spec))
    if not m or int(m.group(2)) < 1 or (m.group(1) and int(m.group(1)) >= int(m.group(2))):
        raise ValueError(f"--variants {spec!r} must be a count N or a range a:b with a < b, "
                         "e.g. 200 or 0:200")
    return int(m.group(1) or 0), int(m.group(2))
