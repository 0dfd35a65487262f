"""ensemble.core.proportions: the curve points' intervals, against an independent
computation and against simulation with a known truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from ensemble.core.proportions import curve_intervals, mean_interval, model_components


def _by_hand(w: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The interval written out with loops: two-way ANOVA, t-inflated model term, Wilson."""
    m, p = w.shape
    grand = sum(w[i, j] for i in range(m) for j in range(p)) / (m * p)
    col = [sum(w[i, j] for i in range(m)) / m for j in range(p)]
    var = sum((c - grand) ** 2 for c in col) / p / p
    if m >= 2:
        row = [sum(w[i, j] for j in range(p)) / p for i in range(m)]
        s2_m = sum((r - grand) ** 2 for r in row) / (m - 1)
        ss = sum((w[i, j] - row[i] - col[j] + grand) ** 2 for i in range(m) for j in range(p))
        sigma_b2 = s2_m - ss / ((m - 1) * (p - 1)) / p
        z, t = stats.norm.ppf(0.975), stats.t.ppf(0.975, m - 1)
        var += max(sigma_b2, 0.0) / m * (t / z) ** 2
    n = grand * (1 - grand) / var
    z = stats.norm.ppf(0.5 + level / 2)
    centre = (grand + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(grand * (1 - grand) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("m", [1, 2, 4])
def test_the_interval_is_the_written_out_formula(m):
    rng = np.random.default_rng(m)
    w = rng.integers(0, 9, size=(m, 25)) / 8
    w[0] = np.clip(w[0] + 0.3, 0, 1)  # a better model: a between-model part for m >= 2
    assert mean_interval(w) == pytest.approx(_by_hand(w), abs=1e-12)
    if m >= 2:
        assert model_components(w)[2] > 0
        # the model term widens it against the problems alone
        lo, hi = mean_interval(w)
        plo, phi = mean_interval(w.mean(axis=0))
        assert hi - lo > phi - plo + 1e-3
    lo, hi = curve_intervals(np.stack([w, w[:, ::-1]], axis=-1))
    assert lo[0] == pytest.approx(mean_interval(w)[0], abs=1e-12)
    assert lo[1] == pytest.approx(mean_interval(w[:, ::-1])[0], abs=1e-12)


def test_constant_and_one_problem_cases():
    # at the boundary Wilson's interval from P trials (not a zero-width one)
    lo, hi = mean_interval(np.ones((3, 10)))
    assert hi == pytest.approx(1.0) and lo == pytest.approx(1.0 - mean_interval(np.zeros((3, 10)))[1])
    assert 0.6 < lo < 0.8
    assert all(np.isnan(mean_interval([0.5])))


def test_coverage_for_a_typical_control_model_in_simulation():
    """Four control models of visibly different skill (the case the percentile bootstrap
    covered only 0.87-0.92), each answering 60 problems 8 times: the interval for "a
    typical model's accuracy" covers the population's at the nominal 95%."""
    rng = np.random.default_rng(20261202)

    def prob(skill, difficulty):
        return 1 / (1 + np.exp(-(skill[:, None] - difficulty[None, :])))

    truth = float(prob(rng.normal(0, 0.8, 400), rng.normal(0, 1.5, 4000)).mean())
    hits, reps = 0, 1000
    for _ in range(reps):
        pr = prob(rng.normal(0, 0.8, 4), rng.normal(0, 1.5, 60))
        w = rng.binomial(8, pr) / 8
        lo, hi = mean_interval(w)
        hits += lo <= truth <= hi
    coverage = hits / reps
    assert coverage >= 0.93, coverage  # 0.95 +- 0.007 (Monte Carlo error)
