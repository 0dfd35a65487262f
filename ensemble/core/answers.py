"""The answers table: loading, validation, and voter pools for voting.

An answers table has one row per (condition, model_id, problem_id, sample) with the
columns ``condition, model_id, problem_id, sample, answer, gold`` and optionally
``correct`` (see the run-directory contract in docs/architecture.md).  A run directory
holds it as ``answers/<condition>/<model_id>.parquet``; a single file may be
``.parquet``, ``.csv`` or ``.jsonl``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from ensemble.core.files import table_read_errors
from ensemble.core.rundir import RunDir

REQUIRED = ("condition", "model_id", "problem_id", "sample", "answer", "gold")
KEY = ["condition", "model_id", "problem_id", "sample"]
COLLABORATION = "collaboration"
REPETITION = "repetition"
CONDITIONS = (COLLABORATION, REPETITION)


class AnswersError(ValueError):
    """The answers input breaks the table's rules; the message names the place and fix."""


class MissingAnswersWarning(UserWarning):
    """Some voter has no row for some problem; it counts as no answer."""


def answer_files(path: Path) -> list[Path]:
    """The answer files behind INPUT: one file, or ``answers/**.parquet`` of a run dir."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir() and (path / "vote.json").is_file():
        raise AnswersError(f"{path} is a votes directory (what `ensemble vote` writes), not "
                           "answers; give the run directory or an answers file")
    if path.is_dir():
        root = RunDir(path).answers if RunDir(path).answers.is_dir() else path
        files = sorted(p for p in root.rglob("*.parquet") if not p.name.startswith("."))
        if not files:
            raise AnswersError(
                f"{path}: no answers/**.parquet files; run `ensemble answer` first or pass "
                "an answers file (.parquet, .csv, .jsonl)"
            )
        return files
    raise AnswersError(f"{path}: no such file or directory")


def _read_one(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    with table_read_errors(path, AnswersError):
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix == ".csv":
            return pd.read_csv(path, dtype={"answer": "string", "gold": "string"},
                               keep_default_na=False, na_values=[""])
        if suffix in (".jsonl", ".json"):
            return pd.read_json(path, lines=suffix == ".jsonl", dtype={"answer": str, "gold": str})
    raise AnswersError(f"{path}: unknown format {suffix!r}; use .parquet, .csv or .jsonl")


def _canonical(values: pd.Series) -> pd.Series:
    """Strings with surrounding blanks removed; empty strings and nulls become <NA>."""
    out = values.astype("string").str.strip()
    return out.mask(out == "", pd.NA)


def load_answers(path: Path, canonical: str = "number") -> tuple[pd.DataFrame, str]:
    """Read and validate an answers file or run directory.

    Parameters
    ----------
    path : Path
        A file or a run directory.
    canonical : {"number", "math", "none"}
        How answers written differently are merged before voting
        (:func:`ensemble.core.canonical.canonicalize`): equivalent wrong answers split into
        separate classes would face the gold answer as weaker rivals and inflate
        majority-vote accuracy.

    Returns
    -------
    (table, sha256)
        The table with canonical dtypes and a hash of the input bytes (files in order).
    """
    from ensemble.core.canonical import CANONICAL_MODES, canonicalize

    if canonical not in CANONICAL_MODES:  # before any file is read
        raise ValueError(f"canonical={canonical!r} is not one of {', '.join(CANONICAL_MODES)}")
    files = answer_files(Path(path))
    digest = hashlib.sha256()
    frames = []
    for f in files:
        digest.update(f.name.encode())
        digest.update(f.read_bytes())
        df = _read_one(f)
        missing = [c for c in REQUIRED if c not in df.columns]
        if missing:
            raise AnswersError(
                f"{f}: missing column(s) {', '.join(missing)}; an answers table needs "
                f"{', '.join(REQUIRED)} (correct is optional)"
            )
        df = df.assign(_file=str(f), _row=np.arange(len(df)) + (2 if f.suffix == ".csv" else 1))
        frames.append(df)
    table = pd.concat(frames, ignore_index=True)
    if table.empty:
        raise AnswersError(f"{path}: no answer rows")
    if all(c in table.columns for c in ("answer", "gold", "problem_id")):
        # Before validation, so one gold written two ways (1,000 and 1000) is one gold.
        table["answer"], table["gold"] = canonicalize(
            table["answer"], table["gold"], table["problem_id"].astype("string").str.strip(),
            canonical)
    validate(table)
    cols = list(REQUIRED) + (["correct"] if "correct" in table.columns else [])
    out = pd.DataFrame(
        {
            "condition": table["condition"].astype("string").str.strip(),
            "model_id": table["model_id"].astype("string").str.strip(),
            "problem_id": table["problem_id"].astype("string").str.strip(),
            "sample": table["sample"].astype(np.int64),
            "answer": _canonical(table["answer"]),
            "gold": _canonical(table["gold"]),
        }
    )
    if "correct" in cols:
        out["correct"] = table["correct"].astype("boolean")
    return out, digest.hexdigest()


def _where(table: pd.DataFrame, i: int) -> str:
    return f"{table['_file'].iat[i]} row {table['_row'].iat[i]}"


def validate(table: pd.DataFrame) -> None:
    """Raise AnswersError on the first broken rule, naming file, row and fix."""
    for col in ("condition", "model_id", "problem_id"):
        vals = table[col].astype("string").str.strip()
        bad = np.flatnonzero((vals.isna() | (vals == "")).to_numpy())
        if len(bad):
            raise AnswersError(f"{_where(table, bad[0])}: empty {col}; every row needs one")
    sample = pd.to_numeric(table["sample"], errors="coerce")
    bad = np.flatnonzero((sample.isna() | (sample != sample.round()) | (sample < 0)).to_numpy())
    if len(bad):
        value = table["sample"].iat[bad[0]]
        value = value.item() if isinstance(value, np.generic) else value
        what = "is negative" if sample.iat[bad[0]] < 0 else "is not an integer"
        raise AnswersError(f"{_where(table, bad[0])}: sample={value!r} {what}; number the "
                           "samples 0, 1, ...")
    gold = _canonical(table["gold"])
    bad = np.flatnonzero(gold.isna().to_numpy())
    if len(bad):
        raise AnswersError(f"{_where(table, bad[0])}: empty gold answer; every row needs the gold answer")
    key = table[KEY].astype("string")
    dup = np.flatnonzero(key.duplicated(keep="first").to_numpy())
    if len(dup):
        i = dup[0]
        first = np.flatnonzero((key == key.iloc[i]).all(axis=1).to_numpy())[0]
        raise AnswersError(
            f"{_where(table, i)}: duplicate row for condition={key['condition'].iat[i]}, "
            f"model_id={key['model_id'].iat[i]}, problem_id={key['problem_id'].iat[i]}, "
            f"sample={key['sample'].iat[i]} (first at {_where(table, first)}); keep one row "
            "per (condition, model_id, problem_id, sample)"
        )
    pid = table["problem_id"].astype("string").str.strip()
    golds = pd.DataFrame({"p": pid, "g": gold}).drop_duplicates()
    clash = golds[golds["p"].duplicated(keep=False)]
    if len(clash):
        p = clash["p"].iat[0]
        values = sorted(clash.loc[clash["p"] == p, "g"].astype(str))
        i = np.flatnonzero(((pid == p) & (gold == values[-1])).to_numpy())[0]
        raise AnswersError(
            f"{_where(table, i)}: problem_id={p} has two gold answers {values[0]!r} and "
            f"{values[-1]!r}; fix the gold column so each problem has one"
        )
    if "correct" in table.columns:
        c = table["correct"]
        ok = c.isna() | c.isin([True, False, 0, 1, "True", "False", "true", "false"])
        bad = np.flatnonzero(~ok.to_numpy())
        if len(bad):
            raise AnswersError(
                f"{_where(table, bad[0])}: correct={c.iat[bad[0]]!r} is not a boolean; "
                "use true/false or drop the column"
            )
        # No answer cannot be a correct one: such a row would vote for the gold class.
        said_true = c.astype(str).str.lower().isin(["true", "1"]).to_numpy()
        bad = np.flatnonzero(said_true & _canonical(table["answer"]).isna().to_numpy())
        if len(bad):
            raise AnswersError(
                f"{_where(table, bad[0])}: correct=True but the answer is empty; a row "
                "without an answer cannot be correct: fix the answer or set correct=false"
            )


def natural_key(s: str):
    """Sort 'v2' before 'v10' and '2' before '10'."""
    import re

    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", str(s))]
