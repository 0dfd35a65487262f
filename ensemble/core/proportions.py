"""Intervals for mean accuracies: Wilson's score interval with an effective sample size.

One accuracy curve point is a mean over problems (collaboration: of one fixed pool's
vote accuracies) or over problems and control models (repetition: ``w[model, problem]``
in a crossed design).  Its interval here is Wilson's, from the effective number of trials
``p(1 - p) / Var(mean)``, with the variance of a crossed design: the problems' spread,
and for several control models the between-model component, which is estimated from
M - 1 degrees of freedom and so gets the t_{M-1} quantile rather than the normal one.
Where control models differ by skill alone, the percentile bootstrap it replaces for
curve points covered 0.89-0.91 with 4 of them and 0.74-0.77 with 2; this covers 0.92-0.98
in every measured case (benchmarks/bench_curve_coverage.py; docs/results.md, "Curve
intervals").  :mod:`fits.intervals` builds the gap interval
(Newcombe's MOVER) on the same pieces.

Pure numpy/scipy, no I/O.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def wilson_interval(p_hat: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion from ``n`` (possibly effective) trials.

    Parameters
    ----------
    p_hat : float
        Observed proportion (or mean of values in [0, 1]).
    n : float
        Sample size; a non-integer *effective* sample size ``p(1-p) / Var(p_hat)`` is
        allowed; ``inf`` gives the zero-width interval ``(p_hat, p_hat)``.
    level : float
        Confidence level.

    Returns
    -------
    (low, high) : tuple of float

    References
    ----------
    .. [1] Wilson, E. B. (1927). Probable inference, the law of succession, and
       statistical inference. JASA 22(158), 209-212.

    Examples
    --------
    >>> [round(x, 4) for x in wilson_interval(0.0, 10)]
    [0.0, 0.2775]
    """
    if not np.isfinite(n):
        return float(p_hat), float(p_hat)
    z = stats.norm.ppf(0.5 + level / 2)
    z2n = z * z / n
    centre = (p_hat + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * np.sqrt(p_hat * (1 - p_hat) / n + z2n / (4 * n))
    return float(max(centre - half, 0.0)), float(min(centre + half, 1.0))


def effective_n(p_hat: float, var_mean: float, p: int) -> float:
    """``p(1-p) / Var(mean)``; ``p`` (the problems) for a boundary proportion, inf for a
    constant.

    Examples
    --------
    >>> effective_n(0.5, 0.25 / 40, 40), effective_n(1.0, 0.0, 30)
    (40.0, 30.0)
    """
    if p_hat <= 0.0 or p_hat >= 1.0:
        return float(p)
    if var_mean <= 0.0:
        return float("inf")
    return p_hat * (1 - p_hat) / var_mean


def model_inflation(m: int, level: float) -> float:
    """``(t_{M-1} / z)^2``: the factor on the between-model variance (1 for M < 2).

    Examples
    --------
    >>> round(model_inflation(4, 0.95), 3), model_inflation(1, 0.95)
    (2.636, 1.0)
    """
    if m < 2:
        return 1.0
    q = 0.5 + level / 2
    return float((stats.t.ppf(q, m - 1) / stats.norm.ppf(q)) ** 2)


def model_components(w: np.ndarray) -> tuple[float, float, float]:
    """``(s2_M, MS_res, sigma_b2)`` of a model x problem table ``w`` (M >= 2).

    ``s2_M`` is the sample variance of the models' mean accuracies, ``MS_res`` the
    residual mean square of the two-way table, and ``sigma_b2 = s2_M - MS_res / P`` the
    ANOVA estimator of the between-model variance (it can be negative).

    Examples
    --------
    >>> [round(x, 4) for x in model_components(np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]]))]
    [0.0556, 0.1667, 0.0]
    """
    m, p = w.shape
    mbar, rbar = w.mean(axis=1), w.mean(axis=0)
    resid = w - mbar[:, None] - rbar[None, :] + w.mean()
    s2_m = float(mbar.var(ddof=1))
    ms_res = float((resid ** 2).sum() / ((m - 1) * (p - 1)))
    return s2_m, ms_res, s2_m - ms_res / p


def mean_variance(w, level: float = 0.95) -> float:
    """The variance of the mean accuracy of ``w`` used by :func:`mean_interval`.

    ``rbar.var() / P`` (``rbar`` the per-problem mean over models; ``ddof=0``, which is
    exactly ``p(1 - p)`` for 0/1 data) plus, for M >= 2 models,
    ``max(sigma_b2, 0) / M`` scaled by :func:`model_inflation`.
    """
    w = np.atleast_2d(np.asarray(w, dtype=float))
    m, p = w.shape
    rbar = w.mean(axis=0)
    var = float(rbar.var()) / p
    if m >= 2:
        var += max(model_components(w)[2], 0.0) / m * model_inflation(m, level)
    return var


def mean_interval(w, level: float = 0.95) -> tuple[float, float]:
    """Interval for the mean accuracy of ``w``: problems ``(P,)``, or control models x
    problems ``(M, P)`` for "a typical control model".

    Parameters
    ----------
    w : array_like, shape (P,) or (M, P)
        Accuracies in [0, 1] (vote accuracies at one k, pass@k, ...).
    level : float
        Confidence level.

    Returns
    -------
    (low, high) : tuple of float

    Notes
    -----
    Wilson's interval with ``n = p(1 - p) / V`` effective trials, ``V`` from
    :func:`mean_variance`.  Assumptions: problems an i.i.d. sample of the problem
    distribution; for ``(M, P)``, control models an i.i.d. sample of the model
    population, crossed with the problems.  With one row the interval is conditional on
    that model (or pool).  With M = 2 the between-model term has one degree of freedom
    and its estimate is often 0: the interval is then nearer "given these two models"
    than "a typical model" (the report says so).

    References
    ----------
    .. [1] Wilson, E. B. (1927). JASA 22(158), 209-212.
    .. [2] Newcombe, R. G. (1998). Interval estimation for the difference between
       independent proportions. Statistics in Medicine 17(8), 873-890.

    Examples
    --------
    >>> [round(x, 4) for x in mean_interval([1, 0, 1, 1, 0, 1, 1, 1, 0, 1])]
    [0.3968, 0.8922]
    """
    w = np.atleast_2d(np.asarray(w, dtype=float))
    if w.shape[1] < 2:
        return float("nan"), float("nan")
    p_hat = float(w.mean())
    n = effective_n(p_hat, mean_variance(w, level), w.shape[1])
    return wilson_interval(p_hat, n, level)


def curve_intervals(W, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """:func:`mean_interval` at every k of ``W``, shape ``(P, K)`` or ``(M, P, K)``.

    Examples
    --------
    >>> lo, hi = curve_intervals(np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 0.5]]))
    >>> [round(float(x), 3) for x in lo], [round(float(x), 3) for x in hi]
    ([0.208, 0.476], [0.939, 0.965])
    """
    W = np.asarray(W, dtype=float)
    if W.ndim == 2:
        W = W[None]
    out = [mean_interval(W[:, :, j], level) for j in range(W.shape[2])]
    return np.array([o[0] for o in out]), np.array([o[1] for o in out])
