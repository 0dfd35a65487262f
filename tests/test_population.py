"""The population trainer (``--trainer population``) against the TRL path, on tiny models.

The reference is TRL itself: ``train_variants.trainer.train_variant`` training one variant
alone, with TRL's generation replaced by given completions (:class:`Replay`), so both
trainers see the same prompts and the same completions and must agree on everything
that follows: rewards, advantages, loss, gradients, clipping, AdamW and its schedule.
One thread per process, as in tests/test_train.py.
"""

from __future__ import annotations

import dataclasses

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.train_helpers import cfg_for, tiny_train_config  # noqa: E402
from train_variants.config import TrainConfig  # noqa: E402
from train_variants.plan import make_plan  # noqa: E402

from ensemble.core.models import DEMO_BASE_DIR as DEMO_BASE  # noqa: E402


def fixed_completions(tok, n_rows: int, max_len: int, seed: int) -> list[list[int]]:
    """Completions for the digit model's ``a - a`` pool with rewards that differ within
    a group and lengths from 1 to ``max_len``: a digit (``0`` is right), maybe letters,
    then EOS unless cut at ``max_len``."""
    import random

    rng = random.Random(seed)
    digits = [tok.convert_tokens_to_ids(c) for c in "0123456789"]
    letters = [tok.convert_tokens_to_ids(c) for c in "xyz"]
    out = []
    for _ in range(n_rows):
        row = [digits[0] if rng.random() < 0.4 else rng.choice(digits[1:])]
        row += [rng.choice(letters) for _ in range(rng.randrange(max_len))]
        row = row[:max_len]
        if len(row) < max_len and rng.random() < 0.7:
            row.append(tok.eos_token_id)
        out.append(row)
    return out


class Replay:
    """The TRL path with TRL's sampling replaced by ``completions[step]``.

    Records the prompt ids TRL asked to complete, every ``_compute_loss`` value and the
    trainer's logs (``grad_norm`` before clipping).  ``weight_decay`` and
    ``max_grad_norm`` go into the GRPOConfig the TRL path builds.
    """

    def __init__(self, monkeypatch, weight_decay: float = 0.0, max_grad_norm: float = 1.0,
                 adam_eps: float = 1e-8):
        import trl

        real_config, real_trainer = trl.GRPOConfig, trl.GRPOTrainer
        replay = self
        self.completions: list[list[list[int]]] = []
        self.prompts: list[list[list[int]]] = []
        self.losses: list[float] = []
        self.logs: list[dict] = []

        class Trainer(real_trainer):
            def _generate_single_turn(self, prompt_ids, images, multimodal_fields,
                                      num_generations, has_tool_images=False):
                step = len(replay.prompts)
                replay.prompts.append([list(p) for p in prompt_ids])
                return [list(c) for c in replay.completions[step]], None

            def _compute_loss(self, model, inputs):
                loss = super()._compute_loss(model, inputs)
                replay.losses.append(float(loss.detach()))
                return loss

            def log(self, logs, start_time=None):
                replay.logs.append(dict(logs))
                return super().log(logs, start_time)

        def config(**kw):
            return real_config(**{**kw, "weight_decay": weight_decay,
                                  "max_grad_norm": max_grad_norm, "adam_epsilon": adam_eps})

        monkeypatch.setattr(trl, "GRPOConfig", config)
        monkeypatch.setattr(trl, "GRPOTrainer", Trainer)

    def train(self, cfg: TrainConfig, vp, completions) -> dict:
        """Train ``vp`` alone on ``completions`` (one list of rows per step)."""
        from safetensors.torch import load_file

        from train_variants.trainer import train_variant

        self.completions, self.prompts, self.losses, self.logs = completions, [], [], []
        res = train_variant(cfg, vp, make_plan(cfg))
        assert res.status == "done", res.error
        ga = cfg.grad_accum
        w = load_file(str(cfg.out / "variants" / vp.id / "adapter_model.safetensors"))
        return {"prompts": self.prompts,
                "loss": [sum(self.losses[i:i + ga]) for i in range(0, len(self.losses), ga)],
                "grad_norm": [lg["grad_norm"] for lg in self.logs if "grad_norm" in lg],
                "learning_rate": [lg["learning_rate"] for lg in self.logs if "grad_norm" in lg],
                "weights": w}


def _peft_key(name: str, which: str) -> str:
    return f"base_model.model.{name}.{which}.weight"


def run_population(cfg: TrainConfig, completions: dict, steps: int, only=None, **kw) -> dict:
    """The population trainer on ``cfg``'s variants (or the indices ``only``), sampling
    replaced by ``completions[vid][step]``; per variant: prompts, loss, grad_norm and
    learning rate per step, weights and init."""
    from train_variants.population import Population
    from train_variants.trainer import load_base

    plan = make_plan(cfg)
    vps = plan.variants if only is None else plan.for_indices(only)
    model, tok, _ = load_base(cfg.base, "cpu", "float32")
    pop = Population(cfg, plan, vps, model, tok, "cpu", **kw)
    per = pop._rows_per_variant()
    prompts = {v.id: [] for v in vps}
    try:
        for s in range(steps):
            rows = pop.step_rows(s)
            for i, v in enumerate(vps):
                prompts[v.id].append(rows.prompts[i * per:(i + 1) * per])
            pop.step(s, completions=[c for v in vps for c in completions[v.id][s]])
        return {v.id: {"prompts": prompts[v.id],
                       "loss": [h["loss"] for h in pop.history[i]],
                       "grad_norm": [h["grad_norm"] for h in pop.history[i]],
                       "learning_rate": [h["learning_rate"] for h in pop.history[i]],
                       "weights": pop.weights(i), "init": pop.inits[i], "rank": v.lora_rank}
                for i, v in enumerate(vps)}
    finally:
        pop.close()


