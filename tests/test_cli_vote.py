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
    curve = pd.read_csv(tmp_path / "t_votes" / "curve.csv")
    for k in range(1, 7):
        expect = (_brute(answers["p1"], "5", k) + _brute(answers["p2"], "2", k)) / 2
        got = curve.loc[curve.k == k, "accuracy"].item()
        assert abs(got - float(expect)) < 1e-12, k


def test_monte_carlo_reports_spread(tmp_path):
    path = write_csv(small_table(), tmp_path / "a.csv")
    r = run("vote", path, "--estimator", "monte-carlo", "--committees", 300, "--k", "1,3,5",
            "--bootstrap", 0)
    assert r.exit_code == 0, r.output
    curve = pd.read_csv(tmp_path / "a_votes" / "curve.csv")
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
        (lambda df: df.assign(answer=np.where(df.index == 7, None, df.answer),
                              correct=np.where(df.index == 7, True, df.correct)),
         "{path} row 9: correct=True but the answer is empty; a row without an answer cannot "
         "be correct: fix the answer or set correct=false"),
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
    curve = pd.read_csv(tmp_path / "c_votes" / "curve.csv")
    assert curve.loc[curve.k == 5, "accuracy"].item() == pytest.approx(1.0)


def _unequal_repetition(tmp_path):
    """Three control models with 8, 5 and 8 samples (the case that was padded with zeros)."""
    df = small_table(problems=10, variants=8, samples=8, repetition_models=3)
    drop = (df.condition == "repetition") & (df.model_id == "v001") & (df["sample"] >= 5)
    return write_csv(df[~drop], tmp_path / "uneq.csv"), df[~drop]


def _own_exact(df, model, ks):
    """Each model's curve from its own samples only, independently of the vote stage."""
    from ensemble.voting import estimators as voting

    rows = df[(df.condition == "repetition") & (df.model_id == model)]
    out = []
    for _, g in rows.groupby("problem_id"):
        ans = g["answer"].fillna("").tolist()
        gold = g["gold"].iloc[0]
        uniq = sorted({a for a in ans if a})
        code = {a: i for i, a in enumerate(uniq)}
        codes = np.array([code[a] if a else -1 for a in ans])
        h = voting.histogram(codes, code.get(gold, -2))
        out.append(voting.exact_accuracy(h)[ks])
    return np.mean(out, axis=0)


@pytest.mark.parametrize("spec, expect_ks", [
    (None, [1, 2, 3, 4, 5]), ("all", [1, 2, 3, 4, 5]), ("log:3", [1, 2, 5]),
    ("1:8", [1, 2, 3, 4, 5]), ("1,2,4,8", [1, 2, 4]), ("1:8:2", [1, 3, 5]),
])
def test_repetition_models_with_unequal_samples_use_their_own_samples(tmp_path, spec,
                                                                      expect_ks):
    path, df = _unequal_repetition(tmp_path)
    args = ["vote", path, "--out", tmp_path / "v", "--bootstrap", 0]
    r = CliRunner().invoke(main, [str(a) for a in args + (["--k", spec] if spec else [])])
    assert r.exit_code == 0, r.output
    assert ("warning: repetition models have different sample counts (repetition/v000=8, "
            "repetition/v001=5, repetition/v002=8); every model is voted on its own samples "
            f"only, so the repetition curve stops at k={max(expect_ks)}, its smallest model's "
            "count") in r.output
    by_model = pd.read_csv(tmp_path / "v" / "curve_by_model.csv")
    for model, d in by_model.groupby("model_id"):
        assert d["k"].tolist() == expect_ks
        np.testing.assert_allclose(d["accuracy"], _own_exact(df, model, expect_ks), atol=1e-12)
        assert (d["pass_at_k"] <= 1.0).all() and (d["accuracy"] > 0).all()
    curve = pd.read_csv(tmp_path / "v" / "curve.csv")
    rep = curve[curve.condition == "repetition"]
    assert rep["k"].tolist() == expect_ks
    np.testing.assert_allclose(
        rep["accuracy"], by_model.groupby("k")["accuracy"].mean().to_numpy(), atol=1e-12)
    # collaboration keeps its own 8 voters' grid, and with log:M also the common log grid
    collab = curve[curve.condition == "collaboration"]["k"].tolist()
    assert collab == {"log:3": [1, 2, 3, 5, 8], "1:8:2": [1, 3, 5, 7],
                      "1,2,4,8": [1, 2, 4, 8]}.get(spec, list(range(1, 9)))


