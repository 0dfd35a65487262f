"""Every command's bad input, as a careless user gives it: one line, a non-zero exit, no
traceback (issue 13).

One parametrized test per command.  A row is (id, argv, files, exit code, message):
``files`` are made in a fresh working directory first (relative paths), ``{fx}`` in the
argv and the message is the shared fixture directory (good answers, a voted and fitted
run, a tiny base model with adapters, a training pool).  A message ``str`` is the exact
last line after ``Error: ``; a compiled pattern is searched in the whole output (for
rows that fail after some progress output, or name a host and pid).  ``absent`` lists
paths that must not exist afterwards (nothing written before the check).

The tests run as root, so a permission problem is simulated with a path under a file.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from ensemble.cli import main
from ensemble.simulate import write_run_answers
from tests.helpers import small_table


@dataclass
class Case:
    id: str
    argv: list
    message: str | re.Pattern
    files: dict = field(default_factory=dict)
    code: int = 1
    absent: tuple = ()

    def param(self):
        return pytest.param(self, id=self.id)


DIR = object()  # a files value: an empty directory


def copy(src: str):
    """A files value: a copy of the fixture ``src`` (file or directory)."""
    def make(path: Path, fx: Path):
        (shutil.copytree if (fx / src).is_dir() else shutil.copy)(fx / src, path)
    return make


def answers(mutate=lambda df: df, fmt: str | None = None):
    """A files value: the good answers table, changed by ``mutate``, in the path's format."""
    def make(path: Path, fx: Path):
        df = mutate(small_table())
        kind = fmt or path.suffix
        if kind == ".parquet":
            df.to_parquet(path, index=False)
        elif kind == ".jsonl":
            df.to_json(path, orient="records", lines=True)
        else:
            df.to_csv(path, index=False)
    return make


def parquet(src: str, mutate):
    """A files value: the fixture parquet ``src`` changed by ``mutate``."""
    def make(path: Path, fx: Path):
        mutate(pd.read_parquet(fx / src)).to_parquet(path, index=False)
    return make


def _make(root: Path, files: dict, fx: Path) -> None:
    for rel, spec in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if spec is DIR:
            path.mkdir(exist_ok=True)
        elif isinstance(spec, bytes):
            path.write_bytes(spec)
        elif isinstance(spec, str):
            path.write_text(spec)
        else:
            spec(path, fx)


