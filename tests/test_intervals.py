"""Tests of fits/intervals.py: gap confidence intervals and two-stage resampling."""

from __future__ import annotations

import doctest
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

import fits.intervals as iv
from fits.intervals import (
    METHODS,
    GapInterval,
    gap_interval,
    gap_variance,
)

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    """The coverage simulation lives in benchmarks/bench_gap_coverage.py."""
    name = "bench_gap_coverage"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _paired(n11, n12, n21, n22):
    """0/1 vectors of a paired 2x2 table: rows = collaboration, columns = repetition."""
    wc = np.array([1] * n11 + [1] * n12 + [0] * n21 + [0] * n22, dtype=float)
    wr = np.array([1] * n11 + [0] * n12 + [1] * n21 + [0] * n22, dtype=float)
    return wc, wr[None, :]


def _wilson(x, n, z=1.959963984540054):
    p = x / n
    centre = (2 * x + z * z) / (2 * (n + z * z))
    half = z * np.sqrt(z * z + 4 * x * (1 - p)) / (2 * (n + z * z))
    return centre - half, centre + half


def _newcombe_by_hand(n11, n12, n21, n22):
    """Newcombe (1998) method 10, written out from the paper's formulas with counts."""
    n = n11 + n12 + n21 + n22
    p1, p2 = (n11 + n12) / n, (n11 + n21) / n
    l1, u1 = _wilson(n11 + n12, n)
    l2, u2 = _wilson(n11 + n21, n)
    margins = [n11 + n12, n21 + n22, n11 + n21, n12 + n22]
    a = n11 * n22 - n12 * n21
    if min(margins) == 0:
        phi = 0.0
    elif a > n / 2:
        phi = (a - n / 2) / np.sqrt(np.prod(margins, dtype=float))
    elif a >= 0:
        phi = 0.0
    else:
        phi = a / np.sqrt(np.prod(margins, dtype=float))
    d = p1 - p2
    lo = d - np.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    hi = d + np.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    return lo, hi


# --------------------------------------------------------------------------- Newcombe


def test_newcombe_bentur_example_by_hand():
    # Airway hyper-responsiveness before/after transplantation (Bentur et al. 2009),
    # the paired example of Fagerland, Lydersen & Laake (2014): 1, 1, 7, 12.
    # By hand: p1 = 2/21, p2 = 8/21; Wilson 2/21 = [0.0265, 0.2892],
    # 8/21 = [0.2075, 0.5912]; AD - BC = 5 <= N/2, so phi = 0;
    # L = -0.2857 - sqrt(0.0687^2 + 0.2102^2) = -0.5068,
    # U = -0.2857 + sqrt(0.1735^2 + 0.1940^2) = -0.0254.
    wc, wr = _paired(1, 1, 7, 12)
    gi = gap_interval(wc, wr, method="newcombe")
    assert gi.gap == pytest.approx(-6 / 21)
    assert gi.low == pytest.approx(-0.5068, abs=2e-4)
    assert gi.high == pytest.approx(-0.0254, abs=2e-4)


@pytest.mark.parametrize("table", [(1, 1, 7, 12), (59, 6, 16, 80), (36, 12, 2, 0),
                                   (10, 3, 1, 16), (0, 4, 1, 25), (5, 0, 0, 25),
                                   (3, 2, 9, 1)])
def test_newcombe_equals_method_10_for_binary_data(table):
    wc, wr = _paired(*table)
    gi = gap_interval(wc, wr, method="newcombe")
    lo, hi = _newcombe_by_hand(*table)
    assert (gi.low, gi.high) == pytest.approx((max(lo, -1), min(hi, 1)), abs=1e-10)


def test_wilson_matches_closed_form():
    for x, n in [(0, 10), (3, 10), (10, 10), (7, 31)]:
        assert iv.wilson_interval(x / n, n) == pytest.approx(_wilson(x, n), abs=1e-12)
    assert iv.wilson_interval(0.3, np.inf) == (0.3, 0.3)


# --------------------------------------------------------------------------- identities


@pytest.mark.parametrize("method", METHODS)
def test_identical_conditions_give_zero_gap(method):
    rng = np.random.default_rng(3)
    w = rng.random(25)
    gi = gap_interval(w, w[None, :], method=method, reps=300)
    assert gi.gap == 0.0
    assert gi.low <= 0.0 <= gi.high
    assert gi.sources == ("problems",)
    if method != "newcombe":
        # every per-problem difference is 0: nothing varies, zero width
        assert gi.width == pytest.approx(0.0, abs=1e-12)


