"""The variant plan: which data each variant sees, and the hash of everything else.

Variant ``i`` of an experiment with seed ``s`` draws each varied factor from its own numpy
generator seeded by ``SeedSequence([s, i, key])`` (one key per factor), so a variant's data
never depends on how many variants there are, on which machine it is planned, or on the
order variants are trained in.  Unvaried factors use ``SeedSequence([s, key])``: the same
draw for every variant.  Everything that is not varied goes into the *recipe hash*; two
variants of one plan differ only in the fields listed in :data:`VARIED_FIELDS`.

The plan needs the pool and the base model's config file, nothing heavier (no torch), so
``ensemble train --plan-only`` answers in a second.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

import numpy as np

from ensemble.core.files import canonical_hash
from ensemble.core.grading import grading_kind
from ensemble.core.models import base_fingerprint
from ensemble.core.problems import Problem, load_problems
from train_variants.config import TrainConfig

# One stream per factor; the numbers are part of the plan's definition: never renumber.
FACTOR_KEYS = {"mask": 1, "order": 2, "init_seed": 3, "sampling_seed": 4, "rank": 5,
               "lora_init": 6}
# Fields of a plan record (and of variant.json) that may differ between two variants.
VARIED_FIELDS = ("id", "index", "seeds", "order_hash", "sequence_hash", "mask_hash",
                 "init_seed", "sampling_seed", "lora_rank", "lora_alpha", "lora_init")
PLAN_VERSION = 1


@dataclass(frozen=True)
class VariantPlan:
    """One variant's identity: its seeds, data order and mask, and LoRA settings."""

    id: str
    index: int
    seeds: dict  # factor -> the SeedSequence entropy its generator was built from
    order_hash: str  # sha256 (16 hex) of the kept pool ids in training order
    sequence_hash: str  # of the ids actually consumed: steps x batch_size x grad_accum, cycled
    mask_hash: str  # of the sorted dropped ids
    kept: int
    dropped: int
    examples_seen: int
    init_seed: int
    sampling_seed: int
    lora_rank: int
    lora_alpha: float
    lora_init: str
    recipe_hash: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Plan:
    """The whole population's plan plus what every variant shares."""

    variants: list[VariantPlan]
    recipe: dict  # everything not varied (hashed into recipe_hash)
    recipe_hash: str
    pool: list[Problem]
    kind: str  # resolved grading kind
    base: dict  # id, revision, config_sha256, fingerprint
    orders: dict[int, list[int]]  # variant index -> pool indices in training order

    def for_indices(self, indices) -> list[VariantPlan]:
        want = set(indices)
        return [v for v in self.variants if v.index in want]

    def training_rows(self, index: int) -> list[Problem]:
        """The pool rows variant ``index`` trains on, in order (the masked ones left out)."""
        return [self.pool[j] for j in self.orders[index]]


def lines_hash(items) -> str:
    """16 hex digits of sha256 over ``items``, one per line (orders, masks, pools)."""
    return hashlib.sha256("\n".join(map(str, items)).encode()).hexdigest()[:16]


def pool_hash(pool: list[Problem]) -> str:
    return lines_hash(f"{p.id}\t{p.problem}\t{p.answer}" for p in pool)


def _seed_int(*entropy) -> int:
    return int(np.random.SeedSequence(list(entropy)).generate_state(1)[0])


def _entropy(cfg: TrainConfig, factor: str, i: int) -> list[int]:
    key = FACTOR_KEYS[factor]
    return [cfg.seed, i, key] if factor in cfg.vary else [cfg.seed, key]


def _rng(entropy) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(entropy))


def recipe_of(cfg: TrainConfig, pool: list[Problem], kind: str, base: dict,
              shared: dict) -> dict:
    """Everything every variant shares: the config minus run keys and varied fields.

    Machine-specific strings (the pool's path, the base's path) are replaced by content
    hashes, so the same experiment planned on two machines gets the same recipe hash.
    """
    d = cfg.to_dict()
    drop = set(TrainConfig.recipe_excludes()) | {"seed", "vary", "device", "use_vllm",
                                        "gradient_checkpointing", "base", "pool", "split",
                                        "limit", "problem_field", "answer_field", "id_field",
                                        "kind"}
    # The reference trainer is left unnamed, so recipes planned before there were two
    # trainers keep their hash (and their run directories resume); the population
    # trainer samples from other streams, so it is part of its variants' recipe.
    if cfg.trainer == "trl":
        drop.add("trainer")
    # Varied factors are not part of the recipe; the choices they are drawn from are.
    if "init_seed" in cfg.vary:
        drop.add("init_seed")
    if "sampling_seed" in cfg.vary:
        drop.add("sampling_seed")
    if "rank" in cfg.vary:
        drop.add("lora_rank")
    else:
        drop.add("rank_choices")
    if "lora_init" in cfg.vary:
        drop.add("lora_init")
    else:
        drop.add("lora_init_choices")
    recipe = {k: v for k, v in d.items() if k not in drop}
    recipe.update(kind=kind, pool_sha256=pool_hash(pool), pool_size=len(pool),
                  base_fingerprint=base["fingerprint"], plan_version=PLAN_VERSION, **shared)
    return recipe


def distinct_limit(cfg: TrainConfig, n: int, n_drop: int) -> float:
    """How many distinct variants the varied factors can make (inf for seed factors)."""
    if "init_seed" in cfg.vary or "sampling_seed" in cfg.vary:
        return math.inf
    count = 1.0
    if "mask" in cfg.vary:
        count *= math.comb(n, n_drop)
    if "order" in cfg.vary:
        count *= math.factorial(min(n - n_drop, 170))  # 170! is already ~7e306
    if "rank" in cfg.vary:
        count *= len(set(cfg.rank_choices))
    if "lora_init" in cfg.vary:
        count *= len(set(cfg.lora_init_choices))
    return count


