"""Benchmark of the training stage: seconds per GRPO step and per variant, and scaling.

Run from the repository root::

    python benchmarks/bench_train.py            # ~3-5 minutes on 2 CPU cores
    python benchmarks/bench_train.py --quick    # smoke test (~1-2 minutes)
    python benchmarks/bench_train.py --device cuda --base MODEL --pool FILE   # on a GPU box

The machine this runs on is shared and noisy, so comparisons are printed as ratios of
times measured in this same run; absolute seconds are context only.  Nothing asserts time.

What is measured (CPU default: the tiny "digit model" of tests/train_helpers.py, 2 layers,
hidden 64, byte-level vocabulary; completions of ``--tokens`` tokens)
---------------------------------------------------------------------------------------
* One variant, in this process, at 1 and at 2 torch threads: seconds per GRPO step
  (TRL's own ``step_time``), and the variant's wall time split into imports, base load,
  building LoRA + trainer, training and saving.
* N = 1, 2, 4 variants trained sequentially in one fresh process (the CLI's default
  launcher), end to end from the command line: cost per variant as N grows (the imports
  and base load are paid once per process).
* N = 4 variants with ``--workers 2`` (two spawned worker processes, 1 thread each)
  against the sequential run.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--tokens", type=int, default=16, help="max completion length")
    ap.add_argument("--base", default=None, help="base model [default: the tiny digit model]")
    ap.add_argument("--pool", default=None, help="pool [default: 48 'a - a' problems]")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = ap.parse_args()
    steps = args.steps or (3 if args.quick else 6)

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


if __name__ == "__main__":
    main()
