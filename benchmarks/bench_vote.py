"""Benchmark of the exact voting estimator against Monte-Carlo committee sampling.

Run from the repository root::

    python benchmarks/bench_vote.py            # full (several minutes)
    python benchmarks/bench_vote.py --quick    # smoke test (< 60 s)
    python benchmarks/bench_vote.py --profile  # also cProfile the headline case
    python benchmarks/bench_vote.py --scale    # only the large-pool section (6.)

The machine this runs on is shared and noisy, so every comparison is printed as a
*ratio of times measured in this same run*; absolute seconds are shown for context only.
Nothing here asserts anything about time.

What is measured
----------------
* Headline: the exact accuracy curve for every k (1..N) of two independent voter pools
  ("collaboration" and "repetition", N voters x P problems each), with pass@k and a
  paired problem bootstrap (one resample index matrix for both conditions) giving
  percentile CIs of both curves and of their difference.  Timed in-process end to end
  (histograms, exact_matrix, pass@k, resampled means, CIs); best of 3, with the exact
  estimator's lru_cache cleared before every repetition.
* Baseline: a plain-Python Counter-based Monte-Carlo loop (random.sample a committee,
  Counter over the non-null answers of each problem, most_common, ties split 1/t), the
  way other harnesses compute maj@k.  It is too slow to run for every k, so it is timed
  on a few evenly spread k and extrapolated linearly to every k and both conditions.
* The project's vectorised ``voting.monte_carlo`` for every k, both conditions.
* Accuracy of both Monte-Carlo estimates against the exact curve (which has no sampling
  error at all: it averages over every one of the C(N, k) committees).
* Scaling of the exact curve with voters and problems, each large case guarded by a
  time budget (one problem is timed first in a child process and extrapolated).
* Large pools (``ensemble.voting.scale``): 100,000 voters x 30 problems x the k grid
  log:40, both conditions, with 200 paired bootstrap resamples, run in a fresh child
  process for its wall time and peak resident memory, with the largest proven error
  bound; and, at 200 / 1,000 / 2,000 voters, the dispatcher ``accuracy_matrix`` and the
  windowed method beside today's ``exact_matrix`` (time and max |difference|), and the
  histogram Monte-Carlo's time and Hoeffding half-width.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import multiprocessing as mp
import os
import pstats
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ensemble.core import bootstrap  # noqa: E402
from ensemble.voting import estimators as voting, scale as voting_scale  # noqa: E402

try:  # the committee-size grid parser, when the project has it
    from ensemble.voting.config import parse_k as _parse_k
except ImportError:  # pragma: no cover - older checkouts
    _parse_k = None

CONDITIONS = ("collaboration", "repetition")
WRONG_CLASSES = 15
WRONG_CONCENTRATION = 0.5
ABSTAIN = 0.05
ACC_RANGE = (0.05, 0.80)
CI_LEVEL = 0.95


# --------------------------------------------------------------------------- data


def simulate(problems: int, voters: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Answer codes for both conditions, shape (problems, voters) each; gold code 0.

    Per problem a difficulty fixes the voter accuracy, uniform in 5%-80% and shared by
    both conditions (they answer the same problems).  Each condition draws its own
    wrong-answer distribution over 15 classes from Dirichlet(0.5) and its own answers;
    5% of answers are abstentions (code -1).
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, problems, voters]))
    p_correct = rng.uniform(*ACC_RANGE, size=problems)
    out = {}
    for cond in CONDITIONS:
        codes = np.empty((problems, voters), dtype=np.int64)
        for i in range(problems):
            wrong = rng.dirichlet(np.full(WRONG_CLASSES, WRONG_CONCENTRATION))
            probs = np.concatenate(
                [[(1 - ABSTAIN) * p_correct[i]], (1 - ABSTAIN) * (1 - p_correct[i]) * wrong, [ABSTAIN]]
            )
            c = rng.choice(WRONG_CLASSES + 2, size=voters, p=probs / probs.sum())
            codes[i] = np.where(c == WRONG_CLASSES + 1, -1, c)  # 0 gold, 1..15 wrong
        out[cond] = codes
    return out, np.zeros(problems, dtype=np.int64)


def k_grid(spec: str | None, n: int) -> np.ndarray:
    if spec is None:
        return np.arange(1, n + 1)
    if _parse_k is not None:
        return _parse_k(spec, n)
    num = int(spec.split(":")[1])
    return np.unique(np.round(np.geomspace(1, n, num)).astype(np.int64))


# ------------------------------------------------------------------ exact pipeline


def clear_caches() -> None:
    voting._exact_cached.cache_clear()
    voting._log_factorials.cache_clear()


def exact_pipeline(data: dict[str, np.ndarray], gold: np.ndarray, ks: np.ndarray,
                   reps: int, seed: int) -> dict:
    """What `ensemble vote --estimator exact` computes: curves, pass@k, paired CIs."""
    p, n = next(iter(data.values())).shape
    idx = bootstrap.problem_resamples(p, reps, seed)  # one index matrix: paired
    res = {}
    for cond, codes in data.items():
        hists = [voting.histogram(codes[i], int(gold[i])) for i in range(p)]
        W = voting.exact_matrix(hists, ks)
        PK = voting.pass_at_k_matrix(n, np.array([h.g for h in hists]), ks)
        res[cond] = {
            "W": W,
            "curve": W.mean(axis=0),
            "ci": bootstrap.percentile_ci(bootstrap.resampled_means(W, idx), CI_LEVEL),
            "pass": PK.mean(axis=0),
            "pass_ci": bootstrap.percentile_ci(bootstrap.resampled_means(PK, idx), CI_LEVEL),
        }
    if reps and len(data) == 2:
        a, b = (res[c]["W"] for c in CONDITIONS)
        res["diff_ci"] = bootstrap.percentile_ci(bootstrap.resampled_means(a - b, idx), CI_LEVEL)
    return res


def exact_curves_only(data: dict[str, np.ndarray], gold: np.ndarray, ks: np.ndarray) -> dict:
    p = len(gold)
    return {
        cond: voting.exact_matrix([voting.histogram(codes[i], int(gold[i])) for i in range(p)], ks)
        for cond, codes in data.items()
    }


def best_of(fn, repeats: int, budget_s: float = float("inf")) -> tuple[float, object]:
    """Best wall time of ``repeats`` runs (fewer if the budget is spent); caches cleared."""
    best, result, spent = float("inf"), None, 0.0
    for _ in range(repeats):
        clear_caches()
        t0 = time.perf_counter()
        result = fn()
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
        if spent > budget_s:
            break
    return best, result


# ------------------------------------------------------------- Monte-Carlo baselines


def counter_mc(rows: list[list], gold: list, n: int, ks, committees: int, seed: int):
    """Plain-Python maj@k: W[problem, i] and seconds spent per k.

    ``rows[p][v]`` is voter v's answer on problem p, None for no answer.
    """
    rnd = random.Random(seed)
    voters = range(n)
    W = np.zeros((len(rows), len(ks)))
    secs = []
    for ki, k in enumerate(ks):
        t0 = time.perf_counter()
        wins = [0.0] * len(rows)
        for _ in range(committees):
            members = rnd.sample(voters, int(k))
            for pi, row in enumerate(rows):
                answers = [row[m] for m in members]
                counts = collections.Counter(a for a in answers if a is not None)
                if not counts:
                    continue
                ranked = counts.most_common()
                top = ranked[0][1]
                tied = [a for a, c in ranked if c == top]
                if gold[pi] in tied:
                    wins[pi] += 1.0 / len(tied)
        W[:, ki] = np.array(wins) / committees
        secs.append(time.perf_counter() - t0)
    return W, secs


def to_rows(codes: np.ndarray) -> list[list]:
    return [[None if c < 0 else int(c) for c in row] for row in codes]


def curve_errors(est: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    d = est - truth
    return float(np.max(np.abs(d))), float(np.sqrt(np.mean(d**2)))


# ----------------------------------------------------------------- guarded scaling


def _child(conn, fn, mem_bytes):
    try:
        if mem_bytes:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))
        conn.send(("ok", fn()))
    except MemoryError:
        conn.send(("memory", None))
    except BaseException as e:  # report, never hang the parent
        conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()


def _in_child(ctx, target, args, timeout_s: float):
    """Start ``target(conn, *args)`` in a child of ``ctx``; its (status, value) or a timeout."""
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=(child, *args))
    proc.start()
    child.close()
    if parent.poll(timeout_s):
        try:
            status, value = parent.recv()
        except EOFError:
            status, value = "error", "child died"
        proc.join()
        return status, value
    proc.terminate()
    proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join()
    return "timeout", None


def run_limited(fn, timeout_s: float):
    """Run ``fn`` in a forked child with a wall-clock and memory cap.

    Returns (status, value): status is "ok", "timeout", "memory" or "error".
    """
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        mem = int(total * 0.6)
    except (ValueError, OSError, AttributeError):
        mem = 0
    return _in_child(mp.get_context("fork"), _child, (fn, mem), timeout_s)


def predicted_cost(h: voting.Histogram, k_max: int) -> float:
    """Relative cost of voting._exact_row for one problem (arbitrary units).

    Per gold count j, each of the m wrong classes of size >= j is merged with a
    (t, k_max, j) einsum, t growing to m, plus a fixed numpy call overhead per merge.
    The two weights were fitted to measured per-problem times at 200-2000 voters
    (within about +-30% per problem); only ratios of this cost are used.
    """
    k_max = min(k_max, h.n)
    others = np.asarray(h.others)
    cost = 0.0
    for j in range(1, min(h.g, k_max) + 1):
        m = int(np.count_nonzero(others >= j))
        cost += (k_max + 1) * (j + 1) * m * (m + 1) / 2 + 2.9e4 * (m + 1)
    return cost


def _time_one(h: voting.Histogram, k_max: int) -> float:
    """Seconds for one problem's exact row; best of up to 5 runs while they are short."""
    best, spent = float("inf"), 0.0
    for _ in range(5):
        clear_caches()
        t0 = time.perf_counter()
        voting._exact_cached(h, k_max)
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
        if spent > 0.5:
            break
    return best


