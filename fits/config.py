"""The fit stage's typed config (the ``[fit]`` table of an experiment file)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ensemble.core.config import StrictConfig, check_seed, setting
from ensemble.core.rundir import default_output, votes_dir_of


@dataclass
class FitConfig(StrictConfig):
    """How the vote curves are fitted and compared (``fits/fit.json``)."""

    TABLE: ClassVar[str] = "[fit]"

    votes: Path = setting(help="A votes directory (or the run directory holding votes/).")
    out: Path | None = setting(None, "Output directory [default: RUN/fits for RUN/votes, "
                               "NAME_fits beside any other votes directory NAME_votes].")
    k_min: int = setting(1, "Smallest k included in the fits; raise it to fit only the "
                         "asymptotic part.")
    # Log-spaced points of the common fit grid: every decade of k weighs the same, so b
    # does not depend on whether the vote computed every k or a log:M grid.
    grid_points: int = setting(20, "Log-spaced k of the common fit grid.")
    holdout_ratio: float = setting(4.0, "The extrapolation check fits k <= k_max / ratio "
                                   "and predicts k_max.")
    bootstrap: int | None = setting(None, "Bootstrap resamples [default: as many as the "
                                    "vote used].")
    seed: int = setting(0, "Seeds the bootstrap.")
    ci: float = setting(0.95, "Confidence level of every interval.")
    force: bool = setting(False, "Replace a fit of other votes in --out.")

    def __post_init__(self):
        super().__post_init__()
        self.votes = votes_dir_of(Path(self.votes)).path  # a run directory: its votes
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
