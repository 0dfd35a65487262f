"""Balanced shards: large answering units are split into parts, and parts merged back.

Units are one per (condition, model); the repetition control's are large (200 samples x
30 problems = 6,000 requests against 30 for a variant), so dealing whole units to shards
leaves one shard with most of the work.  :func:`shard_pieces` cuts every unit larger than
a shard's fair share (total requests / shards) into parts of consecutive requests, in the
unit's problem-major order, at multiples of :data:`ALIGN`, and deals all pieces to the
shards largest first, each to the least loaded (deterministic: every shard computes the
same plan).

A part's answers are written to ``answers/<condition>/.parts/<model>.r<start>-<stop>.parquet``
(a hidden directory, which pandas/pyarrow and ``datasets`` skip, so ``answers/`` still
reads as whole units only), with the unit's provenance plus its range.  Whoever writes a
unit's last part merges the parts, in order, into the unit's one file
``answers/<condition>/<model>.parquet`` -- atomically, under a per-unit lock, re-checking
that every part is there -- and deletes them; every answering run also merges complete
part sets it finds (a shard killed between its last part and the merge).

Answers do not change: every request's seed depends on (seed, condition, model, problem,
sample) only, vLLM gives the i-th child of an n-request seed s+i, and the HF backend
seeds each chunk of :data:`ALIGN` requests of a unit from its first request -- parts
start at multiples of :data:`ALIGN`, so a part's chunks are the whole unit's chunks.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from eval.backends import HF_BATCH

# Part boundaries: the HF backend's chunk size, so its chunks (and the seeds they are
# sampled with) are the same whether a unit is split or not.
ALIGN = HF_BATCH


def requests_of(unit, problems: int) -> int:
    return unit.samples * problems


def split_unit(unit, problems: int, target: int) -> list:
    """``unit`` as parts of about ``target`` requests (boundaries at multiples of ALIGN),
    or ``[unit]`` when it is no larger than ``target``.

    Examples
    --------
    >>> from eval.units import Unit
    >>> [(p.start, p.stop) for p in split_unit(Unit("repetition", "v000", None, 200), 30, 3750)]
    [(0, 3008), (3008, 6000)]
    """
    n = requests_of(unit, problems)
    k = min(math.ceil(n / max(target, 1)), n // ALIGN)
    if k <= 1:
        return [unit]
    cuts = [0] + [round(n * j / k / ALIGN) * ALIGN for j in range(1, k)] + [n]
    return [type(unit)(unit.condition, unit.model_id, unit.adapter, unit.samples, a, b)
            for a, b in zip(cuts, cuts[1:]) if b > a]


def shard_pieces(units: list, problems: int, shards: int) -> list[list]:
    """The pieces (whole units or parts) of each shard, each shard's in plan order.

    One shard: the units as they are.  Otherwise units above the fair share are split
    and pieces dealt largest first to the least loaded shard (ties: the lower index).
    """
    if shards == 1:
        return [list(units)]
    total = sum(requests_of(u, problems) for u in units)
    target = math.ceil(total / shards)
    pieces = [p for u in units for p in split_unit(u, problems, target)]
    order = {id(p): i for i, p in enumerate(pieces)}
    load = [0] * shards
    out: list[list] = [[] for _ in range(shards)]
    for p in sorted(pieces, key=lambda p: (-_size(p, problems), order[id(p)])):
        s = min(range(shards), key=lambda i: (load[i], i))
        out[s].append(p)
        load[s] += _size(p, problems)
    return [sorted(o, key=lambda p: order[id(p)]) for o in out]


def _size(piece, problems: int) -> int:
    n = requests_of(piece, problems)
    return (piece.stop - piece.start) if piece.is_part else n


def parts_by_unit(pieces_per_shard: list[list]) -> dict:
    """``{whole unit: [its parts in order]}`` for every split unit of the plan."""
    parts: dict = {}
    for shard in pieces_per_shard:
        for p in shard:
            if p.is_part:
                parts.setdefault(p.whole, []).append(p)
    return {u: sorted(ps, key=lambda p: p.start) for u, ps in parts.items()}


def merge_parts(out: Path, whole, parts: list, provenance_of, is_done) -> bool:
    """Merge ``parts`` into ``whole``'s answers file once all are written; True if the
    unit's file is complete afterwards.

    ``provenance_of(unit)`` gives a unit's provenance and ``is_done(path, provenance)``
    whether a file holds it.  Runs under the unit's lock, waiting for a concurrent merger
    (a second shard finishing the other last part) rather than skipping it.
    """
    import pandas as pd

    from ensemble.core.files import LockedError, exclusive, write_parquet
    from eval.units import PROVENANCE_KEY

    final = whole.path(out)
    lock = final.parent / ".parts" / f".{whole.model_id}.merge.lock"
    for _ in range(600):
        try:
            with exclusive(lock, f"the merge of {whole.key}"):
                if is_done(final, provenance_of(whole)):
                    _remove(parts, out)
                    return True
                if not all(_part_done(p, out, provenance_of, is_done) for p in parts):
                    return False
                df = pd.concat([pd.read_parquet(p.path(out)) for p in parts], ignore_index=True)
                write_parquet(final, df, {PROVENANCE_KEY: json.dumps(provenance_of(whole),
                                                                     sort_keys=True)})
                _remove(parts, out)
                return True
        except LockedError:
            time.sleep(0.1)
    raise RuntimeError(f"{lock}: held for a minute by another process; delete it if no "
                       "answering process is running")


def _part_done(part, out, provenance_of, is_done) -> bool:
    try:
        return is_done(part.path(out), provenance_of(part))
    except ValueError:  # a stale part of another plan: not this one's
        return False


def _remove(parts: list, out: Path) -> None:
    for p in parts:
        Path(p.path(out)).unlink(missing_ok=True)
