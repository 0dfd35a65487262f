"""Launchers: this process, a pool of local worker processes, or one Ray task per variant.

Every launcher runs the same function on each variant index (:func:`train_index`), which
rebuilds the plan from the config (deterministic, so every process agrees) and trains into
a temp dir renamed into place.  Workers never coordinate beyond the run directory, so a
killed run loses only the variants in flight, and finished variants are skipped on rerun.

A worker process keeps the base model and the plan in memory between variants: the
10-15 s of imports and the base load are paid once per worker, not once per variant.
"""

from __future__ import annotations

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


def _ray_train_index(cfg_dict: dict, index: int) -> VariantResult:
    """:func:`train_index` in a Ray task, after checking the run directory is visible."""
    from ensemble.runio import check_visible

    check_visible(cfg_dict["out"], "the run directory")
    return train_index(cfg_dict, index)


def _init_worker(slots, threads: int, device: str) -> None:
    # Runs first in each spawned worker, before torch is imported there: pin it to one
    # GPU (CUDA reads CUDA_VISIBLE_DEVICES at initialisation) or to its share of the cores.
    slot = slots.get()
    if device == "cuda":
        os.environ["CUDA_VISIBLE_DEVICES"] = str(slot)
    else:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(threads)
        import torch

        torch.set_num_threads(threads)


def launch(cfg: TrainConfig, plan: Plan, indices: list[int],
           report: Callable[[VariantResult], None], progress: bool = True) -> None:
    """Train the variants ``indices`` with ``cfg.launcher``; ``report`` gets each result."""
    if cfg.trainer == "population":
        from train_variants.population import launch_population

        return launch_population(cfg, plan, indices, report, progress=progress)
    if cfg.launcher == "ray":
        return run_ray(cfg, indices, report)
    if cfg.workers == 1:
        from train_variants.trainer import train_variant

        for i in indices:
            report(train_variant(cfg, plan.for_indices([i])[0], plan, progress=progress))
        return None
    return run_pool(cfg, indices, report)


def run_pool(cfg: TrainConfig, indices: list[int],
             report: Callable[[VariantResult], None]) -> None:
    """``cfg.workers`` spawned processes, each taking the next variant when it is free.

    On CUDA, worker w sees GPU ``w % device_count`` only; on CPU each worker gets
    ``cores // workers`` threads, so the workers do not fight over cores.
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    from train_variants.trainer import cpu_threads, resolve_device

    device = resolve_device(cfg)
    workers = min(cfg.workers, len(indices))
    ctx = mp.get_context("spawn")  # fork after torch/OpenMP initialisation can deadlock
    slots = ctx.Queue()
    if device == "cuda":
        import torch

        n = torch.cuda.device_count()
        for w in range(workers):
            slots.put(w % n)
    else:
        for w in range(workers):
            slots.put(w)
    threads = cpu_threads(cfg)
    cfg_dict = cfg.to_dict()
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(slots, threads, device)) as pool:
        futures = {pool.submit(train_index, cfg_dict, i): i for i in indices}
        for fut in as_completed(futures):
            i = futures[fut]
            try:
                report(fut.result())
            except BrokenProcessPool as exc:
                # A worker died (killed, out of memory): its variant and the ones queued
                # behind it are not done; a rerun trains them.
                report(VariantResult(f"v{i:03d}", "failed", error=f"worker died: {exc}"))


def run_ray(cfg: TrainConfig, indices: list[int],
            report: Callable[[VariantResult], None]) -> None:
    """One Ray task per variant: a GPU each on a GPU cluster, else ``cpus_per_variant`` CPUs.

    Joins the running cluster (``ray_address``, ``RAY_ADDRESS``, or one this process
    already initialised) or starts a local one.  Ray reuses worker processes between
    tasks of one function, so the per-process base cache still applies.
    """
    try:
        import ray
    except ImportError as exc:
        raise ImportError("the ray launcher needs Ray: pip install 'ray[default]'") from exc
    started = not ray.is_initialized()
    if started:
        ray.init(address=cfg.ray_address, ignore_reinit_error=True, log_to_driver=False)
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        if cfg.device == "cuda" and not gpus:
            raise ValueError("device=cuda but the Ray cluster has no GPUs; use --device cpu "
                             "or a cluster with GPU nodes")
        on_gpu = bool(gpus) and cfg.device != "cpu"
        task = ray.remote(num_gpus=1 if on_gpu else 0,
                          num_cpus=1 if on_gpu else cfg.cpus_per_variant,
                          max_retries=0)(_ray_train_index)
        from ensemble.runio import absolute_paths

        # Workers do not run in this directory: every path they get must be absolute.
        cfg_dict = absolute_paths(cfg, ("out", "pool", "base")).to_dict()
        pending = {task.remote(cfg_dict, i): i for i in indices}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                i = pending.pop(ref)
                try:
                    report(ray.get(ref))
                except Exception as exc:  # noqa: BLE001 - a lost node, a dead worker
                    report(VariantResult(f"v{i:03d}", "failed",
                                         error=f"ray task failed: {type(exc).__name__}: {exc}"))
    finally:
        if started:
            ray.shutdown()
