"""Work units of the answering stage and the prompts every backend receives.

A unit is one (condition, model) with its number of samples per problem; a large one may
be split into parts spread over shards (:mod:`eval.split`).  Its answers become one file,
``answers/<condition>/<model_id>.parquet``, with the unit's provenance in the file's
metadata under :data:`PROVENANCE_KEY`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ensemble.core.problems import Problem
from ensemble.core.prompts import chat_prompt
from ensemble.core.rundir import RunDir
from eval.adapters import Adapter
from eval.config import AnswerConfig

BASE_ID = "base"  # model_id of the base model without any adapter
# The run's answering record and invocation log sit beside answers/, not in it, so that
# answers/ is a plain parquet dataset: pandas.read_parquet("RUN/answers") reads it whole.
PROVENANCE_KEY = "ensemble.answers"  # parquet metadata key of a unit file's provenance


@dataclass(frozen=True)
class Unit:
    condition: str
    model_id: str
    adapter: Adapter | None  # None: the base model
    samples: int
    # A part of a large unit spread over shards (eval.split): its requests start:stop in
    # the unit's problem-major order.  Whole units have 0:None.
    start: int = 0
    stop: int | None = None

    @property
    def is_part(self) -> bool:
        return self.stop is not None

    @property
    def whole(self) -> "Unit":
        return Unit(self.condition, self.model_id, self.adapter, self.samples)

    @property
    def key(self) -> str:
        """``condition/model`` (parts add their request range)."""
        k = f"{self.condition}/{self.model_id}"
        return f"{k}[{self.start}:{self.stop}]" if self.is_part else k

    def path(self, out: Path) -> Path:
        if self.is_part:  # hidden: pyarrow and datasets skip dot-directories
            return RunDir(out).answer_part(self.condition, self.model_id, self.start, self.stop)
        return RunDir(out).answer_file(self.condition, self.model_id)


def build_prompts(tokenizer, problems: list[Problem], cfg: AnswerConfig) -> list[tuple[int, ...]]:
    """Token ids of each problem's prompt, through the chat template when there is one.

    Both backends receive these ids, so they see exactly the same input.
    """
    out = []
    for p in problems:
        text = cfg.prompt_template.format(problem=p.problem)
        if getattr(tokenizer, "chat_template", None):
            rendered = chat_prompt(tokenizer, text, cfg.system_prompt)
            ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
        else:
            ids = tokenizer(text)["input_ids"]
        out.append(tuple(int(i) for i in ids))
    return out
