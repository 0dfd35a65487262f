"""Pretrain the demo's base model from scratch: a small Llama on synthetic arithmetic.

``ensemble demo`` needs a base model that runs offline on a CPU and answers the demo's
problems *sometimes*: a population of LoRA variants can only beat one model by voting
when single answers are right often enough to win a plurality and wrong often enough to
leave room.  No such model ships anywhere, so the project trains its own, in a few
minutes on two CPU cores, on the synthetic AIME-style problems of
:func:`ensemble.core.problems.synthetic_problems` (multi-step integer arithmetic, answers 0-999,
worked solutions ending in ``\\boxed{answer}``).

Every training example is laid out exactly like an answering-stage prompt (the user
message ``DEFAULT_TEMPLATE.format(problem=...)`` through the chat template with the
generation prompt, see :func:`eval.answering.build_prompts`) followed by the worked solution
and ``<|im_end|>``, so the base answers in the format the grader reads and stops on EOS.

The default model ships with the package (``ensemble/core/demo_base``, 2.5 MB): floating
point kernels differ between CPUs and pretraining amplifies the differences (another x86
machine reached held-out greedy accuracy 0.25 instead of 0.38 from the same seeds), so
every machine starts the demo from the same weights.  :func:`build_demo_base` returns
the shipped model when the settings and seed are the defaults it was made with (its
``pretrain.json`` records their cache key, and a test checks that the key is still the
current recipe's).  Any other settings pretrain: the model directory is keyed on a hash
of every setting, the seed and the recipe version, trained into a temporary directory
and renamed into place when complete, so an interrupted pretrain never leaves a model
that counts as done, and a second call returns at once.  ``ensemble pretrain`` runs it
by hand (``--fresh`` retrains even the shipped settings, to compare a machine's own).

Example
-------
>>> base = build_demo_base(Path("~/.cache/ensemble/models").expanduser())  # doctest: +SKIP
>>> json.loads((base / "pretrain.json").read_text())["eval"]                # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

from ensemble.core.problems import Problem, synthetic_problems
from ensemble.core.prompts import DEFAULT_TEMPLATE, chat_prompt
from ensemble.core.config import StrictConfig
from ensemble.core.files import BuildDir
from ensemble.core.models import DEMO_BASE_DIR
from ensemble.core.versions import versions

# Bump when the recipe below changes in a way the settings do not capture (data layout,
# init, loss): the cache key includes it, so old cached models are not reused.
RECIPE_VERSION = 1
PRETRAIN_JSON = "pretrain.json"  # metrics; written last, so its presence marks a complete model
# Seeds of the synthetic generator for training data: far from the small seeds the configs
# use for pools and benchmarks (s1, s99, ...), and the training set additionally drops
# every problem whose text occurs in the held-out sets.
TRAIN_SEED_OFFSET = 1_000_000


@dataclass(frozen=True)
class PretrainConfig(StrictConfig):
    """Every setting of the demo base; all of them enter the cache key.

    The defaults are tuned (see the module docstring) so that pretraining takes about
    three minutes on a 2-core CPU and the base answers held-out difficulty-3 problems
    correctly some of the time when sampling.
    """

    # --- data ---------------------------------------------------------------------------
    difficulties: tuple[int, ...] = (1, 2, 3)  # steps per problem, mixed evenly: short
    # problems teach single operations, longer ones the chaining the benchmark needs; no
    # harder than the benchmark, so that all 400 steps go to what is asked
    numbers: str = "small"  # number ranges (ensemble.core.problems.NUMBER_RANGES), for training and
    # the held-out set alike; the demo benchmark must use the same (synthetic:...:small)
    worked: str = "digits"  # solution style: column-by-column working makes every written
    # digit a function of two digits and a carry, learnt exactly in minutes; with
    # "steps" the same model only learns the rough size of each result
    eval_difficulty: int = 3  # held-out set of pretrain.json: the demo benchmark's difficulty
    eval_problems: int = 100  # held-out problems scored after training (pretrain.json)
    eval_seed: int = 99_999  # generator seed of that set (training uses other seeds)
    eval_temperatures: tuple[float, ...] = (0.7, 1.0)  # sampled accuracies recorded besides greedy
    loss_on: str = "assistant"  # "assistant": loss on the solution only; "all": prompt too
    # --- tokenizer ----------------------------------------------------------------------
    vocab_size: int = 512  # byte-level BPE; the corpus saturates at ~380 (every word one token)
    # --- model (Llama; head_dim must be one vLLM's CPU attention runs, see CPU_HEAD_DIMS) --
    hidden: int = 128
    layers: int = 2  # measured (400 steps, d3 held out, t=1.0): 2 layers 0.26 in 203 s,
    # 4 layers on d1-4 0.17 in 442 s; 2 layers is cheaper and lands in the 20-60% band
    heads: int = 4
    kv_heads: int = 4
    head_dim: int = 32
    intermediate: int = 512
    max_position: int = 512  # prompt ~60 + solution ~90 tokens at difficulty 4; room for more
    init_std: float = 0.02
    # --- optimisation -------------------------------------------------------------------
    steps: int = 400  # 12,800 examples; loss 6.0 -> 0.03, about 3.5 min on one CPU thread
    batch_size: int = 32
    learning_rate: float = 3e-3  # peak, after linear warm-up; cosine decay to 10% of it
    warmup_steps: int = 30
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    threads: int = 1  # torch intra-op threads while pretraining (restored afterwards)

    TABLE: ClassVar[str] = "pretrain setting"

    def __post_init__(self):
        super().__post_init__()
        from ensemble.core.models import CPU_HEAD_DIMS

        if self.head_dim not in CPU_HEAD_DIMS:
            raise ValueError(f"head_dim={self.head_dim}: vLLM on CPU runs only {CPU_HEAD_DIMS}")
        from ensemble.core.problems import NUMBER_RANGES, WORKED_STYLES

        if self.numbers not in NUMBER_RANGES:
            raise ValueError(f"numbers={self.numbers!r} is not one of {', '.join(NUMBER_RANGES)}")
        if self.worked not in WORKED_STYLES:
            raise ValueError(f"worked={self.worked!r} is not one of {', '.join(WORKED_STYLES)}")
        if self.loss_on not in ("assistant", "all"):
            raise ValueError(f"loss_on={self.loss_on!r} is not one of assistant, all")
        if not self.difficulties or not all(1 <= d <= 12 for d in self.difficulties):
            raise ValueError(f"difficulties={self.difficulties}: each must lie in 1..12")
        if self.heads % self.kv_heads:
            raise ValueError(f"heads={self.heads} must be a multiple of kv_heads={self.kv_heads}")
        for name in ("steps", "batch_size", "eval_problems", "layers", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")

    @property
    def problem_kwargs(self) -> dict[str, str]:
        """The problem-shape settings as keyword arguments of ``synthetic_problems``."""
        return {"numbers": self.numbers, "worked": self.worked}

    @classmethod
    def from_overrides(cls, **overrides: Any) -> "PretrainConfig":
        """The defaults with ``overrides`` (e.g. a ``[pretrain]`` TOML table) applied.

        Unknown keys are errors: a typo must not silently train with a default.  Lists
        become tuples, so a TOML array and a Python tuple give the same key.
        """
        return cls.from_dict({k: tuple(v) if isinstance(v, list) else v
                              for k, v in overrides.items()})


def cache_key(cfg: PretrainConfig, seed: int) -> str:
    """Hash of every setting, the seed and the recipe version (hex).

    Not the package version: a release that leaves the recipe alone keeps its models
    (and the shipped one); a recipe change must bump ``RECIPE_VERSION``.
    """
    blob = json.dumps({"config": dataclasses.asdict(cfg), "seed": seed, "recipe": RECIPE_VERSION},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


SHIPPED = DEMO_BASE_DIR  # the default demo base, package data (ensemble.core.models)


def shipped_key() -> str | None:
    """The cache key the shipped demo base was made with (None if it is not installed)."""
    try:
        return json.loads((SHIPPED / PRETRAIN_JSON).read_text())["key"]
    except (OSError, ValueError, KeyError):
        return None


# --- data -------------------------------------------------------------------------------

def render_prompt(tokenizer, problem: Problem) -> str:
    """The answering stage's prompt text for ``problem`` (default template, no system turn)."""
    return chat_prompt(tokenizer, DEFAULT_TEMPLATE.format(problem=problem.problem))


