"""eval.watchdog: answering that stops making progress fails with a reason, never hangs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest
from click.testing import CliRunner

from ensemble.cli import main
from eval.watchdog import STALL_EXIT, BeatBar, Watchdog
from tests.test_answer import _table, tiny  # noqa: F401 - the module's tiny model fixture


def test_beats_keep_it_quiet_and_silence_interrupts_the_main_thread():
    with Watchdog(0.6, lambda: "testing") as dog:
        for _ in range(8):  # 1.6 s of work, beating every 0.2 s
            time.sleep(0.2)
            dog.beat()
        assert not dog.fired
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            time.sleep(30)
        dog.acknowledge()
    assert dog.fired and time.monotonic() - t0 < 10
    assert dog.message.startswith("no progress for ") and "while testing" in dog.message
    assert "stall_timeout=0.6 s" in dog.message


def test_off_when_no_timeout():
    with Watchdog(0) as dog:
        time.sleep(0.3)
    assert dog._thread is None and not dog.fired


def test_a_main_thread_that_no_signal_reaches_is_ended(tmp_path):
    """SIGINT ignored stands in for a C call that never returns: the process is ended."""
    log = tmp_path / "answers.log.jsonl"
    script = textwrap.dedent(f"""
        import signal, time
        from pathlib import Path
        from eval.watchdog import Watchdog
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with Watchdog(0.5, lambda: "answering repetition/v003", Path({str(log)!r}), grace=0.5):
            time.sleep(60)
        print("not reached")
    """)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == STALL_EXIT
    assert time.monotonic() - t0 < 30
    assert "not reached" not in proc.stdout
    assert "while answering repetition/v003" in proc.stderr
    assert "ending the process (exit 3)" in proc.stderr
    rec = json.loads(log.read_text().splitlines()[-1])
    assert rec["exit"] == STALL_EXIT and "repetition/v003" in rec["stalled"]


def test_beat_bar_is_what_vllm_needs():
    beats = []
    bar = BeatBar(lambda: beats.append(1), total=5, desc="x", dynamic_ncols=True, postfix="p")
    bar.update(2)
    bar.update(3)
    assert bar.n == 5 and len(beats) == 2 and bar.format_dict["elapsed"] > 0
    bar.postfix = "q"
    bar.refresh()
    bar.close()
    # vLLM also wraps the prompts it renders: ``use_tqdm(iterable, desc=...)``
    wrapped = BeatBar(lambda: beats.append(1), ["a", "b", "c"], desc="Rendering prompts")
    assert len(wrapped) == 3 and list(wrapped) == ["a", "b", "c"] and len(beats) == 5
    tqdm_utils = pytest.importorskip("vllm.utils.tqdm_utils")  # the way vLLM 0.32 calls it
    assert list(tqdm_utils.maybe_tqdm([1, 2], use_tqdm=lambda *a, **kw: BeatBar(lambda: None, *a, **kw),
                           desc="x")) == [1, 2]


def test_a_stuck_unit_fails_with_the_reason_and_a_rerun_finishes(tiny, tmp_path, monkeypatch):
    from eval import backends

    real = backends.HFBackend.generate

    def stuck_on_v002(self, requests):
        if any(r.unit.model_id == "v002" for r in requests):
            time.sleep(3600)  # a wedged engine
        return real(self, requests)

    monkeypatch.setattr(backends.HFBackend, "generate", stuck_on_v002)
    out = tmp_path / "r"
    args = ["answer", "--base", tiny["base"], "--benchmark", tiny["bench"], "--out", out,
            "--adapters", tiny["adapters"], "--backend", "hf", "--max-tokens", 4,
            "--max-lora-rank", 8, "--max-loras", 2, "--condition", "collaboration"]
    t0 = time.monotonic()
    res = CliRunner().invoke(main, [*map(str, args), "--stall-timeout", "5"])
    assert time.monotonic() - t0 < 120
    assert res.exit_code == 1, res.output
    assert "failed collaboration/v002: no progress for " in res.output
    assert "while answering collaboration/v002, collaboration/v003" in res.output
    done = sorted(p.stem for p in (out / "answers/collaboration").glob("*.parquet"))
    assert done == ["v000", "v001"]  # the batch before the stall is kept
    log = [json.loads(line) for line in (out / "answers.log.jsonl").read_text().splitlines()]
    assert "collaboration/v002" in log[-1]["failed"]

    monkeypatch.setattr(backends.HFBackend, "generate", real)
    res = CliRunner().invoke(main, list(map(str, args)))
    assert res.exit_code == 0, res.output
    assert "answered 2 model(s), 2 already done, 0 failed" in res.output
    assert sorted(_table(out)["model_id"].unique()) == ["v000", "v001", "v002", "v003"]


def test_stall_timeout_is_checked_and_does_not_change_results(tiny, tmp_path):
    from eval.config import AnswerConfig

    with pytest.raises(ValueError, match=r"stall_timeout=-1.0 must be >= 0 seconds"):
        AnswerConfig.from_dict(dict(base=tiny["base"], out=tmp_path, benchmark="x",
                                    stall_timeout=-1.0))
    assert "stall_timeout" not in AnswerConfig.OUTPUT_KEYS
