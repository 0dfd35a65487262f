"""The one strict config base of every stage, and the TOML files configs come from.

A config value comes from a TOML file or a flag; a wrong one (``bootstrap = "many"``,
``variants = "two"``, a misspelt key) must stop the command before anything is loaded
or written, with the key, the value and what it should be, instead of a TypeError deep
inside a stage or a silently ignored setting.

Every stage's config is a dataclass deriving from :class:`StrictConfig` whose fields
are declared with :func:`setting`: the default, the help text (which the command line
shows for the field's flag, see ``ensemble.flags``), the allowed values, and whether
the key only says *how* a run executes (``run_only``: workers, launcher, shard, ...) and
never *what* its results are, so that a rerun may change it without being refused.
That declaration is the one place each of these facts lives.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, ClassVar

__all__ = ["setting", "StrictConfig", "from_dict", "check_keys", "check_types", "check_seed", "read_toml", "dump_toml",
           "SHARED_KEYS"]

SHARED_KEYS = ("out", "base", "seed")  # top-level keys of an experiment file, for every stage

_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
          Path: "a path (string)", dict: "a table"}


def setting(default: Any = dataclasses.MISSING, help: str = "", *,
            choices: tuple | None = None, run_only: bool = False,
            default_factory: Any = dataclasses.MISSING) -> Any:
    """A config field with its help text, allowed values and execution-only flag.

    Parameters
    ----------
    default, default_factory
        As for :func:`dataclasses.field`.
    help : str
        One line for ``--help``; say why the default is what it is.
    choices : tuple, optional
        The allowed values; checked by :class:`StrictConfig` and offered by the flag.
    run_only : bool
        The key decides who does the work and how fast (workers, launcher, shard), never
        what the results are: a rerun may change it, and no hash or check includes it.
    """
    meta = {"help": help, "choices": choices, "run_only": run_only}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class StrictConfig:
    """Mixin of the stages' config dataclasses: strict construction and plain dicts.

    Class attributes a subclass may set: ``TABLE`` (how its table is named in messages,
    ``"[vote]"``), ``REQUIRED`` (keys that must be given, with ``MISSING_HINT`` appended
    to the message naming a missing one), ``KNOWN_HINT`` (what the message about an
    unknown key lists instead of the known keys).
    """

    TABLE: ClassVar[str] = "config"
    REQUIRED: ClassVar[tuple[str, ...]] = ()
    MISSING_HINT: ClassVar[str] = ""
    KNOWN_HINT: ClassVar[str | None] = None  # replaces "known keys: ..." in the message

    def __post_init__(self):
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ValueError(f"{f.name}={value!r} is not one of "
                                 f"{', '.join(map(str, choices))}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Build from a dict (a TOML table merged with flags): unknown keys, missing
        required keys and values of the wrong type are errors naming the key."""
        return from_dict(cls, data, cls.TABLE, cls.REQUIRED, cls.MISSING_HINT, cls.KNOWN_HINT)

    def to_dict(self) -> dict[str, Any]:
        """Plain TOML/JSON values: paths as strings, tuples as lists."""
        return {k: _plain(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def run_only_keys(cls) -> frozenset[str]:
        """The keys declared ``run_only``: how a run executes, never what it computes."""
        return frozenset(f.name for f in dataclasses.fields(cls) if f.metadata.get("run_only"))

    @classmethod
    def results_view(cls, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` without the run-only keys: what two runs must agree on."""
        skip = cls.run_only_keys()
        return {k: v for k, v in data.items() if k not in skip}


def check_seed(seed: int) -> None:
    """Seeds feed numpy's SeedSequence, which takes integers from 0 up."""
    if seed < 0:
        raise ValueError(f"seed={seed} must be 0 or more")


def _plain(v):
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v


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
    >>> from ensemble.voting.config import VoteConfig
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


def check_keys(cls, data: dict[str, Any], what: str, known_hint: str | None = None,
               hidden: tuple[str, ...] = ()) -> None:
    """Raise ValueError for a key of ``data`` that ``cls`` does not have.

    ``known_hint`` replaces the list of known keys in the message; ``hidden`` names keys
    left out of that list (set by the pipeline, never by the user).
    """
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        known = known_hint or f"known keys: {', '.join(sorted(names - set(hidden)))}"
        raise ValueError(f"unknown {what} key(s) {', '.join(unknown)}; {known}")


def from_dict(cls, data: dict[str, Any], what: str, required: tuple[str, ...] = (),
              missing_hint: str = "", known_hint: str | None = None) -> Any:
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
    known_hint : str, optional
        Said instead of the known keys when a key is unknown.
    """
    check_keys(cls, data, what, known_hint)
    missing = [k for k in required if data.get(k) in (None, "")]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}{missing_hint.format(key=missing[0])}")
    check_types(cls, data, what)
    return cls(**data)


# --- TOML files -------------------------------------------------------------------------

def read_toml(path: Path, section: str | None = None) -> dict[str, Any]:
    """A TOML config file as a dict (one section of it when ``section`` is given).

    A run directory stands for its ``config.toml``.  With ``section``, an experiment
    file's shared top-level keys (:data:`SHARED_KEYS`) come with the section, so
    ``ensemble train EXPERIMENT.toml`` trains what ``ensemble run`` would.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / "config.toml").is_file():
            raise ValueError(f"{path} is a directory without config.toml; give a config "
                             "file (.toml) or a run directory made by `ensemble run`")
        path = path / "config.toml"  # a run directory: resume it with its own config
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: config file not found") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file; a config is TOML text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML ({exc})") from None
    if section is not None and section in data:
        shared = {k: data[k] for k in SHARED_KEYS if k in data}
        return {**shared, **data[section]}
    return data


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"{v} cannot be written to TOML")
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, (str, Path)):
        s = str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{s}"'
    raise ValueError(f"{v!r} ({type(v).__name__}) cannot be written to TOML")


def dump_toml(data: dict[str, Any]) -> str:
    """Flat TOML for a dict of scalars, lists and one level of tables (None is left out)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items()
             if not isinstance(v, dict) and v is not None]
    for name, table in data.items():
        if isinstance(table, dict):
            lines += ["", f"[{name}]"]
            for k, v in table.items():
                if isinstance(v, dict):
                    raise ValueError(f"[{name}].{k}: nested tables are not supported")
                if v is not None:
                    lines.append(f"{k} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"
