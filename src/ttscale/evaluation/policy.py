"""Compute-optimal scaling, fitted and replayed on stored runs. `fit_policy` builds the policy
table from eval runs on a calibration split (problems disjoint from the ones it will be judged
on): for every difficulty bin and budget, the strategy with the best accuracy there (ties go
to the one that spent fewer tokens). `replay_compute_optimal` replays a policy of pool
strategies on stored pools, the way the pool strategies are replayed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..strategies.optimal import DEFAULT_BINS, SIGNALS, Policy, agreement
from ..strategies.picks import PICKERS
from ..util.stats import problem_ci, subset_draws
from .curves import CurvePoint, PoolProblem, charged, curves, pool_from_record


def fit_policy(
    records: Sequence[dict[str, Any]],
    budgets: Sequence[int],
    probe_n: int = 4,
    bins: tuple[float, ...] | None = None,
    scorer: str = "logprob",
    aggregation: str = "mean",
    stop_agreement: float = 1.0,
    signal: str = "agreement",
    tolerance: float = 0.0,
    strategies: Sequence[str] | None = None,
) -> Policy:
    """From the records of eval runs on calibration problems (a pool per problem, plus any
    searches): each problem's bin from its pool's first probe_n samples, then per bin and
    budget n the most accurate (strategy, budget m <= n); of those within `tolerance` of the
    best accuracy, the one that spent fewest tokens. Verifier-score bins default to the
    calibration problems' quartiles. `strategies` limits the choice (pool strategies only:
    a policy that `--replay-optimal` can replay on stored pools)."""
    if signal not in SIGNALS:
        raise ValueError(f"unknown difficulty signal {signal!r}; choose from {', '.join(SIGNALS)}")
    pools = {r["id"]: r for r in records if r.get("kind", "pool") == "pool"}
    # only searches the fitted verifier steered: a beam search under another verifier is
    # another strategy, and would otherwise pass for (or, run beside it, hide) this one
    searches = [
        r
        for r in records
        if r.get("kind") == "search"
        and (r["settings"].get("scorer"), r["settings"].get("aggregation")) == (scorer, aggregation)
    ]
    policy = Policy(probe_n=probe_n, stop_agreement=stop_agreement, signal=signal)
    estimates = {}
    for pid, r in pools.items():
        first = pool_from_record({**r, "candidates": r["candidates"][:probe_n]}, scorer, aggregation)
        estimates[pid] = policy.estimate(agreement([c.get("answer") for c in r["candidates"][:probe_n]]), first.scores)
    if bins is None and signal == "verifier" and estimates:
        bins = tuple(float(q) for q in np.quantile(list(estimates.values()), [0.75, 0.5, 0.25]))
    policy.bins = bins or DEFAULT_BINS
    by_bin: dict[int, list[str]] = {}
    for pid, estimate in estimates.items():
        by_bin.setdefault(policy.bin(estimate), []).append(pid)
    for b, ids in sorted(by_bin.items()):
        pool_points = curves([pool_from_record(pools[i], scorer, aggregation) for i in ids], list(PICKERS), n_boot=50)
        measured = _measured(ids, pool_points, searches)
        for n in budgets:
            choice = _cheapest_best(measured, n, probe_n, tolerance, strategies)
            if choice is not None:
                policy.table[f"{b}|{n}"] = choice
    policy.meta = {
        "problems": len(pools),
        "calibration_ids": sorted(pools),  # so a replay never judges a problem with a table it shaped
        "per_bin": {str(b): len(ids) for b, ids in sorted(by_bin.items())},
        "budgets": list(budgets),
        "scorer": scorer,
        "aggregation": aggregation,
        "tolerance": tolerance,
        "strategies": list(strategies) if strategies else None,
    }
    return policy


Measured = tuple[float, float, int, str]  # accuracy, generated tokens, budget m, strategy


def _measured(
    ids: Sequence[str], pool_points: Sequence[CurvePoint], searches: Sequence[dict[str, Any]]
) -> list[Measured]:
    """Every (strategy, budget m) measured on one bin's problems: the pool strategies' curves,
    and each search run on every problem of the bin. A budget n may spend only m < n when that
    does as well, which is how easy problems save compute."""
    measured = [(p.accuracy, p.generated_tokens, p.n, p.strategy) for p in pool_points if p.strategy in PICKERS]
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in searches:
        if r["id"] in ids:
            runs.setdefault((r["strategy"], r["n"]), []).append(r)
    for (name, m), rs in runs.items():
        if len(rs) == len(ids):  # only strategies run on every problem of the bin
            acc = float(np.mean([r["correct"] for r in rs]))
            tok = float(np.mean([r["compute"]["generated_tokens"] for r in rs]))
            measured.append((acc, tok, m, name))
    return measured


def _cheapest_best(
    measured: Sequence[Measured], n: int, probe_n: int, tolerance: float, strategies: Sequence[str] | None
) -> dict[str, Any] | None:
    """Of the choices a budget n allows, the cheapest within `tolerance` of the most accurate."""
    options = [o for o in measured if (probe_n <= o[2] <= n or o[2] == n) and (not strategies or o[3] in strategies)]
    if not options:
        return None
    best = max(o[0] for o in options)
    _, _, m, name = min((o for o in options if o[0] >= best - tolerance), key=lambda o: (o[1], -o[0]))
    return {"strategy": name, **({"n": m} if m < n else {})}


def policy_per_problem(policies: Sequence[Policy], problem_ids: Sequence[str]) -> list[Policy]:
    """Cross-fitting: each problem gets the first policy whose calibration split left it
    out, so no problem is judged by a table it helped to fit (two policies fitted on the two
    halves of a slice cover the whole slice)."""
    seen = [set(p.meta.get("calibration_ids", ())) for p in policies]
    out = []
    for pid in problem_ids:
        free = [p for p, ids in zip(policies, seen, strict=True) if pid not in ids]
        if not free:
            raise ValueError(
                f"every policy was fitted on problem {pid}: replay on problems outside the calibration "
                "split, or add a policy fitted on other problems (cross-fitting)"
            )
        out.append(free[0])
    return out


def replay_compute_optimal(
    pools: Sequence[PoolProblem],
    policy: Policy | Sequence[Policy],
    budgets: Sequence[int],
    n_boot: int = 100,
    seed: int = 0,
) -> tuple[list[CurvePoint], dict[str, Any]]:
    """compute_optimal replayed on stored pools (analysis.PoolProblem), the way the pool
    strategies are: per random draw, the first probe_n samples are the probe, the rest of
    the budget comes from the same draw. Exact in distribution for a policy that only names
    pool strategies (its samples are i.i.d. like the live strategy's); a policy naming a
    search must run live (`--strategy compute_optimal --policy`). `policy` is one policy for
    every pool or one per pool (see policy_per_problem). Returns the curve points and, per
    budget, the mean share of the budget spent and how often it stopped early."""
    policies = [policy] * len(pools) if isinstance(policy, Policy) else list(policy)
    for pol in {id(p): p for p in policies}.values():
        searches = {c["strategy"] for c in pol.table.values()} - set(PICKERS)
        if pol.default["strategy"] not in PICKERS or searches:
            raise ValueError(f"this policy names searches ({', '.join(sorted(searches))}): run compute_optimal live")
    points, spending = [], {}
    for n in budgets:
        subsets_rng = np.random.default_rng([seed, n])  # the subsets curves() replays at n
        hits = np.zeros((n_boot, len(pools)))
        tokens = np.zeros_like(hits)
        share = np.zeros_like(hits)
        used_frac = np.zeros_like(hits)
        for b, p, subset in subset_draws([len(pool.correct) for pool in pools], n, n_boot, subsets_rng):
            pool, policy = pools[p], policies[p]
            k = min(policy.probe_n, len(subset))
            probe = [pool.groups[i] for i in subset[:k]]
            agree = max((probe.count(g) for g in set(probe) if g is not None), default=0) / k
            d = policy.decide(agree, [pool.scores[i] for i in subset[:k]], n, k)
            rule, used = d.strategy, subset[: max(k, d.spend)]
            pick = PICKERS[rule]([pool.groups[i] for i in used], [pool.scores[i] for i in used])
            hits[b, p] = pick is not None and pool.correct[used[pick]]
            tokens[b, p] = pool.tokens[used].sum()
            share[b, p] = tokens[b, p] / max(1.0, pool.tokens.sum())
            used_frac[b, p] = len(used) / n
        lo, hi = problem_ci(hits.mean(axis=0), seed)
        cost = charged(pools, share)
        cp = CurvePoint(
            "compute_optimal", n, float(hits.mean()), lo, hi, float(tokens.mean()), *cost, hits.mean(axis=0)
        )
        points.append(cp)
        spending[str(n)] = {"budget_used": float(used_frac.mean()), "stopped_early": float((used_frac < 1).mean())}
    return points, spending
