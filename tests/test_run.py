"""`ensemble run` and the experiment config: checks up front, the run directory's memory."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from ensemble.cli import main
from ensemble.demo import DEMO_CONFIG, demo_config
from ensemble.pipeline import ExperimentConfig, claim_run_dir, dump_toml, fresh_start
from tests.helpers import execute_notebook, kill_when

ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_config_errors_are_caught_before_anything_runs(tmp_path):
    bad = [
        ('out = "r"\nbase = "b"\ncolour = 1\n',
         "unknown experiment config key(s) colour; top-level keys are out, base, seed and the tables "
         "[pretrain], [train], [answer], [vote], [fit]"),
        ('out = "r"\n', "missing base at the top level of the experiment config"),
        ('out = "r"\nbase = "b"\n[train]\nstepz = 3\n', "unknown [train] key(s) stepz; known keys: "),
        ('out = "r"\nbase = "b"\n[answer]\nbase = "c"\n',
         "[answer] sets base, which the experiment sets for every stage; move it to the top of the file"),
        ('out = "r"\nbase = "b"\n[pretrain]\nsteps = 3\n',
         "a [pretrain] table needs base = 'demo' (got base = 'b'); drop the table or the base"),
        ('out = "r"\nbase = "b"\n[vote]\nk = "1:4"\nbootstrapp = 3\n', "unknown [vote] key(s) bootstrapp"),
        ('out = "r"\nbase = \n', "not valid TOML"),
        # wrong types: the key, the value and what it should be, nothing written
        ('out = "r"\nbase = "b"\n[vote]\nbootstrap = "many"\n',
         "Error: [vote] bootstrap = 'many' must be an integer, not a string"),
        ('out = "r"\nbase = "b"\n[answer]\nbenchmark = "x"\ntemperature = "hot"\n',
         "Error: [answer] temperature = 'hot' must be a number, not a string"),
        ('out = "r"\nbase = "b"\n[train]\nvariants = "two"\n',
         "Error: [train] variants = 'two' must be an integer, not a string"),
        ('out = "r"\nbase = "b"\n[train]\ngradient_checkpointing = 1\n',
         "Error: [train] gradient_checkpointing = 1 must be true or false, not an integer"),
        ('out = "r"\nbase = "b"\n[fit]\nk_min = 1.5\n',
         "Error: [fit] k_min = 1.5 must be an integer, not a number"),
        ('out = "r"\nbase = "b"\nseed = "zero"\n',
         "Error: experiment config seed = 'zero' must be an integer, not a string"),
        ('out = "r"\nbase = "demo"\n[pretrain]\nsteps = "many"\n',
         "Error: pretrain setting steps = 'many' must be an integer, not a string"),
        ('out = "r"\nbase = "b"\n[answer]\nbenchmark = "x"\nrepetition_model = [1, 2]\n',
         "Error: [answer] repetition_model = [1, 2] must be a list of strings, not a list"),
    ]
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    res = CliRunner().invoke(main, ["run", str(empty)])
    assert res.exit_code == 1 and res.output == (
        f"Error: {empty} is a directory without config.toml; give a config file (.toml) or "
        "a run directory made by `ensemble run`\n")
    binary = _write(tmp_path / "bin.toml", "")
    binary.write_bytes(b"\xff\xfe\x00bad")
    res = CliRunner().invoke(main, ["run", str(binary)])
    assert res.exit_code == 1
    assert res.output == f"Error: {binary}: not a text file; a config is TOML text\n"
    for i, (text, message) in enumerate(bad):
        conf = _write(tmp_path / f"c{i}.toml", text)
        res = CliRunner().invoke(main, ["run", str(conf)])
        assert res.exit_code == 1, text
        assert message in res.output, (text, res.output)
        assert not (tmp_path / "r").exists()


def test_stage_values_are_checked_before_the_base_is_built(tmp_path):
    conf = _write(tmp_path / "c.toml", f'out = "{tmp_path / "r"}"\nbase = "demo"\n'
                  '[train]\npool = "synthetic:8"\n'
                  '[answer]\nbenchmark = "synthetic:10"\ntemperature = 9.0\n')
    res = CliRunner().invoke(main, ["run", str(conf)])
    assert res.exit_code == 1
    assert res.output == "Error: temperature=9.0 must lie in [0, 5]\n"
    assert not (tmp_path / "r").exists()


def test_toml_round_trip():
    data = {"out": "runs/x", "base": 'a "quoted" \\ path', "seed": 3,
            "train": {"vary": ["order", "mask"], "learning_rate": 1e-4, "flag": True,
                      "none": None},
            "answer": {"max_tokens": 64}}
    back = tomllib.loads(dump_toml(data))
    expected = {**data, "train": {k: v for k, v in data["train"].items() if v is not None}}
    assert back == expected


def test_run_directory_refuses_another_experiment(tmp_path):
    cfg = ExperimentConfig.from_dict({"out": tmp_path / "r", "base": "b",
                                      "answer": {"temperature": 0.6, "workers": 1}})
    path = claim_run_dir(cfg)
    assert tomllib.loads(path.read_text())["answer"] == {"temperature": 0.6, "workers": 1}
    # Who does the work may change; what the results are may not.
    again = ExperimentConfig.from_dict({"out": tmp_path / "r", "base": "b",
                                        "answer": {"temperature": 0.6, "workers": 4}})
    claim_run_dir(again)
    other = ExperimentConfig.from_dict({"out": tmp_path / "r", "base": "b",
                                        "answer": {"temperature": 0.9}})
    with pytest.raises(ValueError) as err:
        claim_run_dir(other)
    assert str(err.value) == (f"{path} describes another experiment (answer.temperature: 0.6 "
                              f"there, 0.9 now); use another --out, or delete {tmp_path / 'r'} "
                              "to start over")


def test_run_directory_with_results_but_no_config_is_refused(tmp_path):
    """E.g. a simulated demo's answers: an experiment must not resume from them."""
    (tmp_path / "r" / "answers" / "collaboration").mkdir(parents=True)
    (tmp_path / "r" / "votes").mkdir()
    cfg = ExperimentConfig.from_dict({"out": tmp_path / "r", "base": "b"})
    with pytest.raises(ValueError) as err:
        claim_run_dir(cfg)
    assert str(err.value) == (f"{tmp_path / 'r'} already holds answers/, votes/ from another "
                              f"run and no config.toml; use another --out, or delete "
                              f"{tmp_path / 'r'} to start over")
    assert not (tmp_path / "r" / "config.toml").exists()
    # An empty or unrelated directory is fine.
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "notes.txt").write_text("x")
    claim_run_dir(ExperimentConfig.from_dict({"out": tmp_path / "s", "base": "b"}))


