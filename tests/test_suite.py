"""The test suite's own guarantees: isolation from the user's machine, the shared data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]


def test_tests_use_a_throwaway_cache_and_no_hub():
    cache = Path(os.environ["ENSEMBLE_CACHE"])
    assert cache.name.startswith("ensemble-test-cache-") and cache != Path.home() / ".cache"
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    from ensemble.pipeline import cache_root
    from ensemble.core.models import default_cache_dir

    assert default_cache_dir() == cache / "models" and cache_root() == cache


def _pytest_on(tmp_path, code: str, env: dict) -> subprocess.CompletedProcess:
    """Run a one-test file with this suite's conftest, in a copy whose ../shared is absent."""
    tests = tmp_path / "proj" / "tests"
    tests.mkdir(parents=True, exist_ok=True)
    (tests / "__init__.py").write_text("")
    (tests / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    (tests / "test_x.py").write_text(code)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(tests / "test_x.py")], cwd=tmp_path / "proj", env=env,
                          capture_output=True, text=True, timeout=300)


def test_missing_shared_data_skips_for_users_and_fails_in_ci(tmp_path):
    code = "def test_needs_data(shared_data):\n    assert shared_data.is_dir()\n"
    env = {k: v for k, v in os.environ.items() if k != "ENSEMBLE_REQUIRE_SHARED_DATA"}
    user = _pytest_on(tmp_path, code, env)
    assert user.returncode == 0 and "1 skipped" in user.stdout, user.stdout
    ci = _pytest_on(tmp_path, code, {**env, "ENSEMBLE_REQUIRE_SHARED_DATA": "1"})
    assert ci.returncode == 1 and "ENSEMBLE_REQUIRE_SHARED_DATA=1 says it must be there" in (
        ci.stdout), ci.stdout
    assert SHARED_DATA.is_dir() or os.environ.get("ENSEMBLE_REQUIRE_SHARED_DATA") != "1"


def test_bare_pytest_collects_the_suite():
    """`pytest` (not only `python -m pytest`) finds tests.helpers from the repository root."""
    exe = Path(sys.executable).with_name("pytest")
    proc = subprocess.run([str(exe), "--collect-only", "-q", "tests/test_cli_vote.py"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": ""})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "test_vote_writes_contract_files" in proc.stdout


def test_docstring_examples_are_collected():
    """`make test` runs the packages' docstring examples (parse_k's among them)."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:]
    for doctest in ("ensemble/voting/config.py::ensemble.voting.config.parse_k",
                    "fits/scaling.py::fits.scaling.fit_grid",
                    "ensemble/voting/scale.py::ensemble.voting.scale.windowed_accuracy"):
        assert doctest in proc.stdout, doctest


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(exe), "--no-cache"], cwd=root, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(root)})


def test_the_layers_hold():
    """`lint-imports` (pyproject.toml [tool.importlinter]): top -> stages -> ground."""
    proc = _lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in proc.stdout


def test_the_layers_check_fails_on_a_stage_importing_another(tmp_path):
    """The contract is not vacuous: a stage importing another, the ground importing a
    stage, and a cycle inside a package each break it."""
    import shutil

    for pkg in ("ensemble", "eval", "fits", "train_variants"):
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns(
            "__pycache__", "demo_base"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for f, line in (("fits/scaling.py", "from eval.config import AnswerConfig"),
                    ("ensemble/core/grading.py", "from train_variants.config import TrainConfig"),
                    ("eval/backends.py", "from eval.answering import Unit")):
        with open(tmp_path / f, "a") as fh:
            fh.write(f"\n{line}  # noqa\n")
    proc = _lint_imports(tmp_path)
    assert proc.returncode != 0
    for broken in ("fits is not allowed to import eval",
                   "ensemble.core is not allowed to import train_variants",
                   "No cycles are allowed in eval."):
        assert broken in proc.stdout, proc.stdout[-3000:]
def _lock(name: str) -> dict[str, str]:
    lines = (ROOT / "requirements" / name).read_text().splitlines()
    return dict(line.split("==", 1) for line in lines if "==" in line and not line.startswith("#"))


def test_gpu_lock_holds_the_vllm_trl_supports_and_the_extra_it_pins():
    """The `gpu` extra and requirements/gpu-lock.txt: vLLM in TRL's own supported range
    (TRL 1.16 warns outside it), and the versions the extra pins."""
    import importlib.metadata as md
    import tomllib

    from packaging.requirements import Requirement

    gpu, cpu = _lock("gpu-lock.txt"), _lock("cpu-lock.txt")
    trl_vllm = next(Requirement(r) for r in md.requires("trl")
                    if r.startswith("vllm") and 'extra == "vllm"' in r)
    assert gpu["trl"] == cpu["trl"] == md.version("trl")  # the TRL the tests run
    assert trl_vllm.specifier.contains(gpu["vllm"]), (gpu["vllm"], str(trl_vllm.specifier))
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["gpu"]
    pins = {Requirement(r).name: Requirement(r) for r in extra if "==" in r}
    assert set(pins) == {"vllm", "trl", "peft"}
    assert all(r.specifier.contains(gpu[name]) for name, r in pins.items())
    assert gpu["torch"] == cpu["torch"] and gpu["peft"] == cpu["peft"]