def check(case: Case, fx: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    _make(tmp_path, case.files, fx)
    argv = [str(a).format(fx=fx) for a in case.argv]
    res = CliRunner().invoke(main, argv)
    out = res.output
    assert "Traceback" not in out, out
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == case.code, out
    if isinstance(case.message, re.Pattern):
        pattern = re.compile(case.message.pattern.format(fx=re.escape(str(fx))), re.M)
        assert pattern.search(out), out
    else:
        assert sum(line.startswith("Error: ") for line in out.splitlines()) == 1, out
        assert out.rstrip("\n").splitlines()[-1] == "Error: " + case.message.format(fx=fx)
    for rel in case.absent:
        assert not (tmp_path / rel).exists(), rel


def out_cases(*argv, files=None, suffix=""):
    """The two --out mistakes every writing command must name: a file, a path under one."""
    files = {**(files or {}), "f": "x"}
    return [Case("out-is-a-file" + suffix, [*argv, "--out", "f"],
                 "f is a file, not a directory; give --out a directory path", files),
            Case("out-under-a-file" + suffix, [*argv, "--out", "f/o"], "f is a file, so no "
                 "directory f/o can be made under it; give --out a directory path", files)]


# --- shared fixtures: made once ------------------------------------------------------

@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> Path:
    """a.csv (12 problems, 10 voters per condition), run/ with answers, votes and fits."""
    d = tmp_path_factory.mktemp("fx")
    small_table().to_csv(d / "a.csv", index=False)
    write_run_answers(small_table(), d / "run")
    for argv in (["vote", d / "run", "--bootstrap", 20], ["fit", d / "run"]):
        assert CliRunner().invoke(main, [str(a) for a in argv]).exit_code == 0
    (d / "base").mkdir()  # a stand-in for stages that fail before any model is read
    return d


@pytest.fixture(scope="module")
def models(fx) -> Path:
    """fx plus a tiny base model, two adapters of it and a 24-problem training pool."""
    from ensemble.testing import build_tiny_model, make_lora_adapters
    from tests.train_helpers import write_zero_pool

    if not (fx / "tiny" / "config.json").exists():
        build_tiny_model(fx / "tiny")
        make_lora_adapters(fx / "tiny", fx / "adapters", 2)
        write_zero_pool(fx / "pool.jsonl", 24)
    return fx


# --- vote ----------------------------------------------------------------------------

NOT_A_K = "is not understood; use a range like 1:200, a list like 1,2,4,8, or log:40"
RANGE = "a range lo:hi[:step] needs 1 <= lo <= hi and step >= 1"
COLUMNS = ("missing column(s) {}; an answers table needs condition, model_id, problem_id, "
           "sample, answer, gold (correct is optional)")

VOTE = [
    # issue 13's cases
    Case("null-answer-marked-correct", ["vote", "t.csv"],
         "t.csv row 9: correct=True but the answer is empty; a row without an answer cannot "
         "be correct: fix the answer or set correct=false",
         {"t.csv": answers(lambda df: df.assign(
             answer=np.where(df.index == 7, None, df.answer),
             correct=np.where(df.index == 7, True, df.correct)))}),
    *out_cases("vote", "{fx}/a.csv"),  # also the unwritable --out, as root can
    Case("default-out-of-another-input", ["vote", "a.parquet", "--bootstrap", "0"],
         "a_votes holds the votes of a.csv, not of a.parquet; pass --out DIR to keep both, or "
         "--force to replace them",
         {"a.csv": copy("a.csv"), "a_votes": copy("run/votes"),
          "a_votes/vote.json": lambda p, fx: p.write_text(json.dumps(
              {"config": {"input": "a.csv"}})),
          "a.parquet": answers()}),
    # missing, empty, garbage, wrong kind of file
    Case("missing-file", ["vote", "nope.csv"], "nope.csv: no such file or directory"),
    Case("path-under-a-file", ["vote", "f/answers.csv"], "f/answers.csv: no such file or directory",
         {"f": "x"}),
    Case("empty-dir", ["vote", "d"],
         "d: no answers/**.parquet files; run `ensemble answer` first or pass an answers file "
         "(.parquet, .csv, .jsonl)", {"d": DIR}),
    Case("empty-csv", ["vote", "e.csv"], "e.csv: cannot be read as csv (No columns to parse "
         "from file)", {"e.csv": ""}),
    Case("empty-parquet", ["vote", "e.parquet"], re.compile(
         r"^Error: e\.parquet: cannot be read as parquet \(.*Parquet file size is 0 bytes\)$"),
         {"e.parquet": b""}),
    Case("header-only-csv", ["vote", "h.csv"], "h.csv: no answer rows",
         {"h.csv": "condition,model_id,problem_id,sample,answer,gold\n"}),
    Case("non-utf8-csv", ["vote", "g.csv"], "g.csv: not UTF-8 text (invalid start byte at "
         "byte 2); save it as UTF-8, or as .parquet", {"g.csv": b"\x00\x01\xff\xfe"}),
    Case("garbage-parquet", ["vote", "g.parquet"], re.compile(
         r"^Error: g\.parquet: cannot be read as parquet \(.*Parquet magic bytes not found"),
         {"g.parquet": b"PAR1 no footer here"}),
    Case("broken-jsonl", ["vote", "b.jsonl"], re.compile(
         r"^Error: b\.jsonl: cannot be read as jsonl \(.+\)$"), {"b.jsonl": "{not json\n"}),
    Case("wrong-suffix", ["vote", "a.txt"], "a.txt: unknown format '.txt'; use .parquet, .csv "
         "or .jsonl", {"a.txt": "condition,model_id\n"}),
    Case("votes-dir-of-another-stage", ["vote", "{fx}/run/votes"],
         "{fx}/run/votes is a votes directory (what `ensemble vote` writes), not answers; give "
         "the run directory or an answers file"),
    # tables that break the rules
    Case("parquet-missing-column", ["vote", "m.parquet"], "m.parquet: " + COLUMNS.format("gold"),
         {"m.parquet": answers(lambda df: df.drop(columns=["gold"]))}),
    Case("parquet-float-sample", ["vote", "s.parquet"], "s.parquet row 1: sample=0.5 is not an "
         "integer; number the samples 0, 1, ...",
         {"s.parquet": answers(lambda df: df.assign(sample=df["sample"] + 0.5))}),
    Case("negative-sample", ["vote", "n.csv"], "n.csv row 2: sample=-1 is negative; number "
         "the samples 0, 1, ...",
         {"n.csv": answers(lambda df: df.assign(sample=df["sample"] - 1))}),
    Case("correct-not-boolean", ["vote", "c.parquet"], "c.parquet row 1: correct='maybe' is not "
         "a boolean; use true/false or drop the column",
         {"c.parquet": answers(lambda df: df.assign(correct="maybe"))}),
    Case("duplicated-row", ["vote", "d.csv"], "d.csv row 602: duplicate row for "
         "condition=collaboration, model_id=v000, problem_id=p004, sample=0 (first at d.csv row "
         "6); keep one row per (condition, model_id, problem_id, sample)",
         {"d.csv": answers(lambda df: pd.concat([df, df.iloc[[4]]]))}),
    Case("two-golds", ["vote", "g.csv"], re.compile(
         r"^Error: g\.csv row \d+: problem_id=p001 has two gold answers '\d+' and '999999'; fix "
         r"the gold column so each problem has one$"),
         {"g.csv": answers(lambda df: df.assign(gold=np.where(
             (df.problem_id == "p001") & (df.model_id == "v002"), "999999", df.gold)))}),
    Case("empty-condition", ["vote", "c.csv"], "c.csv row 5: empty condition; every row needs one",
         {"c.csv": answers(lambda df: df.assign(condition=np.where(df.index == 3, "",
                                                                    df.condition)))}),
    Case("empty-gold", ["vote", "g.jsonl"], "g.jsonl row 1: empty gold answer; every row needs "
         "the gold answer", {"g.jsonl": answers(lambda df: df.assign(
             gold=np.where(df.index == 0, " ", df.gold)))}),
    # k specs, sizes, conflicting and absurd options
    Case("k-above-voters", ["vote", "{fx}/a.csv", "--k", "1:250"], "k=250 exceeds the 10 voters "
         "of condition collaboration in {fx}/a.csv; lower --k"),
    Case("k-absurd", ["vote", "{fx}/a.csv", "--k", "5,99999999999999999999"],
         "k=99999999999999999999 exceeds the 10 voters of condition collaboration in "
         "{fx}/a.csv; lower --k"),
    Case("k-word", ["vote", "{fx}/a.csv", "--k", "two"], f"k spec 'two' {NOT_A_K}"),
    Case("k-zero-range", ["vote", "{fx}/a.csv", "--k", "0:5"], f"k spec '0:5': {RANGE}"),
    Case("k-reversed-range", ["vote", "{fx}/a.csv", "--k", "5:1"], f"k spec '5:1': {RANGE}"),
    Case("k-zero-step", ["vote", "{fx}/a.csv", "--k", "1:5:0"], f"k spec '1:5:0': {RANGE}"),
    Case("k-zero", ["vote", "{fx}/a.csv", "--k", "0"], "k spec '0': committee sizes start at 1"),
    Case("k-negative", ["vote", "{fx}/a.csv", "--k", "-1"], f"k spec '-1' {NOT_A_K}"),
    Case("k-fraction", ["vote", "{fx}/a.csv", "--k", "1.5"], f"k spec '1.5' {NOT_A_K}"),
    Case("k-log-zero", ["vote", "{fx}/a.csv", "--k", "log:0"], "k spec 'log:0': log:M needs M >= 1"),
    Case("k-comma", ["vote", "{fx}/a.csv", "--k", ","], f"k spec ',' {NOT_A_K}"),
    Case("committees-zero", ["vote", "{fx}/a.csv", "--committees", "0"],
         "committees=0 must be at least 1"),
    Case("bootstrap-negative", ["vote", "{fx}/a.csv", "--bootstrap", "-1"],
         "bootstrap=-1 must be 0 (skip) or more"),
    Case("bootstrap-absurd", ["vote", "{fx}/a.csv", "--bootstrap", "1000000000000", "--out", "o"],
         "out of memory; lower the sizes (--k, --bootstrap, --committees, batch sizes) or use a "
         "bigger machine", absent=("o",)),
    Case("ci-one", ["vote", "{fx}/a.csv", "--ci", "1"],
         "ci=1.0 must lie strictly between 0 and 1, e.g. 0.95"),
    Case("ci-nan", ["vote", "{fx}/a.csv", "--ci", "nan"],
         "ci=nan must lie strictly between 0 and 1, e.g. 0.95"),
    Case("seed-negative", ["vote", "{fx}/a.csv", "--seed", "-1"], "seed=-1 must be 0 or more"),
    Case("estimator-unknown", ["vote", "{fx}/a.csv", "--estimator", "bayes"], re.compile(
         r"^Error: Invalid value for '--estimator': 'bayes' is not one of 'exact', "
         r"'monte-carlo', 'histogram-mc'\.$"), code=2),
    Case("out-foreign-dir", ["vote", "{fx}/a.csv", "--out", "mine"],
         "mine holds files but is not a votes directory (no vote.json); give --out an empty or "
         "new directory", {"mine/notes.txt": "keep me"}),
    Case("out-locked-by-a-live-writer", ["vote", "{fx}/a.csv", "--out", "v"], re.compile(
         r"^Error: v is being written by another process \(host \S+, pid 1\); wait for it to "
         r"finish, or delete \.v\.lock if that process is gone$"),
         {".v.lock": json.dumps({"host": socket.gethostname(), "pid": 1})}, absent=("v",)),
]


@pytest.mark.parametrize("case", [c.param() for c in VOTE])
def test_vote(case, fx, tmp_path, monkeypatch):
    check(case, fx, tmp_path, monkeypatch)


# --- fit -----------------------------------------------------------------------------

REVOTE = "rerun `ensemble vote` to rewrite v"
MISSING_VOTES = ("missing curve.parquet, per_problem.parquet, vote.json; run `ensemble vote` on "
                 "the answers first")


def votes_with(name: str, spec):
    """files: a copy ``v`` of the fixture votes with its file ``name`` replaced by ``spec``."""
    return {"v": copy("run/votes"), f"v/{name}": spec}


def votes_mut(name: str, mutate):
    """files: a copy ``v`` of the fixture votes with the parquet ``name`` changed by ``mutate``."""
    return votes_with(name, parquet(f"run/votes/{name}", mutate))


FIT = [
    Case("missing-dir", ["fit", "nope"], "nope: " + MISSING_VOTES),
    Case("a-file", ["fit", "{fx}/a.csv"], "{fx}/a.csv is a file, not a votes directory; give the "
         "directory `ensemble vote` wrote (RUN/votes), or its run directory"),
    Case("empty-dir", ["fit", "d"], "d: " + MISSING_VOTES, {"d": DIR}),
    Case("answers-dir-of-another-stage", ["fit", "{fx}/run/answers"],
         "{fx}/run/answers: " + MISSING_VOTES),
    Case("run-without-votes", ["fit", "r"], "r: " + MISSING_VOTES, {"r/answers": DIR}),
    Case("vote-json-broken", ["fit", "v"], "v/vote.json: not valid JSON (Expecting property "
         f"name enclosed in double quotes: line 1 column 2 (char 1)); {REVOTE}",
         votes_with("vote.json", "{oops")),
    Case("vote-json-a-list", ["fit", "v"],
         f"v/vote.json: holds a JSON list, not an object; {REVOTE}",
         votes_with("vote.json", "[1, 2]")),
    Case("vote-json-binary", ["fit", "v"], "v/vote.json: not UTF-8 text, so not the JSON file "
         f"it should be; {REVOTE}", votes_with("vote.json", b"\xff\xfe\x00")),
    Case("per-problem-garbage", ["fit", "v"], re.compile(
         r"^Error: v/per_problem\.parquet: cannot be read as parquet \(.+\); rerun `ensemble "
         r"vote` to rewrite v$"), votes_with("per_problem.parquet", b"junk")),
    Case("per-problem-no-accuracy", ["fit", "v"],
         f"v/per_problem.parquet: missing column(s) accuracy; {REVOTE}",
         votes_mut("per_problem.parquet", lambda d: d.drop(columns=["accuracy"]))),
    Case("per-problem-accuracy-text", ["fit", "v"],
         f"v/per_problem.parquet: column accuracy must hold numbers in [0, 1]; {REVOTE}",
         votes_mut("per_problem.parquet", lambda d: d.assign(accuracy="x"))),
    Case("per-problem-accuracy-above-one", ["fit", "v"],
         f"v/per_problem.parquet: column accuracy must hold numbers in [0, 1]; {REVOTE}",
         votes_mut("per_problem.parquet", lambda d: d.assign(accuracy=d.accuracy * 3))),
    Case("per-problem-k-float", ["fit", "v"],
         f"v/per_problem.parquet: column k holds float64, not integers; {REVOTE}",
         votes_mut("per_problem.parquet", lambda d: d.assign(k=d.k + 0.5))),
    Case("per-problem-duplicated", ["fit", "v"], "v/per_problem.parquet: two rows for "
         f"condition=collaboration, problem_id=p000, k=1; {REVOTE}",
         votes_mut("per_problem.parquet", lambda d: pd.concat([d, d]))),
    Case("per-problem-with-a-hole", ["fit", "v"],
         f"v/per_problem.parquet: collaboration lacks some (problem, k) rows; {REVOTE}",
         votes_mut("per_problem.parquet", lambda d: d.drop(index=[3]))),
    Case("by-model-duplicated", ["fit", "v"], "v/per_problem_by_model.parquet: two rows for "
         f"condition=repetition, model_id=v000, problem_id=p000, k=1; {REVOTE}",
         votes_mut("per_problem_by_model.parquet", lambda d: pd.concat([d, d]))),
    Case("curve-of-other-conditions", ["fit", "v"], "v: curve.parquet and per_problem.parquet "
         f"name different conditions, so they are not one vote's files; {REVOTE}",
         votes_mut("curve.parquet", lambda d: d[d.condition == "collaboration"])),
    Case("curve-is-a-directory", ["fit", "v"],
         "v/curve.parquet: Is a directory; give a file, not a directory",
         {"v": copy("run/votes"), "v/curve.parquet": lambda p, fx: (p.unlink(), p.mkdir())}),
    Case("k-min-zero", ["fit", "{fx}/run/votes", "--k-min", "0"], "k_min=0 must be at least 1"),
    Case("k-min-above-the-grid", ["fit", "{fx}/run", "--k-min", "11", "--out", "o"],
         "--k-min=11 leaves 0 k value(s) that every condition has (collaboration 1..10, "
         "repetition 1..10); lower --k-min or vote on more k", absent=("o/fit.json",)),
    Case("k-min-absurd", ["fit", "{fx}/run", "--k-min", "1" + "0" * 30, "--out", "o"],
         f"--k-min=1{'0' * 30} leaves 0 k value(s) that every condition has (collaboration "
         "1..10, repetition 1..10); lower --k-min or vote on more k"),
    Case("bootstrap-negative", ["fit", "{fx}/run", "--bootstrap", "-5"],
         "bootstrap=-5 must be 0 (skip) or more"),
    Case("seed-negative", ["fit", "{fx}/run", "--seed", "-1"], "seed=-1 must be 0 or more"),
    Case("k-min-not-a-number", ["fit", "{fx}/run", "--k-min", "three"], re.compile(
         r"^Error: Invalid value for '--k-min': 'three' is not a valid integer\.$"), code=2),
    *out_cases("fit", "{fx}/run"),
    Case("out-foreign-dir", ["fit", "{fx}/run", "--out", "mine"], "mine holds files but is not a "
         "fits directory (no fit.json); give --out an empty or new directory",
         {"mine/notes.txt": "keep me"}),
    Case("out-holds-the-fit-of-other-votes", ["fit", "v", "--out", "{fx}/run/fits"],
         "{fx}/run/fits holds the fit of {fx}/run/votes, not of v; pass --out DIR to keep "
         "both, or --force to replace them", {"v": copy("run/votes")}),
]


@pytest.mark.parametrize("case", [c.param() for c in FIT])
def test_fit(case, fx, tmp_path, monkeypatch):
    check(case, fx, tmp_path, monkeypatch)


# --- report --------------------------------------------------------------------------

def run_with(name: str, spec):
    """files: a copy ``r`` of the fixture run with its file ``name`` replaced by ``spec``."""
    return {"r": copy("run"), f"r/{name}": spec}


REFIT = "rerun `ensemble fit r/votes`"
REPORT = [
    Case("missing-dir", ["report", "nope"], "nope: " + MISSING_VOTES),
    Case("a-file", ["report", "{fx}/a.csv"], "{fx}/a.csv is a file, not a votes directory; give "
         "the directory `ensemble vote` wrote (RUN/votes), or its run directory"),
    Case("empty-dir", ["report", "d"], "d: " + MISSING_VOTES, {"d": DIR}),
    Case("answers-only-run", ["report", "r"], "r: " + MISSING_VOTES, {"r/answers/x": DIR}),
    Case("votes-without-vote-json", ["report", "r"], "r/votes: missing vote.json; run `ensemble "
         "vote` on the answers first", {"r": copy("run"),
                                        "r/votes/vote.json": lambda p, fx: p.unlink()}),
    Case("vote-json-a-list", ["report", "r"], "r/votes/vote.json: holds a JSON list, not an "
         "object; rerun `ensemble vote` to rewrite r/votes", run_with("votes/vote.json", "[]")),
    Case("fit-json-empty-object", ["report", "r"], "r/fits/fit.json: not a fit this version can "
         f"read (no 'conditions' in it); {REFIT}", run_with("fits/fit.json", "{}")),
    Case("fit-json-a-list", ["report", "r"], "r/fits/fit.json: holds a JSON list, not an "
         f"object; {REFIT}", run_with("fits/fit.json", "[]")),
    Case("fit-json-garbage", ["report", "r"], "r/fits/fit.json: not valid JSON (Expecting "
         f"value: line 1 column 1 (char 0)); {REFIT}",
         run_with("fits/fit.json", "garbage")),
    Case("fit-json-binary", ["report", "r"], "r/fits/fit.json: not UTF-8 text, so not the JSON "
         f"file it should be; {REFIT}",
         run_with("fits/fit.json", b"\xff")),
    Case("fit-of-other-votes", ["report", "r"], "r/fits/fit.json was fitted to other votes than "
         f"r/votes holds now; {REFIT}", run_with(
             "votes/per_problem.parquet",
             parquet("run/votes/per_problem.parquet", lambda d: d.assign(accuracy=d.accuracy / 2))),
         absent=("r/report.md",)),
    *out_cases("report", "{fx}/run"),
    Case("out-holds-the-report-of-other-votes", ["report", "{fx}/run", "--out", "o"],
         "o holds the report of other/votes, not of {fx}/run/votes; pass --out DIR to keep "
         "both, or --force to replace them",
         {"o/report.json": json.dumps({"config": {"votes": "other/votes"}}),
          "o/report.md": "# someone else's report\n"}),
    Case("per-problem-garbage", ["report", "r"], re.compile(
         r"^Error: r/votes/per_problem\.parquet: cannot be read as parquet \(.+\); rerun "
         r"`ensemble vote` to rewrite r/votes$"), run_with("votes/per_problem.parquet", b"x")),
]


@pytest.mark.parametrize("case", [c.param() for c in REPORT])
def test_report(case, fx, tmp_path, monkeypatch):
    check(case, fx, tmp_path, monkeypatch)


# --- answer --------------------------------------------------------------------------

# Stages that load nothing before failing get "{fx}/base" (an empty directory); rows that
# reach the base check or an engine get the tiny model ("{fx}/tiny", the `models` fixture).
ANS = ["answer", "--base", "{fx}/base", "--benchmark", "synthetic:3:d1:s1:small", "--out", "o"]
TINY = ["answer", "--base", "{fx}/tiny", "--adapters", "{fx}/adapters", "--backend", "hf",
        "--max-tokens", "4", "--max-lora-rank", "8", "--benchmark", "synthetic:3:d1:s1:small"]
AT_LEAST_1 = "{}={} must be at least 1"
ANSWER = [
    # issue 13's cases
    Case("limit-zero", [*ANS, "--limit", "0"], "limit=0 must be at least 1 (the first N "
         "problems); leave it out to answer every problem", absent=("o",)),
    Case("limit-negative", [*ANS, "--limit", "-3"], "limit=-3 must be at least 1 (the first N "
         "problems); leave it out to answer every problem", absent=("o",)),
    Case("config-temperature-hot", ["answer", "c.toml", "--out", "o"],
         "answer config temperature = 'hot' must be a number, not a string",
         {"c.toml": '[answer]\nbase = "b"\nbenchmark = "x"\ntemperature = "hot"\n'},
         absent=("o",)),
    Case("offline-hub-base", [*TINY, "--out", "o", "--base", "nobody/no-such-model",
                              "--condition", "repetition", "--repetition-model", "base"],
         "base model 'nobody/no-such-model' not found: no such local directory, and the "
         "Hugging Face hub cannot provide it (LocalEntryNotFoundError); download it first or "
         "pass a local model directory", absent=("o/answers.json", "o/answers")),
    *out_cases(*TINY),
    # flags out of range, malformed or conflicting: refused before anything loads
    Case("missing-everything", ["answer"], "missing base, out, benchmark: give --base or set it "
         "in the config file"),
    Case("missing-benchmark", ["answer", "--base", "b", "--out", "o"], "missing benchmark: give "
         "--benchmark or set it in the config file"),
    Case("shard-word", [*ANS, "--shard", "x"], "shard='x' must be i/n with 0 <= i < n, e.g. 0/4"),
    Case("shard-past-the-end", [*ANS, "--shard", "2/2"],
         "shard='2/2' must be i/n with 0 <= i < n, e.g. 0/4"),
    Case("shard-of-zero", [*ANS, "--shard", "1/0"],
         "shard='1/0' must be i/n with 0 <= i < n, e.g. 0/4"),
    Case("shard-negative", [*ANS, "--shard", "-1/2"],
         "shard='-1/2' must be i/n with 0 <= i < n, e.g. 0/4"),
    Case("shard-with-ray", [*ANS, "--shard", "1/2", "--launcher", "ray"],
         "shard='1/2' and launcher=ray conflict: the ray launcher makes its own shards; drop "
         "--shard"),
    Case("max-tokens-zero", [*ANS, "--max-tokens", "0"], AT_LEAST_1.format("max_tokens", 0)),
    Case("samples-zero", [*ANS, "--samples", "0"], AT_LEAST_1.format("samples", 0)),
    Case("workers-zero", [*ANS, "--workers", "0"], AT_LEAST_1.format("workers", 0)),
    Case("max-loras-zero", [*ANS, "--max-loras", "0"], AT_LEAST_1.format("max_loras", 0)),
    Case("repetition-models-zero", [*ANS, "--repetition-models", "0"],
         AT_LEAST_1.format("repetition_models", 0)),
    Case("repetition-samples-zero", [*ANS, "--repetition-samples", "0"],
         "repetition_samples=0 must be at least 1"),
    Case("temperature-negative", [*ANS, "--temperature", "-1"],
         "temperature=-1.0 must lie in [0, 5]"),
    Case("temperature-nan", [*ANS, "--temperature", "nan"], "temperature=nan must lie in [0, 5]"),
    Case("top-p-zero", [*ANS, "--top-p", "0"], "top_p=0.0 must lie in (0, 1]"),
    Case("stall-timeout-negative", [*ANS, "--stall-timeout", "-1"], "stall_timeout=-1.0 must "
         "be >= 0 seconds (0 turns the watchdog off)"),
    Case("lora-rank-vllm-lacks", [*ANS, "--max-lora-rank", "7"], "max_lora_rank=7 is not a rank "
         "vLLM supports; use one of 1, 8, 16, 32, 64, 128, 256, 320, 512 (at least the largest "
         "adapter rank)"),
    Case("seed-negative", [*ANS, "--seed", "-1"], "seed=-1 must be 0 or more"),
    Case("backend-unknown", [*ANS, "--backend", "tgi"], re.compile(
         r"^Error: Invalid value for '--backend': 'tgi' is not one of 'vllm', 'hf', 'auto'\.$"), code=2),
    # config files
    Case("config-missing", ["answer", "nope.toml"], "nope.toml: config file not found"),
    Case("config-a-dir-without-config", ["answer", "d"], "d is a directory without config.toml; "
         "give a config file (.toml) or a run directory made by `ensemble run`", {"d": DIR}),
    Case("config-binary", ["answer", "b.toml"], "b.toml: not a text file; a config is TOML text",
         {"b.toml": b"\xff\xfe\x00\x01"}),
    Case("config-not-toml", ["answer", "{fx}/a.csv"], re.compile(
         r"^Error: .*/a\.csv: not valid TOML \(.+\)$")),
    Case("config-unknown-key", ["answer", "c.toml"], re.compile(
         r"^Error: unknown answer config key\(s\) temprature; known keys: adapters, .+$"),
         {"c.toml": "[answer]\ntemprature = 0.6\n"}),
    Case("config-engine-kwargs-scalar", ["answer", "c.toml", *ANS[1:]],
         "answer config engine_kwargs = 5 must be a table, not an integer",
         {"c.toml": "[answer]\nengine_kwargs = 5\n"}),
    Case("config-template-without-problem", ["answer", "c.toml", *ANS[1:]],
         "prompt_template must contain {{problem}}",
         {"c.toml": '[answer]\nprompt_template = "Solve it."\n'}),
    Case("config-template-other-placeholder", ["answer", "c.toml", *ANS[1:]],
         "prompt_template '{{problem}} {{oops}}' cannot be filled in with the problem alone "
         "(KeyError: 'oops'); {{problem}} is its only placeholder, so write other braces "
         "doubled, as in \\boxed{{{{}}}}",
         {"c.toml": '[answer]\nprompt_template = "{problem} {oops}"\n'}),
    Case("config-adapters-per-batch-zero", ["answer", "c.toml", *ANS[1:]],
         "adapters_per_batch=0 must be at least 1 (or left out for the default)",
         {"c.toml": "[answer]\nadapters_per_batch = 0\n"}),
    Case("config-max-model-len-negative", ["answer", "c.toml", *ANS[1:]],
         "max_model_len=-5 must be at least 1; leave it out to compute it from the model's size",
         {"c.toml": "[answer]\nmax_model_len = -5\n"}),
    # what the files and models turn out to be (the tiny model is loaded by none of these)
    Case("base-missing-dir", [*TINY, "--out", "o", "--base", "nope"], "base model 'nope' not "
         "found: no such directory, and it is not a Hugging Face id (owner/name); pass a local "
         "model directory"),
    Case("base-empty-dir", [*TINY, "--out", "o", "--base", "{fx}/base"], "base model "
         "'{fx}/base': the directory has no config.json; pass a Hugging Face model directory "
         "(config.json + weights)"),
    Case("benchmark-missing", [*TINY, "--out", "o", "--benchmark", "nope.jsonl"],
         "nope.jsonl: no such file, preset or dataset id", absent=("o/answers.json",)),
    Case("benchmark-a-dir", [*TINY, "--out", "o", "--benchmark", "d"], "d is a directory; give "
         "a problem file (.jsonl, .json, .parquet or .csv)", {"d": DIR}),
    Case("benchmark-json-scalar", [*TINY, "--out", "o", "--benchmark", "b.json"],
         "b.json: holds a single number, not a list of problems", {"b.json": "5"}),
    Case("benchmark-json-not-records", [*TINY, "--out", "o", "--benchmark", "b.json"],
         "b.json: row 1 is 1, not a record; each row is one problem with fields such as "
         "'problem' and 'answer'", {"b.json": "[1, 2]"}),
    Case("benchmark-synthetic-zero", [*TINY, "--out", "o", "--benchmark", "synthetic:0"],
         "synthetic:0: n=0: ask for at least one problem"),
    Case("benchmark-without-answer-field", [*TINY, "--out", "o", "--benchmark", "b.jsonl"],
         "b.jsonl: no field 'answer' (fields: problem, solution); set --answer-field",
         {"b.jsonl": '{"problem": "1+1?", "solution": "2"}\n'}),
    Case("benchmark-offline-hub-id", [*TINY, "--out", "o", "--benchmark", "nobody/no-such-set"],
         re.compile(r"^Error: nobody/no-such-set: cannot load split 'train' from the Hugging "
                    r"Face hub \(.+\); offline, pass a local \.jsonl/\.parquet/\.csv file "
                    r"instead$")),
    Case("adapters-missing", [*TINY, "--out", "o", "--adapters", "nope"], "nope: adapter "
         "directory not found; pass --adapters DIR (a directory of PEFT adapter directories) or "
         "train variants first"),
    Case("adapters-empty", [*TINY, "--out", "o", "--adapters", "d"], "d: no usable adapters for "
         "the collaboration condition; train variants or pass --adapters DIR", {"d": DIR}),
    Case("repetition-model-unknown", [*TINY, "--out", "o", "--repetition-model", "v999"],
         "repetition model 'v999' is not among the usable adapters in {fx}/adapters; use one of "
         "them or 'base'"),
    # model stage: a truncated adapter is reported and the other one answered (HF backend)
    Case("truncated-adapter", [*TINY, "--out", "o", "--adapters", "ad"], re.compile(
         r"^failed collaboration/v001: adapter_model\.safetensors is unreadable: tensor \S+ ends "
         r"at byte \d+ of \d+ data bytes \(the file is truncated\)$[\s\S]*"
         r"^answered 2 model\(s\), 0 already done, 1 failed; "),
         {"ad": copy("adapters"), "ad/v001/adapter_model.safetensors":
          lambda p, fx: p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2])}),
]


