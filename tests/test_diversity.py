"""ensemble.voting.diversity: pair counts against brute force, hand cases, and a simulation with a
known intraclass correlation; and the diagnostics in the vote stage's outputs."""

import itertools
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ensemble.core.bootstrap import problem_resamples
from ensemble.voting.config import VoteConfig
from ensemble.voting.diversity import diversity, pair_counts
from ensemble.voting.votes import run_vote

ROOT = Path(__file__).resolve().parents[1]


def brute(codes, gold, groups):
    """Every ordered pair of distinct voters, counted one by one with exact fractions."""
    out = []
    for i in range(codes.shape[0]):
        c = {"same": [0, 0, 0, 0], "cross": [0, 0, 0, 0]}  # pairs, both right, answered, agree
        for j, l in itertools.permutations(range(codes.shape[1]), 2):
            kind = "same" if groups[j] == groups[l] else "cross"
            c[kind][0] += 1
            c[kind][1] += codes[i, j] == gold[i] and codes[i, l] == gold[i]
            if codes[i, j] >= 0 and codes[i, l] >= 0:
                c[kind][2] += 1
                c[kind][3] += codes[i, j] == codes[i, l]
        out.append(c)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_pair_counts_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    P, V = 5, int(rng.integers(2, 9))
    codes = rng.integers(-1, 4, size=(P, V))
    gold = rng.integers(0, 4, size=P)
    groups = list(rng.choice(["a", "b", "c"], size=V))
    pc = pair_counts(codes, gold, groups)
    for i, c in enumerate(brute(codes, gold, groups)):
        assert [pc.same_pairs[i], pc.same_both_correct[i], pc.same_answered[i],
                pc.same_agree[i]] == c["same"]
        assert [pc.cross_pairs[i], pc.cross_both_correct[i], pc.cross_answered[i],
                pc.cross_agree[i]] == c["cross"]
        assert pc.correct[i] == (codes[i] == gold[i]).sum()
    sizes = [groups.count(g) for g in set(groups)]
    assert pc.committee_same_share == pytest.approx(
        float(Fraction(sum(s * (s - 1) for s in sizes), V * (V - 1))))


@pytest.mark.parametrize("seed", range(4))
def test_resampled_models_are_counted_as_copies_of_one_draw(seed):
    """resampled_counts with a model multiset against the voters of that multiset laid
    out one by one: a model drawn twice adds its own pairs twice, and pairs of its two
    copies are neither same-model nor cross-model pairs (one draw, not two models)."""
    from ensemble.voting.diversity import resampled_counts

    rng = np.random.default_rng(seed)
    M, n, P = 3, int(rng.integers(2, 5)), 4
    codes = rng.integers(-1, 4, size=(P, M * n))
    gold = rng.integers(0, 4, size=P)
    groups = [f"m{m}" for m in range(M) for _ in range(n)]
    pc = pair_counts(codes, gold, groups, by_model=True)
    draws = rng.integers(0, M, size=(2, M))
    idx = np.stack([rng.integers(0, P, size=P) for _ in range(2)])
    got = resampled_counts(pc, idx, draws)
    for b in range(2):
        cols = [(m, c, m * n + j) for c, m in enumerate(draws[b]) for j in range(n)]
        for out_p, p in enumerate(idx[b]):
            want = {"same": [0, 0, 0, 0], "cross": [0, 0, 0, 0]}
            for (m1, c1, j1), (m2, c2, j2) in itertools.permutations(cols, 2):
                if m1 == m2 and c1 != c2:
                    continue  # two copies of one model
                kind = "same" if (m1, c1) == (m2, c2) else "cross"
                a, z = codes[p, j1], codes[p, j2]
                want[kind][0] += 1
                want[kind][1] += a == gold[p] and z == gold[p]
                if a >= 0 and z >= 0:
                    want[kind][2] += 1
                    want[kind][3] += a == z
            for kind in ("same", "cross"):
                assert [getattr(got, f"{kind}_{f}")[b, out_p] for f in (
                    "pairs", "both_correct", "answered", "agree")] == want[kind]
            assert got.correct[b, out_p] == sum(codes[p, j] == gold[p] for _, _, j in cols)
            assert got.n[b, out_p] == len(cols)
    # Without model resamples: the problems alone, as indexing the counts.
    alone = resampled_counts(pc, idx)
    np.testing.assert_array_equal(alone.cross_agree, pc.cross_agree[idx])


