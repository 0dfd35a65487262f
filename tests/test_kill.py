"""``kill -9`` at every commit point of vote, fit and report (issue 13).

Each stage is killed just before each of its renames (and once after the last), from the
same starting state every time; after every kill the readers -- ``ensemble report`` and
the notebook's loader (``load_votes`` + ``load_fit``) -- must see a whole old set or a
whole new one: never votes of one input beside a fit of another, never a report.md
beside figures it was not written with.  Answering and training are killed mid-run in
test_answer.py, test_train.py and test_run.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from ensemble.cli import main
from ensemble.simulate import write_run_answers
from fits.report import load_fit
from fits.fitting import load_votes
from tests.helpers import kill_at_commit, small_table, write_csv

pytestmark = pytest.mark.slow  # one Python process per kill (about 3 s each)


def ok(*argv):
    res = CliRunner().invoke(main, [str(a) for a in argv])
    assert res.exit_code == 0, res.output
    return res


def rows(path: Path) -> int:
    return sum(1 for _ in open(path)) - 1


def snapshot(d: Path) -> dict[str, bytes]:
    """Every visible file under ``d`` (hidden temporaries and locks are nobody's input)."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(d).parts)}


def restore(d: Path, files: dict[str, bytes]) -> None:
    shutil.rmtree(d, ignore_errors=True)
    for rel, data in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)


def kill_everywhere(argv, before, after_each):
    """Kill ``ensemble ARGV`` at commit point 1, 2, ... (``before()`` resets the state
    first) until it finishes; ``after_each(at)`` checks what the kill left."""
    at = 1
    while True:
        before()
        if not kill_at_commit(argv, at):
            return at - 1
        after_each(at)
        at += 1


def notebook_view(votes: Path):
    """What the notebook does first: the votes, then the fit of those votes (or an error)."""
    v = load_votes(votes)
    try:
        return v, load_fit(v, votes)
    except ValueError as exc:
        return v, str(exc)


def test_revote_killed_anywhere_leaves_the_old_votes_or_the_new(tmp_path):
    a = write_csv(small_table(), tmp_path / "a.csv")
    b = write_csv(small_table(problems=16, variants=14, samples=14, seed=5), tmp_path / "b.csv")
    votes, fits = tmp_path / "v", tmp_path / "v_fits"
    ok("vote", a, "--out", votes, "--bootstrap", 20)
    ok("fit", votes)
    old, old_fit = snapshot(votes), snapshot(fits)
    seen = []

    def check(at):
        state = snapshot(votes)
        seen.append(state)
        v, fit = notebook_view(votes)
        rep = CliRunner().invoke(main, ["report", str(votes), "--out", str(tmp_path / f"r{at}")])
        if state == old:  # the old set, whole, with its own fit
            assert v.meta["n_rows"] == rows(a) and not isinstance(fit, str)
            assert rep.exit_code == 0, rep.output
        else:  # anything else must be the whole new set, refused with the old fit
            assert v.meta["n_rows"] == rows(b)
            assert fit.startswith(f"{fits}/fit.json was fitted to other votes")
            assert rep.exit_code == 1 and "was fitted to other votes" in rep.output
        assert snapshot(fits) == old_fit

    n = kill_everywhere(["vote", b, "--out", votes, "--bootstrap", 20, "--force"],
                        lambda: restore(votes, old), check)
    new = snapshot(votes)
    assert n >= 9  # 8 files and the swap, plus the kill after the last
    assert all(s in (old, new) for s in seen)
    assert seen.count(new) == 1 and seen[-1] == new  # only once the swap was done
    ok("fit", votes)  # the killed writers' stale lock is taken over


def test_refit_killed_anywhere_leaves_a_fit_the_report_can_tell(tmp_path):
    run = tmp_path / "run"
    write_run_answers(small_table(), run)
    ok("vote", run, "--bootstrap", 20)
    ok("fit", run)
    old_fit = snapshot(run / "fits")
    shutil.rmtree(run / "answers")
    write_run_answers(small_table(seed=8), run)  # the answers change, the votes are redone
    ok("vote", run, "--bootstrap", 20)
    votes_now = load_votes(run / "votes").sha256
    states = []

    def check(at):
        states.append(snapshot(run / "fits"))
        _, fit = notebook_view(run / "votes")
        rep = CliRunner().invoke(main, ["report", str(run), "--out", str(tmp_path / f"r{at}")])
        if states[-1] == old_fit:
            assert fit == (f"{run}/fits/fit.json was fitted to other votes than {run}/votes "
                           f"holds now; rerun `ensemble fit {run}/votes`")
            assert rep.exit_code == 1 and rep.output == f"Error: {fit}\n"
        else:
            assert fit.votes_sha256 == votes_now and rep.exit_code == 0, rep.output

    n = kill_everywhere(["fit", run], lambda: restore(run / "fits", old_fit), check)
    assert n == 2 and states[0] == old_fit and states[1] != old_fit  # before/after fit.json
    assert states[1] == snapshot(run / "fits")  # the kill after it left the finished fit


def test_report_killed_anywhere_never_leaves_a_report_beside_other_figures(tmp_path):
    run = tmp_path / "run"
    write_run_answers(small_table(), run)
    ok("vote", run, "--bootstrap", 20)
    ok("fit", run)
    ok("report", run)
    old = snapshot(run)
    shutil.rmtree(run / "answers")
    write_run_answers(small_table(seed=8), run)
    ok("vote", run, "--bootstrap", 20)
    ok("fit", run)
    start = snapshot(run)  # new votes and fit beside the old report and figures
    assert start["report.md"] == old["report.md"]
    states = []

    n = kill_everywhere(["report", run], lambda: restore(run, start),
                        lambda at: states.append(snapshot(run)))
    final = snapshot(run)
    assert n == 6  # three figures, report.md, report.json, and after the last
    assert "report.md" not in states[0]  # the old report went before the first new figure
    for state in states:
        if "report.md" in state:  # a report on disk: the new one, with the new figures
            assert state["report.md"] == final["report.md"] != old["report.md"]
            for fig in ("scaling.png", "voter_accuracy.png", "diversity.png"):
                assert state[f"figures/{fig}"] == final[f"figures/{fig}"], fig
        if "report.json" in state:
            assert "report.md" in state
