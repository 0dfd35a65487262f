"""What both stages need from a Ray cluster before they dispatch work to it.

Ray workers inherit the environment of the ``ray start`` that made their node, not the
driver's, so the settings the work depends on (an offline hub, the caches, vLLM's
switches) travel in the job's ``runtime_env`` (:func:`runtime_env`).  A task or actor
that asks for more GPUs than any node has waits in Ray's queue forever, without a word:
:func:`check_placeable` refuses it first.  Ray is imported by the callers; nothing here
imports it.
"""

from __future__ import annotations

import os

# The driver's variables the workers must share: the offline switches and the project's
# cache, and vLLM's switches -- but not the per-node ones (an engine would bind the
# driver's address), nor secrets (a runtime env is shown on Ray's dashboard).
# The hub's cache and endpoint too: a driver with HF_HOME=/shared/hf and the hub offline
# would otherwise send its workers to look in their own ~/.cache, and fail.
FORWARDED = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE",
             "HF_HOME", "HF_HUB_CACHE", "HF_DATASETS_CACHE", "HF_ENDPOINT",
             "ENSEMBLE_CACHE", "TOKENIZERS_PARALLELISM")
FORWARDED_PREFIXES = ("VLLM_",)
PER_NODE = ("VLLM_HOST_IP", "VLLM_PORT", "VLLM_DP_")


def forwarded_env(environ=None) -> dict[str, str]:
    """The driver's variables a Ray job passes to its workers.

    Variables the job's own runtime env already sets (``ray job submit --runtime-env``)
    are left out: Ray refuses to merge two runtime envs that set one key.

    Examples
    --------
    >>> forwarded_env({"HF_HUB_OFFLINE": "1", "HOME": "/root", "VLLM_HOST_IP": "10.0.0.1",
    ...                "VLLM_ATTENTION_BACKEND": "FLASH_ATTN", "HF_TOKEN": "secret",
    ...                "HF_HOME": "/shared/hf"})
    {'HF_HOME': '/shared/hf', 'HF_HUB_OFFLINE': '1', 'VLLM_ATTENTION_BACKEND': 'FLASH_ATTN'}
    """
    import json

    env = os.environ if environ is None else environ
    try:
        job = json.loads(env.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")
        taken = set((job.get("runtime_env") or {}).get("env_vars") or {})
    except (ValueError, AttributeError):
        taken = set()
    return {k: env[k] for k in sorted(env)
            if (k in FORWARDED or k.startswith(FORWARDED_PREFIXES))
            and not k.startswith(PER_NODE) and k not in taken}


def runtime_env() -> dict:
    """``ray.init(runtime_env=...)`` for a job of this project."""
    return {"env_vars": forwarded_env()}


def check_placeable(nodes: list[dict], gpus: int, what: str, holder: str) -> None:
    """Refuse work that no node can hold (Ray would queue it forever, silently).

    Examples
    --------
    >>> check_placeable([{"Alive": True, "Resources": {"GPU": 8.0}}], 4, "gpus", "a task")
    >>> check_placeable([{"Alive": True, "Resources": {"GPU": 2.0}}], 4, "gpus", "a task")
    Traceback (most recent call last):
    ...
    ValueError: gpus=4 but the largest node of the Ray cluster has 2 GPU(s), and a task must fit on one node; lower gpus or add larger nodes
    """
    most = max((n.get("Resources", {}).get("GPU", 0) for n in nodes if n.get("Alive")),
               default=0)  # nodes: ray.nodes()
    if gpus > most:
        raise ValueError(f"{what}={gpus} but the largest node of the Ray cluster has {most:g} "
                         f"GPU(s), and {holder} must fit on one node; lower {what} or add "
                         "larger nodes")


def gpu_memory_gb() -> float | None:
    """One GPU's memory in GiB, run on a Ray worker that holds one (:func:`probe_gpu_gb`)."""
    from ensemble.core.sizing import visible_gpu_gb

    gb = visible_gpu_gb()
    return None if gb is None else round(gb, 1)


def probe_gpu_gb(ray) -> float | None:
    """Ask one GPU of the cluster for its memory (``ray``: the imported module).

    A driver without a GPU (a login node) would otherwise size the work for the default
    80 GiB: half the variants per node on H200s, engines that cannot start on 40 GB cards.
    """
    task = ray.remote(num_gpus=1, num_cpus=0, max_retries=0)(gpu_memory_gb)
    return ray.get(task.remote())

