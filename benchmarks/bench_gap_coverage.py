"""Coverage of the gap confidence intervals (fits/intervals.py) on a generative model.

Run:  OMP_NUM_THREADS=1 python benchmarks/bench_gap_coverage.py [--preset main|quick]

Prints a markdown table: for each size (N voters, P problems, M control models,
n samples per model) and committee size k, the coverage of every interval method
(with its Monte-Carlo standard error) and the mean width.  Nothing is asserted: this
is a measurement; tests/test_intervals.py runs a small version and checks the auto
method.

Generative model (a population of LoRA-like variants of one base model)
-----------------------------------------------------------------------
* Problem p: difficulty logit ``d_p ~ N(mu, sd_d)``; a "wrong-answer pull"
  ``q_p ~ Dirichlet(alpha)`` over L wrong classes (some wrong answers are attractive).
* Model (variant or control model) v: skill ``s_v ~ N(0, sd_s)``.
* Model v on problem p: ``P(correct) = expit(d_p + s_v + e_vp)`` with a blind-spot
  term ``e_vp ~ N(0, sd_e)``; its wrong answers follow ``q_vp ~ Dirichlet(kappa q_p)``
  (its own take on the problem's wrong pull); it abstains with probability
  ``expit(a0 + sd_a z_vp)``.  This is the answer distribution ``pi_vp``.
* Collaboration: the N variants answer every problem once (one draw from each pi_vp).
* Repetition: M control models drawn from the same population each answer n times
  (n i.i.d. draws from pi_mp).

Per-problem accuracies come from the exact committee estimator
(``ensemble.voting.estimators.exact_matrix``), exactly as in the vote stage.

Truths
------
* Collaboration: conditional on the pool of variants (the estimand is about *this*
  pool).  A few pools are drawn per size and kept fixed; each pool's truth is the
  mean of W_c over many fresh problems.
* Repetition, typical model: mean of W_r over many fresh (problem, model) pairs
  (a random k-subset of n i.i.d. samples is k i.i.d. samples, so n does not matter).
* Repetition given one model (for the M = 1 conditional coverage): a function of the
  model's skill alone, computed on a grid of skills with common random numbers and
  interpolated.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.special import expit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ensemble.voting.estimators import Histogram, exact_matrix  # noqa: E402
from fits.intervals import METHODS, gap_interval  # noqa: E402


@dataclass(frozen=True)
class Population:
    """Parameters of the generative model (see the module docstring)."""

    mu_difficulty: float = 0.0
    sd_difficulty: float = 1.5
    sd_skill: float = 0.4
    sd_blind: float = 1.0
    wrong_classes: int = 5
    wrong_alpha: float = 0.5
    wrong_kappa: float = 4.0
    abstain_logit: float = -3.0
    sd_abstain: float = 0.7


def draw_problems(pop: Population, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    d = rng.normal(pop.mu_difficulty, pop.sd_difficulty, n)
    q = rng.dirichlet(np.full(pop.wrong_classes, pop.wrong_alpha), size=n)
    return d, q


def draw_skills(pop: Population, shape, rng) -> np.ndarray:
    return rng.normal(0.0, pop.sd_skill, shape)


def answer_probs(pop: Population, d, q, skills, rng) -> np.ndarray:
    """Answer distribution pi[v, p, :] = (correct, wrong_1..L, abstain).

    ``skills`` is (V,) for V models on every problem, or (V, P) for a per-problem model.
    """
    skills = np.asarray(skills, dtype=float)
    s = skills[:, None] if skills.ndim == 1 else skills
    v, p = s.shape[0], len(d)
    pc = expit(d[None, :] + s + rng.normal(0.0, pop.sd_blind, (v, p)))
    ab = expit(pop.abstain_logit + pop.sd_abstain * rng.normal(size=(v, p)))
    g = rng.gamma(np.maximum(pop.wrong_kappa * q[None, :, :], 1e-3), 1.0,
                  size=(v, p, pop.wrong_classes)) + 1e-300
    wrong = g / g.sum(axis=2, keepdims=True)
    return np.concatenate([(pc * (1 - ab))[..., None],
                           ((1 - pc) * (1 - ab))[..., None] * wrong, ab[..., None]], axis=2)


def draw_answers(pi: np.ndarray, n: int, rng) -> np.ndarray:
    """Category counts (V, P, C) of n i.i.d. draws from each pi[v, p]."""
    cum = np.cumsum(pi, axis=2)
    u = rng.random(pi.shape[:2] + (n,))
    cat = (u[..., None] > cum[:, :, None, :]).sum(axis=3)
    cat = np.minimum(cat, pi.shape[2] - 1)
    c = pi.shape[2]
    flat = (np.arange(pi.shape[0] * pi.shape[1])[:, None] * c
            + cat.reshape(-1, n)).ravel()
    return np.bincount(flat, minlength=pi.shape[0] * pi.shape[1] * c).reshape(pi.shape)


def _hist(counts: np.ndarray) -> Histogram:
    return Histogram(int(counts[0]), tuple(int(x) for x in counts[1:-1] if x > 0),
                     int(counts[-1]))


def w_matrix(counts: np.ndarray, ks) -> np.ndarray:
    """Exact committee accuracy for count rows (..., C) -> (..., len(ks))."""
    flat = counts.reshape(-1, counts.shape[-1])
    w = exact_matrix([_hist(r) for r in flat], np.asarray(ks))
    return w.reshape(counts.shape[:-1] + (len(ks),))


def collaboration_w(pop, d, q, variant_skills, ks, rng) -> np.ndarray:
    """W_c (P, K): the N variants answer every problem once."""
    pi = answer_probs(pop, d, q, variant_skills, rng)          # (N, P, C)
    counts = draw_answers(pi, 1, rng).sum(axis=0)               # (P, C)
    return w_matrix(counts, ks)


def repetition_w(pop, d, q, model_skills, n, ks, rng) -> np.ndarray:
    """W_r (M, P, K): each control model answers every problem n times."""
    pi = answer_probs(pop, d, q, model_skills, rng)
    return w_matrix(draw_answers(pi, n, rng), ks)


# --------------------------------------------------------------------------- truths


def collaboration_truth(pop, variant_skills, ks, n_problems, rng, chunk=500):
    tot = np.zeros(len(ks))
    sq = np.zeros(len(ks))
    done = 0
    while done < n_problems:
        m = min(chunk, n_problems - done)
        d, q = draw_problems(pop, m, rng)
        w = collaboration_w(pop, d, q, variant_skills, ks, rng)
        tot += w.sum(axis=0)
        sq += (w ** 2).sum(axis=0)
        done += m
    mean = tot / done
    return mean, np.sqrt((sq / done - mean ** 2) / done)


def repetition_truth(pop, n, ks, n_pairs, rng, chunk=500):
    """Typical-model repetition accuracy: fresh (problem, model) pairs."""
    tot = np.zeros(len(ks))
    done = 0
    while done < n_pairs:
        m = min(chunk, n_pairs - done)
        d, q = draw_problems(pop, m, rng)
        s = draw_skills(pop, (1, m), rng)
        tot += repetition_w(pop, d, q, s, n, ks, rng)[0].sum(axis=0)
        done += m
    return tot / done


def repetition_truth_by_skill(pop, n, ks, grid, n_problems, seed):
    """Repetition accuracy of a model of skill s, for every s in grid (common randoms)."""
    out = np.zeros((len(grid), len(ks)))
    for i, s in enumerate(grid):
        rng = np.random.default_rng([seed, 77])  # same problems and noise for every s
        d, q = draw_problems(pop, n_problems, rng)
        out[i] = repetition_w(pop, d, q, np.full((1, n_problems), s), n, ks, rng)[0].mean(0)
    return out


# --------------------------------------------------------------------------- replications


@dataclass
class Size:
    voters: int = 40
    problems: int = 30
    models: tuple[int, ...] = (1, 4)
    samples: int | None = None      # n per control model; default = voters
    pools: int = 8                   # fixed variant pools (each with its own truth)
    truth_problems: int = 3000       # fresh problems per pool for the collaboration truth
    truth_pairs: int = 20000         # fresh (problem, model) pairs for the repetition truth
    skill_grid: int = 15
    skill_problems: int = 1500
    ks: tuple[int, ...] = field(default=())
    population: Population = Population()
    label: str = ""

    def resolved_ks(self) -> tuple[int, ...]:
        if self.ks:
            return self.ks
        return (1, int(round(np.sqrt(self.voters))), self.voters)

    @property
    def n(self) -> int:
        return self.samples or self.voters


@dataclass
class Truth:
    ks: np.ndarray
    pools: np.ndarray            # (G, N) variant skills
    collab: np.ndarray           # (G, K)
    collab_se: np.ndarray        # (G, K)
    repet: np.ndarray            # (K,)
    grid: np.ndarray             # (S,)
    repet_by_skill: np.ndarray   # (S, K)

    def repet_given(self, skill: float) -> np.ndarray:
        return np.array([np.interp(skill, self.grid, self.repet_by_skill[:, j])
                         for j in range(len(self.ks))])


def compute_truth(pop: Population, size: Size, seed: int) -> Truth:
    pop = size.population if size.population != Population() else pop
    ks = np.array(size.resolved_ks())
    rng = np.random.default_rng([seed, 1])
    pools = draw_skills(pop, (size.pools, size.voters), rng)
    collab, se = zip(*(collaboration_truth(pop, pools[g], ks, size.truth_problems, rng)
                       for g in range(size.pools)))
    repet = repetition_truth(pop, size.n, ks, size.truth_pairs, rng)
    grid = np.linspace(-3.5, 3.5, size.skill_grid) * pop.sd_skill
    by_skill = repetition_truth_by_skill(pop, size.n, ks, grid, size.skill_problems, seed)
    return Truth(ks, pools, np.array(collab), np.array(se), repet, grid, by_skill)


def run_coverage(pop: Population, size: Size, reps: int, boot: int = 2000, seed: int = 0,
                 methods=METHODS + ("auto",), truth: Truth | None = None, level=0.95):
    """Replicate the experiment ``reps`` times; return per-replication records.

    Each record: dict(M, k, method, covered_typical, covered_conditional, width, chosen).
    """
    pop = size.population if size.population != Population() else pop
    truth = truth or compute_truth(pop, size, seed)
    ks = truth.ks
    m_max = max(size.models)
    rng = np.random.default_rng([seed, 2])
    records = []
    for r in range(reps):
        g = r % size.pools
        d, q = draw_problems(pop, size.problems, rng)
        wc = collaboration_w(pop, d, q, truth.pools[g], ks, rng)          # (P, K)
        skills = draw_skills(pop, m_max, rng)
        wr_all = repetition_w(pop, d, q, skills, size.n, ks, rng)           # (M, P, K)
        cond = truth.repet_given(skills[0])
        for m in size.models:
            for j, k in enumerate(ks):
                t_typ = truth.collab[g, j] - truth.repet[j]
                t_cond = truth.collab[g, j] - cond[j] if m == 1 else np.nan
                x, y = wc[:, j], wr_all[:m, :, j]
                for meth in methods:
                    gi = gap_interval(x, y, level=level, method=meth, reps=boot, seed=r)
                    records.append({
                        "M": m, "k": int(k), "method": meth,
                        "covered_typical": gi.contains(t_typ),
                        "covered_conditional": gi.contains(t_cond) if m == 1 else np.nan,
                        "width": gi.width, "chosen": gi.method if meth == "auto" else "",
                        "true_gap": t_typ})
    return truth, records


def summarise(records, methods) -> list[dict]:
    """Coverage (+ Monte-Carlo se) and mean width per (M, k, method)."""
    rows = []
    keys = sorted({(r["M"], r["k"]) for r in records})
    for m, k in keys:
        for meth in methods:
            sel = [r for r in records if r["M"] == m and r["k"] == k and r["method"] == meth]
            cov = np.array([r["covered_typical"] for r in sel], dtype=float)
            n = len(cov)
            row = {"M": m, "k": k, "method": meth, "n": n, "cov": cov.mean(),
                   "se": np.sqrt(cov.mean() * (1 - cov.mean()) / n),
                   "width": float(np.mean([r["width"] for r in sel])),
                   "true_gap": float(np.mean([r["true_gap"] for r in sel]))}
            if m == 1:
                cc = np.array([r["covered_conditional"] for r in sel], dtype=float)
                row["cov_cond"] = cc.mean()
                row["se_cond"] = np.sqrt(cc.mean() * (1 - cc.mean()) / n)
            if meth == "auto":
                chosen = [r["chosen"] for r in sel]
                row["chosen"] = ", ".join(f"{c} {chosen.count(c) / n:.0%}"
                                          for c in sorted(set(chosen)))
            rows.append(row)
    return rows


def markdown(rows, size: Size, elapsed: float) -> str:
    label = f"{size.label}: " if size.label else ""
    head = (f"\n**{label}N = {size.voters} voters, P = {size.problems} problems, n = {size.n} "
            f"samples per control model** ({rows[0]['n']} replications, {elapsed:.0f} s)\n\n"
            "| M | k | true gap | method | coverage (typical model) ± se | "
            "coverage (given the model, M=1) ± se | mean width | auto chose |\n"
            "|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        cond = (f"{r['cov_cond']:.3f} ± {r['se_cond']:.3f}" if "cov_cond" in r else "")
        lines.append(f"| {r['M']} | {r['k']} | {r['true_gap']:+.3f} | {r['method']} | "
                     f"{r['cov']:.3f} ± {r['se']:.3f} | {cond} | {r['width']:.3f} | "
                     f"{r.get('chosen', '')} |")
    return head + "\n".join(lines) + "\n"


PRESETS = {
    # truth_pairs 60000: with 20000 pairs the typical-model repetition truth was off by
    # ~0.005 (2 of its se) at N = 40, enough to cost ~1 point of coverage at P = 60.
    "main": [Size(40, 30, models=(1, 4, 8), truth_pairs=60000),
             Size(40, 60, models=(1, 4, 8), truth_pairs=60000),
             Size(16, 30, models=(1, 4, 8), truth_pairs=60000),
             Size(100, 30, truth_problems=1500, truth_pairs=8000),
             Size(40, 30, models=(1, 4, 8), truth_pairs=60000,
                  population=Population(sd_skill=0.8),
                  label="heterogeneous models (sd_skill = 0.8)")],
    "quick": [Size(16, 20, pools=4, truth_problems=1500, truth_pairs=6000,
                   skill_grid=9, skill_problems=800)],
    # small heterogeneous case (between-model variance dominant) for the test suite
    "quick_het": [Size(16, 20, models=(4,), pools=4, truth_problems=1500, truth_pairs=6000,
                       skill_grid=9, skill_problems=800, population=Population(sd_skill=0.8),
                       label="heterogeneous models (sd_skill = 0.8)")],
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="main")
    ap.add_argument("--reps", type=int, default=1000, help="replications per size")
    ap.add_argument("--boot", type=int, default=2000, help="bootstrap resamples")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--only", type=int, default=None,
                    help="run only this size of the preset (0-based)")
    ap.add_argument("--reps-large", type=int, default=None,
                    help="replications for sizes with N >= 100 (default: --reps)")
    args = ap.parse_args(argv)
    pop = Population()
    methods = METHODS + ("auto",)
    sizes = PRESETS[args.preset]
    if args.only is not None:
        sizes = [sizes[args.only]]
    print(f"# gap CI coverage, {args.preset}: {Population()}, boot={args.boot}, "
          f"seed={args.seed}")
    for size in sizes:
        t0 = time.time()
        reps = args.reps_large if (args.reps_large and size.voters >= 100) else args.reps
        truth = compute_truth(pop, size, args.seed)
        print(f"\ntruth: k={truth.ks.tolist()} collaboration (per pool, mean) "
              f"{truth.collab.mean(0).round(4).tolist()} (max se "
              f"{truth.collab_se.max():.4f}); repetition {truth.repet.round(4).tolist()}; "
              f"{time.time() - t0:.0f} s", flush=True)
        _, rec = run_coverage(pop, size, reps, args.boot, args.seed, methods, truth)
        print(markdown(summarise(rec, methods), size, time.time() - t0), flush=True)


if __name__ == "__main__":
    main()
