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
    return resample_counts(idx, W.shape[0]) @ W / p


def resample_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each of ``n`` items is in each resample: shape ``(reps, n)``, floats.

    Examples
    --------
    >>> resample_counts(np.array([[0, 0, 2]]), 3).tolist()
    [[2.0, 0.0, 1.0]]
    """
    reps = idx.shape[0]
    flat = (np.arange(reps)[:, None] * n + idx).ravel()
    return np.bincount(flat, minlength=reps * n).reshape(reps, n).astype(np.float64)


def percentile_ci(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of bootstrap ``samples`` along axis 0 (NaN when there are none)."""
    if len(samples) == 0:
        nan = np.full(samples.shape[1:], np.nan)
        return nan, nan.copy()
    alpha = (1 - level) / 2
    lo, hi = np.quantile(samples, [alpha, 1 - alpha], axis=0)
    return lo, hi


def ci_sources(n_models: int) -> tuple[str, ...]:
    """The variance a CI of this project includes: problems, and control models when
    there are several (they are resampled together with the problems)."""
    return ("problems", "control models") if n_models >= 2 else ("problems",)


def model_resamples(n_models: int, reps: int, seed: int) -> np.ndarray:
    """Indices of ``reps`` resamples of the control models, shape ``(reps, n_models)``.

    Drawn from their own stream, so the problem resamples of :func:`problem_resamples`
    stay the same whether or not models are resampled too.  With one model every
    resample is that model: the interval is then conditional on it.
    """
    if reps == 0 or n_models <= 1:
        return np.zeros((reps, max(n_models, 1)), dtype=np.int64)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x30DE1]))
    return rng.integers(0, n_models, size=(reps, n_models))


def resampled_model_means(W: np.ndarray, idx: np.ndarray, model_idx: np.ndarray) -> np.ndarray:
    """Mean over resampled models and problems: ``W`` is (models, problems, K), result (reps, K).

    Parameters
    ----------
    W : ndarray, shape (models, problems, K)
        Per-model, per-problem values (the repetition control's accuracy at each k).
    idx : ndarray of int, shape (reps, problems)
        Problem resamples (:func:`problem_resamples`), shared with the other condition
        so that differences stay paired.
    model_idx : ndarray of int, shape (reps, models)
        Model resamples (:func:`model_resamples`).

    Notes
    -----
    Problems and models are crossed (every model answers every problem), so each
    resample draws both independently and averages the selected cells: the "pigeonhole"
    bootstrap of Owen (2007), which includes the variance from the choice of control
    model and errs on the wide side by counting the model-by-problem interaction twice.

    References
    ----------
    A. B. Owen, "The pigeonhole bootstrap", Annals of Applied Statistics 1(2), 2007.

    Examples
    --------
    >>> W = np.arange(8, dtype=float).reshape(2, 2, 2)
    >>> resampled_model_means(W, np.array([[0, 1]]), np.array([[1, 1]])).tolist()
    [[5.0, 6.0]]
    """
    reps, p = idx.shape
    m = W.shape[0]
    if reps == 0:
        return np.zeros((0, W.shape[2]))
    if W.shape[1] != p or model_idx.shape[1] != m:
        raise ValueError(f"indices cover {p} problems and {model_idx.shape[1]} models but W "
                         f"has shape {W.shape}")
    cp, cm = resample_counts(idx, p), resample_counts(model_idx, m)
    # M products of (reps x P) @ (P x K), never a (reps, M, P, K) gather.
    return sum(cm[:, j, None] * (cp @ W[j]) for j in range(m)) / (m * p)
