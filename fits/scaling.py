"""Scaling-law fits of accuracy against committee size (pure numpy / statsmodels).

The headline model is ``accuracy(k) = a + b ln k`` fitted by OLS on one log-spaced k grid
(:func:`fit_grid`), the same for every condition, so the slope is a property of the
curve and not of which k happened to be voted: on an every-k grid most points sit in the
top decade of k and dominate the fit (b = 0.040 with every k of one 200-voter curve,
0.056 with 40 log-spaced k, 0.101 with k = 1..16).

The points of one curve are averages over the *same* problems and voters: they are
strongly correlated and nearly noise-free, so OLS standard errors, R^2 and AIC computed
as if they were independent measure nothing useful and are not reported.  The
uncertainty comes from the bootstrap over problems (refitting every resampled curve),
and the law itself is judged by :func:`holdout_error`: fit on the lower part of the
grid and see how far the prediction at the top lands from the measurement.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LogFit:
    """Result of ``accuracy = a + b ln k`` over a k grid.

    ``a_ci``/``b_ci`` are bootstrap percentile CIs over problems when computed (NaN
    otherwise).
    """

    a: float
    b: float
    k_min: int
    k_max: int
    n_points: int
    a_ci: tuple[float, float] = (float("nan"), float("nan"))
    b_ci: tuple[float, float] = (float("nan"), float("nan"))

    def predict(self, k) -> np.ndarray:
        return self.a + self.b * np.log(np.asarray(k, dtype=float))

    def __repr__(self) -> str:
        ci = ""
        if np.isfinite(self.b_ci[0]):
            ci = f", b 95% CI [{self.b_ci[0]:.4f}, {self.b_ci[1]:.4f}]"
        return (f"LogFit(acc = {self.a:.4f} + {self.b:.4f} ln k{ci}; over k={self.k_min}.."
                f"{self.k_max}, {self.n_points} log-spaced points)")


@dataclass(frozen=True)
class SaturatingFit:
    """Result of ``accuracy = c - d k^(-beta)`` (approaches c as k grows)."""

    c: float
    d: float
    beta: float
    converged: bool

    def predict(self, k) -> np.ndarray:
        return self.c - self.d * np.asarray(k, dtype=float) ** (-self.beta)

    def __repr__(self) -> str:
        return (f"SaturatingFit(acc = {self.c:.4f} - {self.d:.4f} k^-{self.beta:.3f}"
                f"{'' if self.converged else ', NOT converged'})")


def fit_grid(available, k_min: int, k_max: int, points: int = 20) -> np.ndarray:
    """The k at which curves are fitted: about ``points`` log-spaced k in [k_min, k_max].

    Parameters
    ----------
    available : array of int
        The k that were voted (for several conditions: the k they all have).
    k_min, k_max : int
        The range of the fit.
    points : int
        How many log-spaced targets; each is replaced by the nearest available k (in
        ln k), duplicates dropped, so a grid voted on every k and one voted on
        ``log:40`` give (nearly) the same fit.

    Returns
    -------
    numpy.ndarray
        Sorted distinct k, always holding the smallest and largest available k in range.

    Examples
    --------
    >>> fit_grid(np.arange(1, 201), 1, 200, 8).tolist()
    [1, 2, 5, 10, 21, 44, 94, 200]
    >>> fit_grid([1, 2, 4, 8, 16], 1, 16, 20).tolist()
    [1, 2, 4, 8, 16]
    """
    ks = np.asarray(available, dtype=np.int64)
    ks = np.unique(ks[(ks >= k_min) & (ks <= k_max)])
    if len(ks) <= 2:
        return ks
    targets = np.geomspace(ks[0], ks[-1], max(points, 2))
    nearest = np.abs(np.log(ks)[None, :] - np.log(targets)[:, None]).argmin(axis=1)
    return np.unique(ks[nearest])


def log_fit(ks, acc) -> LogFit:
    """OLS fit of ``acc = a + b ln k``.

    Parameters
    ----------
    ks : array of int
        Committee sizes (at least two distinct values).
    acc : array of float
        Accuracy at each k.

    Returns
    -------
    LogFit

    Notes
    -----
    Uses statsmodels OLS for the point estimate only: its standard errors assume
    independent residuals, which curve points are not (see module docstring).

    Examples
    --------
    >>> k = np.array([1, 2, 4, 8])
    >>> fit = log_fit(k, 0.3 + 0.02 * np.log(k))
    >>> round(fit.a, 10), round(fit.b, 10)
    (0.3, 0.02)
    """
    import statsmodels.api as sm

    ks = np.asarray(ks, dtype=float)
    acc = np.asarray(acc, dtype=float)
    if len(np.unique(ks)) < 2:
        raise ValueError(
            f"a fit needs at least two distinct k; got {np.unique(ks).astype(int).tolist()} "
            "(lower --k-min or vote on more k)"
        )
    X = sm.add_constant(np.log(ks), has_constant="add")
    a, b = sm.OLS(acc, X).fit().params
    return LogFit(float(a), float(b), int(ks.min()), int(ks.max()), len(ks))


def log_fit_many(ks, curves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares ``a, b`` for many curves at once (rows of ``curves``), in closed form.

    Used for the bootstrap, where thousands of resampled curves share one design.
    """
    x = np.log(np.asarray(ks, dtype=float))
    xc = x - x.mean()
    sxx = float((xc**2).sum())
    curves = np.atleast_2d(curves)
    b = (curves - curves.mean(axis=1, keepdims=True)) @ xc / sxx
    a = curves.mean(axis=1) - b * x.mean()
    return a, b


