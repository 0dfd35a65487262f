"""Tests of ensemble.voting.scale: windowed exact accuracy, histogram Monte-Carlo, dispatcher.

The oracles here are independent of the library: exact rational enumeration over all
committees (small pools) or over vote compositions with integer binomial weights
(larger pools, few classes).  ``voting.exact_accuracy`` is the second reference for
pools of hundreds to thousands of voters; its own float error grows like
``log(N!) * 1e-16`` (about 3e-12 at N = 2000, see ``test_exact_reference_error``),
which the tolerances there allow for.
"""

from __future__ import annotations

import doctest
import itertools
import math
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest

from ensemble.voting import scale as voting_scale
from ensemble.voting.estimators import Histogram, exact_accuracy, exact_matrix, pass_at_k
from ensemble.voting.scale import accuracy_matrix, histogram_monte_carlo, windowed_accuracy

# --------------------------------------------------------------------------------------
# Independent oracles
# --------------------------------------------------------------------------------------


def _score(votes) -> Fraction:
    """Gold (index 0) outcome of one committee's class counts: 1, 1/t on a tie, else 0."""
    if votes[0] == 0:
        return Fraction(0)
    top = max(votes)
    return Fraction(1, sum(1 for v in votes if v == top)) if votes[0] == top else Fraction(0)


def subset_accuracy(g: int, others, a: int, k: int) -> Fraction:
    """P(gold wins) by enumerating every k-subset of labelled voters."""
    labels = [0] * g + [i + 1 for i, c in enumerate(others) for _ in range(c)] + [None] * a
    total, count = Fraction(0), 0
    for committee in itertools.combinations(range(len(labels)), k):
        cnt = Counter(labels[v] for v in committee if labels[v] is not None)
        total += _score([cnt.get(i, 0) for i in range(len(others) + 1)])
        count += 1
    return total / count


def composition_accuracy(g: int, others, a: int, k: int) -> Fraction:
    """P(gold wins) summing prod C(size_i, x_i) / C(N, k) over all vote compositions."""
    sizes = [g, *others, a]
    n = sum(sizes)
    acc = Fraction(0)

    def rec(i, left, chosen, weight):
        nonlocal acc
        if i == len(sizes) - 1:
            if left <= sizes[i]:
                acc += weight * math.comb(sizes[i], left) * _score(chosen)
            return
        for x in range(0, min(left, sizes[i]) + 1):
            rec(i + 1, left - x, chosen + [x], weight * math.comb(sizes[i], x))

    rec(0, k, [], 1)
    return acc / math.comb(n, k)


def one_rival_accuracy(g: int, c: int, a: int, k: int) -> Fraction:
    """Exact P(gold wins) for gold, one wrong class and abstainers (integer sums)."""
    cg = [math.comb(g, j) for j in range(g + 1)]
    cc = [math.comb(c, w) for w in range(c + 1)]
    ca = [math.comb(a, r) for r in range(a + 1)]
    win = tie = 0
    for j in range(1, min(g, k) + 1):
        for w in range(0, min(c, k - j, j) + 1):
            r = k - j - w
            if r > a:
                continue
            t = cg[j] * cc[w] * ca[r]
            if w < j:
                win += t
            else:
                tie += t
    return Fraction(2 * win + tie, 2 * math.comb(g + c + a, k))


def _random_histogram(rng, n_max: int, m_max: int = 4):
    n = int(rng.integers(0, n_max + 1))
    m = int(rng.integers(0, m_max + 1))
    p = rng.dirichlet(np.ones(m + 2) * rng.choice([0.3, 1.0, 3.0]))
    labels = rng.choice(m + 2, size=n, p=p)
    g = int(np.count_nonzero(labels == 0))
    a = int(np.count_nonzero(labels == m + 1))
    others = tuple(c for c in (int(np.count_nonzero(labels == i)) for i in range(1, m + 1)) if c)
    return g, others, a