def make_plan(cfg: TrainConfig, pool: list[Problem] | None = None,
              base: dict | None = None) -> Plan:
    """The deterministic plan of the whole population ``v000 .. v{variants-1}``.

    Parameters
    ----------
    cfg : TrainConfig
    pool : list of Problem, optional
        The loaded training pool; loaded from ``cfg`` when not given.
    base : dict, optional
        :func:`ensemble.core.models.base_fingerprint` of ``cfg.base``; computed when not given.

    Returns
    -------
    Plan

    Raises
    ------
    ValueError
        The pool is too small after masking, the varied factors cannot make
        ``cfg.variants`` distinct variants, or two planned variants came out identical.
    """
    if pool is None:
        pool = load_problems(cfg.pool, cfg.problem_field, cfg.answer_field, cfg.id_field,
                             cfg.split, cfg.limit)
    base = base if base is not None else base_fingerprint(cfg.base)
    kind = grading_kind(cfg.kind, cfg.pool, (p.answer for p in pool))
    n = len(pool)
    n_drop = int(round(cfg.mask_fraction * n))
    kept = n - n_drop
    per_step = cfg.batch_size * cfg.grad_accum
    if kept < per_step:
        raise ValueError(
            f"the pool has {n} problems; masking {cfg.mask_fraction:g} leaves {kept}, fewer "
            f"than the {per_step} prompts of one step (batch_size x grad_accum); use a larger "
            "pool, a smaller --mask-fraction or a smaller batch_size")
    # TRL's sampler (shuffle off) walks the order in chunks of one step's prompts and drops
    # an incomplete last chunk, then starts over: these are the examples a variant consumes.
    usable = kept // per_step * per_step
    limit = distinct_limit(cfg, n, n_drop)
    if cfg.variants > limit:
        raise ValueError(
            f"--variants {cfg.variants}: varying {', '.join(cfg.vary)} over a pool of {n} "
            f"(dropping {n_drop}) allows at most {int(limit)} distinct variants; use a larger "
            "pool, another --mask-fraction, or vary more factors")
    seen = cfg.steps * cfg.batch_size * cfg.grad_accum
    ids = [p.id for p in pool]
    variants, orders, shared_data = [], {}, {}
    for i in range(cfg.variants):
        ent = {f: _entropy(cfg, f, i) for f in FACTOR_KEYS}
        dropped = np.sort(_rng(ent["mask"]).permutation(n)[:n_drop])
        # The order permutes the whole pool and the mask then removes rows, so with the
        # order unvaried every variant keeps one relative order, whatever its mask.
        perm = _rng(ent["order"]).permutation(n)
        order = perm[~np.isin(perm, dropped)].tolist()
        orders[i] = order
        order_ids = [ids[j] for j in order]
        consumed = [order_ids[k % usable] for k in range(min(seen, 2 * usable))]
        rank = (int(_rng(ent["rank"]).choice(cfg.rank_choices)) if "rank" in cfg.vary
                else cfg.lora_rank)
        init = (str(_rng(ent["lora_init"]).choice(cfg.lora_init_choices))
                if "lora_init" in cfg.vary else cfg.lora_init)
        rec = dict(
            id=f"v{i:03d}", index=i,
            seeds={"experiment": cfg.seed, **{f: ent[f] for f in FACTOR_KEYS}},
            order_hash=lines_hash(order_ids), sequence_hash=lines_hash(consumed),
            mask_hash=lines_hash(sorted(ids[j] for j in dropped)), kept=kept, dropped=n_drop,
            examples_seen=seen,
            init_seed=_seed_int(*ent["init_seed"]) if "init_seed" in cfg.vary else cfg.init_seed,
            sampling_seed=(_seed_int(*ent["sampling_seed"]) if "sampling_seed" in cfg.vary
                           else cfg.sampling_seed),
            lora_rank=rank, lora_alpha=cfg.alpha_for(rank), lora_init=init)
        if i == 0:
            # Unvaried data factors are shared: their hashes belong to the recipe.
            if "order" not in cfg.vary and "mask" not in cfg.vary:
                shared_data["order_hash"] = rec["order_hash"]
            if "mask" not in cfg.vary:
                shared_data["mask_hash"] = rec["mask_hash"]
        variants.append(rec)
    _check_distinct(variants, cfg)
    recipe = recipe_of(cfg, pool, kind, base, shared_data)
    rh = canonical_hash(recipe)
    plans = [VariantPlan(**v, recipe_hash=rh) for v in variants]
    return Plan(plans, recipe, rh, pool, kind, base, orders)


def _check_distinct(variants: list[dict], cfg: TrainConfig) -> None:
    # Two variants that would consume the same examples in the same order with the same
    # seeds and LoRA settings are one model trained twice: a wasted voter and a biased vote.
    seen: dict[tuple, str] = {}
    for v in variants:
        key = (v["sequence_hash"], v["init_seed"], v["sampling_seed"], v["lora_rank"],
               v["lora_init"])
        if key in seen:
            raise ValueError(
                f"variants {seen[key]} and {v['id']} would train on the same data sequence "
                f"with the same settings (varying {', '.join(cfg.vary)}); use a larger pool or "
                "mask fraction, fewer --variants, or vary init_seed/sampling_seed too")
        seen[key] = v["id"]


def plan_lines(plan: Plan, indices=None) -> list[str]:
    """The plan as JSON lines, one variant a line (``ensemble train --plan-only``)."""
    chosen = plan.variants if indices is None else plan.for_indices(indices)
    return [json.dumps(v.to_dict(), sort_keys=True) for v in chosen]
