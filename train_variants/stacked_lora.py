"""LoRA weights of many variants stacked over one frozen base, applied per row.

Every targeted ``nn.Linear`` of the base is wrapped in a :class:`StackedLoRALinear` that
holds ``lora_A`` of shape ``(N, r, in)`` and ``lora_B`` of shape ``(N, out, r)``: one
tensor per module with a leading variant dimension.  A batch is laid out variant-major
with the same number of rows for every variant (rows ``v*R .. v*R+R-1`` belong to variant
``v``), so the LoRA term of all variants is two batched matmuls over a ``(N, R*S, in)``
view of the input, and the base projection is one matmul over every row of every
variant.  That shared base matmul is what a population gains over training variants one
at a time (mLoRA/ASPEN and LoRAFusion batch adapters over a shared base the same way).

The arithmetic per variant is PEFT's ``Linear`` LoRA (``base(x) + B(A(x)) * alpha/r``,
the adapter in float32 whatever the base dtype, as PEFT's ``autocast_adapter_dtype``),
so weights trained here are served unchanged as PEFT adapters.  Variants of different
ranks share one tensor padded with zeros to the largest rank: a zero column of ``B``
and the matching zero row of ``A`` get zero gradients (each is the other's factor), so
AdamW leaves them at exactly zero and they never contribute.

Initial weights and saved adapters go through PEFT itself (:func:`peft_init`,
:func:`save_peft_adapter`), so a variant starts from exactly the LoRA init that the TRL
path draws for the same ``init_seed`` and is written in exactly its file format.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn


class StackedLoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus the LoRA terms of ``n`` variants, one per row block."""

    def __init__(self, base_layer: nn.Linear, n: int, rank: int):
        super().__init__()
        self.base_layer = base_layer
        dev = base_layer.weight.device
        # PEFT's adapter dtype: the base's, but float32 under a 16-bit base.
        dtype = base_layer.weight.dtype
        dtype = torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype
        self.lora_A = nn.Parameter(torch.zeros(n, rank, base_layer.in_features, device=dev,
                                               dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(n, base_layer.out_features, rank, device=dev,
                                               dtype=dtype))
        self.register_buffer("scaling", torch.ones(n, device=dev, dtype=dtype))
        self.enabled = True
        self.span = (0, n)  # the variants a batch holds rows of (see :func:`variant_span`)

    @property
    def n(self) -> int:
        return self.lora_A.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        if not self.enabled:
            return result
        lo, hi = self.span
        n, rows = hi - lo, x.shape[0]
        if rows % n:
            raise ValueError(f"a batch of {rows} rows cannot be split over {n} variants: the "
                             "population trainer lays out the same number of rows per variant")
        xv = x.to(self.lora_A.dtype).reshape(n, -1, x.shape[-1])  # (n, R*S, in)
        h = torch.bmm(xv, self.lora_A[lo:hi].transpose(1, 2))  # (n, R*S, r)
        delta = torch.bmm(h, self.lora_B[lo:hi].transpose(1, 2)) * self.scaling[lo:hi].view(n, 1, 1)
        return (result + delta.reshape(*result.shape)).to(result.dtype)


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, child = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), child


def target_names(model: nn.Module, targets) -> list[str]:
    """Names of the ``nn.Linear`` modules PEFT's ``target_modules`` would adapt.

    PEFT matches a module when its name equals a target or ends with ``"." + target``.

    Raises
    ------
    ValueError
        A target matches no linear layer (PEFT refuses that too), or matches a module
        that is not an ``nn.Linear`` (e.g. fused 3-D expert weights).
    """
    names, seen = [], set()
    for name, module in model.named_modules():
        hit = [t for t in targets if name == t or name.endswith("." + t)]
        if not hit:
            continue
        seen.update(hit)
        if type(module) is not nn.Linear:
            raise ValueError(f"target module {name!r} is a {type(module).__name__}, not a "
                             "Linear layer: the population trainer stacks LoRA on linear layers "
                             "only; change target_modules or use --trainer trl")
        names.append(name)
    missing = [t for t in targets if t not in seen]
    if missing:
        raise ValueError(f"target_modules {missing} match no module of the base model; "
                         "check the names (e.g. q_proj, v_proj for Llama/Qwen)")
    return names


