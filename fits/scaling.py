"""Scaling-law fits of accuracy against committee size (pure numpy / statsmodels).

The headline model is ``accuracy(k) = a + b ln k`` fitted by OLS over the k grid.
Points at different k are averages over the *same* problems and voters, so they are
strongly correlated: OLS standard errors and R^2 treat them as independent and are
too optimistic.  The honest uncertainty comes from the bootstrap over problems
(:func:`bootstrap_log_fit`), which refits every resampled curve.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LogFit:
    """Result of ``accuracy = a + b ln k``.

    ``a_se``/``b_se`` are the OLS standard errors (independent-points assumption);
    ``a_ci``/``b_ci`` the bootstrap percentile CIs over problems when computed.
    """

    a: float
    b: float
    a_se: float
    b_se: float
    r2: float
    k_min: int
    k_max: int
    n_points: int
    aic: float
    a_ci: tuple[float, float] = (float("nan"), float("nan"))
    b_ci: tuple[float, float] = (float("nan"), float("nan"))

    def predict(self, k) -> np.ndarray:
        return self.a + self.b * np.log(np.asarray(k, dtype=float))

    def __repr__(self) -> str:
        ci = ""
        if np.isfinite(self.b_ci[0]):
            ci = f", b 95% CI [{self.b_ci[0]:.4f}, {self.b_ci[1]:.4f}]"
        return (f"LogFit(acc = {self.a:.4f} + {self.b:.4f} ln k; se(a)={self.a_se:.4f}, "
                f"se(b)={self.b_se:.4f}{ci}; R2={self.r2:.4f} over k={self.k_min}..{self.k_max}, "
                f"{self.n_points} correlated points)")


@dataclass(frozen=True)
class SaturatingFit:
    """Result of ``accuracy = c - d k^(-beta)`` (approaches c as k grows)."""

    c: float
    d: float
    beta: float
    r2: float
    aic: float
    converged: bool

    def predict(self, k) -> np.ndarray:
        return self.c - self.d * np.asarray(k, dtype=float) ** (-self.beta)

    def __repr__(self) -> str:
        return (f"SaturatingFit(acc = {self.c:.4f} - {self.d:.4f} k^-{self.beta:.3f}; "
                f"R2={self.r2:.4f}, AIC={self.aic:.2f}{'' if self.converged else ', NOT converged'})")


def _aic(rss: float, n: int, p: int) -> float:
    """Gaussian AIC from a residual sum of squares: n ln(RSS/n) + 2p (p = parameters)."""
    return n * np.log(max(rss, 1e-300) / n) + 2 * p


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
    Uses statsmodels OLS; its standard errors assume independent residuals, which
    curve points are not (see module docstring).

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
    res = sm.OLS(acc, X).fit()
    a, b = res.params
    a_se, b_se = res.bse if len(ks) > 2 else (np.nan, np.nan)
    tss = float(((acc - acc.mean()) ** 2).sum())
    rss = float((res.resid**2).sum())
    r2 = 1.0 - rss / tss if tss > 0 else 1.0
    return LogFit(float(a), float(b), float(a_se), float(b_se), float(r2), int(ks.min()),
                  int(ks.max()), len(ks), _aic(rss, len(ks), 2))


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
    """Least-squares fit of ``acc = c - d k^(-beta)`` with ``beta > 0``.

    Notes
    -----
    Fitted with scipy's ``curve_fit`` from a grid of starting betas (the model is
    linear in c and d for fixed beta, so each start solves c, d exactly); compare it
    with :func:`log_fit` by AIC (lower is better, difference > 2 is meaningful by the
    usual rule of thumb; the correlated-points caveat applies to both).
    """
    from scipy.optimize import curve_fit

    ks = np.asarray(ks, dtype=float)
    acc = np.asarray(acc, dtype=float)
    if len(ks) < 4:
        raise ValueError(f"the saturating fit has 3 parameters and needs >= 4 points, got {len(ks)}")

    def model(k, c, d, beta):
        return c - d * k ** (-beta)

    best = None
    for beta0 in (0.05, 0.2, 0.5, 1.0, 2.0):
        Z = np.column_stack([np.ones_like(ks), -(ks ** (-beta0))])
        (c0, d0), *_ = np.linalg.lstsq(Z, acc, rcond=None)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                p, _ = curve_fit(model, ks, acc, p0=(c0, d0, beta0),
                                 bounds=([-np.inf, -np.inf, 1e-4], [np.inf, np.inf, 20.0]),
                                 maxfev=20000)
        except (RuntimeError, ValueError):
            continue
        rss = float(((acc - model(ks, *p)) ** 2).sum())
        if best is None or rss < best[1]:
            best = (p, rss)
    tss = float(((acc - acc.mean()) ** 2).sum())
    if best is None:
        return SaturatingFit(np.nan, np.nan, np.nan, np.nan, np.inf, False)
    (c, d, beta), rss = best
    return SaturatingFit(float(c), float(d), float(beta), 1 - rss / tss if tss > 0 else 1.0,
                         _aic(rss, len(ks), 3), True)
