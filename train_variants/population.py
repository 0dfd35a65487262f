"""Population training: the variants of a chunk trained together on one copy of the base.

``--trainer population`` trains ``population_size`` variants at a time in one process
(with ``--workers N``, in each of N local processes, one GPU each on CUDA: :func:`parts`).
Their LoRA weights are stacked (:mod:`train_variants.stacked_lora`), so each GRPO step is

1. one batched generation over every variant's prompts, each row through its own
   variant's adapter, each variant sampling from its own ``torch.Generator`` (seeded by
   its ``sampling_seed``): a step draws a fixed block of ``rows x max_completion_length``
   uniforms per variant, so what a variant samples does not depend on which other
   variants share the batch, nor on how long their completions run;
2. rewards (``ensemble.core.grading``, as the TRL path) and group-relative advantages per prompt;
3. one forward/backward over every variant's rows, each variant's loss normalised over
   its own rows as TRL normalises it (:mod:`train_variants.grpo_math`);
4. one AdamW step over the stacked parameters, gradients clipped per variant.

Each variant keeps exactly its own plan: the same prompts in the same order (TRL's
sampler without shuffling walks the plan's order in chunks of ``batch_size x
grad_accum`` prompts, dropping an incomplete last chunk), the same LoRA init (PEFT's, after
``torch.manual_seed(init_seed)``), the same optimiser settings (TRL/transformers'
defaults: AdamW, betas (0.9, 0.999), eps 1e-8, linear decay to 0, gradient clipping at
1.0, no weight decay).  Only the random stream of the samples differs from the TRL path
(TRL samples with transformers' global generator), so the two trainers give variants of
the same distribution, not the same bits.

Output is the TRL path's: ``variants/<vid>/`` with a standard PEFT adapter and
``variant.json``.  Every variant of a chunk is trained in ``variants/.tmp-<vid>-<host>-<pid>/``
(``ensemble status`` shows them running) and renamed into place once written, so a
killed run loses at most the chunk in flight, and a rerun trains what is missing.

Needs torch, transformers and peft only: TRL and vLLM are neither imported nor needed.
"""

from __future__ import annotations

import gc
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ensemble.core.files import BuildDir, write_json
from train_variants.config import TrainConfig
from train_variants.plan import Plan, VariantPlan
from ensemble.core.rundir import VARIANT_MARKER, RunDir
from train_variants.gpus import resolve_device, resolve_dtype
from train_variants.trainer import (RUNNING_FILE, TMP_PREFIX, CorrectReward, VariantResult,
                                    _curves, cpu_threads, format_reward, load_base, lora_config,
                                    record_failure, training_metrics, variant_record,
                                    variants_dir)

TRAINER = "population"
# transformers' TrainingArguments defaults, which the TRL path leaves as they are.
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
MAX_GRAD_NORM = 1.0
WEIGHT_DECAY = 0.0
# On CPU: bytes a training micro-batch may hold until its backward, and bytes of one
# layer's key (or value) cache in a generation block.  Smaller blocks are faster there:
# a demo step's loss took half the time in micro-batches of 16 rows as with all 256 rows
# at once, and generating for 64 variants half the time in blocks of 128 rows as in one
# of 1,024 (the cache grows by a copy each token; tensors above glibc's ~32 MB mmap
# threshold get fresh pages every time).  On CUDA: a quarter of the free memory for each.
CPU_TRAIN_BUDGET = 2 ** 27
CPU_GEN_BUDGET = 2 ** 24


def budgets(device: str) -> tuple[int, int]:
    """(training micro-batch bytes, generation block bytes) on ``device``."""
    if device == "cuda":
        free = available_memory(device) // 4
        return free, free
    return CPU_TRAIN_BUDGET, CPU_GEN_BUDGET


@dataclass
class Rows:
    """One step's rows, variant-major: ``variants x prompts x num_generations``."""

    prompts: list[list[int]]  # prompt token ids per row
    golds: list[str]  # gold answer per row
    completions: list[list[int]] | None = None  # completion token ids per row (EOS kept)


# --- what the population trainer covers ---------------------------------------------------