@pytest.mark.parametrize("case", [c.param() for c in ANSWER])
def test_answer(case, models, tmp_path, monkeypatch):
    check(case, models, tmp_path, monkeypatch)


# --- train ---------------------------------------------------------------------------

TR = ["train", "--base", "{fx}/tiny", "--pool", "{fx}/pool.jsonl", "--out", "t", "--steps", "1",
      "--lora-rank", "8", "--device", "cpu", "--mask-fraction", "0.25"]
VARIANTS = "must be a count N or a range a:b with a < b, e.g. 200 or 0:200"
TRAIN = [
    # issue 13's cases
    Case("limit-zero", [*TR, "--limit", "0"], "limit=0 must be at least 1 (the first N pool "
         "rows); leave it out to use the whole pool", absent=("t",)),
    Case("config-variants-two", ["train", "c.toml", *TR[1:]], "train config variants = 'two' must be an "
         "integer, not a string", {"c.toml": '[train]\nvariants = "two"\n'}),
    *out_cases(*TR),
    Case("answer-field-flag", [*TR, "--pool", "p.jsonl"], "p.jsonl: no field 'answer' (fields: "
         "problem, final); set --answer-field", {"p.jsonl": '{"problem": "1+1?", "final": 2}\n'}),
    # --variants and sizes
    Case("variants-zero", [*TR, "--variants", "0"], f"--variants '0' {VARIANTS}"),
    Case("variants-negative", [*TR, "--variants", "-2"], f"--variants '-2' {VARIANTS}"),
    Case("variants-reversed", [*TR, "--variants", "3:1"], f"--variants '3:1' {VARIANTS}"),
    Case("variants-empty-range", [*TR, "--variants", "2:2"], f"--variants '2:2' {VARIANTS}"),
    Case("variants-word", [*TR, "--variants", "x"], f"--variants 'x' {VARIANTS}"),
    Case("variants-three-parts", [*TR, "--variants", "1:2:3"], f"--variants '1:2:3' {VARIANTS}"),
    Case("variants-absurd", [*TR, "--variants", "99999999999999999999"], "variants="
         "99999999999999999999: at most 100000 (the plan holds every variant's data order in "
         "memory)"),
    Case("steps-zero", [*TR, "--steps", "0"], "steps=0 must be at least 1"),
    Case("lora-rank-zero", [*TR, "--lora-rank", "0"], "LoRA rank 0 is not one vLLM serves; use "
         "one of 1, 8, 16, 32, 64, 128, 256, 320, 512"),
    Case("mask-fraction-one", [*TR, "--mask-fraction", "1"], "mask_fraction=1.0 must lie in "
         "[0, 1): it is the share of the pool each variant drops (0.1 drops 10%)"),
    Case("mask-fraction-negative", [*TR, "--mask-fraction", "-0.1"], "mask_fraction=-0.1 must "
         "lie in [0, 1): it is the share of the pool each variant drops (0.1 drops 10%)"),
    Case("workers-zero", [*TR, "--workers", "0"], "workers=0 must be at least 1"),
    Case("seed-negative", [*TR, "--seed", "-1"], "seed=-1 must be 0 or more"),
    Case("pool-too-small", [*TR, "--limit", "1"], "the pool has 1 problems; masking 0.25 "
         "leaves 1, fewer than the 8 prompts of one step (batch_size x grad_accum); use a larger "
         "pool, a smaller --mask-fraction or a smaller batch_size"),
    Case("device-unknown", [*TR, "--device", "tpu"], re.compile(
         r"^Error: Invalid value for '--device': 'tpu' is not one of 'auto', 'cpu', 'cuda'\.$"),
         code=2),
    # pools
    Case("pool-missing", [*TR, "--pool", "nope.jsonl"], "nope.jsonl: no such file, preset or "
         "dataset id"),
    Case("pool-non-utf8", [*TR, "--pool", "g.jsonl"], "g.jsonl: not UTF-8 text (invalid start byte at "
         "byte 0); save it as UTF-8, or as .parquet",
         {"g.jsonl": b"\xff\xfe\x00garbage"}),
    Case("pool-broken-jsonl", [*TR, "--pool", "g.jsonl"], "g.jsonl: cannot be read as jsonl "
         "(Expecting property name enclosed in double quotes: line 1 column 2 (char 1))",
         {"g.jsonl": "{bad\n"}),
    Case("pool-wrong-suffix", [*TR, "--pool", "p.txt"], "p.txt: unknown format '.txt'; use "
         ".jsonl, .json, .parquet or .csv", {"p.txt": "What is 1-1? 0\n"}),
    Case("pool-empty", [*TR, "--pool", "e.jsonl"], "e.jsonl: the problem set is empty",
         {"e.jsonl": ""}),
    Case("pool-a-dir", [*TR, "--pool", "d"], "d is a directory; give a problem file (.jsonl, "
         ".json, .parquet or .csv)", {"d": DIR}),
    Case("pool-parquet-wrong-fields", [*TR, "--pool", "p.parquet"], "p.parquet: no field "
         "'problem' (fields: q, a); set --problem-field", {"p.parquet": lambda p, fx: pd.DataFrame(
             {"q": ["a"], "a": [1]}).to_parquet(p)}),
    Case("pool-parquet-null-answer", [*TR, "--pool", "p.parquet"], "p.parquet: row 3 (id z2) "
         "has no 'answer'", {"p.parquet": lambda p, fx: pd.DataFrame(
             {"id": [f"z{i}" for i in range(12)], "problem": ["What is 1 - 1?"] * 12,
              "answer": [0.0, 0.0, None] + [0.0] * 9}).to_parquet(p)}),
    Case("pool-duplicated-id", [*TR, "--pool", "p.jsonl"], "p.jsonl: duplicate problem id 'a' "
         "(row 2); ids must be unique",
         {"p.jsonl": '{"id": "a", "problem": "1-1?", "answer": "0"}\n' * 2}),
    Case("pool-synthetic-difficulty-zero", [*TR, "--pool", "synthetic:5:d0"],
         "synthetic:5:d0: difficulty=0 must be between 1 and 12 (steps per problem)"),
    Case("pool-offline-hub-id", [*TR, "--pool", "nobody/no-such-set"], re.compile(
         r"^Error: nobody/no-such-set: cannot load split 'train' from the Hugging Face hub "
         r"\(.+\); offline, pass a local \.jsonl/\.parquet/\.csv file instead$")),
    # bases and config files
    Case("base-missing", [*TR, "--base", "nope"], "base model 'nope' not found: no such "
         "directory, and it is not a Hugging Face id (owner/name); pass a local model directory"),
    Case("base-a-file", [*TR, "--base", "{fx}/a.csv"], "base model '{fx}/a.csv' not found: no "
         "such directory, and it is not a Hugging Face id (owner/name); pass a local model "
         "directory"),
    Case("base-offline-hub-id", [*TR, "--base", "nobody/no-such-model"], "base model "
         "'nobody/no-such-model' not found: no such local directory, and the Hugging Face hub "
         "cannot provide it (LocalEntryNotFoundError); download it first or pass a local model "
         "directory", absent=("t",)),
    Case("config-dir-without-config", ["train", "d"], "d is a directory without config.toml; "
         "give a config file (.toml) or a run directory made by `ensemble run`", {"d": DIR}),
    Case("config-steps-float", ["train", "c.toml", *TR[1:7]],  # base, pool, out; no --steps
         "train config steps = 1.5 must be an integer, not a number",
         {"c.toml": "[train]\nsteps = 1.5\n"}),
    Case("config-unknown-key", ["train", "c.toml", *TR[1:]], re.compile(
         r"^Error: unknown train config key\(s\) stepz; known keys: .+$"),
         {"c.toml": "[train]\nstepz = 3\n"}),
    Case("config-template-other-placeholder", ["train", "c.toml", *TR[1:]],
         "prompt_template '{{problem}} {{}}' cannot be filled in with the problem alone "
         "(IndexError: Replacement index 0 out of range for positional args tuple); {{problem}} "
         "is its only placeholder, so write other braces doubled, as in \\boxed{{{{}}}}",
         {"c.toml": '[train]\nprompt_template = "{problem} {}"\n'}),
    # model stage: LoRA on modules the base lacks fails every variant, with the reason
    Case("target-modules-the-base-lacks", ["train", "c.toml", *TR[1:], "--variants", "1"],
         re.compile(r"^failed v000: NoMatchingPeftModuleError: Target modules "
                    r"\{{'nonexistent_proj'\}} not found in the base model\..*$"),
         {"c.toml": '[train]\ntarget_modules = "nonexistent_proj"\nbatch_size = 2\n'
                    'num_generations = 2\nmax_completion_length = 1\n'}),
]