def _completions_for(cfg: TrainConfig, steps: int) -> dict:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(cfg.base)
    rows = cfg.batch_size * cfg.grad_accum * cfg.num_generations
    return {v.id: [fixed_completions(tok, rows, cfg.max_completion_length, seed=100 * v.index + s)
                   for s in range(steps)] for v in make_plan(cfg).variants}


def _close(a, b, what: str, rtol: float = 1e-5, atol: float = 1e-7) -> None:
    import torch

    torch.testing.assert_close(torch.as_tensor(a, dtype=torch.float64),
                               torch.as_tensor(b, dtype=torch.float64), rtol=rtol, atol=atol,
                               msg=lambda m: f"{what}: {m}")


# --- (1) one population step = each variant stepped alone ----------------------------------

def _update_close(together: dict, alone: dict, what: str, key=None, atol: float = 1e-5) -> None:
    """Per module and factor, the updated weights agree to rtol 1e-5, and to ``atol``
    times the tensor's largest update (float32 weights of ~0.1 hold an update of ~1e-3
    to a few ulps, so the update alone cannot be compared at 1e-5)."""
    for name, ab in together["weights"].items():
        for j in range(2):
            init = together["init"][name][j]
            theirs = alone["weights"][key(name, j) if key else name]
            theirs = theirs if key else theirs[j]
            assert (theirs - init).abs().max() > 0, f"{what} {name}: no update"
            _close(ab[j], theirs, f"{what} {name} {'AB'[j]}",
                   atol=atol * float((theirs - init).abs().max()))


def demo_cfg(out, trainer: str = "population", **kw) -> TrainConfig:
    """Three variants of the shipped demo base, of ranks 16, 16 and 8, PEFT's orthogonal
    init (A and B nonzero, BA = 0, so A's gradient is not zero in the first step)."""
    return TrainConfig.from_dict({
        "base": str(DEMO_BASE), "pool": "synthetic:64:d2:s1:small", "out": str(out),
        "variants": 3, "steps": 1, "batch_size": 4, "num_generations": 4,
        "max_completion_length": 64, "lora_rank": 8, "lora_alpha": 16.0,
        "learning_rate": 3e-3, "mask_fraction": 0.5, "cpu_threads": 1,
        "gradient_checkpointing": False, "device": "cpu", "trainer": trainer,
        "vary": ["order", "mask", "rank"], "rank_choices": [8, 16], "lora_init": "orthogonal",
        **kw})


@pytest.fixture(scope="module")
def demo_completions(tmp_path_factory) -> dict:
    """The population's own samples for the first step of :func:`demo_cfg`'s variants."""
    from train_variants.population import Population
    from train_variants.trainer import load_base

    cfg = demo_cfg(tmp_path_factory.mktemp("demo"))
    plan = make_plan(cfg)
    assert [v.lora_rank for v in plan.variants] == [16, 16, 8]
    model, tok, _ = load_base(cfg.base, "cpu", "float32")
    pop = Population(cfg, plan, plan.variants, model, tok, "cpu")
    try:
        got = pop.generate(pop.step_rows(0))
    finally:
        pop.close()
    per = len(got) // 3
    return {v.id: [got[i * per:(i + 1) * per]] for i, v in enumerate(plan.variants)}


# AdamW's eps in the two tests below is 1e-4, not 1e-8: near g = 0 the update
# lr g / (|g| + eps) has slope lr / eps (3e5 at eps 1e-8), so at its default AdamW turns
# any rounding difference into a visible one, while in its sign-like regime it hides the
# gradient's scale.  At 1e-4 a loss normalised over the wrong rows or a clipping
# coefficient shared between variants changes the update.  The default eps is checked
# on identical gradients in test_one_adamw_over_the_stack_is_one_adamw_per_variant.
STEP = {"weight_decay": 0.1, "max_grad_norm": 0.1, "adam_eps": 1e-4}


def test_population_step_updates_each_variant_as_it_alone(demo_completions, tmp_path,
                                                          monkeypatch):
    """Issue 14, test 1: given the same prompts and completions, one population step
    updates each variant as that variant stepped alone (float32, rtol 1e-5): three
    variants of two ranks in one stack, weight decay on, clipping engaged for two.

    One micro-batch per step here (a large budget): GRPO's gradient is a sum of rows
    whose advantages cancel (they sum to zero per prompt), so regrouping the rows into
    other micro-batches moves its last digits (~1e-5 of the gradient norm)."""
    from train_variants import population as pm

    monkeypatch.setattr(pm, "CPU_TRAIN_BUDGET", 2 ** 40)
    cfg = demo_cfg(tmp_path)
    together = run_population(cfg, demo_completions, 1, **STEP)
    norms = []
    for i, (vid, t) in enumerate(together.items()):
        alone = run_population(cfg, demo_completions, 1, only=[i], **STEP)[vid]
        assert alone["prompts"] == t["prompts"]
        _close(t["loss"], alone["loss"], f"{vid} loss")
        _close(t["grad_norm"], alone["grad_norm"], f"{vid} grad_norm")
        norms += alone["grad_norm"]
        _update_close(t, alone, vid)
    assert min(norms) < STEP["max_grad_norm"] < max(norms), f"clipping for some: {norms}"