def test_identical_binary_conditions_newcombe_is_symmetric():
    wc, wr = _paired(9, 0, 0, 11)
    gi = gap_interval(wc, wr, method="newcombe")
    assert gi.gap == 0.0
    assert gi.low == pytest.approx(-gi.high)
    assert gi.high > 0


@pytest.mark.parametrize("method", METHODS)
def test_identical_models_several(method):
    # 3 identical control models equal to the collaboration: no spread anywhere.
    w = np.linspace(0.1, 0.9, 12)
    gi = gap_interval(w, np.tile(w, (3, 1)), method=method, reps=200)
    assert gi.gap == pytest.approx(0.0, abs=1e-12)
    assert gi.low <= 0.0 <= gi.high
    if method not in ("newcombe",):
        assert gi.width == pytest.approx(0.0, abs=1e-12)


def test_sources_name_the_variance_included():
    rng = np.random.default_rng(0)
    wc, wr = rng.random(20), rng.random((4, 20))
    for m in METHODS:
        gi = gap_interval(wc, wr, method=m, reps=200)
        want = ("problems",) if m == "percentile" else ("problems", "control models")
        assert gi.sources == want
        assert gap_interval(wc, wr[:1], method=m, reps=200).sources == ("problems",)


def test_auto_resolves_and_repr():
    wc, wr = _paired(10, 3, 1, 16)
    gi = gap_interval(wc, wr)
    assert gi.method == iv.choose_method(wc, wr) == "newcombe"
    assert isinstance(gi, GapInterval)
    text = repr(gi)
    assert text.startswith("GapInterval(gap=+0.0667, 95% CI [") and "newcombe" in text
    rng = np.random.default_rng(1)
    wc, wr = rng.random(30), rng.random((4, 30))
    assert gap_interval(wc, wr[:1]).method == "t"          # one model, fractional values
    assert gap_interval(wc, wr).method == "newcombe"       # several control models


# --------------------------------------------------------------------------- properties


@pytest.mark.parametrize("method", METHODS)
def test_level_monotone(method):
    rng = np.random.default_rng(5)
    wc = rng.random(30)
    wr = np.clip(wc - 0.1 + 0.2 * rng.random((4, 30)), 0, 1)
    prev = None
    for level in (0.5, 0.8, 0.9, 0.95, 0.99):
        gi = gap_interval(wc, wr, level=level, method=method, reps=1000, seed=7)
        assert gi.low <= gi.gap <= gi.high
        if prev is not None:
            assert gi.low <= prev.low + 1e-12 and gi.high >= prev.high - 1e-12
        prev = gi


@pytest.mark.parametrize("method", METHODS)
def test_reproducible_by_seed(method):
    rng = np.random.default_rng(8)
    wc, wr = rng.random(20), rng.random((3, 20))
    a = gap_interval(wc, wr, method=method, reps=500, seed=11)
    b = gap_interval(wc, wr, method=method, reps=500, seed=11)
    assert a == b
    if method in ("percentile", "two_stage_percentile", "bca", "studentized"):
        c = gap_interval(wc, wr, method=method, reps=500, seed=12)
        assert (c.low, c.high) != (a.low, a.high)


def test_bad_inputs_raise_clear_errors():
    wc, wr = np.full(5, 0.5), np.full((2, 5), 0.5)
    with pytest.raises(ValueError, match="5 problems but wr has 4 columns"):
        gap_interval(wc, wr[:, :4])
    with pytest.raises(ValueError, match="M=0 control models"):
        gap_interval(wc, np.zeros((0, 5)))
    for level in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            gap_interval(wc, wr, level=level)
    with pytest.raises(ValueError, match="wc must be 1-D"):
        gap_interval(wr, wr)
    with pytest.raises(ValueError, match="wr must be 2-D"):
        gap_interval(wc, wr[None])
    with pytest.raises(ValueError, match="must lie in \\[0, 1\\]"):
        gap_interval(wc + 1, wr)
    with pytest.raises(ValueError, match="at least 2"):
        gap_interval(wc[:1], wr[:, :1])
    with pytest.raises(ValueError, match="unknown"):
        gap_interval(wc, wr, method="wald")
    with pytest.raises(ValueError, match="reps=0"):
        gap_interval(wc, wr, method="bca", reps=0)
    with pytest.raises(ValueError, match="finite"):
        gap_interval(np.r_[wc[:4], np.nan], wr)


