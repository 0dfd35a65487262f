"""Atomic writes and small helpers shared by every stage's files.

A stage's output either exists complete or not at all: each file is written to a
temporary name in the same directory and renamed into place (rename is atomic on
POSIX), so an interrupted run never leaves a half-written file that looks finished.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def table_read_errors(path: Path, error: type[Exception]) -> Iterator[None]:
    """Turn a data file's decoding and parsing errors into one ``error`` naming the file.

    Answers and problem sets are read from the same formats and fail the same ways: not
    UTF-8 (say how to fix it), or not what the suffix promises (name the suffix).
    """
    try:
        yield
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as "
                    "UTF-8, or as .parquet") from None
    except (ValueError, OSError) as exc:
        raise error(f"{path}: cannot be read as {path.suffix.lower()[1:]} ({exc})") from exc


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The file gets the permissions of any other new file (0666 less the umask), not the
    0600 of a temporary file: run directories are shared between users and nodes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_owner_tag()}", suffix=".tmp",
                               dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _owner_tag() -> str:
    """``~pid@host~``: who writes a temporary file, so a stale one can be recognised."""
    import socket

    return f"~{os.getpid()}@{socket.gethostname()}~"


def remove_stale_temps(root: Path) -> list[Path]:
    """Delete the temporary files under ``root`` that a dead process of this host left.

    A process killed while writing (``kill -9``, a lost node) leaves its temporary file
    beside the target; :func:`atomic_path` names each with its writer's pid and host, so
    only files of processes that no longer exist here are removed (another host's, or
    a live writer's, are left alone).

    Returns
    -------
    list of Path
        What was removed.
    """
    import re
    import socket

    host, removed = socket.gethostname(), []
    root = Path(root)
    if not root.is_dir():
        return removed
    for p in root.rglob(".*.tmp"):
        m = re.search(r"~(\d+)@(.+?)~", p.name)
        if m and m.group(2) == host and not pid_alive(int(m.group(1))):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


class LockedError(ValueError):
    """Another live process is writing the same output."""


def pid_alive(pid) -> bool:
    """Whether a process of this pid exists on this host."""
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def exclusive(lock: Path, what: str) -> Iterator[None]:
    """Hold ``lock`` while writing ``what``: a second writer is refused, naming the first.

    The lock file records the holder's host and pid.  A lock left by a process of this
    host that no longer exists (killed with -9, say) is stale and taken over; a lock of
    another host cannot be checked from here and is respected.
    """
    import socket
    import time

    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            try:
                owner = json.loads(lock.read_text())
            except (ValueError, OSError):
                owner = {}
            if owner.get("host") == me["host"] and not pid_alive(owner.get("pid")):
                lock.unlink(missing_ok=True)  # stale: its process is gone
                continue
            raise LockedError(
                f"{what} is being written by another process (host {owner.get('host')}, "
                f"pid {owner.get('pid')}); wait for it to finish, or delete {lock} if that "
                "process is gone") from None
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        break
    else:
        raise LockedError(f"could not take {lock} for {what}; try again")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def sibling_lock(path: Path) -> Path:
    """The lock of an output directory that is replaced as a whole: beside it, hidden."""
    path = Path(path)
    return path.parent / f".{path.name}.lock"


def check_output_dir(path: Path, kind: str, marker: str) -> None:
    """Refuse an output directory that is a file or holds someone else's files.

    Called before any work, so a wrong ``--out`` fails at once; ``marker`` is a file
    every output set of this kind holds (``vote.json`` for a votes directory).
    """
    path = Path(path)
    check_writable_dir(path)
    if path.is_dir() and any(path.iterdir()) and not (path / marker).exists():
        raise ValueError(f"{path} holds files but is not a {kind} (no {marker}); give --out "
                         "an empty or new directory")


def check_writable_dir(path: Path) -> None:
    """Refuse an output directory that is a file, lies under a file, or cannot be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file, not a directory; give --out a directory path")
    probe = path if path.exists() else next((p for p in path.parents if p.exists()), None)
    if probe is not None and not probe.is_dir():
        raise ValueError(f"{probe} is a file, so no directory {path} can be made under it; "
                         "give --out a directory path")
    if probe is not None and not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{probe} is not writable by this user; give --out a directory you "
                         "can write")