def test_k_above_every_repetition_model_is_refused(tmp_path):
    path, _ = _unequal_repetition(tmp_path)
    df = pd.read_csv(path)
    df = df[df.condition == "repetition"]
    write_csv(df, tmp_path / "rep.csv")
    r = run("vote", tmp_path / "rep.csv", "--k", "9,10", "--bootstrap", 0)
    assert r.exit_code == 1
    assert r.output.strip().endswith(
        "k=10 exceeds the voters of every repetition model in "
        f"{tmp_path / 'rep.csv'} (repetition/v000=8, repetition/v001=5, repetition/v002=8); "
        "lower --k")


def test_two_control_models_are_warned_of(tmp_path):
    """With 2 control models the model spread has one degree of freedom: the typical-model
    intervals under-cover (measured), and the vote says so; 3 models are not warned of."""
    for models, warned in ((2, True), (3, False)):
        df = small_table(problems=8, variants=6, samples=4, repetition_models=models)
        write_run_answers(df, tmp_path / f"r{models}")
        r = run("vote", tmp_path / f"r{models}", "--bootstrap", 0)
        assert r.exit_code == 0, r.output
        assert ("warning: repetition has 2 control models: the spread between models is "
                "estimated from one degree of freedom (often as 0), so intervals for a "
                "typical control model cover less than their level; use 3 or more "
                "(--repetition-models)" in r.output) is warned


def test_several_control_models_ci_includes_their_choice(tmp_path):
    df = small_table(problems=20, variants=12, samples=12, repetition_models=4)
    # One control model far better than the others: a between-model spread the problems'
    # noise does not explain, at every k.
    better = (df.condition == "repetition") & (df.model_id == "v000") & (df["sample"] % 3 > 0)
    df.loc[better, "answer"] = df.loc[better, "gold"]
    df.loc[better, "correct"] = True
    write_run_answers(df, tmp_path / "r")
    assert run("vote", tmp_path / "r", "--bootstrap", 400).exit_code == 0
    meta = json.loads((tmp_path / "r" / "votes" / "vote.json").read_text())
    rep = meta["conditions"]["repetition"]
    assert rep["n_models"] == 4 and rep["models"] == ["v000", "v001", "v002", "v003"]
    assert rep["ci_sources"] == ["problems", "control models"]
    assert meta["conditions"]["collaboration"]["ci_sources"] == ["problems"]
    long = pd.read_parquet(tmp_path / "r" / "votes" / "per_problem_by_model.parquet")
    assert sorted(long.model_id.unique()) == ["v000", "v001", "v002", "v003"]
    assert len(long) == 4 * 20 * 12
    # The condition's per-problem rows are the mean of its models' rows.
    avg = pd.read_parquet(tmp_path / "r" / "votes" / "per_problem.parquet")
    avg = avg[avg.condition == "repetition"].set_index(["problem_id", "k"])["accuracy"]
    mean = long.groupby(["problem_id", "k"])["accuracy"].mean()
    np.testing.assert_allclose(avg.sort_index(), mean.sort_index(), atol=1e-15)
    # The between-model component widens the CI against problems alone, exactly where
    # the models' spread exceeds what the problem noise explains (sigma_b2 > 0).
    from ensemble.core.proportions import curve_intervals, model_components

    curve = pd.read_csv(tmp_path / "r" / "votes" / "curve.csv")
    rep_curve = curve[curve.condition == "repetition"].set_index("k")
    W = avg.unstack("k").to_numpy()
    lo, hi = curve_intervals(W, 0.95)
    wide = (rep_curve.ci_high - rep_curve.ci_low).to_numpy()
    models = long.set_index(["model_id", "problem_id", "k"])["accuracy"].sort_index()
    spread = np.array([model_components(models.xs(k, level="k").unstack("problem_id")
                                        .to_numpy())[2] for k in rep_curve.index])
    assert (spread > 0).any()
    np.testing.assert_allclose(wide[spread <= 0], (hi - lo)[spread <= 0], atol=1e-12)
    assert (wide[spread > 0] > (hi - lo)[spread > 0] + 1e-4).all()


