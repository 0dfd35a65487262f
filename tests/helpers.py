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

    Returns when the process is gone: killed, finished on its own, or past ``timeout``
    (then killed too). Callers check on disk that the kill landed where they wanted.
    """
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + timeout
    while proc.poll() is None:
        if ready() or time.time() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(poll)
    proc.wait()


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
