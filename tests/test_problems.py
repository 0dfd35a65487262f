"""Problem-set loading (ensemble.core.problems)."""

from __future__ import annotations

import json

import pytest

from ensemble.core.grading import grade
from ensemble.core.problems import ProblemSetError, load_problems, synthetic_problems


def test_shared_sets_load(shared_data):
    aime = load_problems(shared_data / "aime24.jsonl")
    assert len(aime) == 30 and len({p.id for p in aime}) == 30
    assert all(0 <= int(p.answer) <= 999 for p in aime)
    assert len(load_problems(shared_data / "math500.jsonl", limit=7)) == 7


def test_field_mapping_and_formats(tmp_path):
    rows = [{"q": "What is 1+1?", "a": "2"}, {"q": "What is 2+2?", "a": "4"}]
    (tmp_path / "p.json").write_text(json.dumps(rows))
    probs = load_problems(tmp_path / "p.json", problem_field="q", answer_field="a", id_field=None)
    assert [(p.id, p.answer) for p in probs] == [("0", "2"), ("1", "4")]
    import pandas as pd

    pd.DataFrame(rows).to_csv(tmp_path / "p.csv", index=False)
    assert load_problems(tmp_path / "p.csv", "q", "a")[1].problem == "What is 2+2?"


def test_problem_set_errors(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ProblemSetError, match="the problem set is empty"):
        load_problems(tmp_path / "empty.jsonl")
    (tmp_path / "x.jsonl").write_text(json.dumps({"question": "q", "answer": "1"}) + "\n")
    with pytest.raises(ProblemSetError, match=r"no field 'problem' \(fields: question, answer\); "
                                              r"set --problem-field"):
        load_problems(tmp_path / "x.jsonl")
    (tmp_path / "d.jsonl").write_text('{"id": 1, "problem": "a", "answer": "1"}\n' * 2)
    with pytest.raises(ProblemSetError, match="duplicate problem id '1' \\(row 2\\)"):
        load_problems(tmp_path / "d.jsonl")
    with pytest.raises(ProblemSetError, match="no such file, preset or dataset id"):
        load_problems(tmp_path / "missing.jsonl")


def test_synthetic_generator_is_seeded_and_self_consistent():
    a = synthetic_problems(50, difficulty=4, seed=3)
    assert a == synthetic_problems(50, difficulty=4, seed=3)
    assert a != synthetic_problems(50, difficulty=4, seed=4)
    for p in a:
        assert 0 <= int(p.answer) <= 999
        assert grade(p.solution, p.answer, "aime").correct
    assert load_problems("synthetic:10:d2:s1") == synthetic_problems(10, 2, 1)
    with pytest.raises(ValueError, match="difficulty=0 must be between 1 and 12"):
        synthetic_problems(3, difficulty=0)


def _check_column_working(solution: str) -> int:
    """Recompute every column of a ``worked="digits"`` solution; returns columns checked."""
    import re

    checked = 0
    for m in re.finditer(r"(Add|Subtract|Multiply by) (\d+): ([^:]*?), so (\d+) -> (\d+)\.",
                         solution):
        op, x, cols, v, new = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), int(m.group(5))
        assert new == {"Add": v + x, "Subtract": v - x, "Multiply by": v * x}[op]
        for col in cols.split(", "):
            lhs, rhs = col.split("=")
            assert eval(lhs) == int(rhs), col  # each column is plain integer arithmetic
            checked += 1
        units = int(cols.split(", ")[0].split("=")[1]) % 10
        assert new % 10 == units  # the first column is the units digit
    return checked


def test_small_numbers_and_digit_working():
    steps = synthetic_problems(300, difficulty=4, seed=2, numbers="small")
    digits = synthetic_problems(300, difficulty=4, seed=2, numbers="small", worked="digits")
    # The worked style changes the solution text only.
    assert [(p.id, p.problem, p.answer) for p in steps] == [(p.id, p.problem, p.answer)
                                                            for p in digits]
    assert steps[0].id == "syn2-d4-small-0000"
    assert load_problems("synthetic:300:d4:s2:small") == steps
    assert load_problems("synthetic:5:d4:s2:default") == synthetic_problems(5, 4, 2)
    columns = 0
    for p in digits:
        assert grade(p.solution, p.answer, "aime").correct
        assert " -> -" not in p.solution  # small numbers never go below zero
        columns += _check_column_working(p.solution)
    assert columns > 300 * 4  # every operation has at least one column
    # Borrowing and carrying both occur, and a value past 999 still ends in a mod line.
    text = " ".join(p.solution for p in digits)
    assert "-1=" in text and "+1=" in text
    big = [p for p in synthetic_problems(2000, 6, 0, numbers="small", worked="digits")
           if "mod 1000" in p.solution]
    assert big and all(grade(p.solution, p.answer, "aime").correct for p in big)
    with pytest.raises(ValueError, match="numbers='tiny' is not one of default, small"):
        synthetic_problems(3, numbers="tiny")
    with pytest.raises(ValueError, match="worked='prose' is not one of steps, digits"):
        synthetic_problems(3, worked="prose")


def test_hub_dataset_ids_and_presets_through_a_mocked_loader(monkeypatch, shared_data):
    """Dataset ids and presets go to datasets.load_dataset with their split and field
    mapping (mocked: no hub here), and a loader failure is one clear error."""
    import datasets

    aime = [json.loads(line) for line in (shared_data / "aime24.jsonl").read_text().splitlines()
            if line]
    calls = []

    def fake_load_dataset(name, split=None, **kw):
        calls.append((name, split))
        if name == "nobody/missing":
            raise FileNotFoundError(f"Couldn't find a dataset script or data for {name}")
        if name == "someone/renamed":
            return [{"key": f"q{i}", "question": r["problem"], "final": r["answer"]}
                    for i, r in enumerate(aime)]
        return aime

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    got = load_problems("aime24")
    assert calls[-1] == ("HuggingFaceH4/aime_2024", "train") and len(got) == len(aime)
    assert got[0].answer == str(aime[0]["answer"]).strip()
    got = load_problems("someone/renamed", problem_field="question", answer_field="final",
                        id_field="key", split="test", limit=5)
    assert calls[-1] == ("someone/renamed", "test")
    assert [p.id for p in got] == ["q0", "q1", "q2", "q3", "q4"]
    with pytest.raises(ProblemSetError, match=r"nobody/missing: cannot load split 'train' from "
                                              r"the Hugging Face hub \(Couldn't find"):
        load_problems("nobody/missing")
