"""Tokens/s of the answering backends: vLLM multi-LoRA vs transformers + PEFT per adapter.

Both backends get the same base model, prompts and adapters (built here, offline): the
vLLM backend answers every adapter's requests in generate calls spanning ``max_loras``
adapters each (the way ``ensemble answer`` batches them); the HF backend, the reference,
loads one adapter at a time and answers its prompts in left-padded batches.  The two are
timed side by side in one process, for 4, 16 and 64 adapters, because this machine is
shared and absolute numbers drift between runs: read the ratio.

    .venv/bin/python benchmarks/bench_answer.py            # 4, 16, 64 adapters
    .venv/bin/python benchmarks/bench_answer.py --quick    # 4 and 16, fewer tokens
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build(root: Path, n_adapters: int, problems: int, hidden: int, layers: int):
    from ensemble.core.problems import synthetic_problems
    from ensemble.testing import build_tiny_model, make_lora_adapters

    base = build_tiny_model(root / "base", hidden=hidden, layers=layers, heads=hidden // 32,
                            kv_heads=max(1, hidden // 64), intermediate=hidden * 2)
    make_lora_adapters(base, root / "adapters", n_adapters, rank=8)
    bench = root / "bench.jsonl"
    with open(bench, "w") as fh:
        for p in synthetic_problems(problems, difficulty=3, seed=5):
            fh.write(json.dumps({"id": p.id, "problem": p.problem, "answer": p.answer}) + "\n")
    return base, bench


def requests_for(adapters, problems, prompts, cfg):
    from eval.answering import Unit, request_seed
    from eval.backends import Request

    reqs = []
    for a in adapters:
        u = Unit("collaboration", a.model_id, a, 1)
        reqs += [Request(u, i, 0, prompts[i],
                         request_seed(cfg.seed, u.condition, a.model_id, p.id, 0))
                 for i, p in enumerate(problems)]
    return reqs


def timed(backend, reqs, per_call: int) -> tuple[float, int]:
    """Seconds and completion tokens for ``reqs``, ``per_call`` adapters per call."""
    by_adapter: dict = {}
    for r in reqs:
        by_adapter.setdefault(r.unit.model_id, []).append(r)
    groups = list(by_adapter.values())
    t0 = time.perf_counter()
    tokens = 0
    for s in range(0, len(groups), per_call):
        batch = [r for g in groups[s:s + per_call] for r in g]
        tokens += sum(len(c.token_ids) for c in backend.generate(batch))
    return time.perf_counter() - t0, tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 and 16 adapters, 32 tokens")
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--max-loras", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    args = ap.parse_args()
    counts = [4, 16] if args.quick else [4, 16, 64]
    max_tokens = 32 if args.quick else args.max_tokens

    from eval.adapters import discover
    from eval.backends import HFBackend, VLLMBackend
    from eval.config import AnswerConfig
    from ensemble.core.problems import load_problems
    from eval.answering import build_prompts

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base, bench = build(root, max(counts), args.problems, args.hidden, args.layers)
        cfg = AnswerConfig(base=str(base), out=root / "run", benchmark=str(bench),
                           adapters=root / "adapters", temperature=0.0, max_tokens=max_tokens,
                           max_loras=args.max_loras, max_lora_rank=8)
        adapters, _ = discover(cfg.adapters_dir, cfg.base, 8)
        problems = load_problems(bench)
        t0 = time.perf_counter()
        vllm = VLLMBackend(cfg)
        start_vllm = time.perf_counter() - t0
        t0 = time.perf_counter()
        hf = HFBackend(cfg)
        start_hf = time.perf_counter() - t0
        prompts = build_prompts(hf.tokenizer, problems, cfg)
        # Warm both (first-call kernel set-up, adapter cache) on adapters not timed.
        warm = requests_for(adapters[:1], problems[:2], prompts, cfg)
        vllm.generate(warm)
        hf.generate(warm)

        print(f"model: hidden {args.hidden}, {args.layers} layers, float32; {len(problems)} "
              f"prompts per adapter, {max_tokens} new tokens max, greedy; vLLM max_loras="
              f"{args.max_loras}")
        print(f"start-up: vLLM engine {start_vllm:.1f} s, HF model {start_hf:.1f} s (not in the rates)")
        print(f"{'adapters':>8} {'vLLM tok/s':>11} {'HF tok/s':>9} {'ratio':>6} {'vLLM s':>7} {'HF s':>6}")
        rows = []
        for n in counts:
            reqs = requests_for(adapters[:n], problems, prompts, cfg)
            # Alternate which backend goes first, so neither always gets the quieter half.
            if len(rows) % 2:
                th, nh = timed(hf, reqs, 1)
                tv, nv = timed(vllm, reqs, args.max_loras)
            else:
                tv, nv = timed(vllm, reqs, args.max_loras)
                th, nh = timed(hf, reqs, 1)
            rows.append((n, nv / tv, nh / th))
            print(f"{n:>8} {nv / tv:>11.0f} {nh / th:>9.0f} {(nv / tv) / (nh / th):>5.1f}x "
                  f"{tv:>7.2f} {th:>6.2f}")
        first, last = rows[0], rows[-1]
        print(f"ratio grows {(last[1] / last[2]) / (first[1] / first[2]):.2f}x from {first[0]} "
              f"to {last[0]} adapters (vLLM rate x{last[1] / first[1]:.2f}, HF rate "
              f"x{last[2] / first[2]:.2f})")


if __name__ == "__main__":
    main()
