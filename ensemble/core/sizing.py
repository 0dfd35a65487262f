"""How big a model is, and what that asks of GPUs: training and answering budgets.

Everything here is read from the base's ``config.json`` (no weights are loaded) and is
pure arithmetic, so the defaults of a GPU run are computed, checked and written into the
resolved config on any machine, before a model is loaded.  The numbers are estimates of
the dominant terms, not a profiler; each formula names its terms:

* weights: parameters x bytes per parameter (counted from the architecture, or exactly
  from the safetensors headers of a local checkpoint);
* LoRA: r x (in + out) per adapted matrix; on fused MoE experts (PEFT 0.21,
  ``target_parameters``) E x 2r x (hidden + 2 I) for ``gate_up_proj`` and
  E x r x (I + hidden) for ``down_proj``;
* training state per trainable parameter: float32 weight, gradient and two Adam moments
  (16 bytes);
* activations per sequence token with gradient checkpointing: one bfloat16 hidden state
  per layer kept, one layer recomputed at a time (~34 x hidden bytes, Korthikanti et al.
  2022, "Reducing Activation Recomputation in Large Transformer Models", table 2, without
  the attention scores that flash attention never stores), and the logits (bfloat16
  values and gradient, float32 log-softmax: 8 bytes x vocabulary);
* KV cache per token: 2 x layers x kv_heads x head_dim x bytes.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# What the defaults assume when no GPU is visible where they are computed (a CPU head
# node of a Ray cluster, say): an 80 GB H100/A100.  Set gpu_memory_gb for other cards.
DEFAULT_GPU_GB = 80.0
GB = 1024 ** 3
USABLE = 0.9  # share of a GPU the estimates fill: CUDA context, allocator fragmentation
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ModelSize:
    """The sizes of a decoder-only transformer that memory depends on."""

    params: int  # every parameter
    active_params: int  # used per token (MoE: the routed top-k experts only)
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    intermediate: int  # dense MLP width
    experts: int  # routed experts per MoE layer; 0 for a dense model
    experts_per_token: int
    moe_intermediate: int
    moe_layers: int  # layers whose MLP is a mixture of experts
    max_position: int

    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    def weight_bytes(self, dtype: str) -> int:
        return self.params * DTYPE_BYTES[dtype]

    def kv_bytes_per_token(self, dtype: str) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * DTYPE_BYTES[dtype]

    def to_dict(self) -> dict:
        return asdict(self)


def model_size(config: dict) -> ModelSize:
    """:class:`ModelSize` from a Hugging Face ``config.json`` (as a dict).

    Examples
    --------
    Qwen3-30B-A3B's published config: 30.5B parameters, 3.3B active (3.35B counting the
    routers and embeddings).

    >>> s = model_size({"vocab_size": 151936, "hidden_size": 2048, "num_hidden_layers": 48,
    ...                 "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
    ...                 "intermediate_size": 6144, "num_experts": 128, "num_experts_per_tok": 8,
    ...                 "moe_intermediate_size": 768, "tie_word_embeddings": False})
    >>> round(s.params / 1e9, 1), round(s.active_params / 1e9, 2)
    (30.5, 3.35)
    """
    c = config.get("text_config") or config
    h, n = int(c["hidden_size"]), int(c["num_hidden_layers"])
    heads = int(c["num_attention_heads"])
    kv = int(c.get("num_key_value_heads") or heads)
    d = int(c.get("head_dim") or h // heads)
    vocab = int(c["vocab_size"])
    inter = int(c.get("intermediate_size") or 0)
    experts = int(c.get("num_experts") or c.get("num_local_experts") or 0)
    top = int(c.get("num_experts_per_tok") or 0)
    moe_i = int(c.get("moe_intermediate_size") or inter)
    step = int(c.get("decoder_sparse_step") or 1)
    dense_only = set(c.get("mlp_only_layers") or [])
    moe_layers = sum(1 for i in range(n) if experts and i not in dense_only
                     and (i + 1) % step == 0) if experts else 0
    shared = int(c.get("shared_expert_intermediate_size") or 0)
    attn = h * heads * d + 2 * h * kv * d + heads * d * h + 2 * d + 2 * h  # + norms
    dense_mlp = 3 * h * inter
    expert = 3 * h * moe_i
    moe = experts * expert + h * experts + 3 * h * shared
    moe_active = top * expert + h * experts + 3 * h * shared
    embed = vocab * h * (1 if c.get("tie_word_embeddings") else 2) + h
    params = embed + n * attn + moe_layers * moe + (n - moe_layers) * dense_mlp
    active = embed + n * attn + moe_layers * moe_active + (n - moe_layers) * dense_mlp
    return ModelSize(params, active, n, h, heads, kv, d, vocab, inter, experts, top, moe_i,
                     moe_layers, int(c.get("max_position_embeddings") or 0))


def read_config(base: str) -> dict:
    """The ``config.json`` of a local checkpoint, or of a hub id (the file alone)."""
    p = Path(base)
    if p.is_dir():
        f = p / "config.json"
        if not f.is_file():
            raise ValueError(f"{base}: no config.json, so the model's size is unknown; give "
                             "a Hugging Face checkpoint directory")
        return json.loads(f.read_text())
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(base, "config.json")).read_text())
    except Exception as exc:  # noqa: BLE001 - offline, unknown id, no access
        raise ValueError(f"{base}: cannot read its config.json ({type(exc).__name__}: {exc}); "
                         "give a local checkpoint directory, or set gpus_per_variant, "
                         "micro_batch and tensor_parallel_size by hand") from None


def read_model_size(base: str) -> ModelSize:
    """:func:`model_size` of ``base``; a local checkpoint's exact parameter count from its
    safetensors headers replaces the architecture count."""
    size = model_size(read_config(base))
    exact = _counted_params(Path(base)) if Path(base).is_dir() else None
    if exact:
        scale = exact / size.params
        size = ModelSize(**{**size.to_dict(), "params": exact,
                            "active_params": round(size.active_params * scale)})
    return size


def _counted_params(path: Path) -> int | None:
    from ensemble.core.files import safetensors_header

    total = 0
    for f in sorted(path.glob("*.safetensors")):
        try:
            for t in safetensors_header(f).values():
                total += math.prod(int(x) for x in t["shape"])
        except (ValueError, OSError):
            return None
    return total or None


def lora_params(size: ModelSize, targets, rank: int) -> int:
    """Trainable parameters of a rank-``rank`` LoRA on ``targets`` (module names).

    MLP targets of a MoE layer become LoRA on the fused experts as PEFT 0.21 builds it
    (``gate_up_proj`` at rank 2r).

    Examples
    --------
    >>> s = model_size({"vocab_size": 151936, "hidden_size": 2048, "num_hidden_layers": 48,
    ...                 "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
    ...                 "intermediate_size": 6144, "num_experts": 128, "num_experts_per_tok": 8,
    ...                 "moe_intermediate_size": 768})
    >>> round(lora_params(s, ATTENTION, 32) / 1e6, 1)  # attention only: ~27M
    26.7
    >>> round(lora_params(s, ATTENTION + MLP, 32) / 1e9, 2)  # with the experts: ~2B
    1.99
    """
    h, q, kv, r = size.hidden, size.heads * size.head_dim, size.kv_heads * size.head_dim, rank
    t = set(targets)
    attn = sum(r * (a + b) for name, a, b in (("q_proj", h, q), ("k_proj", h, kv),
                                               ("v_proj", h, kv), ("o_proj", q, h))
               if name in t)
    mlp_t = t & set(MLP)
    dense = r * (h + size.intermediate) * len(mlp_t)
    e, i = size.experts, size.moe_intermediate
    moe = 0
    if mlp_t and size.is_moe:
        moe = e * 2 * r * (h + 2 * i) if t & {"gate_proj", "up_proj"} else 0
        moe += e * r * (i + h) if "down_proj" in t else 0
    return size.layers * attn + size.moe_layers * moe + (size.layers - size.moe_layers) * dense


def activation_bytes_per_token(size: ModelSize, dtype: str = "bfloat16") -> int:
    """Training activations per sequence token with gradient checkpointing (see module):
    the kept hidden states, one recomputed layer (its routed experts' MLP included) and
    the logits."""
    b = DTYPE_BYTES[dtype]
    layer = 34 * size.hidden * b // 2 + size.experts_per_token * 3 * size.moe_intermediate * b
    return size.layers * size.hidden * b + layer + 8 * size.vocab


def gib(n: float) -> str:
    return f"{n / GB:.1f} GiB"


def _pow2_at_least(n: int) -> int:
    """GPUs per task rounded so that 8-GPU nodes pack evenly: 1, 2, 4, 8, then whole nodes."""
    if n <= 8:
        return 1 << max(0, math.ceil(math.log2(max(n, 1))))
    return 8 * math.ceil(n / 8)


# Largest share of one GPU a training micro-batch's activations may take by default:
# the rest holds weights, optimizer state and the allocator's slack.
ACTIVATION_SHARE = 0.25
# What a colocated vLLM engine on a GPU of its own may use (gpu_memory_utilization):
# below vLLM's 0.9, as the training process's CUDA context and TRL's batch tensors share
# that GPU.
ENGINE_ALONE_SHARE = 0.85
OVERHEAD = 1 * GB  # CUDA context, cuBLAS workspace, allocator slack per GPU
# Defaults fill a training GPU to this share only; checks refuse beyond USABLE.  The
# activation terms leave out allocator fragmentation on 4k-token sequences, so a default
# keeps 20% slack, while a setting the user measured may go up to USABLE.
DEFAULT_FILL = 0.8


@dataclass
class TrainBudget:
    """Where one variant's training runs: what ``TrainConfig`` records after resolving."""

    gpus_per_variant: int
    micro_batch: int  # sequences per forward/backward pass
    vllm_memory_share: float | None  # the colocated engine's gpu_memory_utilization
    engine_gpu: int | None  # visible GPU index of the colocated engine (None: no vLLM)
    train_gpus: list[int]  # visible GPU indices holding the training model
    weight_cap: int  # bytes of weights device_map may put on each training GPU
    estimate: dict  # the terms, in GiB, for the resolved config and error messages


def default_micro_batch(size: ModelSize, group: int, seq_tokens: int, gpu_bytes: float,
                        dtype: str = "bfloat16") -> int:
    """Largest divisor of the generation group (prompts x generations) whose activations
    stay within :data:`ACTIVATION_SHARE` of one GPU; at least 1.

    >>> s = model_size({"vocab_size": 151936, "hidden_size": 2048, "num_hidden_layers": 48,
    ...                 "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
    ...                 "num_experts": 128, "num_experts_per_tok": 8, "moe_intermediate_size": 768})
    >>> default_micro_batch(s, 32 * 8, 4096 + 512, 80 * GB)  # ~7 GB per 4.6k-token sequence
    2
    """
    per_seq = activation_bytes_per_token(size, dtype) * seq_tokens
    fits = max(1, int(ACTIVATION_SHARE * gpu_bytes // max(per_seq, 1)))
    return max(d for d in range(1, group + 1) if group % d == 0 and d <= fits)


def train_budget(size: ModelSize, *, dtype: str, group: int, seq_tokens: int, targets,
                 rank: int, vllm: bool, gpu_bytes: float, gpus_per_variant: int | None = None,
                 micro_batch: int | None = None,
                 vllm_memory_share: float | None = None) -> TrainBudget:
    """The GPUs, micro-batch and engine share of one variant; raises when they cannot fit.

    Parameters
    ----------
    size : ModelSize
    dtype : str
        Training dtype of the base weights.
    group : int
        Sequences per generation batch (prompts per step x num_generations x grad_accum).
    seq_tokens : int
        Longest prompt plus ``max_completion_length``.
    targets, rank
        The LoRA (its training state is 16 bytes per parameter).
    vllm : bool
        TRL's colocated vLLM engine generates: it needs the weights once more, plus a KV
        cache.  With one GPU it shares it with training; with more, it has the first
        (``engine_gpu`` 0) and training spreads over the others by a device map.  TRL runs
        one colocated engine per training process, without tensor parallelism, so the
        engine's weights must fit one GPU.
    gpu_bytes : float
        Memory of one GPU.
    gpus_per_variant, micro_batch, vllm_memory_share
        Set by the user (checked) or None (computed here).
    """
    weights = size.weight_bytes(dtype)
    state = 16 * lora_params(size, targets, rank)
    m = micro_batch or default_micro_batch(size, group, seq_tokens, gpu_bytes, dtype)
    if group % m:
        raise ValueError(f"micro_batch={m} must divide the {group} sequences of a generation "
                         "batch (batch_size x num_generations x grad_accum)")
    act = m * seq_tokens * activation_bytes_per_token(size, dtype)
    train_need = weights + state + act + OVERHEAD
    kv_seq = seq_tokens * size.kv_bytes_per_token(dtype)
    engine_min = weights + kv_seq + OVERHEAD  # the weights and one full sequence's KV
    est = {"weights_gib": round(weights / GB, 2), "lora_state_gib": round(state / GB, 2),
           "activations_gib": round(act / GB, 2), "kv_per_sequence_gib": round(kv_seq / GB, 3),
           "gpu_gib": round(gpu_bytes / GB, 1)}
    usable, fill = USABLE * gpu_bytes, DEFAULT_FILL * gpu_bytes
    if not vllm:
        need = math.ceil(train_need / usable)
        g = gpus_per_variant or _pow2_at_least(math.ceil(train_need / fill))
        if g < need:
            raise ValueError(f"gpus_per_variant={g}: training needs ~{gib(train_need)} "
                             f"({_terms(est)}), {need} GPU(s) of {gib(gpu_bytes)}; raise "
                             f"gpus_per_variant to {need} or lower micro_batch")
        return TrainBudget(g, m, None, None, list(range(g)),
                           _cap(weights, g), est | {"train_need_gib": round(train_need / GB, 2)})
    together = train_need + engine_min
    alone_train = math.ceil(train_need / usable)
    suggest = _pow2_at_least(1 + math.ceil(train_need / fill))  # the engine's GPU + training
    if gpus_per_variant is None:
        g = 1 if together <= fill else suggest
    else:
        g = gpus_per_variant
    if engine_min > ENGINE_ALONE_SHARE * gpu_bytes:
        raise ValueError(
            f"TRL's colocated vLLM engine needs ~{gib(engine_min)} on one GPU (the weights, "
            f"{gib(weights)}, and one {seq_tokens}-token sequence's KV cache) but a GPU has "
            f"{gib(gpu_bytes)}: TRL runs it without tensor parallelism; set use_vllm = false "
            "(transformers generation over a device map), or use GPUs with more memory")
    if g == 1:
        if together > usable:
            raise ValueError(
                f"gpus_per_variant=1: training (~{gib(train_need)}: {_terms(est)}) and the "
                f"colocated vLLM engine (~{gib(engine_min)}) do not fit one "
                f"{gib(gpu_bytes)} GPU; set gpus_per_variant = {suggest} (the engine gets a "
                "GPU of its own), or "
                "lower micro_batch")
        # The engine gets what training leaves: its KV cache sets how many rollouts decode
        # at once.  vLLM refuses a share above the free memory at start-up, when the base is
        # already loaded, so the activations' room is left free too.
        share = vllm_memory_share or round((usable - train_need) / gpu_bytes, 3)
        return TrainBudget(1, m, share, 0, [0], _cap(weights, 1),
                           est | {"train_need_gib": round(train_need / GB, 2)})
    if g - 1 < alone_train:
        raise ValueError(f"gpus_per_variant={g}: the colocated engine takes one GPU and "
                         f"training needs ~{gib(train_need)} ({_terms(est)}), {alone_train} "
                         f"more GPU(s) of {gib(gpu_bytes)}; set gpus_per_variant = "
                         f"{suggest} or lower micro_batch")
    share = vllm_memory_share or ENGINE_ALONE_SHARE
    return TrainBudget(g, m, share, 0, list(range(1, g)), _cap(weights, g - 1),
                       est | {"train_need_gib": round(train_need / GB, 2)})


def _cap(weights: int, gpus: int) -> int:
    """Weights per training GPU for the device map: an even split plus 10% and 2 GiB of
    slack (accelerate places whole layers and keeps room for the largest), so that every
    GPU still has the room its share of the activations needs."""
    return int(weights / gpus * 1.1 + 2 * GB)


def _terms(est: dict) -> str:
    return (f"weights {est['weights_gib']} GiB, LoRA state {est['lora_state_gib']} GiB, "
            f"activations {est['activations_gib']} GiB")


# vLLM's LoRA layers keep max_loras slots of max_lora_rank A and B matrices for every
# module they wrap (vllm/lora/layers): per attention block the packed qkv_proj and o_proj,
# per dense MLP gate_up_proj and down_proj, and per MoE layer one slot per expert for the
# gate, up and down projections (A: r x hidden or r x I; B: I x r or hidden x r).
def lora_buffer_bytes(size: ModelSize, targets, max_loras: int, max_rank: int,
                      dtype: str) -> int:
    """Bytes vLLM reserves for LoRA slots on the modules it wraps (``targets``: PEFT
    names; None: every module vLLM supports, which on a MoE model includes the experts).
    """
    t = set(ATTENTION + MLP if targets is None else targets)
    h, q, kv = size.hidden, size.heads * size.head_dim, size.kv_heads * size.head_dim
    per = 0
    if t & {"q_proj", "k_proj", "v_proj"}:
        per += 3 * h + q + 2 * kv  # three A slices of the packed qkv, one stacked B
    if "o_proj" in t:
        per += q + h
    total = size.layers * per
    if t & set(MLP):
        dense = 2 * h + 2 * size.intermediate + size.intermediate + h
        moe = size.experts * (3 * h + 3 * size.moe_intermediate)
        total += size.moe_layers * moe + (size.layers - size.moe_layers) * dense
    return total * max_loras * max_rank * DTYPE_BYTES[dtype]


@dataclass
class AnswerBudget:
    """One answering engine: tensor parallelism and the memory it is expected to take."""

    tensor_parallel_size: int
    kv_sequences: int  # full-length sequences the KV cache holds at once, per engine
    estimate: dict  # per GPU, in GiB


# Decoding is bound by memory bandwidth, so throughput grows with the requests decoded
# together: the default tensor parallelism is the smallest that leaves KV room for this
# many full-length sequences per engine.
MIN_CONCURRENT = 16
ENGINE_OVERHEAD = 2 * GB  # activations of a profiling batch, sampler, CUDA graphs


def answer_budget(size: ModelSize, *, dtype: str, max_loras: int, max_lora_rank: int,
                  targets, max_model_len: int, gpu_bytes: float, utilization: float,
                  tensor_parallel_size: int | None = None) -> AnswerBudget:
    """Tensor parallelism for one vLLM answering engine, or an error naming the terms.

    Weights and KV heads split over the ``tensor_parallel_size`` GPUs; vLLM shards half
    of each LoRA slot (B), the other half (A) is replicated on every GPU.
    """
    weights = size.weight_bytes(dtype)
    lora = lora_buffer_bytes(size, targets, max_loras, max_lora_rank, dtype)
    kv_seq = max_model_len * size.kv_bytes_per_token(dtype)
    room = utilization * gpu_bytes

    def fit(tp: int) -> tuple[float, int]:
        fixed = weights / tp + lora * (0.5 + 0.5 / tp) + ENGINE_OVERHEAD
        kv_gpu = kv_seq / min(tp, size.kv_heads) if size.kv_heads else kv_seq
        return fixed, int((room - fixed) // kv_gpu) if room > fixed else 0

    choices = [tp for tp in (1, 2, 4, 8) if size.heads % tp == 0]
    tp = tensor_parallel_size
    if tp is None:
        tp = next((t for t in choices if fit(t)[1] >= MIN_CONCURRENT),
                  next((t for t in choices if fit(t)[1] >= 1), choices[-1]))
    fixed, seqs = fit(tp)
    est = {"weights_gib": round(weights / tp / GB, 2),
           "lora_slots_gib": round(lora * (0.5 + 0.5 / tp) / GB, 2),
           "kv_per_sequence_gib": round(kv_seq / min(tp, max(size.kv_heads, 1)) / GB, 3),
           "gpu_gib": round(gpu_bytes / GB, 1), "utilization": utilization}
    experts = size.is_moe and (targets is None or bool(set(targets) & set(MLP)))
    if seqs < 1:
        raise ValueError(
            f"the answering engine does not fit: per GPU at tensor_parallel_size={tp}, "
            f"weights {est['weights_gib']} GiB + LoRA slots {est['lora_slots_gib']} GiB "
            f"(max_loras={max_loras} x rank {max_lora_rank}"
            + (" on every MoE expert" if experts else "")
            + f") + one {max_model_len}-token sequence's KV cache "
            f"({est['kv_per_sequence_gib']} GiB) exceed {utilization} x {gib(gpu_bytes)}; "
            "raise tensor_parallel_size, lower max_loras or max_model_len"
            + (", or serve attention-only adapters (vLLM then skips the expert slots)"
               if experts else ""))
    return AnswerBudget(tp, seqs, est)


def visible_gpu_gb() -> float | None:
    """Memory of the first visible CUDA GPU in GiB, or None without one."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / GB