def scaling_case(voters: int, problems: int, spec: str | None, seed: int,
                 problem_budget: float, case_budget: float, repeats: int,
                 repeat_budget: float) -> dict:
    data, gold = simulate(problems, voters, seed)
    ks = k_grid(spec, voters)
    k_max = int(ks.max())
    row = {"voters": voters, "problems": problems, "grid": spec or "every k",
           "n_k": len(ks), "k_max": k_max}
    hists = [voting.histogram(c[i], int(gold[i])) for c in data.values() for i in range(problems)]
    costs = np.array([predicted_cost(h, k_max) for h in hists])
    worst = int(np.argmax(costs))
    status, t1 = run_limited(lambda: _time_one(hists[worst], k_max), problem_budget)
    if status != "ok":
        row["skip"] = {
            "timeout": f"skipped: one problem > {problem_budget:g} s budget",
            "memory": "skipped: one problem ran out of memory",
        }.get(status, f"skipped: {t1}")
        return row
    est = t1 * costs.sum() / costs[worst]  # scale the slowest problem by the cost model
    row["probe_s"], row["est_s"] = t1, est
    if est > case_budget:
        row["skip"] = f"skipped: est. {est:.0f} s > {case_budget:g} s budget"
        return row
    def timed():
        spent, times = 0.0, []
        for _ in range(repeats):  # best of `repeats`, fewer once `repeat_budget` is spent
            clear_caches()
            t0 = time.perf_counter()
            exact_curves_only(data, gold, ks)
            times.append(time.perf_counter() - t0)
            spent += times[-1]
            if spent > repeat_budget:
                break
        return min(times), len(times)

    status, value = run_limited(timed, timeout_s=max(3 * est, 30.0) * repeats)
    if status != "ok":
        row["skip"] = f"skipped: full case {status}"
        return row
    row["secs"], row["runs"] = value
    return row