def test_run_stops_with_the_training_error_when_fewer_than_two_variants_train(tmp_path,
                                                                              monkeypatch):
    import train_variants.training as train_stage
    from ensemble.pipeline import run_experiment
    from train_variants.training import TrainSummary

    def all_fail(cfg, progress=True):
        return TrainSummary(planned=["v000", "v001", "v002"], done=["v002"],
                            failed={"v000": "OSError: disk full", "v001": "OSError: disk full"})

    monkeypatch.setattr(train_stage, "run_train", all_fail)
    base = tmp_path / "base"
    base.mkdir()
    cfg = ExperimentConfig.from_dict({"out": tmp_path / "r", "base": str(base),
                                      "train": {"pool": "synthetic:8", "variants": 3},
                                      "answer": {"benchmark": "synthetic:4"}})
    with pytest.raises(RuntimeError) as err:
        run_experiment(cfg, progress=False, log=lambda *_: None)
    assert str(err.value) == (f"only 1 of 3 variants trained; v000 failed with OSError: disk "
                              f"full (all failures: `ensemble status {tmp_path / 'r'}`)")
    assert not (tmp_path / "r" / "answers").exists()


def test_fresh_refuses_a_directory_that_is_not_a_run(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ValueError, match="is not a run directory .no config.toml.; refusing"):
        fresh_start(tmp_path)
    assert (tmp_path / "precious.txt").exists()


def test_demo_config_is_embedded_and_in_configs():
    assert (ROOT / "configs" / "demo.toml").read_text() == DEMO_CONFIG.read_text()
    cfg = demo_config(variants=5, seed=2)
    assert cfg.base == "demo" and cfg.train["variants"] == 5 and cfg.seed == 2
    with pytest.raises(ValueError, match="variants=1: voting needs at least 2 voters"):
        demo_config(variants=1)


