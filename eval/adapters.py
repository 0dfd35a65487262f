"""Finding and checking LoRA adapters before any engine starts."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ensemble.answers import _natural_key


class AdapterError(ValueError):
    """An adapter set cannot be used; the message names the adapter and the fix."""


@dataclass(frozen=True)
class Adapter:
    model_id: str  # the directory name: v000, v001, ...
    path: Path
    rank: int
    base: str  # base_model_name_or_path from adapter_config.json
    sha256: str  # of adapter_model.safetensors (or .bin)


def _weights_file(path: Path) -> Path | None:
    for name in ("adapter_model.safetensors", "adapter_model.bin"):
        if (path / name).exists():
            return path / name
    return None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
             only: list[str] | None = None) -> tuple[list[Adapter], dict[str, str]]:
    """Adapters under ``adapters_dir`` that can be served with ``base``.

    Returns
    -------
    (adapters, skipped)
        Usable adapters sorted by id, and ``{model_id: reason}`` for those skipped
        (unfinished variant, unreadable config, another base).  A rank above
        ``max_lora_rank`` is an error for the whole run, not a skip: it is fixed by one
        setting, so we say so before loading anything.
    """
    adapters_dir = Path(adapters_dir)
    if not adapters_dir.is_dir():
        raise AdapterError(f"{adapters_dir}: adapter directory not found; pass --adapters DIR "
                           "(a directory of PEFT adapter directories) or train variants first")
    dirs = sorted((p for p in adapters_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: _natural_key(p.name))
    if only is not None:
        dirs = [d for d in dirs if d.name in set(only)]
    found, skipped = [], {}
    for d in dirs:
        cfg_path = d / "adapter_config.json"
        if not cfg_path.exists():
            skipped[d.name] = "no adapter_config.json (not a PEFT adapter, or still training)"
            continue
        if adapters_dir.name == "variants" and not (d / "variant.json").exists():
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
        rank = int(cfg.get("r", 0))
        if rank > max_lora_rank:
            raise AdapterError(f"{d}: LoRA rank {rank} exceeds max_lora_rank={max_lora_rank}; "
                               f"raise --max-lora-rank to at least {rank}")
        found.append(Adapter(d.name, d, rank, adapter_base, file_sha256(weights)))
    return found, skipped
