"""Freeing a vLLM engine and the accelerator memory it held, for both stages.

vLLM 0.31/0.32 have no ``LLM.shutdown``: the engine core's ``shutdown`` stops its workers
(in-process or not).  The training stage also destroys the parallel groups TRL's
colocated engine made (:func:`train_variants.engine.shutdown_engine`); the answering
stage closes its engine after each shard (:mod:`eval.backends`).  vLLM and torch are
used only through the objects given, or imported inside the functions.
"""

from __future__ import annotations

import gc


def shutdown_llm(llm) -> None:
    """Shut down the engine core of a ``vllm.LLM`` (a no-op for anything without one).
    The caller drops its own references to ``llm`` afterwards, then :func:`free_memory`."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()


def free_memory() -> None:
    """Collect what was dropped and return cached CUDA blocks, so the next engine (the
    next variant's, the next shard's on this GPU) finds the memory free."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
