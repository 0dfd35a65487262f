"""Scaling fits (`fits.scaling`) and the `ensemble fit` command."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from ensemble.cli import main
from ensemble.simulate import write_run_answers
from fits.config import FitConfig
from fits.scaling import fit_grid, log_fit, log_fit_many, saturating_fit
from fits.fitting import Votes, fit_votes
from tests.helpers import small_table


def test_log_fit_recovers_exact_logarithm():
    ks = np.arange(1, 199)
    fit = log_fit(ks, 0.386 + 0.0172 * np.log(ks))
    assert fit.a == pytest.approx(0.386, abs=1e-12)
    assert fit.b == pytest.approx(0.0172, abs=1e-12)
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


def test_saturating_fit_recovers_parameters():
    ks = np.arange(1, 101).astype(float)
    sat = saturating_fit(ks, 0.7 - 0.4 * ks ** (-0.6))
    assert sat.converged
    assert (sat.c, sat.d, sat.beta) == pytest.approx((0.7, 0.4, 0.6), abs=1e-4)


def test_fit_grid_is_log_spaced_and_picks_voted_k():
    ks = fit_grid(np.arange(1, 201), 1, 200, 20)
    assert ks[0] == 1 and ks[-1] == 200 and len(ks) == 18  # rounding merges two small k
    steps = np.diff(np.log(ks[ks >= 10]))
    assert steps.max() / steps.min() < 1.5  # evenly spaced in ln k above the integer floor
    assert fit_grid([1, 2, 4, 8, 16], 1, 16, 20).tolist() == [1, 2, 4, 8, 16]
    assert fit_grid([1, 2, 4, 8, 16], 3, 16, 2).tolist() == [4, 16]


@pytest.mark.slow
def test_slope_does_not_depend_on_the_voted_k_grid(tmp_path):
    """Fits of every-k votes and of log:40 votes of the same curve give b within 2%."""
    write_run_answers(small_table(problems=30, variants=200, samples=200, repetition_models=1),
                      tmp_path / "r")
    runner = CliRunner()
    fits = {}
    for spec in ("1:200", "log:40"):
        out = tmp_path / spec.replace(":", "_")
        assert runner.invoke(main, ["vote", str(tmp_path / "r"), "--k", spec, "--out",
                                    str(out / "votes"), "--bootstrap", "0"]).exit_code == 0
        assert runner.invoke(main, ["fit", str(out / "votes")]).exit_code == 0
        fits[spec] = json.loads((out / "fits" / "fit.json").read_text())
    for cond in ("collaboration", "repetition"):
        b_all = fits["1:200"]["conditions"][cond]["b"]
        b_log = fits["log:40"]["conditions"][cond]["b"]
        assert abs(b_log - b_all) <= 0.02 * abs(b_all), (cond, b_all, b_log)
    # ... while the old every-point OLS differs by far more than that on the same curve.
    curve = pd.read_csv(tmp_path / "1_200" / "votes" / "curve.csv")
    d = curve[curve.condition == "collaboration"]
    b_every = log_fit(d.k, d.accuracy).b
    assert abs(b_every - fits["1:200"]["conditions"]["collaboration"]["b"]) > 0.05 * abs(b_every)
    assert fits["log:40"]["k_grid"][0] == 1 and fits["log:40"]["k_grid"][-1] == 200


def test_fit_command_writes_json_and_compares(tmp_path):
    write_run_answers(small_table(problems=20, variants=16, samples=16), tmp_path / "r")
    runner = CliRunner()
    assert runner.invoke(main, ["vote", str(tmp_path / "r"), "--bootstrap", "300"]).exit_code == 0
    r = runner.invoke(main, ["fit", str(tmp_path / "r" / "votes")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "slope diff: b_collaboration - b_repetition over k=1..16" in r.output
    assert "gap: collaboration - repetition at k=1: " in r.output
    assert "fit grid: 13 log-spaced k from 1 to 16" in r.output
    text = (tmp_path / "r" / "fits" / "fit.json").read_text()
    fit = json.loads(text, parse_constant=_no_constant)
    assert fit["k_grid"] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16]
    for cond in ("collaboration", "repetition"):
        c = fit["conditions"][cond]
        for key in ("a", "b", "a_ci", "b_ci", "k_min", "k_max", "holdout", "ci_sources"):
            assert key in c
        for gone in ("r2", "aic_log", "a_se", "b_se", "preferred_by_aic"):
            assert gone not in c
        assert c["b_ci"][0] <= c["b"] <= c["b_ci"][1]
        h = c["holdout"]
        assert (h["k_fit_max"], h["k_top"]) == (4, 16)
        assert h["error"] == pytest.approx(h["measured"] - h["predicted"], abs=1e-12)
        assert h["error_ci"][0] <= h["error"] <= h["error_ci"][1]
    assert fit["conditions"]["repetition"]["ci_sources"] == ["problems", "control models"]
    assert fit["conditions"]["repetition"]["n_models"] == 4
    comp = fit["comparison"]
    assert [g["k"] for g in comp["gaps"]] == [1, 4, 16]
    for g in comp["gaps"]:
        assert g["gap"] == pytest.approx(
            g["accuracy_collaboration"] - g["accuracy_repetition"], abs=1e-12)
        assert g["ci_low"] <= g["gap"] <= g["ci_high"]
        assert g["method"]
    assert comp["ci_sources"] == ["problems", "control models"]
    assert comp["slope_diff"] == pytest.approx(
        fit["conditions"]["collaboration"]["b"] - fit["conditions"]["repetition"]["b"])


def _no_constant(name):
    raise AssertionError(f"{name} is not valid JSON")


def test_fit_json_is_strict_json_without_bootstrap(tmp_path):
    write_run_answers(small_table(), tmp_path / "r")
    runner = CliRunner()
    assert runner.invoke(main, ["vote", str(tmp_path / "r"), "--bootstrap", "0"]).exit_code == 0
    assert runner.invoke(main, ["fit", str(tmp_path / "r" / "votes")]).exit_code == 0
    for f in [tmp_path / "r" / "fits" / "fit.json", tmp_path / "r" / "votes" / "vote.json"]:
        data = json.loads(f.read_text(), parse_constant=_no_constant)
        assert data
    fit = json.loads((tmp_path / "r" / "fits" / "fit.json").read_text())
    assert fit["conditions"]["collaboration"]["b_ci"] == [None, None]


def _votes_from_matrices(mats: dict) -> Votes:
    """A Votes object from per-model matrices {condition: (ks, W[model, problem, k])}."""
    rows, by_model = [], []
    for cond, (ks, Wm) in mats.items():
        M, P, K = Wm.shape
        pids = [f"p{p:03d}" for p in range(P)]
        rows.append(pd.DataFrame({"condition": cond, "problem_id": np.repeat(pids, K),
                                  "k": np.tile(ks, P), "accuracy": Wm.mean(axis=0).ravel()}))
        for m in range(M):
            by_model.append(pd.DataFrame({"condition": cond, "model_id": f"m{m}",
                                          "problem_id": np.repeat(pids, K), "k": np.tile(ks, P),
                                          "accuracy": Wm[m].ravel()}))
    curve = pd.DataFrame({"condition": list(mats)})
    return Votes(curve, pd.concat(rows), {"config": {"bootstrap": 300}},
                 pd.concat(by_model) if by_model else None)


def test_identical_conditions_give_zero_width_paired_slope_ci():
    """Both conditions are resampled with the same problems: the slope difference of two
    identical conditions is exactly 0 in every resample (an unpaired bootstrap is not)."""
    rng = np.random.default_rng(1)
    ks = np.arange(1, 33)
    W = np.clip(rng.beta(2, 3, size=(1, 25, 1)) + 0.03 * np.log(ks), 0, 1)
    fit = fit_votes(_votes_from_matrices({"collaboration": (ks, W), "repetition": (ks, W)}),
                    FitConfig(votes="x"))
    assert fit.comparison["slope_diff"] == 0
    assert fit.comparison["slope_diff_ci"] == [0.0, 0.0]
    for g in fit.comparison["gaps"]:
        assert g["gap"] == 0


def test_holdout_check_flags_a_saturating_curve_and_passes_a_log_one():
    rng = np.random.default_rng(2)
    ks = np.arange(1, 257)
    level = rng.uniform(0.2, 0.6, size=(1, 40, 1))
    sat = np.clip(level + 0.35 * (1 - ks ** -0.8), 0, 1)  # flat beyond k ~ 30
    log = np.clip(level + 0.04 * np.log(ks), 0, 1)
    fit = fit_votes(_votes_from_matrices({"collaboration": (ks, sat), "repetition": (ks, log)}),
                    FitConfig(votes="x"))
    hs, hl = fit.conditions["collaboration"].holdout, fit.conditions["repetition"].holdout
    assert (hs.k_fit_max, hs.k_top) == (64, 256)
    assert hs.error < -0.02 and hs.ci[1] < 0 and hs.verdict() == "below the ln k prediction"
    assert abs(hl.error) < 1e-9 and hl.verdict() == "consistent with ln k"
    assert "below the ln k prediction" in fit.summary()


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
    assert ("Error: --k-min=10 leaves 1 k value(s) that every condition has (collaboration "
            "1..10, repetition 1..10); lower --k-min or vote on more k") in r.output
    r = runner.invoke(main, ["fit", str(tmp_path / "nothing")])
    assert r.exit_code == 1
    assert "missing curve.parquet, per_problem.parquet, vote.json; run `ensemble vote`" in r.output


def test_bootstrap_ci_covers_truth_in_simulation():
    """Percentile CIs of the mean over problems cover the population value ~95% of the time."""
    from ensemble.core.bootstrap import percentile_ci, problem_resamples, resampled_means

    rng = np.random.default_rng(0)
    hits, trials = 0, 200
    for t in range(trials):
        W = rng.beta(2, 3, size=(30, 1))  # population mean 0.4
        lo, hi = percentile_ci(resampled_means(W, problem_resamples(30, 400, t)), 0.95)
        hits += lo[0] <= 0.4 <= hi[0]
    assert 0.88 <= hits / trials <= 0.99


def test_paired_slope_ci_is_narrower_than_unpaired_on_correlated_conditions():
    from ensemble.core.bootstrap import percentile_ci, problem_resamples, resampled_means

    rng = np.random.default_rng(4)
    ks = np.arange(1, 33)
    base = rng.beta(2, 3, size=(30, 1)) + rng.uniform(0, 0.06, size=(30, 1)) * np.log(ks)
    Wc = np.clip(base + 0.002 * np.log(ks), 0, 1)[None]
    Wr = np.clip(base + rng.normal(0, 0.01, size=base.shape), 0, 1)[None]
    fit = fit_votes(_votes_from_matrices({"collaboration": (ks, Wc), "repetition": (ks, Wr)}),
                    FitConfig(votes="x", bootstrap=400))
    lo, hi = fit.comparison["slope_diff_ci"]
    grid = np.asarray(fit.k_grid)
    cols = np.searchsorted(ks, grid)
    # Unpaired: each condition resampled on its own problem indices.
    _, bc = log_fit_many(grid, resampled_means(Wc[0][:, cols], problem_resamples(30, 400, 0)))
    _, br = log_fit_many(grid, resampled_means(Wr[0][:, cols], problem_resamples(30, 400, 1)))
    ulo, uhi = percentile_ci((bc - br)[:, None], 0.95)
    assert lo <= fit.comparison["slope_diff"] <= hi
    assert (hi - lo) < 0.25 * (uhi[0] - ulo[0])


def test_gap_ks_never_pick_two_as_the_middle():
    """Majority of two with split ties has exactly the accuracy of one voter (when both
    answer; an abstainer lets the other decide, the only difference)."""
    import numpy as np

    from ensemble.voting import estimators as voting
    from fits.fitting import gap_ks

    rng = np.random.default_rng(0)
    for _ in range(20):  # the fact the rule rests on, on random answer histograms
        codes = rng.integers(0, 5, size=9)
        W = voting.exact_matrix([voting.histogram(codes, 0)], np.array([1, 2]))
        assert W[0, 0] == pytest.approx(W[0, 1], abs=1e-12)
    assert gap_ks(np.arange(1, 7)) == [1, 3, 6]
    assert gap_ks(np.arange(1, 17)) == [1, 4, 16]
    assert gap_ks(np.array([1, 2, 3])) == [1, 3]
    assert gap_ks(np.arange(2, 9)) == [2, 4, 8]  # k = 2 is fine when it is not beside k = 1
