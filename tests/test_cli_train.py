"""`ensemble train` / `ensemble status`: bad input fails before training, with one clear line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ensemble.cli import main  # noqa: E402
from tests.train_helpers import build_digit_model, write_zero_pool  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    return build_digit_model(d / "base"), write_zero_pool(d / "pool.jsonl", n=24), d


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def common(base, pool, out):
    return ["--base", base, "--pool", pool, "--out", out, "--steps", 2, "--lora-rank", 8,
            "--mask-fraction", 0.25, "--device", "cpu"]


def test_plan_only_prints_json_lines(setup, tmp_path):
    base, pool, _ = setup
    res = invoke("train", *common(base, pool, tmp_path / "run"), "--variants", "2:5",
                 "--plan-only")
    assert res.exit_code == 0, res.output
    recs = [json.loads(line) for line in res.output.splitlines()]
    assert [r["id"] for r in recs] == ["v002", "v003", "v004"]
    assert {r["kept"] for r in recs} == {18} and len({r["mask_hash"] for r in recs}) == 3
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


def test_config_file_and_flags(setup, tmp_path):
    base, pool, _ = setup
    toml = tmp_path / "exp.toml"
    toml.write_text(f'[train]\nbase = "{base}"\npool = "{pool}"\nout = "{tmp_path / "r"}"\n'
                    "variants = 3\nmask_fraction = 0.5\nlora_rank = 8\n")
    res = invoke("train", toml, "--plan-only", "--mask-fraction", "0.25")
    assert res.exit_code == 0, res.output
    recs = [json.loads(line) for line in res.output.splitlines()]
    assert len(recs) == 3 and {r["dropped"] for r in recs} == {6}
    res = invoke("train", toml, "--plan-only", "--mask-fraction", "0.25", "--bogus", "1")
    assert res.exit_code == 2 and "No such option '--bogus'" in res.output


def test_an_experiment_file_gives_the_stage_its_shared_keys(setup, tmp_path):
    """`ensemble train EXPERIMENT.toml` reads base, out and seed from the top level, as
    `ensemble run` does."""
    base, pool, _ = setup
    toml = tmp_path / "exp.toml"
    toml.write_text(f'base = "{base}"\nout = "{tmp_path / "r"}"\nseed = 5\n\n'
                    f'[train]\npool = "{pool}"\nvariants = 2\nlora_rank = 8\n\n'
                    '[answer]\nbenchmark = "synthetic:4"\n')
    res = invoke("train", toml, "--plan-only")
    assert res.exit_code == 0, res.output
    recs = [json.loads(line) for line in res.output.splitlines()]
    again = invoke("train", toml, "--plan-only", "--seed", 6)
    assert [r["id"] for r in recs] == ["v000", "v001"]
    assert recs != [json.loads(line) for line in again.output.splitlines()]  # seed 5 was used


@pytest.mark.parametrize("case", ["base", "answer_field", "mask", "small_pool", "gpu",
                                  "range", "unknown_key"])
def test_bad_input_is_one_clear_error(setup, tmp_path, case):
    base, pool, d = setup
    args = common(base, pool, tmp_path / "run") + ["--variants", 2]
    if case == "base":
        args[1] = tmp_path / "no-such-model"
        want = (f"Error: base='{tmp_path / 'no-such-model'}' looks like a local path but "
                "does not exist; give an existing checkpoint directory, a Hugging Face id "
                "(org/name), gguf:PATH, or one of: smollm2-135m")
    elif case == "answer_field":
        bad = tmp_path / "noanswer.jsonl"
        bad.write_text('{"id": "a", "problem": "1+1?", "solution": "2"}\n')
        args[3] = bad
        want = (f"Error: {bad}: no field 'answer' (fields: id, problem, solution); set "
                "--answer-field")
    elif case == "mask":
        args[11] = "1.0"
        want = ("Error: mask_fraction=1.0 must lie in [0, 1): it is the share of the pool each "
                "variant drops (0.1 drops 10%)")
    elif case == "small_pool":
        small = write_zero_pool(tmp_path / "small.jsonl", n=3)
        args[3], args[11] = small, "0"
        args += ["--variants", 10]
        want = ("Error: the pool has 3 problems; masking 0 leaves 3, fewer than the 8 prompts "
                "of one step (batch_size x grad_accum); use a larger pool, a smaller "
                "--mask-fraction or a smaller batch_size")
    elif case == "gpu":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
        args[13] = "cuda"
        want = (f"Error: device=cuda but no CUDA GPU is visible to torch (torch "
                f"{torch.__version__}); use --device cpu, or install a CUDA build of torch on a "
                "GPU machine")
    elif case == "range":
        args += ["--variants", "5:3"]
        want = "Error: --variants '5:3' must be a count N or a range a:b with a < b, e.g. 200 or 0:200"
    else:
        toml = tmp_path / "t.toml"
        toml.write_text("[train]\nlora_rnak = 8\n")
        args = [toml] + args
        want = "Error: unknown train config key(s) lora_rnak; known keys: "
    res = invoke("train", *args)
    assert res.exit_code == 1, res.output
    out = res.output.strip()
    assert out.startswith(want) if case == "unknown_key" else out == want
    assert not (tmp_path / "run" / "variants").exists()  # failed before any training


def test_too_many_variants_for_the_pool(setup, tmp_path):
    base, _, _ = setup
    small = write_zero_pool(tmp_path / "small.jsonl", n=8)
    res = invoke("train", "--base", base, "--pool", small, "--out", tmp_path / "run",
                 "--variants", 50000, "--mask-fraction", 0.0, "--lora-rank", 8)
    assert res.exit_code == 1
    assert res.output.strip() == (
        "Error: --variants 50000: varying order, mask over a pool of 8 (dropping 0) allows at "
        "most 40320 distinct variants; use a larger pool, another --mask-fraction, or vary "
        "more factors")
    assert not (tmp_path / "run").exists()


def test_status_of_a_run(tmp_path):
    vdir = tmp_path / "variants"
    (vdir / "v000").mkdir(parents=True)
    (vdir / "v000/variant.json").write_text(json.dumps(
        {"metrics": {"steps": 4, "final_reward": 0.5}, "run": {"wall_seconds": 3.25,
                                                               "host": "h1"}}))
    (vdir / ".failed").mkdir()
    (vdir / ".failed/v001.json").write_text(json.dumps({"id": "v001", "error": "boom"}))
    (vdir / ".tmp-v002-h9-12").mkdir()
    (vdir / ".tmp-v002-h9-12/running.json").write_text(json.dumps(
        {"id": "v002", "host": "another-host", "pid": 12, "started": 0}))
    (vdir / "train.json").write_text(json.dumps({"variants": 4}))
    res = invoke("status", tmp_path)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[1].split() == ["v000", "done", "4", "0.500", "3.2", "h1"]
    assert lines[2].split() == ["v001", "failed", "boom"]
    assert lines[3].split()[:2] == ["v002", "running"]
    assert lines[4].split() == ["v003", "pending"]
    assert lines[-1] == "1 done, 1 failed, 1 pending, 1 running"
    res = invoke("status", tmp_path / "nothing")
    assert res.exit_code == 1 and "no variants directory" in res.output


def test_status_names_a_variant_whose_process_died_interrupted(tmp_path):
    """A temporary variant dir of a dead process on this host: interrupted, always."""
    import socket
    import subprocess

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid is now free: no process of that pid exists here
    vdir = tmp_path / "variants"
    (vdir / f".tmp-v000-{socket.gethostname()}-{dead.pid}").mkdir(parents=True)
    (vdir / f".tmp-v000-{socket.gethostname()}-{dead.pid}/running.json").write_text(
        json.dumps({"id": "v000", "host": socket.gethostname(), "pid": dead.pid,
                    "started": 0}))
    (vdir / "train.json").write_text(json.dumps({"variants": 1}))
    res = invoke("status", tmp_path)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[1].split()[:2] == ["v000", "interrupted"]
    assert lines[-1] == "1 interrupted"


def test_the_field_mapping_the_errors_name_is_a_flag(setup, tmp_path):
    """The error says "set --answer-field": train has that flag, and it works."""
    base, _, _ = setup
    pool = tmp_path / "renamed.jsonl"
    pool.write_text("".join(json.dumps({"key": f"q{i}", "question": f"{i}+0?", "solution": "0"})
                            + "\n" for i in range(12)))
    res = invoke("train", *common(base, pool, tmp_path / "run"), "--variants", 2, "--plan-only",
                 "--problem-field", "question", "--answer-field", "solution",
                 "--id-field", "key", "--limit", 11)
    assert res.exit_code == 0, res.output
    recs = [json.loads(line) for line in res.output.splitlines()]
    assert len(recs) == 2 and {r["kept"] + r["dropped"] for r in recs} == {11}
    res = invoke("train", *common(base, pool, tmp_path / "run"), "--variants", 2, "--plan-only",
                 "--limit", 0, "--answer-field", "solution")
    assert res.exit_code == 1
    assert res.output == ("Error: limit=0 must be at least 1 (the first N pool rows); leave "
                          "it out to use the whole pool\n")


def test_the_demo_experiment_file_works_in_the_stage_commands(tmp_path):
    """`ensemble train configs/demo.toml` resolves base = "demo" as `ensemble run` does:
    the shipped model for the default [pretrain] settings, and the same plan."""
    from ensemble.pipeline import ExperimentConfig, resolve_base
    from train_variants.plan import make_plan, plan_lines
    from train_variants.pretrain import SHIPPED

    demo = Path(__file__).resolve().parents[1] / "configs" / "demo.toml"
    res = invoke("train", demo, "--plan-only", "--out", tmp_path / "r")
    assert res.exit_code == 0, res.output
    cfg = ExperimentConfig.from_toml(demo, out=str(tmp_path / "r"))
    base = resolve_base(cfg.base, cfg.pretrain, progress=False)
    assert base == str(SHIPPED)
    train = cfg.train_config(base)
    assert res.output.splitlines() == list(plan_lines(make_plan(train), train.indices))
    assert len(res.output.splitlines()) == 32