def test_out_that_is_a_file_or_a_foreign_directory_is_refused_before_reading(tmp_path):
    path = write_csv(small_table(), tmp_path / "a.csv")
    (tmp_path / "afile").write_text("x")
    r = run("vote", path, "--out", tmp_path / "afile")
    assert r.exit_code == 1
    assert r.output == (f"Error: {tmp_path / 'afile'} is a file, not a directory; give --out "
                        "a directory path\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    r = run("vote", path, "--out", tmp_path / "mine")
    assert r.exit_code == 1
    assert r.output == (f"Error: {tmp_path / 'mine'} holds files but is not a votes directory "
                        "(no vote.json); give --out an empty or new directory\n")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_interrupted_revote_leaves_the_old_set_whole(tmp_path, monkeypatch):
    """A vote killed while writing its files leaves the previous votes untouched: readers
    never see a curve of one input beside per-problem rows of another."""
    from ensemble.voting import votes as vote_mod

    small = write_csv(small_table(), tmp_path / "small.csv")
    big = write_csv(small_table(problems=20, variants=16, samples=16), tmp_path / "big.csv")
    out = tmp_path / "v"
    assert run("vote", small, "--out", out, "--bootstrap", 20).exit_code == 0
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    real = vote_mod.write_json

    def dies(path, obj):  # the process dies after every other file of the set is written
        raise KeyboardInterrupt

    monkeypatch.setattr(vote_mod, "write_json", dies)
    r = run("vote", big, "--out", out, "--bootstrap", 20, "--force")
    assert r.exit_code == 1 and "Aborted" in r.output  # click's answer to Ctrl-C
    monkeypatch.setattr(vote_mod, "write_json", real)
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".v.")]  # nothing left
    assert run("fit", out).exit_code == 0
    assert run("vote", big, "--out", out, "--bootstrap", 20, "--force").exit_code == 0
    assert json.loads((out / "vote.json").read_text())["n_rows"] == len(pd.read_csv(big))


def test_written_files_follow_the_umask(tmp_path):
    import os
    import stat

    path = write_csv(small_table(), tmp_path / "a.csv")
    old = os.umask(0o022)
    try:
        assert run("vote", path, "--out", tmp_path / "v", "--bootstrap", 0).exit_code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "v").stat().st_mode) == 0o755
    for f in (tmp_path / "v").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


def test_absurd_k_is_one_line_not_an_allocation(tmp_path):
    path = write_csv(small_table(), tmp_path / "a.csv")
    for spec, k in (("1:99999999999999999999", "99999999999999999999"),
                    ("5,99999999999999999999", "99999999999999999999"),
                    ("1:10**3", None)):
        r = run("vote", path, "--k", spec, "--bootstrap", 0)
        assert r.exit_code == 1
        if k:
            assert r.output == (f"Error: k={k} exceeds the 10 voters of condition collaboration "
                                f"in {path}; lower --k\n")
        else:
            assert "is not understood" in r.output


def test_an_internal_error_prints_its_traceback_and_asks_for_a_report(tmp_path, monkeypatch):
    from ensemble.voting import votes as vote_mod

    def broken(*a, **kw):
        raise KeyError("boom")

    monkeypatch.setattr(vote_mod, "compute", broken)
    path = write_csv(small_table(), tmp_path / "a.csv")
    r = CliRunner().invoke(main, ["vote", str(path)])
    assert r.exit_code == 2
    assert "KeyError: 'boom'" in r.output and "This is a bug in ensemble" in r.output
    assert "please report it on the project's issue tracker" in r.output