@pytest.mark.parametrize("case", [c.param() for c in TRAIN])
def test_train(case, models, tmp_path, monkeypatch):
    check(case, models, tmp_path, monkeypatch)


# --- run -----------------------------------------------------------------------------

def exp(text: str) -> dict:
    """files: an experiment file e.toml with the top-level keys and stage tables every row
    needs (out, base, a pool, a benchmark), then ``text`` (later keys win in their table)."""
    return {"e.toml": 'out = "r"\nbase = "b"\n' + text.replace(
        "[train]\n", "[train]\npool = \"synthetic:8\"\n").replace(
        "[answer]\n", "[answer]\nbenchmark = \"synthetic:4\"\n")}


TABLES = "[train]\n[answer]\n"
RUN = [
    # issue 13's cases
    Case("a-directory", ["run", "d"], "d is a directory without config.toml; give a config file "
         "(.toml) or a run directory made by `ensemble run`", {"d": DIR}),
    Case("vote-bootstrap-many", ["run", "e.toml"], "[vote] bootstrap = 'many' must be an "
         "integer, not a string", exp(TABLES + '[vote]\nbootstrap = "many"\n'),
         absent=("r",)),
    Case("answer-temperature-hot", ["run", "e.toml"], "[answer] temperature = 'hot' must be a "
         "number, not a string", exp('[train]\n[answer]\ntemperature = "hot"\n'), absent=("r",)),
    Case("train-variants-two", ["run", "e.toml"], "[train] variants = 'two' must be an integer, "
         "not a string", exp('[answer]\n[train]\nvariants = "two"\n'), absent=("r",)),
    Case("offline-hub-base", ["run", "e.toml"], "base model 'nobody/no-such-model' not found: no "
         "such local directory, and the Hugging Face hub cannot provide it "
         "(LocalEntryNotFoundError); download it first or pass a local model directory",
         {"e.toml": 'out = "r"\nbase = "nobody/no-such-model"\n[train]\npool = "synthetic:8"\n'
                    'variants = 2\n[answer]\nbenchmark = "synthetic:4"\n'},
         absent=("r/answers", "r/answers.json", "r/variants/v000")),
    # files that are not experiments
    Case("missing", ["run", "nope.toml"], "nope.toml: config file not found"),
    Case("a-csv", ["run", "{fx}/a.csv"], re.compile(r"^Error: .*/a\.csv: not valid TOML \(.+\)$")),
    Case("binary", ["run", "b.toml"], "b.toml: not a text file; a config is TOML text",
         {"b.toml": b"\xff\xfe\x00"}),
    Case("empty", ["run", "e.toml"], "missing out, base at the top level of the experiment config",
         {"e.toml": ""}),
    Case("no-base", ["run", "e.toml"], "missing base at the top level of the experiment config",
         {"e.toml": 'out = "r"\n'}),
    Case("unknown-top-level-key", ["run", "e.toml"], "unknown experiment config key(s) colour; "
         "top-level keys are out, base, seed and the tables [pretrain], [train], [answer], "
         "[vote], [fit]", exp("colour = 1\n")),
    Case("stage-not-a-table", ["run", "e.toml"], "experiment config vote = 3 must be a table, "
         "not an integer", exp("vote = 3\n")),
    Case("out-not-a-string", ["run", "e.toml"], "experiment config out = 5 must be a path "
         "(string), not an integer", {"e.toml": 'out = 5\nbase = "b"\n'}),
    Case("seed-negative", ["run", "e.toml"], "seed=-1 must be 0 or more",
         {"e.toml": 'out = "r"\nbase = "b"\nseed = -1\n'}),
    Case("seed-word", ["run", "e.toml"], "experiment config seed = 'zero' must be an integer, "
         "not a string", {"e.toml": 'out = "r"\nbase = "b"\nseed = "zero"\n'}),
    Case("train-without-pool", ["run", "e.toml"], "the experiment's [train] table needs pool = "
         "... (a .jsonl/.json/.parquet/.csv file, a dataset id or synthetic:N)",
         {"e.toml": 'out = "r"\nbase = "b"\n'}),
    Case("answer-without-benchmark", ["run", "e.toml"], "the experiment's [answer] table needs "
         "benchmark = ... (a problem file, a preset (aime24, aime25, math500), a dataset id or "
         "synthetic:N)", {"e.toml": 'out = "r"\nbase = "b"\n[train]\npool = "synthetic:8"\n'}),
    Case("vote-k-word", ["run", "e.toml"], f"k spec 'zero' {NOT_A_K}",
         exp(TABLES + '[vote]\nk = "zero"\n'), absent=("r",)),
    Case("fit-k-min-negative", ["run", "e.toml"], "k_min=-1 must be at least 1",
         exp(TABLES + "[fit]\nk_min = -1\n"), absent=("r",)),
    Case("answer-shard-past-the-end", ["run", "e.toml"], "shard='3/2' must be i/n with 0 <= i "
         "< n, e.g. 0/4", exp('[train]\n[answer]\nshard = "3/2"\n')),
    Case("answer-limit-zero", ["run", "e.toml"], "limit=0 must be at least 1 (the first N "
         "problems); leave it out to answer every problem", exp("[train]\n[answer]\nlimit = 0\n")),
    Case("stage-key-at-the-wrong-level", ["run", "e.toml"], "[answer] sets base, which the "
         "experiment sets for every stage; move it to the top of the file",
         exp('[train]\n[answer]\nbase = "c"\n')),
    Case("pretrain-without-demo-base", ["run", "e.toml"], "a [pretrain] table needs base = "
         "'demo' (got base = 'b'); drop the table or the base", exp("[pretrain]\nsteps = 3\n")),
    *out_cases("run", "e.toml", files=exp(TABLES)),
    Case("fresh-on-a-foreign-dir", ["run", "e.toml", "--fresh", "--out", "mine"], "mine is not "
         "a run directory (no config.toml); refusing to delete it",
         {**exp(TABLES), "mine/precious.txt": "keep"}),
    Case("dir-with-results-but-no-config", ["run", "e.toml", "--out", "{fx}/run"],
         "{fx}/run already holds answers/, votes/, fits/ from another run and no config.toml; "
         "use another --out, or delete {fx}/run to start over", exp(TABLES)),
    Case("dir-of-another-experiment", ["run", "e.toml"], "r/config.toml describes another "
         "experiment (seed: 1 there, 0 now); use another --out, or delete r to start over",
         {**exp(TABLES), "r/config.toml": 'out = "r"\nbase = "b"\nseed = 1\n\n[train]\n'
                                          'pool = "synthetic:8"\n\n[answer]\n'
                                          'benchmark = "synthetic:4"\n'}),
]


