"""ensemble.core.sizing: model sizes from config.json, and the GPU budgets built on them.

The counts are checked against what transformers and PEFT actually build for a tiny
random Qwen3-MoE (the reference experiment's architecture); the budgets against the
reference model's published config.
"""

from __future__ import annotations

import pytest

from ensemble.core.sizing import (ATTENTION, GB, MLP, answer_budget, lora_params, model_size,
                             read_model_size, train_budget)

QWEN3_30B_A3B = {"vocab_size": 151936, "hidden_size": 2048, "num_hidden_layers": 48,
                 "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
                 "intermediate_size": 6144, "num_experts": 128, "num_experts_per_tok": 8,
                 "moe_intermediate_size": 768, "max_position_embeddings": 40960}
REF = model_size(QWEN3_30B_A3B)


@pytest.fixture(scope="module")
def tiny_moe(tmp_path_factory):
    from ensemble.testing import build_tiny_moe

    return build_tiny_moe(tmp_path_factory.mktemp("moe") / "base")


def test_the_architecture_count_is_the_checkpoint_count(tiny_moe):
    import json

    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_moe), dtype=torch.float32)
    real = sum(p.numel() for p in model.parameters())
    size = model_size(json.loads((tiny_moe / "config.json").read_text()))
    assert size.params == real
    assert size.is_moe and size.experts == 4 and size.moe_layers == 2
    assert read_model_size(str(tiny_moe)).params == real  # from the safetensors headers


