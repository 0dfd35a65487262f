"""Simulated answer tables with a known structure, for the demo and for tests.

The generative story mirrors what the collaboration-versus-repetition comparison is
about: every model has its own skill per problem and its own *favourite* wrong
answers.  Repeated samples of one model share that model's blind spots, so voting
over them saturates; different variants err differently, so their votes spread the
wrong mass over more answers and the gold answer wins more often.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ensemble.core.files import write_parquet
from ensemble.core.rundir import RunDir


@dataclass
class SimConfig:
    problems: int = 30  # AIME size
    variants: int = 32  # collaboration voters
    samples: int = 32  # repetition samples of each control model
    repetition_models: int = 4  # control models (the first variants), as `ensemble answer` does
    base_skill: float = -0.6  # mean logit of P(correct); -0.6 -> about 35% at k=1
    problem_sd: float = 1.6  # spread of problem difficulty (logit)
    variant_sd: float = 0.7  # variant-to-variant skill spread per problem (logit)
    wrong_classes: int = 12  # distinct wrong answers per problem
    wrong_concentration: float = 0.6  # Dirichlet: small -> a few dominant wrong answers
    model_bias: float = 3.0  # how strongly a model prefers its own wrong answers
    abstain: float = 0.03  # P(no extractable answer)
    seed: int = 0


def _model_distribution(rng, logit_correct, wrong_weights, cfg: SimConfig):
    """P(answer class) per problem for one model: column 0 gold, then wrong classes."""
    p_correct = 1.0 / (1.0 + np.exp(-logit_correct))
    # The model's own wrong-answer preference: population weights tilted by a
    # model-specific Dirichlet draw.
    own = rng.dirichlet(np.ones(cfg.wrong_classes) / cfg.model_bias, size=len(p_correct))
    wrong = wrong_weights * own
    wrong /= wrong.sum(axis=1, keepdims=True)
    probs = np.column_stack([p_correct, (1 - p_correct)[:, None] * wrong])
    return probs


def simulate_answers(cfg: SimConfig = SimConfig()) -> pd.DataFrame:
    """An answers table with a collaboration and a repetition condition.

    Returns
    -------
    pandas.DataFrame
        Columns condition, model_id, problem_id, sample, answer, gold, correct.
        Answers are integers 0-999 written as strings (AIME style); None = no answer.
    """
    rng = np.random.default_rng(cfg.seed)
    P = cfg.problems
    gold = rng.choice(1000, size=P, replace=False)
    wrong_vals = np.stack([
        rng.choice(np.setdiff1d(np.arange(1000), [g]), size=cfg.wrong_classes, replace=False)
        for g in gold
    ])
    difficulty = cfg.base_skill + cfg.problem_sd * rng.standard_normal(P)
    wrong_weights = rng.dirichlet(np.full(cfg.wrong_classes, cfg.wrong_concentration), size=P)
    rows = []

    def emit(condition, model_id, probs, n_samples):
        for s in range(n_samples):
            for p in range(P):
                c = rng.choice(cfg.wrong_classes + 1, p=probs[p])
                if rng.random() < cfg.abstain:
                    ans = None
                else:
                    ans = str(gold[p]) if c == 0 else str(wrong_vals[p, c - 1])
                rows.append((condition, model_id, f"p{p:03d}", s, ans, str(gold[p])))

    variant_probs = []
    for v in range(cfg.variants):
        logit = difficulty + cfg.variant_sd * rng.standard_normal(P)
        variant_probs.append(_model_distribution(rng, logit, wrong_weights, cfg))
        emit("collaboration", f"v{v:03d}", variant_probs[-1], 1)
    # The control samples one of the population's own models repeatedly, so both
    # conditions start from the same k=1 accuracy in expectation.
    for m in range(cfg.repetition_models):
        emit("repetition", f"v{m:03d}", variant_probs[m % len(variant_probs)], cfg.samples)
    df = pd.DataFrame(rows, columns=["condition", "model_id", "problem_id", "sample", "answer",
                                     "gold"])
    df["correct"] = df["answer"] == df["gold"]
    return df


def write_run_answers(df: pd.DataFrame, run_dir: Path) -> list[Path]:
    """Write a table as ``answers/<condition>/<model_id>.parquet`` (the run-dir layout)."""
    paths = []
    for (cond, model), part in df.groupby(["condition", "model_id"], sort=True):
        path = RunDir(run_dir).answer_file(str(cond), str(model))
        write_parquet(path, part.reset_index(drop=True))
        paths.append(path)
    return paths
