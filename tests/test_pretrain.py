"""The demo base: pretraining from scratch, its cache, its files and its chat format.

The fast tests pretrain a toy model for a few steps (seconds); the slow one runs the real
defaults (a few minutes on two CPU cores) and checks the base leaves room for voting.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from eval.config import AnswerConfig
from ensemble.core.problems import synthetic_problems
from eval.answering import build_prompts
from ensemble.testing import CPU_HEAD_DIMS, EOS
from train_variants import pretrain
from train_variants.pretrain import (PRETRAIN_JSON, PretrainConfig, build_demo_base,
                                     encode_examples, evaluate_base, held_out_problems)

# A toy that trains in a second or two: the cache and file contract does not depend on size.
TOY = dict(steps=4, batch_size=4, hidden=64, layers=1, heads=2, kv_heads=1, intermediate=64,
           eval_problems=3, eval_temperatures=[1.0], warmup_steps=1)


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return build_demo_base(tmp_path_factory.mktemp("cache"), progress=False, **TOY)


def test_model_files_load_and_are_servable(toy):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    for name in ("config.json", "model.safetensors", "generation_config.json",
                 "tokenizer.json", "tokenizer_config.json", PRETRAIN_JSON):
        assert (toy / name).is_file(), name
    cfg = json.loads((toy / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert cfg["head_dim"] in CPU_HEAD_DIMS  # vLLM's CPU attention runs no other size
    tok = AutoTokenizer.from_pretrained(str(toy))
    assert tok.eos_token == EOS and tok.chat_template
    assert GenerationConfig.from_pretrained(str(toy)).eos_token_id == tok.eos_token_id
    model = AutoModelForCausalLM.from_pretrained(str(toy))
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    # Digits are single tokens whatever the number: arithmetic is learnt digit by digit.
    assert tok.tokenize(" 90817") == ["Ġ", "9", "0", "8", "1", "7"]
    info = json.loads((toy / PRETRAIN_JSON).read_text())
    assert info["config"]["steps"] == TOY["steps"] and info["seed"] == 0
    assert {"greedy", "sampled_t1", "problems"} <= set(info["eval"])
    assert info["train"]["final_loss"] > 0 and info["wall_seconds"] > 0


def test_training_examples_are_answer_stage_prompts_plus_solution(toy):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(toy))
    problems = synthetic_problems(3, difficulty=2, seed=5)
    cfg = AnswerConfig(base=str(toy), out=Path("unused"), benchmark="unused")
    prompts = build_prompts(tok, problems, cfg)
    for loss_on in ("assistant", "all"):
        for (ids, mask), prompt, p in zip(encode_examples(tok, problems, loss_on), prompts,
                                          problems):
            assert tuple(ids[:len(prompt)]) == prompt
            assert ids[-1] == tok.eos_token_id
            assert tok.decode(ids[len(prompt):-1]) == p.solution
            # The loss covers the solution and its EOS; the prompt only with loss_on="all".
            assert all(mask[len(prompt):])
            assert any(mask[:len(prompt)]) == (loss_on == "all")


def test_second_call_reuses_the_cache_and_settings_change_the_key(toy, monkeypatch):
    stamp = (toy / "model.safetensors").stat().st_mtime_ns

    def no_training(*a, **kw):
        raise AssertionError("a cached base was trained again")

    with monkeypatch.context() as m:
        m.setattr(pretrain, "train_model", no_training)
        assert build_demo_base(toy.parent, progress=False, **TOY) == toy
    assert (toy / "model.safetensors").stat().st_mtime_ns == stamp
    # Lists (TOML arrays) and tuples are one setting; any other value is another model.
    key = pretrain.cache_key(PretrainConfig.from_overrides(**TOY), 0)
    assert key == pretrain.cache_key(PretrainConfig.from_overrides(
        **{**TOY, "eval_temperatures": (1.0,)}), 0)
    assert key != pretrain.cache_key(PretrainConfig.from_overrides(**TOY), 1)
    assert key != pretrain.cache_key(PretrainConfig.from_overrides(**{**TOY, "steps": 5}), 0)


def test_same_seed_same_model(toy, tmp_path):
    again = build_demo_base(tmp_path, progress=False, **TOY)
    assert again.name == toy.name
    assert (again / "model.safetensors").read_bytes() == (toy / "model.safetensors").read_bytes()
    assert (again / "tokenizer.json").read_bytes() == (toy / "tokenizer.json").read_bytes()


def test_interrupted_pretrain_leaves_nothing_that_counts_as_done(tmp_path, monkeypatch):
    real = pretrain.train_model

    def killed(cfg, out_dir, **kw):
        real(cfg, out_dir, **kw)  # the model is written ...
        raise KeyboardInterrupt  # ... but the run dies before it is evaluated and renamed

    monkeypatch.setattr(pretrain, "train_model", killed)
    with pytest.raises(KeyboardInterrupt):
        build_demo_base(tmp_path, progress=False, **TOY)
    assert list(tmp_path.iterdir()) == []  # no model, no temporary directory left
    monkeypatch.setattr(pretrain, "train_model", real)
    # A directory under the final name without pretrain.json (e.g. copied by hand) is
    # not a model: it is rebuilt.
    key = pretrain.cache_key(PretrainConfig.from_overrides(**TOY), 0)
    half = tmp_path / f"demo-{key[:16]}"
    half.mkdir()
    (half / "config.json").write_text("{}")
    assert build_demo_base(tmp_path, progress=False, **TOY) == half
    assert (half / PRETRAIN_JSON).is_file() and (half / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [half.name]


def test_bad_settings_are_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"unknown pretrain setting key\(s\) stepz"):
        build_demo_base(tmp_path, stepz=3)
    with pytest.raises(ValueError, match="head_dim=16: vLLM on CPU runs only"):
        build_demo_base(tmp_path, head_dim=16)
    with pytest.raises(ValueError, match="loss_on='prompt' is not one of assistant, all"):
        build_demo_base(tmp_path, loss_on="prompt")
    assert list(tmp_path.iterdir()) == []


def test_held_out_problems_are_never_trained_on():
    cfg = PretrainConfig.from_overrides(eval_problems=50, difficulties=[3])
    held = held_out_problems(cfg)
    train = pretrain.training_problems(cfg, 400, seed=0, exclude=held)
    assert not {p.problem for p in held} & {p.problem for p in train}
    assert len(train) == 400


def test_evaluate_base_greedy_is_reproducible(toy):
    problems = synthetic_problems(3, difficulty=1, seed=7)
    acc, details = evaluate_base(toy, problems, 0.0, 1, max_new_tokens=8, return_details=True)
    assert 0.0 <= acc <= 1.0 and len(details) == 3
    assert all(d["completion_tokens"] <= 8 for d in details)
    a = evaluate_base(toy, problems, 1.0, 2, max_new_tokens=8, seed=3, return_details=True)[1]
    b = evaluate_base(toy, problems, 1.0, 2, max_new_tokens=8, seed=3, return_details=True)[1]
    assert a == b and len(a) == 6
    with pytest.raises(ValueError, match="greedy decoding gives one answer per problem"):
        evaluate_base(toy, problems, 0.0, 2)


@pytest.mark.slow
def test_default_base_leaves_room_for_voting(tmp_path):
    """The real default: a few minutes; held-out sampled accuracy neither ~0 nor ~1."""
    t0 = time.perf_counter()
    base = build_demo_base(tmp_path, progress=False)
    info = json.loads((base / PRETRAIN_JSON).read_text())
    print(json.dumps(info["eval"], indent=1), f"{time.perf_counter() - t0:.0f} s")
    for t in info["config"]["eval_temperatures"]:
        assert 0.15 <= info["eval"][f"sampled_t{t:g}"] <= 0.7, (t, info["eval"])


# --- the shipped demo base --------------------------------------------------------------

def test_shipped_base_is_the_current_recipe():
    """The shipped weights were made by today's defaults: settings, seed and recipe.

    If this fails, the pretraining recipe or a default changed without the shipped
    model being rebuilt: run `ensemble pretrain --fresh`, copy the printed directory
    over ensemble/core/demo_base and record its weights' sha256 in pretrain.json.
    """
    import dataclasses
    import hashlib

    info = json.loads((pretrain.SHIPPED / PRETRAIN_JSON).read_text())
    assert info["recipe"] == pretrain.RECIPE_VERSION
    assert info["seed"] == 0
    assert info["config"] == json.loads(json.dumps(dataclasses.asdict(PretrainConfig())))
    assert info["key"] == pretrain.cache_key(PretrainConfig(), 0) == pretrain.shipped_key()
    weights = (pretrain.SHIPPED / "model.safetensors").read_bytes()
    assert hashlib.sha256(weights).hexdigest() == info["weights_sha256"]
    assert info["eval"]["greedy"] > 0.2 and info["eval"]["sampled_t1"] < 0.5  # room to vote


def test_default_settings_return_the_shipped_base_without_training(tmp_path, monkeypatch):
    def no_training(*a, **kw):
        raise AssertionError("the shipped base was trained again")

    monkeypatch.setattr(pretrain, "train_model", no_training)
    assert build_demo_base(tmp_path, progress=False) == pretrain.SHIPPED
    assert build_demo_base(tmp_path, progress=False, steps=400, difficulties=[1, 2, 3]) \
        == pretrain.SHIPPED  # the same settings spelled out
    assert list(tmp_path.iterdir()) == []  # nothing written to the cache
    with pytest.raises(AssertionError, match="trained again"):
        build_demo_base(tmp_path, progress=False, fresh=True)
    with pytest.raises(AssertionError, match="trained again"):
        build_demo_base(tmp_path, progress=False, seed=1)


def test_shipped_base_loads_and_answers_in_format():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(pretrain.SHIPPED)
    model = AutoModelForCausalLM.from_pretrained(pretrain.SHIPPED)
    assert sum(p.numel() for p in model.parameters()) == 620928
    assert tok.chat_template and tok.eos_token_id == model.config.eos_token_id


def test_pretrain_command(tmp_path):
    from click.testing import CliRunner

    from ensemble.cli import main

    r = CliRunner().invoke(main, ["pretrain"])
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[-1] == str(pretrain.SHIPPED)
    assert "greedy 0.38" in r.output
    bad = tmp_path / "x.toml"
    bad.write_text('out = "r"\nbase = "demo"\n[pretrain]\nstepz = 3\n')
    r = CliRunner().invoke(main, ["pretrain", str(bad)])
    assert r.exit_code == 1
    assert "unknown pretrain setting key(s) stepz" in r.output
    toy = tmp_path / "toy.toml"
    toy.write_text('out = "r"\nbase = "demo"\nseed = 3\n[pretrain]\n' + "".join(
        f"{k} = {json.dumps(v)}\n" for k, v in TOY.items()))
    r = CliRunner().invoke(main, ["pretrain", str(toy)])
    assert r.exit_code == 0, r.output
    made = Path(r.stdout.splitlines()[-1])
    assert made.parent.parent.name != "train_variants"  # pretrained into the cache
    assert json.loads((made / PRETRAIN_JSON).read_text())["seed"] == 3