@pytest.mark.parametrize("name", ["demo.toml", "smollm2-arith.toml", "paper-aime24.toml"])
def test_every_preset_parses_and_builds_its_stage_configs(name):
    path = ROOT / "configs" / name
    if not path.exists():
        pytest.fail(f"{path} is missing")
    cfg = ExperimentConfig.from_toml(path)
    train, answer = cfg.train_config("some/base"), cfg.answer_config("some/base")
    vote, fit = cfg.vote_config(), cfg.fit_config()
    # What each preset is for, so an edit that breaks its purpose fails here.
    assert train.out == answer.out == vote.input == fit.votes.parent == cfg.out
    assert train.seed == answer.seed == vote.seed == cfg.seed
    assert train.variants >= 2 and answer.condition == "both"
    assert answer.max_lora_rank >= train.lora_rank  # the trained adapters can be served
    assert answer.repetition_models >= 2  # the control is several models
    assert vote.estimator == "exact" and vote.bootstrap >= 1000
    expected = {"demo.toml": ("demo", "synthetic:200:d2:s99:small", 32),
                "smollm2-arith.toml": ("smollm2-135m", "synthetic:100:d1:s99:add2", 8),
                "paper-aime24.toml": ("Qwen/Qwen3-30B-A3B", "aime24", 200)}[name]
    assert (cfg.base, answer.benchmark, train.variants) == expected
    if name == "demo.toml":  # sized for power (issue 15): the gap's CI near +-0.05 or less
        assert train.variants >= 32 and answer.repetition_models >= 8
        assert answer.repetition_samples >= 6 and cfg.base == "demo" and not cfg.pretrain
    if name in ("demo.toml", "smollm2-arith.toml"):  # issue 14: the population trainer
        assert train.trainer == "population"
    if name == "smollm2-arith.toml":  # issue 15: a task SmolLM2 learns, shown by example
        assert train.pool.endswith(":add2") and "\\boxed{{" in train.prompt_template
        assert train.prompt_template == answer.prompt_template and train.variants >= 8
    if name == "paper-aime24.toml":
        # Expert (3-D) LoRA on the MoE base is 8 GB an adapter and vLLM cannot serve it.
        assert set(train.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj"}
        assert answer.repetition_samples == 200 and answer.backend == "vllm"
        assert train.launcher == "ray" and answer.launcher == "ray"


# --- end to end, every stage with vLLM, on a tiny local model -----------------------

TINY_EXPERIMENT = """
out = "{out}"
base = "{base}"
seed = 0
[train]
pool = "synthetic:32:d1:s1"
variants = 3
steps = 2
batch_size = 2
num_generations = 2
max_completion_length = 16
lora_rank = 8
lora_alpha = 8
learning_rate = 1e-3
mask_fraction = 0.25
gradient_checkpointing = false
[answer]
benchmark = "synthetic:8:d1:s9"
max_tokens = 16
max_lora_rank = 8
temperature = 1.0
[vote]
bootstrap = 100
"""


def _experiment(tmp_path, name, base) -> Path:
    return _write(tmp_path / f"{name}.toml", TINY_EXPERIMENT.format(out=tmp_path / name, base=base))


def _run_cmd(conf: Path) -> list[str]:
    import sys

    return [sys.executable, "-m", "ensemble.cli", "run", str(conf)]


def _env():
    import os

    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
            "VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _fingerprint(run: Path) -> dict[str, bytes]:
    """Every result file of a run (not logs or timings), by relative path."""
    import pandas as pd

    out = {}
    for p in sorted((run / "variants").glob("v*/adapter_model.safetensors")):
        out[str(p.relative_to(run))] = p.read_bytes()
    for p in sorted((run / "answers").rglob("*.parquet")):
        out[str(p.relative_to(run))] = pd.read_parquet(p).to_csv(index=False).encode()
    for name in ("votes/curve.csv", "votes/curve_by_model.csv"):
        out[name] = (run / name).read_bytes()
    return out


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    from ensemble.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("e2e") / "base")


