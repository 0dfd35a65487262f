"""Strict construction of the stages' config dataclasses from TOML tables and flags.

A config value comes from a TOML file or a flag; a wrong one (``bootstrap = "many"``,
``variants = "two"``, a misspelt key) must stop the command before anything is loaded
or written, with the key, the value and what it should be, instead of a TypeError deep
inside a stage or a silently ignored setting.  :func:`from_dict` is the one place that
checks unknown keys, missing required keys and the type of every value against the
dataclass's annotations.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

__all__ = ["from_dict", "check_types"]

_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
          Path: "a path (string)", dict: "a table"}


def _accepts(tp, value) -> bool:
    """Does ``value`` fit annotation ``tp`` (as the dataclass will then normalise it)?"""
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(t, value) for t in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if tp is Path:
        return isinstance(value, (str, Path))
    if origin in (list, tuple):
        inner = typing.get_args(tp)[0] if typing.get_args(tp) else Any
        # A single item stands for a one-item list (the configs normalise it).
        if isinstance(value, (list, tuple)):
            return all(_accepts(inner, v) for v in value)
        return _accepts(inner, value)
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    return True  # an annotation this checker does not know: the dataclass decides


def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        parts = [_describe(t) for t in typing.get_args(tp) if t is not type(None)]
        return " or ".join(parts) + (" (or left out)" if type(None) in typing.get_args(tp)
                                     else "")
    if origin in (list, tuple):
        inner = typing.get_args(tp)[0] if typing.get_args(tp) else Any
        return f"a list of {_describe(inner).removeprefix('a ').removeprefix('an ')}s"
    return _NAMES.get(origin or tp, getattr(tp, "__name__", str(tp)))


def check_types(cls, data: dict[str, Any], what: str) -> None:
    """Raise ValueError naming the first key of ``data`` whose value has the wrong type.

    Parameters
    ----------
    cls : dataclass type
        The config class whose annotations give the types.
    data : dict
        Key-value pairs for ``cls`` (unknown keys are ignored here).
    what : str
        Where the keys come from, for the message (``"[vote]"``).

    Examples
    --------
    >>> from ensemble.config import VoteConfig
    >>> check_types(VoteConfig, {"bootstrap": "many"}, "[vote]")
    Traceback (most recent call last):
    ...
    ValueError: [vote] bootstrap = 'many' must be an integer, not a string
    """
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        tp = hints.get(key)
        if tp is not None and not _accepts(tp, value):
            got = _NAMES.get(type(value), type(value).__name__)
            if isinstance(value, (list, tuple)):
                got = "a list"
            raise ValueError(f"{what} {key} = {value!r} must be {_describe(tp)}, not {got}")


def from_dict(cls, data: dict[str, Any], what: str, required: tuple[str, ...] = (),
              missing_hint: str = "") -> Any:
    """``cls(**data)`` after checking unknown keys, required keys and every value's type.

    Parameters
    ----------
    cls : dataclass type
    data : dict
        The merged config-file table and flags.
    what : str
        How the table is named in messages (``"[train]"``, ``"answer config"``).
    required : tuple of str
        Keys that must be present and non-empty.
    missing_hint : str
        Appended to the missing-key message (how to give them).
    """
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {what} key(s) {', '.join(unknown)}; known keys: "
                         f"{', '.join(sorted(names))}")
    missing = [k for k in required if data.get(k) in (None, "")]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}{missing_hint.format(key=missing[0])}")
    check_types(cls, data, what)
    return cls(**data)
