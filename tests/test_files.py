"""ensemble.core.files: atomic files and directories, output checks, and the writer lock."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from ensemble.core.files import LockedError, exclusive, pid_alive, sibling_lock


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_writer_is_refused_naming_the_first(tmp_path):
    lock = tmp_path / ".votes.lock"
    with exclusive(lock, "votes/"):
        held = json.loads(lock.read_text())
        assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
        with pytest.raises(LockedError) as err:
            with exclusive(lock, "votes/"):
                pass
        assert str(err.value) == (
            f"votes/ is being written by another process (host {socket.gethostname()}, pid "
            f"{os.getpid()}); wait for it to finish, or delete {lock} if that process is gone")
    assert not lock.exists()  # released


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    lock = tmp_path / ".fits.lock"
    dead = _dead_pid()
    assert not pid_alive(dead)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": dead}))
    with exclusive(lock, "fits/"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    # another host's lock cannot be checked from here: respected
    lock.write_text(json.dumps({"host": "elsewhere", "pid": dead}))
    with pytest.raises(LockedError, match="host elsewhere"):
        with exclusive(lock, "fits/"):
            pass


def test_vote_refuses_while_another_vote_writes_the_same_directory(tmp_path):
    from click.testing import CliRunner

    from ensemble.cli import main
    from tests.helpers import small_table, write_csv

    path = write_csv(small_table(), tmp_path / "a.csv")
    out = tmp_path / "votes"
    sibling_lock(out).write_text(json.dumps({"host": socket.gethostname(),
                                             "pid": os.getppid()}))  # a live process
    r = CliRunner().invoke(main, ["vote", str(path), "--out", str(out)])
    assert r.exit_code == 1
    assert r.output.startswith(f"Error: {out} is being written by another process (host ")
    assert not out.exists()
    sibling_lock(out).write_text(json.dumps({"host": socket.gethostname(),
                                             "pid": _dead_pid()}))  # killed with -9
    r = CliRunner().invoke(main, ["vote", str(path), "--out", str(out), "--bootstrap", "0"])
    assert r.exit_code == 0, r.output
    assert (out / "vote.json").exists() and not sibling_lock(out).exists()


def test_stale_temporary_files_of_dead_writers_are_removed(tmp_path):
    """A writer killed mid-file leaves `.name.~pid@host~XXXX.tmp`; only a dead writer's
    file of this host is removed, never a live writer's or another host's."""
    import socket
    import subprocess

    from ensemble.core.files import atomic_path, remove_stale_temps

    with atomic_path(tmp_path / "a" / "x.parquet") as tmp:
        assert f"~{os.getpid()}@{socket.gethostname()}~" in tmp.name
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    stale = tmp_path / "a" / f".y.parquet.~{dead.pid}@{host}~abc.tmp"
    live = tmp_path / "a" / f".z.parquet.~{os.getpid()}@{host}~abc.tmp"
    other = tmp_path / "a" / f".w.parquet.~{dead.pid}@another-host~abc.tmp"
    for p in (stale, live, other):
        p.write_text("partial")
    assert remove_stale_temps(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and other.exists()
    assert remove_stale_temps(tmp_path / "missing") == []