@pytest.mark.parametrize("targets", [ATTENTION, ATTENTION + MLP])
def test_lora_count_is_what_peft_builds(tiny_moe, targets):
    """Expert targets become PEFT 0.21's fused 3-D LoRA (gate_up_proj at rank 2r)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_moe), dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=list(targets)))
    trainable = sum(p.numel() for p in peft.parameters() if p.requires_grad)
    assert lora_params(read_model_size(str(tiny_moe)), targets, 8) == trainable


def test_reference_training_budget_gives_the_engine_a_gpu_of_its_own():
    b = train_budget(REF, dtype="bfloat16", group=256, seq_tokens=4608, targets=ATTENTION,
                     rank=32, vllm=True, gpu_bytes=80 * GB)
    # 57 GiB of weights twice do not fit one 80 GB card: engine on GPU 0, training on 1-3
    assert (b.gpus_per_variant, b.engine_gpu, b.train_gpus) == (4, 0, [1, 2, 3])
    assert b.micro_batch == 2 and b.vllm_memory_share == 0.85
    assert b.weight_cap * 3 >= REF.weight_bytes("bfloat16")
    # a measured tighter setting is accepted, an impossible one refused with the fix
    tight = train_budget(REF, dtype="bfloat16", group=256, seq_tokens=4608, targets=ATTENTION,
                         rank=32, vllm=True, gpu_bytes=80 * GB, gpus_per_variant=2, micro_batch=1)
    assert tight.train_gpus == [1]
    with pytest.raises(ValueError, match=r"gpus_per_variant=1: training \(~.*\) and the colocated "
                       r"vLLM engine \(~.*\) do not fit one 80.0 GiB GPU; set gpus_per_variant = 4"):
        train_budget(REF, dtype="bfloat16", group=256, seq_tokens=4608, targets=ATTENTION,
                     rank=32, vllm=True, gpu_bytes=80 * GB, gpus_per_variant=1)
    with pytest.raises(ValueError, match="micro_batch=3 must divide the 256 sequences"):
        train_budget(REF, dtype="bfloat16", group=256, seq_tokens=4608, targets=ATTENTION,
                     rank=32, vllm=True, gpu_bytes=80 * GB, micro_batch=3)


def test_small_models_train_on_one_gpu_with_the_whole_batch():
    small = model_size({**QWEN3_30B_A3B, "num_hidden_layers": 2, "num_experts": 4,
                        "vocab_size": 1000})
    b = train_budget(small, dtype="bfloat16", group=16, seq_tokens=1024, targets=ATTENTION,
                     rank=8, vllm=True, gpu_bytes=80 * GB)
    assert (b.gpus_per_variant, b.micro_batch, b.train_gpus) == (1, 16, [0])
    assert 0.5 < b.vllm_memory_share < 0.9  # what training leaves of the card


def test_an_engine_that_cannot_fit_one_gpu_is_refused_for_trl_colocate():
    big = model_size({**QWEN3_30B_A3B, "num_hidden_layers": 96})  # ~60B, 114 GiB
    with pytest.raises(ValueError, match=r"TRL's colocated vLLM engine needs ~.* on one GPU .* "
                       r"set use_vllm = false"):
        train_budget(big, dtype="bfloat16", group=256, seq_tokens=4608, targets=ATTENTION,
                     rank=32, vllm=True, gpu_bytes=80 * GB)
    b = train_budget(big, dtype="bfloat16", group=256, seq_tokens=4608, targets=ATTENTION,
                     rank=32, vllm=False, gpu_bytes=80 * GB)
    assert b.engine_gpu is None and b.train_gpus == list(range(b.gpus_per_variant))


def test_answering_budget_counts_the_expert_lora_slots():
    attn = answer_budget(REF, dtype="bfloat16", max_loras=8, max_lora_rank=32, targets=ATTENTION,
                         max_model_len=16896, gpu_bytes=80 * GB, utilization=0.9)
    every = answer_budget(REF, dtype="bfloat16", max_loras=8, max_lora_rank=32, targets=None,
                          max_model_len=16896, gpu_bytes=80 * GB, utilization=0.9)
    assert attn.tensor_parallel_size == every.tensor_parallel_size == 2
    assert every.estimate["lora_slots_gib"] > 50 * attn.estimate["lora_slots_gib"]
    assert every.kv_sequences < attn.kv_sequences
    with pytest.raises(ValueError, match=r"tensor_parallel_size=1, weights 56.87 GiB \+ LoRA "
                       r"slots 25.15 GiB \(max_loras=8 x rank 32 on every MoE expert\)"):
        answer_budget(REF, dtype="bfloat16", max_loras=8, max_lora_rank=32, targets=None,
                      max_model_len=16896, gpu_bytes=80 * GB, utilization=0.9,
                      tensor_parallel_size=1)


def test_the_reference_config_cost_comment_quotes_the_computed_budget():
    """configs/paper-aime24.toml's cost comment: the GPU numbers it quotes are these."""
    from pathlib import Path

    from ensemble.pipeline import ExperimentConfig

    path = Path(__file__).resolve().parents[1] / "configs" / "paper-aime24.toml"
    cfg = ExperimentConfig.from_toml(path)
    train, answer = cfg.train_config("Qwen/Qwen3-30B-A3B"), cfg.answer_config("x")
    b = train_budget(REF, dtype="bfloat16", group=train.generation_batch,
                     seq_tokens=train.max_completion_length + 512, targets=train.target_modules,
                     rank=train.lora_rank, vllm=True, gpu_bytes=80 * GB)
    tight = train_budget(REF, dtype="bfloat16", group=train.generation_batch,
                         seq_tokens=train.max_completion_length + 512,
                         targets=train.target_modules, rank=train.lora_rank, vllm=True,
                         gpu_bytes=80 * GB, gpus_per_variant=2, micro_batch=1)
    a = answer_budget(REF, dtype="bfloat16", max_loras=answer.max_loras,
                      max_lora_rank=answer.max_lora_rank, targets=train.target_modules,
                      max_model_len=answer.max_tokens + 512, gpu_bytes=80 * GB,
                      utilization=answer.gpu_memory_utilization)
    text = path.read_text()
    assert (b.gpus_per_variant, b.micro_batch, a.tensor_parallel_size) == (4, 2, 2)
    assert "gpus_per_variant = 4, micro_batch = 2" in text
    assert f"activations of a\n#    {b.micro_batch}-sequence" in text
    assert f"({round(tight.estimate['train_need_gib'])} of 72 GiB" in text
    assert f"tensor_parallel_size = {a.tensor_parallel_size} (" in text
    assert f"KV for ~{a.kv_sequences} full-length sequences" in text
    assert "ESTIMATE until measured" in text
