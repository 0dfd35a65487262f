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
