"""Canonical answer strings: one string per value, so voting counts a value once.

Plurality voting codes each distinct (problem, answer string) as a class.  A table
that did not come from our own answering stage may write one value several ways
(``624``, ``624.0``, ``+624``, ``1,000`` vs ``1000``); left alone, the spellings of a
*wrong* value split into small classes (the gold class faces weaker rivals, so the
vote looks better than it is) and a spelling of the gold value that differs from the
gold string counts as wrong.  :func:`canonicalize` rewrites answers and golds so
that equivalent values share one string within each problem.

Modes (:data:`CANONICAL_MODES`), each merging everything the previous one merges:

``"none"``
    Surrounding blanks removed; nothing else (the behaviour before this module).
``"number"`` (default)
    Strings that are a plain finite number are written in one canonical form;
    everything else is kept as its stripped string.  No dependencies, exact.
    The rules are those of :func:`canonical_number`.
``"math"``
    The ``"number"`` rewrite, then, within each problem, strings that math-verify
    judges equivalent become one string (the gold string when equivalent to gold).
    Needs ``math-verify``; see :func:`canonicalize` for the clustering.

Null and empty (all-blank) strings become ``<NA>`` (no answer) in every mode.

This module does no I/O and imports neither torch nor math-verify at import time.
"""

from __future__ import annotations

import re
import threading
from fractions import Fraction

import pandas as pd

__all__ = ["CANONICAL_MODES", "canonicalize", "canonical_number"]

CANONICAL_MODES = ("number", "math", "none")

MAX_DIGITS = 1000  # longer numerals, or exponents beyond +-MAX_DIGITS, are left as text
REL_TOL = 1e-5  # numeric pre-filter of the math mode: looser than math-verify's own

# Thousands separators: "1,000", LaTeX "1{,}000", "1\,000" (thin space), "1,\!000".
_SEP = r"(?:,\\!|\{,\}|\\,|,)"
_NUMBER = re.compile(
    r"(?P<sign>[+\-\u2212]?)"
    r"(?:"
    rf"(?P<int>[0-9]+|[1-9][0-9]{{0,2}}(?P<sep>{_SEP})[0-9]{{3}}(?:(?P=sep)[0-9]{{3}})*)"
    r"(?:\.(?P<frac>[0-9]*))?"
    r"|\.(?P<frac_only>[0-9]+)"
    r")"
    r"(?:[eE](?P<exp>[+\-\u2212]?[0-9]+))?"
)
_RATIO = re.compile(r"(?P<sign>[+\-\u2212]?)(?P<num>[0-9]+)[ \t]*/[ \t]*(?P<den>[0-9]+)")


def _parse_number(s: str) -> Fraction | None:
    """The exact value of a stripped numeral, or None when it is not one."""
    m = _NUMBER.fullmatch(s)
    if m is not None:
        int_part = m["int"] or ""
        if m["sep"]:
            int_part = int_part.replace(m["sep"], "")
        frac = m["frac"] if m["frac"] is not None else (m["frac_only"] or "")
        digits = (int_part + frac).lstrip("0")
        exp_text = (m["exp"] or "0").replace("\u2212", "-")
        if len(digits) > MAX_DIGITS or len(exp_text.lstrip("+-")) > 6:
            return None
        exp = int(exp_text) - len(frac)
        if not digits:
            return Fraction(0)
        # The value is digits * 10**exp; bound the size of what we would write out.
        if abs(exp) > MAX_DIGITS:
            return None
        mantissa = int(digits)
        value = Fraction(mantissa * 10**exp) if exp >= 0 else Fraction(mantissa, 10**-exp)
        return -value if m["sign"] in ("-", "\u2212") else value
    m = _RATIO.fullmatch(s)
    if m is not None:
        num, den = m["num"], m["den"]
        if len(num) > MAX_DIGITS or len(den) > MAX_DIGITS or int(den) == 0:
            return None
        value = Fraction(int(num), int(den))
        return -value if m["sign"] in ("-", "\u2212") else value
    return None


