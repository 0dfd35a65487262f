"""Scaling fits (`fits.scaling`) and the `ensemble fit` command."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from ensemble.cli import main
from ensemble.simulate import write_run_answers
from fits.scaling import log_fit, log_fit_many, saturating_fit
from tests.helpers import small_table


def test_log_fit_recovers_exact_logarithm():
    ks = np.arange(1, 199)
    fit = log_fit(ks, 0.386 + 0.0172 * np.log(ks))
    assert fit.a == pytest.approx(0.386, abs=1e-12)
    assert fit.b == pytest.approx(0.0172, abs=1e-12)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    assert (fit.k_min, fit.k_max, fit.n_points) == (1, 198, 198)
    assert "0.3860 + 0.0172 ln k" in repr(fit)


def test_log_fit_agrees_with_numpy_lstsq_on_a_real_curve(tmp_path):
    write_run_answers(small_table(problems=30, variants=24, samples=24), tmp_path / "r")
    CliRunner().invoke(main, ["vote", str(tmp_path / "r"), "--bootstrap", "0"],
                       catch_exceptions=False)
    curve = pd.read_csv(tmp_path / "r" / "votes" / "curve.csv")
    for _, d in curve.groupby("condition"):
        X = np.column_stack([np.ones(len(d)), np.log(d.k)])
        (a, b), *_ = np.linalg.lstsq(X, d.accuracy.to_numpy(), rcond=None)
        fit = log_fit(d.k, d.accuracy)
        assert fit.a == pytest.approx(a, abs=1e-12) and fit.b == pytest.approx(b, abs=1e-12)
        a2, b2 = log_fit_many(d.k, d.accuracy.to_numpy()[None, :])
        assert a2[0] == pytest.approx(a, abs=1e-12) and b2[0] == pytest.approx(b, abs=1e-12)


def test_log_fit_needs_two_k():
    with pytest.raises(ValueError, match=r"a fit needs at least two distinct k; got \[4\]"):
        log_fit([4, 4], [0.1, 0.2])


def test_saturating_fit_recovers_parameters_and_wins_aic():
    ks = np.arange(1, 101).astype(float)
    acc = 0.7 - 0.4 * ks ** (-0.6)
    sat = saturating_fit(ks, acc)
    assert sat.converged
    assert (sat.c, sat.d, sat.beta) == pytest.approx((0.7, 0.4, 0.6), abs=1e-4)
    assert sat.aic < log_fit(ks, acc).aic - 2


def test_fit_command_writes_json_and_compares(tmp_path):
    write_run_answers(small_table(problems=20, variants=16, samples=16), tmp_path / "r")
    runner = CliRunner()
    assert runner.invoke(main, ["vote", str(tmp_path / "r"), "--bootstrap", "300"]).exit_code == 0
    r = runner.invoke(main, ["fit", str(tmp_path / "r" / "votes")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "collaboration - repetition: slope" in r.output
    fit = json.loads((tmp_path / "r" / "fits" / "fit.json").read_text())
    for cond in ("collaboration", "repetition"):
        c = fit["conditions"][cond]
        for key in ("a", "b", "r2", "a_ci", "b_ci", "k_min", "k_max"):
            assert key in c
        assert c["b_ci"][0] <= c["b"] <= c["b_ci"][1]
        assert c["saturating"]["aic"] is not None
    comp = fit["comparison"]
    assert comp["k"] == 16
    assert comp["gap"] == pytest.approx(
        comp["accuracy_collaboration"] - comp["accuracy_repetition"], abs=1e-12)
    assert comp["gap_ci"][0] <= comp["gap"] <= comp["gap_ci"][1]
    assert comp["slope_diff"] == pytest.approx(
        fit["conditions"]["collaboration"]["b"] - fit["conditions"]["repetition"]["b"])


def test_fit_k_min_and_errors(tmp_path):
    write_run_answers(small_table(), tmp_path / "r")
    runner = CliRunner()
    runner.invoke(main, ["vote", str(tmp_path / "r"), "--bootstrap", "50"])
    r = runner.invoke(main, ["fit", str(tmp_path / "r" / "votes"), "--k-min", "4"])
    assert r.exit_code == 0
    fit = json.loads((tmp_path / "r" / "fits" / "fit.json").read_text())
    assert fit["conditions"]["collaboration"]["k_min"] == 4
    r = runner.invoke(main, ["fit", str(tmp_path / "r" / "votes"), "--k-min", "10"])
    assert r.exit_code == 1
    assert ("Error: condition collaboration: --k-min=10 leaves 1 k value(s) (k runs 1..10); "
            "lower --k-min") in r.output
    r = runner.invoke(main, ["fit", str(tmp_path / "nothing")])
    assert r.exit_code == 1
    assert "missing curve.parquet, per_problem.parquet, vote.json; run `ensemble vote`" in r.output


def test_bootstrap_ci_covers_truth_in_simulation():
    """Percentile CIs of the mean over problems cover the population value ~95% of the time."""
    from ensemble.bootstrap import percentile_ci, problem_resamples, resampled_means

    rng = np.random.default_rng(0)
    hits, trials = 0, 200
    for t in range(trials):
        W = rng.beta(2, 3, size=(30, 1))  # population mean 0.4
        lo, hi = percentile_ci(resampled_means(W, problem_resamples(30, 400, t)), 0.95)
        hits += lo[0] <= 0.4 <= hi[0]
    assert 0.88 <= hits / trials <= 0.99
