"""Compute-optimal scaling as a real strategy: estimate a problem's difficulty at inference
time from a cheap first probe (the agreement of its first few samples, or their mean
verifier score; never the gold answer), then spend the rest of the budget the way a policy
table says works best for that difficulty and budget. The probe's samples count toward the
budget and are reused; when they already agree strongly the strategy stops early and the
saved budget is reported.

`fit_policy` builds the table from eval runs on a calibration split (problems disjoint from
the ones it will be judged on): for every difficulty bin and budget, the strategy with the
best accuracy there (ties go to the one that spent fewer tokens).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .core import Generator, Problem, Result, SamplingParams, Scorer
from .grading import group_answers
from .prompts import SYSTEM_PROMPT
from .strategies import PICKERS, all_picks, answers_of, pick_from_pool, sample_pool

DEFAULT_BINS = (0.99, 0.74, 0.49)  # agreement >= 0.99: bin 0 (easy) ... below 0.49: bin 3 (hard)
SIGNALS = ("agreement", "verifier")


def agreement(answers: Sequence[str | None]) -> float:
    """Share of samples in the largest group of equivalent answers (no answer never agrees)."""
    if not answers:
        return 0.0
    groups = [g for g in group_answers(list(answers)) if g is not None]
    return max((groups.count(g) for g in set(groups)), default=0) / len(answers)


@dataclass
class Decision:
    """What a policy does with one problem once its probe samples are in."""

    estimate: float  # the difficulty signal
    difficulty: int  # its bin
    strategy: str
    options: dict[str, Any]  # the strategy's settings from the table
    spend: int  # samples (or search budget) in all, the probe's included; probe_n means stop there


@dataclass
class Policy:
    """(difficulty bin, budget) -> a strategy name and its settings. The difficulty signal is
    the probe samples' answer agreement or their mean verifier score (a value probe's
    estimate that a solution is right); bins are thresholds on it, easiest first."""

    bins: tuple[float, ...] = DEFAULT_BINS
    probe_n: int = 4
    stop_agreement: float = 1.0
    signal: str = "agreement"
    table: dict[str, dict[str, Any]] = field(default_factory=dict)
    default: dict[str, Any] = field(default_factory=lambda: {"strategy": "weighted_best_of_n"})
    meta: dict[str, Any] = field(default_factory=dict)

    def bin(self, estimate: float) -> int:
        return next((i for i, t in enumerate(self.bins) if estimate >= t), len(self.bins))

    def estimate(self, agree: float, scores: Sequence[float]) -> float:
        return agree if self.signal == "agreement" else float(np.mean(scores)) if len(scores) else 0.0

    def choose(self, difficulty: int, budget: int) -> dict[str, Any]:
        """The fitted choice for this bin at the largest fitted budget not above `budget`."""
        fitted = sorted(int(k.split("|")[1]) for k in self.table if k.startswith(f"{difficulty}|"))
        usable = [b for b in fitted if b <= budget]
        return self.table[f"{difficulty}|{usable[-1]}"] if usable else self.default

    def decide(self, agree: float, scores: Sequence[float], budget: int, probe_n: int) -> Decision:
        """The one decision the live strategy and its replay both follow: stop at the probe
        when its samples agree (a vote) or when the table spends no more than the probe;
        otherwise the table's strategy with its (possibly smaller) budget."""
        estimate = self.estimate(agree, scores)
        difficulty = self.bin(estimate)
        options = dict(self.choose(difficulty, budget))
        name = options.pop("strategy")
        spend = min(budget, options.pop("n", budget))  # the table may say a smaller budget does as well
        if agree >= self.stop_agreement:
            return Decision(estimate, difficulty, "majority", options, probe_n)
        if spend <= probe_n:
            return Decision(estimate, difficulty, name if name in PICKERS else "majority", options, probe_n)
        return Decision(estimate, difficulty, name, options, spend)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.__dict__, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        d = json.loads(Path(path).read_text())
        d["bins"] = tuple(d["bins"])
        return cls(**d)


