"""The answering stage: every variant's answers plus the repetition control.

Work is split into *units*, one per (condition, model): a unit's answers are written to
``answers/<condition>/<model_id>.parquet`` atomically when the unit is complete, with
its provenance (a fingerprint of the settings, base, adapter and problems, see
:func:`unit_provenance`) in the file's metadata.  A rerun skips units whose file carries
the same provenance and refuses files made another way, so a killed run loses only the
units in flight, never leaves a partial file that counts as done, and never mixes answers
of another experiment into this one.  Units are spread over shards (``i/n``)
deterministically, large ones split into parts so that shards get balanced request
counts and merged back into the one file per unit (:mod:`eval.split`), and every
request's seed derives from (seed, condition, model, problem, sample), so sharding,
splitting and resuming do not change any answer on CPU (tested with both backends).
On CUDA, vLLM's floating-point results depend on how requests are batched unless its
batch-invariant mode is on: the vLLM backend turns it on for GPUs of compute capability
9.0 and newer (``batch_invariant``, :func:`eval.backends.batch_invariance`), which makes
the base model's answers independent of batching for a fixed ``tensor_parallel_size``.
It does not cover LoRA: vLLM 0.31/0.32's LoRA shrink kernel picks its tile size from the
number of tokens in a step (``lora/ops/triton_ops/utils.py``: ``block_k`` 256 below 128
tokens, 32 above) and sums the tiles in that order, so an adapter's answers can still
differ in the last bits between a whole run and a resharded or resumed one -- which
changes no statistic's validity, only its last digits (the units are the same; a sample
may be drawn differently).  ``answers.log.jsonl`` records whether the mode was on.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ensemble.core.answers import COLLABORATION, REPETITION
from ensemble.core.files import (canonical_hash, exclusive, read_parquet_metadata,
                                 remove_stale_temps, write_json, write_parquet)
from ensemble.core.rundir import RunDir
from ensemble.core.versions import versions
from eval.adapters import Adapter, AdapterError, discover
from eval.backends import Completion, Request
from eval.config import AnswerConfig
from ensemble.core.grading import grade, grading_kind
from ensemble.core.models import base_fingerprint
from ensemble.core.problems import Problem, load_problems
from eval.split import merge_parts, parts_by_unit, shard_pieces
from eval.units import BASE_ID, PROVENANCE_KEY, Unit, build_prompts

@dataclass
class AnswerSummary:
    done: list[str] = field(default_factory=list)  # units answered now
    skipped_done: list[str] = field(default_factory=list)  # units already on disk
    failed: dict[str, str] = field(default_factory=dict)  # unit -> error
    skipped_adapters: dict[str, str] = field(default_factory=dict)
    tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def request_seed(seed: int, condition: str, model_id: str, problem_id: str, sample: int) -> int:
    """The sampling seed of one request, stable across processes, shards and batch layouts.

    A 30-bit hash of (seed, condition, model, problem) plus the sample index: the
    samples of one problem get consecutive seeds, which is what vLLM assigns to the
    children of one ``n``-sample request, so both ways of asking give the same answers.
    """
    key = f"{seed}|{condition}|{model_id}|{problem_id}".encode()
    return (int.from_bytes(hashlib.sha256(key).digest()[:4], "little") & 0x3FFFFFFF) + sample


def plan_units(cfg: AnswerConfig, adapters: list[Adapter]) -> list[Unit]:
    """Every unit of the run (before sharding and skipping), in a fixed order."""
    by_id = {a.model_id: a for a in adapters}
    units = []
    if cfg.condition in (COLLABORATION, "both"):
        if not adapters:
            raise AdapterError(f"{cfg.adapters_dir}: no usable adapters for the collaboration "
                               "condition; train variants or pass --adapters DIR")
        units += [Unit(COLLABORATION, a.model_id, a, cfg.samples) for a in adapters]
    if cfg.condition in (REPETITION, "both"):
        servable = [a for a in adapters if a.problem is None]
        models = cfg.repetition_model or control_models(servable or adapters, cfg.repetition_models)
        n = cfg.repetition_samples or max(len(adapters), 1) * cfg.samples
        for m in models:
            if m != BASE_ID and m not in by_id:
                raise AdapterError(f"repetition model {m!r} is not among the usable adapters in "
                                   f"{cfg.adapters_dir}; use one of them or {BASE_ID!r}")
            units.append(Unit(REPETITION, m, by_id.get(m), n))
    return units


def control_models(adapters: list[Adapter], count: int) -> list[str]:
    """The default repetition control: ``count`` variants spread evenly over the population.

    Variants differ only in seeds, so any choice is as typical as another; spreading them
    evenly (v000, v005, v010, v015 of 16 for 4) is deterministic and needs no seed.  The
    base model stands in when there are no adapters.

    Examples
    --------
    >>> control_models([Adapter(f"v{i:03d}", None, 8, "base", "") for i in range(16)], 4)
    ['v000', 'v005', 'v010', 'v015']
    """
    if not adapters:
        return [BASE_ID]
    n, m = len(adapters), min(count, len(adapters))
    picks = sorted({round(i * (n - 1) / max(m - 1, 1)) for i in range(m)})
    return [adapters[i].model_id for i in picks]


def _check_existing(cfg: AnswerConfig) -> None:
    meta = RunDir(cfg.out).answers_json
    if not meta.exists():
        return
    old = json.loads(meta.read_text()).get("config", {})
    new = cfg.to_dict()
    diff = [k for k in AnswerConfig.OUTPUT_KEYS if k in old and old[k] != new[k]]
    if diff:
        k = diff[0]
        raise ValueError(
            f"{meta}: this run was answered with {k}={old[k]!r}, not {new[k]!r}; use another "
            f"--out, or delete {cfg.out / 'answers'} to start over"
        )


def run_provenance(cfg: AnswerConfig, base: dict, problems: list[Problem]) -> dict:
    """What every unit's answers depend on, hashed per part so a mismatch can be named.

    ``settings``: the answer settings that shape outputs (AnswerConfig.OUTPUT_KEYS);
    ``base``: the base model's fingerprint; ``problems``: ids, statements and gold answers.
    :func:`unit_provenance` adds the unit's own parts.
    """
    conf = cfg.to_dict()
    return {
        "settings": canonical_hash({k: conf[k] for k in AnswerConfig.OUTPUT_KEYS if k != "base"}),
        "base": base["fingerprint"],  # path-independent for a local directory
        "problems": canonical_hash([(p.id, p.problem, p.answer) for p in problems]),
    }


def unit_provenance(shared: dict, unit: Unit) -> dict:
    """:func:`run_provenance` plus the unit's ``adapter`` (weights sha256, None for the
    base model) and ``samples`` (answers per problem); a part adds its request range."""
    out = {**shared, "adapter": unit.adapter.sha256[:16] if unit.adapter else None,
           "samples": unit.samples}
    return {**out, "part": [unit.start, unit.stop]} if unit.is_part else out


def _is_done(path: Path, want: dict) -> bool:
    """True if ``path`` holds this unit's answers; raises if it holds something else."""
    if not path.exists():
        return False
    try:
        have = json.loads(read_parquet_metadata(path).get(PROVENANCE_KEY, "null")) or {}
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same advice
        raise ValueError(f"{path} is not a readable parquet file ({exc}); delete it to "
                         "answer that model again") from exc
    if have == want:
        return True
    what = next((k for k in want if have.get(k) != want[k]), None)
    why = (f"the {what} it was made with differ from this run's" if what and have else
           "it records no provenance (made by something other than ensemble answer)")
    raise ValueError(f"{path} holds answers this run did not make: {why}; use another --out, "
                     f"or delete {path.parent.parent} to answer again")


