"""Problem sets: local files, Hugging Face datasets, presets, and a synthetic generator.

Every loader returns a list of :class:`Problem` (id, problem text, gold answer) and
checks the set before any model is loaded: an empty set, a missing field or a
duplicate id is an error naming the source and the fix.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ensemble.core.files import table_read_errors


class ProblemSetError(ValueError):
    """A problem set cannot be used as given; the message names the source and the fix."""


@dataclass(frozen=True)
class Problem:
    id: str
    problem: str
    answer: str
    solution: str | None = None  # worked solution, when the set has one (training pools)


@dataclass(frozen=True)
class Preset:
    dataset: str
    split: str
    problem_field: str
    answer_field: str
    id_field: str | None
    kind: str  # grading kind, see ensemble.core.grading


# Usual Hugging Face ids for online users; offline, pass a local file instead.
PRESETS = {
    "aime24": Preset("HuggingFaceH4/aime_2024", "train", "problem", "answer", "id", "aime"),
    "aime25": Preset("yentinglin/aime_2025", "train", "problem", "answer", "id", "aime"),
    "math500": Preset("HuggingFaceH4/MATH-500", "test", "problem", "answer", "unique_id", "math"),
}

SYNTHETIC = re.compile(r"synthetic(?::(\d+))?(?::d(\d+))?(?::s(\d+))?(?::(small|default|add2))?$")


def _rows_from_file(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if path.is_dir():
        raise ProblemSetError(f"{path} is a directory; give a problem file (.jsonl, .json, "
                              ".parquet or .csv)")
    with table_read_errors(path, ProblemSetError):
        if suffix == ".jsonl":
            with path.open() as fh:
                return [json.loads(line) for line in fh if line.strip()]
        if suffix == ".json":
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                data = data.get("data", data.get("problems", []))
            return data
        if suffix in (".parquet", ".csv"):
            import pandas as pd

            df = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(
                path, dtype=str, keep_default_na=False)
            return df.to_dict(orient="records")
    raise ProblemSetError(f"{path}: unknown format {suffix!r}; use .jsonl, .json, .parquet or .csv")


def _rows_from_hub(dataset: str, split: str) -> list[dict]:
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("loading a dataset id needs `pip install datasets`") from exc
    try:
        return list(datasets.load_dataset(dataset, split=split))
    except Exception as exc:  # datasets raises many types (offline, not found, ...)
        raise ProblemSetError(
            f"{dataset}: cannot load split {split!r} from the Hugging Face hub ({exc}); "
            "offline, pass a local .jsonl/.parquet/.csv file instead"
        ) from exc


def _blank(value) -> bool:
    """None, NaN (a missing cell of a numeric parquet/csv column) or only whitespace."""
    return value is None or (isinstance(value, float) and value != value) or not str(value).strip()


def load_problems(source: str | Path, problem_field: str = "problem",
                  answer_field: str = "answer", id_field: str | None = "id",
                  split: str = "train", limit: int | None = None) -> list[Problem]:
    """Load a problem set.

    Parameters
    ----------
    source : str or Path
        A local ``.jsonl``/``.json``/``.parquet``/``.csv`` file, a preset name
        (``aime24``, ``aime25``, ``math500``), ``synthetic[:N][:dD][:sS][:small]`` (N problems of
        difficulty D from seed S, optionally with the small number ranges), or a Hugging Face dataset id.
    problem_field, answer_field, id_field : str
        Column names; a missing ``id_field`` numbers the problems 0, 1, ...
    limit : int, optional
        Keep only the first ``limit`` problems.
    """
    src = str(source)
    m = SYNTHETIC.match(src)
    if m:
        n = int(m.group(1) or 30)
        try:
            probs = synthetic_problems(n, difficulty=int(m.group(2) or 3),
                                       seed=int(m.group(3) or 0), numbers=m.group(4) or "default")
        except ValueError as exc:  # name the spec the value came from
            raise ProblemSetError(f"{src}: {exc}") from None
        return probs[:limit] if limit else probs
    path = Path(src)
    if path.exists():
        rows, where = _rows_from_file(path), str(path)
    elif src in PRESETS:
        p = PRESETS[src]
        rows, where = _rows_from_hub(p.dataset, p.split), p.dataset
        problem_field, answer_field, id_field = p.problem_field, p.answer_field, p.id_field
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", src) and not src.endswith(
            (".jsonl", ".json", ".csv", ".parquet")):
        rows, where = _rows_from_hub(src, split), src
    else:
        raise ProblemSetError(f"{src}: no such file, preset or dataset id")
    if not isinstance(rows, list):
        kind = {int: "number", float: "number", str: "string", bool: "boolean"}.get(
            type(rows), type(rows).__name__)
        raise ProblemSetError(f"{where}: holds a single {kind}, not a list of problems")
    if not rows:
        raise ProblemSetError(f"{where}: the problem set is empty")
    odd = next((i for i, r in enumerate(rows) if not isinstance(r, dict)), None)
    if odd is not None:
        raise ProblemSetError(f"{where}: row {odd + 1} is {rows[odd]!r}, not a record; each row is "
                              f"one problem with fields such as {problem_field!r} and "
                              f"{answer_field!r}")
    for field_name in (problem_field, answer_field):
        if field_name not in rows[0]:
            raise ProblemSetError(
                f"{where}: no field {field_name!r} (fields: {', '.join(map(str, rows[0]))}); "
                f"set --{'problem' if field_name == problem_field else 'answer'}-field"
            )
    out, seen = [], set()
    for i, r in enumerate(rows):
        pid = str(r[id_field]) if id_field and id_field in r and r[id_field] is not None else str(i)
        if pid in seen:
            raise ProblemSetError(f"{where}: duplicate problem id {pid!r} (row {i + 1}); ids must be unique")
        seen.add(pid)
        ans = r.get(answer_field)
        if _blank(ans):
            raise ProblemSetError(f"{where}: row {i + 1} (id {pid}) has no {answer_field!r}")
        if _blank(r.get(problem_field)):
            raise ProblemSetError(f"{where}: row {i + 1} (id {pid}) has no {problem_field!r}")
        out.append(Problem(pid, str(r[problem_field]), str(ans).strip(), r.get("solution")))
    return out[:limit] if limit else out


# --- synthetic AIME-style problems --------------------------------------------------

# Number ranges of the generator, by name.  Bounds are exclusive and every number is at
# least 2.  "default": starts and add/subtract operands 2-99, factors 2-9, values may go
# negative before the final mod 1000.  "small": starts and operands 2-19, factors 2-4, and
# a subtraction that would go below zero becomes an addition; the demo's small base model
# learns these exactly in minutes of CPU time, while the answers still span 0-999.
# "add2": additions of two-digit numbers only (10-99), the task a small pretrained chat
# model (SmolLM2-135M) gets right about a third of the time and learns in tens of GRPO
# steps (configs/smollm2-arith.toml).
NUMBER_RANGES = {
    "default": {"start_max": 100, "add_max": 100, "mul_max": 10, "nonnegative": False},
    "small": {"start_max": 20, "add_max": 20, "mul_max": 5, "nonnegative": True},
    "add2": {"start_min": 10, "start_max": 100, "add_min": 10, "add_max": 100, "mul_max": 10,
             "nonnegative": True, "ops": ("add",)},
}
WORKED_STYLES = ("steps", "digits")

_OPS = (
    ("add", "add {x}", lambda v, x: v + x),
    ("sub", "subtract {x}", lambda v, x: v - x),
    ("mul", "multiply by {x}", lambda v, x: v * x),
)


def _digits(v: int) -> list[int]:
    """Decimal digits of v >= 0, units first."""
    return [int(c) for c in reversed(str(v))]


def _worked_digits(name: str, v: int, x: int) -> str:
    """Column-by-column working of one operation, units first (v, x >= 0; x < 10 for mul).

    Every written digit is then a function of two digits and a carry just written, which
    a small transformer learns quickly; the result is spelt in the usual order at the end.
    """
    cols, carry = [], 0
    a, b = _digits(v), _digits(x)
    if name == "mul":
        for d in a:
            s = d * x + carry
            cols.append(f"{d}*{x}" + (f"+{carry}" if carry else "") + f"={s}")
            carry = s // 10
        return ", ".join(cols)
    width = max(len(a), len(b))
    a, b = a + [0] * (width - len(a)), b + [0] * (width - len(b))
    for da, db in zip(a, b):
        if name == "add":
            s = da + db + carry
            cols.append(f"{da}+{db}" + ("+1" if carry else "") + f"={s}")
            carry = s // 10
        else:  # sub, borrowing ten when the column goes negative
            top = da - carry
            carry = int(top < db)
            cols.append(("1" if carry else "") + f"{da}-{db}" + ("-1" if top < da else "")
                        + f"={top + 10 * carry - db}")
    return ", ".join(cols)


def synthetic_problems(n: int, difficulty: int = 3, seed: int = 0, *, numbers: str = "default",
                       worked: str = "steps") -> list[Problem]:
    """Seeded multi-step integer arithmetic problems with answers 0-999.

    Each problem starts from an integer and applies ``difficulty`` operations (add,
    subtract, multiply); the answer is the result mod 1000, as AIME answers are.  The
    worked solution shows every intermediate value and ends in ``\\boxed{answer}``, so
    the same generator serves as a pretraining corpus.

    Parameters
    ----------
    n : int
        Number of problems; the set is prefix-stable (problem i does not depend on n).
    difficulty : int
        Operations per problem, 1-12: the main difficulty knob.
    seed : int
        Generator seed; ids carry it, so sets of different seeds never collide.
    numbers : {"default", "small", "add2"}
        Number ranges (see ``NUMBER_RANGES``): a second difficulty knob.  Non-default
        ranges put their name in the ids (``syn0-d3-small-0000``).
    worked : {"steps", "digits"}
        Solution style: one line per operation (``Add 47: 38 -> 85.``) or the same with
        the column-by-column working first (``Add 47: 8+7=15, 3+4+1=8 -> 85.``), units
        first.  Only the solution text changes, never the problem or its answer.

    Examples
    --------
    >>> p = synthetic_problems(1, difficulty=2, seed=1)[0]
    >>> p.answer == str(int(p.answer) % 1000)
    True
    """
    if n < 1:
        raise ValueError(f"n={n}: ask for at least one problem")
    if not 1 <= difficulty <= 12:
        raise ValueError(f"difficulty={difficulty} must be between 1 and 12 (steps per problem)")
    if numbers not in NUMBER_RANGES:
        raise ValueError(f"numbers={numbers!r} is not one of {', '.join(NUMBER_RANGES)}")
    if worked not in WORKED_STYLES:
        raise ValueError(f"worked={worked!r} is not one of {', '.join(WORKED_STYLES)}")
    r = NUMBER_RANGES[numbers]
    ops = [op for op in _OPS if op[0] in r.get("ops", ("add", "sub", "mul"))]
    tag = "" if numbers == "default" else f"-{numbers}"
    rng = np.random.default_rng(np.random.SeedSequence([seed, difficulty, 0x5EED]))
    out = []
    for i in range(n):
        v = start = int(rng.integers(r.get("start_min", 2), r["start_max"]))
        steps, work = [], [f"Start with {v}."]
        for _ in range(difficulty):
            name, text, fn = ops[int(rng.integers(len(ops)))]
            x = int(rng.integers(2, r["mul_max"]) if name == "mul"
                    else rng.integers(r.get("add_min", 2), r["add_max"]))
            if name == "sub" and r["nonnegative"] and x > v:
                name, text, fn = _OPS[0]
            new = fn(v, x)
            steps.append(text.format(x=x))
            head = text.format(x=x).capitalize()
            if worked == "digits" and v >= 0:
                work.append(f"{head}: {_worked_digits(name, v, x)}, so {v} -> {new}.")
            else:
                work.append(f"{head}: {v} -> {new}.")
            v = new
        ans = v % 1000
        if worked == "digits" and 0 <= v < 1000:
            work.append(f"The answer is \\boxed{{{ans}}}.")
        else:
            work.append(f"{v} mod 1000 = {ans}. The answer is \\boxed{{{ans}}}.")
        problem = (f"Start with {start}, then " + ", then ".join(steps)
                   + ". What is the remainder when the result is divided by 1000?")
        out.append(Problem(f"syn{seed}-d{difficulty}{tag}-{i:04d}", problem, str(ans), " ".join(work)))
    return out