def test_same_number_written_differently_is_one_class(tmp_path):
    """Two voters give the gold 5 and three give 7, each written differently: compared as
    strings every class has one vote (a five-way tie, gold wins 1/5); merged (the
    default), 7 wins the full-pool vote."""
    rows = [("collaboration", f"v{i}", "p1", 0, a, "5") for i, a in
            enumerate(["5", "+5.0", "7", "7.0", " 07 "])]
    path = write_csv(table_rows(rows), tmp_path / "t.csv")
    for mode, k5 in (("none", 0.2), ("number", 0.0)):
        r = run("vote", path, "--out", tmp_path / mode, "--bootstrap", 0, "--canonical", mode)
        assert r.exit_code == 0, r.output
        curve = pd.read_csv(tmp_path / mode / "curve.csv").set_index("k")["accuracy"]
        assert curve[5] == pytest.approx(k5, abs=1e-12)
        assert curve[1] == pytest.approx(0.4 if mode == "number" else 0.2, abs=1e-12)
    meta = json.loads((tmp_path / "number" / "vote.json").read_text())
    assert meta["config"]["canonical"] == "number"


@pytest.mark.slow
def test_error_bounds_are_reported_and_histogram_mc_agrees_with_exact(tmp_path):
    df = small_table(problems=12, variants=1500, samples=1500, repetition_models=1)
    path = tmp_path / "big.parquet"
    df.to_parquet(path)
    r = run("vote", path, "--out", tmp_path / "ex", "--k", "log:12", "--bootstrap", 0)
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "ex" / "vote.json").read_text())
    for cond in ("collaboration", "repetition"):
        # 1500 voters: past the polynomial method's reach, so the windowed exact method ran
        assert 0 < meta["conditions"][cond]["error_bound"] <= 1e-9
    exact = pd.read_csv(tmp_path / "ex" / "curve.csv")
    assert (exact["error_bound"] <= 1e-9).all()
    assert "(error bound " in r.output
    r = run("vote", path, "--out", tmp_path / "mc", "--k", "log:12", "--bootstrap", 0,
            "--estimator", "histogram-mc", "--committees", 4000)
    assert r.exit_code == 0, r.output
    mc = pd.read_csv(tmp_path / "mc" / "curve.csv")
    half = mc["error_bound"].iloc[0]
    assert half == pytest.approx(np.sqrt(np.log(2 / 1e-3) / (2 * 4000)))
    # each cell is within the Hoeffding half-width (at 1 - 1e-3), so the mean is too
    assert (np.abs(mc["accuracy"] - exact["accuracy"]) <= half).all()


def test_default_outputs_sit_beside_their_input_and_never_collide(tmp_path):
    """Two answers files in one folder: each gets its own votes, fits and report."""
    a = write_csv(small_table(), tmp_path / "a.csv")
    b = write_csv(small_table(seed=9), tmp_path / "b.csv")
    for src in (a, b):
        assert run("vote", src, "--bootstrap", 0).exit_code == 0
    for name in ("a", "b"):
        assert run("fit", tmp_path / f"{name}_votes").exit_code == 0
        assert run("report", tmp_path / f"{name}_votes").exit_code == 0
    for name, src in (("a", a), ("b", b)):
        votes = json.loads((tmp_path / f"{name}_votes" / "vote.json").read_text())
        assert votes["config"]["input"] == str(src)
        fit = json.loads((tmp_path / f"{name}_fits" / "fit.json").read_text())
        assert fit["config"]["votes"] == str(tmp_path / f"{name}_votes")
        rep = json.loads((tmp_path / f"{name}_report" / "report.json").read_text())
        assert rep["config"]["votes"] == str(tmp_path / f"{name}_votes")
        assert rep["votes_sha256"] == fit["votes_sha256"]  # the report used its own fit
        assert (tmp_path / f"{name}_report" / "figures" / "scaling.png").is_file()
    assert not (tmp_path / "fits").exists() and not (tmp_path / "report.md").exists()
    # A run directory keeps its fixed names: RUN/votes, RUN/fits, RUN/report.md.
    write_run_answers(small_table(), tmp_path / "run")
    assert run("vote", tmp_path / "run", "--bootstrap", 0).exit_code == 0
    r = run("fit", tmp_path / "run")
    assert r.exit_code == 0 and r.output.endswith(f"wrote {tmp_path / 'run' / 'fits'}/fit.json\n")
    assert run("report", tmp_path / "run").exit_code == 0
    assert (tmp_path / "run" / "report.md").is_file()


