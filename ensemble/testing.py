"""Test fixtures: a tiny random-weight causal LM, its tokenizer and LoRA adapters, built offline.

Tests of the answering stage need a real checkpoint that both transformers + PEFT and
vLLM (CPU) load without a model hub.  Everything here is built from scratch in a few
seconds and is deterministic given the seed.

Example
-------
>>> build_tiny_model("tiny/base")                            # doctest: +SKIP
>>> make_lora_adapters("tiny/base", "tiny/variants", n=4)    # doctest: +SKIP

Serve it with vLLM in float32 (``dtype="auto"`` turns a float32 checkpoint into
bfloat16 on CPU, which no longer matches transformers token for token).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ensemble.core.models import CPU_HEAD_DIMS
from ensemble.core.prompts import BOS, CHAT_TEMPLATE, EOS, IM_START, PAD

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def build_tokenizer(out_dir, corpus: list[str] | None = None, vocab_size: int = 512):
    """Build and save a byte-level BPE tokenizer with a ChatML chat template.

    Parameters
    ----------
    out_dir : str or Path
        Directory to ``save_pretrained`` into (created if missing).
    corpus : list of str, optional
        Texts to learn BPE merges from.  Without one the tokenizer is purely byte-level
        (no merges, 256 byte tokens + 4 special tokens): still lossless for any text.
    vocab_size : int
        Target vocabulary size when learning merges from ``corpus``.

    Returns
    -------
    transformers.PreTrainedTokenizerFast
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    # Byte-level: every string (digits, LaTeX \ { } ^ _, newlines, unicode) round-trips
    # exactly, so prompts never hit an unknown token and decode(encode(x)) == x.
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    specials = [BOS, EOS, PAD, IM_START]
    if corpus:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                      initial_alphabet=alphabet, show_progress=False)
        tok.train_from_iterator(corpus, trainer)
    else:
        # Sorted, so the ids do not depend on set iteration order.
        vocab = {t: i for i, t in enumerate(specials + sorted(alphabet))}
        tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.add_special_tokens(specials)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS,
                                   pad_token=PAD, additional_special_tokens=[IM_START],
                                   padding_side="left")  # left: batched generation
    fast.chat_template = CHAT_TEMPLATE
    # No BOS added by encode(): the chat template writes it, and vLLM and HF must see
    # the same ids whether a prompt is rendered by the template or encoded directly.
    fast.save_pretrained(str(out_dir))
    return fast