@pytest.mark.slow
def test_run_every_stage_then_resume_after_a_kill(tiny_base, tmp_path):
    import json
    import subprocess

    conf = _experiment(tmp_path, "whole", tiny_base)
    proc = subprocess.run(_run_cmd(conf), env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "whole"
    # The run-directory contract.
    assert tomllib.loads((run / "config.toml").read_text())["train"]["variants"] == 3
    for v in ("v000", "v001", "v002"):
        meta = json.loads((run / "variants" / v / "variant.json").read_text())
        assert meta["id"] == v and (run / "variants" / v / "adapter_config.json").exists()
        assert (run / "answers" / "collaboration" / f"{v}.parquet").exists()
    assert (run / "answers" / "repetition" / "v000.parquet").exists()
    for f in ("answers.json", "votes/curve.csv", "votes/curve.parquet",
              "votes/per_problem.parquet", "votes/vote.json", "fits/fit.json",
              "figures/scaling.png", "figures/voter_accuracy.png"):
        assert (run / f).exists(), f
    report = (run / "report.md").read_text()
    assert "collaboration" in report and "repetition" in report
    assert "collaboration: k=1" in proc.stdout and "repetition: k=1" in proc.stdout
    # Kill a second run (SIGKILL, no clean-up) once its first variant is done ...
    conf = _experiment(tmp_path, "killed", tiny_base)
    killed = tmp_path / "killed"
    kill_when(_run_cmd(conf), _env(),
              lambda: bool(list((killed / "variants").glob("v*/variant.json"))))
    assert not (killed / "answers").exists(), "the run was not interrupted during training"
    trained = list((killed / "variants").glob("v*/variant.json"))
    assert 1 <= len(trained) < 3, "the kill did not land after some training"
    # ... then kill the rerun once answering has begun (an answer file is written) ...
    kill_when(_run_cmd(conf), _env(), lambda: bool(list((killed / "answers").rglob("*.parquet"))))
    assert not (killed / "votes").exists(), "the run was not interrupted while answering"
    assert len(list((killed / "variants").glob("v*/variant.json"))) == 3  # training finished
    assert list((killed / "answers").rglob("*.parquet")), "no answering work before the kill"
    # ... and again: the rerun finishes with the same results as the uninterrupted run.
    proc = subprocess.run(_run_cmd(conf), env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _fingerprint(run), _fingerprint(killed)
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    # A different experiment in the same directory is refused.
    changed = _write(tmp_path / "changed.toml", conf.read_text().replace("steps = 2", "steps = 3"))
    proc = subprocess.run(_run_cmd(changed), env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "describes another experiment (train.steps: 2 there, 3 now)" in proc.stderr
    # The notebook draws its figures from a real run directory.
    outputs = execute_notebook(run)
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert (run / "notebook_figures" / "scaling.png").exists()


def test_gpu_smoke_config_uses_every_gpu_path_it_can_name():
    """configs/gpu-smoke.toml: the tiny MoE through the paths of the reference run."""
    cfg = ExperimentConfig.from_toml(ROOT / "configs" / "gpu-smoke.toml")
    train, answer = cfg.train_config("tiny"), cfg.answer_config("tiny")
    assert cfg.base == "tiny-moe" and train.variants == 2 and train.steps == 2
    assert answer.benchmark.startswith("synthetic:2:")  # 2 problems
    assert train.launcher == answer.launcher == "ray" and answer.backend == "auto"
    assert train.micro_batch < train.generation_batch  # TRL's steps_per_generation path
    assert set(train.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert train.use_vllm is None  # TRL's vLLM generation wherever CUDA is
    # a repetition unit above a shard's share, so it is split and merged
    per_rep = answer.repetition_samples * 2
    total = train.variants * 2 + answer.repetition_models * per_rep
    assert per_rep > total / answer.workers


@pytest.mark.slow
def test_gpu_smoke_config_runs_end_to_end_on_cpu(tmp_path):
    """On CPU transformers generation stands in for vLLM (training and answering); the
    rest -- Ray actors, micro-batches, split and merged answering units -- is as on GPUs."""
    import json
    import subprocess
    import sys

    out = tmp_path / "smoke"
    proc = subprocess.run([sys.executable, "-m", "ensemble.cli", "run",
                           str(ROOT / "configs" / "gpu-smoke.toml"), "--out", str(out)],
                          env=_env(), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "collaboration: k=1" in proc.stdout and "repetition: k=1" in proc.stdout
    conf = json.loads((out / "variants/train.json").read_text())["config"]
    assert conf["micro_batch"] == 4 and conf["launcher"] == "ray"
    for v in ("v000", "v001"):
        run = json.loads((out / "variants" / v / "variant.json").read_text())["run"]
        assert run["device"] == "cpu" and run["vllm_generation"] is False
    answered = json.loads((out / "answers.json").read_text())["config"]
    assert answered["backend"] == "hf"
    logs = [json.loads(line) for line in (out / "answers.log.jsonl").read_text().splitlines()]
    assert sorted(r["shard"] for r in logs) == ["0/3", "1/3", "2/3"]
    parts = sorted(d for r in logs for d in r["done"] if "[" in d)
    assert parts == ["repetition/v000[0:32]", "repetition/v000[32:64]",
                     "repetition/v001[0:32]", "repetition/v001[32:64]"]
    assert sorted(p.name for p in (out / "answers/repetition").glob("*.parquet")) == [
        "v000.parquet", "v001.parquet"]
    assert not list((out / "answers").rglob(".parts/*.parquet"))
    assert (out / "report.md").exists()