def _pool(rng, n: int, classes: int, near_tie: bool) -> Histogram:
    """A random pool of n voters; with near_tie the largest wrong class is ~ gold's size."""
    pg = rng.uniform(0.05, 0.6)
    wrong = rng.dirichlet(np.full(classes, 0.5))
    probs = np.concatenate([[0.95 * pg], 0.95 * (1 - pg) * wrong, [0.05]])
    c = rng.multinomial(n, probs)
    g, others, a = int(c[0]), [int(x) for x in c[1:-1] if x > 0], int(c[-1])
    if near_tie and others and g > 2:
        i = int(np.argmax(others))
        d = others[i] - (g + int(rng.integers(-2, 3)))  # move voters to make it near gold
        if d > 0:
            others[i] -= d
            a += d
    return Histogram(g, tuple(others), a)


def _exact_error(n: int) -> float:
    """Float error allowance of voting.exact_accuracy (log-factorial table rounding)."""
    return 1e-12 + 4e-16 * math.lgamma(n + 1)


EDGE_CASES = [
    (0, (), 5),  # everyone abstains
    (0, (3,), 2),  # nobody right
    (0, (2, 2), 0),
    (4, (), 0),  # no wrong answers
    (3, (), 4),  # only gold and abstainers: empty committees possible
    (1, (), 11),
    (2, (2,), 0),  # exact tie, full pool
    (2, (2, 2), 1),  # three-way tie
    (3, (3, 3), 3),
    (2, (1,), 0),
    (1, (1, 1, 1, 1), 3),  # many single-voter classes: multi-way ties at 1
    (2, (1, 1, 1, 1, 3), 0),
    (5, (6,), 1),
    (6, (5,), 1),
    (1, (10,), 1),
    (11, (1,), 0),
    (3, (2, 2, 2, 2), 2),  # equal classes (grouped rivals)
]


# --------------------------------------------------------------------------------------
# 1. Against exact rational enumeration
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("g,others,a", EDGE_CASES)
def test_windowed_matches_subset_enumeration_edge_cases(g, others, a):
    n = g + sum(others) + a
    ks = np.arange(0, n + 1)
    acc, bound = windowed_accuracy(Histogram(g, others, a), ks)
    assert acc.shape == bound.shape == (n + 1,)
    assert acc[0] == 0.0
    for k in range(n + 1):
        want = float(subset_accuracy(g, others, a, k)) if k else 0.0
        assert abs(acc[k] - want) <= bound[k] + 1e-13, (g, others, a, k, acc[k], want)


def test_windowed_matches_enumeration_random_small():
    rng = np.random.default_rng(20240611)
    seen = set()
    while len(seen) < 120:
        g, others, a = _random_histogram(rng, n_max=12)
        if (g, others, a) in seen:
            continue
        seen.add((g, others, a))
        n = g + sum(others) + a
        acc, bound = windowed_accuracy(Histogram(g, others, a), np.arange(n + 1))
        for k in range(1, n + 1):
            want = float(composition_accuracy(g, others, a, k))
            assert abs(acc[k] - want) <= bound[k] + 1e-13, (g, others, a, k)
    assert any(g == 0 for g, _, _ in seen)
    assert any(a > 0 and g > 0 and o for g, o, a in seen)
    assert any(g > 0 and o and max(o) == g for g, o, a in seen)
    assert any(len(o) >= 3 for _, o, _ in seen)


def test_windowed_matches_compositions_medium_pools():
    """Pools of 40-90 voters, 2-3 wrong classes, all k: the windows do cut here."""
    rng = np.random.default_rng(5)
    for _ in range(6):
        g, others, a = _random_histogram(rng, n_max=90, m_max=2)
        if g + sum(others) + a < 40:
            continue
        h = Histogram(g, others, a)
        ks = np.unique(rng.integers(1, h.n + 1, size=6))
        for eps in (1e-13, 1e-3):
            acc, bound = windowed_accuracy(h, ks, eps=eps)
            for k, x, b in zip(ks.tolist(), acc, bound):
                want = float(composition_accuracy(h.g, h.others, h.a, k))
                assert abs(x - want) <= b + 1e-13, (h, k, eps, x, want, b)


