"""`ensemble vote` through click: outputs, determinism, and one-line errors."""

from __future__ import annotations

import json
from fractions import Fraction
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from ensemble.cli import main
from ensemble.simulate import write_run_answers
from tests.helpers import small_table, write_csv


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def table_rows(rows):
    return pd.DataFrame(rows, columns=["condition", "model_id", "problem_id", "sample",
                                       "answer", "gold"])


def test_vote_writes_contract_files(tmp_path):
    write_run_answers(small_table(), tmp_path / "run")
    r = run("vote", tmp_path / "run", "--bootstrap", 200)
    assert r.exit_code == 0, r.output
    votes = tmp_path / "run" / "votes"
    for name in ["curve.csv", "curve.parquet", "curve_by_model.csv", "per_problem.parquet",
                 "voters.csv", "vote.json"]:
        assert (votes / name).exists(), name
    curve = pd.read_csv(votes / "curve.csv")
    for col in ["condition", "k", "accuracy", "ci_low", "ci_high", "pass_at_k", "n_voters",
                "n_problems", "estimator"]:
        assert col in curve.columns
    assert set(curve["condition"]) == {"collaboration", "repetition"}
    assert curve.groupby("condition")["k"].max().to_dict() == {"collaboration": 10,
                                                               "repetition": 10}
    assert (curve["ci_low"] <= curve["accuracy"] + 1e-12).all()
    assert (curve["accuracy"] <= curve["ci_high"] + 1e-12).all()
    # accuracy never exceeds coverage
    assert (curve["accuracy"] <= curve["pass_at_k"] + 1e-12).all()
    meta = json.loads((votes / "vote.json").read_text())
    assert meta["config"]["estimator"] == "exact"
    assert len(meta["input_sha256"]) == 64


def test_k1_equals_mean_voter_accuracy(tmp_path):
    df = small_table()
    write_run_answers(df, tmp_path / "run")
    assert run("vote", tmp_path / "run", "--bootstrap", 0).exit_code == 0
    curve = pd.read_csv(tmp_path / "run" / "votes" / "curve.csv")
    k1 = curve[curve.k == 1].set_index("condition")["accuracy"]
    expect = df.groupby("condition")["correct"].mean()
    assert k1["collaboration"] == pytest.approx(expect["collaboration"], abs=1e-12)
    assert k1["repetition"] == pytest.approx(expect["repetition"], abs=1e-12)


def test_same_input_same_seed_byte_identical(tmp_path):
    path = write_csv(small_table(), tmp_path / "a.csv")
    for out in ("o1", "o2"):
        assert run("vote", path, "--out", tmp_path / out, "--bootstrap", 100,
                   "--seed", 7).exit_code == 0
    for name in ["curve.csv", "curve.parquet", "per_problem.parquet", "curve_by_model.csv"]:
        assert (tmp_path / "o1" / name).read_bytes() == (tmp_path / "o2" / name).read_bytes()


def _brute(answers, gold, k):
    total = Fraction(0)
    subsets = list(combinations(range(len(answers)), k))
    for s in subsets:
        counts = {}
        for i in s:
            if answers[i] is not None:
                counts[answers[i]] = counts.get(answers[i], 0) + 1
        if counts.get(gold, 0) and counts[gold] == max(counts.values()):
            total += Fraction(1, sum(v == counts[gold] for v in counts.values()))
    return total / len(subsets)


def test_curve_matches_brute_force_on_a_file(tmp_path):
    # 6 voters on 2 problems, with a tie, an abstention and a missing gold vote.
    answers = {"p1": ["5", "5", "7", "7", None, "9"], "p2": ["1", "2", "2", "3", "1", "1"]}
    gold = {"p1": "5", "p2": "2"}
    rows = [("collaboration", f"m{v}", p, 0, a[v], gold[p]) for p, a in answers.items()
            for v in range(6)]
    path = tmp_path / "t.jsonl"
    table_rows(rows).to_json(path, orient="records", lines=True)
    assert run("vote", path, "--bootstrap", 0).exit_code == 0
    curve = pd.read_csv(tmp_path / "votes" / "curve.csv")
    for k in range(1, 7):
        expect = (_brute(answers["p1"], "5", k) + _brute(answers["p2"], "2", k)) / 2
        got = curve.loc[curve.k == k, "accuracy"].item()
        assert abs(got - float(expect)) < 1e-12, k


