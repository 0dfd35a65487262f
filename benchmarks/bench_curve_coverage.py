"""Coverage of the vote curve's intervals (curve.csv ci_low/ci_high), side by side.

Run:  OMP_NUM_THREADS=1 python benchmarks/bench_curve_coverage.py [--reps 300]

For each condition, control-model count M and committee size k it prints the coverage
(with its Monte-Carlo standard error) and mean width of

* ``wilson``: the interval the vote stage reports (ensemble.core.proportions: Wilson's
  with the effective sample size of the crossed design, the between-model part on
  M - 1 degrees of freedom);
* ``percentile``: the percentile bootstrap it replaced (problems, and control models
  resampled with them), 1000 resamples.

The generative model, the pools and the truths are those of
``benchmarks/bench_gap_coverage.py`` (collaboration: conditional on its fixed pool;
repetition: a typical control model), with two spreads of model skill: 0.4 (the
models' own accuracies differ by ~0.06 sd, like the demo's) and 0.8 (~0.12 sd), and a
third population whose models differ by skill alone (no model x problem blind spot).
Last, the repetition condition's diversity intervals (rho, the same-model disagreement)
with and without the control models resampled.  Nothing is asserted: this is a
measurement (tests/test_proportions.py and tests/test_diversity.py check one case each).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from bench_gap_coverage import (Population, Size, collaboration_w, compute_truth,  # noqa: E402
                                draw_problems, draw_skills, repetition_w)
from ensemble.core.bootstrap import (model_resamples, percentile_ci,  # noqa: E402
                                     problem_resamples, resampled_model_means)
from ensemble.core.proportions import curve_intervals  # noqa: E402


def run(pop: Population, size: Size, reps: int, seed: int = 0, boot: int = 1000):
    truth = compute_truth(pop, size, seed)
    ks, rng = truth.ks, np.random.default_rng([seed, 3])
    rows = {}  # (condition, M, k, method) -> [covered], [width]

    def add(key, lo, hi, t):
        c, w = rows.setdefault(key, ([], []))
        c.append(lo <= t <= hi)
        w.append(hi - lo)

    for r in range(reps):
        g = r % size.pools
        d, q = draw_problems(pop, size.problems, rng)
        wc = collaboration_w(pop, d, q, truth.pools[g], ks, rng)              # (P, K)
        wr = repetition_w(pop, d, q, draw_skills(pop, max(size.models), rng), size.n, ks,
                          rng)                                                 # (M, P, K)
        idx = problem_resamples(size.problems, boot, r)
        lo, hi = curve_intervals(wc)
        plo, phi = percentile_ci(resampled_model_means(wc[None], idx,
                                                       model_resamples(1, boot, r)), 0.95)
        for j, k in enumerate(ks):
            add(("collaboration", "-", int(k), "wilson"), lo[j], hi[j], truth.collab[g, j])
            add(("collaboration", "-", int(k), "percentile"), plo[j], phi[j],
                truth.collab[g, j])
        for m in size.models:
            lo, hi = curve_intervals(wr[:m])
            plo, phi = percentile_ci(resampled_model_means(wr[:m], idx,
                                                           model_resamples(m, boot, r)), 0.95)
            for j, k in enumerate(ks):
                add(("repetition", m, int(k), "wilson"), lo[j], hi[j], truth.repet[j])
                add(("repetition", m, int(k), "percentile"), plo[j], phi[j], truth.repet[j])
    return rows


def diversity_coverage(sd: float, m: int, p: int, n: int, reps: int, boot: int = 400,
                       seed: int = 0, wrong: int = 5):
    """Coverage of the repetition condition's rho and same-model disagreement intervals,
    with the control models resampled (what `ensemble vote` does) and without.

    The generative model of tests/test_diversity.py: P(correct) = expit(skill - difficulty
    + blind spot); a wrong answer is the model's favourite on the problem with
    probability 0.6, else one of ``wrong`` at random.  Truths from 2000 x 2000 draws.
    """
    from ensemble.core.bootstrap import model_resamples, problem_resamples
    from ensemble.voting.diversity import diversity, pair_counts

    rng = np.random.default_rng([seed, 5])

    def skills(models, problems):
        logit = (rng.normal(0, sd, models)[:, None] - rng.normal(0, 1.5, problems)[None, :]
                 + rng.normal(0, 1.0, (models, problems)))
        return 1 / (1 + np.exp(-logit))

    q = skills(2000, 2000)
    pbar = q.mean(axis=0)
    fav, rest = 0.6 + 0.4 / wrong, 0.4 / wrong
    truth = {"icc_model": float(q.var(axis=0).sum() / (pbar * (1 - pbar)).sum()),
             "disagreement_same": float((1 - q ** 2 - (1 - q) ** 2 * (
                 fav ** 2 + (wrong - 1) * rest ** 2)).mean())}
    out = {}
    groups = [f"m{j}" for j in range(m) for _ in range(n)]
    for r in range(reps):
        qm = skills(m, p)
        favourite = rng.integers(1, wrong + 1, size=(m, p))
        right = rng.random((m, p, n)) < qm[:, :, None]
        own = rng.random((m, p, n)) < 0.6
        w = np.where(own, favourite[:, :, None], rng.integers(1, wrong + 1, size=(m, p, n)))
        codes = np.where(right, 0, w).transpose(1, 0, 2).reshape(p, m * n)
        pc = pair_counts(codes, np.zeros(p, dtype=int), groups, by_model=True)
        for how, midx in (("models resampled", model_resamples(m, boot, r)),
                          ("problems only", None)):
            d = diversity("repetition", pc, m, committees="model",
                          idx=problem_resamples(p, boot, r), midx=midx)
            for name in truth:
                e = getattr(d, name)
                c, wd = out.setdefault((name, how), ([], []))
                c.append(e.low <= truth[name] <= e.high)
                wd.append(e.high - e.low)
    return truth, out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.time()
    print(f"# curve CI coverage (nominal 0.95), {args.reps} replications each")
    # (skill sd, blind-spot sd, problems): the blind spot is a model x problem term; without
    # it the models differ by skill alone and their spread dominates the uncertainty.
    for sd, blind, problems in ((0.4, 1.0, 30), (0.8, 1.0, 30), (0.8, 0.0, 60)):
        pop = Population(sd_skill=sd, sd_blind=blind)
        size = Size(16, problems, models=(2, 4, 8), pools=4, truth_problems=1500,
                    truth_pairs=20000, population=pop)
        rows = run(pop, size, args.reps, args.seed)
        print(f"\n## skill sd {sd}, blind-spot sd {blind}: N = {size.voters} variants, "
              f"P = {size.problems} problems, n = {size.n} samples per control model\n")
        print("| condition | M | k | wilson coverage ± se | width | percentile coverage ± se "
              "| width |\n|---|---|---|---|---|---|---|")
        for key in sorted({k[:3] for k in rows}, key=lambda x: (x[0], str(x[1]), x[2])):
            cells = []
            for meth in ("wilson", "percentile"):
                c, w = (np.array(v, dtype=float) for v in rows[(*key, meth)])
                se = np.sqrt(c.mean() * (1 - c.mean()) / len(c))
                cells += [f"{c.mean():.3f} ± {se:.3f}", f"{w.mean():.3f}"]
            print(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
    print("\n## diversity statistics of the repetition control (rho, same-model "
          "disagreement)\n")
    print("| skill sd | M | P | n | statistic | truth | resampled | coverage ± se | width |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for sd, m, p, n in ((0.8, 4, 30, 16), (0.4, 16, 200, 6)):
        truth, out = diversity_coverage(sd, m, p, n, max(50, args.reps // 3), seed=args.seed)
        for (name, how), (c, wd) in sorted(out.items()):
            c = np.array(c, dtype=float)
            se = np.sqrt(c.mean() * (1 - c.mean()) / len(c))
            print(f"| {sd} | {m} | {p} | {n} | {name} | {truth[name]:.3f} | {how} | "
                  f"{c.mean():.3f} ± {se:.3f} | {np.mean(wd):.3f} |")
    print(f"\n({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