# ------------------------------------------------------------------- large pools


def _rss_mb() -> float:
    """Peak resident memory of this process so far (ru_maxrss, KiB on Linux), in MB."""
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0 if sys.platform != "darwin" else kb / 2**20


def _current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")


def large_pool_run(voters: int, problems: int, spec: str, reps: int, seed: int,
                   eps: float) -> dict:
    """The vote stage at scale: histograms, accuracy_matrix, pass@k, paired bootstrap.

    Runs in whatever process calls it; :func:`_large_pool_child` calls it in a fresh
    one so that ru_maxrss is this run's own peak.
    """
    out = {"rss_start_mb": _current_rss_mb()}
    t0 = time.perf_counter()
    data, gold = simulate(problems, voters, seed)
    out["sim_s"] = time.perf_counter() - t0
    ks = k_grid(spec, voters)
    out["ks"] = ks.tolist()
    t0 = time.perf_counter()
    idx = bootstrap.problem_resamples(problems, reps, seed)
    Ws, bounds, curves, cis = {}, {}, {}, {}
    t_hist = t_acc = 0.0
    for cond in CONDITIONS:
        codes = data.pop(cond)  # free each condition's codes once it is histogrammed
        t1 = time.perf_counter()
        hists = [voting.histogram(codes[i], int(gold[i])) for i in range(problems)]
        del codes
        t2 = time.perf_counter()
        W, bound = voting_scale.accuracy_matrix(hists, ks, eps=eps)
        t3 = time.perf_counter()
        t_hist += t2 - t1
        t_acc += t3 - t2
        PK = voting.pass_at_k_matrix(voters, np.array([h.g for h in hists]), ks)
        Ws[cond], bounds[cond] = W, bound
        curves[cond] = (W.mean(axis=0), PK.mean(axis=0))
        cis[cond] = bootstrap.percentile_ci(bootstrap.resampled_means(W, idx), CI_LEVEL)
    a, b = (Ws[c] for c in CONDITIONS)
    diff_ci = bootstrap.percentile_ci(bootstrap.resampled_means(a - b, idx), CI_LEVEL)
    out["total_s"] = time.perf_counter() - t0
    out["hist_s"], out["acc_s"] = t_hist, t_acc
    out["boot_s"] = out["total_s"] - t_hist - t_acc
    out["peak_rss_mb"] = _rss_mb()
    out["max_bound"] = float(max(bounds[c].max() for c in CONDITIONS))
    out["bound_per_k"] = np.maximum(*(bounds[c] for c in CONDITIONS)).tolist()
    out["curves"] = {c: (curves[c][0].tolist(), curves[c][1].tolist(),
                         cis[c][0].tolist(), cis[c][1].tolist()) for c in CONDITIONS}
    out["diff_ci"] = (diff_ci[0].tolist(), diff_ci[1].tolist())
    return out


