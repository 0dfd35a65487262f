"""Problem-set loading (eval.problems)."""

from __future__ import annotations

import json

import pytest

from eval.grading import grade
from eval.problems import ProblemSetError, load_problems, synthetic_problems


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
