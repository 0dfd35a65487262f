"""Typed configs of the aggregation stages and the committee-size grid.

Each stage has one dataclass; ``from_dict`` rejects unknown keys so a typo in a config
file is an error, not a silently ignored setting, and ``to_dict`` is what is written
next to the stage's outputs.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# exact: every committee, no sampling noise (a proved truncation bound past ~256 voters);
# monte-carlo: B committees per k shared by all problems, for the committee spread;
# histogram-mc: B committees per (problem, k) drawn from the answer histogram, cost
# independent of the voter count, with a Hoeffding bound.
ESTIMATORS = ("exact", "monte-carlo", "histogram-mc")


def _from_dict(cls, data: dict[str, Any]):
    from ensemble.strict import from_dict

    return from_dict(cls, data, f"[{cls.__name__.removesuffix('Config').lower()}]")


def default_output(source: Path, stage: str) -> Path:
    """Where a stage writes when no ``--out`` is given: beside its input, named after it.

    Inside a run directory the names are fixed (``RUN/votes`` -> ``RUN/fits``, the report
    in ``RUN``); any other input X gets ``X_<stage>`` next to it (``a.csv`` ->
    ``a_votes``, ``a_votes`` -> ``a_fits``), so two inputs in one folder never share a
    default output.

    Examples
    --------
    >>> default_output(Path("runs/x/votes"), "fits").as_posix()
    'runs/x/fits'
    >>> default_output(Path("a.csv"), "votes").as_posix(), default_output(Path("a_votes"), "report").as_posix()
    ('a_votes', 'a_report')
    """
    source = Path(source)
    if stage == "votes" and source.is_dir():
        return source / "votes"
    if stage != "votes" and (source / "votes").is_dir() and not (source / "curve.parquet").exists():
        source = source / "votes"  # a run directory given for its votes
    if stage != "votes" and source.name == "votes":
        return source.parent if stage == "report" else source.parent / stage
    stem = source.stem if stage == "votes" else (
        source.name.removesuffix("votes").rstrip("_-.") or source.name)
    return source.parent / f"{stem}_{stage}"


def check_seed(seed: int) -> None:
    """Seeds feed numpy's SeedSequence, which takes integers from 0 up."""
    if seed < 0:
        raise ValueError(f"seed={seed} must be 0 or more")


def _to_dict(obj) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(obj).items()}


@dataclass
class VoteConfig:
    input: Path
    out: Path | None = None  # default: <run>/votes, or <name>_votes beside an answers file
    k: str | None = None  # None: every k from 1 to each pool's voter count
    # Merge answers that are the same number written differently (624, 624.0, +624):
    # split, equivalent wrong answers are weaker rivals and inflate accuracy.  "math"
    # merges math-verify-equivalent answers too (slower); "none" compares strings.
    canonical: str = "number"
    estimator: str = "exact"  # see ESTIMATORS
    committees: int = 1000  # Monte-Carlo committees per k: SE of the mean ~ sd/sqrt(1000)
    seed: int = 0  # seeds Monte-Carlo committees and the bootstrap
    bootstrap: int = 1000  # resamples of problems; 1000 gives stable 95% percentile CIs
    ci: float = 0.95
    force: bool = False  # replace votes of another input in the output directory

    def __post_init__(self):
        self.input = Path(self.input)
        if self.out is not None:
            self.out = Path(self.out)
        if self.estimator not in ESTIMATORS:
            raise ValueError(
                f"estimator={self.estimator!r} is not one of {', '.join(ESTIMATORS)}"
            )
        from ensemble.canonical import CANONICAL_MODES

        if self.canonical not in CANONICAL_MODES:
            raise ValueError(f"canonical={self.canonical!r} is not one of "
                             f"{', '.join(CANONICAL_MODES)}")
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

    from_dict = classmethod(_from_dict)
    to_dict = _to_dict


@dataclass
class FitConfig:
    votes: Path
    out: Path | None = None  # default: <run>/fits, or <name>_fits beside the votes directory
    k_min: int = 1  # smallest k in the fit; raise it to fit only the asymptotic part
    # Log-spaced points of the common fit grid: every decade of k weighs the same, so b
    # does not depend on whether the vote computed every k or a log:M grid.
    grid_points: int = 20
    holdout_ratio: float = 4.0  # the extrapolation check fits k <= k_max / 4, predicts k_max
    bootstrap: int | None = None  # None: as many as vote used (recorded in vote.json)
    seed: int = 0
    ci: float = 0.95
    force: bool = False  # replace a fit of other votes in the output directory

    def __post_init__(self):
        self.votes = Path(self.votes)
        if (self.votes / "votes").is_dir() and not (self.votes / "curve.parquet").exists():
            self.votes = self.votes / "votes"  # a run directory: its votes
        if self.out is not None:
            self.out = Path(self.out)
        check_seed(self.seed)
        if self.bootstrap is not None and self.bootstrap < 0:
            raise ValueError(f"bootstrap={self.bootstrap} must be 0 (skip) or more")
        if self.k_min < 1:
            raise ValueError(f"k_min={self.k_min} must be at least 1")
        if self.grid_points < 2:
            raise ValueError(f"grid_points={self.grid_points} must be at least 2")
        if not self.holdout_ratio > 1:
            raise ValueError(f"holdout_ratio={self.holdout_ratio} must be above 1, e.g. 4")
        if not 0 < self.ci < 1:
            raise ValueError(f"ci={self.ci} must lie strictly between 0 and 1, e.g. 0.95")

    @property
    def out_dir(self) -> Path:
        return self.out if self.out is not None else default_output(self.votes, "fits")

    from_dict = classmethod(_from_dict)
    to_dict = _to_dict


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