def _format_number(value: Fraction) -> str:
    """Integers plain, terminating fractions as decimals, others as ``p/q``."""
    p, q = value.numerator, value.denominator
    if q == 1:
        return str(p)
    rest, twos, fives = q, 0, 0
    while rest % 2 == 0:
        rest, twos = rest // 2, twos + 1
    while rest % 5 == 0:
        rest, fives = rest // 5, fives + 1
    if rest != 1:
        return f"{p}/{q}"
    places = max(twos, fives)
    scaled = str(abs(p) * 10**places // q).rjust(places + 1, "0")
    text = f"{scaled[:-places]}.{scaled[-places:].rstrip('0')}"
    return f"-{text}" if p < 0 else text


def canonical_number(text: str) -> str | None:
    """The canonical form of a numeral, or None when ``text`` is not a plain number.

    Parameters
    ----------
    text : str
        One answer; surrounding blanks are ignored.

    Returns
    -------
    str or None
        ``None`` unless the whole stripped string is one of

        * a decimal numeral: optional sign (``+``, ``-`` or the Unicode minus),
          digits with optional leading zeros, optional ``.`` and fraction digits
          (``5.``, ``.5`` and ``05.50`` are numerals), optional exponent
          ``e``/``E`` with optional sign;
        * the same with thousands separators in strict groups of three digits,
          one kind per numeral: ``1,000``, ``1{,}000``, ``1\\,000`` or ``1,\\!000``
          (the first group is 1-3 digits without a leading zero, so ``1,23``,
          ``0,624`` and ``1, 000`` are *not* numbers - they may be lists);
        * a ratio of two unsigned integers, ``a/b`` with ``b != 0`` and an optional
          sign in front (``1/2``, ``-3 / 4``).  It counts as a number because it
          is one exact value and math-verify agrees (``1/2`` equals ``0.5``);
          ``\\frac{1}{2}``, ``1.5/2`` or ``1/2/3`` are left to the ``"math"`` mode.

        No units, ``%``, ``$``, LaTeX wrappers, spaces inside the numeral, ``_``
        separators, ``inf``/``nan``, hex or non-ASCII digits; numerals of more than
        ``MAX_DIGITS`` digits or exponents beyond it are left as text too.

        The value is exact (:class:`fractions.Fraction`) and written as: an
        integer in plain digits (``-0`` is ``0``); a value with a terminating
        decimal expansion as the shortest decimal with a leading digit
        (``0.5``, ``-12.25``); any other rational as ``p/q`` in lowest terms
        (``1/3``, ``-2/7``).  Distinct values never share a form.

    Examples
    --------
    >>> [canonical_number(s) for s in ["624", " 624.0 ", "+624", "0624", "6.24e2"]]
    ['624', '624', '624', '624', '624']
    >>> [canonical_number(s) for s in ["1,000", "1000", "1{,}000.50", ".5", "1/2", "2/6"]]
    ['1000', '1000', '1000.5', '0.5', '0.5', '1/3']
    >>> [canonical_number(s) for s in ["-0.0", "1e-3", "625", "1,23", "50%", "x"]]
    ['0', '0.001', '625', None, None, None]
    """
    value = _parse_number(str(text).strip())
    return None if value is None else _format_number(value)


def _strip(values: pd.Series) -> pd.Series:
    out = values.astype("string").str.strip()
    return out.mask(out == "", pd.NA)


def _number_series(values: pd.Series) -> pd.Series:
    uniq = values.dropna().unique()
    table = {}
    for s in uniq:
        c = canonical_number(s)
        table[s] = s if c is None else c
    return values.map(table, na_action="ignore").astype("string")


def canonicalize(
    answers: pd.Series,
    gold: pd.Series,
    problem_ids: pd.Series,
    mode: str = "number",
) -> tuple[pd.Series, pd.Series]:
    """Rewrite answers and golds so that equivalent values share one string per problem.

    Parameters
    ----------
    answers, gold, problem_ids : pandas.Series
        One entry per row of the answers table, aligned by position (same length).
        Values are read as strings; nulls and blank strings mean no answer.
    mode : {"number", "math", "none"}
        ``"none"`` strips blanks only; ``"number"`` also writes every plain
        numeral in the canonical form of :func:`canonical_number`; ``"math"``
        applies ``"number"`` and then merges, per problem, the strings that
        math-verify judges equivalent (see Notes).

    Returns
    -------
    (answers, gold) : tuple of pandas.Series
        ``string`` dtype, same index and names as the inputs, ``<NA>`` for null or
        blank entries.  Golds are rewritten by the same rules, so a gold ``0624``
        and an answer ``624`` stay equal.

    Raises
    ------
    ValueError
        For an unknown mode or inputs of different lengths.
    ImportError
        For mode ``"math"`` when math-verify is not installed (with the pip line).

    Notes
    -----
    The ``"math"`` mode clusters the distinct strings of each problem.  They are
    visited gold first, then answers by decreasing count (ties by string), each
    parsed once (math-verify's ``parse`` of the string boxed, through the cached
    parser of :mod:`ensemble.core.grading`; the content of a ``\\boxed{...}`` is used when
    there is one).  Strings whose parses are identical sympy objects are merged
    outright (union-find).  Each remaining string is then compared with
    ``verify(representative, string)`` against the representatives of the classes
    found so far, in order, and joins the first one it is equivalent to - the gold
    class first, so an answer equivalent to gold becomes the gold string - or
    becomes a new representative.  A string never joins through a third one, so
    math-verify's tolerant (non-transitive) float comparison cannot chain
    distinct values together.  A class is written as its representative: the gold
    string, else its most frequent spelling.

    To stay fast, a comparison is skipped when math-verify cannot call the pair
    equal: both parses are plain expressions whose values (every free symbol set
    to a fixed pseudo-random real) differ by more than ``REL_TOL`` relative, or
    finite sets, tuples or intervals whose sorted element values differ in number
    or by more than that (a single value counts as a one-element set).
    Relations, bare symbols, percentages, matrices and the like are always
    compared.  So 200 distinct integers cost no ``verify`` call at all, and 200
    distinct MATH-style answers a few dozen.  Unparsable strings only
    match themselves.  In the main thread math-verify's own 5 s timeouts apply;
    in other threads they are off (signals), as in :mod:`ensemble.core.grading`.

    Examples
    --------
    >>> a = pd.Series([" 624", "624.0", "+624", "625", "1,000", "1000", "seven", None])
    >>> g = pd.Series(["0624"] * 4 + ["1000"] * 4)
    >>> p = pd.Series(["p1"] * 4 + ["p2"] * 4)
    >>> ans, gold = canonicalize(a, g, p)
    >>> ans.tolist()
    ['624', '624', '624', '625', '1000', '1000', 'seven', <NA>]
    >>> gold.unique().tolist()
    ['624', '1000']
    >>> canonicalize(a, g, p, mode="none")[0].tolist()[:3]
    ['624', '624.0', '+624']
    """
    if mode not in CANONICAL_MODES:
        raise ValueError(
            f"canonical mode {mode!r} is not one of {', '.join(CANONICAL_MODES)}"
        )
    if not len(answers) == len(gold) == len(problem_ids):
        raise ValueError(
            f"answers, gold and problem_ids must have one entry per row; got lengths "
            f"{len(answers)}, {len(gold)} and {len(problem_ids)}"
        )
    ans, gld = _strip(answers), _strip(gold)
    if mode != "none":
        ans, gld = _number_series(ans), _number_series(gld)
    if mode == "math":
        ans, gld = _math_merge(ans, gld, problem_ids)
    ans.index, gld.index = answers.index, gold.index
    ans.name, gld.name = answers.name, gold.name
    return ans, gld


# ----------------------------------------------------------------------------- math


def _require_math_verify():
    try:
        import math_verify
    except ImportError as exc:
        raise ImportError(
            "canonicalize(mode='math') needs math-verify: pip install 'math-verify>=0.7' "
            "(or `pip install -e .[models]`), or use mode='number'"
        ) from exc
    return math_verify


def _math_merge(ans: pd.Series, gld: pd.Series, problem_ids: pd.Series):
    mv = _require_math_verify()
    from ensemble.core.grading import _parse, last_boxed

    def parsed(s: str) -> list:
        if _INTEGER.fullmatch(s):  # what parse() gives for an integer, without parsing
            import sympy

            return [sympy.Integer(int(s)), s]
        inner = last_boxed(s)
        return _parse(inner if inner is not None else s, True)

    main = threading.current_thread() is threading.main_thread()
    timeout = 5 if main else None

    def verify(rep, other) -> bool:
        return bool(mv.verify(rep, other, timeout_seconds=timeout))

    pids = pd.Series(problem_ids).astype("string").fillna("\x00<NA>").to_numpy()
    a_vals = ans.to_numpy(dtype=object)
    g_vals = gld.to_numpy(dtype=object)
    rows_of: dict = {}
    for i, p in enumerate(pids):
        rows_of.setdefault(p, []).append(i)

    a_out = a_vals.copy()
    g_out = g_vals.copy()
    for rows in rows_of.values():
        golds = sorted({g_vals[i] for i in rows if g_vals[i] is not pd.NA})
        counts: dict[str, int] = {}
        for i in rows:
            s = a_vals[i]
            if s is not pd.NA and s not in golds:
                counts[s] = counts.get(s, 0) + 1
        order = golds + sorted(counts, key=lambda s: (-counts[s], s))
        target = _cluster(order, parsed, verify)
        for i in rows:
            if a_vals[i] is not pd.NA:
                a_out[i] = target[a_vals[i]]
            if g_vals[i] is not pd.NA:
                g_out[i] = target[g_vals[i]]
    return (pd.Series(a_out, dtype="string"), pd.Series(g_out, dtype="string"))


_INTEGER = re.compile(r"-?[0-9]{1,18}")  # canonical integers (no sign "+", no padding)


def _cluster(order: list[str], parsed, verify) -> dict[str, str]:
    """Map each string of ``order`` to its class representative (see canonicalize)."""
    parent = list(range(len(order)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    parses = [parsed(s) for s in order]
    exprs = [_first_expr(p) for p in parses]
    # 1. identical parses merge without verify (the earlier string stays the root).
    seen: dict = {}
    for i, e in enumerate(exprs):
        if e is None or _has_undefined(e):
            continue
        try:
            j = seen.setdefault(e, i)
        except TypeError:  # unhashable
            continue
        if j != i:
            parent[i] = find(j)
    # 2. the remaining roots against the representatives so far, first match wins.
    keys = [_numeric_key(e) for e in exprs]
    reps: list[int] = []
    for i in range(len(order)):
        if find(i) != i:
            continue
        if not parses[i]:
            reps.append(i)  # unparsable: only equal strings share its class
            continue
        for r in reps:
            if not parses[r] or _far_apart(keys[r], keys[i]):
                continue
            if verify(parses[r], parses[i]):
                parent[i] = r
                break
        else:
            reps.append(i)
    return {s: order[find(i)] for i, s in enumerate(order)}


def _first_expr(parse_result: list):
    import sympy

    for x in parse_result:
        if isinstance(x, (sympy.Basic, sympy.MatrixBase)):
            return x
    return None


def _has_undefined(e) -> bool:
    import sympy

    try:
        return bool(e.has(sympy.nan, sympy.zoo))
    except Exception:
        return True


_POINT_CACHE: dict[str, float] = {}


def _point(name: str) -> float:
    """A fixed pseudo-random value in (0.5, 1.5) for the symbol named ``name``."""
    if name not in _POINT_CACHE:
        import zlib

        _POINT_CACHE[name] = 0.5 + (zlib.crc32(name.lower().encode()) % 999_983) / 999_983
    return _POINT_CACHE[name]


def _scalar_value(e) -> complex | None:
    """The value of a plain expression (symbols at fixed points), else None.

    None for anything math-verify compares specially: bare symbols or products of
    symbols (``abc`` vs ``a*b*c``, ``e`` vs E), percentages, undefined functions,
    non-expressions and non-finite or non-evaluable values.
    """
    import sympy

    if not isinstance(e, sympy.Expr) or isinstance(e, sympy.Symbol):
        return None
    try:
        if e.is_Rational:
            return complex(Fraction(int(e.p), int(e.q)))
        if e.has(sympy.UnevaluatedExpr) or e.atoms(sympy.core.function.AppliedUndef):
            return None
        if isinstance(e, sympy.Mul) and all(
            isinstance(x, sympy.Symbol) or x == sympy.E for x in e.args
        ):
            return None
        free = e.free_symbols
        if free:
            e = e.subs({s: _point(s.name) for s in free})
        v = complex(e.evalf(30))
    except Exception:
        return None
    if v != v or abs(v) == float("inf"):
        return None
    return v


def _numeric_key(e) -> tuple[complex, ...] | None:
    """Values that any math-verify match of ``e`` must share, or None (no pruning).

    A plain expression gives its value; a finite set or tuple its elements' values,
    an interval its two endpoints (math-verify compares an open interval with a
    pair), sorted, real only.  Relations, matrices, unions, bare symbols and the
    like give None: they are always compared.
    """
    import sympy

    if e is None:
        return None
    if isinstance(e, sympy.Expr):
        v = _scalar_value(e)
        return None if v is None else (v,)
    if isinstance(e, sympy.Interval):
        parts = [e.start, e.end]
    elif isinstance(e, (sympy.FiniteSet, sympy.Tuple)):
        parts = list(e.args)
    else:
        return None
    values = [_scalar_value(x) for x in parts]
    if not values or any(v is None or v.imag != 0 for v in values):
        return None
    return tuple(sorted(values, key=lambda v: v.real))


def _far_apart(a: tuple | None, b: tuple | None) -> bool:
    """True when no math-verify equivalence can hold between keys ``a`` and ``b``.

    Sorted matching is the best one on the real line, so comparing sorted values
    pairwise (within REL_TOL of the largest magnitude) is a safe test for sets.
    """
    if a is None or b is None:
        return False
    if len(a) != len(b):
        return True
    if len(a) == 1:
        return abs(a[0] - b[0]) > REL_TOL * max(1.0, abs(a[0]), abs(b[0]))
    scale = REL_TOL * max(1.0, *(abs(v) for v in a), *(abs(v) for v in b))
    return any(abs(x - y) > scale for x, y in zip(a, b))