def read_json(path: Path, fix: str) -> dict:
    """The JSON object in ``path``; anything else is one ValueError naming the file and ``fix``.

    For the small JSON files stages leave for each other (``vote.json``, ``variant.json``):
    a truncated, binary or hand-edited one must say which file it is, not only what the
    JSON parser tripped over.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text, so not the JSON file it should be; {fix}") \
            from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); {fix}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: holds a JSON {type(data).__name__}, not an object; {fix}")
    return data


def check_same_source(meta_file: Path, key: str, source: Path, force: bool, what: str) -> None:
    """Refuse to overwrite outputs made from another input unless ``force``.

    ``meta_file`` is the JSON file an existing output set holds (``vote.json``) and
    ``key`` its config key naming the input it was made from.  Re-running on the same
    input (whose content may have changed) is always allowed.
    """
    meta_file = Path(meta_file)
    if force or not meta_file.is_file():
        return
    try:
        config = read_json(meta_file, "").get("config")
        old = config.get(key) if isinstance(config, dict) else None
    except (ValueError, OSError):
        old = None
    if old is None or Path(old).resolve() == Path(source).resolve():
        return
    raise ValueError(f"{meta_file.parent} holds the {what} of {old}, not of {source}; pass "
                     "--out DIR to keep both, or --force to replace them")


@contextmanager
def atomic_dir(path: Path, kind: str, marker: str) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; swap it in for ``path`` on success.

    A stage whose output is a set of files (votes/, fits/) writes them all here, so a
    reader sees either the whole old set or the whole new one, never a mix of two runs:
    an interrupted stage leaves the old set (and a hidden temporary directory) behind.

    Parameters
    ----------
    path : Path
        The output directory.
    kind : str
        What it holds, for messages ("votes directory").
    marker : str
        A file every complete set holds; an existing ``path`` without it that is not
        empty is refused rather than replaced (it is not ours to delete).
    """
    import shutil

    path = Path(path)
    check_output_dir(path, kind, marker)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists() and _exchange(tmp, path):
            shutil.rmtree(tmp, ignore_errors=True)  # it holds the old set now
            return
        old = None
        if path.exists():
            # Two renames: a kill between them leaves no ``path`` (the old set is in the
            # hidden .old directory), never a mix; only where renameat2 is missing.
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class BuildDir:
    """Build a directory under a temporary name beside ``final``; rename it into place.

    The directory-level atomic write for outputs that are one directory (a trained
    variant, a converted or pretrained model): a directory named ``final`` is always
    complete.  ``marker`` is the file a complete directory holds (written last).  If
    another process finished the same directory first, ours is discarded and
    :attr:`placed` is False; a failure inside the block removes the temporary directory.

    Examples
    --------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> with BuildDir(root / "model", "done.json") as b:
    ...     _ = (b.path / "done.json").write_text("{}")
    >>> b.placed, (root / "model" / "done.json").exists()
    (True, True)
    """

    def __init__(self, final: Path, marker: str, tmp_name: str | None = None):
        self.final, self.marker = Path(final), marker
        self.path = self.final.parent / (tmp_name or f".{self.final.name}.tmp-{os.getpid()}")
        self.placed = False

    def __enter__(self) -> "BuildDir":
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            self.discard()
        else:
            self.place()
        return False

    # The steps of the ``with`` block, for builds that outlive one block (the population
    # trainer opens one per variant, trains them together, then places each).
    def open(self) -> "BuildDir":
        """Create the temporary directory (removing a dead process's leftover)."""
        import shutil

        self.final.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.path, ignore_errors=True)  # a leftover of a dead process
        self.path.mkdir()
        return self

    def discard(self) -> None:
        """Remove the temporary directory: the build failed."""
        import shutil

        shutil.rmtree(self.path, ignore_errors=True)

    def place(self) -> bool:
        """Rename the finished build onto ``final``; False if another process was first."""
        import shutil

        mask = _umask()  # files of tempfile and safetensors are private; a cache need not be
        self.path.chmod(0o777 & ~mask)
        for f in self.path.iterdir():
            if f.is_file():
                f.chmod(0o666 & ~mask)
        if self.final.exists() and not (self.final / self.marker).exists():
            shutil.rmtree(self.final)  # not complete, so not a result: cannot come from here
        try:
            os.rename(self.path, self.final)
            self.placed = True
        except OSError:
            if not (self.final / self.marker).exists():
                self.discard()
                raise
            self.discard()  # another process won the race
        return self.placed
