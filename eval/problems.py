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
    kind: str  # grading kind, see eval.grading


# Usual Hugging Face ids for online users; offline, pass a local file instead.
PRESETS = {
    "aime24": Preset("HuggingFaceH4/aime_2024", "train", "problem", "answer", "id", "aime"),
    "aime25": Preset("yentinglin/aime_2025", "train", "problem", "answer", "id", "aime"),
    "math500": Preset("HuggingFaceH4/MATH-500", "test", "problem", "answer", "unique_id", "math"),
}

SYNTHETIC = re.compile(r"synthetic(?::(\d+))?(?::d(\d+))?(?::s(\d+))?$")


def _rows_from_file(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            with path.open() as fh:
                return [json.loads(line) for line in fh if line.strip()]
        if suffix == ".json":
            data = json.loads(path.read_text())
            return data if isinstance(data, list) else data.get("data", data.get("problems", []))
        if suffix in (".parquet", ".csv"):
            import pandas as pd

            df = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(
                path, dtype=str, keep_default_na=False)
            return df.to_dict(orient="records")
    except (ValueError, OSError) as exc:
        raise ProblemSetError(f"{path}: cannot be read as {suffix[1:]} ({exc})") from exc
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


def load_problems(source: str | Path, problem_field: str = "problem",
                  answer_field: str = "answer", id_field: str | None = "id",
                  split: str = "train", limit: int | None = None) -> list[Problem]:
    """Load a problem set.

    Parameters
    ----------
    source : str or Path
        A local ``.jsonl``/``.json``/``.parquet``/``.csv`` file, a preset name
        (``aime24``, ``aime25``, ``math500``), ``synthetic[:N][:dD][:sS]`` (N problems of
        difficulty D from seed S), or a Hugging Face dataset id.
    problem_field, answer_field, id_field : str
        Column names; a missing ``id_field`` numbers the problems 0, 1, ...
    limit : int, optional
        Keep only the first ``limit`` problems.
    """
    src = str(source)
    m = SYNTHETIC.match(src)
    if m:
        n = int(m.group(1) or 30)
        probs = synthetic_problems(n, difficulty=int(m.group(2) or 3), seed=int(m.group(3) or 0))
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
    if not rows:
        raise ProblemSetError(f"{where}: the problem set is empty")
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
        if ans is None or str(ans).strip() == "":
            raise ProblemSetError(f"{where}: row {i + 1} (id {pid}) has no {answer_field!r}")
        out.append(Problem(pid, str(r[problem_field]), str(ans).strip(), r.get("solution")))
    return out[:limit] if limit else out


# --- synthetic AIME-style problems --------------------------------------------------

_OPS = (
    ("add", "add {x}", lambda v, x: v + x),
    ("sub", "subtract {x}", lambda v, x: v - x),
    ("mul", "multiply by {x}", lambda v, x: v * x),
)


def synthetic_problems(n: int, difficulty: int = 3, seed: int = 0) -> list[Problem]:
    """Seeded multi-step integer arithmetic problems with answers 0-999.

    Each problem starts from an integer and applies ``difficulty`` operations (add,
    subtract, multiply), then asks for the remainder modulo 1000, as AIME answers
    are.  The worked solution shows every intermediate value and ends in
    ``\\boxed{answer}``, so the same generator serves as a pretraining corpus.

    Examples
    --------
    >>> p = synthetic_problems(1, difficulty=2, seed=1)[0]
    >>> p.solution.endswith("\\\\boxed{" + p.answer + "}.")
    True
    """
    if n < 1:
        raise ValueError(f"n={n}: ask for at least one problem")
    if not 1 <= difficulty <= 12:
        raise ValueError(f"difficulty={difficulty} must be between 1 and 12 (steps per problem)")
    rng = np.random.default_rng(np.random.SeedSequence([seed, difficulty, 0x5EED]))
    out = []
    for i in range(n):
        v = start = int(rng.integers(2, 100))
        steps, work = [], [f"Start with {v}."]
        for _ in range(difficulty):
            name, text, fn = _OPS[int(rng.integers(len(_OPS)))]
            x = int(rng.integers(2, 10 if name == "mul" else 100))
            new = fn(v, x)
            steps.append(text.format(x=x))
            work.append(f"{text.format(x=x).capitalize()}: {v} -> {new}.")
            v = new
        ans = v % 1000
        work.append(f"{v} mod 1000 = {ans}. The answer is \\boxed{{{ans}}}.")
        problem = (f"Start with {start}, then " + ", then ".join(steps)
                   + ". What is the remainder when the result is divided by 1000?")
        out.append(Problem(f"syn{seed}-d{difficulty}-{i:04d}", problem, str(ans), " ".join(work)))
    return out
