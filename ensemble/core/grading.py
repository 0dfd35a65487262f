"""Answer extraction, canonicalisation and grading (math-verify underneath).

Two kinds of problem set:

* ``aime``: answers are integers 0-999.  The canonical answer is the integer written
  without padding (``"073"`` -> ``"73"``); anything that is not such an integer keeps
  a canonical string of its own (it can still be voted for, and is never correct).
* ``math``: free-form LaTeX (MATH-500, AMC).  Equivalent forms get one canonical
  string, so majority voting counts ``\\frac12``, ``0.5`` and ``1/2`` as one answer.

Extraction takes the *last* ``\\boxed{...}`` of a completion, else lets math-verify
find the final expression of the text.  math-verify's own timeouts use SIGALRM,
which only works in the main thread; off the main thread we disable them (its
``parsing_timeout=None``) and bound the input length instead, so grading inside a
worker thread or a Ray task never raises "signal only works in main thread".
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

KINDS = ("aime", "math")
MAX_CHARS = 4000  # longest answer text handed to the parser (bounds sympy's work)


def _require_math_verify():
    try:
        import math_verify  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "grading needs math-verify: pip install 'math-verify>=0.7' "
            "(or `pip install -e .[models]`)"
        ) from exc
    return math_verify


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced.

    Examples
    --------
    >>> last_boxed(r"so \\boxed{\\frac{1}{2}} wait, \\boxed{3}")
    '3'
    >>> last_boxed("no box") is None
    True
    """
    best = None
    for cmd in ("\\boxed", "\\fbox"):
        i = text.rfind(cmd)
        if i >= 0 and (best is None or i > best[0]):
            best = (i, cmd)
    if best is None:
        return None
    i = best[0] + len(best[1])
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text) or text[i] != "{":
        return None
    depth, start = 0, i + 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[start:j]
    return None  # unbalanced: the box was cut off


def _timeouts() -> dict:
    main = threading.current_thread() is threading.main_thread()
    return {"parsing_timeout": 5 if main else None}


@lru_cache(maxsize=100_000)
def _parse(snippet: str, boxed: bool):
    mv = _require_math_verify()
    text = f"\\boxed{{{snippet}}}" if boxed else snippet
    return mv.parse(text[-MAX_CHARS:], **_timeouts())


def _canonical_expr(expr, kind: str) -> str | None:
    import sympy

    if isinstance(expr, sympy.Eq):  # "x = 5" -> 5
        expr = expr.rhs
    if isinstance(expr, (sympy.Set, sympy.Tuple, sympy.MatrixBase)) or not isinstance(
        expr, sympy.Basic
    ):
        return str(expr)
    try:
        if expr.is_number:
            val = sympy.nsimplify(expr, rational=True) if expr.is_Float else sympy.nsimplify(expr)
            if kind == "aime":
                if val.is_Integer:
                    return str(int(val))
                return str(val)
            return str(sympy.simplify(val))
        return str(sympy.simplify(expr))
    except (TypeError, ValueError, AttributeError, RecursionError):
        return str(expr)


def extract(text: str | None, kind: str = "aime") -> str | None:
    """The canonical final answer of a completion, or None when there is none.

    Parameters
    ----------
    text : str
        A model completion (or a gold answer).
    kind : {"aime", "math"}
        How to canonicalise (see module docstring).

    Examples
    --------
    >>> extract(r"Thus the answer is $\\boxed{073}$.")
    '73'
    >>> extract(r"\\boxed{\\dfrac12}", "math") == extract("0.5", "math") == "1/2"
    True
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not one of {', '.join(KINDS)}")
    if text is None:
        return None
    text = str(text)
    boxed = last_boxed(text)
    parsed = _parse(boxed, True) if boxed is not None else _parse(text.strip(), False)
    if not parsed:
        if boxed is not None and boxed.strip():
            return " ".join(boxed.split())  # unparsable but explicit: vote on the text
        return None
    return _canonical_expr(parsed[0], kind)


@dataclass(frozen=True)
class Grade:
    answer: str | None  # canonical
    correct: bool


def grade(text: str | None, gold: str, kind: str = "aime") -> Grade:
    """Extract a completion's answer and judge it against the gold answer.

    For ``aime`` correctness is equality of canonical integers; for ``math`` it is
    math-verify's ``verify`` (symbolic and numeric equivalence), falling back to
    equality of canonical strings.
    """
    answer = extract(text, kind)
    gold_c = canonical_gold(gold, kind)
    if answer is None:
        return Grade(None, False)
    if answer == gold_c:
        return Grade(answer, True)
    if kind == "math":
        mv = _require_math_verify()
        main = threading.current_thread() is threading.main_thread()
        ok = mv.verify(_parse(str(gold), True), _parse(answer, True),
                       timeout_seconds=5 if main else None)
        # Equivalent answers vote as one class: give them gold's canonical form.
        return Grade(gold_c if ok else answer, bool(ok))
    return Grade(answer, False)


@lru_cache(maxsize=100_000)
def canonical_gold(gold: str, kind: str = "aime") -> str:
    """Gold answers are canonicalised like completions (a bare gold is read as boxed)."""
    g = extract(f"\\boxed{{{gold}}}" if last_boxed(str(gold)) is None else str(gold), kind)
    return g if g is not None else str(gold).strip()


def grading_kind(kind: str, source: str, golds: Iterable[str]) -> str:
    """How answers of a problem set are graded: ``kind`` unless it is ``auto``.

    ``auto`` is ``aime`` (integers 0-999) for synthetic sets, AIME presets and any set
    whose every gold answer is such an integer, else ``math`` (LaTeX equivalence).
    Training rewards and answering use this one rule, so a variant is rewarded for what
    it is later graded on.

    Examples
    --------
    >>> grading_kind("auto", "pool.jsonl", ["12", "999"]), grading_kind("auto", "x", ["1/2"])
    ('aime', 'math')
    """
    from ensemble.core.problems import PRESETS, SYNTHETIC

    if kind != "auto":
        return kind
    source = str(source)
    if SYNTHETIC.match(source) or (source in PRESETS and PRESETS[source].kind == "aime"):
        return "aime"
    ints = all(g.isdigit() and 0 <= int(g) <= 999 for g in golds)
    return "aime" if ints else "math"
