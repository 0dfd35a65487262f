"""Tests of ensemble.core.canonical: one string per value, and its effect on voting."""

from __future__ import annotations

import itertools
from collections import Counter
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

from ensemble.core.canonical import CANONICAL_MODES, canonical_number, canonicalize
from ensemble.voting.estimators import exact_accuracy, histogram


def _canon(answers, gold="0", problem="p", mode="number"):
    a = pd.Series(answers, dtype="object")
    g = pd.Series([gold] * len(a) if isinstance(gold, str) else gold, dtype="object")
    p = pd.Series([problem] * len(a) if isinstance(problem, str) else problem)
    return canonicalize(a, g, p, mode=mode)


# ------------------------------------------------------------------------------ number


def test_number_mode_merges_spellings_of_one_integer():
    ans, _ = _canon(["624", "624.0", " 624 ", "+624", "6.24e2", "0624", "624.", "62400e-2"])
    assert set(ans) == {"624"}


def test_number_mode_thousands_separators():
    ans, _ = _canon(["1,000", "1000", "1{,}000", "1\\,000", "1,000.0", "1,000,000", "1e6"])
    assert ans.tolist() == ["1000"] * 5 + ["1000000"] * 2


def test_number_mode_keeps_distinct_values_apart():
    ans, _ = _canon(["624", "625", "-624", "6.24", "624.5", "0.1", "0.10000001", "1e-7", "0"])
    assert ans.tolist() == ["624", "625", "-624", "6.24", "624.5", "0.1", "0.10000001",
                            "0.0000001", "0"]
    assert ans.nunique() == len(ans)


def test_number_mode_exact_fractions_and_decimals():
    ans, _ = _canon(["0.5", ".50", "1/2", "2/4", " 1 / 2", "-0.5", "-1/2", "1/3", "2/6", "0.333"])
    assert ans.tolist() == ["0.5"] * 5 + ["-0.5"] * 2 + ["1/3"] * 2 + ["0.333"]


def test_number_mode_leaves_non_numbers_intact_but_stripped():
    raw = ["seven", " x = 5 ", "1,23", "0,624", "1, 000", "50%", "$5", "\\frac{1}{2}",
           "1/0", "1/2/3", "inf", "nan", "1_000", "0x10", "5 cm", "\\boxed{5}", "(1,2)",
           "٦٢٤", "e5", "1e", "--5", "."]
    ans, _ = _canon(raw)
    assert ans.tolist() == [s.strip() for s in raw]


def test_null_and_blank_stay_null():
    ans, gold = _canon([None, np.nan, "", "   ", pd.NA, "5"], gold=" 5.0 ")
    assert ans.isna().tolist() == [True] * 5 + [False]
    assert ans.iat[5] == "5" and set(gold) == {"5"}
    assert str(ans.dtype) == "string" and str(gold.dtype) == "string"


def test_golds_are_canonicalised_like_answers():
    ans, gold = _canon(["624", "73", "1000"], gold=["0624", "073", "1,000"],
                       problem=["a", "b", "c"])
    assert gold.tolist() == ans.tolist() == ["624", "73", "1000"]


def test_index_and_names_are_kept():
    a = pd.Series(["1.0", "2"], index=[10, 20], name="answer")
    g = pd.Series(["1", "1"], index=[10, 20], name="gold")
    ans, gold = canonicalize(a, g, pd.Series(["p", "p"], index=[10, 20]))
    assert ans.index.tolist() == [10, 20] and ans.name == "answer" and gold.name == "gold"


def test_none_mode_strips_only():
    ans, gold = _canon([" 624 ", "624.0", "", None], gold=" 0624", mode="none")
    assert ans.tolist()[:2] == ["624", "624.0"] and ans.isna().tolist()[2:] == [True, True]
    assert set(gold) == {"0624"}