@pytest.mark.parametrize("case", [c.param() for c in RUN])
def test_run(case, fx, tmp_path, monkeypatch):
    check(case, fx, tmp_path, monkeypatch)


# --- status --------------------------------------------------------------------------

STATUS = [
    Case("missing", ["status", "nope"], "nope/variants: no variants directory; run `ensemble "
         "train ... --out nope` first"),
    Case("a-file", ["status", "{fx}/a.csv"], "{fx}/a.csv is a file, not a run directory; give "
         "the --out directory of `ensemble train`"),
    Case("run-without-variants", ["status", "{fx}/run"], "{fx}/run/variants: no variants "
         "directory; run `ensemble train ... --out {fx}/run` first"),
    Case("variant-json-broken", ["status", "r"], "r/variants/v000/variant.json: not valid JSON "
         "(Expecting property name enclosed in double quotes: line 1 column 2 (char 1)); delete "
         "r/variants/v000 and train v000 again", {"r/variants/v000/variant.json": "{bad"}),
    Case("variant-json-a-list", ["status", "r"], "r/variants/v000/variant.json: holds a JSON "
         "list, not an object; delete r/variants/v000 and train v000 again",
         {"r/variants/v000/variant.json": "[1]"}),
    Case("failed-record-binary", ["status", "r"], "r/variants/.failed/v001.json: not UTF-8 "
         "text, so not the JSON file it should be; delete it and train v001 again",
         {"r/variants/.failed/v001.json": b"\xff\xfe"}),
    Case("train-json-broken", ["status", "r"], "r/variants/train.json: not valid JSON "
         "(Expecting value: line 1 column 1 (char 0)); delete it; `ensemble train` writes it "
         "again", {"r/variants/train.json": ""}),
]