def saturating_fit(ks, acc) -> SaturatingFit:
    """Least-squares fit of ``acc = c - d k^(-beta)`` with ``1e-4 <= beta <= 20``.

    Notes
    -----
    For a fixed beta the model is linear in c and d, so they are solved exactly and only
    the residual as a function of beta is minimised (variable projection, Golub and
    Pereyra 1973): a grid over ln beta, then a bounded scalar search around the best
    grid point.  This stays fast and stable on curves that are exactly logarithmic,
    where beta runs to its lower bound (c - d k^-beta -> (c - d) + d beta ln k).  It is
    judged against the log law by the same held-out check (:func:`holdout_error`), not
    by AIC: the points are correlated, so likelihood-based criteria mean nothing here.
    """
    from scipy.optimize import minimize_scalar

    ks = np.asarray(ks, dtype=float)
    acc = np.asarray(acc, dtype=float)
    if len(ks) < 4:
        raise ValueError(f"the saturating fit has 3 parameters and needs >= 4 points, got {len(ks)}")

    def solve(log_beta: float):
        Z = np.column_stack([np.ones_like(ks), -(ks ** -np.exp(log_beta))])
        coef, *_ = np.linalg.lstsq(Z, acc, rcond=None)
        return coef, float(((acc - Z @ coef) ** 2).sum())

    lo, hi = np.log(1e-4), np.log(20.0)
    grid = np.linspace(lo, hi, 41)
    rss = [solve(b)[1] for b in grid]
    i = int(np.argmin(rss))
    res = minimize_scalar(lambda b: solve(b)[1], bounds=(grid[max(i - 1, 0)],
                                                         grid[min(i + 1, len(grid) - 1)]),
                          method="bounded", options={"xatol": 1e-10})
    best = res.x if res.success and res.fun <= rss[i] else grid[i]
    (c, d), _ = solve(best)
    if not np.all(np.isfinite([c, d])):
        return SaturatingFit(np.nan, np.nan, np.nan, False)
    return SaturatingFit(float(c), float(d), float(np.exp(best)), True)


def holdout_error(ks, curves, k_fit_max: int) -> np.ndarray:
    """Measured minus predicted accuracy at the top k, the log law fitted below ``k_fit_max``.

    Parameters
    ----------
    ks : array of int
        The fit grid (sorted), its last element the k where the prediction is checked.
    curves : ndarray, shape (n_curves, len(ks)) or (len(ks),)
        Accuracy curves on that grid (the measured one and/or bootstrap resamples).
    k_fit_max : int
        Only grid points with ``k <= k_fit_max`` enter the fit.

    Returns
    -------
    numpy.ndarray
        One value per curve: ``acc(k_top) - (a + b ln k_top)``.  Near zero: ln k
        extrapolated over the held-out range; negative: the curve bends down
        (saturates) faster than the log law predicts.

    Examples
    --------
    >>> k = np.array([1, 2, 4, 8, 16, 32])
    >>> holdout_error(k, 0.3 + 0.02 * np.log(k), 8).round(12).tolist()
    [0.0]
    """
    ks = np.asarray(ks)
    curves = np.atleast_2d(np.asarray(curves, dtype=float))
    low = ks <= k_fit_max
    if low.sum() < 2:
        raise ValueError(f"the held-out check needs two grid points at k <= {k_fit_max}; "
                         f"the grid is {ks.tolist()}")
    a, b = log_fit_many(ks[low], curves[:, low])
    return curves[:, -1] - (a + b * np.log(ks[-1]))