def test_statistics_from_brute_force_fractions():
    """icc_model and both disagreements, recomputed from the pair counts by hand."""
    rng = np.random.default_rng(3)
    codes = rng.integers(-1, 3, size=(7, 6))
    gold = np.zeros(7, dtype=int)
    groups = ["m0", "m0", "m1", "m1", "m2", "m2"]
    d = diversity("repetition", pair_counts(codes, gold, groups), 3, committees="model")
    counts = brute(codes, gold, groups)
    num = den = Fraction(0)
    dis_same, dis_cross = [], []
    for i, c in enumerate(counts):
        p_same = Fraction(c["same"][1], c["same"][0])
        p_cross = Fraction(c["cross"][1], c["cross"][0])
        p = Fraction(int((codes[i] == gold[i]).sum()), 6)
        num += p_same - p_cross
        den += p - p_cross
        if c["same"][2]:
            dis_same.append(1 - Fraction(c["same"][3], c["same"][2]))
        if c["cross"][2]:
            dis_cross.append(1 - Fraction(c["cross"][3], c["cross"][2]))
    assert d.icc_model.value == pytest.approx(float(num / den), abs=1e-12)
    assert d.disagreement_same.value == pytest.approx(float(sum(dis_same) / len(dis_same)))
    assert d.disagreement_cross.value == pytest.approx(float(sum(dis_cross) / len(dis_cross)))


def test_hand_cases():
    # Every voter right on problem 0 and wrong on problem 1: difficulty explains all.
    codes = np.array([[0, 0, 0, 0], [1, 2, 1, 2]])
    d = diversity("collaboration", pair_counts(codes, np.array([0, 0]), "abcd"), 4)
    assert d.icc_problem.value == pytest.approx(1.0)
    assert d.disagreement_same is None and d.icc_model is None  # one answer per model
    # problem 0: all agree; problem 1: pairs (1,2) differ: 8 of 12 ordered pairs
    assert d.disagreement_cross.value == pytest.approx((0 + 8 / 12) / 2)
    assert d.committee_same_share == 0.0
    np.testing.assert_allclose(d.n_eff([1, 4, 16]), [1, 4, 16])
    assert d.n_eff_limit == float("inf")

    # Two models, each always right or always wrong on its own: a model's samples are
    # perfectly correlated beyond difficulty (p_i = 1/2 on both problems).
    codes = np.array([[0, 0, 5, 5], [0, 0, 5, 5]])
    d = diversity("repetition", pair_counts(codes, np.array([0, 0]), "aabb"), 2,
                  committees="model")
    assert d.icc_model.value == pytest.approx(1.0)
    assert d.n_eff_limit == pytest.approx(1.0)
    np.testing.assert_allclose(d.n_eff([1, 8]), [1, 1])

    # Two models with the same 50% chance on every problem, samples independent:
    # half of the same-model pairs are both right exactly as often as cross pairs.
    codes = np.array([[0, 1, 0, 1], [1, 0, 1, 0]])
    d = diversity("repetition", pair_counts(codes, np.array([0, 0]), "aabb"), 2,
                  committees="model")
    # same pairs both right: 0 of 4; cross: 2 of 8; p = 1/2: (0 - 1/4) / (1/2 - 1/4) = -1
    assert d.icc_model.value == pytest.approx(-1.0)
    np.testing.assert_allclose(d.n_eff([1, 8]), [1, 8])  # a negative variance counts as 0


def test_icc_model_recovers_a_known_correlation():
    """Models are p_i -/+ delta at random; the true ICC is sum(delta^2) / sum(p(1-p))."""
    rng = np.random.default_rng(7)
    P, M, S, delta = 3000, 6, 6, 0.15
    p = rng.uniform(0.25, 0.75, size=P)
    q = p[:, None] + delta * rng.choice([-1, 1], size=(P, M))
    right = rng.random((P, M, S)) < q[:, :, None]
    codes = np.where(right, 0, rng.integers(1, 4, size=right.shape)).reshape(P, M * S)
    groups = np.repeat(np.arange(M), S)
    truth = P * delta ** 2 / np.sum(p * (1 - p))
    idx = problem_resamples(P, 200, 0)
    d = diversity("repetition", pair_counts(codes, np.zeros(P, dtype=int), groups), M,
                  committees="model", idx=idx)
    se = (d.icc_model.high - d.icc_model.low) / 3.92
    assert abs(d.icc_model.value - truth) < 4 * se, (d.icc_model, truth)
    assert 0.05 < truth < 0.15 and se < 0.01  # a test that can tell truth from 0
    # with no model effect the estimate is near 0
    right0 = rng.random((P, M, S)) < p[:, None, None]
    codes0 = np.where(right0, 0, 1).reshape(P, M * S)
    d0 = diversity("repetition", pair_counts(codes0, np.zeros(P, dtype=int), groups), M,
                   committees="model", idx=idx)
    assert d0.icc_model.low < 0 < d0.icc_model.high