def test_monte_carlo_reports_spread(tmp_path):
    path = write_csv(small_table(), tmp_path / "a.csv")
    r = run("vote", path, "--estimator", "monte-carlo", "--committees", 300, "--k", "1,3,5",
            "--bootstrap", 0)
    assert r.exit_code == 0, r.output
    curve = pd.read_csv(tmp_path / "votes" / "curve.csv")
    assert sorted(curve.k.unique()) == [1, 3, 5]
    assert (curve["committee_sd"] >= 0).all()
    assert (curve["estimator"] == "monte-carlo").all()


def test_missing_problem_warns_and_counts_as_no_answer(tmp_path):
    df = small_table()
    drop = (df.model_id == "v003") & (df.problem_id == "p002") & (df.condition == "collaboration")
    path = write_csv(df[~drop], tmp_path / "a.csv")
    r = run("vote", path, "--bootstrap", 0)
    assert r.exit_code == 0
    assert "warning: collaboration: 1 (voter, problem) answers are missing (of 120); they " \
           "count as no answer" in r.output


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda df: df.drop(columns=["gold"]),
         "missing column(s) gold; an answers table needs condition, model_id, problem_id, "
         "sample, answer, gold (correct is optional)"),
        (lambda df: pd.concat([df, df.iloc[[4]]]),
         "duplicate row for condition=collaboration, model_id=v000, problem_id=p004, sample=0 "
         "(first at {path} row 6); keep one row per (condition, model_id, problem_id, sample)"),
        (lambda df: df.assign(gold=np.where((df.problem_id == "p001") & (df.model_id == "v002"),
                                            "999999", df.gold)),
         "problem_id=p001 has two gold answers"),
        (lambda df: df.assign(condition=np.where(df.index == 3, "", df.condition)),
         "{path} row 5: empty condition; every row needs one"),
        (lambda df: df.assign(sample=np.where(df.index == 2, "x", df["sample"].astype(str))),
         "{path} row 4: sample='x' is not an integer; number the samples 0, 1, ..."),
    ],
)
def test_bad_input_one_line_errors(tmp_path, mutate, message):
    path = tmp_path / "bad.csv"
    mutate(small_table()).to_csv(path, index=False)
    r = run("vote", path)
    assert r.exit_code == 1
    assert message.format(path=path) in r.output
    assert r.output.startswith("Error: ") and r.output.count("\n") == 1


def test_k_errors(tmp_path):
    path = write_csv(small_table(), tmp_path / "a.csv")
    r = run("vote", path, "--k", "1:250")
    assert r.exit_code == 1
    assert f"Error: k=250 exceeds the 10 voters of condition collaboration in {path}; lower --k" \
        in r.output
    r = run("vote", path, "--k", "two")
    assert r.exit_code == 1
    assert "Error: k spec 'two' is not understood; use a range like 1:200, a list like " \
           "1,2,4,8, or log:40" in r.output


def test_empty_input_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    r = run("vote", tmp_path / "empty")
    assert r.exit_code == 1
    assert "no answers/**.parquet files; run `ensemble answer` first" in r.output
    r = run("vote", tmp_path / "nope.csv")
    assert r.exit_code == 1 and "no such file or directory" in r.output
    pd.DataFrame(columns=["condition", "model_id", "problem_id", "sample", "answer",
                          "gold"]).to_csv(tmp_path / "e.csv", index=False)
    r = run("vote", tmp_path / "e.csv")
    assert r.exit_code == 1 and "no answer rows" in r.output


def test_correct_column_merges_equivalent_answers(tmp_path):
    # '0.5' and '1/2' are both graded correct: they vote together for the gold class.
    rows = [("collaboration", f"m{i}", "p", 0, a, "1/2") for i, a in
            enumerate(["0.5", "1/2", "3", "3", "0.5"])]
    df = table_rows(rows).assign(correct=[True, True, False, False, True])
    df.to_csv(tmp_path / "c.csv", index=False)
    assert run("vote", tmp_path / "c.csv", "--bootstrap", 0).exit_code == 0
    curve = pd.read_csv(tmp_path / "votes" / "curve.csv")
    assert curve.loc[curve.k == 5, "accuracy"].item() == pytest.approx(1.0)
