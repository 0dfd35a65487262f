"""Integer-coded voter pools: the answers table as the voting statistics see it.

Each condition becomes a matrix of answer codes (problems x voters); the repetition
control becomes one such matrix per control model, voted on its own samples only.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ensemble.core.answers import REPETITION, MissingAnswersWarning, natural_key


@dataclass
class Pool:
    """Voters of one condition (or one model) on a fixed list of problems.

    ``codes[p, v]`` is voter v's answer code on problem p (-1: no answer) and
    ``gold[p]`` the gold code; codes are only comparable within a problem.
    """

    name: str
    voters: list[str]
    codes: np.ndarray
    gold: np.ndarray
    missing: int = 0  # (voter, problem) cells with no row, counted as no answer

    @property
    def n_voters(self) -> int:
        return self.codes.shape[1]

    def correct_counts(self) -> np.ndarray:
        return (self.codes == self.gold[:, None]).sum(axis=1)


@dataclass
class Pools:
    """Voter pools of every condition on one shared problem list."""

    problems: list[str]
    pools: dict[str, Pool] = field(default_factory=dict)
    by_model: dict[str, list[Pool]] = field(default_factory=dict)


def build_pools(table: pd.DataFrame) -> Pools:
    """Turn the table into integer-coded voter pools.

    Collaboration voters are the (model_id, sample) pairs of that condition; the
    repetition control has one pool per model_id whose voters are its samples.  Every
    other condition name is treated like collaboration.  All pools share the problem
    list (the union over the table), so bootstraps can pair problems across
    conditions; a voter without a row for a problem counts as no answer, with a
    MissingAnswersWarning.  Rows whose ``correct`` is true vote for the gold class
    even when written differently (the grader judged them equivalent).
    """
    problems = sorted(table["problem_id"].unique(), key=natural_key)
    pindex = {p: i for i, p in enumerate(problems)}
    t = table.assign(_p=table["problem_id"].map(pindex))
    ans = t["answer"]
    if "correct" in t.columns:
        ans = ans.mask(t["correct"].fillna(False).astype(bool), t["gold"])
    t["_ans"] = ans
    # One integer code per distinct (problem, answer) string; gold uses the same codes.
    both = pd.concat([t[["_p", "_ans"]].rename(columns={"_ans": "s"}),
                      t[["_p", "gold"]].rename(columns={"gold": "s"})]).dropna()
    both = both.drop_duplicates().sort_values(["_p", "s"])
    both["code"] = both.groupby("_p").cumcount()
    codebook = {(p, s): c for p, s, c in zip(both["_p"], both["s"].astype(str), both["code"])}
    t["_code"] = [
        -1 if pd.isna(s) else codebook[(p, str(s))] for p, s in zip(t["_p"], t["_ans"])
    ]
    gold_of = t.drop_duplicates("_p").set_index("_p")["gold"]
    gold = np.array([codebook[(i, str(gold_of[i]))] for i in range(len(problems))])
    out = Pools(problems)
    for cond in sorted(t["condition"].unique()):
        sub = t[t["condition"] == cond]
        if cond == REPETITION:
            pools = []
            for model in sorted(sub["model_id"].unique(), key=natural_key):
                m = sub[sub["model_id"] == model]
                pools.append(_pool(f"{cond}/{model}", m, ["sample"], len(problems), gold))
            out.by_model[cond] = pools
        else:
            out.pools[cond] = _pool(cond, sub, ["model_id", "sample"], len(problems), gold)
    return out


def _pool(name: str, rows: pd.DataFrame, voter_cols: list[str], n_problems: int,
          gold: np.ndarray) -> Pool:
    voter_keys = rows[voter_cols].astype(str).agg("/".join, axis=1)
    voters = sorted(voter_keys.unique(), key=natural_key)
    vindex = {v: i for i, v in enumerate(voters)}
    codes = np.full((n_problems, len(voters)), -1, dtype=np.int64)
    vi = voter_keys.map(vindex).to_numpy()
    codes[rows["_p"].to_numpy(), vi] = rows["_code"].to_numpy()
    filled = np.zeros(codes.shape, dtype=bool)
    filled[rows["_p"].to_numpy(), vi] = True
    missing = int((~filled).sum())
    if missing:
        warnings.warn(
            f"{name}: {missing} (voter, problem) answers are missing (of "
            f"{filled.size}); they count as no answer",
            MissingAnswersWarning,
            stacklevel=3,
        )
    return Pool(name, voters, codes, gold, missing)
