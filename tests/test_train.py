"""The training stage on a tiny local model: plan, GRPO variants, resume, launchers, vLLM.

The base is the "digit model" of tests/train_helpers.py (random body, first token a digit,
``0`` about a third of the time) and the pool asks ``What is a - a?``: GRPO groups mix right
and wrong answers, so two steps really move the adapter.  One thread per training process:
on this shared 2-core machine two OpenMP threads made each step 30-50x slower.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` (unlike `python -m pytest`) does not add the cwd
    sys.path.insert(0, str(ROOT))

from tests.train_helpers import cfg_for, tiny_train_config, write_zero_pool
from train_variants.config import TrainConfig, parse_variants
from train_variants.plan import VARIED_FIELDS, make_plan, plan_lines


@pytest.fixture(scope="module")
def trained(digit_base, zero_pool, tmp_path_factory):
    from train_variants.training import run_train

    cfg = cfg_for(digit_base, zero_pool, tmp_path_factory.mktemp("run") / "run")
    # progress=True: the per-variant step bar runs inside the trainer (as in `ensemble
    # demo`); a fault there would fail the variants and every test below.
    summary = run_train(cfg, progress=True)
    assert not summary.failed, summary.failed
    return cfg, summary


def _strip(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k not in ("metrics", "run")}


def _assert_same_adapter(a: Path, b: Path) -> None:
    """Two trainings of one variant gave the same LoRA weights (and they are not zero)."""
    from safetensors.torch import load_file

    wa = load_file(str(a / "adapter_model.safetensors"))
    wb = load_file(str(b / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys()
    assert all(float((wa[k] - wb[k]).abs().max()) < 1e-4 for k in wa)
    assert any(float(wa[k].abs().max()) > 0 for k in wa if "lora_B" in k)  # it trained


def _variant_json(cfg, vid) -> dict:
    return json.loads((cfg.out / "variants" / vid / "variant.json").read_text())


# --- config and plan --------------------------------------------------------------------

def test_config_rejects_unknown_keys_and_bad_values(digit_base, zero_pool, tmp_path):
    base = tiny_train_config(digit_base, zero_pool, tmp_path)
    with pytest.raises(ValueError, match="unknown train config key.*lora_rnak"):
        TrainConfig.from_dict({**base, "lora_rnak": 8})
    with pytest.raises(ValueError, match=r"mask_fraction=1.0 must lie in \[0, 1\)"):
        TrainConfig.from_dict({**base, "mask_fraction": 1.0})
    with pytest.raises(ValueError, match="LoRA rank 4 is not one vLLM serves"):
        TrainConfig.from_dict({**base, "lora_rank": 4})
    with pytest.raises(ValueError, match="unknown factor 'colour'"):
        TrainConfig.from_dict({**base, "vary": ["order", "colour"]})
    with pytest.raises(ValueError, match="missing pool"):
        TrainConfig.from_dict({k: v for k, v in base.items() if k != "pool"})
    assert parse_variants("200") == (0, 200) and parse_variants("100:200") == (100, 200)
    with pytest.raises(ValueError, match="a < b"):
        parse_variants("5:5")
    cfg = TrainConfig.from_dict({**base, "lora_rank": 8, "lora_alpha": 16.0})
    assert [cfg.alpha_for(32)] == [16.0]
    assert TrainConfig.from_dict({**base, "alpha_rule": "linear"}).alpha_for(32) == 64.0
    assert TrainConfig.from_dict({**base, "alpha_rule": "sqrt"}).alpha_for(32) == 32.0


def test_toml_config_and_flags(digit_base, zero_pool, tmp_path):
    toml = tmp_path / "exp.toml"
    toml.write_text(f'[train]\nbase = "{digit_base}"\npool = "{zero_pool}"\nout = "{tmp_path}"\n'
                    'steps = 7\nvary = ["order", "mask", "init_seed"]\n')
    cfg = TrainConfig.from_toml(toml, steps=3)
    assert cfg.steps == 3 and cfg.vary == ("order", "mask", "init_seed")


def test_plan_is_deterministic_across_processes(digit_base, zero_pool, tmp_path):
    cfg = cfg_for(digit_base, zero_pool, tmp_path, variants=6)
    lines = plan_lines(make_plan(cfg))
    code = ("import json, sys; from train_variants.config import TrainConfig;"
            "from train_variants.plan import make_plan, plan_lines;"
            "cfg = TrainConfig.from_dict(json.loads(sys.argv[1]));"
            "print('\\n'.join(plan_lines(make_plan(cfg))))")
    other = subprocess.run([sys.executable, "-c", code, json.dumps(cfg.to_dict())], cwd=tmp_path,
                           capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "123"})
    assert other.stdout.splitlines() == lines
    # Variant i does not depend on the population size; the seed changes everything.
    assert plan_lines(make_plan(cfg_for(digit_base, zero_pool, tmp_path, variants=3))) == lines[:3]
    reseeded = [json.loads(s) for s in plan_lines(make_plan(
        cfg_for(digit_base, zero_pool, tmp_path, variants=6, seed=1)))]
    assert all(r["order_hash"] != json.loads(s)["order_hash"] for r, s in zip(reseeded, lines))
    recs = [json.loads(s) for s in lines]
    assert len({r["order_hash"] for r in recs}) == len({r["mask_hash"] for r in recs}) == 6
    assert {r["kept"] for r in recs} == {18} and {r["dropped"] for r in recs} == {6}
    assert len({r["recipe_hash"] for r in recs}) == 1
    # The recipe does not depend on where the base and pool sit.
    moved = tmp_path / "elsewhere.jsonl"
    moved.write_text(Path(zero_pool).read_text())
    assert make_plan(cfg_for(digit_base, moved, tmp_path)).recipe_hash == recs[0]["recipe_hash"]


def test_plan_varies_only_requested_factors(digit_base, zero_pool, tmp_path):
    cfg = cfg_for(digit_base, zero_pool, tmp_path, variants=4,
                  vary=["mask", "init_seed", "rank"], rank_choices=[8, 16])
    recs = [v.to_dict() for v in make_plan(cfg).variants]
    assert len({r["init_seed"] for r in recs}) == 4
    assert {r["lora_rank"] for r in recs} <= {8, 16}
    assert len({r["sampling_seed"] for r in recs}) == 1
    by_mask = {r["mask_hash"]: r for r in recs}
    assert len(by_mask) == 4
    # Order is not varied: the kept rows keep one shared permutation (relative order).
    plan = make_plan(cfg)
    ref = plan.orders[0]
    for i in range(1, 4):
        common = [j for j in ref if j in set(plan.orders[i])]
        assert [j for j in plan.orders[i] if j in set(ref)] == common


def test_plan_rejects_more_variants_than_it_allows(digit_base, tmp_path):
    pool = write_zero_pool(tmp_path / "small.jsonl", n=3)
    cfg = cfg_for(digit_base, pool, tmp_path, variants=7, mask_fraction=0.0, batch_size=1,
                  steps=3, vary=["order"])
    with pytest.raises(ValueError) as err:
        make_plan(cfg)
    assert str(err.value) == ("--variants 7: varying order over a pool of 3 (dropping 0) allows "
                              "at most 6 distinct variants; use a larger pool, another "
                              "--mask-fraction, or vary more factors")
    # Within the limit, independent draws can still collide (6 random orders of 3 rows):
    # two identical variants are refused by name.
    with pytest.raises(ValueError, match=r"variants v\d+ and v\d+ would train on the same data"):
        make_plan(cfg_for(digit_base, pool, tmp_path, variants=6, mask_fraction=0.0,
                          batch_size=1, steps=3, vary=["order"]))
    assert len(make_plan(cfg_for(digit_base, pool, tmp_path, variants=2, mask_fraction=0.0,
                                 batch_size=1, steps=3, vary=["order"])).variants) == 2
    with pytest.raises(ValueError, match="masking 0.5 leaves 1, fewer than the 4 prompts"):
        make_plan(cfg_for(digit_base, pool, tmp_path, batch_size=4, mask_fraction=0.5))


# --- training ---------------------------------------------------------------------------

def test_two_variants_trained_with_complete_files(trained):
    cfg, summary = trained
    assert summary.done == ["v000", "v001"] and not summary.failed
    vdir = cfg.out / "variants"
    assert sorted(p.name for p in vdir.iterdir()) == ["train.json", "v000", "v001"]
    for vid in ("v000", "v001"):
        files = sorted(p.name for p in (vdir / vid).iterdir())
        assert files == ["README.md", "adapter_config.json", "adapter_model.safetensors",
                         "variant.json"], files
        meta = _variant_json(cfg, vid)
        m = meta["metrics"]
        assert m["steps"] == 2 and len(m["curves"]["reward"]) == 2
        assert all(0 <= r <= 1 for r in m["curves"]["correct"])
        assert m["update_norm"] > 0.01 * m["init_norm"]
        assert meta["base"]["config_sha256"] and meta["recipe_hash"] == summary.recipe_hash
        assert {"torch", "transformers", "trl", "peft"} <= set(meta["run"]["versions"])
        acfg = json.loads((vdir / vid / "adapter_config.json").read_text())
        assert acfg["r"] == 8 and acfg["lora_alpha"] == 16
        assert acfg["base_model_name_or_path"] == str(Path(cfg.base).resolve())


def test_adapter_weights_moved_from_init(trained):
    # PEFT's default init sets lora_B = 0: any nonzero B was learnt.
    from safetensors.torch import load_file

    cfg, _ = trained
    for vid in ("v000", "v001"):
        w = load_file(str(cfg.out / "variants" / vid / "adapter_model.safetensors"))
        bs = [t for k, t in w.items() if "lora_B" in k]
        assert len(bs) == 2 * 7  # 2 layers x 7 target modules
        assert max(float(t.abs().max()) for t in bs) > 1e-3


def test_variants_differ_only_in_varied_fields(trained):
    cfg, _ = trained
    a, b = (_strip(_variant_json(cfg, v)) for v in ("v000", "v001"))
    assert set(a) == set(b)
    differ = {k for k in a if a[k] != b[k]}
    assert differ <= set(VARIED_FIELDS)
    assert {"id", "index", "order_hash", "mask_hash", "seeds"} <= differ


def test_adapters_load_in_peft_and_change_outputs(trained):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg, _ = trained
    tok = AutoTokenizer.from_pretrained(cfg.base)
    ids = tok("What is 5 - 5?", return_tensors="pt")
    base = AutoModelForCausalLM.from_pretrained(cfg.base, dtype=torch.float32)
    with torch.no_grad():
        ref = base(**ids).logits
        outs = []
        for vid in ("v000", "v001"):
            model = PeftModel.from_pretrained(base, str(cfg.out / "variants" / vid))
            outs.append(model(**ids).logits)
            base = model.unload()
    assert all(float((o - ref).abs().max()) > 1e-3 for o in outs)


def test_training_prompts_match_answering_prompts(trained):
    # The reward is only meaningful if the model is trained on the prompts it is tested on.
    from transformers import AutoTokenizer

    from eval.config import AnswerConfig
    from eval.answering import build_prompts
    from train_variants.trainer import build_dataset

    cfg, _ = trained
    plan = make_plan(cfg)
    tok = AutoTokenizer.from_pretrained(cfg.base)
    ds = build_dataset(plan, 0, cfg, tok)
    trl_ids = tok.apply_chat_template(list(ds["prompt"]), add_generation_prompt=True,
                                      tokenize=True, return_dict=True)["input_ids"]
    acfg = AnswerConfig(base=cfg.base, out=cfg.out, benchmark=cfg.pool)
    eval_ids = build_prompts(tok, plan.training_rows(0), acfg)
    assert [tuple(x) for x in trl_ids] == eval_ids
    assert list(ds["problem_id"]) == [plan.pool[j].id for j in plan.orders[0]]


def test_answering_stage_discovers_the_variants(trained):
    from eval.adapters import discover

    cfg, _ = trained
    found, skipped = discover(cfg.out / "variants", cfg.base, 8)
    assert [a.model_id for a in found] == ["v000", "v001"] and not skipped


def test_rerun_skips_finished_variants(trained):
    from train_variants.training import run_train, variant_status

    cfg, _ = trained
    before = {v: (cfg.out / "variants" / v / "adapter_model.safetensors").stat().st_mtime_ns
              for v in ("v000", "v001")}
    again = run_train(cfg, progress=False)
    assert again.skipped == ["v000", "v001"] and not again.done
    after = {v: (cfg.out / "variants" / v / "adapter_model.safetensors").stat().st_mtime_ns
             for v in ("v000", "v001")}
    assert after == before
    rows = variant_status(cfg.out)
    assert [(r["id"], r["state"], r["steps"]) for r in rows] == [("v000", "done", 2),
                                                                ("v001", "done", 2)]


@pytest.mark.parametrize("trainer", ["trl", "population"])
def test_training_in_this_process_releases_the_base_after(digit_base, zero_pool, tmp_path,
                                                          trainer, monkeypatch):
    """``ensemble run`` answers in the process that trained: the cached base must be gone
    (on a GPU, vLLM refuses to start where this process still holds the base's memory)."""
    import gc
    import weakref

    from train_variants import trainer as tm
    from train_variants.training import run_train

    bases = []
    load = tm.load_base

    def recording(*args, **kwargs):
        model, tok, seconds = load(*args, **kwargs)
        bases.append(weakref.ref(model))
        return model, tok, seconds

    monkeypatch.setattr(tm, "load_base", recording)
    if trainer == "population":
        from train_variants import population

        monkeypatch.setattr(population, "load_base", recording)
    cfg = cfg_for(digit_base, zero_pool, tmp_path / "run", steps=1, trainer=trainer)
    assert sorted(run_train(cfg, progress=False).done) == ["v000", "v001"]
    assert bases and tm._BASE_CACHE == {} and gc.get_freeze_count() == 0
    gc.collect()
    assert all(ref() is None for ref in bases)  # not only uncached: freed


def test_other_recipe_in_same_run_dir_is_refused(trained):
    from train_variants.training import run_train

    cfg, _ = trained
    other = TrainConfig.from_dict({**cfg.to_dict(), "learning_rate": 0.01})
    with pytest.raises(ValueError, match="holds variants of another experiment.*learning_rate"):
        run_train(other, progress=False)


def test_failed_variant_is_recorded_and_others_continue(digit_base, zero_pool, tmp_path,
                                                        monkeypatch):
    import train_variants.trainer as trainer
    from train_variants.training import run_train, variant_status

    real = trainer._train_on

    def flaky(cfg, vp, *args, **kw):
        if vp.id == "v000":
            raise RuntimeError("out of memory (simulated)")
        return real(cfg, vp, *args, **kw)

    monkeypatch.setattr(trainer, "_train_on", flaky)
    cfg = cfg_for(digit_base, zero_pool, tmp_path / "run", steps=1)
    summary = run_train(cfg, progress=False)
    assert summary.failed == {"v000": "RuntimeError: out of memory (simulated)"}
    assert summary.done == ["v001"]
    rec = json.loads((cfg.out / "variants/.failed/v000.json").read_text())
    assert rec["error"] == "RuntimeError: out of memory (simulated)" and "flaky" in rec["traceback"]
    assert not (cfg.out / "variants/v000").exists()
    assert not [p for p in (cfg.out / "variants").iterdir() if p.name.startswith(".tmp-")]
    states = {r["id"]: r["state"] for r in variant_status(cfg.out)}
    assert states == {"v000": "failed", "v001": "done"}
    monkeypatch.setattr(trainer, "_train_on", real)
    retry = run_train(cfg, progress=False)
    assert retry.done == ["v000"] and retry.skipped == ["v001"]
    assert not (cfg.out / "variants/.failed/v000.json").exists()


@pytest.mark.slow
def test_killed_run_resumes_without_retraining(digit_base, zero_pool, tmp_path):
    from train_variants.training import run_train, variant_status

    out = tmp_path / "run"
    toml = tmp_path / "train.toml"
    settings = tiny_train_config(digit_base, zero_pool, out, variants=3, steps=6, cpu_threads=1)
    toml.write_text("[train]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
    proc = subprocess.Popen([sys.executable, "-m", "ensemble.cli", "train", str(toml)],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out / "variants/v000/variant.json"
    deadline = time.time() + 180
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert first.exists(), "the first variant never finished"
    # Kill as soon as the next variant is in flight.
    while (not any(p.name.startswith(".tmp-v001") for p in (out / "variants").iterdir())
           and time.time() < deadline):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = sorted(p.parent.name for p in (out / "variants").glob("v*/variant.json"))
    assert "v002" not in done_at_kill
    states = {r["id"]: r["state"] for r in variant_status(out)}
    assert states["v000"] == "done" and states["v002"] == "pending"
    if "v001" not in done_at_kill:
        assert states["v001"] == "interrupted"
    mtime = first.stat().st_mtime_ns
    summary = run_train(TrainConfig.from_toml(toml), progress=False)
    assert "v000" in summary.skipped and "v002" in summary.done
    assert first.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in (out / "variants").iterdir()) == [
        "train.json", "v000", "v001", "v002"]


@pytest.mark.slow
def test_ray_launcher_matches_local(trained, tmp_path, monkeypatch):
    import ray

    from train_variants.training import run_train

    cfg, _ = trained
    # A relative run directory: Ray workers do not run in this directory, so the
    # launcher must hand them absolute paths (they would write elsewhere otherwise).
    monkeypatch.chdir(tmp_path)
    # 2 CPUs per variant on a 2-CPU cluster: one actor, which must train both variants
    # in one process from one base load (a fresh Ray task per variant would reload it)
    ray_cfg = TrainConfig.from_dict({**cfg.to_dict(), "out": "ray", "launcher": "ray",
                                     "cpus_per_variant": 2.0})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = run_train(ray_cfg, progress=False)
    finally:
        ray.shutdown()
    assert sorted(summary.done) == ["v000", "v001"] and not summary.failed
    runs = [_variant_json(ray_cfg, v)["run"] for v in ("v000", "v001")]
    assert runs[0]["pid"] == runs[1]["pid"] != os.getpid()
    assert sorted(r["load_seconds"] for r in runs)[0] == 0  # the second reused the base
    for vid in ("v000", "v001"):
        a, b = cfg.out / "variants" / vid, ray_cfg.out / "variants" / vid
        assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
        assert _strip(_variant_json(cfg, vid)) == _strip(_variant_json(ray_cfg, vid))
        _assert_same_adapter(a, b)
        assert _variant_json(cfg, vid)["metrics"]["curves"]["correct"] == \
            _variant_json(ray_cfg, vid)["metrics"]["curves"]["correct"]


@pytest.mark.slow
def test_local_worker_processes_match_sequential(trained, tmp_path):
    from train_variants.training import run_train

    cfg, _ = trained
    pool_cfg = TrainConfig.from_dict({**cfg.to_dict(), "out": str(tmp_path / "pool"),
                                      "workers": 2})
    summary = run_train(pool_cfg, progress=False)
    assert sorted(summary.done) == ["v000", "v001"] and not summary.failed
    pids = {_variant_json(pool_cfg, v)["run"]["pid"] for v in ("v000", "v001")}
    assert os.getpid() not in pids
    for vid in ("v000", "v001"):
        # The plan's fields match whichever process trained; the weights and the reward
        # curve show the training itself was the same.
        assert _strip(_variant_json(cfg, vid)) == _strip(_variant_json(pool_cfg, vid))
        _assert_same_adapter(cfg.out / "variants" / vid, pool_cfg.out / "variants" / vid)
        assert _variant_json(cfg, vid)["metrics"]["curves"]["correct"] == \
            _variant_json(pool_cfg, vid)["metrics"]["curves"]["correct"]


@pytest.mark.slow
def test_vllm_serves_the_trained_adapters(trained, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg, _ = trained
    tok = AutoTokenizer.from_pretrained(cfg.base)
    prompts = [tok.apply_chat_template([{"role": "user", "content": f"What is {a} - {a}?"}],
                                       add_generation_prompt=True, tokenize=True,
                                       return_dict=True)["input_ids"] for a in (4, 11)]
    (tmp_path / "prompts.json").write_text(json.dumps(prompts))
    out = tmp_path / "vllm.json"
    proc = subprocess.run([sys.executable, str(ROOT / "tests/train_vllm_probe.py"), cfg.base,
                           str(cfg.out / "variants"), str(tmp_path / "prompts.json"), str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(out.read_text())
    assert not got["skipped"] and set(got) == {"skipped", "base", "v000", "v001"}
    base = AutoModelForCausalLM.from_pretrained(cfg.base, dtype=torch.float32)
    for vid in ("v000", "v001"):
        model = PeftModel.from_pretrained(base, str(cfg.out / "variants" / vid))
        for p, ids in zip(prompts, got[vid]):
            ref = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p)),
                                 do_sample=False, max_new_tokens=4)[0, len(p):].tolist()
            assert ids == ref, (vid, ids, ref)
        base = model.unload()


@pytest.mark.parametrize("arch", ["llama", "moe-experts"])
def test_merge_unmerge_leaves_the_base_bit_identical(tmp_path, arch):
    """TRL's vLLM sync merges and unmerges every step; in bfloat16 that drifts the base
    unless keep_base_exact restores it (issue 17, point 6) -- also for LoRA on fused MoE
    experts (PEFT's ParamWrapper, whose base weight is the wrapped expert tensor)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ensemble.testing import build_tiny_model, build_tiny_moe
    from train_variants.config import DEFAULT_TARGETS
    from train_variants.trainer import keep_base_exact

    if arch == "llama":
        path, targets = build_tiny_model(tmp_path / "base"), ["q_proj", "v_proj"]
    else:  # the default targets: PEFT turns the expert MLPs into target_parameters
        path, targets = build_tiny_moe(tmp_path / "base"), list(DEFAULT_TARGETS)

    def peft_model():
        base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
        model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=targets))
        torch.manual_seed(0)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.05)  # a trained adapter (B = 0 at init would be exact)
        before = {n: p.detach().clone() for n, p in model.named_parameters() if "base_layer" in n}
        return model, before

    def cycles(model):
        for _ in range(50):
            model.merge_adapter()
            model.unmerge_adapter()

    drifting, before = peft_model()
    cycles(drifting)
    changed = sum(int((p != before[n]).sum()) for n, p in drifting.named_parameters()
                  if n in before)
    assert changed > 0  # the problem is real on this model

    exact, before = peft_model()
    layers = len(exact.base_model.model.model.layers)
    # llama: q, v per layer; MoE: q, k, v, o and the two fused expert tensors per layer
    assert keep_base_exact(exact) == (2 if arch == "llama" else 6) * layers
    if arch != "llama":
        assert any("experts" in n and "lora" in n for n, _ in exact.named_parameters())
    cycles(exact)
    for n, p in exact.named_parameters():
        if n in before:
            assert torch.equal(p, before[n]), n
    if arch != "llama":
        return
    # merged weights are still what vLLM must receive: W + scale * B A
    exact.merge_adapter()
    layer = exact.base_model.model.model.layers[0].self_attn.q_proj
    want = before[next(n for n in before if "layers.0.self_attn.q_proj" in n)].float() + \
        layer.scaling["default"] * (layer.lora_B["default"].weight.float()
                                    @ layer.lora_A["default"].weight.float())
    torch.testing.assert_close(layer.base_layer.weight.float(), want, rtol=0.02, atol=0.02)


# --- GPU budget, micro-batches, seeds: the TRL arguments (issue 17) ---------------------

def _trl_args(cfg, index=0, device="cpu", vllm=False):
    from trl import GRPOConfig

    from train_variants.trainer import grpo_args

    vp = make_plan(cfg).for_indices([index])[0]
    return vp, GRPOConfig(**grpo_args(cfg, vp, cfg.out, device, "float32", vllm))


def test_micro_batches_split_the_generation_batch(digit_base, zero_pool, tmp_path):
    cfg = cfg_for(digit_base, zero_pool, tmp_path, batch_size=2, grad_accum=2, micro_batch=4)
    _, args = _trl_args(cfg)
    # 2 x 2 prompts x 4 generations = 16 sequences, generated once per optimiser step and
    # trained in 4 passes of 4: memory is set by the micro-batch
    assert args.generation_batch_size == 16 and args.per_device_train_batch_size == 4
    assert args.steps_per_generation == args.gradient_accumulation_steps == 4
    _, whole = _trl_args(cfg_for(digit_base, zero_pool, tmp_path, batch_size=2, grad_accum=2))
    assert (whole.generation_batch_size, whole.per_device_train_batch_size,
            whole.gradient_accumulation_steps) == (16, 16, 1)
    with pytest.raises(ValueError, match=r"micro_batch=3 must divide the 16 sequences"):
        cfg_for(digit_base, zero_pool, tmp_path, batch_size=2, grad_accum=2, micro_batch=3)
    with pytest.raises(ValueError, match=r"micro_batch=4 with loss_type='bnpo': TRL normalises "
                       "that loss per micro-batch"):
        cfg_for(digit_base, zero_pool, tmp_path, batch_size=2, grad_accum=2, micro_batch=4,
                loss_type="bnpo")


def test_the_variant_seed_and_the_engine_budget_reach_trl(digit_base, zero_pool, tmp_path):
    cfg = cfg_for(digit_base, zero_pool, tmp_path, vary=["order", "sampling_seed"],
                  vllm_memory_share=0.4, vllm_max_model_len=512)
    for i in (0, 1):
        vp, args = _trl_args(cfg, i, device="cuda", vllm=True)
        assert args.seed == args.data_seed == vp.sampling_seed
        assert (args.vllm_mode, args.vllm_gpu_memory_utilization,
                args.vllm_max_model_length) == ("colocate", 0.4, 512)
    assert len({make_plan(cfg).for_indices([i])[0].sampling_seed for i in (0, 1)}) == 2


@pytest.mark.parametrize("loss_type", ["dapo", "grpo"])
def test_micro_batches_give_the_same_update(digit_base, zero_pool, tmp_path, loss_type):
    """TRL normalises these losses over the whole generation batch: training in passes
    of 2 sequences moves the adapter exactly as one pass of 8 does (float32, CPU)."""
    from train_variants.training import run_train

    runs = {}
    for micro in (None, 2):
        cfg = cfg_for(digit_base, zero_pool, tmp_path / f"m{micro}", variants=1,
                      max_completion_length=3, loss_type=loss_type, micro_batch=micro)
        summary = run_train(cfg, progress=False)
        assert summary.done == ["v000"], summary.failed
        runs[micro] = cfg
    _assert_same_adapter(runs[None].out / "variants/v000", runs[2].out / "variants/v000")
    a, b = (_variant_json(runs[m], "v000")["metrics"]["curves"] for m in (None, 2))
    assert a["correct"] == b["correct"] and a["completion_length"] == b["completion_length"]
    recorded = json.loads((runs[None].out / "variants/train.json").read_text())["config"]
    assert recorded["micro_batch"] == 8  # resolved on CPU: the whole generation batch


def test_local_workers_get_their_own_gpus():
    from train_variants.workers import gpu_slots

    assert gpu_slots(4, 2, 8) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    with pytest.raises(ValueError, match=r"workers=4 x gpus_per_variant=4 needs 16 GPUs, this "
                       r"machine shows 8; use --workers 2"):
        gpu_slots(4, 4, 8)


def test_gpu_budget_is_resolved_from_the_model_and_written(tmp_path):
    """On a GPU run (planned here without one) the budget keys get values computed from
    the base's config.json: a tiny MoE trains on one GPU, engine colocated."""
    from ensemble.testing import build_tiny_moe
    from train_variants.gpus import budget_for, resolve_budget

    base = build_tiny_moe(tmp_path / "moe")
    pool = write_zero_pool(tmp_path / "pool.jsonl", n=8)
    cfg = cfg_for(base, pool, tmp_path / "run", target_modules=["q_proj", "v_proj"])
    resolved = resolve_budget(cfg, make_plan(cfg), on_gpu=True, vllm=True)
    assert resolved.gpus_per_variant == 1 and resolved.micro_batch == 8
    assert resolved.use_vllm is True and resolved.gpu_memory_gb == 80.0
    assert 0.5 < resolved.vllm_memory_share < 0.9
    assert resolved.vllm_max_model_len == 256  # longest prompt + 1 completion token, rounded
    b = budget_for(resolved, vllm=True)
    assert (b.engine_gpu, b.train_gpus) == (0, [0])
    big = TrainConfig.from_dict({**resolved.to_dict(), "gpus_per_variant": None,
                                 "gpu_memory_gb": 0.0001})
    with pytest.raises(ValueError, match="TRL's colocated vLLM engine needs"):
        resolve_budget(big, make_plan(big), on_gpu=True, vllm=True)


def test_a_driver_without_a_gpu_sizes_training_by_a_cluster_gpu(digit_base, zero_pool,
                                                                 tmp_path, monkeypatch):
    """A login-node driver (no CUDA) on a GPU Ray cluster asks one cluster GPU for its
    memory; the budget is then computed for that card, not for the default 80 GiB."""
    import types

    import torch

    from ensemble.core import cluster
    from train_variants import training

    asked = []
    fake = types.SimpleNamespace(
        is_initialized=lambda: True, cluster_resources=lambda: {"GPU": 8.0, "CPU": 64.0},
        remote=lambda **opts: asked.append(opts) or (
            lambda fn: types.SimpleNamespace(remote=lambda: fn)),
        get=lambda fn: 139.8 if fn is cluster.gpu_memory_gb else None)
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    seen = []
    monkeypatch.setattr(training, "_run_train",
                        lambda cfg, progress, device: seen.append((cfg.gpu_memory_gb, device)))
    cfg = TrainConfig.from_dict({**tiny_train_config(digit_base, zero_pool, tmp_path / "r"),
                                 "device": "auto", "launcher": "ray"})
    training.run_train(cfg, progress=False)
    assert seen == [(139.8, "cuda")]
    assert asked == [{"num_gpus": 1, "num_cpus": 0, "max_retries": 0}]
    # given by hand, or with a GPU on the driver, nothing is asked
    training.run_train(TrainConfig.from_dict({**cfg.to_dict(), "gpu_memory_gb": 40.0}),
                       progress=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    training.run_train(cfg, progress=False)
    assert seen[1:] == [(40.0, "cuda"), (None, "cuda")] and len(asked) == 1


def test_ray_actors_are_fed_variants_and_a_dead_one_is_replaced(monkeypatch, tmp_path):
    """A stand-in Ray: two actors of 2 GPUs each on a 4-GPU cluster take the variants in
    turn; the actor training v001 dies, v001 fails alone and a new actor takes over."""
    import types

    from train_variants import workers as launch
    from train_variants.trainer import VariantResult

    made, asked = [], []

    class Ref:
        def __init__(self, actor, i):
            self.actor, self.i = actor, i

    class Actor:
        def __init__(self, cfg_dict, token):
            self.trained = []
            made.append(self)
            self.train = types.SimpleNamespace(remote=lambda i: Ref(self, i))

    def remote(**opts):
        asked.append(opts)
        return lambda cls: types.SimpleNamespace(remote=lambda *a: Actor(*a))

    def get(ref):
        if ref.i == 1:
            raise RuntimeError("ActorDiedError: the actor died\nnode lost")
        ref.actor.trained.append(ref.i)
        return VariantResult(f"v{ref.i:03d}", "done")

    fake = types.SimpleNamespace(
        is_initialized=lambda: True, cluster_resources=lambda: {"GPU": 4.0, "CPU": 8.0},
        nodes=lambda: [{"Alive": True, "Resources": {"GPU": 4.0, "CPU": 8.0}},
                       {"Alive": False, "Resources": {"GPU": 8.0}}],  # a lost node
        remote=remote, get=get, kill=lambda a: killed.append(a),
        wait=lambda refs, num_returns=1: (refs[:1], refs[1:]))
    killed = []
    monkeypatch.setitem(sys.modules, "ray", fake)
    cfg = TrainConfig.from_dict({"base": "b", "pool": "p", "out": str(tmp_path), "variants": 5,
                                 "launcher": "ray", "gpus_per_variant": 2})
    results = []
    launch.run_ray(cfg, [0, 1, 2, 3, 4], results.append)
    assert asked == [{"num_gpus": 2, "num_cpus": 1, "max_restarts": 0, "max_task_retries": 0}]
    assert sorted(r.id for r in results if r.status == "done") == ["v000", "v002", "v003", "v004"]
    assert [r.error for r in results if r.status == "failed"] == [
        "ray worker failed: RuntimeError: node lost"]
    assert len(made) == 3  # two actors for 4 GPUs / 2, one replacing the dead one
    assert sum(len(a.trained) for a in made) == 4 and max(len(a.trained) for a in made) >= 2
    # the dead one, then each actor as it goes idle with nothing left (its GPUs are
    # free for answering at once): every actor once
    assert len(killed) == 3 and {id(a) for a in killed} == {id(a) for a in made}

    # an actor whose variant raised inside it (a CUDA error can poison the process) is
    # replaced too; a fault that follows every actor stops the queue after 3 in a row
    made.clear()
    fake.get = lambda ref: VariantResult(f"v{ref.i:03d}", "failed", error="OSError: no base")
    results.clear()
    launch.run_ray(cfg, list(range(8)), results.append)
    errors = {r.id: r.error for r in results}
    assert sorted(errors) == [f"v{i:03d}" for i in range(8)]
    assert len(made) == 4  # two, and one replacement after each of the first two failures
    started = [i for i, e in errors.items() if e == "OSError: no base"]
    assert len(started) == 4  # 3 in a row, and the one still in flight at the cut-off
    assert all(e == "not started: 3 new Ray actors in a row failed their first variant "
               "(last: OSError: no base); fix that and rerun (finished variants are kept)"
               for i, e in errors.items() if i not in started)

    # a lost node fails actors that had finished variants: that says nothing about the
    # other nodes, so it does not count towards the cut-off
    made.clear()
    results.clear()
    fake.get = lambda ref: (VariantResult(f"v{ref.i:03d}", "failed", error="lost")
                            if ref.i >= 2 and ref.i % 2 == 0 else
                            VariantResult(f"v{ref.i:03d}", "done"))
    launch.run_ray(cfg, list(range(12)), results.append)
    assert sorted(r.id for r in results) == [f"v{i:03d}" for i in range(12)]
    assert {r.id for r in results if r.status == "failed"} == {"v002", "v004", "v006",
                                                                "v008", "v010"}

    # work no node can hold would wait in Ray's queue forever: refused up front
    big = TrainConfig.from_dict({**cfg.to_dict(), "gpus_per_variant": 8})
    with pytest.raises(ValueError, match=r"^gpus_per_variant=8 but the largest node of the "
                       r"Ray cluster has 4 GPU\(s\), and one variant's actor must fit on one node; "
                       r"lower gpus_per_variant or add larger nodes$"):
        launch.run_ray(big, [0], results.append)
