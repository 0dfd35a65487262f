"""`ensemble report`, the demo command, and the plotting notebook."""

from __future__ import annotations

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


def test_report_writes_markdown_and_figures(voted_run):
    r = CliRunner().invoke(main, ["report", str(voted_run)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    text = (voted_run / "report.md").read_text()
    for needle in ["## Settings", "collaboration", "repetition", "## Fits: accuracy ≈ a + b·ln k",
                   "## Collaboration versus repetition", "correlated", "15 problems",
                   "![scaling](figures/scaling.png)"]:
        assert needle in text, needle
    for fig in ("scaling.png", "voter_accuracy.png"):
        data = (voted_run / "figures" / fig).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_report_uses_saved_fit_settings(voted_run):
    runner = CliRunner()
    assert runner.invoke(main, ["fit", str(voted_run / "votes"), "--k-min", "3"]).exit_code == 0
    assert runner.invoke(main, ["report", str(voted_run)]).exit_code == 0
    assert "| 3–12 |" in (voted_run / "report.md").read_text()


def test_report_without_votes_is_a_clear_error(tmp_path):
    r = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert r.exit_code == 1
    assert "run `ensemble vote` on the answers first" in r.output


def test_demo_command_runs_and_reuses(tmp_path):
    out = tmp_path / "demo"
    r = CliRunner().invoke(main, ["demo", "--simulated", "--out", str(out), "--variants", "8"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "collaboration: k=1" in r.output and "gap: collaboration - repetition" in r.output
    first = (out / "votes" / "curve.csv").read_bytes()
    r = CliRunner().invoke(main, ["demo", "--simulated", "--out", str(out), "--variants", "8"])
    assert r.exit_code == 0
    assert (out / "votes" / "curve.csv").read_bytes() == first


@pytest.mark.slow
def test_notebook_executes_on_a_run(voted_run):
    outputs = execute_notebook(voted_run)
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 2
    assert (voted_run / "notebook_figures" / "scaling.png").exists()