def test_population_step_is_trls_step_of_each_variant_alone(demo_completions, tmp_path,
                                                            monkeypatch):
    """The same step against the reference: ``train_variant`` (TRL's GRPOTrainer) on
    each variant alone, TRL's sampling replaced by the same completions.  TRL asks for
    the plan's prompts in the plan's order; loss, gradient norm and update agree."""
    from train_variants import population as pm

    monkeypatch.setattr(pm, "CPU_TRAIN_BUDGET", 2 ** 40)
    pop = run_population(demo_cfg(tmp_path / "pop"), demo_completions, 1, **STEP)
    trl_cfg = demo_cfg(tmp_path / "trl", trainer="trl")
    replay = Replay(monkeypatch, **STEP)
    for vp in make_plan(trl_cfg).variants:
        alone, together = replay.train(trl_cfg, vp, demo_completions[vp.id]), pop[vp.id]
        assert alone["prompts"] == together["prompts"], "the plans' prompts differ"
        _close(together["loss"], alone["loss"], f"{vp.id} loss")
        _close(together["grad_norm"], alone["grad_norm"], f"{vp.id} grad_norm")
        # TRL rounds differently (its fused float32 log-prob kernel, other sums): entries
        # whose gradient nearly cancels move by up to ~1e-4 of the largest update.
        _update_close(together, alone, vp.id, atol=1e-4,
                      key=lambda n, j: _peft_key(n, ("lora_A", "lora_B")[j]))


# --- (2) the loss is TRL's ------------------------------------------------------------------

@pytest.mark.parametrize("loss_type,beta,grad_accum", [
    ("dapo", 0.0, 1), ("dapo", 0.04, 2), ("grpo", 0.0, 2), ("grpo", 0.04, 1),
    ("dr_grpo", 0.04, 1), ("bnpo", 0.0, 1)])
def test_population_loss_equals_trl_grpo_loss(digit_base, zero_pool, tmp_path, monkeypatch,
                                              loss_type, beta, grad_accum):
    """Issue 14, test 2: on the same batch, each variant's loss (and its gradient norm)
    is TRL's GRPO loss for the same config: loss type, KL beta, accumulation; and so is
    the learning-rate schedule.  Two steps: at the first the adapter is still the base
    (B = 0), so the KL term is zero."""
    settings = dict(variants=2, steps=2, max_completion_length=4, loss_type=loss_type,
                    beta=beta, grad_accum=grad_accum, batch_size=2, mask_fraction=0.25)
    pop_cfg = cfg_for(digit_base, zero_pool, tmp_path / "pop", trainer="population", **settings)
    trl_cfg = cfg_for(digit_base, zero_pool, tmp_path / "trl", **settings)
    # TRL in micro-batches of one accumulation step's prompts, as the population trainer
    # computes (and logs) its loss: the update is the same either way (test_train.py).
    trl_cfg = dataclasses.replace(trl_cfg, micro_batch=trl_cfg.batch_size * trl_cfg.num_generations)
    completions = _completions_for(pop_cfg, 2)
    pop = run_population(pop_cfg, completions, 2)
    replay = Replay(monkeypatch)
    for vp in make_plan(trl_cfg).variants:
        alone = replay.train(trl_cfg, vp, completions[vp.id])
        assert alone["prompts"] == pop[vp.id]["prompts"]
        assert min(alone["grad_norm"]) > 1e-3  # batches with a signal
        _close(pop[vp.id]["loss"], alone["loss"], f"{vp.id} loss")
        _close(pop[vp.id]["grad_norm"], alone["grad_norm"], f"{vp.id} grad_norm")
        _close(pop[vp.id]["learning_rate"], alone["learning_rate"], f"{vp.id} lr schedule")