def test_canonical_number_values_round_trip():
    # The canonical string denotes the same exact value and is a fixed point.
    for s in ["0.125", "-12.5e-3", "3/8", "22/7", "1e20", "-0", "007.700", "1,234,567.89"]:
        c = canonical_number(s)
        assert canonical_number(c) == c
        value = Fraction(c) if "/" in c else Fraction(c)
        raw = s.replace(",", "")
        assert value == Fraction(raw)


def test_huge_numerals_are_left_as_text():
    big = "1" * 2000
    assert canonical_number(big) is None
    assert canonical_number("1e999999999") is None
    assert canonical_number("1e1000") == "1" + "0" * 1000


def test_unknown_mode_is_a_value_error_naming_the_modes():
    with pytest.raises(ValueError, match=r"'fuzzy'.*number, math, none"):
        _canon(["1"], mode="fuzzy")
    assert CANONICAL_MODES == ("number", "math", "none")


def test_length_mismatch_is_a_value_error():
    with pytest.raises(ValueError, match="lengths 2, 1 and 1"):
        canonicalize(pd.Series(["1", "2"]), pd.Series(["1"]), pd.Series(["p"]))


# -------------------------------------------------------------------------------- math

@pytest.fixture(scope="module")
def mv():
    return pytest.importorskip("math_verify")


def test_math_mode_merges_latex_fraction_forms(mv):
    raw = ["\\frac{1}{2}", "0.5", "1/2", "\\boxed{\\frac12}", "\\boxed{0.5}", "\\dfrac{1}{2}"]
    ans, gold = _canon(raw, gold="3", mode="math")
    assert ans.nunique() == 1
    assert gold.unique().tolist() == ["3"]


def test_math_mode_maps_gold_equivalents_onto_the_gold_string(mv):
    raw = ["\\frac{1}{2}", "0.5", "1/2", "\\boxed{\\frac{2}{4}}", "x = \\frac12", "7", "7.0"]
    ans, gold = _canon(raw, gold="\\dfrac{1}{2}", mode="math")
    assert ans.tolist() == ["\\dfrac{1}{2}"] * 5 + ["7", "7"]
    assert set(gold) == {"\\dfrac{1}{2}"}


def test_math_mode_gold_written_as_number_keeps_its_number_form(mv):
    ans, gold = _canon(["\\frac{1000}{1}", "1{,}000", "10^3", "999"], gold="1,000", mode="math")
    assert ans.tolist() == ["1000", "1000", "1000", "999"] and set(gold) == {"1000"}


def test_math_mode_keeps_distinct_values_apart(mv):
    raw = ["\\frac{1}{2}", "\\frac{1}{3}", "\\sqrt{2}", "2\\sqrt{2}", "\\sqrt{8}", "\\pi",
           "\\frac{\\pi}{2}", "x^2+1", "(x+1)^2", "x^2+2x+1", "(1,2)", "[1,2]", "624", "625",
           "\\text{odd}", "\\text{even}"]
    ans, _ = _canon(raw, gold="\\frac{1}{2}", mode="math")
    mapped = dict(zip(raw, ans))
    assert mapped["2\\sqrt{2}"] == mapped["\\sqrt{8}"]
    assert mapped["(x+1)^2"] == mapped["x^2+2x+1"]
    distinct = set(raw) - {"\\sqrt{8}", "x^2+2x+1"}
    assert len({mapped[s] for s in distinct}) == len(distinct)


def test_math_mode_is_per_problem_and_null_stays_null(mv):
    ans, gold = _canon(["0.5", "\\frac12", None, "", "0.5"], gold=["1/2", "1/2", "1/2", "2", "2"],
                       problem=["a", "a", "a", "b", "b"], mode="math")
    assert ans.tolist()[:2] == ["0.5", "0.5"]  # number form of gold "1/2" is "0.5"
    assert ans.isna().tolist() == [False, False, True, True, False]
    assert ans.iat[4] == "0.5" and gold.tolist() == ["0.5"] * 3 + ["2"] * 2


