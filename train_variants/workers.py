"""Launchers: this process, a pool of local worker processes, or Ray actors.

Every launcher runs the same function on each variant index (:func:`train_index`), which
rebuilds the plan from the config (deterministic, so every process agrees) and trains into
a temp dir renamed into place.  Workers never coordinate beyond the run directory, so a
killed run loses only the variants in flight, and finished variants are skipped on rerun.

A worker process keeps the base model and the plan in memory between variants: the
10-15 s of imports and the base load (minutes for a 30B model) are paid once per worker,
not once per variant.  Local workers are long-lived pool processes; on Ray each worker is
an actor holding ``gpus_per_variant`` GPUs, fed the next variant whenever it is free
(Ray's GPU *tasks* would not do: they default to ``max_calls=1``, a fresh process and a
fresh base load per variant).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
from typing import Callable

from train_variants.config import TrainConfig
from train_variants.plan import Plan, make_plan
from train_variants.trainer import VariantResult

_PLANS: dict[str, Plan] = {}


def _plan_for(cfg: TrainConfig) -> Plan:
    key = json.dumps(cfg.to_dict(), sort_keys=True)
    if key not in _PLANS:
        _PLANS.clear()
        _PLANS[key] = make_plan(cfg)
    return _PLANS[key]


def train_index(cfg_dict: dict, index: int, progress: bool = False) -> VariantResult:
    """Train variant ``index`` of the config ``cfg_dict`` in this process (any launcher)."""
    from train_variants.trainer import train_variant

    cfg = TrainConfig.from_dict(cfg_dict)
    plan = _plan_for(cfg)
    vp = plan.for_indices([index])[0]
    try:
        return train_variant(cfg, vp, plan, progress=progress)
    except BaseException as exc:  # noqa: BLE001 - e.g. KeyboardInterrupt in a worker
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return VariantResult(vp.id, "failed", error=f"{type(exc).__name__}: {exc}")


def train_share(cfg_dict: dict, indices: list[int]) -> list[VariantResult]:
    """Train a local worker's share ``indices`` in this process: variant after variant,
    or with the population trainer together; a failure before a variant was reported
    fails it."""
    cfg = TrainConfig.from_dict(cfg_dict)
    if cfg.trainer != "population":
        return [train_index(cfg_dict, i) for i in indices]
    from train_variants.population import launch_population

    results: list[VariantResult] = []
    try:
        launch_population(cfg, _plan_for(cfg), indices, results.append, progress=False)
    except Exception as exc:  # noqa: BLE001 - e.g. the base failed to load in this worker
        seen = {r.id for r in results}
        results += [VariantResult(f"v{i:03d}", "failed", error=f"{type(exc).__name__}: {exc}")
                    for i in indices if f"v{i:03d}" not in seen]
    return results


class RayWorker:
    """A Ray actor that trains variant after variant in one process (one base load)."""

    def __init__(self, cfg_dict: dict, token: str | None = None):
        from ensemble.core.files import check_visible

        check_visible(cfg_dict["out"], "the run directory", token)
        self.cfg_dict = cfg_dict

    def train(self, index: int) -> VariantResult:
        return train_index(self.cfg_dict, index)


def _init_worker(slots, threads: int, device: str) -> None:
    # Runs first in each spawned worker, before torch is imported there: pin it to its
    # GPUs (CUDA reads CUDA_VISIBLE_DEVICES at initialisation) or its share of the cores.
    slot = slots.get()
    if device == "cuda":
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, slot))
    # On GPUs too: each of 8 workers spinning every core's OpenMP threads on the host
    # side (tokenising, rewards, the CPU copies of keep_base_exact) would fight.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)


def physical_gpus(slot: list[int], visible: str | None) -> list[str]:
    """The ``CUDA_VISIBLE_DEVICES`` entries of a worker's slot (positions among the GPUs
    this process sees): a parent limited to ``4,5,6,7`` (Slurm, a shared box) must not
    send its workers to GPUs 0-3, which may be another job's.

    Examples
    --------
    >>> physical_gpus([0, 1], "4,5,6,7"), physical_gpus([2, 3], None)
    (['4', '5'], ['2', '3'])
    """
    ids = [v.strip() for v in visible.split(",")] if visible and visible.strip() else None
    return [ids[j] if ids else str(j) for j in slot]


def gpu_slots(workers: int, per_worker: int, visible: int) -> list[list[int]]:
    """The GPUs of each local worker: consecutive groups of ``per_worker``.

    Examples
    --------
    >>> gpu_slots(2, 4, 8)
    [[0, 1, 2, 3], [4, 5, 6, 7]]
    """
    if workers * per_worker > visible:
        raise ValueError(f"workers={workers} x gpus_per_variant={per_worker} needs "
                         f"{workers * per_worker} GPUs, this machine shows {visible}; use "
                         f"--workers {max(1, visible // per_worker)}")
    return [list(range(w * per_worker, (w + 1) * per_worker)) for w in range(workers)]


def launch(cfg: TrainConfig, plan: Plan, indices: list[int],
           report: Callable[[VariantResult], None], progress: bool = True) -> None:
    """Train the variants ``indices`` with ``cfg.launcher``; ``report`` gets each result.

    Training in this process (one local worker) ends by releasing the cached base, so
    that what follows in this process (answering, in ``ensemble run``) finds the memory.
    """
    if cfg.launcher == "ray":
        return run_ray(cfg, indices, report)
    if cfg.workers > 1:
        return run_pool(cfg, indices, report)
    from train_variants.trainer import release_base, train_variant

    try:
        if cfg.trainer == "population":
            from train_variants.population import launch_population

            return launch_population(cfg, plan, indices, report, progress=progress)
        for i in indices:
            report(train_variant(cfg, plan.for_indices([i])[0], plan, progress=progress))
        return None
    finally:
        release_base()


def run_pool(cfg: TrainConfig, indices: list[int],
             report: Callable[[VariantResult], None]) -> None:
    """``cfg.workers`` spawned processes, each taking the next variant when it is free
    (the population trainer: the next share of :func:`train_variants.population.parts`).

    On CUDA, worker w sees GPUs ``w*g .. w*g+g-1`` only (g = ``gpus_per_variant``; one for
    the population trainer, which holds its base on one device); on CPU each worker gets
    ``cores // workers`` threads, so the workers do not fight over cores.
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    from train_variants.gpus import resolve_device
    from train_variants.trainer import cpu_threads

    device = resolve_device(cfg)
    population = cfg.trainer == "population"
    if population:
        from train_variants.population import parts

        shares = parts(indices, cfg.workers, cfg.population_size)
    else:
        shares = [[i] for i in indices]
    workers = min(cfg.workers, len(shares))
    ctx = mp.get_context("spawn")  # fork after torch/OpenMP initialisation can deadlock
    slots = ctx.Queue()
    if device == "cuda":
        import torch

        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        per_worker = 1 if population else cfg.gpus_per_variant or 1
        for slot in gpu_slots(workers, per_worker, torch.cuda.device_count()):
            slots.put(physical_gpus(slot, visible))
    else:
        for w in range(workers):
            slots.put(w)
    threads = cpu_threads(cfg)
    cfg_dict = cfg.to_dict()
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(slots, threads, device)) as pool:
        futures = {pool.submit(train_share, cfg_dict, share): share for share in shares}
        for fut in as_completed(futures):
            try:
                results = fut.result()
            except BrokenProcessPool as exc:
                # A worker died (killed, out of memory): its variants and the ones queued
                # behind it are not done; a rerun trains them.
                results = [VariantResult(f"v{i:03d}", "failed", error=f"worker died: {exc}")
                           for i in futures[fut]]
            for r in results:
                report(r)


