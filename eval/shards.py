"""Launchers for the answering stage: this process, or one Ray task per shard."""

from __future__ import annotations

import dataclasses

from eval.config import AnswerConfig
from eval.answering import AnswerSummary, run_answer


def launch_answer(cfg: AnswerConfig, progress: bool = True) -> AnswerSummary:
    """Run the answering stage with ``cfg.launcher``.

    ``ray`` starts (or joins) a Ray cluster and runs ``cfg.workers`` tasks, task i
    answering shard i/workers with its own engine; each task asks for
    ``tensor_parallel_size`` GPUs (computed here from the model when not set, see
    :mod:`eval.budget`) when the cluster has GPUs, else one CPU.  Units never overlap
    between shards and files are written atomically, so tasks need no coordination beyond
    the shared run directory.
    """
    from ensemble.core.files import check_writable_dir
    from ensemble.core.models import resolve_base

    check_writable_dir(cfg.out)
    # Packaged and GGUF bases (smollm2-135m, gguf:PATH) become a cached HF directory,
    # once, before any shard or Ray task starts.
    cfg = dataclasses.replace(cfg, base=resolve_base(cfg.base, progress=progress))
    if cfg.launcher == "local":
        return run_answer(cfg, progress=progress)
    if cfg.shard != "0/1":  # before importing Ray: conflicting options cost nothing to find
        raise ValueError(f"shard={cfg.shard!r} and launcher=ray conflict: the ray launcher "
                         "makes its own shards; drop --shard")
    try:
        import ray
    except ImportError as exc:
        raise ImportError("the ray launcher needs Ray: pip install 'ray[default]'") from exc
    from ensemble.core.files import absolute_paths, mark_visible, unmark_visible

    # Workers do not run in this directory: every path they get must be absolute.
    cfg = absolute_paths(cfg, ("out", "adapters", "benchmark", "base"))
    cfg.out.mkdir(parents=True, exist_ok=True)
    started = not ray.is_initialized()
    if started:
        from ensemble.core.cluster import runtime_env

        ray.init(address=cfg.ray_address, ignore_reinit_error=True, log_to_driver=False,
                 runtime_env=runtime_env())
    out = AnswerSummary()
    parts = []
    token = None
    try:
        gpus = ray.cluster_resources().get("GPU", 0)
        from eval.backends import has_cuda

        if not gpus and has_cuda():
            # A driver that joined the wrong cluster (a new local one started without its
            # GPUs) would otherwise answer on CPUs without a word.
            raise ValueError(
                f"the Ray cluster ({cfg.ray_address or 'RAY_ADDRESS or a local one'}) has no "
                "GPUs but this machine has; point ray_address at the GPU cluster, or "
                "answer with launcher = \"local\"")
        if gpus and cfg.gpu_memory_gb is None and not has_cuda():
            from ensemble.core.cluster import probe_gpu_gb

            cfg = dataclasses.replace(cfg, gpu_memory_gb=probe_gpu_gb(ray))
        if gpus:
            from eval.budget import resolve_engine
            from ensemble.core.problems import load_problems

            problems = load_problems(cfg.benchmark, cfg.problem_field, cfg.answer_field,
                                     cfg.id_field, cfg.split, cfg.limit)
            cfg = resolve_engine(cfg, problems, on_gpu=True)
        per_shard = (cfg.tensor_parallel_size or 1) if gpus and cfg.backend == "vllm" else 1
        if gpus:
            from ensemble.core.cluster import check_placeable

            check_placeable(ray.nodes(), per_shard, "tensor_parallel_size",
                            "one shard's engine")
        task = ray.remote(num_gpus=per_shard if gpus else 0, num_cpus=0 if gpus else 1,
                          max_retries=0)(_shard_task)
        token = mark_visible(cfg.out)  # each shard checks it sees this run directory
        refs = {task.remote(cfg.to_dict(), i, cfg.workers, token): i
                for i in range(cfg.workers)}
        # Each shard on its own: one failed shard must not discard the others' work.
        for ref, i in refs.items():
            try:
                parts.append(ray.get(ref))
            except Exception as exc:  # noqa: BLE001 - a lost node, a dead worker, an error
                out.failed[f"shard {i}/{cfg.workers}"] = (
                    f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:500]}")
    finally:
        unmark_visible(cfg.out, token)
        if started:
            ray.shutdown()
    for p in parts:
        out.done += p.done
        out.skipped_done += p.skipped_done
        out.failed.update(p.failed)
        out.skipped_adapters.update(p.skipped_adapters)
        out.tokens += p.tokens
        out.seconds = max(out.seconds, p.seconds)
    return out


def _shard_task(cfg_dict: dict, index: int, count: int,
                token: str | None = None) -> AnswerSummary:
    from ensemble.core.files import check_visible

    cfg = AnswerConfig.from_dict({**cfg_dict, "launcher": "local", "shard": f"{index}/{count}"})
    check_visible(cfg.out, "the run directory", token)
    return run_answer(cfg, progress=False)