def install(model: nn.Module, targets, n: int, rank: int) -> dict[str, StackedLoRALinear]:
    """Wrap every targeted linear layer of ``model`` (in place) for ``n`` variants.

    The base weights are frozen (``requires_grad=False``); only the stacked LoRA tensors
    train.  :func:`uninstall` restores the original modules.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    layers = {}
    for name in target_names(model, targets):
        parent, child = _parent(model, name)
        layer = StackedLoRALinear(getattr(parent, child), n, rank)
        setattr(parent, child, layer)
        layers[name] = layer
    return layers


def uninstall(model: nn.Module, layers: dict[str, StackedLoRALinear]) -> None:
    """Put the original linear layers back (their weights were never touched)."""
    for name, layer in layers.items():
        parent, child = _parent(model, name)
        setattr(parent, child, layer.base_layer)


@contextlib.contextmanager
def lora_disabled(layers: dict[str, StackedLoRALinear]):
    """The frozen base alone (TRL's reference model for the KL term when training LoRA)."""
    for layer in layers.values():
        layer.enabled = False
    try:
        yield
    finally:
        for layer in layers.values():
            layer.enabled = True


@contextlib.contextmanager
def variant_span(layers: dict[str, StackedLoRALinear], lo: int, hi: int):
    """Batches of rows of variants ``lo .. hi-1`` only (a micro-batch over a slice of the
    population: memory need not grow with the population)."""
    for layer in layers.values():
        layer.span = (lo, hi)
    try:
        yield
    finally:
        for layer in layers.values():
            layer.span = (0, layer.n)


def set_variant(layers: dict[str, StackedLoRALinear], slot: int,
                weights: dict[str, tuple[torch.Tensor, torch.Tensor]], scaling: float) -> None:
    """Load one variant's ``(A (r, in), B (out, r))`` per module into slot ``slot``.

    A rank below the stacked rank fills the leading rows of A and columns of B; the
    rest stays zero (see the module docstring).
    """
    with torch.no_grad():
        for name, layer in layers.items():
            a, b = weights[name]
            r = a.shape[0]
            layer.lora_A[slot].zero_()
            layer.lora_B[slot].zero_()
            layer.lora_A[slot, :r].copy_(a)
            layer.lora_B[slot, :, :r].copy_(b)
            layer.scaling[slot] = scaling


def get_variant(layers: dict[str, StackedLoRALinear], slot: int,
                rank: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Slot ``slot``'s weights at its own ``rank`` (copies on the CPU)."""
    return {name: (layer.lora_A[slot, :rank].detach().cpu().clone(),
                   layer.lora_B[slot, :, :rank].detach().cpu().clone())
            for name, layer in layers.items()}


def _peft_layers(peft_model) -> dict:
    from peft.tuners.lora import LoraLayer

    prefix = "base_model.model."
    return {name[len(prefix):] if name.startswith(prefix) else name: m
            for name, m in peft_model.named_modules() if isinstance(m, LoraLayer)}


def peft_init(model: nn.Module, config, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The LoRA init PEFT draws for ``config`` after ``torch.manual_seed(seed)``.

    This is what the TRL path does before ``get_peft_model``, so both trainers start a
    variant from bit-identical weights.  ``model`` is left unwrapped again (``unload``).
    """
    from peft import get_peft_model

    torch.manual_seed(seed)
    peft_model = get_peft_model(model, config)
    try:
        return {name: (m.lora_A["default"].weight.detach().cpu().clone(),
                       m.lora_B["default"].weight.detach().cpu().clone())
                for name, m in _peft_layers(peft_model).items()}
    finally:
        peft_model.unload()


def save_peft_adapter(model: nn.Module, config, weights: dict, path: Path) -> None:
    """Write ``weights`` as a standard PEFT adapter directory (``save_pretrained``).

    The adapter is built by PEFT on the unwrapped base exactly as the TRL path builds
    it, its weights replaced by ``weights``, saved and unloaded, so the directory is the
    one the TRL path writes for the same weights.
    """
    from peft import get_peft_model

    peft_model = get_peft_model(model, config)
    try:
        found = _peft_layers(peft_model)
        if set(found) != set(weights):
            raise ValueError(f"the adapter's modules {sorted(set(found) ^ set(weights))[:3]} "
                             "differ from the trained ones")
        with torch.no_grad():
            for name, m in found.items():
                a, b = weights[name]
                m.lora_A["default"].weight.copy_(a)
                m.lora_B["default"].weight.copy_(b)
        peft_model.save_pretrained(str(path), selected_adapters=["default"])
    finally:
        peft_model.unload()
