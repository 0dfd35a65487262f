"""Small builders shared by the tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ensemble.simulate import SimConfig, simulate_answers


def small_table(**kw) -> pd.DataFrame:
    cfg = SimConfig(**{"problems": 12, "variants": 10, "samples": 10, "seed": 3, **kw})
    return simulate_answers(cfg)


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    df.to_csv(path, index=False)
    return path