@pytest.mark.parametrize("case", [c.param() for c in STATUS])
def test_status(case, fx, tmp_path, monkeypatch):
    check(case, fx, tmp_path, monkeypatch)


# --- demo ----------------------------------------------------------------------------

SIM = ["demo", "--simulated", "--out", "s"]
DEMO = [
    Case("variants-zero", ["demo", "--variants", "0"], "variants=0: voting needs at least 2 "
         "voters"),
    Case("variants-one-simulated", [*SIM, "--variants", "1"], "variants=1: a simulated demo "
         "takes 2 to 10000 (voting needs at least 2 voters)", absent=("s",)),
    Case("variants-absurd", ["demo", "--variants", "1000000000", "--out", "d"], "variants="
         "1000000000: at most 100000 (the plan holds every variant's data order in memory)",
         absent=("d",)),
    Case("variants-absurd-simulated", [*SIM, "--variants", "1000000000"], "variants=1000000000: "
         "a simulated demo takes 2 to 10000 (voting needs at least 2 voters)", absent=("s",)),
    Case("seed-negative", ["demo", "--seed", "-1", "--out", "d"], "seed=-1 must be 0 or more",
         absent=("d",)),
    Case("seed-negative-simulated", [*SIM, "--seed", "-1"], "seed=-1 must be 0 or more",
         absent=("s",)),
    *out_cases("demo"),
    *out_cases("demo", "--simulated", suffix="-simulated"),
    Case("simulated-into-a-real-run", [*SIM[:-1], "{fx}/run"], "{fx}/run holds files but is not "
         "a simulated demo (no simulation.json); give --out a new directory (one an older "
         "ensemble made has no marker: delete it to start over)"),
    Case("simulated-fresh-on-a-foreign-dir", [*SIM, "--fresh"], "s holds files but is not a "
         "simulated demo (no simulation.json); give --out a new directory (one an older ensemble "
         "made has no marker: delete it to start over)",
         {"s/precious.txt": "keep"}),
    Case("simulated-with-other-settings", [*SIM, "--variants", "8"], "s was simulated with "
         "variants=6, seed=0, not variants=8, seed=0; pass --fresh to start over, or another "
         "--out", {"s/simulation.json": json.dumps({"variants": 6, "seed": 0,
                                                    "answers_complete": True})}),
    Case("run-of-another-experiment", ["demo", "--out", "r"], "r/config.toml describes another "
         "experiment (base: 'b' there, 'demo' now); use another --out, or delete r to start "
         "over", {"r/config.toml": 'out = "r"\nbase = "b"\n'}),
]


