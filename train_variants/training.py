"""The training stage: check everything, plan, train what is not done yet, report.

``run_train`` is what ``ensemble train`` calls; ``variant_status`` is ``ensemble status``.
Every check that can fail (device, base model, pool, plan, a run directory holding another
experiment) runs before the first variant starts, so bad input costs seconds, not hours.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ensemble.core.files import pid_alive, read_json, write_json
from train_variants.config import TrainConfig
from ensemble.core.models import base_fingerprint
from train_variants.plan import Plan, make_plan
from ensemble.core.rundir import VARIANT_MARKER, RunDir
from train_variants.gpus import resolve_device
from train_variants.trainer import (RUNNING_FILE, TMP_PREFIX, VariantResult,
                                    variants_dir, wants_vllm)
from ensemble.core.versions import versions



@dataclass
class TrainSummary:
    """What one ``run_train`` call did."""

    planned: list[str]  # the variant ids this call was asked for
    done: list[str] = field(default_factory=list)  # trained now
    skipped: list[str] = field(default_factory=list)  # already done before
    failed: dict[str, str] = field(default_factory=dict)  # id -> error
    seconds: float = 0.0
    recipe_hash: str = ""
    results: list[VariantResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def line(self) -> str:
        return (f"trained {len(self.done)} variant(s), {len(self.skipped)} already done, "
                f"{len(self.failed)} failed in {self.seconds:.1f} s (recipe {self.recipe_hash})")


def check(cfg: TrainConfig, device: str | None = None) -> Plan:
    """Every input check, in the order a user would fix them; returns the plan.

    ``device`` is where the variants will train (:func:`planned_device`).

    Raises
    ------
    ValueError
        One message per problem: GPU requested without one, base model not found, pool
        unreadable or missing a field, too many variants for the plan, a run directory
        that holds a different experiment.
    """
    device = device or resolve_device(cfg)
    wants_vllm(cfg, device)
    if cfg.trainer == "population":
        from train_variants.population import check_supported

        check_supported(cfg)
    base = base_fingerprint(cfg.base)
    plan = make_plan(cfg, base=base)
    _check_population(cfg, plan)
    return plan


def _check_population(cfg: TrainConfig, plan: Plan) -> None:
    path = RunDir(cfg.out).train_json
    if not path.exists():
        return
    old = read_json(path, f"delete it to start {path.parent} over, or use another --out")
    mine = population_key(cfg, plan)
    theirs = {k: old.get(k) for k in mine}
    if theirs != mine:
        diff = sorted(k for k in old.get("recipe", {})
                      if old["recipe"].get(k) != plan.recipe.get(k))
        diff += [k for k in ("seed", "vary") if theirs[k] != mine[k]]
        raise ValueError(
            f"{path}: this run directory holds variants of another experiment (recipe "
            f"{theirs['recipe_hash']}, seed {theirs['seed']}, vary {theirs['vary']}; now "
            f"{mine['recipe_hash']}, seed {mine['seed']}, vary {mine['vary']}; differing: "
            f"{', '.join(diff) or 'recipe'}); use another --out, or delete {path.parent} to "
            "start over")


def population_key(cfg: TrainConfig, plan: Plan) -> dict:
    """What must agree for new variants to join the population already in a run directory."""
    return {"recipe_hash": plan.recipe_hash, "seed": cfg.seed, "vary": list(cfg.vary)}


def _write_population(cfg: TrainConfig, plan: Plan) -> None:
    path = RunDir(cfg.out).train_json
    old = json.loads(path.read_text()) if path.exists() else {}
    write_json(path, {
        **population_key(cfg, plan),
        "variants": max(cfg.variants, int(old.get("variants", 0))),
        "recipe": plan.recipe, "base": plan.base, "config": cfg.to_dict(),
        "created": old.get("created", time.time()), "versions": versions()})


def _tmp_owner(path: Path) -> dict:
    try:
        owner = json.loads((path / RUNNING_FILE).read_text())
    except (OSError, ValueError):  # half-written by a killed process, or not ours
        return {}
    return owner if isinstance(owner, dict) else {}


def clean_stale(cfg: TrainConfig) -> list[str]:
    """Remove temp dirs left by killed processes on this host; returns their names.

    Temp dirs of live processes, or of other hosts (a Ray cluster), are left alone.
    """
    vdir, host, removed = variants_dir(cfg), socket.gethostname(), []
    if not vdir.is_dir():
        return removed
    for p in vdir.iterdir():
        if not (p.is_dir() and p.name.startswith(TMP_PREFIX)):
            continue
        owner = _tmp_owner(p)
        pid_host = p.name[len(TMP_PREFIX):].split("-", 1)[-1].rsplit("-", 1)
        h = owner.get("host", pid_host[0] if len(pid_host) == 2 else None)
        pid = owner.get("pid", int(pid_host[1]) if len(pid_host) == 2 and
                        pid_host[1].isdigit() else None)
        if h == host and (pid is None or not pid_alive(int(pid))):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return removed


def run_train(cfg: TrainConfig, progress: bool = True) -> TrainSummary:
    """Train the variants ``cfg.first .. cfg.variants-1`` that are not done yet.

    Parameters
    ----------
    cfg : TrainConfig
    progress : bool
        Print one line per finished variant to stderr (and TRL's progress bar for the
        local sequential launcher).

    Returns
    -------
    TrainSummary
        Done, skipped (already done) and failed variants; a failed variant does not stop
        the others, and rerunning retries only what is not done.
    """
    import contextlib
    import dataclasses

    from ensemble.core.models import resolve_base
    from train_variants.workers import ray_session

    # Packaged and GGUF bases (smollm2-135m, gguf:PATH) become a cached HF directory.
    cfg = dataclasses.replace(cfg, base=resolve_base(cfg.base, progress=progress))
    session = ray_session(cfg) if cfg.launcher == "ray" else contextlib.nullcontext(None)
    with session as cluster_gpus:
        device = planned_device(cfg, cluster_gpus)
        if cluster_gpus and device == "cuda" and cfg.gpu_memory_gb is None:
            import torch

            if not torch.cuda.is_available():  # a driver on a login node
                import ray

                from ensemble.core.cluster import probe_gpu_gb

                cfg = dataclasses.replace(cfg, gpu_memory_gb=probe_gpu_gb(ray))
        return _run_train(cfg, progress, device)


def planned_device(cfg: TrainConfig, cluster_gpus: float | None = None) -> str:
    """Where the variants will train: this machine's device, or for the Ray launcher
    (``cluster_gpus`` given) the cluster's, whatever the driver has."""
    if cluster_gpus is None:
        return resolve_device(cfg)
    if cfg.device == "cuda" and not cluster_gpus:
        raise ValueError("device=cuda but the Ray cluster has no GPUs; use --device cpu or a "
                         "cluster with GPU nodes")
    return "cpu" if cfg.device == "cpu" or not cluster_gpus else "cuda"