def test_outputs_of_another_input_are_not_overwritten_without_force(tmp_path):
    a = write_csv(small_table(), tmp_path / "a.csv")
    b = write_csv(small_table(seed=9), tmp_path / "b.csv")
    out = tmp_path / "v"
    assert run("vote", a, "--bootstrap", 0, "--out", out).exit_code == 0
    assert run("vote", a, "--bootstrap", 0, "--out", out).exit_code == 0  # the same input: fine
    r = run("vote", b, "--bootstrap", 0, "--out", out)
    assert r.exit_code == 1
    assert r.output == (f"Error: {out} holds the votes of {a}, not of {b}; pass --out DIR to "
                        "keep both, or --force to replace them\n")
    assert json.loads((out / "vote.json").read_text())["config"]["input"] == str(a)
    assert run("vote", b, "--bootstrap", 0, "--out", out, "--force").exit_code == 0
    assert json.loads((out / "vote.json").read_text())["config"]["input"] == str(b)
    # the same rule for fits and reports of different votes in one directory
    assert run("vote", a, "--bootstrap", 0, "--out", tmp_path / "va").exit_code == 0
    for votes in (out, tmp_path / "va"):  # a report renders the fit beside its votes
        assert run("fit", votes).exit_code == 0
    for cmd, marker in (("fit", "fit.json"), ("report", "report.json")):
        f = tmp_path / cmd
        assert run(cmd, out, "--out", f).exit_code == 0
        r = run(cmd, tmp_path / "va", "--out", f)
        assert r.exit_code == 1
        assert r.output == (f"Error: {f} holds the {cmd} of {out}, not of {tmp_path / 'va'}; "
                            "pass --out DIR to keep both, or --force to replace them\n")
        assert run(cmd, tmp_path / "va", "--out", f, "--force").exit_code == 0
        assert json.loads((f / marker).read_text())["config"]["votes"] == str(tmp_path / "va")


def test_collaboration_with_several_samples_per_variant_votes_over_all_of_them(tmp_path):
    """`ensemble answer --samples 2`: every (variant, sample) pair is one voter."""
    rows = []
    for v, answers in enumerate([("5", "7"), ("5", "5"), ("7", "9")]):
        for s, a in enumerate(answers):
            rows.append(("collaboration", f"v{v}", "p1", s, a, "5"))
    path = write_csv(table_rows(rows), tmp_path / "t.csv")
    r = run("vote", path, "--out", tmp_path / "v", "--bootstrap", 0)
    assert r.exit_code == 0, r.output
    curve = pd.read_csv(tmp_path / "v" / "curve.csv").set_index("k")
    assert curve["n_voters"].iloc[0] == 6 and curve.index.max() == 6
    voters = pd.read_csv(tmp_path / "v" / "voters.csv")
    assert sorted(voters["voter"]) == ["v0/0", "v0/1", "v1/0", "v1/1", "v2/0", "v2/1"]
    answers = ["5", "7", "5", "5", "7", "9"]
    for k in (1, 2, 3, 6):
        assert curve.loc[k, "accuracy"] == pytest.approx(float(_brute(answers, "5", k)),
                                                         abs=1e-12)
