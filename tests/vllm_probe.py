"""Backend checks that need one vLLM engine, run in a subprocess by test_answer.py.

vLLM takes ~20 s to import and start on CPU and changes process-wide state (environment,
RNG, thread settings), so the tests start it once, in a child process, and compare the
token ids this script writes as JSON:

    python tests/vllm_probe.py BASE ADAPTERS BENCHMARK OUT.json
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path


def main(base: str, adapters_dir: str, benchmark: str, out: str) -> None:
    from eval.adapters import discover
    from eval.backends import HFBackend, VLLMBackend
    from eval.config import AnswerConfig
    from ensemble.core.problems import load_problems
    from eval.answering import BASE_ID, Unit, build_prompts, request_seed
    from eval.backends import Request

    # max_loras=2 < 4 adapters: one generate call must stream adapters through the slots.
    cfg = AnswerConfig(base=base, out=Path(out).parent, benchmark=benchmark,
                       adapters=Path(adapters_dir), temperature=0.0, max_tokens=24,
                       max_loras=2, max_lora_rank=8)
    adapters, _ = discover(cfg.adapters_dir, base, cfg.max_lora_rank)
    problems = load_problems(benchmark)
    units = [Unit("collaboration", a.model_id, a, 1) for a in adapters]
    units.append(Unit("repetition", BASE_ID, None, 1))

    def requests(unit, samples=1):
        return [Request(unit, i, s, prompts[i],
                        request_seed(cfg.seed, unit.condition, unit.model_id, p.id, s))
                for i, p in enumerate(problems) for s in range(samples)]

    vllm = VLLMBackend(cfg)
    prompts = build_prompts(vllm.tokenizer, problems, cfg)
    # Interleave adapters and the base within one call: the hardest layout to batch.
    mixed = [r for group in zip(*(requests(u) for u in units)) for r in group]
    ids = lambda outs: [o.token_ids for o in outs]  # noqa: E731
    key = lambda r: f"{r.unit.model_id}/{r.problem}"  # noqa: E731
    multi = dict(zip(map(key, mixed), ids(vllm.generate(mixed))))
    single = {}
    for u in units:
        reqs = requests(u)
        single.update(zip(map(key, reqs), ids(vllm.generate(reqs))))

    # Seeded sampling: 3 samples per problem of two adapters, asked three ways.
    vllm.cfg = dataclasses.replace(cfg, temperature=0.9, top_p=0.95)
    samp = [r for u in units[:2] for r in requests(Unit(u.condition, u.model_id, u.adapter, 3), 3)]
    grouped_a = ids(vllm.generate(samp))            # fanned out as n=3 requests
    grouped_b = ids(vllm.generate(samp))            # again: reproducible?
    one_by_one = [vllm.generate([r])[0].token_ids for r in samp]  # never grouped
    reversed_ = ids(vllm.generate(samp[::-1]))[::-1]  # other batch layout
    del vllm

    hf = HFBackend(cfg)
    hf_ids = dict(zip(map(key, mixed), ids(hf.generate(mixed))))
    Path(out).write_text(json.dumps({
        "multi": multi, "single": single, "hf": hf_ids, "grouped_a": grouped_a,
        "grouped_b": grouped_b, "one_by_one": one_by_one, "reversed": reversed_,
        "adapters": [a.model_id for a in adapters],
    }))


if __name__ == "__main__":
    main(*sys.argv[1:5])