def compute_optimal(
    problem: Problem,
    generator: Generator,
    scorer: Scorer,
    n: int,
    policy: Policy | str | None = None,
    params: SamplingParams | None = None,
    system: str = SYSTEM_PROMPT,
    aggregation: str = "mean",
) -> Result:
    """policy: a fitted Policy, the path of one (`ttscale fit-optimal`), or None for the
    default (weighted Best-of-N whatever the difficulty, still with early stopping)."""
    from .refine import PER_BUDGET
    from .search import accepted_options

    policy = Policy.load(policy) if isinstance(policy, str) else (policy or Policy())
    params = params or SamplingParams()
    t0 = time.perf_counter()
    probe_n = min(policy.probe_n, n)
    probe, compute = sample_pool(problem, generator, scorer, probe_n, params, system, aggregation)
    agree = agreement([c.answer for c in probe])
    d = policy.decide(agree, [c.score for c in probe], n, probe_n)
    name, choice, spend = d.strategy, d.options, d.spend
    settings: dict[str, Any] = {
        "n": n,
        "probe_n": probe_n,
        "agreement": agree,
        "signal": policy.signal,
        "estimate": d.estimate,
        "difficulty": d.difficulty,
    }
    if spend <= probe_n:
        chosen = pick_from_pool(name, probe)
        settings.update(strategy=name, stopped_early=n > probe_n, saved_budget=n - probe_n)
        candidates = probe
    else:
        settings.update(strategy=name, choice=choice, stopped_early=spend < n, saved_budget=n - spend)
        more = replace(params, seed=params.seed + 1)
        if name in PICKERS:  # the probe's samples join the pool
            extra, spent = sample_pool(problem, generator, scorer, spend - probe_n, more, system, aggregation)
            candidates = probe + extra
            compute = compute + spent
            chosen = pick_from_pool(name, candidates)
        else:  # a search with the rest of the budget; the probe's samples vote with its finalists
            fn = PER_BUDGET[name]
            r = fn(
                problem,
                generator,
                scorer,
                spend - probe_n,
                params=more,
                system=system,
                aggregation=aggregation,
                **accepted_options(fn, choice),
            )
            compute = compute + r.compute
            candidates = probe + r.candidates
            chosen = pick_from_pool(choice.get("pick", "weighted_best_of_n"), candidates)
    settings["picks"] = answers_of(candidates, all_picks(candidates))
    compute.wall_time = time.perf_counter() - t0
    settings.update(sampling=params.to_dict(), scorer=scorer.name)
    return Result.picked("compute_optimal", candidates, chosen, compute, settings)


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
    from .analysis import curves, pool_from_record

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
    counts = {}
    for b, ids in sorted(by_bin.items()):
        counts[str(b)] = len(ids)
        # Every (strategy, budget m) measured on the bin: a budget n may spend only m < n when
        # that does as well, which is how easy problems save compute.
        measured: list[tuple[float, float, int, str]] = []  # accuracy, tokens, m, strategy
        pts = curves([pool_from_record(pools[i], scorer, aggregation) for i in ids], list(PICKERS), n_boot=50)
        measured += [(p.accuracy, p.generated_tokens, p.n, p.strategy) for p in pts if p.strategy in PICKERS]
        runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for r in searches:
            if r["id"] in ids:
                runs.setdefault((r["strategy"], r["n"]), []).append(r)
        for (name, m), rs in runs.items():
            if len(rs) == len(ids):  # only strategies run on every problem of the bin
                acc = float(np.mean([r["correct"] for r in rs]))
                tok = float(np.mean([r["compute"]["generated_tokens"] for r in rs]))
                measured.append((acc, tok, m, name))
        for n in budgets:
            options = [
                o for o in measured if (probe_n <= o[2] <= n or o[2] == n) and (not strategies or o[3] in strategies)
            ]
            if not options:
                continue
            best = max(o[0] for o in options)
            acc, _, m, name = min((o for o in options if o[0] >= best - tolerance), key=lambda o: (o[1], -o[0]))
            policy.table[f"{b}|{n}"] = {"strategy": name, **({"n": m} if m < n else {})}
    policy.meta = {
        "problems": len(pools),
        "calibration_ids": sorted(pools),  # so a replay never judges a problem with a table it shaped
        "per_bin": counts,
        "budgets": list(budgets),
        "scorer": scorer,
        "aggregation": aggregation,
        "tolerance": tolerance,
        "strategies": list(strategies) if strategies else None,
    }
    return policy


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
    pools: Sequence[Any],
    policy: Policy | Sequence[Policy],
    budgets: Sequence[int],
    n_boot: int = 100,
    seed: int = 0,
) -> tuple[list[Any], dict[str, Any]]:
    """compute_optimal replayed on stored pools (analysis.PoolProblem), the way the pool
    strategies are: per random draw, the first probe_n samples are the probe, the rest of
    the budget comes from the same draw. Exact in distribution for a policy that only names
    pool strategies (its samples are i.i.d. like the live strategy's); a policy naming a
    search must run live (`--strategy compute_optimal --policy`). `policy` is one policy for
    every pool or one per pool (see policy_per_problem). Returns the curve points and, per
    budget, the mean share of the budget spent and how often it stopped early."""
    from .analysis import CurvePoint, charged, problem_ci

    policies = [policy] * len(pools) if isinstance(policy, Policy) else list(policy)
    for pol in {id(p): p for p in policies}.values():
        searches = {c["strategy"] for c in pol.table.values()} - set(PICKERS)
        if pol.default["strategy"] not in PICKERS or searches:
            raise ValueError(f"this policy names searches ({', '.join(sorted(searches))}): run compute_optimal live")
    rng = np.random.default_rng(seed)
    points, spending = [], {}
    for n in budgets:
        hits = np.zeros((n_boot, len(pools)))
        tokens = np.zeros_like(hits)
        share = np.zeros_like(hits)
        used_frac = np.zeros_like(hits)
        for b in range(n_boot):
            for p, (pool, policy) in enumerate(zip(pools, policies, strict=True)):
                subset = rng.permutation(len(pool.correct))[: min(n, len(pool.correct))]
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
        lo, hi = problem_ci(hits.mean(axis=0), rng)
        cost = charged(pools, share)
        cp = CurvePoint(
            "compute_optimal", n, float(hits.mean()), lo, hi, float(tokens.mean()), *cost, hits.mean(axis=0)
        )
        points.append(cp)
        spending[str(n)] = {"budget_used": float(used_frac.mean()), "stopped_early": float((used_frac < 1).mean())}
    return points, spending