def check_supported(cfg: TrainConfig) -> None:
    """Refuse recipe settings the population trainer does not cover, naming each one.

    Raises
    ------
    ValueError
        ``use_vllm=true``, a ``loss_type`` other than dapo/grpo/dr_grpo/bnpo (bnpo only
        with ``grad_accum=1``) or ``lora_dropout > 0``; each message says to use
        ``--trainer trl``.  (The Ray launcher is refused by the config itself.)
    """
    from train_variants.grpo_math import LOSS_TYPES

    fix = "; use --trainer trl"
    if cfg.use_vllm:
        raise ValueError("use_vllm=true is not covered by the population trainer: it generates "
                         "for all variants in one transformers batch" + fix)
    if cfg.loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type={cfg.loss_type!r} is not covered by the population trainer "
                         f"(it covers {', '.join(LOSS_TYPES)})" + fix)
    if cfg.loss_type == "bnpo" and cfg.grad_accum > 1:
        raise ValueError(f"loss_type='bnpo' with grad_accum={cfg.grad_accum} is not covered by the "
                         "population trainer: TRL normalises it per micro-batch of a random "
                         "split of the step" + fix)
    if cfg.lora_dropout > 0:
        raise ValueError(f"lora_dropout={cfg.lora_dropout} is not covered by the population "
                         "trainer (dropout would draw from one stream shared by all "
                         "variants)" + fix)


def _check_no_dropout(model) -> None:
    bad = {k: v for k, v in model.config.to_dict().items()
           if "dropout" in k and isinstance(v, float) and v > 0}
    if bad:
        k, v = next(iter(bad.items()))
        raise ValueError(f"the base model has {k}={v}: the population trainer needs a base "
                         "without dropout (it would draw from one stream shared by all "
                         "variants); use --trainer trl")


# --- one chunk ------------------------------------------------------------------------------

