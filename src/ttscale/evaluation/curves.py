"""Accuracy-versus-compute curves from one pool of samples per problem.

"Generate once, evaluate many": with N samples per problem, a strategy at budget n < N is
replayed on random n-subsets of the pool. Repeating the draw gives each problem's expected
accuracy at budget n; resampling problems gives a bootstrap confidence interval. Tokens are counted
from the samples actually drawn, so curves against generated tokens are honest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..core import aggregate
from ..strategies.picks import reads_scores, replay
from ..tasks.confidence import mean_certainty
from ..tasks.domain import MATH
from ..util.stats import paired_difference, problem_ci, subset_draws


@dataclass
class PoolProblem:
    """What the replay needs of one problem's pool, precomputed once."""

    groups: list[int | None]
    correct: np.ndarray  # bool per sample
    scores: list[float]
    tokens: np.ndarray  # generated tokens per sample
    certainty: list[float] = field(default_factory=list)  # mean self-certainty per sample
    # the whole pool's cost; a subset is charged its share of the generated tokens
    flops: float = 0.0
    wall_time: float = 0.0
    # a verifier that scored the stored pool later: charged the same way, but only to the rules
    # that read its scores (majority over a rescored pool costs what the sampling did)
    verifier_flops: float = 0.0
    verifier_wall_time: float = 0.0
    # code: the tests the model wrote, charged whole at every budget above 1 (every pick uses them);
    # and what running the pool's programs on the public tests took, charged per sample
    fixed_tokens: float = 0.0
    executed_tests: float = 0.0
    execution_time: float = 0.0


@dataclass
class CurvePoint:
    strategy: str
    n: int
    accuracy: float
    ci_low: float
    ci_high: float
    generated_tokens: float  # mean per problem, for this n
    flops: float = 0.0  # mean per problem, verifier included
    wall_time: float = 0.0  # mean seconds per problem on the machine that ran it
    # each problem's accuracy (expected over subset draws), in the run's problem order: saved,
    # so that a run on the same problems pairs with it (the headline's larger model)
    per_problem: np.ndarray | None = field(default=None, repr=False, compare=False)
    executed_tests: float = 0.0  # code: (program, test) runs per problem
    execution_time: float = 0.0  # code: sandbox seconds per problem

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["per_problem"] = None if self.per_problem is None else [round(float(x), 4) for x in self.per_problem]
        return d


def pool_from_record(record: dict[str, Any], scorer: str, aggregation: str) -> PoolProblem:
    cands = record["candidates"]
    spent = record.get("compute", {})
    # A verifier added after sampling is charged what it cost, except a replay of stored text
    # by a reader of the policy's own states (the probe, the shipped layer reward, any marked
    # "free_when_live"): live, they read states the sampling pass already computed.
    extra = record.get("rescored", {}).get(scorer)
    if scorer in ("probe", "layers") or (extra or {}).get("free_when_live"):
        extra = None
    return PoolProblem(
        groups=stored_groups(cands),
        correct=np.array([bool(c.get("correct")) for c in cands]),
        scores=[aggregate(c["scores"][scorer], aggregation) if c["scores"].get(scorer) else 0.0 for c in cands],
        tokens=np.array([sum(s["n_tokens"] for s in c["steps"]) for c in cands], dtype=float),
        certainty=[
            mean_certainty([s["n_tokens"] for s in c["steps"]], [s.get("certainty_sum", 0.0) for s in c["steps"]])
            for c in cands
        ],
        flops=float(spent.get("flops", 0.0)),
        wall_time=float(spent.get("wall_time", 0.0)),
        verifier_flops=float((extra or {}).get("flops", 0.0)),
        verifier_wall_time=float((extra or {}).get("wall_time", 0.0)),
        fixed_tokens=float(spent.get("test_tokens", 0)),
        executed_tests=float(spent.get("executed_tests", 0)),
        execution_time=float(spent.get("execution_time", 0.0)),
    )


def stored_groups(candidates: Sequence[dict[str, Any]]) -> list[int | None]:
    """Answer classes of stored samples: programs by the behaviour stored with them (the
    replay runs nothing), math answers by equivalence."""
    if candidates and all("behaviour" in c for c in candidates):
        first: dict[str, int] = {}
        keys = [
            None if c.get("answer") is None or not c["behaviour"] else c["behaviour"]["signature"] for c in candidates
        ]
        return [None if k is None else first.setdefault(k, i) for i, k in enumerate(keys)]
    return MATH.group([c.get("answer") for c in candidates])


