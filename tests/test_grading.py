"""Extraction and grading (ensemble.core.grading) on realistic completions and every shared gold."""

from __future__ import annotations

import json
import re
import threading

import pytest

from ensemble.core.grading import canonical_gold, extract, grade, last_boxed

CORPUS = [
    # (completion, kind, canonical answer)
    (r"Adding the cases gives $12 + 61 = 73$, so the answer is $\boxed{073}$.", "aime", "73"),
    (r"Therefore $m+n = \boxed{\textbf{(204)}}$", "aime", "204"),
    ("The answer is 073", "aime", "73"),
    ("So the final answer is 5.", "aime", "5"),
    (r"First I thought \boxed{12}, but rechecking, the answer is \boxed{15}.", "aime", "15"),
    (r"The side has length $\boxed{5\text{ cm}}$.", "aime", "5"),
    (r"\boxed{\frac{\sqrt{3}}{2}}", "math", "sqrt(3)/2"),
    (r"so $x = \boxed{\dfrac{1}{2}}$", "math", "1/2"),
    ("x equals 0.5", "math", "1/2"),
    (r"\boxed{x = 5}", "math", "5"),
    (r"nested: \boxed{\frac{2^{\frac{1}{2}}}{4}}", "math", "sqrt(2)/4"),
    ("I could not solve this problem.", "aime", None),
    (r"The answer is \boxed{", "aime", None),  # cut off by max_tokens
    ("", "aime", None),
]


@pytest.mark.parametrize("text, kind, expect", CORPUS)
def test_extraction_corpus(text, kind, expect):
    assert extract(text, kind) == expect


def test_equivalent_latex_is_one_voting_class():
    forms = [r"\boxed{\frac12}", r"\boxed{\frac{1}{2}}", "0.5", "1/2", r"\boxed{\dfrac{1}{2}}"]
    assert {extract(f, "math") for f in forms} == {"1/2"}


def test_last_boxed_balances_braces():
    assert last_boxed(r"\boxed{\frac{a}{b}} and \boxed{\{1,2\}}") == r"\{1,2\}"
    assert last_boxed(r"\boxed{\frac{a}{b}") is None


def test_grade_aime_and_math():
    assert grade(r"\boxed{073}", "73", "aime").correct
    assert not grade(r"\boxed{74}", "73", "aime").correct
    g = grade(r"\boxed{0.5}", r"\frac{1}{2}", "math")
    assert g.correct and g.answer == canonical_gold(r"\frac{1}{2}", "math")
    assert grade("nothing", "3", "aime") == grade(None, "3", "aime")
    assert grade("nothing", "3", "aime").answer is None
    with pytest.raises(ValueError, match="kind='latex' is not one of aime, math"):
        extract("1", "latex")


def test_grading_works_off_the_main_thread():
    """math-verify's SIGALRM timeout cannot run in a worker thread; grading must."""
    results, errors = [], []

    def work():
        try:
            results.append(grade(r"\boxed{\frac{3}{4}}", "0.75", "math").correct)
        except Exception as exc:  # noqa: BLE001 - the test reports any failure
            errors.append(exc)

    t = threading.Thread(target=work)
    t.start()
    t.join(60)
    assert errors == [] and results == [True]


def _other_form(answer: str) -> str | None:
    """The same value written differently, where a rewrite is obvious."""
    if re.fullmatch(r"-?\d+", answer):
        return f"{int(answer):03d}" if int(answer) >= 0 else f"{answer}.0"
    if re.fullmatch(r"-?\d+\.0+", answer):  # AMC golds are written "142.0"
        return answer.split(".")[0]
    m = re.fullmatch(r"\\d?frac\{(-?\d+)\}\{(\d+)\}", answer)
    if m:
        return f"{m.group(1)}/{m.group(2)}"
    return None


@pytest.mark.slow
@pytest.mark.parametrize("name, kind", [("aime24.jsonl", "aime"), ("aime25.jsonl", "aime"),
                                        ("aime_1983_2023.jsonl", "aime"),
                                        ("amc22_23.jsonl", "math"), ("math500.jsonl", "math")])
def test_every_shared_gold_grades_correct(shared_data, name, kind):
    rows = [json.loads(line) for line in (shared_data / name).read_text().splitlines() if line]
    rewritten = 0
    for r in rows:
        gold = r["answer"]
        assert grade(f"So the answer is $\\boxed{{{gold}}}$.", gold, kind).correct, gold
        other = _other_form(gold)
        if other is not None:
            rewritten += 1
            assert grade(f"The final answer is \\boxed{{{other}}}", gold, kind).correct, (gold, other)
    assert rewritten > 0