def _run_train(cfg: TrainConfig, progress: bool, device: str) -> TrainSummary:
    from train_variants.gpus import resolve_budget
    from train_variants.workers import launch

    from ensemble.core.files import check_writable_dir

    check_writable_dir(cfg.out)
    t0 = time.perf_counter()
    plan = check(cfg, device)
    # The GPU budget from the model's size, before any model is loaded; train.json and
    # every worker get the resolved values.
    cfg = resolve_budget(cfg, plan, device == "cuda", wants_vllm(cfg, device))
    variants_dir(cfg).mkdir(parents=True, exist_ok=True)
    _write_population(cfg, plan)
    clean_stale(cfg)
    wanted = plan.for_indices(cfg.indices)
    summary = TrainSummary(planned=[v.id for v in wanted], recipe_hash=plan.recipe_hash)
    todo = []
    for v in wanted:
        if RunDir(cfg.out).variant_done(v.id):
            summary.skipped.append(v.id)
        else:
            todo.append(v.index)
    total = len(todo)

    def report(r: VariantResult) -> None:
        summary.results.append(r)
        if r.status == "done":
            summary.done.append(r.id)
        elif r.status == "skipped":
            summary.skipped.append(r.id)
        else:
            summary.failed[r.id] = r.error or "failed"
        if progress:
            n = len(summary.results)
            what = (f"done in {r.seconds:.1f} s, final reward {r.metrics.get('final_reward')}"
                    if r.status == "done" else r.status + (f": {r.error}" if r.error else ""))
            print(f"[{n}/{total}] {r.id} {what}", file=sys.stderr, flush=True)

    if todo:
        launch(cfg, plan, todo, report, progress=progress)
    summary.seconds = time.perf_counter() - t0
    return summary


