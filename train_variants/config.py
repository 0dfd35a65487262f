"""The training stage's typed config (the ``[train]`` table of a TOML file; flags override it).

Every field has a default chosen for a GPU run of a real reasoning model, with the reason
next to it; the CPU smoke tests and the demo override the sizes.  Unknown keys are errors
(a typo in a config must not silently train with a default).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ensemble.core.config import StrictConfig, check_seed, read_toml, setting
from ensemble.core.models import LORA_RANKS
from ensemble.core.prompts import DEFAULT_TEMPLATE, check_template

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
# TRL 1.16 losses normalised over the whole generation batch (dapo, cispo, vespo: by its
# token count; grpo, sapo, luspo, dr_grpo: per sequence, divided by the accumulation
# steps), so splitting it into micro-batches leaves the gradient unchanged; bnpo
# normalises per micro-batch.
SPLIT_EXACT_LOSSES = ("dapo", "grpo", "dr_grpo", "cispo", "sapo", "vespo", "luspo")
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class TrainConfig(StrictConfig):
    """Every setting of ``ensemble train``; see the field help for why each default."""

    TABLE: ClassVar[str] = "train config"
    REQUIRED: ClassVar[tuple[str, ...]] = ("base", "pool", "out")
    MISSING_HINT: ClassVar[str] = ": give --{key} or set it in the [train] table of the config file"

    base: str = setting(help="Base model: Hugging Face id or local path.")
    out: Path = setting(help="Run directory; variants go to OUT/variants/<vid>/.")
    pool: str = setting(help="Training pool: .jsonl/.json/.parquet/.csv, dataset id, or "
                        "synthetic[:N][:dD][:sS].")
    problem_field: str = setting("problem", "Pool field holding the problem text.")
    answer_field: str = setting("answer", "Pool field holding the answer.")
    # Missing: rows are numbered (ids must be stable for the plan's hashes).
    id_field: str | None = setting("id", "Pool field holding a stable id.")
    split: str = setting("train", "Dataset split of a hub pool.")
    limit: int | None = setting(None, "Use only the first N pool rows.")
    kind: str = setting("auto", "Grading: aime (integers 0-999), math (LaTeX); auto decides "
                        "from the golds.", choices=("auto", "aime", "math"))
    # --- the population -----------------------------------------------------------------
    variants: int = setting(8, "Population size N: variants v000 .. v{N-1}.")
    first: int = setting(0, "Train only indices first .. variants-1 (the CLI's --variants "
                         "a:b).")
    mask_fraction: float = setting(0.1, "Share of the pool each variant drops.")
    seed: int = setting(0, "Experiment seed: variant i's generators are seeded by (seed, i, "
                        "factor).")
    # The reference experiment varies data only.
    vary: tuple[str, ...] = setting(("order", "mask"), "Factors that differ between variants.")
    init_seed: int = setting(0, "LoRA init seed when init_seed is not varied.")
    sampling_seed: int = setting(0, "Generation/trainer seed when sampling_seed is not varied.")
    rank_choices: tuple[int, ...] = setting((8, 16, 32), "Ranks drawn from when rank is varied.")
    lora_init_choices: tuple[str, ...] = setting(("default", "gaussian"), "Inits drawn from "
                                                 "when lora_init is varied.")
    # --- LoRA ---------------------------------------------------------------------------
    # vLLM serves ranks 1, 8, 16, 32, 64, ...; 32 is ample for RL updates.
    lora_rank: int = setting(32, "LoRA rank.")
    lora_alpha: float = setting(32.0, "LoRA alpha at lora_rank (scale alpha/r = 1).")
    alpha_rule: str = setting("fixed", "How alpha follows a varied rank: fixed, linear "
                              "(a~r), sqrt (a~sqrt r).", choices=ALPHA_RULES)
    target_modules: tuple[str, ...] = setting(DEFAULT_TARGETS, "Modules LoRA adapts.")
    # Dropout would add randomness the plan does not record.
    lora_dropout: float = setting(0.0, "LoRA dropout.")
    # B = 0, so every variant starts at the base model.
    lora_init: str = setting("default", "PEFT init.", choices=LORA_INITS)
    # --- GRPO (TRL GRPOTrainer) ---------------------------------------------------------
    # LoRA RL wants ~10x the full fine-tuning rate.
    learning_rate: float = setting(1e-5, "Optimiser learning rate.")
    steps: int = setting(100, "GRPO steps per variant.")
    batch_size: int = setting(8, "Prompts per optimiser step (each gets num_generations "
                              "completions).")
    grad_accum: int = setting(1, "Multiplies the prompts per optimiser step (batch_size x "
                              "grad_accum).")
    num_generations: int = setting(8, "GRPO group size (the group-relative advantage).")
    max_completion_length: int = setting(2048, "Longest completion; AIME solutions are "
                                         "long, lower it for small models.")
    temperature: float = setting(1.0, "Sampling temperature: on-policy at the model's own "
                                 "distribution.")
    top_p: float = setting(1.0, "Nucleus sampling mass.")
    # TRL's default: recent GRPO recipes drop the KL term.
    beta: float = setting(0.0, "KL weight to the base.")
    loss_type: str = setting("dapo", "TRL's loss normalisation (its default: token level).")
    format_reward: float = setting(0.0, "Weight of a reward for a \\boxed{} in the "
                                   "completion.")
    # The answering stage's prompt, so train = test.
    prompt_template: str = setting(DEFAULT_TEMPLATE, "The prompt; must contain {problem}.")
    system_prompt: str | None = setting(None, "A system turn before every prompt.")
    # Long completions on large models need it; off for tiny ones, where it only slows.
    gradient_checkpointing: bool = setting(True, "Recompute activations in the backward "
                                           "pass.")
    # --- GPU budget: None is computed from the base's config.json (ensemble.core.sizing)
    # and the value written to variants/train.json.  It only moves work between devices
    # and micro-batches (the losses it allows normalise over the whole generation batch),
    # so these keys are run-only. ------------------------------------------------------
    # With TRL's colocated vLLM engine on GPU 0 when the weights do not fit twice on one
    # GPU, the training model over the others (a device map).
    gpus_per_variant: int | None = setting(None, "GPUs one variant trains on [default: from "
                                           "the model's size].", run_only=True)
    # The generation batch (batch_size x grad_accum x num_generations) is split into
    # micro-batches (TRL's steps_per_generation), so memory is set by the micro-batch; TRL's
    # dapo/grpo/dr_grpo losses normalise over the whole generation batch, so the update
    # does not depend on it (tested).
    micro_batch: int | None = setting(None, "Sequences per forward/backward pass [default: "
                                      "from the model's size; on CPU the whole generation "
                                      "batch].", run_only=True)
    vllm_memory_share: float | None = setting(None, "The colocated engine's "
                                              "gpu_memory_utilization.", run_only=True)
    vllm_max_model_len: int | None = setting(None, "The colocated engine's context "
                                             "[default: longest pool prompt + "
                                             "max_completion_length].", run_only=True)
    gpu_memory_gb: float | None = setting(None, "One GPU's memory [default: the visible "
                                          "GPU's, else 80].", run_only=True)
    # --- where it runs ------------------------------------------------------------------
    # "trl": one GRPOTrainer per variant (the reference); "population": the variants of a
    # chunk trained together on one copy of the base (train_variants.population).  Named in
    # the recipe: the two sample from different random streams, so their variants differ.
    trainer: str = setting("trl", "trl: one TRL GRPOTrainer per variant; population: the "
                           "variants of a chunk trained together on one copy of the base.",
                           choices=TRAINERS)
    # Chunking only decides which variants share a pass; each samples from its own stream.
    population_size: int | None = setting(None, "Variants trained together by the "
                                          "population trainer [default: all that fit in "
                                          "half the free memory].", run_only=True)
    launcher: str = setting("local", "local: this machine; ray: one worker per variant slot.",
                            choices=LAUNCHERS, run_only=True)
    workers: int = setting(1, "Local worker processes, each with --gpus-per-variant GPUs "
                           "(population trainer: one); Ray actors (1: as many as the cluster "
                           "holds).", run_only=True)
    device: str = setting("auto", "auto: cuda when available, else cpu.", choices=DEVICES)
    dtype: str = setting("auto", "auto: bfloat16 on cuda, float32 on cpu.", choices=DTYPES)
    use_vllm: bool | None = setting(None, "TRL's vLLM generation [default: only with CUDA "
                                    "and vllm installed].")
    # On a shared machine use 1: OpenMP threads that spin while another process holds the
    # core made GRPO steps of the tiny test model 30-50x slower here (2 threads) than one.
    cpu_threads: int | None = setting(None, "Torch threads per training process on CPU "
                                      "[default: cores / workers].", run_only=True)
    cpus_per_variant: float = setting(1.0, "Ray actor request on CPU (on GPUs each asks "
                                      "gpus_per_variant).", run_only=True)
    ray_address: str | None = setting(None, "Ray cluster [default: RAY_ADDRESS or a new "
                                      "local one].", run_only=True)

    def __post_init__(self):
        self.out = Path(self.out)
        for name in ("vary", "rank_choices", "lora_init_choices", "target_modules"):
            v = getattr(self, name)
            setattr(self, name, (v,) if isinstance(v, (str, int)) else tuple(v))
        super().__post_init__()
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
        self._check_recipe()
        self._check_run()

    def _check_recipe(self) -> None:
        """The population's sizes, the LoRA and GRPO settings, the prompt and the seeds."""
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
        check_template(self.prompt_template)
        for name in ("seed", "init_seed", "sampling_seed"):
            try:
                check_seed(getattr(self, name))
            except ValueError:
                raise ValueError(f"{name}={getattr(self, name)} must be 0 or more") from None

    def _check_run(self) -> None:
        """Where and how the work runs: threads, chunks, the GPU budget, micro-batches."""
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ValueError(f"cpu_threads={self.cpu_threads} must be at least 1")
        if self.population_size is not None and self.population_size < 1:
            raise ValueError(f"population_size={self.population_size} must be at least 1 (variants "
                             "trained together); leave it out for as many as fit in memory")
        if self.trainer == "population" and self.launcher != "local":
            # Checked here, before a Ray session is started for nothing.
            raise ValueError(f"launcher={self.launcher!r} is not covered by the population "
                             "trainer, which trains its chunks in local processes; use launcher "
                             "local (--workers N for N processes), or --trainer trl")
        if self.cpus_per_variant <= 0:
            raise ValueError(f"cpus_per_variant={self.cpus_per_variant} must be positive")
        for name in ("gpus_per_variant", "micro_batch", "vllm_max_model_len"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name}={v} must be at least 1; leave it out to compute it "
                                 "from the model's size")
        if self.vllm_memory_share is not None and not 0 < self.vllm_memory_share < 1:
            raise ValueError(f"vllm_memory_share={self.vllm_memory_share} must lie in (0, 1): "
                             "the share of the engine's GPU vLLM may use")
        if self.gpu_memory_gb is not None and self.gpu_memory_gb <= 0:
            raise ValueError(f"gpu_memory_gb={self.gpu_memory_gb} must be positive")
        group = self.generation_batch
        if self.micro_batch is not None and group % self.micro_batch:
            raise ValueError(f"micro_batch={self.micro_batch} must divide the {group} sequences "
                             "of a generation batch (batch_size x grad_accum x num_generations)")
        if (self.micro_batch is not None and self.micro_batch < group
                and self.loss_type not in SPLIT_EXACT_LOSSES):
            raise ValueError(f"micro_batch={self.micro_batch} with loss_type={self.loss_type!r}: "
                             "TRL normalises that loss per micro-batch, so splitting would change "
                             f"the update; use one of {', '.join(SPLIT_EXACT_LOSSES)} or leave "
                             "micro_batch out")

    @property
    def generation_batch(self) -> int:
        """Sequences generated per optimiser step: batch_size x grad_accum x num_generations."""
        return self.batch_size * self.grad_accum * self.num_generations

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

    # Keys that say only which part of the population this invocation trains, or where
    # and how fast (the run-only keys): they never change a variant, so the recipe hash
    # leaves them out.
    @classmethod
    def recipe_excludes(cls) -> frozenset[str]:
        return cls.run_only_keys() | {"out", "variants", "first"}

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