def test_rational_reference_at_2000_voters():
    """Against exact integer arithmetic at N = 2000 (where float references drift)."""
    g, c, a = 700, 640, 660
    h = Histogram(g, (c,), a)
    ks = np.array([1, 7, 150, 999, 1500, 1999, 2000])
    acc, bound = windowed_accuracy(h, ks)
    assert bound.max() <= 1e-10
    for k, x, b in zip(ks.tolist(), acc, bound):
        want = float(one_rival_accuracy(g, c, a, k))
        assert abs(x - want) <= b + 1e-13, (k, x, want, b)


def test_compositions_at_2000_voters_small_k():
    """Near-tied rivals at N = 2000, small k: exact integer compositions as reference."""
    h = Histogram(500, (499, 501, 300), 200)
    ks = np.array([2, 5, 9])
    acc, bound = windowed_accuracy(h, ks)
    for k, x, b in zip(ks.tolist(), acc, bound):
        want = float(composition_accuracy(h.g, h.others, h.a, k))
        assert abs(x - want) <= b + 1e-13, (k, x, want)


@pytest.mark.parametrize("n", [2000, 100_000])
def test_class_wins_sum_to_p_any_vote(n):
    """sum over classes of P(class wins) = P(some non-null vote), with near ties, any N.

    Every committee with a vote hands out total win probability 1 (1 or t shares of
    1/t), so the sum is pass@k with the answering voters as "correct": an exact
    identity that checks the multi-rival kernel where no rational reference is feasible.
    """
    u = n // 20
    classes = [5 * u, 5 * u - 1, 5 * u - 3, 4 * u + 2]  # near-tied top classes
    a = n - sum(classes)
    ks = np.unique(np.array([1, 3, 30, n // 10, n // 3, n // 2, n - 7, n - 1]))
    total, bsum = np.zeros(len(ks)), np.zeros(len(ks))
    for i, c in enumerate(classes):
        acc, bound = windowed_accuracy(Histogram(c, tuple(classes[:i] + classes[i + 1:]), a), ks)
        total += acc
        bsum += bound
    p_vote = pass_at_k(n, n - a, ks)  # running product: accurate to ~k ulp
    assert bsum.max() <= 1e-10
    np.testing.assert_allclose(total, p_vote, rtol=0, atol=1e-11)
    assert np.all(np.abs(total - p_vote) <= bsum + 1e-12), np.abs(total - p_vote)


@pytest.mark.slow
def test_exact_reference_error():
    """voting.exact_accuracy itself drifts by ~1e-12 at N = 2000: the allowance is real."""
    g, c, a = 700, 300, 1000
    ex = exact_accuracy(Histogram(g, (c,), a))
    errs = [abs(ex[k] - float(one_rival_accuracy(g, c, a, k))) for k in (50, 500, 1500)]
    assert max(errs) <= _exact_error(2000)


# --------------------------------------------------------------------------------------
# 2. Against voting.exact_accuracy on larger pools
# --------------------------------------------------------------------------------------


def _check_against_exact(h: Histogram, ks, eps=1e-13):
    ex = exact_accuracy(h)
    acc, bound = windowed_accuracy(h, ks, eps=eps)
    err = np.abs(acc - ex[ks])
    assert np.all(err <= bound + _exact_error(h.n)), (h, ks[np.argmax(err - bound)], err.max())
    return acc, bound, err


@pytest.mark.parametrize("n", [200, 350, 500])
def test_matches_exact_accuracy_hundreds(n):
    rng = np.random.default_rng(n)
    for trial in range(3):
        h = _pool(rng, n, classes=int(rng.integers(3, 16)), near_tie=trial > 0)
        ks = np.unique(np.concatenate([[1, 2, 3, n - 1, n], rng.integers(1, n + 1, 20)]))
        acc, bound, err = _check_against_exact(h, ks)
        assert bound.max() <= 1e-10
        assert err.max() <= 1e-12 + bound.max()


@pytest.mark.slow
@pytest.mark.parametrize("n", [1000, 2000])
def test_matches_exact_accuracy_thousands(n):
    rng = np.random.default_rng(n + 1)
    for trial in range(2):
        h = _pool(rng, n, classes=15, near_tie=trial == 1)
        ks = np.unique(np.concatenate([[1, n - 1, n], rng.integers(1, n + 1, 25)]))
        acc, bound, _ = _check_against_exact(h, ks)
        assert bound.max() <= 1e-10


def test_many_equal_and_near_tied_classes():
    """Grouped identical rivals (powers in the kernel) and several rivals tied with gold."""
    cases = [
        Histogram(40, (10,) * 12 + (39, 40, 40), 20),
        Histogram(25, (25, 25, 24, 3, 3, 3, 3), 0),
        Histogram(30, (1,) * 60 + (29,), 10),
    ]
    for h in cases:
        ks = np.unique(np.r_[1, 2, 5, 17, 60, h.n // 2, h.n - 3, h.n - 1, h.n])
        _check_against_exact(h, ks)


def test_bound_honoured_with_large_eps():
    """eps = 1e-3: the bound is far from zero yet still covers the truncation error."""
    rng = np.random.default_rng(11)
    worst_bound = 0.0
    for trial in range(4):
        h = _pool(rng, 300, classes=8, near_tie=trial % 2 == 1)
        ks = np.unique(rng.integers(1, h.n, 25))
        acc, bound, err = _check_against_exact(h, ks, eps=1e-3)
        worst_bound = max(worst_bound, bound.max())
        assert np.all(bound <= 1.0)
    assert worst_bound > 1e-4  # non-trivial


def test_edges_g0_k1_kN_and_validation():
    h = Histogram(0, (5, 3), 2)
    acc, bound = windowed_accuracy(h, np.arange(h.n + 1))
    assert np.all(acc == 0.0) and np.all(bound == 0.0)
    h = Histogram(7, (7, 3), 5)
    acc, bound = windowed_accuracy(h, [1, h.n])
    assert abs(acc[0] - 7 / 22) <= 1e-15 + bound[0]
    assert acc[1] == 0.5 and bound[1] == 0.0  # full pool: 7-7 tie
    with pytest.raises(ValueError):
        windowed_accuracy(h, [h.n + 1])
    with pytest.raises(ValueError):
        windowed_accuracy(h, [-1])
    with pytest.raises(ValueError):
        windowed_accuracy(h, [3], eps=0.0)


def test_large_pool_is_fast_bounded_and_sane():
    """10^5 voters: every k in [0, 1], bound tiny, k = 1 is the voter accuracy."""
    h = Histogram(38_000, (37_000, 10_000, 5_000, 5_000) + (100,) * 40, 1_000)
    ks = np.array([1, 2, 10, 100, 1_000, 10_000, 50_000, 99_999, 100_000])
    acc, bound = windowed_accuracy(h, ks)
    assert np.all((acc >= 0) & (acc <= 1))
    assert bound.max() <= 1e-10
    assert abs(acc[0] - 0.38) <= 1e-12
    assert acc[-1] == 1.0  # gold has the plurality of the whole pool
    assert acc[-2] == pytest.approx(1.0, abs=1e-12)
    assert np.all(np.diff(acc[3:]) > 0)  # a plurality leader's accuracy grows with k here


# --------------------------------------------------------------------------------------
# 3. Histogram Monte-Carlo
# --------------------------------------------------------------------------------------


def test_histogram_mc_within_hoeffding_and_reproducible():
    rng = np.random.default_rng(3)
    hists = [_pool(rng, 150, classes=6, near_tie=i % 2 == 0) for i in range(6)]
    hists.append(Histogram(0, (100, 50), 0))  # g = 0
    hists.append(Histogram(3, (), 147))  # mostly empty committees at small k
    ks = np.array([1, 2, 7, 40, 149, 150])
    delta = 1e-6  # a spurious failure has probability <= 1e-6 per checked cell
    W, hw = histogram_monte_carlo(hists, ks, draws=4000, seed=1, delta=delta)
    assert W.shape == (len(hists), len(ks))
    assert hw.cell == pytest.approx(math.sqrt(math.log(2 / delta) / 8000))
    assert hw.mean == pytest.approx(hw.cell / math.sqrt(len(hists)))
    truth = exact_matrix(hists, ks)
    assert np.all(np.abs(W - truth) <= hw.cell)
    assert np.all(np.abs(W.mean(axis=0) - truth.mean(axis=0)) <= hw.mean)
    assert np.all(W[-2] == 0.0)
    W2, _ = histogram_monte_carlo(hists, ks, draws=4000, seed=1, delta=delta)
    np.testing.assert_array_equal(W, W2)
    W3, _ = histogram_monte_carlo(hists, ks, draws=4000, seed=2, delta=delta)
    assert not np.array_equal(W, W3)
    # k = N is deterministic: every draw is the whole pool
    np.testing.assert_allclose(W[:, -1], truth[:, -1], rtol=0, atol=1e-15)


def test_histogram_mc_large_pool_and_validation():
    h = Histogram(38_000, (37_000, 10_000, 5_000, 5_000) + (100,) * 40, 1_000)
    ks = np.array([1, 101, 10_001])
    W, hw = histogram_monte_carlo([h], ks, draws=3000, seed=0, delta=1e-6)
    acc, _ = windowed_accuracy(h, ks)
    assert np.all(np.abs(W[0] - acc) <= hw.cell)
    with pytest.raises(ValueError):
        histogram_monte_carlo([h], [0], draws=10, seed=0)
    with pytest.raises(ValueError):
        histogram_monte_carlo([h], [1], draws=0, seed=0)


# --------------------------------------------------------------------------------------
# 4. Dispatcher
# --------------------------------------------------------------------------------------


def _simulated_hists(problems: int, voters: int, seed: int) -> list[Histogram]:
    rng = np.random.default_rng(seed)
    return [_pool(rng, voters, classes=15, near_tie=False) for _ in range(problems)]


def test_accuracy_matrix_bit_identical_at_200_voters():
    hists = _simulated_hists(30, 200, seed=0)
    ks = np.arange(1, 201)
    W, bound = accuracy_matrix(hists, ks)
    ref = exact_matrix(hists, ks)
    assert W.shape == (30, 200) and bound.shape == (200,)
    np.testing.assert_array_equal(W, ref)
    assert np.all(bound == 0.0)


def test_accuracy_matrix_windowed_path_and_methods():
    hists = _simulated_hists(3, 600, seed=4) + [Histogram(0, (300, 300), 0)]
    ks = np.array([1, 5, 50, 300, 599, 600])
    Wa, ba = accuracy_matrix(hists, ks, method="windowed")
    We, be = accuracy_matrix(hists, ks, method="exact")
    assert np.all(be == 0.0)
    assert np.all(np.abs(Wa - We) <= ba + _exact_error(600))
    for i, h in enumerate(hists):
        acc, b = windowed_accuracy(h, ks)
        np.testing.assert_array_equal(Wa[i], acc)
        assert np.all(b <= ba)
    Wauto, bauto = accuracy_matrix(hists, ks)
    assert np.all(np.abs(Wauto - We) <= bauto + _exact_error(600))
    # mixed pool sizes: small pools exact, big ones windowed
    small = _simulated_hists(1, 200, seed=9)[0]
    big = Histogram(40_000, (30_000, 20_000), 10_000)
    W, b = accuracy_matrix([small, big], [1, 2, 200])
    assert W[0].tolist() == exact_matrix([small], [1, 2, 200])[0].tolist()
    assert 0 < b.max() <= 1e-10
    with pytest.raises(ValueError):
        accuracy_matrix(hists, [601])
    with pytest.raises(ValueError):
        accuracy_matrix(hists, [1], method="nope")
    W0, b0 = accuracy_matrix([], [1, 2])
    assert W0.shape == (0, 2) and b0.tolist() == [0.0, 0.0]


# --------------------------------------------------------------------------------------
# 5. Docstring examples
# --------------------------------------------------------------------------------------


def test_docstring_examples_run():
    res = doctest.testmod(voting_scale, optionflags=doctest.ELLIPSIS)
    assert res.attempted >= 8
    assert res.failed == 0
