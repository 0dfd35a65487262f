"""The vote stage's typed config (the ``[vote]`` table) and the committee-size grid.

``VoteConfig.from_dict`` rejects unknown keys and wrong types (ensemble.core.config), so
a typo in a config file is an error, not a silently ignored setting; ``to_dict`` is what
is written next to the stage's outputs (``vote.json``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from ensemble.core.canonical import CANONICAL_MODES
from ensemble.core.config import StrictConfig, check_seed, setting
from ensemble.core.rundir import default_output

# exact: every committee, no sampling noise (a proved truncation bound past ~256 voters);
# monte-carlo: B committees per k shared by all problems, for the committee spread;
# histogram-mc: B committees per (problem, k) drawn from the answer histogram, cost
# independent of the voter count, with a Hoeffding bound.
ESTIMATORS = ("exact", "monte-carlo", "histogram-mc")


@dataclass
class VoteConfig(StrictConfig):
    """The ``[vote]`` table: how answers become accuracy-versus-k curves."""

    TABLE: ClassVar[str] = "[vote]"

    input: Path = setting(help="A run directory (answers/**.parquet) or one answers file.")
    out: Path | None = setting(None, "Output directory [default: RUN/votes, or NAME_votes "
                               "beside an answers file NAME.*].")
    k: str | None = setting(None, "Committee sizes: 1:200, 1,2,4,8 or log:40 [default: "
                            "every k].")
    # Split, equivalent wrong answers are weaker rivals and inflate accuracy.
    canonical: str = setting("number", "Merge answers that are the same number written "
                             "differently; math: also math-verify-equivalent answers "
                             "(slower).", choices=CANONICAL_MODES)
    estimator: str = setting("exact", "exact: every committee (a proved error bound past "
                             "~256 voters); monte-carlo: committees shared by all problems "
                             "(gives the committee spread); histogram-mc: committees drawn "
                             "from each problem's answer counts.", choices=ESTIMATORS)
    # SE of a Monte-Carlo mean ~ sd / sqrt(1000)
    committees: int = setting(1000, "Monte-Carlo committees per k.")
    seed: int = setting(0, "Seeds Monte-Carlo committees and the bootstrap.")
    # 1000 resamples give stable 95% percentile CIs
    bootstrap: int = setting(1000, "Bootstrap resamples over problems for the diversity "
                             "statistics and the fits (0 to skip; the curve's CIs need none).")
    ci: float = setting(0.95, "Confidence level of every interval.")
    force: bool = setting(False, "Replace votes of another input in --out.")

    def __post_init__(self):
        super().__post_init__()
        self.input = Path(self.input)
        if self.out is not None:
            self.out = Path(self.out)
        check_seed(self.seed)
        if self.committees < 1:
            raise ValueError(f"committees={self.committees} must be at least 1")
        if self.bootstrap < 0:
            raise ValueError(f"bootstrap={self.bootstrap} must be 0 (skip) or more")
        if not 0 < self.ci < 1:
            raise ValueError(f"ci={self.ci} must lie strictly between 0 and 1, e.g. 0.95")
        if self.k is not None:
            parse_k(self.k, None)  # fail on a malformed spec before any data is read

    @property
    def out_dir(self) -> Path:
        return self.out if self.out is not None else default_output(self.input, "votes")


def parse_k(spec: str | None, n_voters: int | None) -> np.ndarray:
    """Committee sizes from a spec.

    Parameters
    ----------
    spec : str or None
        ``"1:200"`` (inclusive range), ``"1:200:5"`` (with a step), ``"1,2,4,8"``,
        ``"log:40"`` (40 log-spaced distinct integers from 1 to the voter count), or
        None for every k from 1 to the voter count.
    n_voters : int or None
        Voters in the pool; None only checks the syntax.

    Returns
    -------
    numpy.ndarray
        Sorted distinct integers.

    Examples
    --------
    >>> parse_k("1:5", 10).tolist()
    [1, 2, 3, 4, 5]
    >>> parse_k("log:4", 1000).tolist()
    [1, 10, 100, 1000]
    """
    if spec is None or str(spec).strip() in ("", "all"):
        if n_voters is None:
            return np.array([], dtype=np.int64)
        ks = np.arange(1, n_voters + 1)
    else:
        s = str(spec).replace(" ", "")
        m = re.fullmatch(r"log:(\d+)", s)
        if m:
            num = int(m.group(1))
            if num < 1:
                raise ValueError(f"k spec {spec!r}: log:M needs M >= 1")
            if n_voters is None:
                return np.array([], dtype=np.int64)
            ks = _log_grid(n_voters, num)
        elif re.fullmatch(r"\d+:\d+(:\d+)?", s):
            parts = [int(x) for x in s.split(":")]
            lo, hi, step = parts[0], parts[1], parts[2] if len(parts) == 3 else 1
            if lo < 1 or hi < lo or step < 1:
                raise ValueError(
                    f"k spec {spec!r}: a range lo:hi[:step] needs 1 <= lo <= hi and step >= 1"
                )
            top = lo + (hi - lo) // step * step
            # Checked before the range is built: 1:10**20 must be an error, not an array.
            if n_voters is None:
                return np.array([], dtype=np.int64)
            if top > n_voters:
                raise ValueError(f"k={top} exceeds the {n_voters} voters")
            ks = np.arange(lo, hi + 1, step)
        elif re.fullmatch(r"\d+(,\d+)*,?", s):
            ks = sorted({int(x) for x in s.split(",") if x})
            if ks[0] < 1:
                raise ValueError(f"k spec {spec!r}: committee sizes start at 1")
            if n_voters is None:
                return np.array([], dtype=np.int64)
            if ks[-1] > n_voters:
                raise ValueError(f"k={ks[-1]} exceeds the {n_voters} voters")
            ks = np.array(ks)
        else:
            raise ValueError(
                f"k spec {spec!r} is not understood; use a range like 1:200, a list like "
                "1,2,4,8, or log:40"
            )
    ks = np.asarray(ks, dtype=np.int64)
    if n_voters is not None and ks.size and ks.max() > n_voters:
        raise ValueError(f"k={int(ks.max())} exceeds the {n_voters} voters")
    return ks


def _log_grid(n: int, num: int) -> np.ndarray:
    """``num`` distinct integers from 1 to n, as evenly spaced in ln k as integers allow."""
    if num >= n:
        return np.arange(1, n + 1)
    if num == 1:
        return np.array([n])
    m = num
    while True:
        ks = np.unique(np.round(np.geomspace(1, n, m)).astype(np.int64))
        if len(ks) >= num:
            return ks
        m += 1
