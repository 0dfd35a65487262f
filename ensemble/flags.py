"""Command-line flags made from the stages' config declarations.

Each option's name, type, allowed values, default and help live once, on the config
field (:func:`ensemble.core.config.setting`); :func:`config_options` turns the fields a
command exposes into click options, as TRL's ``HfArgumentParser`` does with its
dataclasses, and :func:`merge` lays the flags a user gave over a config file's table.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import click

__all__ = ["config_options", "merge"]


def _base_type(tp):
    """``T`` of ``T | None``; the item type of ``list[T]`` / ``tuple[T, ...]``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    return tp


def _option(cls, f: dataclasses.Field, hint, show_defaults: bool, extra: dict):
    meta = f.metadata
    tp = _base_type(hint)
    kw: dict[str, Any] = {"help": meta.get("help") or None}
    origin = typing.get_origin(tp)
    if tp is bool:
        kw.update(is_flag=True, default=(f.default if show_defaults else None))
    else:
        if origin in (list, tuple):
            kw["multiple"] = True
            tp = typing.get_args(tp)[0]
        if meta.get("choices"):
            kw["type"] = click.Choice([str(c) for c in meta["choices"]])
        elif tp is Path:
            kw["type"] = click.Path(path_type=Path)
        elif tp in (int, float):
            kw["type"] = tp
        if show_defaults and f.default is not dataclasses.MISSING:
            kw["default"] = f.default
            kw["show_default"] = f.default is not None
        else:
            kw["default"] = None
            d = f.default
            if d not in (dataclasses.MISSING, None, (), "") and "[default" not in (kw["help"] or ""):
                kw["help"] = f"{kw['help'] or ''} [default: {d}]".strip()
    kw.update(extra)
    return click.option(f"--{f.name.replace('_', '-')}", f.name, **kw)


def config_options(cls, names: tuple[str, ...] | list[str], *, show_defaults: bool = False,
                   **extra: dict):
    """A decorator adding one click option per field of ``cls`` in ``names``, in order.

    Parameters
    ----------
    cls : StrictConfig subclass
        The stage's config; each field's ``setting`` gives its help and choices.
    names : sequence of str
        The fields the command exposes as flags (``--k-min`` for ``k_min``).
    show_defaults : bool
        Give each option the field's default (commands without a config file); otherwise
        every default is None, so that only the flags a user typed override the file.
    **extra : dict
        Per-field click keywords that differ from the declaration (rare).
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = [n for n in names if n not in fields]
    if unknown:  # a programming error: the CLI names a field the config does not have
        raise TypeError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")

    def decorate(func):
        for name in reversed(list(names)):
            func = _option(cls, fields[name], hints[name], show_defaults,
                           extra.get(name, {}))(func)
        return func

    return decorate


def merge(config_file: Path | None, section: str, flags: dict[str, Any]) -> dict[str, Any]:
    """A config file's ``section`` (with an experiment file's shared keys) under the flags
    a user gave (None and empty multiple options are not given).

    ``base = "demo"`` with the file's ``[pretrain]`` table becomes that model's directory,
    as ``ensemble run`` resolves it.
    """
    from ensemble.core.config import read_toml
    from ensemble.core.models import DEMO_BASE

    data = read_toml(config_file, section) if config_file else {}
    data.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in flags.items()
                 if v is not None and v != ()})
    if data.get("base") == DEMO_BASE:
        from ensemble.pipeline import resolve_base

        whole = read_toml(config_file) if config_file else {}
        data["base"] = resolve_base(DEMO_BASE, whole.get("pretrain") or {})
    return data