def budgets(n_max: int) -> list[int]:
    """Powers of two up to n_max, plus n_max itself."""
    out = [1 << k for k in range(int(math.log2(n_max)) + 1)] if n_max >= 1 else []
    if out and out[-1] != n_max:
        out.append(n_max)
    return out


def charged(pools: Sequence[PoolProblem], share: np.ndarray, verified: bool = True) -> tuple[float, float]:
    """Mean FLOPs and seconds per problem when, in draw b, problem p spends share[b, p] of
    its pool (its share of the pool's generated tokens); with `verified`, the same share of
    the verifier that scored it after sampling too."""
    flops = np.array([p.flops + verified * p.verifier_flops for p in pools])
    wall = np.array([p.wall_time + verified * p.verifier_wall_time for p in pools])
    n = len(pools)
    return float((share * flops).sum(axis=1).mean() / n), float((share * wall).sum(axis=1).mean() / n)


def executed(pools: Sequence[PoolProblem], read: np.ndarray) -> tuple[float, float]:
    """Mean tests run and sandbox seconds per problem when read[p] of pool p's programs are."""
    tests = float(np.mean([p.executed_tests * k / len(p.correct) for p, k in zip(pools, read, strict=True)]))
    seconds = float(np.mean([p.execution_time * k / len(p.correct) for p, k in zip(pools, read, strict=True)]))
    return tests, seconds


def curves(
    pools: Sequence[PoolProblem],
    strategies: Sequence[str],
    n_boot: int = 100,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
) -> list[CurvePoint]:
    """Every strategy at every budget, plus pass@1 (mean sample accuracy) and oracle pass@n
    (some sample in the subset is right), with 95% bootstrap intervals. `options` are the
    run's (a stopping vote's window or threshold)."""
    if not pools:
        return []
    n_max = min(len(p.correct) for p in pools)
    points: list[CurvePoint] = []
    n_problems = len(pools)
    for n in budgets(n_max):
        # subsets from a stream of budget n's own (intervals draw from theirs): two views
        # of one pool with other strategy lists (compare views) replay the very same subsets
        subsets_rng = np.random.default_rng([seed, n])
        draws = n_boot
        names = [*strategies, "oracle"]
        hits = {s: np.zeros((draws, n_problems)) for s in names}
        # per rule: a vote that stops early is charged only the samples it read
        tokens = {s: np.zeros((draws, n_problems)) for s in names}
        share = {s: np.zeros((draws, n_problems)) for s in names}
        read = {s: np.zeros((draws, n_problems)) for s in names}
        for b, p, subset in subset_draws([len(pool.correct) for pool in pools], n, draws, subsets_rng):
            pool = pools[p]
            groups = [pool.groups[i] for i in subset]
            scores = [pool.scores[i] for i in subset]
            hits["oracle"][b, p] = pool.correct[subset].any()
            certainty = [pool.certainty[i] for i in subset] if pool.certainty else []
            picks = {s: replay(s, groups, scores, options, certainty) for s in strategies}
            for s in names:
                k, used = picks.get(s, (None, len(subset)))
                if s != "oracle":
                    hits[s][b, p] = k is not None and pool.correct[subset[k]]
                spent = pool.tokens[subset[:used]].sum()
                share[s][b, p] = spent / max(1.0, pool.tokens.sum())
                tokens[s][b, p] = spent + (pool.fixed_tokens if n > 1 else 0.0)
                read[s][b, p] = used
        for s, h in hits.items():
            # each problem's expected accuracy at budget n (over random subsets), then an
            # interval over problems: the subset draws estimate, the problems vary
            lo, hi = problem_ci(h.mean(axis=0), seed)
            cost = charged(pools, share[s], verified=s != "oracle" and reads_scores(s))
            ran = executed(pools, read[s].mean(axis=0))
            points.append(
                CurvePoint(s, n, float(h.mean()), lo, hi, float(tokens[s].mean()), *cost, h.mean(axis=0), *ran)
            )
    p1 = np.array([p.correct.mean() for p in pools])
    lo, hi = problem_ci(p1, seed)
    one = np.array([[1 / len(p.correct) for p in pools]])
    one_tokens = float(np.mean([p.tokens.mean() for p in pools]))
    cost = charged(pools, one, verified=False)
    points.append(CurvePoint("pass@1", 1, float(p1.mean()), lo, hi, one_tokens, *cost, p1))
    return points