def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one atomic step; False where the system cannot.

    Linux's ``renameat2(..., RENAME_EXCHANGE)`` (since 3.15, glibc 2.28): no moment at
    which neither exists, so a reader or a ``kill -9`` finds the old set or the new one.
    """
    import ctypes
    import errno
    import sys

    if not sys.platform.startswith("linux"):
        return False
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is None:
        return False
    at_fdcwd, rename_exchange = -100, 2  # <fcntl.h>, <linux/fs.h>
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EXDEV, errno.EOPNOTSUPP):
        return False  # a filesystem without the flag: fall back to two renames
    raise OSError(err, os.strerror(err), str(b))


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, obj) -> None:
    """Strict JSON: NaN and infinities (not JSON) are written as null."""
    text = json.dumps(_finite(obj), indent=2, sort_keys=True, default=_jsonable,
                      allow_nan=False)
    write_text(path, text + "\n")


def _finite(o):
    import math

    import numpy as np

    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, np.ndarray):
        return _finite(o.tolist())
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(o) else None
    return o


def write_csv(path: Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.12g", lineterminator="\n")


def write_parquet(path: Path, df: pd.DataFrame, metadata: dict[str, str] | None = None) -> None:
    """Write ``df`` atomically; ``metadata`` goes into the file's schema (key-value pairs)."""
    with atomic_path(path) as tmp:
        if not metadata:
            df.to_parquet(tmp, index=False)
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(df, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta.update({k.encode(): v.encode() for k, v in metadata.items()})
        pq.write_table(table.replace_schema_metadata(meta), tmp)


def read_parquet_metadata(path: Path) -> dict[str, str]:
    """The key-value metadata of a parquet file (without reading its rows)."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in meta.items()}


def _jsonable(o):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def canonical_hash(obj) -> str:
    """16 hex digits of sha256 over ``obj`` as sorted-key JSON (paths as strings).

    Examples
    --------
    >>> canonical_hash({"b": 1, "a": [1, 2]}) == canonical_hash({"a": [1, 2], "b": 1})
    True
    """
    import hashlib

    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def absolute_paths(cfg, names: tuple[str, ...]):
    """``cfg`` with its relative local paths among ``names`` made absolute.

    Ray tasks do not run in the driver's working directory, so a relative run directory
    (``out = "runs/x"``) or pool would be read and written somewhere else on every worker.
    A field is converted when it is a :class:`~pathlib.Path` or a string naming a path
    that exists here (a hub id or ``synthetic:...`` spec is left alone).

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class C:
    ...     out: Path
    ...     pool: str
    >>> c = absolute_paths(C(Path("runs/x"), "synthetic:8"), ("out", "pool"))
    >>> c.out.is_absolute(), c.pool
    (True, 'synthetic:8')
    """
    import dataclasses

    changes = {}
    for name in names:
        value = getattr(cfg, name)
        if value is None:
            continue
        path = Path(value).expanduser()
        if path.is_absolute() or not (isinstance(value, Path) or path.exists()):
            continue
        changes[name] = path.resolve() if isinstance(value, Path) else str(path.resolve())
    return dataclasses.replace(cfg, **changes) if changes else cfg


def mark_visible(path: Path) -> str:
    """Write a token file into ``path`` (on the driver) for :func:`check_visible`; returns
    the token.  :func:`unmark_visible` removes it after the run."""
    import uuid

    token = uuid.uuid4().hex
    write_text(Path(path) / f".visible-{token}", token)
    return token


def unmark_visible(path: Path, token: str | None) -> None:
    if token:
        (Path(path) / f".visible-{token}").unlink(missing_ok=True)


def check_visible(path: Path, what: str, token: str | None = None,
                  wait: float = 30.0) -> None:
    """Raise when ``path`` (made on the driver) is not the driver's directory on this
    (worker) node.

    Without ``token``: that it exists.  With the token of :func:`mark_visible`: that the
    driver's token file is in it -- a node-local directory of the same name (``/tmp``,
    ``/scratch``, an earlier run's leftovers) exists too, and work written there would be
    lost to the driver.  A shared filesystem may show a new file to another node only
    after its attribute cache expires (NFS: up to ~30-60 s), so the token is waited for.
    """
    import socket
    import time

    fix = ("every Ray node must see the run directory, so put it on a filesystem they all "
           "share (NFS, Lustre, a mounted bucket) and give its absolute path")
    if not Path(path).is_dir():
        raise ValueError(f"{what} {path} does not exist on node {socket.gethostname()}: {fix}")
    if token is None:
        return
    marker, deadline = Path(path) / f".visible-{token}", time.monotonic() + wait
    while True:
        try:
            if marker.read_text() == token:
                return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise ValueError(f"{what} {path} on node {socket.gethostname()} is not the "
                             f"driver's: its token file {marker.name} is not there after "
                             f"{wait:g} s (a node-local directory of the same name?); {fix}")
        time.sleep(1.0)


_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2,
                "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def safetensors_header(path: Path) -> dict:
    """The tensor table of a safetensors file, checked against the file's size.

    Raises ValueError naming what is wrong: a file too short for its header, a header
    that is not JSON, or a tensor whose bytes lie outside the file or do not match its
    dtype and shape (a truncated or partly written file).  Reads the header only.
    """
    import struct

    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ValueError(f"{size} bytes, too short for a safetensors header")
        n = struct.unpack("<Q", head)[0]
        if n > min(size - 8, 100 << 20):
            raise ValueError(f"header length {n} does not fit the {size}-byte file "
                             "(truncated, or not a safetensors file)")
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"the header is not JSON ({exc})") from None
    data = size - 8 - n
    for name, t in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = (int(x) for x in t["data_offsets"])
            count = 1
            for d in t["shape"]:
                count *= int(d)
            width = _DTYPE_BYTES[t["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"tensor {name}: malformed entry {t!r}") from None
        if end > data:
            raise ValueError(f"tensor {name} ends at byte {end} of {data} data bytes "
                             "(the file is truncated)")
        if end - begin != count * width:
            raise ValueError(f"tensor {name}: {end - begin} bytes for shape {t['shape']} "
                             f"of {t['dtype']}")
    return {k: v for k, v in header.items() if k != "__metadata__"}
