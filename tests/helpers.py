"""Small builders shared by the tests."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import pandas as pd

from ensemble.simulate import SimConfig, simulate_answers

ROOT = Path(__file__).resolve().parents[1]


def small_table(**kw) -> pd.DataFrame:
    cfg = SimConfig(**{"problems": 12, "variants": 10, "samples": 10, "seed": 3, **kw})
    return simulate_answers(cfg)


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False)
    return path


def kill_when(cmd: list[str], env: dict, ready: Callable[[], bool], timeout: float = 900,
              poll: float = 0.02) -> None:
    """Run ``cmd`` in its own session; SIGKILL the whole group (no clean-up) once ``ready()``.

    Fails the test unless the kill happened: a process that finished on its own (or
    failed) before ``ready()`` was seen interrupted nothing, and one that never became
    ready within ``timeout`` is killed and reported.  Callers then check on disk that
    the kill landed between the stages they meant.
    """
    import tempfile

    import pytest

    # stderr to a file, not a pipe: progress bars would fill a pipe and block the child.
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log,
                            start_new_session=True)
    # ``timeout`` bounds a hung process; the test fails then, it does not pass on time.
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if ready():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"{cmd[:4]}... never reached the kill point in {timeout} s")
        time.sleep(poll)
    log.seek(0)
    err = log.read().decode(errors="replace")[-2000:]
    pytest.fail(f"the process ended (exit {proc.returncode}) before the kill point, so it "
                f"interrupted nothing: {err}")


def execute_notebook(run: Path) -> list[dict]:
    """Execute ``notebooks/scaling.ipynb`` on the run directory ``run``; its code outputs."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "notebooks" / "scaling.ipynb", as_version=4)
    os.environ["ENSEMBLE_RUN"] = str(run)
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(ROOT)}}).execute()
    finally:
        del os.environ["ENSEMBLE_RUN"]
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


# Runs the CLI with every commit point of a stage's files counted: os.replace (a file or
# directory renamed into place) and runio._exchange (a directory swapped in).  At the
# KILL_AT-th one the process SIGKILLs itself just before it (one past the last: when the
# command is done but has not exited): no finally, no clean-up, the state a `kill -9` or
# a lost node leaves at that moment.
_KILLER = r"""
import os, signal, sys
import ensemble.core.files as runio
at, seen = int(os.environ["KILL_AT"]), [0]
def commit(real):
    def wrapped(*args, **kwargs):
        seen[0] += 1
        if seen[0] == at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return wrapped
os.replace = commit(os.replace)
runio._exchange = commit(runio._exchange)
from ensemble.cli import main
try:
    main(sys.argv[1:], prog_name="ensemble")
except SystemExit as exc:
    code = exc.code
if at == seen[0] + 1:
    os.kill(os.getpid(), signal.SIGKILL)
sys.exit(code)
"""


def kill_at_commit(argv: list, at: int) -> bool:
    """Run ``ensemble ARGV`` killed (SIGKILL) just before its ``at``-th commit point.

    Returns True when the kill happened, False when the command finished first (it has
    fewer commit points); any other ending fails the test with its stderr.
    """
    import sys

    import pytest

    env = {**os.environ, "KILL_AT": str(at), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-c", _KILLER, *map(str, argv)], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)
    if proc.returncode == -signal.SIGKILL:
        return True
    if proc.returncode != 0:
        pytest.fail(f"ensemble {argv[0]} failed (exit {proc.returncode}): "
                    f"{proc.stderr.decode(errors='replace')[-2000:]}")
    return False