class _Provenance(dict):
    """Each unit's provenance (:func:`unit_provenance`, computed on first use) and the
    merging of split units' parts (:mod:`eval.split`)."""

    def __init__(self, out: Path, shared: dict, plan: list[list[Unit]]):
        super().__init__()
        self.out, self.shared = Path(out), shared
        self.parts_of = parts_by_unit(plan)

    def __missing__(self, unit: Unit) -> dict:
        self[unit] = unit_provenance(self.shared, unit)
        return self[unit]

    def merge(self, whole: Unit) -> bool:
        return merge_parts(self.out, whole, self.parts_of[whole], self.__getitem__, _is_done)

    def merge_all(self) -> None:
        for whole in self.parts_of:
            if whole.adapter is None or whole.adapter.problem is None:
                self.merge(whole)


def _rows(unit: Unit, reqs: list[Request], outs: list[Completion], problems: list[Problem],
          kind: str, keep_text: bool) -> pd.DataFrame:
    recs = []
    for r, c in zip(reqs, outs):
        p = problems[r.problem]
        g = grade(c.text, p.answer, kind)
        rec = {"condition": unit.condition, "model_id": unit.model_id, "problem_id": p.id,
               "sample": r.sample, "answer": g.answer, "gold": p.answer, "correct": g.correct,
               "completion_tokens": len(c.token_ids), "finish_reason": c.finish_reason}
        if keep_text:
            rec["text"] = c.text
        recs.append(rec)
    # One schema for every unit file, whatever its values (a unit whose answers are all
    # null would otherwise get a null-typed column), so answers/ reads as one dataset.
    return pd.DataFrame(recs).astype(ANSWER_DTYPES | ({"text": "string"} if keep_text else {}))