def test_one_adamw_over_the_stack_is_one_adamw_per_variant(digit_base, zero_pool, tmp_path):
    """The optimiser claim at TRL's defaults (eps 1e-8): given identical gradients, one
    AdamW over the stacked tensors with per-variant clipping is N AdamWs, each with
    ``clip_grad_norm_`` over its own variant, weight decay included; ranks padded to the
    stack's stay exactly zero."""
    import torch

    from train_variants.population import Population
    from train_variants.trainer import load_base

    cfg = cfg_for(digit_base, zero_pool, tmp_path, trainer="population", variants=3,
                  vary=["order", "mask", "rank"], rank_choices=[8, 16], learning_rate=1e-2)
    plan = make_plan(cfg)
    model, tok, _ = load_base(cfg.base, "cpu", "float32")
    wd, max_norm = 0.1, 3.0
    pop = Population(cfg, plan, plan.variants, model, tok, "cpu", weight_decay=wd,
                     max_grad_norm=max_norm)
    try:
        gen = torch.Generator().manual_seed(0)
        ranks = [v.lora_rank for v in plan.variants]
        assert sorted(set(ranks)) == [8, 16]
        with torch.no_grad():
            for p in pop.params:
                p.normal_(0, 0.1, generator=gen)
            for layer in pop.layers.values():  # a trained state, padding zero as installed
                for i, r in enumerate(ranks):
                    layer.lora_A[i, r:] = 0
                    layer.lora_B[i, :, r:] = 0
        alone = []
        for i, r in enumerate(ranks):
            w = {n: (a.clone().requires_grad_(), b.clone().requires_grad_())
                 for n, (a, b) in pop.weights(i).items()}
            opt = torch.optim.AdamW([t for ab in w.values() for t in ab], lr=cfg.learning_rate,
                                    weight_decay=wd)
            alone.append((w, opt))
        clipped = 0
        for _ in range(3):
            for layer in pop.layers.values():
                ga = torch.randn(layer.lora_A.shape, generator=gen)
                gb = torch.randn(layer.lora_B.shape, generator=gen)
                for i, r in enumerate(ranks):  # what backward gives the padding: zero
                    ga[i, r:] = 0
                    gb[i, :, r:] = 0
                    ga[i] *= 10.0 ** (3 * i - 3)  # norms from ~0.1 to ~1e5: some clip
                    gb[i] *= 10.0 ** (3 * i - 3)
                layer.lora_A.grad, layer.lora_B.grad = ga, gb
            for i, (w, opt) in enumerate(alone):
                for n, (a, b) in w.items():
                    a.grad = pop.layers[n].lora_A.grad[i, :ranks[i]].clone()
                    b.grad = pop.layers[n].lora_B.grad[i, :, :ranks[i]].clone()
                norm = torch.nn.utils.clip_grad_norm_([t for ab in w.values() for t in ab],
                                                      max_norm)
                clipped += int(norm > max_norm)
                opt.step()
            pop.clip()
            pop.opt.step()
        assert clipped == 6  # clipping engaged for the two variants with large gradients
        for i, (w, _) in enumerate(alone):
            for n, (a, b) in pop.weights(i).items():
                _close(a, w[n][0].detach(), f"v{i} {n} A")
                _close(b, w[n][1].detach(), f"v{i} {n} B")
        for layer in pop.layers.values():
            for i, r in enumerate(ranks):
                assert not layer.lora_A[i, r:].any() and not layer.lora_B[i, :, r:].any()
    finally:
        pop.close()


# --- (3) a variant's samples do not depend on its population --------------------------------

def test_a_non_finite_loss_stops_the_step_before_any_update(digit_base, zero_pool, tmp_path):
    """A NaN in one variant (on CUDA: left-padded rows through some SDPA kernels) must not
    be trained on silently: sampling does not notice it, the step does, before AdamW."""
    import torch

    from train_variants.population import Population
    from train_variants.trainer import load_base

    cfg = cfg_for(digit_base, zero_pool, tmp_path, trainer="population", variants=2)
    plan = make_plan(cfg)
    model, tok, _ = load_base(cfg.base, "cpu", "float32")
    pop = Population(cfg, plan, plan.variants, model, tok, "cpu")
    try:
        layer = next(iter(pop.layers.values()))
        with torch.no_grad():
            layer.lora_A[1].fill_(float("nan"))  # variant v001 only
        before = [p.detach().clone() for p in pop.params]
        with pytest.raises(FloatingPointError, match=r"^step 1: non-finite loss or gradient "
                           r"norm for v001; no update was applied\."):
            pop.step(0)
        for p, b in zip(pop.params, before):
            assert torch.equal(p.nan_to_num(7.0), b.nan_to_num(7.0))
    finally:
        pop.close()


def test_samples_do_not_depend_on_the_population(tmp_path):
    """Issue 14, test 3: a variant samples the same completions, step after step, trained
    alone (a population of 1) or among 8 (same seeds).  On the shipped demo base,
    whose worked solutions end at different lengths."""
    from train_variants.population import Population
    from train_variants.trainer import load_base

    cfg = TrainConfig.from_dict(dict(
        base=str(DEMO_BASE), pool="synthetic:64:d2:s1:small", out=str(tmp_path), variants=8,
        steps=2, batch_size=2, num_generations=4, max_completion_length=96, lora_rank=8,
        lora_alpha=16.0, learning_rate=3e-3, mask_fraction=0.5, top_p=0.9, cpu_threads=1,
        gradient_checkpointing=False, device="cpu", trainer="population"))
    plan = make_plan(cfg)
    model, tok, _ = load_base(cfg.base, "cpu", "float32")

    def samples(vps):
        pop = Population(cfg, plan, vps, model, tok, "cpu")
        try:
            for s in range(cfg.steps):
                pop.step(s)
            return pop.samples
        finally:
            pop.close()

    together = samples(plan.variants)
    # The variant whose first batch stops earliest: alone, its batch is shorter than the
    # population's, so a stream that advanced with the batch's length would differ at the
    # second step.
    first = [max(map(len, s[0])) for s in together]
    i = first.index(min(first))
    assert first[i] < max(first)
    alone = samples([plan.variants[i]])[0]
    assert alone == together[i]
    # Not a vacuous equality: the variants sample differently, completions end at
    # different lengths, and the groups are not all one completion.
    assert len({tuple(map(tuple, s[0])) for s in together}) >= 6
    lengths = {len(c) for s in together for step in s for c in step}
    assert min(lengths) < cfg.max_completion_length
    assert len({tuple(c) for c in alone[0]}) > 1