def test_one_control_model_uses_the_population_as_reference():
    rng = np.random.default_rng(0)
    pool = rng.integers(0, 3, size=(20, 8))
    rep = rng.integers(0, 3, size=(20, 8))
    gold = np.zeros(20, dtype=int)
    ref = ("collaboration", pair_counts(pool, gold, range(8)))
    pc = pair_counts(rep, gold, ["v0"] * 8)
    alone = diversity("repetition", pc, 1, committees="model")
    assert alone.icc_model is None and alone.disagreement_cross is None
    d = diversity("repetition", pc, 1, committees="model", reference=ref)
    assert d.reference == "collaboration"
    p_same = pc.same_both_correct / pc.same_pairs
    p_cross = ref[1].cross_both_correct / ref[1].cross_pairs
    p = ref[1].correct / ref[1].n
    assert d.icc_model.value == pytest.approx((p_same - p_cross).sum() / (p - p_cross).sum())


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="do not match"):
        pair_counts(np.zeros((2, 3), dtype=int), np.zeros(2, dtype=int), "ab")
    pc = pair_counts(np.zeros((2, 2), dtype=int), np.zeros(2, dtype=int), "ab")
    with pytest.raises(ValueError, match="committees='all'"):
        diversity("x", pc, 2, committees="all")


def answers_table(rng, n_problems=12, variants=6, controls=2, samples=6):
    rows = []
    for i in range(n_problems):
        for v in range(variants):
            a = "1" if rng.random() < 0.4 else str(rng.integers(2, 5))
            rows.append(("collaboration", f"v{v}", 0, f"p{i}", a, "1"))
        for m in range(controls):
            for s in range(samples):
                a = "1" if rng.random() < 0.4 else str(rng.integers(2, 5))
                rows.append(("repetition", f"v{m}", s, f"p{i}", a, "1"))
    df = pd.DataFrame(rows, columns=["condition", "model_id", "sample", "problem_id", "answer",
                                     "gold"])
    df["correct"] = df["answer"] == df["gold"]
    return df


def test_vote_writes_the_diagnostics(tmp_path):
    df = answers_table(np.random.default_rng(1))
    src = tmp_path / "answers.csv"
    df.to_csv(src, index=False)
    out = tmp_path / "votes"
    run_vote(VoteConfig(input=src, out=out, bootstrap=50), progress=False)
    meta = json.loads((out / "vote.json").read_text())["diversity"]
    assert set(meta) == {"collaboration", "repetition"}
    assert meta["collaboration"]["disagreement_same_model"] is None
    assert meta["repetition"]["committee_same_model_share"] == 1.0
    assert meta["repetition"]["icc_model_reference"] is None
    # the numbers are those of the library on the same pools
    rep = df[df.condition == "repetition"].copy()
    codes = rep.pivot_table(index="problem_id", columns=["model_id", "sample"],
                            values="answer", aggfunc="first")
    codes = codes.reindex(sorted(codes.index, key=lambda s: int(s[1:])))
    num = codes.apply(lambda col: col.astype(int)).to_numpy()
    d = diversity("repetition", pair_counts(num, np.ones(len(num), dtype=int),
                                            [m for m, _ in codes.columns]), 2, committees="model")
    assert meta["repetition"]["icc_model"]["value"] == pytest.approx(d.icc_model.value)
    assert meta["repetition"]["disagreement_same_model"]["value"] == pytest.approx(
        d.disagreement_same.value)
    div = pd.read_csv(out / "diversity.csv")
    assert list(div.columns) == ["condition", "k", "n_eff", "accuracy", "pass_at_k", "headroom",
                                 "headroom_ci_low", "headroom_ci_high"]
    col = div[div.condition == "collaboration"]
    np.testing.assert_allclose(col["n_eff"], col["k"])
    assert (div[div.k == 1]["headroom"].abs() < 1e-12).all()
    curve = pd.read_csv(out / "curve.csv")
    merged = div.merge(curve, on=["condition", "k"], suffixes=("", "_curve"))
    np.testing.assert_allclose(merged["headroom"], merged["pass_at_k"] - merged["accuracy"],
                               atol=1e-12)
    assert (div["headroom_ci_low"] <= div["headroom"] + 1e-12).all()