# --- status ---------------------------------------------------------------------------------

def variant_status(run_dir: Path) -> list[dict]:
    """State of every variant of a run: done, running, interrupted, failed or pending.

    Parameters
    ----------
    run_dir : Path
        The run directory (holding ``variants/``), or the ``variants`` directory itself.

    Returns
    -------
    list of dict
        One row per variant id, sorted: ``id``, ``state``, ``steps``, ``final_reward``,
        ``wall_seconds``, ``host``, ``error``.  ``pending`` rows come from the population
        size in ``variants/train.json``.
    """
    run_dir = Path(run_dir)
    if run_dir.is_file():
        raise ValueError(f"{run_dir} is a file, not a run directory; give the --out directory "
                         "of `ensemble train`")
    rd = RunDir.of(run_dir)
    vdir = rd.variants
    if not vdir.is_dir():
        raise ValueError(f"{vdir}: no variants directory; run `ensemble train ... --out "
                         f"{run_dir}` first")
    rows: dict[str, dict] = {}
    host = socket.gethostname()
    failed_dir = rd.failed_dir
    if failed_dir.is_dir():
        for f in failed_dir.glob("*.json"):
            rec = read_json(f, f"delete it and train {f.stem} again")
            rec.setdefault("id", f.stem)
            rows[rec["id"]] = _row(rec["id"], "failed", host=rec.get("host"),
                                   error=rec.get("error"))
    for p in vdir.iterdir():
        if not p.is_dir() or p == failed_dir:
            continue
        if p.name.startswith(TMP_PREFIX):
            owner = _tmp_owner(p)
            vid = owner.get("id") or p.name[len(TMP_PREFIX):].split("-", 1)[0]
            if rows.get(vid, {}).get("state") == "done":
                continue
            pid = owner.get("pid")
            # Another host's process cannot be checked from here: report it as running.
            alive = owner.get("host") != host or (bool(pid) and pid_alive(int(pid)))
            state = "running" if owner and alive else "interrupted"
            rows[vid] = _row(vid, state, host=owner.get("host"),
                             wall_seconds=round(time.time() - owner.get("started", time.time()),
                                                1))
        elif (p / VARIANT_MARKER).exists():
            meta = read_json(p / VARIANT_MARKER, f"delete {p} and train {p.name} again")
            m, run = meta.get("metrics") or {}, meta.get("run") or {}
            rows[p.name] = _row(p.name, "done", steps=m.get("steps"),
                                final_reward=m.get("final_reward"),
                                wall_seconds=run.get("wall_seconds"), host=run.get("host"))
    pop = rd.train_json
    if pop.exists():
        for i in range(int(read_json(pop, "delete it; `ensemble train` writes it again")
                               .get("variants", 0))):
            rows.setdefault(f"v{i:03d}", _row(f"v{i:03d}", "pending"))
    return [rows[k] for k in sorted(rows, key=lambda s: (len(s), s))]


def _row(vid, state, steps=None, final_reward=None, wall_seconds=None, host=None, error=None):
    return {"id": vid, "state": state, "steps": steps, "final_reward": final_reward,
            "wall_seconds": wall_seconds, "host": host, "error": error}