def paired_differences(
    points: Sequence[CurvePoint], baseline: str = "majority", seed: int = 0, n_boot: int = 1000
) -> list[dict[str, Any]]:
    """Every strategy against the baseline at the same N on the same problems: the mean
    accuracy difference with a 95% bootstrap interval over problems (paired, so much tighter
    than the two curves' own intervals), and the ratio of generated tokens."""
    base = {p.n: p for p in points if p.strategy == baseline and p.per_problem is not None}
    rows = []
    for p in points:
        b = base.get(p.n)
        if b is None or b.per_problem is None or p.strategy == baseline or p.per_problem is None:
            continue
        if len(p.per_problem) != len(b.per_problem) or p.strategy in ("oracle", "pass@1"):
            continue
        if np.array_equal(p.per_problem, b.per_problem) and p.generated_tokens == b.generated_tokens:
            continue  # the same thing (every rule agrees on one sample)
        ratio = p.generated_tokens / b.generated_tokens if b.generated_tokens else float("nan")
        paired = paired_difference(p.per_problem, b.per_problem, seed, n_boot)
        rows.append({"strategy": p.strategy, "n": p.n, **paired, "token_ratio": ratio})
    return rows


def matched_budget(tokens: float, spent: Sequence[tuple[int, float]]) -> int | None:
    """The smallest budget whose generated tokens per problem are at least `tokens`: the
    baseline at matched tokens, never given less than the system it is compared with."""
    return next((n for n, t in sorted(spent) if t >= tokens), None)


def budget_below(tokens: float, spent: Sequence[tuple[int, float]]) -> int | None:
    """The largest budget whose generated tokens per problem are at most `tokens`: the
    baseline never given more than the system it is compared with (the other side of
    `matched_budget`, so a system is seen between the two)."""
    return next((n for n, t in sorted(spent, reverse=True) if t <= tokens), None)


def matched_token_differences(
    points: Sequence[CurvePoint], baseline: str = "majority", seed: int = 0, n_boot: int = 1000, spread: float = 0.1
) -> list[dict[str, Any]]:
    """Every strategy that spends a different number of generated tokens from the baseline at
    its own N (by more than `spread`) against the baseline at its `matched_budget` and at its
    `budget_below`: what the tokens it saved or spent buy the baseline, from above and from
    below. Paired over problems, as `paired_differences`."""
    base = {p.n: p for p in points if p.strategy == baseline and p.per_problem is not None}
    rows = []
    for p in points:
        if p.strategy in (baseline, "oracle", "pass@1") or p.per_problem is None:
            continue
        same_n = base.get(p.n)
        if same_n is not None and abs(p.generated_tokens - same_n.generated_tokens) <= spread * same_n.generated_tokens:
            continue  # it spends what the baseline spends at its N: the same-N pairing says it all
        spent = [(b.n, b.generated_tokens) for b in base.values()]
        for n in dict.fromkeys([matched_budget(p.generated_tokens, spent), budget_below(p.generated_tokens, spent)]):
            b = base.get(n) if n is not None else None
            if b is None or b.per_problem is None or len(b.per_problem) != len(p.per_problem):
                continue
            paired = paired_difference(p.per_problem, b.per_problem, seed, n_boot)
            ratio = p.generated_tokens / b.generated_tokens if b.generated_tokens else float("nan")
            rows.append({"strategy": p.strategy, "n": p.n, "baseline_n": b.n, **paired, "token_ratio": ratio})
    return rows


def search_points(records: Sequence[dict[str, Any]], label: str, n: int, rule: str | None, seed: int) -> CurvePoint:
    """One point of a per-budget strategy: its own pick, or `rule`'s over its final candidates."""
    hits = np.array([bool(r["picks"][rule]["correct"] if rule else r["correct"]) for r in records], dtype=float)
    lo, hi = problem_ci(hits, seed)
    tokens = float(np.mean([r["compute"]["generated_tokens"] for r in records]))
    flops = float(np.mean([r["compute"]["flops"] for r in records]))
    wall = float(np.mean([r["compute"]["wall_time"] for r in records]))
    tests = float(np.mean([r["compute"].get("executed_tests", 0) for r in records]))
    seconds = float(np.mean([r["compute"].get("execution_time", 0.0) for r in records]))
    return CurvePoint(label, n, float(hits.mean()), lo, hi, tokens, flops, wall, hits, tests, seconds)


def search_picks(records: Sequence[dict[str, Any]], strategy: str, label: str, n: int, seed: int) -> list[CurvePoint]:
    """A search's own pick, then the majority and weighted votes over its final candidates
    (where its records have them: self_debug's rounds are not voted over)."""
    votes = [r for r in ("majority", "weighted_best_of_n") if all(r in rec["picks"] for rec in records)]
    return [search_points(records, strategy + label, n, None, seed)] + [
        search_points(records, f"{strategy}+{rule}{label}", n, rule, seed) for rule in votes
    ]