def test_math_mode_unparsable_answers_only_match_themselves(mv):
    ans, _ = _canon(["\\boxed{", "\\boxed{", "}{", "5"], gold="5", mode="math")
    assert ans.tolist() == ["\\boxed{", "\\boxed{", "}{", "5"]


def test_math_mode_representative_is_the_most_frequent_spelling(mv):
    ans, _ = _canon(["\\frac{2}{3}", "\\frac{2}{3}", "\\dfrac23", "4/6"], gold="1", mode="math")
    assert set(ans) == {"\\frac{2}{3}"}


def test_math_mode_without_math_verify_names_the_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "math_verify" or name.startswith("math_verify."):
            raise ImportError("No module named 'math_verify'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match="pip install 'math-verify"):
        _canon(["1"], mode="math")
    ans, _ = _canon(["1.0"])  # the number mode needs no math-verify
    assert ans.tolist() == ["1"]


def test_importing_the_module_does_not_import_torch_or_math_verify():
    import subprocess
    import sys

    code = ("import sys, ensemble.core.canonical; "
            "print(any(m in sys.modules for m in ('torch', 'math_verify', 'sympy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------- effect on voting


def _accuracy(answers: list, gold: str, mode: str) -> np.ndarray:
    ans, g = _canon(answers, gold=gold, mode=mode)
    classes = {s: i for i, s in enumerate(sorted(set(ans.dropna()) | set(g)))}
    codes = np.array([-1 if pd.isna(s) else classes[s] for s in ans])
    return exact_accuracy(histogram(codes, classes[g.iat[0]]))


def _brute_force(labels: list, gold: str, k: int) -> float:
    """P(gold wins) over all k-subsets, plurality of non-null labels, ties split."""
    total = Fraction(0)
    subsets = list(itertools.combinations(range(len(labels)), k))
    for sub in subsets:
        votes = Counter(labels[i] for i in sub if labels[i] is not None)
        if votes and votes.get(gold, 0) == max(votes.values()):
            total += Fraction(1, sum(1 for c in votes.values() if c == max(votes.values())))
    return float(total / len(subsets))


@pytest.mark.parametrize("answers", [["7", "7.0", " 7", "5", "5"], ["7", "7.0", "+7", "5", "5"]])
def test_split_wrong_answers_inflate_vote_accuracy_until_canonicalised(answers):
    # Three voters say 7 (wrong) in three spellings, two voters say the gold 5.
    before = _accuracy(answers, "5", "none")  # today's behaviour: strip only
    after = _accuracy(answers, "5", "number")
    for k in range(1, 6):  # the estimator agrees with enumeration on the coded answers
        stripped = [s.strip() for s in answers]
        assert before[k] == pytest.approx(_brute_force(stripped, "5", k))
        assert after[k] == pytest.approx(_brute_force(["7"] * 3 + ["5"] * 2, "5", k))
    # After: 7 beats 5 three to two when everybody votes; committees of three win
    # only as {5, 5, 7} (3 of the 10 subsets).
    assert after[5] == pytest.approx(0.0) and after[3] == pytest.approx(3 / 10)
    # Before, the split 7s lose or tie with gold: accuracy is inflated.
    assert before[5] == pytest.approx(0.5 if " 7" in answers else 1.0)
    assert before[3] > after[3] and before[5] > after[5]
    assert np.all(after[1:] <= before[1:] + 1e-12)
    assert after[1] == pytest.approx(2 / 5) and before[1] == pytest.approx(2 / 5)  # k=1 unchanged


def test_gold_written_differently_is_counted_right_after_canonicalisation():
    answers = ["5.0", "+5", "7", "8"]
    before = _accuracy(answers, "5", "none")
    after = _accuracy(answers, "5", "number")
    assert before[1] == 0.0 and after[1] == pytest.approx(0.5)
    assert after[4] == pytest.approx(1.0)
