"""Tests of ensemble.voting.estimators: exact committee accuracy, pass@k and Monte-Carlo.

The reference implementations below (subset enumeration, composition enumeration,
pass@k with math.comb) are written independently of the library and work in exact
rational / integer arithmetic, so they are trustworthy oracles for small pools.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ensemble.voting.estimators import (
    Histogram,
    MonteCarloResult,
    exact_accuracy,
    exact_matrix,
    histogram,
    monte_carlo,
    pass_at_k,
    pass_at_k_matrix,
)

# --------------------------------------------------------------------------------------
# Independent oracles (no project code used)
# --------------------------------------------------------------------------------------

GOLD = "gold"


def _voters(g: int, others, a: int) -> list:
    """Labelled voter list: 'gold', ('wrong', i), or None for an abstainer."""
    out = [GOLD] * g
    for i, c in enumerate(others):
        out += [("wrong", i)] * c
    out += [None] * a
    return out


def _committee_score(committee) -> Fraction:
    """Plurality outcome for gold of one committee: 1, 1/t on a t-way tie, else 0."""
    counts = Counter(v for v in committee if v is not None)
    if not counts:
        return Fraction(0)
    top = max(counts.values())
    winners = [lab for lab, c in counts.items() if c == top]
    return Fraction(1, len(winners)) if GOLD in winners else Fraction(0)


def brute_force_accuracy(g: int, others, a: int) -> list[Fraction]:
    """acc[k] for k = 0..N by enumerating every k-subset of the labelled voters."""
    voters = _voters(g, others, a)
    n = len(voters)
    acc = [Fraction(0)]
    for k in range(1, n + 1):
        total = Fraction(0)
        for committee in itertools.combinations(voters, k):
            total += _committee_score(committee)
        acc.append(total / math.comb(n, k))
    return acc


def composition_accuracy(g: int, others, a: int, k: int) -> Fraction:
    """acc[k] by summing the multivariate hypergeometric pmf over vote compositions.

    Enumerates (x_gold, x_1, ..., x_m, x_abstain) with sum k, weight
    prod C(size_i, x_i) / C(N, k), exact integers: usable for huge N with small k.
    """
    sizes = [g, *others, a]
    n = sum(sizes)
    by_ties: Counter = Counter()  # t -> sum of weights where gold wins a t-way tie

    def rec(i: int, left: int, chosen: list[int], weight: int) -> None:
        if i == len(sizes) - 1:
            if left > sizes[i]:
                return
            w = weight * math.comb(sizes[i], left)
            votes = chosen  # gold first, then wrong classes (abstainers excluded)
            if votes[0] == 0:
                return
            top = max(votes)
            if votes[0] == top:
                by_ties[sum(1 for x in votes if x == top)] += w
            return
        for x in range(0, min(left, sizes[i]) + 1):
            rec(i + 1, left - x, chosen + [x], weight * math.comb(sizes[i], x))

    rec(0, k, [], 1)
    num = sum(Fraction(w, t) for t, w in by_ties.items())
    return num / math.comb(n, k)


def full_pool_outcome(g: int, others, a: int) -> Fraction:
    """Deterministic plurality outcome when the committee is the whole pool."""
    counts = [g, *others]
    if g == 0:
        return Fraction(0)
    top = max(counts)
    if g < top:
        return Fraction(0)
    return Fraction(1, sum(1 for c in counts if c == top))


def pass_at_k_exact(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


def _random_small_histogram(rng: np.random.Generator, n_max: int = 12):
    """A random (g, others, a) with N in 0..n_max, others sorted ascending, no zeros."""
    n = int(rng.integers(0, n_max + 1))
    m = int(rng.integers(0, 5))  # wrong classes available
    # Random class probabilities: gold, m wrong, abstain; sometimes skew to force edges.
    p = rng.dirichlet(np.ones(m + 2) * rng.choice([0.3, 1.0, 3.0]))
    labels = rng.choice(m + 2, size=n, p=p)
    g = int(np.count_nonzero(labels == 0))
    a = int(np.count_nonzero(labels == m + 1))
    others = tuple(sorted(int(np.count_nonzero(labels == i)) for i in range(1, m + 1)))
    others = tuple(c for c in others if c > 0)
    return g, others, a


EDGE_CASES = [
    (0, (), 0),  # empty pool
    (0, (), 5),  # everyone abstains
    (0, (3,), 2),  # nobody right
    (0, (2, 2), 0),
    (4, (), 0),  # no wrong answers at all
    (3, (), 4),  # only gold + abstainers
    (1, (), 11),
    (2, (2,), 0),  # exact tie, full pool
    (2, (2, 2), 1),  # three-way tie
    (3, (3, 3), 3),  # three-way tie with abstainers, N = 12
    (2, (1,), 0),  # docstring example
    (1, (1, 1, 1, 1), 3),
    (2, (1, 1, 1, 1, 3), 0),
    (5, (6,), 1),
    (6, (5,), 1),
    (1, (10,), 1),
    (11, (1,), 0),
    (12, (), 0),
    (0, (), 12),
]


# --------------------------------------------------------------------------------------
# 1. Exact vs brute force
# --------------------------------------------------------------------------------------


def _assert_matches_brute(g, others, a, tol=1e-12):
    h = Histogram(g, tuple(others), a)
    got = exact_accuracy(h)
    want = brute_force_accuracy(g, others, a)
    assert got.shape == (h.n + 1,)
    err = np.abs(got - np.array([float(x) for x in want]))
    assert err.max(initial=0.0) < tol, (h, got, [float(x) for x in want])


@pytest.mark.parametrize("g,others,a", EDGE_CASES)
def test_exact_matches_brute_force_edge_cases(g, others, a):
    _assert_matches_brute(g, others, a)


@pytest.mark.slow
def test_exact_matches_brute_force_random():
    rng = np.random.default_rng(20240611)
    seen = set()
    n_checked = 0
    while n_checked < 300:
        g, others, a = _random_small_histogram(rng)
        if (g, others, a) in seen:
            continue
        seen.add((g, others, a))
        _assert_matches_brute(g, others, a)
        n_checked += 1
    # the sample must actually cover the interesting regimes
    assert any(g == 0 for g, _, _ in seen)
    assert any(o == () for _, o, _ in seen)
    assert any(g + sum(o) == 0 and a > 0 for g, o, a in seen)
    assert any(a > 0 and g > 0 and o for g, o, a in seen)
    assert any(g > 0 and o and max(o) == g for g, o, a in seen)  # gold ties a rival
    assert any(len(o) >= 3 for _, o, _ in seen)


def test_docstring_example_exact_fraction():
    acc = exact_accuracy(Histogram(2, (1,), 0))
    assert acc[0] == 0.0
    assert abs(acc[1] - 2 / 3) < 1e-15
    assert abs(acc[2] - 2 / 3) < 1e-15
    assert abs(acc[3] - 1.0) < 1e-15


# --------------------------------------------------------------------------------------
# 2. k = 1 and k = N
# --------------------------------------------------------------------------------------


def test_k1_is_mean_voter_accuracy_and_kN_is_full_pool_plurality():
    rng = np.random.default_rng(7)
    cases = list(EDGE_CASES) + [_random_small_histogram(rng, n_max=40) for _ in range(200)]
    for g, others, a in cases:
        h = Histogram(g, others, a)
        if h.n == 0:
            continue
        acc = exact_accuracy(h)
        assert acc[0] == 0.0
        assert abs(acc[1] - g / h.n) < 1e-12, h
        assert abs(acc[h.n] - float(full_pool_outcome(g, others, a))) < 1e-12, h


@pytest.mark.parametrize(
    "h,expected",
    [
        (Histogram(5, (4, 4), 10), 1.0),
        (Histogram(4, (4, 4), 10), 1 / 3),
        (Histogram(4, (4,), 0), 1 / 2),
        (Histogram(3, (1, 4), 2), 0.0),
        (Histogram(0, (1,), 2), 0.0),
        (Histogram(0, (), 3), 0.0),
    ],
)
def test_full_pool_known_values(h, expected):
    assert abs(exact_accuracy(h)[h.n] - expected) < 1e-12


# --------------------------------------------------------------------------------------
# 3. Property tests
# --------------------------------------------------------------------------------------

small_int = st.integers(min_value=0, max_value=15)
others_st = st.lists(st.integers(min_value=1, max_value=15), min_size=0, max_size=4)
PROP = settings(max_examples=100, deadline=None)


@PROP
@given(g=small_int, others=others_st, a=st.integers(0, 10))
def test_prop_values_in_unit_interval_and_below_pass_at_k(g, others, a):
    h = Histogram(g, tuple(sorted(others)), a)
    acc = exact_accuracy(h)
    assert acc.shape == (h.n + 1,)
    assert np.all(np.isfinite(acc))
    assert np.all(acc >= 0.0) and np.all(acc <= 1.0)
    assert acc[0] == 0.0
    if h.n:
        # gold can only win if at least one gold voter sits on the committee
        ks = np.arange(h.n + 1)
        assert np.all(acc <= pass_at_k(h.n, g, ks) + 1e-12)


@PROP
@given(g=small_int, others=others_st, a=st.integers(0, 10), data=st.data())
def test_prop_permutation_of_others_does_not_matter(g, others, a, data):
    """The class order in ``others`` carries no meaning: any order, same result."""
    perm = data.draw(st.permutations(others))
    base = exact_accuracy(Histogram(g, tuple(sorted(others)), a))
    permuted = exact_accuracy(Histogram(g, tuple(perm), a))
    np.testing.assert_allclose(permuted, base, rtol=0, atol=1e-12)


def test_unsorted_others_gives_same_result_as_sorted():
    """Minimal deterministic case of the permutation invariant.

    Pool: 3 gold, wrong classes of 4 and 1, one abstainer.  With the full pool (k = 9)
    gold has 3 votes vs 4: it always loses, whatever order ``others`` is given in.
    """
    h_sorted = Histogram(3, (1, 4), 1)
    h_unsorted = Histogram(3, (4, 1), 1)
    assert exact_accuracy(h_sorted)[9] == 0.0
    assert exact_accuracy(h_unsorted)[9] == 0.0
    np.testing.assert_allclose(
        exact_accuracy(h_unsorted), exact_accuracy(h_sorted), rtol=0, atol=1e-12
    )


@PROP
@given(g=st.integers(1, 30), a=st.integers(0, 30))
def test_prop_no_rivals_equals_pass_at_k(g, a):
    """With no wrong answers, gold wins iff at least one gold voter is drawn."""
    h = Histogram(g, (), a)
    ks = np.arange(h.n + 1)
    np.testing.assert_allclose(exact_accuracy(h), pass_at_k(h.n, g, ks), rtol=0, atol=1e-12)
    for k in range(1, h.n + 1):
        assert abs(exact_accuracy(h)[k] - float(pass_at_k_exact(h.n, g, k))) < 1e-12


@PROP
@given(g=st.integers(1, 40))
def test_prop_unanimous_pool_always_wins(g):
    acc = exact_accuracy(Histogram(g, (), 0))
    assert acc[0] == 0.0
    np.testing.assert_array_equal(acc[1:], np.ones(g))


@PROP
@given(others=others_st, a=st.integers(0, 10))
def test_prop_no_gold_gives_zero(others, a):
    h = Histogram(0, tuple(sorted(others)), a)
    acc = exact_accuracy(h)
    np.testing.assert_array_equal(acc, np.zeros(h.n + 1))


@PROP
@given(g=small_int, others=others_st, a=st.integers(0, 10))
def test_prop_class_win_probabilities_sum_to_p_any_vote(g, others, a):
    """Sum over answer classes of P(class wins) = P(committee has a non-null vote).

    In every committee with at least one vote, the winning probabilities (1 for a sole
    winner, 1/t for each of t tied winners) sum to 1; otherwise all are 0.  Averaging
    over committees gives pass@k with the non-abstainers as the "correct" set.
    """
    classes = [c for c in [g, *others] if c > 0]
    n = sum(classes) + a
    if n == 0:
        return
    total = np.zeros(n + 1)
    for i, c in enumerate(classes):
        rest = tuple(sorted(classes[:i] + classes[i + 1:]))
        total += exact_accuracy(Histogram(c, rest, a))
    ks = np.arange(n + 1)
    np.testing.assert_allclose(total, pass_at_k(n, n - a, ks), rtol=0, atol=1e-11)


@PROP
@given(g=st.integers(1, 15), a=st.integers(0, 10))
def test_prop_two_equal_classes_split_evenly(g, a):
    """Gold vs one rival of equal size: by symmetry each wins half of pass@k(N, 2g)."""
    h = Histogram(g, (g,), a)
    ks = np.arange(h.n + 1)
    np.testing.assert_allclose(
        exact_accuracy(h), 0.5 * pass_at_k(h.n, 2 * g, ks), rtol=0, atol=1e-12
    )


@PROP
@given(g=small_int, others=others_st, a=st.integers(0, 10), data=st.data())
def test_prop_monotone_under_voter_conversions(g, others, a, data):
    """Coupling argument on the same committee, voter by voter.

    * abstainer -> gold, or wrong -> gold: gold's count rises (and a rival's may fall),
      so gold's share of each committee's outcome never drops;
    * abstainer -> wrong: a rival's count rises, gold's share never rises.
    """
    others = sorted(others)
    base = exact_accuracy(Histogram(g, tuple(others), a))
    n = g + sum(others) + a
    if a > 0:
        up = exact_accuracy(Histogram(g + 1, tuple(others), a - 1))
        assert np.all(up >= base - 1e-12)
        if others:
            i = data.draw(st.integers(0, len(others) - 1))
            new = list(others)
            new[i] += 1
            down = exact_accuracy(Histogram(g, tuple(sorted(new)), a - 1))
            assert np.all(down <= base + 1e-12)
    if others:
        i = data.draw(st.integers(0, len(others) - 1))
        new = list(others)
        new[i] -= 1
        new = tuple(sorted(c for c in new if c > 0))
        up = exact_accuracy(Histogram(g + 1, new, a))
        assert len(up) == n + 1
        assert np.all(up >= base - 1e-12)


@PROP
@given(g=small_int, others=others_st, a=st.integers(0, 10), k_max=st.integers(0, 60))
def test_prop_k_max_prefix_and_exact_matrix_agree(g, others, a, k_max):
    """A smaller k_max returns the prefix of the full row; exact_matrix picks columns."""
    h = Histogram(g, tuple(sorted(others)), a)
    k_max = min(k_max, h.n)
    full = exact_accuracy(h)
    part = exact_accuracy(h, k_max=k_max)
    assert part.shape == (k_max + 1,)
    np.testing.assert_allclose(part, full[: k_max + 1], rtol=0, atol=1e-12)
    if h.n >= 1:
        ks = np.unique(np.array([1, max(1, k_max), h.n]))
        m = exact_matrix([h, h], ks)
        assert m.shape == (2, len(ks))
        np.testing.assert_allclose(m[0], full[ks], rtol=0, atol=1e-12)
        np.testing.assert_allclose(m[1], full[ks], rtol=0, atol=1e-12)


def test_exact_accuracy_returns_a_copy():
    h = Histogram(3, (2,), 1)
    acc = exact_accuracy(h)
    acc[:] = -1.0
    again = exact_accuracy(h)
    assert np.all(again >= 0.0)
    assert again[1] == pytest.approx(0.5, abs=1e-15)


def test_exact_matrix_mixed_pools_and_empty():
    hs = [Histogram(3, (1, 2), 0), Histogram(1, (1,), 4), Histogram(2, (1,), 0)]  # N = 6, 6, 3
    ks = np.array([1, 2, 3])
    m = exact_matrix(hs, ks)
    assert m.shape == (3, 3)
    for row, h in zip(m, hs):
        full = [float(x) for x in brute_force_accuracy(h.g, h.others, h.a)]
        for j, k in enumerate(ks):
            assert abs(row[j] - full[k]) < 1e-12
    assert exact_matrix([], ks).shape == (0, 3)


def test_exact_matrix_and_pass_at_k_refuse_k_above_a_pool():
    """Padding k > N with zeros once dragged a repetition curve down silently."""
    with pytest.raises(ValueError, match=r"k=3 exceeds a pool of 2 voters"):
        exact_matrix([Histogram(3, (1, 2), 0), Histogram(2, (), 0)], np.array([1, 3]))
    with pytest.raises(ValueError, match=r"k=6 exceeds the 5 voters"):
        pass_at_k(5, 2, np.array([1, 6]))


# --------------------------------------------------------------------------------------
# 4. pass@k
# --------------------------------------------------------------------------------------


def test_pass_at_k_matches_exact_fractions():
    for n in range(0, 26):
        ks = np.arange(n + 1)
        for c in range(0, n + 1):
            got = pass_at_k(n, c, ks)
            assert got.shape == (n + 1,)
            want = np.array([float(pass_at_k_exact(n, c, k)) for k in ks])
            assert np.max(np.abs(got - want)) < 1e-12, (n, c)


def test_pass_at_k_docstring_and_unordered_ks():
    np.testing.assert_allclose(pass_at_k(10, 1, np.array([1, 5, 10])), [0.1, 0.5, 1.0])
    got = pass_at_k(10, 3, np.array([7, 1, 4]))
    want = [float(pass_at_k_exact(10, 3, k)) for k in (7, 1, 4)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-14)


@pytest.mark.parametrize("c", [0, 1, 7, 500, 50_000, 99_999, 100_000])
def test_pass_at_k_large_n_stable_and_monotone(c):
    n = 100_000
    ks = np.arange(n + 1)
    p = pass_at_k(n, c, ks)
    assert np.all(np.isfinite(p))
    assert np.all((p >= 0.0) & (p <= 1.0))
    assert np.all(np.diff(p) >= -1e-15)
    assert p[0] == 0.0
    assert abs(p[1] - c / n) < 1e-12
    if c == 0:
        assert np.all(p == 0.0)
    else:
        assert p[n] == 1.0
        # first few terms against exact rationals (ratio of huge integers)
        for k in (2, 3, 10, 100):
            assert abs(p[k] - float(pass_at_k_exact(n, c, k))) < 1e-12


def test_pass_at_k_matrix():
    counts = np.array([0, 3, 10])
    ks = np.array([1, 2, 10])
    m = pass_at_k_matrix(10, counts, ks)
    assert m.shape == (3, 3)
    for i, c in enumerate(counts):
        np.testing.assert_allclose(m[i], pass_at_k(10, int(c), ks), rtol=0, atol=0)
    assert pass_at_k_matrix(10, np.array([], dtype=int), ks).shape == (0, 3)


# --------------------------------------------------------------------------------------
# 5. Monte-Carlo vs exact
# --------------------------------------------------------------------------------------


def _simulated_codes(problems=20, voters=40, seed=11):
    """Per-problem answer codes: skill-dependent gold, a few wrong codes, abstentions."""
    rng = np.random.default_rng(seed)
    skill = rng.uniform(0.2, 0.8, size=voters)
    difficulty = rng.uniform(-1.0, 1.0, size=problems)
    gold = rng.integers(0, 5, size=problems)
    codes = np.empty((problems, voters), dtype=np.int64)
    for i in range(problems):
        p_right = np.clip(skill + 0.3 * difficulty[i], 0.02, 0.98)
        right = rng.random(voters) < p_right
        wrong_code = rng.choice([c for c in range(10, 14)], size=voters, p=[0.4, 0.3, 0.2, 0.1])
        abstain = rng.random(voters) < 0.1
        row = np.where(right, gold[i], wrong_code)
        row[abstain] = -1
        codes[i] = row
    return codes, gold


def test_monte_carlo_matches_exact_within_4_se():
    codes, gold = _simulated_codes()
    p, n = codes.shape
    ks = np.array([1, 2, 3, 5, 8, 15, 25])
    B = 2000
    mc = monte_carlo(codes, gold, ks, committees=B, seed=123)
    assert isinstance(mc, MonteCarloResult)
    assert mc.per_problem.shape == (p, len(ks))
    assert mc.committee_acc.shape == (B, len(ks))
    np.testing.assert_allclose(mc.committee_acc.mean(axis=0), mc.per_problem.mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(mc.sd, mc.committee_acc.std(axis=0, ddof=1), atol=0)

    hists = [histogram(codes[i], int(gold[i])) for i in range(p)]
    exact = exact_matrix(hists, ks)  # (P, K)
    se = mc.committee_acc.std(axis=0, ddof=1) / np.sqrt(B)
    assert np.all(se > 0)
    diff = np.abs(mc.per_problem.mean(axis=0) - exact.mean(axis=0))
    assert np.all(diff < 4 * se), (diff, se)
    # per problem: each committee outcome is in [0, 1], so its sd is at most 1/2
    assert np.all(np.abs(mc.per_problem - exact) < 5 * 0.5 / np.sqrt(B))


def test_monte_carlo_full_pool_is_deterministic_and_exact():
    codes, gold = _simulated_codes(problems=10, voters=12, seed=5)
    n = codes.shape[1]
    mc = monte_carlo(codes, gold, np.array([n]), committees=5, seed=0)
    hists = [histogram(codes[i], int(gold[i])) for i in range(len(gold))]
    want = np.array([float(full_pool_outcome(h.g, h.others, h.a)) for h in hists])
    np.testing.assert_allclose(mc.per_problem[:, 0], want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(mc.committee_acc[:, 0], want.mean(), rtol=0, atol=1e-12)
    assert np.all(mc.sd == 0.0)


def test_monte_carlo_tie_scored_by_expectation():
    # one problem, two voters: gold (0) and a wrong answer (1) -> every k=2 committee ties
    codes = np.array([[0, 1, -1]])
    mc = monte_carlo(codes, np.array([0]), np.array([3]), committees=3, seed=1)
    np.testing.assert_array_equal(mc.committee_acc[:, 0], [0.5, 0.5, 0.5])
    # all abstain -> always wrong
    mc = monte_carlo(np.array([[-1, -1]]), np.array([0]), np.array([1, 2]), committees=4, seed=1)
    np.testing.assert_array_equal(mc.per_problem, [[0.0, 0.0]])


def test_monte_carlo_reproducible_and_seed_dependent():
    codes, gold = _simulated_codes(problems=8, voters=20, seed=2)
    ks = np.array([2, 5, 9])
    r1 = monte_carlo(codes, gold, ks, committees=200, seed=42)
    r2 = monte_carlo(codes, gold, ks, committees=200, seed=42)
    r3 = monte_carlo(codes, gold, ks, committees=200, seed=43)
    np.testing.assert_array_equal(r1.per_problem, r2.per_problem)
    np.testing.assert_array_equal(r1.committee_acc, r2.committee_acc)
    assert not np.array_equal(r1.committee_acc, r3.committee_acc)


def test_monte_carlo_rejects_bad_arguments():
    codes, gold = _simulated_codes(problems=3, voters=6, seed=1)
    with pytest.raises(ValueError):
        monte_carlo(codes, gold, np.array([7]), committees=10, seed=0)
    with pytest.raises(ValueError):
        monte_carlo(codes, gold, np.array([0]), committees=10, seed=0)
    with pytest.raises(ValueError):
        monte_carlo(codes, gold, np.array([2]), committees=0, seed=0)


# --------------------------------------------------------------------------------------
# 6. Large pools: no overflow, agreement with independent exact sums and Monte-Carlo
# --------------------------------------------------------------------------------------


def test_large_pool_mostly_abstainers_is_finite_and_exact():
    g, others, a = 60, (10, 30), 99_900
    h = Histogram(g, others, a)
    assert h.n == 100_000
    acc = exact_accuracy(h, k_max=2000)
    assert acc.shape == (2001,)
    assert np.all(np.isfinite(acc))
    assert np.all((acc >= 0.0) & (acc <= 1.0))
    assert abs(acc[1] - g / h.n) < 1e-12
    # independent exact rational sums over vote compositions for a few small k
    for k in (2, 3, 7, 20):
        want = float(composition_accuracy(g, others, a, k))
        assert abs(acc[k] - want) < 1e-12 * max(1.0, k), (k, acc[k], want)
    # with ~2000 voters gold (60 of 100) beats 30 and 10 by far more often than not
    assert acc[2000] > acc[1]


@pytest.mark.slow
def test_large_pool_mostly_abstainers_all_k():
    g, others, a = 60, (10, 30), 99_900
    h = Histogram(g, others, a)
    acc = exact_accuracy(h)
    assert acc.shape == (h.n + 1,)
    assert np.all(np.isfinite(acc))
    assert np.all((acc >= 0.0) & (acc <= 1.0))
    assert abs(acc[1] - g / h.n) < 1e-12
    assert abs(acc[h.n] - 1.0) < 1e-12  # full pool: 60 vs 30 vs 10


def test_large_pool_no_abstainers_small_k_exact():
    g, others, a = 40_000, (25_000, 35_000), 0
    h = Histogram(g, others, a)
    acc = exact_accuracy(h, k_max=60)
    assert acc.shape == (61,)
    assert np.all(np.isfinite(acc))
    assert np.all((acc >= 0.0) & (acc <= 1.0))
    # Documented precision: relative error about log(N!) * 1e-16 (~1e-10 at N = 1e5),
    # from log-factorials of size ~1e6 cancelling; observed errors are ~3e-11 here.
    tol = 2 * math.lgamma(h.n + 1) * 1e-16
    assert abs(acc[1] - 0.4) < tol
    for k in (2, 3, 15, 30, 60):
        want = float(composition_accuracy(g, others, a, k))
        assert abs(acc[k] - want) < tol, (k, acc[k], want)
    # gold is the plurality class, so large committees favour it
    assert acc[60] > acc[15] > acc[1]


@pytest.mark.slow
def test_large_pool_no_abstainers_matches_monte_carlo():
    g, others, a = 40_000, (25_000, 35_000), 0
    acc = exact_accuracy(Histogram(g, others, a), k_max=60)
    rng = np.random.default_rng(99)
    base = np.concatenate([np.zeros(g), np.full(others[0], 7), np.full(others[1], 3)]).astype(
        np.int64
    )
    problems, B, k = 20, 250, 15
    codes = np.stack([rng.permutation(base) for _ in range(problems)])
    gold = np.zeros(problems, dtype=np.int64)
    mc = monte_carlo(codes, gold, np.array([k]), committees=B, seed=5)
    se = mc.committee_acc[:, 0].std(ddof=1) / np.sqrt(B)
    assert se > 0
    assert abs(mc.per_problem.mean(axis=0)[0] - acc[k]) < 5 * se, (mc.per_problem.mean(axis=0)[0], acc[k], se)


# --------------------------------------------------------------------------------------
# 7. histogram()
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "codes,gold,expected",
    [
        ([3, 3, 1, -1, 2, 1, 1], 3, Histogram(2, (1, 3), 1)),  # docstring
        ([], 0, Histogram(0, (), 0)),
        ([-1, -1, -1], 0, Histogram(0, (), 3)),
        ([5, 5, 5], 5, Histogram(3, (), 0)),
        ([5, 5, 5], 9, Histogram(0, (3,), 0)),  # gold code nobody uses
        ([0, 1, 2, 3, 0], 0, Histogram(2, (1, 1, 1), 0)),
        ([4, 4, 4, 1, 2, 2, -1, -1, 0], 0, Histogram(1, (1, 2, 3), 2)),
        ([7, 7, 9, 9, 9, 9, 8], 8, Histogram(1, (2, 4), 0)),
        ([-5, -1, 2], 2, Histogram(1, (), 2)),  # any negative code is "no answer"
    ],
)
def test_histogram_counts(codes, gold, expected):
    h = histogram(np.array(codes, dtype=np.int64), gold=gold)
    assert h == expected
    assert h.n == len(codes)
    assert list(h.others) == sorted(h.others)
    assert hash(h) == hash(expected)


def test_histogram_equal_pools_equal_keys():
    a = histogram(np.array([1, 1, 2, 3, 3, 3]), gold=2)
    b = histogram(np.array([9, 8, 8, 2, 8, 9]), gold=2)
    assert a == b == Histogram(1, (2, 3), 0)


# --------------------------------------------------------------------------------------
# 8. Errors
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("h", [Histogram(3, (2,), 1), Histogram(0, (), 0), Histogram(40, (), 2)])
def test_exact_accuracy_rejects_k_max_above_n(h):
    with pytest.raises(ValueError) as exc:
        exact_accuracy(h, k_max=h.n + 1)
    assert str(h.n) in str(exc.value)
    assert str(h.n + 1) in str(exc.value)


def test_exact_accuracy_rejects_negative_k_max():
    with pytest.raises(ValueError):
        exact_accuracy(Histogram(3, (2,), 1), k_max=-1)


def test_exact_accuracy_accepts_k_max_equal_n_and_zero():
    h = Histogram(3, (2,), 1)
    assert exact_accuracy(h, k_max=h.n).shape == (h.n + 1,)
    np.testing.assert_array_equal(exact_accuracy(h, k_max=0), [0.0])
