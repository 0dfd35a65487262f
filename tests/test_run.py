"""`ensemble run` and the experiment config: checks up front, the run directory's memory."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from ensemble.cli import main
from ensemble.demo import DEMO_CONFIG, demo_config
from ensemble.experiment import ExperimentConfig, claim_run_dir, dump_toml, fresh_start

ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_config_errors_are_caught_before_anything_runs(tmp_path):
    bad = [
        ('out = "r"\nbase = "b"\ncolour = 1\n',
         "unknown experiment key(s) colour; top-level keys are out, base, seed and the tables "
         "[pretrain], [train], [answer], [vote], [fit]"),
        ('out = "r"\n', "the experiment config needs base at its top level"),
        ('out = "r"\nbase = "b"\n[train]\nstepz = 3\n', "unknown [train] key(s) stepz; known keys: "),
        ('out = "r"\nbase = "b"\n[answer]\nbase = "c"\n',
         "[answer] sets base, which the experiment sets for every stage; move it to the top of the file"),
        ('out = "r"\nbase = "b"\n[pretrain]\nsteps = 3\n',
         "a [pretrain] table needs base = 'demo' (got base = 'b'); drop the table or the base"),
        ('out = "r"\nbase = "b"\n[vote]\nk = "1:4"\nbootstrapp = 3\n', "unknown [vote] key(s) bootstrapp"),
        ('out = "r"\nbase = \n', "not valid TOML"),
    ]
    for i, (text, message) in enumerate(bad):
        conf = _write(tmp_path / f"c{i}.toml", text)
        res = CliRunner().invoke(main, ["run", str(conf)])
        assert res.exit_code == 1, text
        assert message in res.output, (text, res.output)
        assert not (tmp_path / "r").exists()


def test_stage_values_are_checked_before_the_base_is_built(tmp_path):
    conf = _write(tmp_path / "c.toml", f'out = "{tmp_path / "r"}"\nbase = "demo"\n'
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
    cfg.train_config("some/base")
    cfg.answer_config("some/base")
    cfg.vote_config()
    cfg.fit_config()