@pytest.mark.parametrize("case", [c.param() for c in DEMO])
def test_demo(case, fx, tmp_path, monkeypatch):
    check(case, fx, tmp_path, monkeypatch)
    if case.id == "simulated-fresh-on-a-foreign-dir":
        assert (tmp_path / "s" / "precious.txt").read_text() == "keep"


# --- pretrain ------------------------------------------------------------------------

PRETRAIN = [
    Case("config-missing", ["pretrain", "nope.toml"], "nope.toml: config file not found"),
    Case("config-a-dir", ["pretrain", "d"], "d is a directory without config.toml; give a "
         "config file (.toml) or a run directory made by `ensemble run`", {"d": DIR}),
    Case("config-binary", ["pretrain", "b.toml"], "b.toml: not a text file; a config is TOML "
         "text", {"b.toml": b"\xff\xfe"}),
    Case("steps-zero", ["pretrain", "--steps", "0"], "steps=0 must be at least 1"),
    Case("steps-negative", ["pretrain", "--steps", "-1"], "steps=-1 must be at least 1"),
    Case("seed-negative", ["pretrain", "--seed", "-1"], "seed=-1 must be 0 or more"),
    Case("pretrain-not-a-table", ["pretrain", "p.toml"], "experiment config pretrain = 5 must be "
         "a table, not an integer", {"p.toml": 'base = "demo"\npretrain = 5\n'}),
    Case("seed-word", ["pretrain", "p.toml"], "experiment config seed = 'x' must be an integer, "
         "not a string", {"p.toml": 'base = "demo"\nseed = "x"\n'}),
    Case("unknown-key", ["pretrain", "p.toml"], re.compile(
         r"^Error: unknown pretrain setting key\(s\) stepz; known keys: batch_size, .+$"),
         {"p.toml": 'base = "demo"\n[pretrain]\nstepz = 3\n'}),
    Case("steps-word", ["pretrain", "p.toml"], "pretrain setting steps = 'x' must be an integer, "
         "not a string", {"p.toml": 'base = "demo"\n[pretrain]\nsteps = "x"\n'}),
    Case("table-of-another-base", ["pretrain", "p.toml"], "a [pretrain] table needs base = "
         "'demo' (got base = 'b'); drop the table or the base",
         {"p.toml": 'base = "b"\n[pretrain]\nsteps = 3\n'}),
]


@pytest.mark.parametrize("case", [c.param() for c in PRETRAIN])
def test_pretrain(case, fx, tmp_path, monkeypatch):
    check(case, fx, tmp_path, monkeypatch)