# --- (4) the adapters are the TRL path's ------------------------------------------------------

def test_stacked_rows_compute_what_peft_computes_per_adapter(tmp_path):
    """Rows of variant i through the stacked layers give PEFT's logits for adapter i,
    with adapters of ranks 8 and 16 in one stack; the padding's gradients are zero."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from ensemble.testing import build_tiny_model, make_lora_adapters
    from train_variants import stacked_lora as sl

    base_dir = build_tiny_model(tmp_path / "base")
    paths = (make_lora_adapters(base_dir, tmp_path / "a", 2, rank=8, seed=1)
             + make_lora_adapters(base_dir, tmp_path / "b", 1, rank=16, seed=2))
    ranks = [8, 8, 16]
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    ids = torch.tensor([[5, 9, 20, 41, 7], [3, 3, 8, 60, 2]])
    with torch.no_grad():
        want = []
        for p in paths:
            peft = PeftModel.from_pretrained(model, str(p))
            want.append(peft(input_ids=ids).logits)
            model = peft.unload()
    layers = sl.install(model, sl.target_names(model, ["q_proj", "k_proj", "v_proj", "o_proj",
                                                       "gate_proj", "up_proj", "down_proj"]),
                        3, 16)
    for slot, (p, r) in enumerate(zip(paths, ranks)):
        w = load_file(str(p / "adapter_model.safetensors"))
        weights = {n: (w[_peft_key(n, "lora_A")], w[_peft_key(n, "lora_B")]) for n in layers}
        sl.set_variant(layers, slot, weights, scaling=1.0)  # make_lora_adapters: alpha = r
    got = model(input_ids=ids.repeat(3, 1)).logits
    for i in range(3):
        torch.testing.assert_close(got[2 * i:2 * i + 2], want[i], rtol=1e-5, atol=1e-5)
    got.sum().backward()
    for layer in layers.values():
        assert not layer.lora_A.grad[:2, 8:].any() and not layer.lora_B.grad[:2, :, 8:].any()
        assert layer.lora_A.grad[2, 8:].any()
    sl.uninstall(model, layers)
    assert type(model.model.layers[0].self_attn.q_proj) is torch.nn.Linear


@pytest.fixture(scope="module")
def both_paths(digit_base, zero_pool, tmp_path_factory):
    """v000 trained by the TRL path, v000 and v001 by the population trainer."""
    from train_variants.training import run_train

    d = tmp_path_factory.mktemp("both")
    out = {}
    for trainer in ("trl", "population"):
        cfg = cfg_for(digit_base, zero_pool, d / trainer, trainer=trainer,
                      variants=1 if trainer == "trl" else 2)
        summary = run_train(cfg, progress=False)
        assert not summary.failed, summary.failed
        out[trainer] = cfg
    return out


def _with_weights_of(src: Path, fmt: Path, dst: Path) -> Path:
    """The adapter directory ``fmt`` (the TRL path's files) holding ``src``'s weights."""
    import shutil

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    shutil.copytree(fmt, dst)
    (dst / "variant.json").unlink()
    with safe_open(str(fmt / "adapter_model.safetensors"), "pt") as f:
        meta = f.metadata()
    save_file(load_file(str(src / "adapter_model.safetensors")),
              str(dst / "adapter_model.safetensors"), metadata=meta)
    return dst


def test_population_writes_the_trl_paths_adapter_and_variant_files(both_paths):
    """The same files, adapter config, tensor names and shapes, and variant.json fields as
    the TRL path; the recipe differs only by the trainer named in it."""
    from safetensors.torch import load_file

    from train_variants.training import variant_status

    trl, pop = (both_paths[k].out / "variants" / "v000" for k in ("trl", "population"))
    assert sorted(p.name for p in pop.iterdir()) == sorted(p.name for p in trl.iterdir())
    assert json.loads((pop / "adapter_config.json").read_text()) == \
        json.loads((trl / "adapter_config.json").read_text())
    wp, wt = (load_file(str(p / "adapter_model.safetensors")) for p in (pop, trl))
    assert {k: v.shape for k, v in wp.items()} == {k: v.shape for k, v in wt.items()}
    assert any(float(v.abs().max()) > 1e-3 for k, v in wp.items() if "lora_B" in k)  # trained
    mp, mt = (json.loads((p / "variant.json").read_text()) for p in (pop, trl))
    assert set(mp) == set(mt) and set(mp["metrics"]) == set(mt["metrics"])
    assert set(mp["metrics"]["curves"]) == set(mt["metrics"]["curves"])
    assert set(mt["run"]) <= set(mp["run"])
    assert mp["run"]["trainer"] == "population" and mp["run"]["population"] == ["v000", "v001"]
    differ = {k for k in mt["recipe"].keys() | mp["recipe"].keys()
              if mt["recipe"].get(k) != mp["recipe"].get(k)}
    assert differ == {"trainer"} and mp["recipe"]["trainer"] == "population"
    assert "trl" not in mp["run"]["versions"]
    assert [(r["id"], r["state"], r["steps"]) for r in variant_status(pop.parent.parent)] == [
        ("v000", "done", 2), ("v001", "done", 2)]


def test_population_adapters_answer_in_peft_as_trl_path_adapters(both_paths, tmp_path):
    """Loaded by ``PeftModel.from_pretrained``, a population adapter answers exactly as
    the TRL path's adapter directory holding the same weights, and as the population's
    own stacked model did before saving."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pop_cfg = both_paths["population"]
    pop = pop_cfg.out / "variants" / "v000"
    trl = _with_weights_of(pop, both_paths["trl"].out / "variants" / "v000", tmp_path / "trl")
    tok = AutoTokenizer.from_pretrained(pop_cfg.base)
    prompts = [tok.apply_chat_template([{"role": "user", "content": f"What is {a} - {a}?"}],
                                       add_generation_prompt=True, tokenize=True,
                                       return_dict=True)["input_ids"] for a in (4, 11)]
    base = AutoModelForCausalLM.from_pretrained(pop_cfg.base, dtype=torch.float32)
    answers, logits = {}, {}
    for name, path in (("pop", pop), ("trl", trl)):
        model = PeftModel.from_pretrained(base, str(path))
        with torch.no_grad():
            answers[name] = [model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p)),
                                            do_sample=False, max_new_tokens=4)[0, len(p):].tolist()
                             for p in prompts]
            logits[name] = model(input_ids=torch.tensor([prompts[0]])).logits
        base = model.unload()
    assert answers["pop"] == answers["trl"]
    assert torch.equal(logits["pop"], logits["trl"])
    # The stacked model in memory (variant 0 of 2) computes what the saved adapter does.
    from safetensors.torch import load_file

    from train_variants import stacked_lora as sl

    w = load_file(str(pop / "adapter_model.safetensors"))
    layers = sl.install(base, pop_cfg.target_modules, 2, 8)
    weights = {n: (w[_peft_key(n, "lora_A")], w[_peft_key(n, "lora_B")]) for n in layers}
    sl.set_variant(layers, 0, weights, pop_cfg.lora_alpha / pop_cfg.lora_rank)
    with torch.no_grad():
        stacked = base(input_ids=torch.tensor([prompts[0]] * 2)).logits[:1]
    sl.uninstall(base, layers)
    torch.testing.assert_close(stacked, logits["pop"], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_vllm_serves_population_adapters_as_trl_path_adapters(both_paths, tmp_path):
    """vLLM (CPU) loads the population's adapters and answers as with the TRL path's
    adapter directory holding the same weights, and as PEFT does."""
    import shutil

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pop_cfg = both_paths["population"]
    served = tmp_path / "served"
    served.mkdir()
    for vid in ("v000", "v001"):
        shutil.copytree(pop_cfg.out / "variants" / vid, served / f"pop-{vid}")
    _with_weights_of(served / "pop-v000", both_paths["trl"].out / "variants" / "v000",
                     served / "trl-v000")
    tok = AutoTokenizer.from_pretrained(pop_cfg.base)
    prompts = [tok.apply_chat_template([{"role": "user", "content": f"What is {a} - {a}?"}],
                                       add_generation_prompt=True, tokenize=True,
                                       return_dict=True)["input_ids"] for a in (4, 11)]
    (tmp_path / "prompts.json").write_text(json.dumps(prompts))
    out = tmp_path / "vllm.json"
    proc = subprocess.run([sys.executable, str(ROOT / "tests/train_vllm_probe.py"), pop_cfg.base,
                           str(served), str(tmp_path / "prompts.json"), str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(out.read_text())
    assert not got["skipped"] and set(got) == {"skipped", "base", "pop-v000", "pop-v001",
                                               "trl-v000"}
    assert got["pop-v000"] == got["trl-v000"]
    base = AutoModelForCausalLM.from_pretrained(pop_cfg.base, dtype=torch.float32)
    for vid in ("pop-v000", "pop-v001"):
        model = PeftModel.from_pretrained(base, str(served / vid))
        for p, ids in zip(prompts, got[vid]):
            ref = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p)),
                                 do_sample=False, max_new_tokens=4)[0, len(p):].tolist()
            assert ids == ref, (vid, ids, ref)
        base = model.unload()