def test_one_dimensional_wr_is_one_model():
    rng = np.random.default_rng(2)
    wc, wr = rng.random(10), rng.random(10)
    assert gap_interval(wc, wr, method="t") == gap_interval(wc, wr[None], method="t")


# --------------------------------------------------------------------------- variance


def test_gap_variance_single_model_is_paired_variance():
    rng = np.random.default_rng(4)
    wc, wr = rng.random(17), rng.random((1, 17))
    v = gap_variance(wc, wr)
    d = wc - wr[0]
    assert v.var == pytest.approx(d.var(ddof=1) / 17)
    assert v.var_models == 0.0 and v.df == 16


def test_gap_variance_unbiased_on_crossed_normal_model():
    # r[m,p] = a_p + b_m + e_mp, c_p = 0.8 a_p + f_p : the estimator's mean should
    # match the Monte-Carlo variance of the gap estimate.
    rng = np.random.default_rng(10)
    p, m, sims = 20, 4, 4000
    gaps, vars_, dfs = np.empty(sims), np.empty(sims), np.empty(sims)
    for i in range(sims):
        a = rng.normal(0, 0.08, p)
        r = 0.5 + a + rng.normal(0, 0.05, (m, 1)) + rng.normal(0, 0.06, (m, p))
        c = 0.5 + 0.8 * a + rng.normal(0, 0.05, p)
        v = gap_variance(np.clip(c, 0, 1), np.clip(r, 0, 1))
        gaps[i], vars_[i], dfs[i] = v.gap, v.var, v.df
    true_var = gaps.var()
    assert vars_.mean() == pytest.approx(true_var, rel=0.08)
    # and the t interval with Satterthwaite df covers the true gap (0) at about 95%
    covered = np.abs(gaps) <= stats.t.ppf(0.975, dfs) * np.sqrt(vars_)
    assert 0.93 <= covered.mean() <= 0.975


# --------------------------------------------------------------------------- resampling


def test_two_stage_bootstrap_spread_includes_models():
    # models differ a lot, problems barely: only the two-stage interval sees it
    rng = np.random.default_rng(9)
    base = rng.random(40) * 0.1 + 0.5
    wr = np.clip(base + np.array([[-0.2], [0.0], [0.1], [0.25]]), 0, 1)
    wc = base
    p = gap_interval(wc, wr, method="percentile")
    t = gap_interval(wc, wr, method="two_stage_percentile")
    assert t.width > 5 * p.width


# --------------------------------------------------------------------------- doctests


def test_module_doctests():
    res = doctest.testmod(iv, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0 and res.failed == 0


# --------------------------------------------------------------------------- coverage


def _assert_auto_covers(preset: str, reps: int, boot: int) -> None:
    """Auto's coverage + 2 se >= 0.93 in every (M, k) cell of a bench_gap_coverage preset:
    of the typical-model gap for M >= 2, of the gap given the model for M = 1 (that
    interval is conditional on its model)."""
    bench = _bench()
    size = bench.PRESETS[preset][0]
    _, rec = bench.run_coverage(bench.Population(), size, reps=reps, boot=boot, seed=5,
                                methods=("auto",))
    rows = bench.summarise(rec, ("auto",))
    assert len(rows) == len(size.models) * len(size.resolved_ks())
    for r in rows:
        cov, se = (r["cov"], r["se"]) if r["M"] >= 2 else (r["cov_cond"], r["se_cond"])
        se = max(se, np.sqrt(0.93 * 0.07 / reps))
        assert cov + 2 * se >= 0.93, r


@pytest.mark.slow
def test_auto_coverage_small_simulation():
    """Auto's coverage >= 93% within Monte-Carlo error on a small generative model."""
    _assert_auto_covers("quick", reps=400, boot=200)


@pytest.mark.slow
def test_auto_coverage_heterogeneous_models():
    """Between-model variance dominant (skill sd 0.8), 4 control models: auto >= 93%.

    The Satterthwaite-df versions of ``t`` and ``newcombe`` covered about 0.89-0.92
    here; the per-component t_{M-1} quantile is what brings it back.
    """
    _assert_auto_covers("quick_het", reps=300, boot=100)