def _large_pool_child(conn, *args):
    try:
        conn.send(("ok", large_pool_run(*args)))
    except BaseException as e:  # report, never hang the parent
        conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()


def large_pool_isolated(*args, timeout_s: float = 1800.0):
    """:func:`large_pool_run` in a freshly spawned interpreter (clean ru_maxrss)."""
    return _in_child(mp.get_context("spawn"), _large_pool_child, args, timeout_s)


def compare_methods(voters: int, problems: int, spec: str | None, seed: int,
                    draws: int, eps: float) -> dict:
    """exact_matrix vs accuracy_matrix (auto and windowed) vs histogram Monte-Carlo."""
    data, gold = simulate(problems, voters, seed)
    ks = k_grid(spec, voters)
    hists = {c: [voting.histogram(data[c][i], int(gold[i])) for i in range(problems)]
             for c in CONDITIONS}
    row = {"voters": voters, "grid": spec or "every k", "n_k": len(ks)}

    def timed(fn):
        clear_caches()
        t0 = time.perf_counter()
        res = fn()
        return time.perf_counter() - t0, res

    row["exact_s"], ex = timed(lambda: {c: voting.exact_matrix(hists[c], ks) for c in CONDITIONS})
    row["auto_s"], au = timed(lambda: {c: voting_scale.accuracy_matrix(hists[c], ks, eps)
                                       for c in CONDITIONS})
    row["win_s"], wi = timed(lambda: {c: voting_scale.accuracy_matrix(hists[c], ks, eps,
                                                                      method="windowed")
                                      for c in CONDITIONS})
    row["mc_s"], mc = timed(lambda: {c: voting_scale.histogram_monte_carlo(
        hists[c], ks, draws, seed) for c in CONDITIONS})
    row["auto_exact"] = sum(int(voting_scale._choose_exact(hists[c], ks, "auto").sum())
                            for c in CONDITIONS)
    row["auto_diff"] = max(float(np.abs(au[c][0] - ex[c]).max()) for c in CONDITIONS)
    row["auto_bound"] = max(float(au[c][1].max()) for c in CONDITIONS)
    row["win_diff"] = max(float(np.abs(wi[c][0] - ex[c]).max()) for c in CONDITIONS)
    row["win_bound"] = max(float(wi[c][1].max()) for c in CONDITIONS)
    row["mc_cell"], row["mc_mean"] = mc[CONDITIONS[0]][1]
    row["mc_err"] = max(float(np.abs(mc[c][0] - ex[c]).max()) for c in CONDITIONS)
    row["mc_mean_err"] = max(float(np.abs(mc[c][0].mean(0) - ex[c].mean(0)).max())
                             for c in CONDITIONS)
    return row