# --- (5) a killed chunk loses only itself -------------------------------------------------------

@pytest.mark.slow
def test_killed_chunk_is_retrained_to_the_uninterrupted_result(digit_base, zero_pool, tmp_path):
    """Issue 14, test 5: ``kill -9`` while the second chunk trains keeps the first chunk,
    ``ensemble status`` shows the second interrupted, and the rerun gives the adapters of
    an uninterrupted run."""
    from click.testing import CliRunner

    from ensemble.cli import main
    from tests.helpers import kill_when
    from train_variants.training import run_train

    settings = tiny_train_config(digit_base, zero_pool, tmp_path / "killed", variants=4,
                                 steps=6, max_completion_length=3, cpu_threads=1,
                                 trainer="population", population_size=2)
    toml = tmp_path / "train.toml"
    toml.write_text("[train]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
    vdir = tmp_path / "killed" / "variants"

    def second_chunk_in_flight() -> bool:
        # The chunk claims its variants one after the other: wait for the last claim
        # (v003's running.json), or a kill in between leaves v003 rightly "pending".
        return ((vdir / "v001" / "variant.json").exists()
                and any(p.name.startswith(".tmp-v003") and (p / "running.json").exists()
                        for p in vdir.iterdir()))

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    kill_when([sys.executable, "-m", "ensemble.cli", "train", str(toml)], env,
              second_chunk_in_flight, timeout=300, poll=0.01)
    assert not (vdir / "v002").exists() and not (vdir / "v003").exists()
    res = CliRunner().invoke(main, ["status", str(tmp_path / "killed")])
    assert res.exit_code == 0, res.output
    states = {line.split()[0]: line.split()[1] for line in res.output.splitlines()[1:-1]}
    assert states == {"v000": "done", "v001": "done", "v002": "interrupted",
                      "v003": "interrupted"}
    assert res.output.splitlines()[-1] == "2 done, 2 interrupted"
    kept = (vdir / "v000" / "adapter_model.safetensors").stat().st_mtime_ns
    rerun = run_train(TrainConfig.from_toml(toml), progress=False)
    assert rerun.skipped == ["v000", "v001"] and sorted(rerun.done) == ["v002", "v003"]
    assert (vdir / "v000" / "adapter_model.safetensors").stat().st_mtime_ns == kept
    assert sorted(p.name for p in vdir.iterdir()) == ["train.json", "v000", "v001", "v002",
                                                      "v003"]
    whole = TrainConfig.from_dict({**settings, "out": str(tmp_path / "whole")})
    assert sorted(run_train(whole, progress=False).done) == ["v000", "v001", "v002", "v003"]
    from safetensors.torch import load_file

    for vid in ("v000", "v001", "v002", "v003"):
        a = load_file(str(vdir / vid / "adapter_model.safetensors"))
        b = load_file(str(whole.out / "variants" / vid / "adapter_model.safetensors"))
        assert a.keys() == b.keys()
        assert all(float((a[k] - b[k]).abs().max()) <= 1e-6 for k in a), vid
        assert any(float(a[k].abs().max()) > 1e-3 for k in a if "lora_B" in k)


@pytest.mark.slow
def test_local_workers_train_the_adapters_of_one_process(digit_base, zero_pool, tmp_path):
    """``--workers 2`` splits the variants between two spawned processes (shares of
    ``parts``) and writes the adapters one process writes with all of them in one chunk:
    which variants share a pass changes none of them."""
    from safetensors.torch import load_file

    from train_variants.training import run_train

    common = tiny_train_config(digit_base, zero_pool, tmp_path, variants=4, steps=6,
                               max_completion_length=3, cpu_threads=1, trainer="population")
    split = TrainConfig.from_dict({**common, "out": str(tmp_path / "split"), "workers": 2})
    one = TrainConfig.from_dict({**common, "out": str(tmp_path / "one")})
    assert sorted(run_train(split, progress=False).done) == ["v000", "v001", "v002", "v003"]
    assert sorted(run_train(one, progress=False).done) == ["v000", "v001", "v002", "v003"]
    runs = {}
    for vid in ("v000", "v001", "v002", "v003"):
        meta = [json.loads((c.out / "variants" / vid / "variant.json").read_text())["run"]
                for c in (split, one)]
        runs[vid] = (meta[0]["population"], meta[1]["population"], meta[0]["pid"])
        a = load_file(str(split.out / "variants" / vid / "adapter_model.safetensors"))
        b = load_file(str(one.out / "variants" / vid / "adapter_model.safetensors"))
        assert a.keys() == b.keys()
        assert all(float((a[k] - b[k]).abs().max()) <= 1e-6 for k in a), vid
        assert any(float(a[k].abs().max()) > 1e-3 for k in a if "lora_B" in k)
    # Two shares, trained in two processes other than this one; one chunk in one process.
    assert {v: r[0] for v, r in runs.items()} == {
        "v000": ["v000", "v001"], "v001": ["v000", "v001"],
        "v002": ["v002", "v003"], "v003": ["v002", "v003"]}
    assert all(r[1] == ["v000", "v001", "v002", "v003"] for r in runs.values())
    assert runs["v000"][2] != runs["v002"][2] and os.getpid() not in {r[2] for r in runs.values()}


# --- settings, chunks, dependencies ------------------------------------------------------------

def _invoke(*args):
    from click.testing import CliRunner

    from ensemble.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("key,value,want", [
    ("loss_type", '"cispo"', "loss_type='cispo' is not covered by the population trainer (it "
     "covers dapo, grpo, dr_grpo, bnpo); use --trainer trl"),
    ("lora_dropout", "0.05", "lora_dropout=0.05 is not covered by the population trainer "
     "(dropout would draw from one stream shared by all variants); use --trainer trl"),
    ("grad_accum", "2\nloss_type = \"bnpo\"", "loss_type='bnpo' with grad_accum=2 is not "
     "covered by the population trainer: TRL normalises it per micro-batch of a random split "
     "of the step; use --trainer trl"),
    ("launcher", '"ray"', "launcher='ray' is not covered by the population trainer, which "
     "trains its chunks in local processes; use launcher local (--workers N for N "
     "processes), or --trainer trl"),
    ("population_size", "0", "population_size=0 must be at least 1 (variants trained "
     "together); leave it out for as many as fit in memory"),
])
def test_uncovered_settings_are_refused_before_training(digit_base, zero_pool, tmp_path, key,
                                                        value, want):
    toml = tmp_path / "t.toml"
    toml.write_text(f'[train]\nbase = "{digit_base}"\npool = "{zero_pool}"\nlora_rank = 8\n'
                    f"{key} = {value}\n")
    res = _invoke("train", toml, "--out", tmp_path / "run", "--trainer", "population")
    assert res.exit_code == 1, res.output
    assert res.output.strip() == f"Error: {want}"
    assert not (tmp_path / "run" / "variants").exists()
    if key != "population_size":  # the TRL path covers it (it is only checked, not run)
        from train_variants.training import check

        cfg = TrainConfig.from_toml(toml, out=str(tmp_path / "run"), trainer="trl")
        assert "trainer" not in check(cfg).recipe  # the reference trainer is left unnamed


def test_use_vllm_is_refused_by_name(digit_base, zero_pool, tmp_path):
    from train_variants.population import check_supported

    cfg = cfg_for(digit_base, zero_pool, tmp_path, trainer="population", use_vllm=True)
    with pytest.raises(ValueError) as err:
        check_supported(cfg)
    assert str(err.value) == ("use_vllm=true is not covered by the population trainer: it "
                              "generates for all variants in one transformers batch; use "
                              "--trainer trl")


def test_trainer_flags_and_what_they_change(digit_base, zero_pool, tmp_path):
    """--trainer names the recipe (the two trainers sample from different streams, so a
    run directory holds one trainer's variants); --population-size changes no variant."""
    common = ["--base", digit_base, "--pool", zero_pool, "--out", tmp_path / "r", "--variants",
              2, "--lora-rank", 8, "--plan-only"]
    plans = {}
    for extra in ([], ["--trainer", "population"], ["--trainer", "population",
                                                    "--population-size", 1]):
        res = _invoke("train", *common, *extra)
        assert res.exit_code == 0, res.output
        plans[len(extra)] = {json.loads(line)["recipe_hash"] for line in res.output.splitlines()}
    assert plans[2] == plans[4] != plans[0]
    res = _invoke("train", *common, "--trainer", "tensorflow")
    assert res.exit_code == 2 and "'tensorflow' is not one of 'trl', 'population'" in res.output


def test_chunks_follow_population_size_and_memory(digit_base, zero_pool, tmp_path, monkeypatch):
    from train_variants import population as pm
    from train_variants.training import run_train
    from train_variants.trainer import load_base

    cfg = cfg_for(digit_base, zero_pool, tmp_path / "run", trainer="population", variants=3,
                  steps=1, population_size=2)
    summary = run_train(cfg, progress=False)
    assert sorted(summary.done) == ["v000", "v001", "v002"]
    chunk_of = {v: json.loads((cfg.out / "variants" / v / "variant.json").read_text())
                ["run"]["population"] for v in summary.done}
    assert chunk_of == {"v000": ["v000", "v001"], "v001": ["v000", "v001"], "v002": ["v002"]}
    assert pm.chunks([4, 5, 6, 7, 8], 2) == [[4, 5], [6, 7], [8]]
    # Without population_size: as many as fit in half the free memory.
    model, _, _ = load_base(cfg.base, "cpu", "float32")
    auto = TrainConfig.from_dict({**cfg.to_dict(), "population_size": None})
    one = pm.variant_bytes(model, auto, 8)
    assert one > 16 * pm.lora_parameters(model, auto, 8) > 0
    monkeypatch.setattr(pm, "available_memory", lambda device: 2 * 5 * one + 1)
    assert pm.population_size(auto, model, "cpu", 200, 8) == 5
    assert pm.population_size(auto, model, "cpu", 3, 8) == 3
    monkeypatch.setattr(pm, "available_memory", lambda device: 0)
    assert pm.population_size(auto, model, "cpu", 200, 8) == 1
    assert pm.population_size(cfg, model, "cpu", 200, 8) == 2


def test_trains_without_trl_or_vllm(digit_base, zero_pool, tmp_path):
    """A machine with torch, transformers and peft but neither TRL nor vLLM trains a
    population (imports of both are made to fail in a fresh process)."""
    cfg = cfg_for(digit_base, zero_pool, tmp_path / "run", trainer="population", steps=1)
    code = ("import json, sys\n"
            "for m in ('trl', 'vllm'): sys.modules[m] = None  # import fails\n"
            "from train_variants.config import TrainConfig\n"
            "from train_variants.training import run_train\n"
            "s = run_train(TrainConfig.from_dict(json.loads(sys.argv[1])), progress=False)\n"
            "assert not s.failed, s.failed\n"
            "print(sorted(s.done), sorted(m for m in sys.modules if m.split('.')[0] in "
            "('trl', 'vllm') and sys.modules[m] is not None))\n")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(cfg.to_dict())], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "['v000', 'v001'] []"