ANSWER_DTYPES = {"condition": "string", "model_id": "string", "problem_id": "string",
                 "sample": "int64", "answer": "string", "gold": "string", "correct": "bool",
                 "completion_tokens": "int64", "finish_reason": "string"}


def run_answer(cfg: AnswerConfig, progress: bool = True) -> AnswerSummary:
    """Answer every pending unit of ``cfg`` with its backend; see the module docstring.

    One process per (run directory, shard) at a time: a second one is refused with the
    first one's host and pid (two would answer the same units twice over).
    """
    lock = RunDir(cfg.out).answer_lock(cfg.shard_index, cfg.shard_count)
    with exclusive(lock, f"shard {cfg.shard} of the answers in {cfg.out}"):
        remove_stale_temps(RunDir(cfg.out).answers)  # files of killed writers, not ours
        return _run_answer(cfg, progress)


@dataclass
class _Work:
    """What every batch of one answering invocation shares."""

    cfg: AnswerConfig
    problems: list[Problem]
    kind: str  # grading: aime or math
    provenance: dict  # unit -> its provenance record (written into its parquet file)
    summary: AnswerSummary
    record: dict  # answers.json, written once the first unit is answered
    backend: object = None
    prompts: list = field(default_factory=list)  # token ids per problem


def _run_answer(cfg: AnswerConfig, progress: bool) -> AnswerSummary:
    from eval.backends import has_cuda
    from eval.budget import resolve_backend, resolve_engine

    cfg = resolve_backend(cfg, has_cuda())
    # The check `ensemble train` makes: a missing directory or an uncached hub id is one
    # line naming the base, not the backend's OSError after the engine started loading.
    base_fp = base_fingerprint(cfg.base)
    problems = load_problems(cfg.benchmark, cfg.problem_field, cfg.answer_field, cfg.id_field,
                             cfg.split, cfg.limit)
    kind = grading_kind(cfg.kind, cfg.benchmark, (p.answer for p in problems))
    needs_adapters = cfg.condition != REPETITION or any(
        m != BASE_ID for m in cfg.repetition_model) or not cfg.repetition_model
    adapters, skipped = ([], {})
    if needs_adapters:
        adapters, skipped = discover(cfg.adapters_dir, cfg.base, cfg.max_lora_rank,
                                     backend=cfg.backend)
    units = plan_units(cfg, adapters)
    # The engine's settings from the model, adapters and prompts; too little GPU memory
    # is an error here, before any engine starts (eval.budget).
    cfg = resolve_engine(cfg, problems, on_gpu=has_cuda())
    # After the engine settings are resolved: answers.json records resolved values (a
    # float32 checkpoint's dtype "auto" is served in bfloat16 on CUDA), so a rerun or the
    # next local shard compares like with like.
    _check_existing(cfg)
    # Balanced shards: large units are split into parts of consecutive requests (eval.split)
    plan = shard_pieces(units, len(problems), cfg.shard_count)
    mine = plan[cfg.shard_index]
    summary = AnswerSummary(skipped_adapters=skipped)
    provenance = _Provenance(cfg.out, run_provenance(cfg, base_fp, problems), plan)
    provenance.merge_all()  # part sets a killed shard completed but did not merge
    pending = []
    for u in mine:
        if u.adapter is not None and u.adapter.problem is not None:
            summary.failed[u.key] = u.adapter.problem  # never loaded
        elif _is_done(u.path(cfg.out), provenance[u]) or (
                u.is_part and _is_done(u.whole.path(cfg.out), provenance[u.whole])):
            summary.skipped_done.append(u)
        else:
            pending.append(u)
    record = {
        "config": AnswerConfig.results_view(cfg.to_dict()),
        "kind": kind, "problems": len(problems), "base": base_fp,
        "adapters": {a.model_id: {"path": str(a.path), "rank": a.rank, "sha256": a.sha256}
                     for a in adapters},
        "skipped_adapters": skipped, "versions": versions(),
    }
    if not pending:
        write_json(RunDir(cfg.out).answers_json, record)
        return summary
    work = _Work(cfg, problems, kind, provenance, summary, record)
    _answer_with_engine(work, pending, progress)
    return summary