class Population:
    """The variants ``vps`` stacked over ``model``: data, generation, loss, optimiser.

    ``model`` is the unwrapped base; its targeted linear layers are wrapped until
    :meth:`close`.  ``weight_decay``, ``max_grad_norm`` and ``adam_eps`` default to what
    the TRL path uses (tests set others to check that they apply per variant).
    """

    def __init__(self, cfg: TrainConfig, plan: Plan, vps: list[VariantPlan], model, tok,
                 device: str, *, weight_decay: float = WEIGHT_DECAY,
                 max_grad_norm: float | None = MAX_GRAD_NORM, adam_eps: float = ADAM_EPS,
                 inits: dict | None = None):
        import torch

        from train_variants import stacked_lora as sl

        _check_no_dropout(model)
        self.cfg, self.plan, self.vps, self.model, self.tok = cfg, plan, vps, model, tok
        self.device, self.n = device, len(vps)
        self.max_grad_norm = max_grad_norm
        self.kind = plan.kind
        self.chat = bool(getattr(tok, "chat_template", None))
        self.eos = _eos_ids(model, tok)
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else self.eos[0]
        self.configs = [lora_config(cfg, vp) for vp in vps]
        # Variants sharing init seed, rank and init share their init: drawn once.
        cache = {} if inits is None else inits
        self.inits = []
        for vp, lc in zip(vps, self.configs):
            key = (vp.init_seed, vp.lora_rank, vp.lora_alpha, vp.lora_init)
            if key not in cache:
                cache[key] = sl.peft_init(model, lc, vp.init_seed)
            self.inits.append(cache[key])
        rank = max(vp.lora_rank for vp in vps)
        self.layers = sl.install(model, cfg.target_modules, self.n, rank)
        for slot, (vp, init) in enumerate(zip(vps, self.inits)):
            sl.set_variant(self.layers, slot, init, vp.lora_alpha / vp.lora_rank)
        self.params = [p for layer in self.layers.values() for p in (layer.lora_A, layer.lora_B)]
        # One AdamW over the stacked tensors is one AdamW per variant: its update of an
        # element depends only on that element's gradient history, the shared step count,
        # lr, betas, eps and (decoupled) weight decay, all elementwise, and the variants'
        # slices are disjoint.  Gradient clipping is not elementwise (it scales by the norm
        # of all of a variant's gradients), so :meth:`clip` computes it per variant slice.
        self.opt = torch.optim.AdamW(self.params, lr=cfg.learning_rate, betas=ADAM_BETAS,
                                     eps=adam_eps, weight_decay=weight_decay)
        steps = cfg.steps
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: max(0.0, (steps - s) / max(1, steps)))  # transformers' linear
        self.generators = [torch.Generator().manual_seed(int(vp.sampling_seed)) for vp in vps]
        self.train_budget, self.gen_budget = budgets(device)
        # As the TRL path: activations recomputed in the backward on GPUs when asked for.
        self.checkpointing = bool(cfg.gradient_checkpointing and device == "cuda")
        if self.checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
        self.rows = [plan.training_rows(vp.index) for vp in vps]
        self.history: list[list[dict]] = [[] for _ in vps]
        self.samples: list[list[list[list[int]]]] = [[] for _ in vps]  # [variant][step][row]

    # --- data -----------------------------------------------------------------------------

    def _prompt_ids(self, problems) -> list[list[int]]:
        # As train_variants.trainer.build_dataset renders prompts and TRL tokenizes them.
        texts = [self.cfg.prompt_template.format(problem=p.problem) for p in problems]
        if not self.chat:
            return [list(x) for x in self.tok(text=texts)["input_ids"]]
        system = ([{"role": "system", "content": self.cfg.system_prompt}]
                  if self.cfg.system_prompt else [])
        convs = [system + [{"role": "user", "content": t}] for t in texts]
        out = self.tok.apply_chat_template(convs, add_generation_prompt=True, tokenize=True,
                                           return_dict=True)["input_ids"]
        return [list(x) for x in out]

    def step_rows(self, step: int) -> Rows:
        """The prompts of optimiser step ``step`` (0-based) for every variant, as rows."""
        cfg = self.cfg
        per = cfg.batch_size * cfg.grad_accum
        prompts, golds = [], []
        for rows in self.rows:
            usable = len(rows) // per * per
            start = step * per % usable
            chosen = rows[start:start + per]
            for ids, p in zip(self._prompt_ids(chosen), chosen):
                prompts.extend([ids] * cfg.num_generations)
                golds.extend([p.answer] * cfg.num_generations)
        return Rows(prompts, golds)

    # --- generation -------------------------------------------------------------------------

    def uniforms(self):
        """This step's uniforms, ``(rows, max_completion_length)``, each variant from its
        own generator: a fixed-size block per step whatever the others do."""
        import torch

        per = self._rows_per_variant()
        return torch.cat([torch.rand(per, self.cfg.max_completion_length, generator=g)
                          for g in self.generators])

    def _rows_per_variant(self) -> int:
        c = self.cfg
        return c.batch_size * c.grad_accum * c.num_generations

    def generate(self, rows: Rows) -> list[list[int]]:
        """Sample every row's completion, in blocks of the same rows of a span of variants
        whose key/value cache fits the budget (usually one block: the whole population)."""
        import torch

        from train_variants.grpo_math import sample_tokens
        from train_variants.stacked_lora import variant_span

        u = self.uniforms()
        per = self._rows_per_variant()
        seq = max(map(len, rows.prompts)) + self.cfg.max_completion_length
        c = self.model.config.get_text_config()
        heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        # On CPU the budget bounds one layer's key (or value) tensor, on CUDA the whole cache.
        kv = heads * head_dim * self._dtype_bytes()
        kv *= 1 if self.device == "cpu" else 2 * c.num_hidden_layers
        out: list[list[int] | None] = [None] * len(rows.prompts)
        self.model.eval()
        with torch.no_grad():
            for lo, hi, k0, k1 in self._blocks(seq * kv, self.gen_budget):
                idx = [v * per + k for v in range(lo, hi) for k in range(k0, k1)]
                with variant_span(self.layers, lo, hi):
                    got = decode(self.model, [rows.prompts[i] for i in idx], u[idx], self.cfg,
                                 self.eos, self.pad, self.device, sample_tokens)
                for i, comp in zip(idx, got):
                    out[i] = comp
        return out

    def _dtype_bytes(self) -> int:
        return self.model.get_output_embeddings().weight.element_size()

    def _blocks(self, row_bytes: int, budget: int) -> list[tuple[int, int, int, int]]:
        """``(lo, hi, k0, k1)``: rows ``k0 .. k1-1`` of variants ``lo .. hi-1``, as many rows
        of as many variants as fit ``budget`` at ``row_bytes`` each (at least one row)."""
        per, fit = self._rows_per_variant(), max(1, budget // max(1, row_bytes))
        g, m = (self.n, min(per, fit // self.n)) if fit >= self.n else (fit, 1)
        return [(lo, min(lo + g, self.n), k, min(k + m, per))
                for lo in range(0, self.n, g) for k in range(0, per, m)]

    # --- rewards, loss, step ------------------------------------------------------------------

    def score(self, rows: Rows) -> tuple:
        """Rewards per row and reward function, total reward and group advantages."""
        import torch

        from train_variants.grpo_math import group_advantages

        texts = self.tok.batch_decode(rows.completions, skip_special_tokens=True)
        funcs, weights = [CorrectReward(self.kind)], [1.0]
        if self.cfg.format_reward > 0:
            funcs.append(format_reward)
            weights.append(self.cfg.format_reward)
        per_func = torch.tensor([f(None, texts, answer=rows.golds) for f in funcs],
                                dtype=torch.float32).T  # (rows, funcs)
        total = per_func @ torch.tensor(weights, dtype=torch.float32)
        return per_func, total, group_advantages(total, self.cfg.num_generations)

    def loss_backward(self, rows: Rows, advantages) -> list[float]:
        """Forward and backward over every row in micro-batches; each variant's loss.

        A micro-batch holds the same number of rows of a span of variants (within a
        variant, rows of similar length together, so little is padding).  Every row's
        loss is divided by its variant's normaliser over the whole step first, so the
        micro-batches' gradients add up to each variant's TRL gradient whatever the split.
        """
        import torch

        from train_variants.grpo_math import row_normalisers
        from train_variants.stacked_lora import lora_disabled, variant_span

        cfg, per = self.cfg, self._rows_per_variant()
        lens = torch.tensor([len(c) for c in rows.completions])
        width = int(lens.max())
        mask = (torch.arange(width).unsqueeze(0) < lens.unsqueeze(1)).float()
        norm = row_normalisers(cfg.loss_type, mask, self.n, cfg.max_completion_length).float()
        total = [len(p) + len(c) for p, c in zip(rows.prompts, rows.completions)]
        order = [sorted(range(v * per, (v + 1) * per), key=total.__getitem__)
                 for v in range(self.n)]
        seq = max(map(len, rows.prompts)) + width
        losses = torch.zeros(self.n, dtype=torch.float64)
        self.model.train(self.checkpointing)  # transformers checkpoints in train mode only
        for lo, hi, k0, k1 in self._blocks(seq * self._token_bytes(), self.train_budget):
            idx = [order[v][k] for v in range(lo, hi) for k in range(k0, k1)]
            batch = self._batch(rows, idx)
            with variant_span(self.layers, lo, hi):
                ref = None
                if cfg.beta != 0.0:
                    with torch.no_grad(), lora_disabled(self.layers):
                        ref = completion_logps(self.model, *batch, cfg.temperature)
                logps = completion_logps(self.model, *batch, cfg.temperature)
                part = self._row_loss(logps, advantages[idx].to(logps.device), ref, batch[2])
                part = part / norm[idx].to(part.device)
                part.sum().backward()
            losses[lo:hi] += part.detach().double().cpu().view(hi - lo, -1).sum(dim=1)
        self.model.eval()
        return losses.tolist()

    def _token_bytes(self) -> int:
        """What one token of a training micro-batch holds until its backward, roughly:
        ~16 hidden-sized and 4 MLP-sized activations per layer, and float32 logits with
        their log-softmax and gradient."""
        c = self.model.config.get_text_config()
        vocab = self.model.get_output_embeddings().weight.shape[0]
        inter = getattr(c, "intermediate_size", None) or 4 * c.hidden_size
        return (c.num_hidden_layers * (16 * c.hidden_size + 4 * inter) * self._dtype_bytes()
                + 12 * vocab)

    def _row_loss(self, logps, adv, ref, cmask):
        from train_variants.grpo_math import per_token_loss

        tok = per_token_loss(logps, adv, ref, self.cfg.beta) * cmask
        return tok.sum(dim=1)

    def _batch(self, rows: Rows, idx: list[int]):
        """(input_ids, attention_mask, completion_mask) of rows ``idx``: prompts left-padded,
        completions right-padded, as TRL lays out its batch."""
        import torch

        prompts = [rows.prompts[i] for i in idx]
        comps = [rows.completions[i] for i in idx]
        p_len, c_len = max(map(len, prompts)), max(map(len, comps))
        ids = torch.full((len(idx), p_len + c_len), self.pad, dtype=torch.long)
        att = torch.zeros((len(idx), p_len + c_len), dtype=torch.long)
        for r, (p, c) in enumerate(zip(prompts, comps)):
            ids[r, p_len - len(p):p_len] = torch.tensor(p)
            att[r, p_len - len(p):p_len] = 1
            if c:
                ids[r, p_len:p_len + len(c)] = torch.tensor(c)
                att[r, p_len:p_len + len(c)] = 1
        cmask = att[:, p_len:].float()
        dev = self.device
        return ids.to(dev), att.to(dev), cmask.to(dev)

    def clip(self):
        """Clip each variant's gradient to ``max_grad_norm`` by its own norm.

        ``torch.nn.utils.clip_grad_norm_`` over one variant's parameters, for every
        variant at once: coefficient ``min(1, max_norm / (norm + 1e-6))``.  Returns the
        norms before clipping (what TRL logs as ``grad_norm``).
        """
        import torch

        sq = torch.zeros(self.n, dtype=torch.float32, device=self.params[0].device)
        for p in self.params:
            if p.grad is not None:
                sq += p.grad.float().pow(2).flatten(1).sum(dim=1)
        norms = sq.sqrt()
        if self.max_grad_norm is not None and self.max_grad_norm > 0:
            coef = (self.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
            for p in self.params:
                if p.grad is not None:
                    p.grad.mul_(coef.view(-1, *([1] * (p.dim() - 1))).to(p.grad.dtype))
        return norms.cpu()

    def _check_finite(self, step: int, losses, norms) -> None:
        """Stop before a non-finite loss or gradient reaches the weights.  Sampling would not
        notice a NaN (an inverse-CDF draw returns the last token), so without this the
        adapters would be trained on garbage and saved with NaN metrics."""
        import math

        bad = [self.vps[v].id for v in range(self.n)
               if not (math.isfinite(float(losses[v])) and math.isfinite(float(norms[v])))]
        if bad:
            raise FloatingPointError(
                f"step {step + 1}: non-finite loss or gradient norm for {', '.join(bad)}; "
                "no update was applied.  On CUDA, left-padded rows through SDPA attention "
                "can give NaN with some torch kernels: load the base with "
                "attn_implementation=\"eager\", or lower learning_rate if it diverged")

    def step(self, step: int, completions: list[list[int]] | None = None) -> Rows:
        """One GRPO step of every variant; ``completions`` replaces sampling (tests)."""
        t0 = time.perf_counter()
        rows = self.step_rows(step)
        rows.completions = completions if completions is not None else self.generate(rows)
        per_func, total, adv = self.score(rows)
        losses = self.loss_backward(rows, adv)
        norms = self.clip()
        self._check_finite(step, losses, norms)
        lr = self.opt.param_groups[0]["lr"]
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - t0
        per = self._rows_per_variant()
        for v in range(self.n):
            sl = slice(v * per, (v + 1) * per)
            r = total[sl]
            self.samples[v].append(rows.completions[sl])
            self.history[v].append({
                "step": step + 1, "reward": float(r.mean()), "reward_std": float(r.std()),
                "rewards/correct/mean": float(per_func[sl, 0].mean()), "loss": losses[v],
                "grad_norm": float(norms[v]), "learning_rate": lr,
                "completions/mean_length": sum(map(len, rows.completions[sl])) / per,
                "step_time": seconds})
        return rows

    def weights(self, slot: int) -> dict:
        from train_variants.stacked_lora import get_variant

        return get_variant(self.layers, slot, self.vps[slot].lora_rank)

    def close(self) -> None:
        from train_variants.stacked_lora import uninstall

        uninstall(self.model, self.layers)
        if self.checkpointing:
            self.model.gradient_checkpointing_disable()
        self.opt = self.sched = None


def _eos_ids(model, tok) -> list[int]:
    # TRL's rule: every eos id of the generation config, plus the tokenizer's.
    ids = getattr(model.generation_config, "eos_token_id", None)
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tok.eos_token_id is not None and tok.eos_token_id not in ids:
        ids = [tok.eos_token_id, *ids]
    return ids


def completion_logps(model, ids, att, cmask, temperature: float):
    """Log-probabilities of the completion tokens under ``logits / temperature`` (TRL's).

    As TRL, the forward gets no position ids (transformers counts positions from the
    left edge, pads included; rotary attention depends only on the differences).
    """
    import torch

    c = cmask.shape[1]
    logits = model(input_ids=ids, attention_mask=att, logits_to_keep=c + 1).logits[:, :-1]
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return logp.gather(-1, ids[:, -c:].unsqueeze(-1)).squeeze(-1) * cmask


def decode(model, prompts: list[list[int]], uniforms, cfg: TrainConfig, eos: list[int],
           pad: int, device: str, sample) -> list[list[int]]:
    """Sample completions of ``prompts`` token by token with a key/value cache.

    Positions count from each row's first real token (as transformers' ``generate``);
    a row stops at its first EOS (kept, as TRL keeps it), the batch at
    ``max_completion_length`` or when every row stopped.  Row ``i`` draws its token ``t``
    at ``uniforms[i, t]``.
    """
    import torch
    from transformers import DynamicCache

    rows, width = len(prompts), max(map(len, prompts))
    ids = torch.full((rows, width), pad, dtype=torch.long)
    att = torch.zeros((rows, width), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):] = torch.tensor(p)
        att[r, width - len(p):] = 1
    ids, att = ids.to(device), att.to(device)
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    eos_t = torch.tensor(eos, device=device)
    cache = DynamicCache(config=model.config)
    out = model(input_ids=ids, attention_mask=att, position_ids=pos, past_key_values=cache,
                use_cache=True, logits_to_keep=1)
    nxt = pos[:, -1:] + 1
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    tokens = []
    for t in range(cfg.max_completion_length):
        tok = sample(out.logits[:, -1], uniforms[:, t].to(device), cfg.temperature, cfg.top_p)
        tok = torch.where(done, torch.full_like(tok, pad), tok)
        tokens.append(tok)
        done |= torch.isin(tok, eos_t)
        if bool(done.all()) or t == cfg.max_completion_length - 1:
            break
        att = torch.cat([att, torch.ones((rows, 1), dtype=att.dtype, device=device)], dim=1)
        out = model(input_ids=tok.unsqueeze(1), attention_mask=att, position_ids=nxt,
                    past_key_values=cache, use_cache=True)
        nxt = nxt + 1
    gen = torch.stack(tokens, dim=1).cpu()
    is_eos = torch.isin(gen, eos_t.cpu())
    result = []
    for r in range(rows):
        hits = is_eos[r].nonzero()
        end = int(hits[0]) + 1 if len(hits) else gen.shape[1]
        result.append(gen[r, :end].tolist())
    return result


# --- chunks of a run ------------------------------------------------------------------------

def lora_parameters(model, cfg: TrainConfig, rank: int) -> int:
    """LoRA parameters of one variant of rank ``rank`` on ``model``'s target layers."""
    from train_variants.stacked_lora import target_names

    return sum(rank * (m.in_features + m.out_features)
               for m in (model.get_submodule(n) for n in target_names(model, cfg.target_modules)))


def available_memory(device: str) -> int:
    """Bytes free for training now: the GPU's free memory, or the host's MemAvailable."""
    if device == "cuda":
        import torch

        return int(torch.cuda.mem_get_info()[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def variant_bytes(model, cfg: TrainConfig, rank: int) -> int:
    """Memory one more variant of a population costs, roughly (bytes).

    Its LoRA weights, gradients and two AdamW moments in float32 (16 bytes a parameter),
    plus what its smallest share of a micro-batch (one row) holds at once: the float32
    logits of the completion with their log-softmax and gradient, the key/value cache of
    one generated row, and the saved activations of one training row (~24 values per
    hidden unit per layer per token, the order of a Llama block's).
    """
    c = model.config.get_text_config()
    vocab = model.get_output_embeddings().weight.shape[0]
    seq = 512 + cfg.max_completion_length  # a long prompt; the real ones are measured later
    kv = 2 * c.num_hidden_layers * c.hidden_size * seq * 4
    acts = 24 * c.hidden_size * c.num_hidden_layers * seq * 4
    return 16 * lora_parameters(model, cfg, rank) + 12 * (cfg.max_completion_length + 1) * vocab \
        + kv + acts


def population_size(cfg: TrainConfig, model, device: str, todo: int, rank: int) -> int:
    """``cfg.population_size``, or as many variants as fit in half the free memory (on
    CPU, of this worker's share of it: ``cfg.workers`` processes size themselves at once
    from the same free memory; on CUDA each worker has a GPU of its own)."""
    if cfg.population_size is not None:
        return max(1, min(cfg.population_size, todo))
    share = cfg.workers if device == "cpu" else 1
    fit = available_memory(device) // 2 // share // max(1, variant_bytes(model, cfg, rank))
    return max(1, min(todo, int(fit)))


def parts(indices: list[int], workers: int, size: int | None) -> list[list[int]]:
    """The local workers' shares of ``indices``: chunks of ``population_size`` when it is
    set, at most an even share each (so no worker idles); one share per worker without it
    (each worker then chunks its share by its memory).  Which variants share a pass
    changes none of them (each samples from its own stream), so any split gives the
    adapters of one process.

    Examples
    --------
    >>> parts([0, 1, 2, 3, 4], 2, None), parts(list(range(6)), 2, 2), parts([0, 1, 2], 2, 8)
    ([[0, 1, 2], [3, 4]], [[0, 1], [2, 3], [4, 5]], [[0, 1], [2]])
    """
    even = -(-len(indices) // max(1, workers))
    return chunks(sorted(indices), max(1, min(size or even, even)))


def chunks(indices: list[int], size: int) -> list[list[int]]:
    """Consecutive chunks of ``size`` variant indices (the last may be smaller)."""
    return [indices[i:i + size] for i in range(0, len(indices), size)]


def launch_population(cfg: TrainConfig, plan: Plan, indices: list[int],
                      report: Callable[[VariantResult], None], progress: bool = True) -> None:
    """Train ``indices`` in chunks of ``population_size`` in this process; report each."""
    import torch

    t_import = time.perf_counter()
    import peft  # noqa: F401 - fail here, with its own message, when missing
    import transformers  # noqa: F401

    import_s = time.perf_counter() - t_import
    del peft, transformers
    device = resolve_device(cfg)
    check_supported(cfg)
    dtype = resolve_dtype(cfg, device)
    before = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(cpu_threads(cfg))
    try:
        model, tok, load_s = load_base(cfg.base, device, dtype)
        vps = {v.index: v for v in plan.for_indices(indices)}
        rank = max(v.lora_rank for v in vps.values())
        size = population_size(cfg, model, device, len(indices), rank)
        inits: dict = {}
        for chunk in chunks(sorted(indices), size):
            for r in train_chunk(cfg, plan, [vps[i] for i in chunk], model, tok, device, dtype,
                                 progress=progress, inits=inits,
                                 timing={"import_seconds": import_s, "load_seconds": load_s}):
                report(r)
            import_s = load_s = 0.0  # paid once per process
    finally:
        torch.set_num_threads(before)


def _claim(cfg: TrainConfig, vps: list[VariantPlan], started: float) -> dict[str, BuildDir]:
    """A build dir with ``running.json`` per variant: ``ensemble status`` shows them running."""
    vdir, host, pid = variants_dir(cfg), socket.gethostname(), os.getpid()
    builds = {}
    for vp in vps:
        build = BuildDir(vdir / vp.id, VARIANT_MARKER, f"{TMP_PREFIX}{vp.id}-{host}-{pid}")
        write_json(build.open().path / RUNNING_FILE, {
            "id": vp.id, "host": host, "pid": pid, "started": started, "trainer": TRAINER,
            "population": [v.id for v in vps]})
        builds[vp.id] = build
    return builds


def _fail(cfg: TrainConfig, vp: VariantPlan, build: BuildDir | None, exc: BaseException,
          started: float, seconds: float) -> VariantResult:
    if build is not None:
        build.discard()
    msg = record_failure(cfg, vp, exc, started, trainer=TRAINER)
    return VariantResult(vp.id, "failed", seconds, error=msg)


def train_chunk(cfg: TrainConfig, plan: Plan, vps: list[VariantPlan], model, tok, device: str,
                dtype: str, progress: bool = False, inits: dict | None = None,
                timing: dict | None = None, **population_kw) -> list[VariantResult]:
    """Train the variants ``vps`` together and move each into ``variants/<vid>/``.

    Returns
    -------
    list of VariantResult
        ``skipped`` for variants already done, ``done``, or ``failed`` with the error
        (also in ``variants/.failed/<vid>.json``): a failure while training fails the
        whole chunk, one while saving only that variant.
    """
    vdir = variants_dir(cfg)
    results = [VariantResult(vp.id, "skipped") for vp in vps
               if (vdir / vp.id / VARIANT_MARKER).exists()]
    todo = [vp for vp in vps if not (vdir / vp.id / VARIANT_MARKER).exists()]
    if not todo:
        return results
    t0, started = time.perf_counter(), time.time()
    builds: dict[str, BuildDir] = {}
    try:
        builds = _claim(cfg, todo, started)
        t_build = time.perf_counter()
        pop = Population(cfg, plan, todo, model, tok, device, inits=inits, **population_kw)
        build_s = time.perf_counter() - t_build
        try:
            bar = _bar(len(todo), cfg.steps) if progress else None
            t_train = time.perf_counter()
            for s in range(cfg.steps):
                pop.step(s)
                if bar is not None:
                    mean = sum(h[-1]["rewards/correct/mean"] for h in pop.history) / len(todo)
                    bar.update(1)
                    bar.set_postfix(reward=f"{mean:.3f}")
            train_s = time.perf_counter() - t_train
            if bar is not None:
                bar.close()
            weights = [pop.weights(i) for i in range(len(todo))]
        finally:
            pop.close()
            gc.collect()
    except Exception as exc:  # noqa: BLE001 - the chunk failed; other chunks go on
        seconds = time.perf_counter() - t0
        return results + [_fail(cfg, vp, builds.get(vp.id), exc, started, seconds)
                          for vp in todo]
    run = {**(timing or {}), "build_seconds": round(build_s, 3), "train_seconds": round(train_s, 3)}
    for i, vp in enumerate(todo):
        try:
            meta = _save(cfg, plan, pop, i, weights[i], builds[vp.id].path, model, device,
                         dtype, started, t0, run)
            if not builds[vp.id].place():  # another process finished it first
                results.append(VariantResult(vp.id, "skipped"))
                continue
            (RunDir(cfg.out).failed_dir / f"{vp.id}.json").unlink(missing_ok=True)
            results.append(VariantResult(vp.id, "done", time.perf_counter() - t0,
                                         metrics=meta["metrics"]))
        except Exception as exc:  # noqa: BLE001 - this variant's save failed
            results.append(_fail(cfg, vp, builds[vp.id], exc, started,
                                 time.perf_counter() - t0))
    return results


def _bar(n: int, steps: int):
    from tqdm.auto import tqdm

    return tqdm(total=steps, desc=f"  population of {n} GRPO", unit="step", leave=False,
                dynamic_ncols=True)


def _versions() -> dict:
    from ensemble.core.versions import versions

    return versions("torch", "transformers", "peft")


def _save(cfg: TrainConfig, plan: Plan, pop: Population, slot: int, weights: dict, tmp: Path,
          model, device: str, dtype: str, started: float, t0: float, run: dict) -> dict:
    """Write one variant's adapter and ``variant.json`` (the TRL path's fields) into ``tmp``."""
    import torch

    from train_variants.stacked_lora import save_peft_adapter

    t_save = time.perf_counter()
    vp = pop.vps[slot]
    save_peft_adapter(model, pop.configs[slot], weights, tmp)
    init = pop.inits[slot]
    with torch.no_grad():
        num = sum(float((w - init[k][j]).pow(2).sum()) for k, ab in weights.items()
                  for j, w in enumerate(ab))
        den = sum(float(w.pow(2).sum()) for ab in init.values() for w in ab)
    metrics = training_metrics(_curves(pop.history[slot]), len(pop.history[slot]), num, den)
    (tmp / RUNNING_FILE).unlink(missing_ok=True)
    meta = variant_record(cfg, vp, plan, metrics, {
                "host": socket.gethostname(), "pid": os.getpid(), "device": device,
                "dtype": dtype, "vllm_generation": False, "started": started,
                "finished": time.time(), "wall_seconds": round(time.perf_counter() - t0, 3),
                "threads": torch.get_num_threads() if device == "cpu" else None,
                "import_seconds": 0.0, "load_seconds": 0.0, **run,
                "save_seconds": round(time.perf_counter() - t_save, 3),
                "trainer": TRAINER, "population": [v.id for v in pop.vps],
                "versions": _versions()})
    write_json(tmp / VARIANT_MARKER, meta)
    return meta
