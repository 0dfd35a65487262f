"""`ensemble report`, the demo command, and the plotting notebook."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ensemble.cli import main
from ensemble.simulate import write_run_answers
from tests.helpers import execute_notebook, small_table


@pytest.fixture
def voted_run(tmp_path):
    run = tmp_path / "run"
    write_run_answers(small_table(problems=15, variants=12, samples=12), run)
    assert CliRunner().invoke(main, ["vote", str(run), "--bootstrap", "200"]).exit_code == 0
    return run


@pytest.fixture
def fitted_run(voted_run):
    assert CliRunner().invoke(main, ["fit", str(voted_run / "votes")]).exit_code == 0
    return voted_run


def test_report_writes_markdown_and_figures(fitted_run):
    r = CliRunner().invoke(main, ["report", str(fitted_run)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    text = (fitted_run / "report.md").read_text()
    for needle in ["## Settings", "collaboration", "repetition", "## Fits: accuracy ≈ a + b·ln k",
                   "## Collaboration versus repetition", "correlated", "15 problems",
                   "![scaling](figures/scaling.png)"]:
        assert needle in text, needle
    for fig in ("scaling.png", "voter_accuracy.png"):
        data = (fitted_run / "figures" / fig).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_report_renders_fit_json_and_does_not_refit(voted_run):
    runner = CliRunner()
    assert runner.invoke(main, ["fit", str(voted_run / "votes"), "--k-min", "3"]).exit_code == 0
    fit_json = voted_run / "fits" / "fit.json"
    data = json.loads(fit_json.read_text())
    assert data["k_grid"][0] == 3
    # A value only fit.json holds: a refit would print the true slope instead.
    data["conditions"]["collaboration"]["b"] = 0.123456
    fit_json.write_text(json.dumps(data))
    assert runner.invoke(main, ["report", str(voted_run)]).exit_code == 0
    text = (voted_run / "report.md").read_text()
    assert "| collaboration | " in text and "| 0.1235 |" in text
    assert "sizes from k = 3 to 12" in text


def test_report_refuses_a_fit_of_other_votes(voted_run):
    runner = CliRunner()
    assert runner.invoke(main, ["fit", str(voted_run / "votes")]).exit_code == 0
    assert runner.invoke(main, ["vote", str(voted_run), "--bootstrap", "50"]).exit_code == 0
    r = runner.invoke(main, ["report", str(voted_run)])
    assert r.exit_code == 1
    assert (f"Error: {voted_run / 'fits' / 'fit.json'} was fitted to other votes than "
            f"{voted_run / 'votes'} holds now; rerun `ensemble fit {voted_run / 'votes'}`"
            ) in r.output


def test_report_without_a_fit_says_to_fit_first(voted_run):
    """A report renders fit.json; it never fits on its own."""
    r = CliRunner().invoke(main, ["report", str(voted_run)])
    assert r.exit_code == 1
    assert (f"Error: {voted_run / 'fits' / 'fit.json'} does not exist: a report renders the "
            f"fit of its votes; run `ensemble fit {voted_run / 'votes'}` first") in r.output
    assert not (voted_run / "report.md").exists()


def test_report_states_grid_sources_and_extrapolation_check(fitted_run):
    assert CliRunner().invoke(main, ["report", str(fitted_run)]).exit_code == 0
    text = (fitted_run / "report.md").read_text()
    for needle in ["log-spaced committee sizes from k = 1 to 12",
                   "### Does ln k extrapolate on this data?",
                   "| k | collaboration | repetition | gap (collaboration − repetition)",
                   "problems + choice of control model (4 models)",
                   "The CIs include the variance from: problems, control models"]:
        assert needle in text, needle
    assert "R² |" not in text and "AIC prefers" not in text


def test_report_without_votes_is_a_clear_error(tmp_path):
    r = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert r.exit_code == 1
    assert "run `ensemble vote` on the answers first" in r.output


def test_demo_command_runs_and_reuses(tmp_path, monkeypatch):
    out = tmp_path / "demo"
    r = CliRunner().invoke(main, ["demo", "--simulated", "--out", str(out), "--variants", "8"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "collaboration: k=1" in r.output and "gap: collaboration - repetition" in r.output
    assert "slope diff: b_collaboration - b_repetition over k=1.." in r.output
    div = json.loads((out / "votes" / "vote.json").read_text())["diversity"]
    same = div["repetition"]["disagreement_same_model"]["value"]
    why = [line for line in r.output.splitlines() if line.strip().startswith("why:")]
    assert len(why) == 1 and f"two samples of one model {same:.1%}" in why[0], r.output
    first = (out / "votes" / "curve.csv").read_bytes()
    stamps = {p: p.stat().st_mtime_ns for p in (out / "answers").rglob("*.parquet")}
    import ensemble.simulate

    def no_simulation(*a, **kw):
        raise AssertionError("the answers on disk were simulated again")

    monkeypatch.setattr(ensemble.simulate, "simulate_answers", no_simulation)
    r = CliRunner().invoke(main, ["demo", "--simulated", "--out", str(out), "--variants", "8"],
                           catch_exceptions=False)
    assert r.exit_code == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "answers").rglob("*.parquet")} == stamps
    assert (out / "votes" / "curve.csv").read_bytes() == first


@pytest.mark.slow
def test_notebook_executes_on_a_run(fitted_run):
    voted_run = fitted_run
    outputs = execute_notebook(voted_run)
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3
    assert (voted_run / "notebook_figures" / "scaling.png").exists()
    assert (voted_run / "notebook_figures" / "diversity.png").exists()
    # the diagnostics table: the statistics by condition, with their intervals
    table = outputs[-1]["data"]["text/plain"]
    assert "icc_model" in table and "disagreement_same_model" in table and "[" in table


def test_demo_fresh_starts_over(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--simulated", "--out", str(out), "--variants", "6"]
    assert CliRunner().invoke(main, args).exit_code == 0
    (out / "answers" / "stale-marker.txt").write_text("from the last run")
    stamps = {p: p.stat().st_mtime_ns for p in (out / "answers").rglob("*.parquet")}
    r = CliRunner().invoke(main, args + ["--fresh"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert not (out / "answers" / "stale-marker.txt").exists()
    assert all(p.stat().st_mtime_ns != t for p, t in stamps.items())  # written anew