def scale_section(cfg: dict, seed: int, number: int = 6) -> dict:
    """Section 6: large pools with voting_scale; returns the numbers for the summary."""
    V, P, spec, reps, eps = (cfg["big_voters"], cfg["big_problems"], "log:40",
                             cfg["big_reps"], cfg["eps"])
    section(f"{number}. Large pools (ensemble.voting.scale): {V:,} voters x {P} problems x "
            f"{spec}, both conditions, {reps} paired bootstrap resamples")
    print(f"Run in a freshly spawned interpreter so ru_maxrss is this run's own peak; eps = "
          f"{eps:g}. Targets: < 60 s, < 3 GB, proven error bound <= 1e-9.")
    status, r = large_pool_isolated(V, P, spec, reps, seed, eps)
    res = {}
    if status != "ok":
        print(f"large-pool run failed: {status} {r or ''}")
    else:
        ks = np.array(r["ks"])
        print(f"k grid: {len(ks)} sizes from {ks.min()} to {ks.max():,}")
        print(f"data simulation (not timed as part of the pipeline): {fmt_s(r['sim_s'])}")
        print(f"wall time, histograms + accuracy_matrix + pass@k + bootstrap + CIs: "
              f"{fmt_s(r['total_s'])}  (histograms {fmt_s(r['hist_s'])}, accuracy_matrix "
              f"{fmt_s(r['acc_s'])}, pass@k + bootstrap + CIs {fmt_s(r['boot_s'])})")
        print(f"peak resident memory (ru_maxrss of the child): {r['peak_rss_mb']:,.0f} MB "
              f"(after imports: {r['rss_start_mb']:,.0f} MB)")
        print(f"max proven error bound over all cells: {r['max_bound']:.2e}")
        ok = (r["total_s"] < 60, r["peak_rss_mb"] < 3072, r["max_bound"] <= 1e-9)
        print("targets: " + ", ".join(f"{name} {'met' if o else 'MISSED'}" for name, o in
                                      zip(("time < 60 s", "memory < 3 GB", "bound <= 1e-9"), ok)))
        rows = []
        shown = sorted({int(ks[int(round(i))]) for i in np.linspace(0, len(ks) - 1, 9)})
        for k in shown:
            i = int(np.nonzero(ks == k)[0][0])
            row = [f"{k:,}"]
            for c in CONDITIONS:
                mean, _, lo, hi = r["curves"][c]
                row.append(f"{mean[i]:.4f} [{lo[i]:.4f}, {hi[i]:.4f}]")
            m0 = r["curves"][CONDITIONS[0]][0][i] - r["curves"][CONDITIONS[1]][0][i]
            row.append(f"{m0:+.4f} [{r['diff_ci'][0][i]:+.4f}, {r['diff_ci'][1][i]:+.4f}]")
            row.append(f"{r['curves'][CONDITIONS[0]][1][i]:.4f}")
            row.append(f"{r['bound_per_k'][i]:.1e}")
            rows.append(row)
        print()
        print(table(["k", f"{CONDITIONS[0]} [95% CI]", f"{CONDITIONS[1]} [95% CI]",
                     "difference [paired CI]", "pass@k (collab)", "bound"], rows))
        res["big"] = r
    # ------------------------------------------------------------ side by side
    print()
    P = cfg["cmp_problems"]
    print(f"Side by side at sizes where exact_matrix runs ({P} problems, both conditions; "
          f"caches cleared before each). 'auto' = accuracy_matrix's choice per problem,\n"
          f"'windowed' = forced windowed method, MC = histogram_monte_carlo with "
          f"{cfg['mc_draws']} draws per cell (Hoeffding half-widths at delta = 1e-3).")
    crow = []
    res["cmp"] = []
    for v in cfg["cmp_voters"]:
        spec_v = cfg["cmp_small_grid"] if v <= 200 else "log:40"
        c = compare_methods(v, P, spec_v, seed, cfg["mc_draws"], eps)
        res["cmp"].append(c)
        crow.append([f"{v:,}", f"{c['grid']} ({c['n_k']} k)", f"{c['exact_s']:.3f}",
                     f"{c['auto_s']:.3f} ({c['auto_s'] / c['exact_s']:.2f}x)",
                     f"{c['auto_exact']}/{2 * P}",
                     f"{c['auto_diff']:.1e}",
                     f"{c['win_s']:.3f} ({c['win_s'] / c['exact_s']:.2f}x)",
                     f"{c['win_diff']:.1e} / {c['win_bound']:.0e}",
                     f"{c['mc_s']:.3f}", f"{c['mc_cell']:.3f} / {c['mc_mean']:.4f}",
                     f"{c['mc_err']:.3f} / {c['mc_mean_err']:.4f}"])
        print(f"  done: {v} voters", flush=True)
    print()
    print(table(["voters", "k grid", "exact s", "auto s (ratio)", "auto: exact used",
                 "auto max|diff|",
                 "windowed s (ratio)", "windowed max|diff| / bound", "MC s",
                 "MC half-width cell / mean", "MC max|err| cell / mean"], crow, "llrrrrrrrrr"))
    print("(ratios are to exact_matrix in this run. |diff| includes exact_matrix's own float "
          "error, ~log(N!) x 1e-16:\n about 1e-12 at 1,000 voters and 3e-12 at 2,000, "
          "checked against rational arithmetic in tests/test_voting_scale.py.)")
    return res


# ---------------------------------------------------------------------- reporting