def held_out_problems(cfg: PretrainConfig, difficulty: int | None = None,
                      n: int | None = None) -> list[Problem]:
    """The held-out problems of ``pretrain.json``: the eval seed, never trained on."""
    return synthetic_problems(n or cfg.eval_problems, difficulty or cfg.eval_difficulty,
                              cfg.eval_seed, **cfg.problem_kwargs)


def training_problems(cfg: PretrainConfig, n: int, seed: int,
                      exclude: Sequence[Problem] = ()) -> list[Problem]:
    """``n`` training problems, the difficulties of ``cfg`` interleaved, none in ``exclude``.

    The generator is prefix-stable (problem i does not depend on n), so the set is a pure
    function of (cfg.difficulties, n, seed).
    """
    banned = {p.problem for p in exclude}
    per = -(-n // len(cfg.difficulties)) + 1
    pools = [[p for p in synthetic_problems(per + len(banned), d, TRAIN_SEED_OFFSET + seed,
                                                  **cfg.problem_kwargs)
              if p.problem not in banned][:per] for d in cfg.difficulties]
    mixed = [p for group in zip(*pools) for p in group]
    return mixed[:n]


def _corpus_for_tokenizer(problems: list[Problem]) -> list[str]:
    texts = [DEFAULT_TEMPLATE.format(problem=p.problem) for p in problems]
    texts += [p.solution for p in problems]
    texts += ["user", "assistant", "system"]  # role names the chat template writes
    return texts


def build_arith_tokenizer(out_dir: Path, corpus: list[str], vocab_size: int):
    """Byte-level BPE with a ChatML template whose digits are always single tokens.

    Words and the fixed prompt text merge into few tokens (short sequences, fast
    training), but every digit stays its own token: numbers then have one spelling, and
    the model learns arithmetic digit by digit instead of memorising merged chunks.
    Built like :func:`ensemble.testing.build_tokenizer` otherwise (same specials, template,
    left padding, no BOS added by ``encode``).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from ensemble.core.prompts import BOS, CHAT_TEMPLATE, EOS, IM_START, PAD

    specials = [BOS, EOS, PAD, IM_START]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS,
                                   pad_token=PAD, additional_special_tokens=[IM_START],
                                   padding_side="left")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out_dir))
    return fast


def encode_examples(tokenizer, problems: list[Problem], loss_on: str = "assistant"):
    """Token ids and loss masks of prompt + solution + EOS for each problem.

    Returns
    -------
    list of (list of int, list of bool)
        ``ids`` and ``train`` (True where the token is predicted with loss).
    """
    prompts = [render_prompt(tokenizer, p) for p in problems]
    p_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    s_ids = tokenizer([p.solution for p in problems], add_special_tokens=False)["input_ids"]
    out = []
    for a, b in zip(p_ids, s_ids):
        ids = a + b + [tokenizer.eos_token_id]
        mask = [loss_on == "all"] * len(a) + [True] * (len(b) + 1)
        out.append((ids, mask))
    return out


# --- model ------------------------------------------------------------------------------

def _init_model(cfg: PretrainConfig, tokenizer, seed: int):
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=cfg.hidden,
                         num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
                         num_key_value_heads=cfg.kv_heads, head_dim=cfg.head_dim,
                         intermediate_size=cfg.intermediate,
                         max_position_embeddings=cfg.max_position,
                         initializer_range=cfg.init_std, tie_word_embeddings=False, **ids)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(**ids)
    return model


def _lr_at(step: int, cfg: PretrainConfig) -> float:
    import math

    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def _batch(examples, pad_id: int):
    """Right-padded ids and labels (-100 off the loss mask and on padding).

    Right padding under a causal mask: real tokens never attend to the pads after them,
    so no attention mask is needed (and SDPA takes its fast causal path).
    """
    import torch

    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for i, (x, m) in enumerate(examples):
        ids[i, :len(x)] = torch.tensor(x)
        labels[i, :len(x)] = torch.where(torch.tensor(m), torch.tensor(x), -100)
    return ids, labels


def train_model(cfg: PretrainConfig, out_dir: Path, *, seed: int = 0,
                progress: bool = True) -> dict[str, Any]:
    """Build the tokenizer, pretrain the model and save both into ``out_dir``.

    Returns
    -------
    dict
        Training metrics (final loss as a mean over the last 50 steps, wall time, tokens).
    """
    import torch
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    held_out = held_out_problems(cfg)
    problems = training_problems(cfg, cfg.steps * cfg.batch_size, seed, exclude=held_out)
    tok = build_arith_tokenizer(out_dir, _corpus_for_tokenizer(problems[:2000]), cfg.vocab_size)
    examples = encode_examples(tok, problems, cfg.loss_on)
    model = _init_model(cfg, tok, seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.learning_rate, betas=(0.9, 0.98), eps=1e-8)
    model.train()
    losses, tokens = [], 0
    bar = tqdm(range(cfg.steps), desc="pretraining demo base", unit="step", disable=not progress)
    for step in bar:
        batch = examples[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        ids, labels = _batch(batch, tok.pad_token_id)
        tokens += int((labels != -100).sum())
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg)
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
        if step % 10 == 0 or step == cfg.steps - 1:
            bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
    model.eval()
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tail = losses[-50:]
    return {"final_loss": sum(tail) / len(tail), "first_loss": losses[0],
            "loss_curve": [round(sum(losses[i:i + 50]) / len(losses[i:i + 50]), 4)
                           for i in range(0, len(losses), 50)],
            "train_seconds": time.perf_counter() - t0, "loss_tokens": tokens,
            "parameters": sum(p.numel() for p in model.parameters()),
            "examples": len(examples)}


# --- evaluation -------------------------------------------------------------------------

def evaluate_base(model_dir, problems: list[Problem], temperature: float = 0.0,
                  samples: int = 1, *, max_new_tokens: int | None = None,
                  batch_size: int = 64, seed: int = 0, return_details: bool = False):
    """Accuracy of a model on ``problems`` with the answering stage's prompts (transformers).

    Parameters
    ----------
    model_dir : str or Path
        A model directory with its tokenizer (e.g. from :func:`build_demo_base`).
    problems : list of Problem
        Problems with AIME-style gold answers (integers 0-999).
    temperature : float
        0 for greedy decoding, else sampling at this temperature (top_p 1).
    samples : int
        Completions per problem (sampling only; greedy ones would all be equal).
    max_new_tokens : int, optional
        Completion budget; default 32 tokens more than the longest worked solution of
        ``problems`` (or 48 + 40 per operation when they have none).
    batch_size : int
        Prompts per ``generate`` call.
    seed : int
        Seeds torch's generator before sampling, so the accuracy is reproducible.
    return_details : bool
        Also return, per completion, the problem index, extracted answer, correctness
        and completion length in tokens.

    Returns
    -------
    float or (float, list of dict)
        Mean correctness over all problems and samples.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ensemble.core.grading import grade

    if temperature == 0 and samples != 1:
        raise ValueError("greedy decoding gives one answer per problem; use samples=1")
    tok = AutoTokenizer.from_pretrained(str(model_dir), padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    if max_new_tokens is None:
        if all(p.solution for p in problems):  # room for the longest worked solution
            max_new_tokens = 32 + max(len(ids) for ids in tok(
                [p.solution for p in problems], add_special_tokens=False)["input_ids"])
        else:
            max_new_tokens = 48 + 40 * max(p.problem.count(", then ") + 1 for p in problems)
    prompts = [render_prompt(tok, p) for p in problems]
    torch.manual_seed(seed)
    details = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        enc = tok(chunk, add_special_tokens=False, return_tensors="pt", padding=True)
        kw = (dict(do_sample=True, temperature=temperature, top_p=1.0, top_k=0,
                   num_return_sequences=samples) if temperature > 0 else dict(do_sample=False))
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                 **kw)
        gen = out[:, enc["input_ids"].shape[1]:]
        for j, row in enumerate(gen):
            i = start + j // samples
            ids = row.tolist()
            n = ids.index(tok.eos_token_id) + 1 if tok.eos_token_id in ids else len(ids)
            g = grade(tok.decode(ids[:n], skip_special_tokens=True), problems[i].answer, "aime")
            details.append({"problem": i, "answer": g.answer, "correct": bool(g.correct),
                            "completion_tokens": n})
    acc = sum(d["correct"] for d in details) / len(details)
    return (acc, details) if return_details else acc


# --- the cached entry point -------------------------------------------------------------

def _pretrain_into(tmp: Path, cfg: PretrainConfig, seed: int, key: str, progress: bool) -> dict:
    """Pretrain into ``tmp`` and score the held-out set; the ``pretrain.json`` record."""
    t0 = time.perf_counter()
    metrics = train_model(cfg, tmp, seed=seed, progress=progress)
    held_out = held_out_problems(cfg)
    acc, details = evaluate_base(tmp, held_out, 0.0, 1, return_details=True)
    ev = {"problems": len(held_out), "difficulty": cfg.eval_difficulty,
          "seed": cfg.eval_seed, "greedy": acc,
          "completion_tokens_max": max(d["completion_tokens"] for d in details)}
    for t in cfg.eval_temperatures:
        ev[f"sampled_t{t:g}"] = evaluate_base(tmp, held_out, t, 1, seed=seed)
    ev["eval_seconds"] = time.perf_counter() - t0 - metrics["train_seconds"]
    return {"config": dataclasses.asdict(cfg), "seed": seed, "key": key,
            "recipe": RECIPE_VERSION, "train": metrics, "eval": ev,
            "wall_seconds": time.perf_counter() - t0,
            "versions": versions("torch", "transformers", "tokenizers")}


def build_demo_base(cache_dir: Path, *, seed: int = 0, progress: bool = True,
                    fresh: bool = False, **overrides: Any) -> Path:
    """The demo base model directory: the shipped one, or pretrained and cached.

    Parameters
    ----------
    cache_dir : Path
        Models are kept in ``cache_dir/demo-<key>`` where ``key`` hashes every setting,
        the seed, the recipe version and the package version.
    seed : int
        Seeds the initialisation, the training problems and their order.
    progress : bool
        Show a progress bar while pretraining.
    fresh : bool
        Pretrain into the cache even when the shipped model has these settings.
    **overrides
        :class:`PretrainConfig` fields (a ``[pretrain]`` table of an experiment config).

    Returns
    -------
    Path
        The shipped model (:data:`SHIPPED`) for its settings and seed, unless ``fresh``;
        otherwise a directory under ``cache_dir`` with ``config.json``, ``model.safetensors`` (float32),
        ``generation_config.json``, the tokenizer (with chat template) and
        ``pretrain.json`` (settings and metrics).
    """
    import torch

    from ensemble.core.config import check_seed

    check_seed(seed)
    cfg = PretrainConfig.from_overrides(**overrides)
    key = cache_key(cfg, seed)
    if not fresh and key == shipped_key():
        return SHIPPED
    final = Path(cache_dir) / f"demo-{key[:16]}"
    if (final / PRETRAIN_JSON).is_file():
        return final
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        with BuildDir(final, PRETRAIN_JSON) as build:
            info = _pretrain_into(build.path, cfg, seed, key, progress)
            (build.path / PRETRAIN_JSON).write_text(json.dumps(info, indent=2) + "\n")
    finally:
        torch.set_num_threads(threads)
    return final
