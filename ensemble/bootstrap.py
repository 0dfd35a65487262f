"""Bootstrap over problems, paired across conditions (pure numpy)."""

from __future__ import annotations

import numpy as np


def problem_resamples(n_problems: int, reps: int, seed: int) -> np.ndarray:
    """Indices of ``reps`` bootstrap resamples of the problems, shape ``(reps, n_problems)``.

    Using the same index matrix for every condition pairs the resamples, so the
    bootstrap of a difference between conditions keeps their per-problem correlation.
    """
    if reps == 0:
        return np.zeros((0, n_problems), dtype=np.int64)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xB007]))
    return rng.integers(0, n_problems, size=(reps, n_problems))


def resampled_means(W: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Mean over problems of every resample: ``W`` is (problems, K), result (reps, K).

    Parameters
    ----------
    W : ndarray, shape (problems, K)
        Per-problem values (accuracy at each k).
    idx : ndarray of int, shape (reps, problems)
        Resample indices from :func:`problem_resamples`.

    Notes
    -----
    Computed as ``counts @ W / P`` where ``counts[r, p]`` is how often problem p is in
    resample r: a (reps x P) @ (P x K) product instead of a (reps, P, K) gather.
    """
    reps, p = idx.shape
    if reps == 0:
        return np.zeros((0, W.shape[1]))
    counts = np.zeros((reps, W.shape[0]))
    np.add.at(counts, (np.repeat(np.arange(reps), p), idx.ravel()), 1.0)
    return counts @ W / p


def percentile_ci(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of bootstrap ``samples`` along axis 0 (NaN when there are none)."""
    if len(samples) == 0:
        nan = np.full(samples.shape[1:], np.nan)
        return nan, nan.copy()
    alpha = (1 - level) / 2
    lo, hi = np.quantile(samples, [alpha, 1 - alpha], axis=0)
    return lo, hi
