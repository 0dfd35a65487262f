"""The GPU budget of the training stage: computed once from the model, applied per worker.

``run_train`` fills the budget keys the user left out (``gpus_per_variant``,
``micro_batch``, ``vllm_memory_share``, ``vllm_max_model_len``, ``gpu_memory_gb``) from
the base's ``config.json`` and the pool's longest prompt (:mod:`ensemble.core.sizing`), before
any model is loaded, and writes them to ``variants/train.json``.  Each worker then lays one
variant out on its ``gpus_per_variant`` visible GPUs from those resolved keys
(:func:`budget_for`): TRL's colocated vLLM engine on GPU 0, the training model loaded with
a device map over the GPUs the budget gives it.
"""

from __future__ import annotations

import dataclasses

from ensemble.core.sizing import (DEFAULT_GPU_GB, GB, TrainBudget, read_model_size,
                                  train_budget, visible_gpu_gb)
from train_variants.config import TrainConfig

_SIZES: dict = {}


def _size(base: str):
    if base not in _SIZES:
        _SIZES[base] = read_model_size(base)
    return _SIZES[base]


# --- devices ---------------------------------------------------------------------------

def resolve_device(cfg: TrainConfig) -> str:
    """``cpu`` or ``cuda``; asking for cuda where there is none is an error."""
    import torch

    has_cuda = torch.cuda.is_available()
    if cfg.device == "cuda" and not has_cuda:
        raise ValueError("device=cuda but no CUDA GPU is visible to torch (torch "
                         f"{torch.__version__}); use --device cpu, or install a CUDA build of "
                         "torch on a GPU machine")
    if cfg.device == "auto":
        return "cuda" if has_cuda else "cpu"
    return cfg.device


def resolve_dtype(cfg: TrainConfig, device: str) -> str:
    # bfloat16 halves memory on GPUs; on CPU float32 is both faster and what vLLM-CPU
    # serves adapters trained here against.
    if cfg.dtype != "auto":
        return cfg.dtype
    return "bfloat16" if device == "cuda" else "float32"


def longest_prompt_tokens(plan, cfg: TrainConfig, tokenizer, candidates: int = 32) -> int:
    """Tokens of the longest training prompt, rendered as the trainer renders it.

    Only the ``candidates`` longest prompts by characters are tokenized: token counts
    follow character counts closely enough that the longest is among them, and a pool of
    40k problems is not tokenized on the driver.
    """
    from ensemble.core.prompts import chat_prompt

    texts = sorted((cfg.prompt_template.format(problem=p.problem) for p in plan.pool),
                   key=len, reverse=True)[:candidates]
    chat = bool(getattr(tokenizer, "chat_template", None))
    lengths = [len(tokenizer(chat_prompt(tokenizer, t, cfg.system_prompt) if chat else t,
                             add_special_tokens=not chat)["input_ids"]) for t in texts]
    return max(lengths, default=0)


def resolve_budget(cfg: TrainConfig, plan, on_gpu: bool, vllm: bool) -> TrainConfig:
    """``cfg`` with the budget keys filled in; raises ValueError when they cannot fit.

    On CPU only ``micro_batch`` applies (default: the whole generation batch, no split);
    the GPU keys stay unset.
    """
    if not on_gpu:
        return dataclasses.replace(cfg, micro_batch=cfg.micro_batch or cfg.generation_batch)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(cfg.base)
    max_len = cfg.vllm_max_model_len or _round_up(
        longest_prompt_tokens(plan, cfg, tok) + cfg.max_completion_length, 256)
    gb = cfg.gpu_memory_gb or round(visible_gpu_gb() or DEFAULT_GPU_GB, 1)
    resolved = dataclasses.replace(cfg, vllm_max_model_len=max_len, gpu_memory_gb=gb,
                                   use_vllm=vllm)
    b = budget_for(resolved, vllm)
    return dataclasses.replace(resolved, gpus_per_variant=b.gpus_per_variant,
                               micro_batch=b.micro_batch, vllm_memory_share=b.vllm_memory_share)


def budget_for(cfg: TrainConfig, vllm: bool) -> TrainBudget:
    """The layout of one variant from a resolved config (:func:`resolve_budget`)."""
    dtype = resolve_dtype(cfg, "cuda")
    # Unresolved (a variant trained without run_train): a generous prompt allowance.
    seq = cfg.vllm_max_model_len or cfg.max_completion_length + 1024
    return train_budget(
        _size(cfg.base), dtype=dtype, group=cfg.generation_batch,
        seq_tokens=seq, targets=cfg.target_modules,
        rank=max((cfg.lora_rank, *cfg.rank_choices) if "rank" in cfg.vary else (cfg.lora_rank,)),
        vllm=vllm, gpu_bytes=(cfg.gpu_memory_gb or DEFAULT_GPU_GB) * GB,
        gpus_per_variant=cfg.gpus_per_variant, micro_batch=cfg.micro_batch,
        vllm_memory_share=cfg.vllm_memory_share)


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step