@contextlib.contextmanager
def ray_session(cfg: TrainConfig):
    """Join the running cluster (``ray_address``, ``RAY_ADDRESS``, or one this process
    already initialised) or start a local one; yields the cluster's GPU count.  A cluster
    started here is shut down on exit."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError("the ray launcher needs Ray: pip install 'ray[default]'") from exc
    started = not ray.is_initialized()
    if started:
        from ensemble.core.cluster import runtime_env

        ray.init(address=cfg.ray_address, ignore_reinit_error=True, log_to_driver=False,
                 runtime_env=runtime_env())
    try:
        yield float(ray.cluster_resources().get("GPU", 0))
    finally:
        if started:
            ray.shutdown()


# After this many new actors in a row fail their first variant, no more are started: a
# fault that follows every actor (the project missing on a node, a base that is not
# there) would otherwise fail the whole queue one variant every few seconds.
MAX_FAILURES_IN_A_ROW = 3


def ray_workers(cfg: TrainConfig, on_gpu: bool, todo: int) -> int:
    """Actors to start: ``workers`` when set above 1, else as many as the cluster holds."""
    import ray

    if cfg.workers > 1:
        return min(cfg.workers, todo)
    res = ray.cluster_resources()
    fit = (res.get("GPU", 0) // (cfg.gpus_per_variant or 1) if on_gpu
           else res.get("CPU", 1) // cfg.cpus_per_variant)
    return int(max(1, min(fit, todo)))


def run_ray(cfg: TrainConfig, indices: list[int],
            report: Callable[[VariantResult], None]) -> None:
    """Ray actors, each with ``gpus_per_variant`` GPUs (or ``cpus_per_variant`` CPUs on a
    CPU cluster), each training the next pending variant when it is free.

    An actor whose variant failed -- it died (a lost node, out of memory) or the variant
    raised (a CUDA error can poison the process) -- is replaced by a fresh one; no variant
    is retried blindly.  After :data:`MAX_FAILURES_IN_A_ROW` new actors in a row fail
    their first variant, the variants not yet started are reported failed with the last
    error, for a rerun.
    """
    import ray

    with ray_session(cfg) as gpus:
        if cfg.device == "cuda" and not gpus:
            raise ValueError("device=cuda but the Ray cluster has no GPUs; use --device cpu "
                             "or a cluster with GPU nodes")
        on_gpu = bool(gpus) and cfg.device != "cpu"
        if on_gpu:
            from ensemble.core.cluster import check_placeable

            check_placeable(ray.nodes(), cfg.gpus_per_variant or 1, "gpus_per_variant",
                            "one variant's actor")
        actor = ray.remote(num_gpus=(cfg.gpus_per_variant or 1) if on_gpu else 0,
                           num_cpus=1 if on_gpu else cfg.cpus_per_variant,
                           max_restarts=0, max_task_retries=0)(RayWorker)
        from ensemble.core.files import absolute_paths, mark_visible, unmark_visible

        # Workers do not run in this directory: every path they get must be absolute.
        cfg_dict = absolute_paths(cfg, ("out", "pool", "base")).to_dict()
        token = mark_visible(cfg_dict["out"])  # each actor checks it sees this directory
        try:
            _dispatch(cfg, ray, actor, cfg_dict, token, on_gpu, indices, report)
        finally:
            unmark_visible(cfg_dict["out"], token)


def _dispatch(cfg: TrainConfig, ray, actor, cfg_dict: dict, token: str, on_gpu: bool,
              indices: list[int], report: Callable[[VariantResult], None]) -> None:
    """Feed the variants to the actors (see :func:`run_ray`).

    Only failures of fresh actors (on their first variant) count towards the cut-off: a
    lost node fails every actor it held, each after finishing variants, which says
    nothing about the others; a fault that follows every actor fails each new one at once.
    """
    queue = collections.deque(indices)
    running = {}  # ref -> (actor, variant index, variants that actor finished before)
    for _ in range(ray_workers(cfg, on_gpu, len(queue))):
        a = actor.remote(cfg_dict, token)
        i = queue.popleft()
        running[a.train.remote(i)] = (a, i, 0)
    in_a_row, last_error = 0, ""
    while running:
        ready, _ = ray.wait(list(running), num_returns=1)
        for ref in ready:
            a, i, finished = running.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - a lost node, a dead actor
                msg = str(exc).strip().splitlines()[-1][:500] if str(exc).strip() else ""
                result = VariantResult(f"v{i:03d}", "failed", error=(
                    f"ray worker failed: {type(exc).__name__}: {msg}"))
            report(result)
            if result.status == "failed":
                if finished == 0:
                    in_a_row, last_error = in_a_row + 1, result.error or ""
                ray.kill(a)
                a, finished = None, 0
                if in_a_row >= MAX_FAILURES_IN_A_ROW:
                    for j in queue:
                        report(VariantResult(f"v{j:03d}", "failed", error=(
                            f"not started: {in_a_row} new Ray actors in a row failed their "
                            f"first variant (last: {last_error}); fix that and rerun "
                            "(finished variants are kept)")))
                    queue.clear()
                elif queue:
                    a = actor.remote(cfg_dict, token)
            else:
                in_a_row, finished = 0, finished + 1
            if a is not None and queue:
                i = queue.popleft()
                running[a.train.remote(i)] = (a, i, finished)
            elif a is not None:
                # Nothing left for it: its GPUs and its base go back now, not when the
                # handle is collected (ensemble run answers next, on the same cluster).
                ray.kill(a)
