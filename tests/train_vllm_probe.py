"""Greedy token ids of trained adapters under vLLM, run in a subprocess by test_train.py.

    python tests/train_vllm_probe.py BASE VARIANTS_DIR PROMPTS.json OUT.json

PROMPTS.json is a list of token-id lists; OUT.json maps ``base`` and each adapter id to
the greedy completions (token ids) of every prompt.  vLLM on CPU wants float32 (to match
transformers), no chunked prefill, and the ``__main__`` guard.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(base: str, variants: str, prompts_file: str, out: str) -> None:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest

    from eval.adapters import discover

    adapters, skipped = discover(Path(variants), base, 8)
    prompts = [TokensPrompt(prompt_token_ids=p) for p in json.loads(Path(prompts_file).read_text())]
    llm = LLM(model=base, dtype="float32", enable_lora=True, max_loras=2, max_lora_rank=8,
              enable_chunked_prefill=False, max_model_len=512, seed=0)
    params = SamplingParams(temperature=0.0, max_tokens=4)
    result = {"skipped": skipped}
    outs = llm.generate(prompts, params, use_tqdm=False)
    result["base"] = [list(o.outputs[0].token_ids) for o in outs]
    for i, a in enumerate(adapters):
        req = LoRARequest(a.model_id, i + 1, str(a.path))
        outs = llm.generate(prompts, params, lora_request=req, use_tqdm=False)
        result[a.model_id] = [list(o.outputs[0].token_ids) for o in outs]
    Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    for k, v in {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
                 "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}.items():
        os.environ.setdefault(k, v)
    main(*sys.argv[1:5])