def test_report_explains_the_comparison(tmp_path):
    from fits.config import FitConfig
    from fits.fitting import run_fit
    from fits.report import write_report

    df = answers_table(np.random.default_rng(2))
    src = tmp_path / "answers.csv"
    df.to_csv(src, index=False)
    run_vote(VoteConfig(input=src, out=tmp_path / "votes", bootstrap=50), progress=False)
    run_fit(FitConfig(votes=tmp_path / "votes"))
    rep = write_report(tmp_path / "votes")
    text = rep.path.read_text()
    assert "## Why: how differently the voters answer" in text
    assert "| two samples of one model give different answers | — (one answer per model) |" \
        in text
    assert "effective independent voters at k = 6" in text
    assert "Two variants give different answers to a problem" in text
    assert (tmp_path / "figures" / "diversity.png").stat().st_size > 10_000


def test_undefined_statistics_render_without_failing(tmp_path):
    """All voters right on every problem: correlations are 0/0, reported as n/a."""
    from fits.report import diversity_section

    rows = [("collaboration", f"v{v}", 0, f"p{i}", "1", "1") for i in range(4) for v in range(4)]
    rows += [("repetition", f"v{m}", s, f"p{i}", "1", "1") for i in range(4) for m in range(2)
             for s in range(3)]
    df = pd.DataFrame(rows, columns=["condition", "model_id", "sample", "problem_id", "answer",
                                     "gold"])
    src = tmp_path / "a.csv"
    df.to_csv(src, index=False)
    run_vote(VoteConfig(input=src, out=tmp_path / "votes", bootstrap=20), progress=False)
    meta = json.loads((tmp_path / "votes" / "vote.json").read_text())
    assert meta["diversity"]["collaboration"]["icc_problem"]["value"] is None  # NaN -> null
    assert meta["diversity"]["repetition"]["disagreement_same_model"]["value"] == 0.0
    div = pd.read_csv(tmp_path / "votes" / "diversity.csv")
    text = "\n".join(diversity_section(meta, div, 3))
    assert "| correctness correlation set by the problem (difficulty) | n/a | n/a |" in text


def test_format_estimate_handles_every_shape():
    from fits.report import format_estimate

    assert format_estimate({"value": 0.25, "ci_low": 0.2, "ci_high": 0.3}) == "0.250 [0.200, 0.300]"
    assert format_estimate({"value": 0.25, "ci_low": None, "ci_high": None}) == "0.250"
    assert format_estimate({"value": None, "ci_low": None, "ci_high": None}) == "n/a"
    assert format_estimate(None, "— (one answer per model)") == "— (one answer per model)"


def test_repetition_intervals_include_the_choice_of_control_models_in_simulation():
    """Four control models of visibly different skill: the population's rho and
    same-model disagreement are covered once the models are resampled with the problems;
    with the problems alone they were not.  The simulation is the benchmark's
    (benchmarks/bench_curve_coverage.py, diversity_coverage)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_curve_coverage", ROOT / "benchmarks" / "bench_curve_coverage.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    _, out = bench.diversity_coverage(0.8, 4, 40, 8, reps=150, boot=400, seed=7)
    coverage = {key: float(np.mean(c)) for key, (c, _) in out.items()}
    # nominal 0.95 (rho's is conservative: the two-stage bootstrap counts the model x
    # problem interaction twice); Monte Carlo error ~0.018
    assert min(coverage[(s, "models resampled")] for s in ("icc_model", "disagreement_same")
               ) >= 0.9, coverage
    assert max(coverage[(s, "problems only")] for s in ("icc_model", "disagreement_same")
               ) < 0.85, coverage
