"""TRL's colocated vLLM engine during one variant: seeded, on its own GPU, shut down after.

TRL 1.16 (``trl/generation/vllm_generation.py``) builds the colocated engine with
``seed = process_index // tensor_parallel_size`` -- 0 for every single-process variant --
and samples every rollout from that engine-wide stream: variants meant to differ in
sampling would draw identical rollouts.  Its only per-request seed is
``generation_kwargs["seed"]``, which it copies into the one ``SamplingParams`` of all the
prompts of a generation batch; colocate mode sends every prompt ``num_generations`` times
with ``n=1``, so one seed would make the completions of a GRPO group identical (zero
advantage).  :func:`seed_requests` instead gives each request its own seed, a pure
function of (variant sampling seed, generation call, request index).

With a GPU of its own the engine lives on visible GPU 0 (vLLM's colocated worker takes
``cuda:LOCAL_RANK``) while the training model is on the others; :func:`train_on_gpu`
points transformers' device at the training GPU, and :func:`pin_engine` runs every engine
call on the engine's GPU and leaves the training GPU current in between.
:func:`launch_env_restored` removes the launcher variables TRL leaves in the environment.

:func:`shutdown_engine` frees the engine after a variant: a worker that trains several
variants would otherwise meet the previous engine's weights and KV cache when it builds
the next one (the trainer, and so the engine, can outlive ``train()``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os

# What TRL's colocate mode writes into os.environ for vLLM's external launcher
# (trl/generation/vllm_generation.py) and never removes.  Left behind, they make the next
# variant's TrainingArguments in this process build a distributed accelerate state
# (LOCAL_RANK set: MULTI_GPU over nccl), which refuses a device-mapped model ("can't train
# a model loaded with device_map='auto' in any distributed mode") or moves a one-GPU model
# onto the engine's GPU.  vLLM reads them only while the engine starts.
LAUNCH_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def request_seed(seed: int, call: int, index: int) -> int:
    """The sampling seed of request ``index`` of generation call ``call`` (31 bits).

    Examples
    --------
    >>> request_seed(0, 0, 0) != request_seed(0, 0, 1) != request_seed(1, 0, 0)
    True
    """
    blob = f"ensemble-rollout|{seed}|{call}|{index}".encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "little") >> 1


def seed_requests(llm, seed: int) -> None:
    """Make ``llm.generate`` give every request its own seed derived from ``seed``.

    TRL passes one ``SamplingParams`` (or a list) for all prompts; each is cloned with
    ``seed = request_seed(seed, call, i)``, ``call`` counting this engine's generate calls.
    """
    generate = llm.generate
    calls = [0]

    @functools.wraps(generate)
    def seeded(prompts, sampling_params=None, *args, **kwargs):
        n = len(prompts) if isinstance(prompts, (list, tuple)) else 1
        params = sampling_params
        if params is None:
            from vllm import SamplingParams

            params = SamplingParams()
        if not isinstance(params, (list, tuple)):
            params = [params] * n
        call, calls[0] = calls[0], calls[0] + 1
        out = []
        for i, p in enumerate(params):
            q = p.clone()
            q.seed = request_seed(seed, call, i)
            out.append(q)
        return generate(prompts, out, *args, **kwargs)

    llm.generate = seeded


@contextlib.contextmanager
def launch_env_restored():
    """Build a colocated engine (``GRPOTrainer(...)``) in the block with a rendezvous of
    its own, and put back :data:`LAUNCH_VARS` as they were (unset ones unset) after it.

    TRL keeps an inherited ``MASTER_ADDR``/``MASTER_PORT`` (Slurm, torchrun): every actor
    on a node would then bind one port, or meet a store on another host.  Inside the block
    the engine's one-process group rendezvous on this host at a free port TRL picks.
    """
    saved = {k: os.environ.get(k) for k in LAUNCH_VARS}
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ.pop("MASTER_PORT", None)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def train_on_gpu(args, gpu: int) -> None:
    """Make the ``TrainingArguments`` ``args`` train on visible GPU ``gpu`` in one process.

    transformers fixes a single process's device at ``cuda:0`` and its GPU count at every
    visible GPU (``TrainingArguments._setup_devices``).  With the colocated engine on GPU 0
    and training on GPU 1, TRL computes the loss on the current device (accelerate's
    index-less ``cuda``) while ``Trainer`` keeps its running loss on ``args.device``, and
    refuses the mismatch ("Calculated loss must be on the original device"); with several
    GPUs visible, ``n_gpu > 1`` is DataParallel, which GRPOTrainer refuses.  Both are set
    here before the trainer is built: the device is the cached property's value (a
    ``functools.cached_property`` lives in the instance ``__dict__``), one GPU, and
    ``gpu`` the current device.
    """
    import torch

    device = torch.device("cuda", gpu)
    args.__dict__["_setup_devices"] = device
    args._n_gpu = 1
    torch.cuda.set_device(device)


def lora_base_weight(layer):
    """The base weight a PEFT LoRA layer adapts: the wrapped module's ``weight``, or for
    LoRA on a fused MoE expert tensor (PEFT's ``ParamWrapper``, ``target_parameters``)
    the wrapped parameter itself (``experts.gate_up_proj``), which has no ``.weight``."""
    return layer.get_param() if hasattr(layer, "get_param") else layer.get_base_layer().weight


def sync_adapted_weights_only(vllm_generation, model) -> int:
    """Make TRL's weight sync send only the base weights LoRA wraps; returns how many.

    TRL merges the adapter and sends every parameter of the model to the engine each
    step (Qwen3-30B-A3B: ~57 GB, expert tensors through vLLM's fused-MoE loader).  With
    :func:`train_variants.trainer.keep_base_exact` every other weight is bit-identical to
    the checkpoint the engine loaded, so only the wrapped ones (merged ``W + BA``) change:
    ~2 GB for attention-only targets.  The weights are told apart by storage, not by
    name (TRL rewrites names for vLLM), and TRL's iterator is still run to its end, so
    its merge and unmerge stay paired.
    """
    from peft.tuners.lora import LoraLayer

    adapted = {lora_base_weight(m).data_ptr() for m in model.modules()
               if isinstance(m, LoraLayer)}
    every = vllm_generation._iter_named_params

    def only_adapted():
        for name, tensor in every():
            if tensor.data_ptr() in adapted:
                yield name, tensor

    vllm_generation._iter_named_params = only_adapted
    return len(adapted)


def pin_engine(vllm_generation, engine_gpu: int, train_gpu: int) -> None:
    """Run the engine's generate and weight sync on ``engine_gpu``; make ``train_gpu``
    the current device for the training steps (TRL moves batches to "cuda", the current
    device, and vLLM made its own GPU current when it started)."""
    import torch

    if engine_gpu == train_gpu:
        return
    for name in ("generate", "sync_weights"):
        method = getattr(vllm_generation, name)

        def on_engine(*args, _method=method, **kwargs):
            with torch.cuda.device(engine_gpu):
                return _method(*args, **kwargs)

        setattr(vllm_generation, name, on_engine)
    torch.cuda.set_device(train_gpu)


def shutdown_engine(holder) -> bool:
    """Shut down the vLLM engine ``holder`` keeps (a GRPOTrainer, or its
    ``vllm_generation``) and free its memory; returns whether there was one.

    The engine core is shut down, the holder's reference dropped, and vLLM's model-
    parallel groups and torch.distributed process group (TRL's colocate mode starts them
    through vLLM's external launcher) destroyed, so the next variant's engine starts
    from a clean process.
    """
    from ensemble.core.engines import free_memory, shutdown_llm

    gen = getattr(holder, "vllm_generation", holder)
    llm = getattr(gen, "llm", None)
    if llm is None:
        return False
    shutdown_llm(llm)
    gen.llm = None
    del llm
    from vllm.distributed.parallel_state import (destroy_distributed_environment,
                                                 destroy_model_parallel)

    destroy_model_parallel()
    destroy_distributed_environment()
    free_memory()
    return True
