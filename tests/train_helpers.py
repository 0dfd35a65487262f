"""Tiny models and pools for training tests and benchmarks (built offline, seconds).

A random-weight model almost never writes a correct answer, so every GRPO group would get
the same reward, zero advantage and zero gradient: the adapter would never move.  The
"digit model" below keeps a random body but rewrites the output layer so that the first
token it emits is a digit, mostly ``0`` (~55%) or ``2`` (~25%).  On a pool whose answers
are all ``0`` (``What is a - a?``), a group of completions then mixes right and wrong
answers, which is exactly the signal GRPO needs, and the reward goes through the real
grader (``ensemble.core.grading.grade``).
"""

from __future__ import annotations

import json
from pathlib import Path

ANCHOR = 2.0  # constant value of residual dimension 0 (the "digit" direction)
DIGIT_LOGIT = 8.0  # digits' typical lead over every other token
ZERO_BONUS = 3.5  # extra logit for "0": about 35% of first tokens are 0


def build_digit_model(out_dir, seed: int = 0, **sizes) -> Path:
    """``ensemble.testing.build_tiny_model`` whose next token is a digit, ``0`` ~35% of the time.

    Residual dimension 0 is made a constant (every embedding has ``ANCHOR`` there and no
    layer writes to it), so after the final norm it is a positive number on every position;
    the digits' output rows read it, which puts them ~8 logits above the rest whatever the
    prompt.  The random rest of each row still makes the choice among digits depend on the
    prompt, so LoRA updates can move it.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ensemble.testing import build_tiny_model

    out_dir = Path(out_dir)
    build_tiny_model(out_dir, seed=seed, **sizes)
    tok = AutoTokenizer.from_pretrained(str(out_dir))
    model = AutoModelForCausalLM.from_pretrained(str(out_dir), dtype=torch.float32)
    digits = [tok.convert_tokens_to_ids(c) for c in "0123456789"]
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = ANCHOR
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0, :] = 0.0
            layer.mlp.down_proj.weight[0, :] = 0.0
        # Dimension 0 after the final norm, measured: the rest of the residual stream
        # sets the norm, so it is calibrated on a prompt rather than derived.
        ids = tok("What is 12 - 12? Please reason step by step.", return_tensors="pt")
        h0 = float(model(**ids, output_hidden_states=True).hidden_states[-1][0, :, 0].mean())
        w = model.lm_head.weight
        w[:, 0] = 0.0
        w[digits, 0] = DIGIT_LOGIT / h0
        w[digits[0], 0] += ZERO_BONUS / h0
    model.save_pretrained(str(out_dir), safe_serialization=True)
    return out_dir


def write_zero_pool(path, n: int = 24) -> Path:
    """A jsonl pool of ``n`` problems ``What is a - a?`` (answer 0), ids ``z000``...."""
    path = Path(path)
    with path.open("w") as fh:
        for i in range(n):
            a = 3 + 7 * i
            fh.write(json.dumps({"id": f"z{i:03d}", "problem": f"What is {a} - {a}?",
                                 "answer": "0"}) + "\n")
    return path


def tiny_train_config(base, pool, out, **kw) -> dict:
    """Settings for a few-second CPU variant of the digit model (a config dict)."""
    return {"base": str(base), "pool": str(pool), "out": str(out), "variants": 2,
            "steps": 2, "batch_size": 2, "num_generations": 4, "max_completion_length": 1,
            "lora_rank": 8, "lora_alpha": 16.0, "learning_rate": 5e-2, "mask_fraction": 0.25,
            "gradient_checkpointing": False, "device": "cpu", **kw}


def cfg_for(base, pool, out, **kw):
    """``tiny_train_config`` as a checked ``TrainConfig``, on one CPU thread."""
    from train_variants.config import TrainConfig

    return TrainConfig.from_dict(tiny_train_config(base, pool, out, cpu_threads=1, **kw))