def table(headers: list[str], rows: list[list], aligns: str | None = None) -> str:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    aligns = aligns or "l" + "r" * (len(headers) - 1)

    def fmt(r):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w)
                         for c, w, a in zip(r, widths, aligns))

    lines = [fmt(headers), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells]
    return "\n".join(lines)


def section(title: str) -> None:
    print()
    print(title)
    print("=" * len(title))


def fmt_s(s: float) -> str:
    return f"{s:.3g} s" if s < 100 else f"{s:.0f} s"


# --------------------------------------------------------------------------- main


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small settings (< 60 s), smoke test")
    ap.add_argument("--profile", action="store_true",
                    help="also cProfile the headline exact pipeline (top 10 by cumulative time)")
    ap.add_argument("--scale", action="store_true",
                    help="run only the large-pool section (ensemble.voting.scale)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    scale_cfg = (dict(big_voters=10_000, big_problems=10, big_reps=200, eps=1e-13,
                      cmp_voters=(200,), cmp_problems=10, cmp_small_grid="log:40",
                      mc_draws=200) if args.quick else
                 dict(big_voters=100_000, big_problems=30, big_reps=200, eps=1e-13,
                      cmp_voters=(200, 1000, 2000), cmp_problems=30, cmp_small_grid=None,
                      mc_draws=1000))
    if args.scale:
        t_start = time.perf_counter()
        print(f"bench_vote --scale{' --quick' if args.quick else ''} - python "
              f"{sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} CPUs")
        print("Times are wall-clock on a shared machine; compare the ratios (measured side by "
              "side in this run), not absolute seconds.")
        scale_section(scale_cfg, args.seed)
        print(f"(total benchmark wall time {time.perf_counter() - t_start:.0f} s)")
        return

    if args.quick:
        cfg = dict(voters=200, problems=30, reps=1000, repeats=2,
                   base_committees=100, base_k=5, base_conds=1, mc_committees=200, mc_repeats=1,
                   scale_voters=(200, 1000, 20000), scale_problems=(30, 100),
                   problem_budget=3.0, case_budget=15.0, repeat_budget=5.0)
    else:
        cfg = dict(voters=200, problems=30, reps=1000, repeats=3,
                   base_committees=1000, base_k=10, base_conds=2, mc_committees=1000, mc_repeats=3,
                   scale_voters=(200, 2000, 20000), scale_problems=(30, 500),
                   problem_budget=20.0, case_budget=300.0, repeat_budget=20.0)
    N, P, seed = cfg["voters"], cfg["problems"], args.seed
    t_start = time.perf_counter()

    print(f"bench_vote ({'quick' if args.quick else 'full'}) - python {sys.version.split()[0]}, "
          f"numpy {np.__version__}, {os.cpu_count()} CPUs")
    print("Times are wall-clock on a shared machine; compare the ratios (measured side by "
          "side in this run), not absolute seconds.")
    print(f"Data: {P} problems x {N} voters per condition ({', '.join(CONDITIONS)}), voter "
          f"accuracy U{ACC_RANGE} per problem, {WRONG_CLASSES} wrong classes ~ "
          f"Dirichlet({WRONG_CONCENTRATION}), {ABSTAIN:.0%} abstentions, seed {seed}.")

    data, gold = simulate(P, N, seed)
    ks = np.arange(1, N + 1)

    # ---------------------------------------------------------------- headline
    section(f"1. Headline: exact curve, {N} voters x {P} problems x every k (1..{N}), "
            f"both conditions, {cfg['reps']} paired bootstrap resamples")
    t_exact, res = best_of(lambda: exact_pipeline(data, gold, ks, cfg["reps"], seed),
                           cfg["repeats"])
    t_curves, _ = best_of(lambda: exact_curves_only(data, gold, ks), cfg["repeats"])
    print(f"end to end (histograms + exact_matrix + pass@k + bootstrap means + CIs), "
          f"best of {cfg['repeats']}: {fmt_s(t_exact)}")
    print(f"exact curves alone (histograms + exact_matrix), best of {cfg['repeats']}: "
          f"{fmt_s(t_curves)}  (pass@k + bootstrap + CIs add little; the difference is "
          "mostly timing noise)")
    show_k = [k for k in (1, 2, 5, 10, 20, 50, 100, 200, 500) if k <= N]
    rows = []
    for k in show_k:
        r = [k]
        for cond in CONDITIONS:
            lo, hi = res[cond]["ci"]
            r.append(f"{res[cond]['curve'][k - 1]:.3f} [{lo[k - 1]:.3f}, {hi[k - 1]:.3f}]")
        lo, hi = res["diff_ci"]
        d = res[CONDITIONS[0]]["curve"][k - 1] - res[CONDITIONS[1]]["curve"][k - 1]
        r.append(f"{d:+.3f} [{lo[k - 1]:+.3f}, {hi[k - 1]:+.3f}]")
        r.append(f"{res[CONDITIONS[0]]['pass'][k - 1]:.3f}")
        rows.append(r)
    print()
    print(table(["k", f"{CONDITIONS[0]} [95% CI]", f"{CONDITIONS[1]} [95% CI]",
                 "difference [paired CI]", "pass@k (collab)"], rows))

    # ---------------------------------------------------------------- baseline
    n_conds = cfg["base_conds"]
    B = cfg["base_committees"]
    sub_k = np.unique(np.round(np.linspace(1, N, cfg["base_k"])).astype(np.int64))
    section(f"2. Baseline: plain-Python Counter Monte-Carlo, {B} committees per k "
            f"(measured on {len(sub_k)} k, {n_conds} condition(s); extrapolated)")
    base_secs = []
    base_W = {}
    for cond in CONDITIONS[:n_conds]:
        rows_py = to_rows(data[cond])
        W, secs = counter_mc(rows_py, gold.tolist(), N, sub_k, B, seed)
        base_W[cond] = W
        base_secs.append(secs)
    base_secs = np.array(base_secs)  # (conds, len(sub_k))
    measured = float(base_secs.sum())
    per_k = base_secs.mean(axis=0)
    # Cost is ~linear in k and the measured k are evenly spread over 1..N (their mean k
    # equals the mean over all k), so a least-squares line through the per-k times sums
    # to exactly mean(per-k time) x N over every k.
    extrap = float(per_k.mean()) * N * len(CONDITIONS)
    slope, icept = np.polyfit(sub_k, per_k, 1)
    print(table(["k"] + [str(k) for k in sub_k],
                [["s per k per condition"] + [f"{s:.2f}" for s in per_k]]))
    print(f"(linear fit: {icept * 1e3:.0f} ms + {slope * 1e3:.1f} ms x k per condition; "
          f"mean k measured = {sub_k.mean():.1f}, mean over every k = {(N + 1) / 2:.1f})")
    print(f"measured: {fmt_s(measured)} for {len(sub_k)} k x {n_conds} condition(s)")
    print(f"EXTRAPOLATED to every k (1..{N}) x {len(CONDITIONS)} conditions: {fmt_s(extrap)} "
          f"(no bootstrap included)")
    print(f"==> Counter-MC (extrapolated) / exact end to end = {extrap / t_exact:,.0f}x")

    # ----------------------------------------------------- vectorised Monte-Carlo
    Bv = cfg["mc_committees"]
    section(f"3. Vectorised voting.monte_carlo, {Bv} committees per k, every k, both conditions")
    mc_res = {}

    def run_mc():
        return {c: voting.monte_carlo(data[c], gold, ks, Bv, seed) for c in CONDITIONS}

    t_mc, mc_res = best_of(run_mc, cfg["mc_repeats"])
    print(f"curves only (no bootstrap), best of {cfg['mc_repeats']}: {fmt_s(t_mc)}")
    print(f"==> vectorised MC / exact curves only      = {t_mc / t_curves:.1f}x")
    print(f"==> vectorised MC / exact end to end       = {t_mc / t_exact:.1f}x "
          "(the exact run also did pass@k + 1000 bootstrap resamples + CIs)")

    # ----------------------------------------------------------------- accuracy
    section("4. Error against the exact curve (mean accuracy over problems)")
    print("The exact estimator averages over every one of the C(N, k) committees: it has no "
          "sampling error\n(only float rounding, ~1e-15). Monte-Carlo errors below are pure "
          "sampling noise.")
    rows = []
    sub_i = sub_k - 1
    for cond in CONDITIONS:
        truth_W = res[cond]["W"]
        truth = res[cond]["curve"]
        if cond in base_W:
            mx, rms = curve_errors(base_W[cond].mean(axis=0), truth[sub_i])
            pmx, prms = curve_errors(base_W[cond], truth_W[:, sub_i])
            rows.append([f"Counter-MC B={B}", cond, f"{len(sub_k)} measured k",
                         f"{mx:.4f}", f"{rms:.4f}", f"{pmx:.4f}", f"{prms:.4f}", "-"])
        m = mc_res[cond]
        se = float(np.sqrt(np.mean((m.sd / np.sqrt(Bv)) ** 2)))
        for label, sel in ((f"{len(sub_k)} measured k", sub_i), (f"every k (1..{N})", slice(None))):
            mx, rms = curve_errors(m.per_problem.mean(axis=0)[sel], truth[sel])
            pmx, prms = curve_errors(m.per_problem[:, sel], truth_W[:, sel])
            rows.append([f"voting.monte_carlo B={Bv}", cond, label, f"{mx:.4f}", f"{rms:.4f}",
                         f"{pmx:.4f}", f"{prms:.4f}", f"{se:.4f}" if sel is not sub_i else "-"])
        rows.append(["exact", cond, f"every k (1..{N})", "0", "0", "0", "0", "0"])
    print()
    print(table(["estimator", "condition", "over", "curve max|err|", "curve RMS",
                 "per-problem max|err|", "per-problem RMS", "MC SE (RMS)"], rows, "lllrrrrr"))

    # ------------------------------------------------------------------ scaling
    section("5. Scaling of the exact curves (histograms + exact_matrix, both conditions, "
            "no bootstrap)")
    print(f"Guard: the costliest problem (by a cost model) is timed first in a child process; "
          f"a case is skipped if\nthat problem takes > {cfg['problem_budget']:g} s or the "
          f"extrapolated case > {cfg['case_budget']:g} s. Large-N cases use the k grid log:40.\n"
          f"Best of {cfg['repeats']}, or fewer runs once {cfg['repeat_budget']:g} s are spent.")
    cases = [(v, P, None if v <= 200 else "log:40") for v in cfg["scale_voters"]]
    cases += [(N, p, None) for p in cfg["scale_problems"] if p != P]
    srows, ref, scale_res = [], None, []
    for v, p, spec in cases:
        r = scaling_case(v, p, spec, seed, cfg["problem_budget"], cfg["case_budget"],
                         cfg["repeats"], cfg["repeat_budget"])
        scale_res.append(r)
        grid = f"{r['grid']} ({r['n_k']} k, k_max {r['k_max']})"
        if "secs" in r:
            if ref is None and v == N and p == P and spec is None:
                ref = r["secs"]
            ratio = f"{r['secs'] / ref:,.1f}x" if ref else "-"
            srows.append([v, p, grid, f"{r['secs']:.3f}", f"{r['secs'] / p:.4f}", ratio,
                          f"best of {r['runs']}; probe {r['probe_s']:.2f} s, est {r['est_s']:.1f} s"])
        else:
            note = r["skip"] + (f" (probe {r['probe_s']:.2f} s)" if "probe_s" in r else "")
            srows.append([v, p, grid, "-", "-", "-", note])
        print(f"  done: {v} voters x {p} problems [{r['grid']}]", flush=True)
    print()
    print(table(["voters", "problems", "k grid", "seconds", "s per problem", "ratio to 200x30",
                 "note"], srows, "rrlrrrl"))
    print("(s per problem covers both conditions. With the current algorithm a k grid does "
          "not cut the cost:\n exact_matrix computes every k up to k_max = max(grid), and "
          "log:40 always contains N.)")

    # -------------------------------------------------------------- large pools
    large_res = scale_section(scale_cfg, seed)

    # ----------------------------------------------------------------- profile
    if args.profile:
        section(f"7. cProfile of the headline exact pipeline ({N} x {P}, every k, "
                f"{cfg['reps']} resamples), top 10 by cumulative time")
        clear_caches()
        prof = cProfile.Profile()
        prof.enable()
        exact_pipeline(data, gold, ks, cfg["reps"], seed)
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(10)
        print(buf.getvalue().rstrip())

    # ----------------------------------------------------------------- summary
    section("Summary")
    by = {(r["voters"], r["problems"]): r for r in scale_res}
    parts = [f"exact {N}x{P} every-k both conds + {cfg['reps']} boot: {fmt_s(t_exact)}",
             f"Counter-MC B={B} (extrapolated) {extrap / t_exact:,.0f}x slower",
             f"vectorised MC B={Bv} {t_mc / t_curves:.1f}x the exact curves' time"]
    for (v, p), r in by.items():
        if (v, p) == (N, P):
            continue
        parts.append(f"{v}x{p}: " + (f"{r['secs'] / ref:,.1f}x" if "secs" in r and ref
                                      else r["skip"].replace("skipped: ", "skipped ")))
    if "big" in large_res:
        b = large_res["big"]
        parts.append(f"{scale_cfg['big_voters']:,}x{scale_cfg['big_problems']} log:40 + "
                     f"{scale_cfg['big_reps']} boot (voting_scale): {fmt_s(b['total_s'])}, "
                     f"{b['peak_rss_mb']:,.0f} MB, bound {b['max_bound']:.0e}")
    print("SUMMARY: " + " | ".join(parts))
    print(f"(total benchmark wall time {time.perf_counter() - t_start:.0f} s)")


if __name__ == "__main__":
    main()
