"""`ensemble demo` itself (not only `ensemble run`): the embedded experiment, shrunk.

The real demo trains 32 variants and answers 200 problems (about ten minutes); this runs
the same command, the same code path and the same shipped base on the embedded config
with its sizes lowered, so a regression in the demo path fails here, not in a user's
first `make demo`.
"""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from ensemble.cli import main

pytestmark = pytest.mark.slow

SHRINK = {  # key -> the small value (the demo's own keys, so the config stays the demo's)
    "variants": "2", "steps": "1", "batch_size": "2", "num_generations": "2",
    "benchmark": '"synthetic:6:d2:s99:small"', "repetition_models": "2",
    "repetition_samples": "2", "bootstrap": "50", "max_completion_length": "40",
    "max_tokens": "40",
}


@pytest.fixture
def small_demo(tmp_path, monkeypatch):
    import ensemble.demo

    text = ensemble.demo.DEMO_CONFIG.read_text()
    for key, value in SHRINK.items():
        text, n = re.subn(rf"(?m)^{key} = [^#\n]*", f"{key} = {value}  ", text)
        assert n == 1, key  # the demo config still has this key
    path = tmp_path / "demo.toml"
    path.write_text(text)
    monkeypatch.setattr(ensemble.demo, "DEMO_CONFIG", path)
    return tmp_path / "run"


def test_demo_runs_every_stage_resumes_and_starts_over(small_demo):
    out = small_demo
    r = CliRunner().invoke(main, ["demo", "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    for line in ("collaboration: k=1", "repetition: k=1", "gap: collaboration - repetition",
                 "slope diff: b_collaboration - b_repetition", f"report: {out / 'report.md'}"):
        assert line in r.output, (line, r.output)
    assert (out / "config.toml").read_text().count("variants = 2") == 1
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("variant.json")}
    answers = {p: p.stat().st_mtime_ns for p in (out / "answers").rglob("*.parquet")}
    assert len(stamps) == 2 and len(answers) == 2 + 2  # 2 variants, 2 control models

    again = CliRunner().invoke(main, ["demo", "--out", str(out)], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert {p: p.stat().st_mtime_ns for p in out.rglob("variant.json")} == stamps
    assert {p: p.stat().st_mtime_ns for p in (out / "answers").rglob("*.parquet")} == answers
    headline = [ln for ln in r.output.splitlines() if ":" in ln and "k=1" in ln]
    assert headline == [ln for ln in again.output.splitlines() if ":" in ln and "k=1" in ln]

    fresh = CliRunner().invoke(main, ["demo", "--out", str(out), "--fresh"],
                               catch_exceptions=False)
    assert fresh.exit_code == 0, fresh.output
    new = {p: p.stat().st_mtime_ns for p in out.rglob("variant.json")}
    assert set(new) == set(stamps) and all(new[p] != stamps[p] for p in stamps)