def _answer_with_engine(work: _Work, pending: list[Unit], progress: bool) -> None:
    """Start the backend under the watchdog, answer ``pending``, log the invocation."""
    from eval.backends import make_backend
    from eval.watchdog import Watchdog

    cfg = work.cfg
    in_flight = ["starting the engine"]
    dog = Watchdog(cfg.stall_timeout, lambda: in_flight[0], RunDir(cfg.out).answers_log)
    with dog:
        try:
            work.backend = make_backend(cfg)
        except KeyboardInterrupt:
            if not dog.fired:
                raise
            dog.acknowledge()
            raise RuntimeError(dog.message) from None
        try:
            work.backend.on_progress = dog.beat
            work.prompts = build_prompts(work.backend.tokenizer, work.problems, cfg)
            _answer_pending(work, pending, dog, in_flight, progress)
        finally:
            # The next shard on this GPU (a Ray task, a --shard process) must find its
            # memory free: vLLM refuses to start below its gpu_memory_utilization.
            try:
                work.backend.close()
            except Exception:  # noqa: BLE001 - a dead engine must not hide the real error
                pass
    _log_invocation(cfg, work.backend, work.summary)


def _answer_pending(work: _Work, pending: list[Unit], dog, in_flight: list[str],
                    progress: bool) -> None:
    """Answer the pending units batch by batch; a stalled batch fails (eval.watchdog)."""
    from tqdm.auto import tqdm

    cfg, summary = work.cfg, work.summary
    per_batch = cfg.adapters_per_batch or cfg.max_loras
    bar = tqdm(total=len(pending), desc=f"answering ({cfg.backend})", unit="model",
               disable=not progress)
    t0 = time.perf_counter()
    for start in range(0, len(pending), per_batch):
        batch = pending[start:start + per_batch]
        in_flight[0] = "answering " + ", ".join(u.key for u in batch)
        dog.beat()
        try:
            _answer_batch(work, batch)
        except KeyboardInterrupt:
            if not dog.fired:
                raise
            dog.acknowledge()
            for u in batch:
                key = u.key
                if key not in summary.done:
                    summary.failed[key] = dog.message
            break  # the engine may be wedged: leave the rest pending for a rerun
        finally:
            summary.seconds = time.perf_counter() - t0
        if summary.done and not RunDir(cfg.out).answers_json.exists():
            # Recorded once something is answered: a run that failed before its first
            # answer (a wrong base, say) leaves nothing that would refuse the fixed rerun.
            write_json(RunDir(cfg.out).answers_json, work.record)
        bar.update(len(batch))
        bar.set_postfix(tokens=summary.tokens, tok_s=f"{summary.tokens_per_s:.0f}",
                        failed=len(summary.failed))
    bar.close()


def _log_invocation(cfg: AnswerConfig, backend, summary: AnswerSummary) -> None:
    """Append this invocation's engine settings, work and timing to answers.log.jsonl.

    One line per invocation (shards append their own; a short O_APPEND write does not
    interleave), so a resumed or sharded run keeps the history of who did what.
    """
    rec = {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "shard": cfg.shard,
           "backend": cfg.backend, "engine": {k: str(v) for k, v in backend.engine_kwargs.items()},
           "done": summary.done, "failed": summary.failed, "tokens": summary.tokens,
           "seconds": round(summary.seconds, 3), "tokens_per_s": round(summary.tokens_per_s, 1)}
    with open(RunDir(cfg.out).answers_log, "a") as fh:
        fh.write(json.dumps(rec, sort_keys=True) + "\n")


def _requests(unit: Unit, problems, prompts, cfg: AnswerConfig) -> list[Request]:
    reqs = [Request(unit, i, s, prompts[i],
                    request_seed(cfg.seed, unit.condition, unit.model_id, p.id, s))
            for i, p in enumerate(problems) for s in range(unit.samples)]
    return reqs[unit.start:unit.stop]


def _answer_batch(work: _Work, batch: list[Unit]) -> None:
    """Answer the units of ``batch`` in one generate call and write one file per unit; a
    failing call is retried unit by unit, so one broken adapter does not sink the others."""
    cfg, summary = work.cfg, work.summary
    reqs = {u: _requests(u, work.problems, work.prompts, cfg) for u in batch}
    try:
        outs = work.backend.generate([r for u in batch for r in reqs[u]])
    except Exception as exc:  # noqa: BLE001 - isolate the failing adapter below
        if len(batch) == 1:
            u = batch[0]
            summary.failed[u.key] = f"{type(exc).__name__}: {exc}"
            return
        for u in batch:
            _answer_batch(work, [u])
        return
    pos = 0
    for u in batch:
        n = len(reqs[u])
        df = _rows(u, reqs[u], outs[pos:pos + n], work.problems, work.kind, cfg.keep_text)
        pos += n
        write_parquet(u.path(cfg.out), df,
                      {PROVENANCE_KEY: json.dumps(work.provenance[u], sort_keys=True)})
        summary.tokens += int(df["completion_tokens"].sum())
        summary.done.append(u.key)
        if u.is_part:
            work.provenance.merge(u.whole)