def _generator(*key):
    """A ``torch.Generator`` seeded from ``key``, stable across processes and platforms."""
    import torch

    digest = hashlib.sha256("|".join(map(str, key)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def build_tiny_model(out_dir, *, hidden: int = 64, layers: int = 2, heads: int = 4,
                     kv_heads: int = 2, head_dim: int = 32, intermediate: int = 128,
                     max_position: int = 512, seed: int = 0, init_std: float = 0.1,
                     arch: str = "llama", corpus: list[str] | None = None,
                     experts: int = 4, experts_per_token: int = 2):
    """Build and save a random-init causal LM (float32 safetensors) with its tokenizer.

    Parameters
    ----------
    out_dir : str or Path
        Model directory: ``config.json``, ``model.safetensors``, ``generation_config.json``
        and the tokenizer files, loadable offline by transformers and vLLM.
    hidden, layers, heads, kv_heads, intermediate, max_position : int
        Architecture sizes.
    head_dim : int
        Attention head size, one of :data:`CPU_HEAD_DIMS` (vLLM's CPU attention has no
        smaller one), so it is set explicitly rather than derived as hidden / heads.
    seed : int
        Weights are a pure function of (seed, parameter name, shape).
    init_std : float
        Std of the normal init.  Larger than the usual 0.02 so that logits are spread
        out and greedy decoding has few near-ties (which make backends disagree).
    arch : {"llama", "qwen2", "qwen3_moe"}
        ``llama`` and ``qwen2`` serve with LoRA on vLLM CPU.  ``qwen2`` (biased q/k/v)
        has no head_dim setting, so it needs hidden / heads == head_dim (e.g.
        ``heads=2, kv_heads=1``).  ``qwen3_moe`` is the layout of the reference
        experiment's Qwen3-30B-A3B (every MLP a routed mixture of ``experts`` experts of
        size ``intermediate``, ``experts_per_token`` active; transformers 5 stores them as
        fused 3-D ``gate_up_proj`` / ``down_proj`` parameters).
    corpus : list of str, optional
        Passed to :func:`build_tokenizer`.

    Returns
    -------
    Path
        ``out_dir``.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    if head_dim not in CPU_HEAD_DIMS:
        raise ValueError(f"head_dim={head_dim}: vLLM on CPU supports only {CPU_HEAD_DIMS}")
    if arch in ("qwen2", "qwen3_moe") and hidden != heads * head_dim:
        raise ValueError(f"{arch} derives head_dim = hidden / heads = {hidden / heads:g}, "
                         f"not {head_dim}; choose heads = {hidden // head_dim}")
    out_dir = Path(out_dir)
    tok = build_tokenizer(out_dir, corpus)
    ids = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id,
               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    sizes = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                 num_key_value_heads=kv_heads, intermediate_size=intermediate,
                 max_position_embeddings=max_position, initializer_range=init_std,
                 tie_word_embeddings=False, **ids)
    if arch == "llama":
        config, cls = LlamaConfig(head_dim=head_dim, **sizes), LlamaForCausalLM
    elif arch == "qwen2":
        from transformers import Qwen2Config, Qwen2ForCausalLM
        config, cls = Qwen2Config(**sizes), Qwen2ForCausalLM
    elif arch == "qwen3_moe":
        from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM
        config = Qwen3MoeConfig(**{**sizes, "intermediate_size": intermediate},
                                moe_intermediate_size=intermediate, num_experts=experts,
                                num_experts_per_tok=experts_per_token, norm_topk_prob=True)
        cls = Qwen3MoeForCausalLM
    else:
        raise ValueError(f"arch={arch!r} is not one of llama, qwen2, qwen3_moe")
    model = cls(config)
    # Our own init, not transformers': deterministic per parameter whatever the
    # library's init order, and the same in every transformers version.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            else:
                p.copy_(torch.normal(0.0, init_std, p.shape, generator=_generator(seed, name)))
    model.generation_config = GenerationConfig(**{k: v for k, v in ids.items() if k != "vocab_size"})
    model.to(torch.float32).save_pretrained(str(out_dir), safe_serialization=True)
    return out_dir


def make_lora_adapters(base_dir, out_root, n: int, *, rank: int = 8,
                       target_modules=LORA_TARGETS, seed: int = 0, scale: float = 0.1,
                       names: list[str] | None = None) -> list[Path]:
    """Save ``n`` PEFT LoRA adapters for ``base_dir``, each with its own random weights.

    PEFT initialises ``lora_B`` to zero (an adapter that changes nothing), so both A and
    B are overwritten with seeded normal values: with ``lora_alpha = rank`` the update
    B @ A has entries of std about ``scale``, the same order as the base weights
    (``init_std``), so each adapter visibly changes greedy outputs.

    Parameters
    ----------
    base_dir : str or Path
        Base model directory; recorded as ``base_model_name_or_path``.
    out_root : str or Path
        Adapters go to ``out_root/<name>`` (``adapter_config.json`` +
        ``adapter_model.safetensors``).
    n : int
        Number of adapters.
    rank : int
        LoRA rank (vLLM needs ``max_lora_rank`` >= rank; allowed values 1, 8, 16, 32, ...).
    target_modules : sequence of str
        Module names to adapt.
    seed : int
        Adapter ``i`` is a pure function of (seed, i, parameter name).
    scale : float
        Approximate std of the entries of B @ A.
    names : list of str, optional
        Directory names; default ``v000``, ``v001``, ...

    Returns
    -------
    list of Path
        The adapter directories, in order.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    names = names or [f"v{i:03d}" for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} names for {n} adapters")
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    base.name_or_path = str(base_dir)  # what PEFT writes as base_model_name_or_path
    cfg = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, bias="none",
                     target_modules=list(target_modules), task_type="CAUSAL_LM")
    model = get_peft_model(base, cfg)
    # entries of B @ A sum `rank` products a*b: std sqrt(rank) * std_a * std_b = scale.
    std = (scale / rank ** 0.5) ** 0.5
    paths = []
    for i, name in enumerate(names):
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if "lora_A" in pname or "lora_B" in pname:
                    p.copy_(torch.normal(0.0, std, p.shape, generator=_generator(seed, i, pname)))
        path = Path(out_root) / name
        model.save_pretrained(str(path))
        paths.append(path)
    return paths


def build_tiny_moe(out_dir, seed: int = 0, **sizes):
    """A tiny random Qwen3-MoE (the reference experiment's architecture): 2 layers of 4
    experts, 2 active, with the head size vLLM's CPU attention runs.  See
    :func:`build_tiny_model`."""
    return build_tiny_model(out_dir, **{"arch": "qwen3_moe", "hidden": 64, "heads": 2,
                                        "kv_heads": 1, "head_dim": 32, "intermediate": 32,
                                        "seed": seed, **sizes})


def build_smoke_moe(out_dir):
    """The base of ``configs/gpu-smoke.toml`` (``base = "tiny-moe"``): a tiny random
    Qwen3-MoE with head size 64, which every attention backend runs (CUDA flash
    attention builds and vLLM's CPU attention), fused experts that vLLM's MoE kernels
    take, and a context of 1024 tokens."""
    return build_tiny_moe(out_dir, hidden=128, heads=2, kv_heads=1, head_dim=64,
                          intermediate=64, max_position=1024)
