"""Accuracy-versus-compute curves from one pool of samples per problem.

"Generate once, evaluate many": with N samples per problem, a strategy at budget n < N is
replayed on random n-subsets of the pool. Repeating the draw gives each problem's expected
accuracy at budget n; resampling problems gives a bootstrap confidence interval. Tokens are counted
from the samples actually drawn, so curves against generated tokens are honest.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .grading import group_answers
from .scorers import aggregate
from .strategies import PICKERS


@dataclass
class PoolProblem:
    """What the replay needs of one problem's pool, precomputed once."""

    groups: list[int | None]
    correct: np.ndarray  # bool per sample
    scores: list[float]
    tokens: np.ndarray  # generated tokens per sample
    # the whole pool's cost; a subset is charged its share of the generated tokens
    flops: float = 0.0
    wall_time: float = 0.0


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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["per_problem"] = None if self.per_problem is None else [round(float(x), 4) for x in self.per_problem]
        return d


def pool_from_record(record: dict[str, Any], scorer: str, aggregation: str) -> PoolProblem:
    cands = record["candidates"]
    spent = dict(record.get("compute", {}))
    # A verifier added after sampling is charged what it cost, except the probe's replay of
    # stored text: live, the probe reads states the sampling pass already computed.
    extra = record.get("rescored", {}).get(scorer) if scorer != "probe" else None
    for key in ("flops", "wall_time"):
        spent[key] = spent.get(key, 0.0) + (extra or {}).get(key, 0.0)
    return PoolProblem(
        groups=group_answers([c.get("answer") for c in cands]),
        correct=np.array([bool(c.get("correct")) for c in cands]),
        scores=[aggregate(c["scores"][scorer], aggregation) if c["scores"].get(scorer) else 0.0 for c in cands],
        tokens=np.array([sum(s["n_tokens"] for s in c["steps"]) for c in cands], dtype=float),
        flops=float(spent["flops"]),
        wall_time=float(spent["wall_time"]),
    )


def budgets(n_max: int) -> list[int]:
    """Powers of two up to n_max, plus n_max itself."""
    out = [1 << k for k in range(int(math.log2(n_max)) + 1)] if n_max >= 1 else []
    if out and out[-1] != n_max:
        out.append(n_max)
    return out


def charged(pools: Sequence[PoolProblem], share: np.ndarray) -> tuple[float, float]:
    """Mean FLOPs and seconds per problem when, in draw b, problem p spends share[b, p] of
    its pool (its share of the pool's generated tokens)."""
    flops = (share * np.array([p.flops for p in pools])).sum(axis=1).mean() / len(pools)
    wall = (share * np.array([p.wall_time for p in pools])).sum(axis=1).mean() / len(pools)
    return float(flops), float(wall)


def curves(
    pools: Sequence[PoolProblem],
    strategies: Sequence[str],
    n_boot: int = 100,
    seed: int = 0,
) -> list[CurvePoint]:
    """Every strategy at every budget, plus pass@1 (mean sample accuracy) and oracle pass@n
    (some sample in the subset is right), with 95% bootstrap intervals."""
    if not pools:
        return []
    n_max = min(len(p.correct) for p in pools)
    rng = np.random.default_rng(seed)
    points: list[CurvePoint] = []
    n_problems = len(pools)
    for n in budgets(n_max):
        draws = n_boot
        hits = {s: np.zeros((draws, n_problems)) for s in [*strategies, "oracle"]}
        tokens = np.zeros((draws, n_problems))
        share = np.zeros((draws, n_problems))
        for b in range(draws):
            for p, pool in enumerate(pools):
                subset = rng.permutation(len(pool.correct))[:n]
                groups = [pool.groups[i] for i in subset]
                scores = [pool.scores[i] for i in subset]
                tokens[b, p] = pool.tokens[subset].sum()
                share[b, p] = tokens[b, p] / max(1.0, pool.tokens.sum())
                hits["oracle"][b, p] = pool.correct[subset].any()
                for s in strategies:
                    k = PICKERS[s](groups, scores)
                    hits[s][b, p] = k is not None and pool.correct[subset[k]]
        for s, h in hits.items():
            # each problem's expected accuracy at budget n (over random subsets), then an
            # interval over problems: the subset draws estimate, the problems vary
            lo, hi = problem_ci(h.mean(axis=0), rng)
            cost = charged(pools, share)
            points.append(CurvePoint(s, n, float(h.mean()), lo, hi, float(tokens.mean()), *cost, h.mean(axis=0)))
    p1 = np.array([p.correct.mean() for p in pools])
    lo, hi = problem_ci(p1, rng)
    one = np.array([[1 / len(p.correct) for p in pools]])
    one_tokens = float(np.mean([p.tokens.mean() for p in pools]))
    points.append(CurvePoint("pass@1", 1, float(p1.mean()), lo, hi, one_tokens, *charged(pools, one), p1))
    return points


def paired_differences(
    points: Sequence[CurvePoint], baseline: str = "majority", seed: int = 0, n_boot: int = 1000
) -> list[dict[str, Any]]:
    """Every strategy against the baseline at the same N on the same problems: the mean
    accuracy difference with a 95% bootstrap interval over problems (paired, so much tighter
    than the two curves' own intervals), and the ratio of generated tokens."""
    rng = np.random.default_rng(seed)
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
        paired = paired_difference(p.per_problem, b.per_problem, rng, n_boot)
        rows.append({"strategy": p.strategy, "n": p.n, **paired, "token_ratio": ratio})
    return rows


def paired_difference(
    values: Sequence[float] | np.ndarray,
    baseline: Sequence[float] | np.ndarray,
    rng: np.random.Generator,
    n_boot: int = 1000,
) -> dict[str, float]:
    """Mean per-problem difference of two results on the same problems, with its 95%
    bootstrap interval over problems."""
    diff = np.asarray(values, dtype=float) - np.asarray(baseline, dtype=float)
    lo, hi = problem_ci(diff, rng, n_boot)
    return {"difference": float(diff.mean()), "ci_low": lo, "ci_high": hi}


def paired_table(rows: Sequence[dict[str, Any]], baseline: str = "majority") -> str:
    lines = [
        f"| strategy | N | accuracy - {baseline} (points) | 95% interval | tokens / {baseline}'s |",
        "|---|---:|---:|---|---:|",
    ]
    for r in rows:
        sure = "" if r["ci_low"] <= 0 <= r["ci_high"] else " *"
        lines.append(
            f"| {r['strategy']} | {r['n']} | {100 * r['difference']:+.1f}{sure} | "
            f"[{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}] | {r['token_ratio']:.2f} |"
        )
    return "\n".join(lines)


def problem_ci(values: np.ndarray, rng: np.random.Generator, n_boot: int = 1000) -> tuple[float, float]:
    """95% bootstrap interval of a mean over problems."""
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    lo, hi = np.percentile(values[idx].mean(axis=1), [2.5, 97.5])
    return float(lo), float(hi)


def auroc(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); nan without both classes."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def verifier_quality(
    pool_records: Sequence[dict[str, Any]], aggregations: Sequence[str] = ("last", "mean", "min")
) -> list[dict[str, Any]]:
    """How well each stored verifier separates right from wrong solutions: AUROC over all
    solutions pooled, and the mean AUROC within a problem (what picking among one problem's
    samples needs; problems with only right or only wrong samples are left out)."""
    names = [n for n in pool_records[0]["candidates"][0]["scores"]] if pool_records else []
    names = [n for n in names if all(n in c["scores"] for r in pool_records for c in r["candidates"])]
    rows = []
    for name in names:
        for how in aggregations:
            pooled_s, pooled_y, within = [], [], []
            for r in pool_records:
                s = [aggregate(c["scores"][name], how) for c in r["candidates"]]
                y = [bool(c.get("correct")) for c in r["candidates"]]
                pooled_s += s
                pooled_y += y
                a = auroc(s, y)
                if not math.isnan(a):
                    within.append(a)
            rows.append(
                {
                    "scorer": name,
                    "aggregate": how,
                    "auroc": auroc(pooled_s, pooled_y),
                    "auroc_within_problem": float(np.mean(within)) if within else float("nan"),
                    "problems_with_both": len(within),
                    "solutions": len(pooled_y),
                }
            )
    return rows


def quality_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| verifier | aggregate | AUROC (all solutions) | AUROC within a problem |", "|---|---|---:|---:|"]
    lines += [
        f"| {r['scorer']} | {r['aggregate']} | {r['auroc']:.3f} | {r['auroc_within_problem']:.3f} "
        f"({r['problems_with_both']} problems) |"
        for r in rows
    ]
    return "\n".join(lines)


def table(points: Sequence[CurvePoint], with_ci: bool = True) -> str:
    """Markdown: accuracy with one row per strategy and one column per budget; then, when
    strategies spend different amounts at the same budget, the same grid of generated tokens
    per problem, else one row of it."""
    ns = sorted({p.n for p in points})
    names = list(dict.fromkeys(p.strategy for p in points))
    cell = {(p.strategy, p.n): p for p in points}
    header = ["| strategy | " + " | ".join(f"n={n}" for n in ns) + " |", "|---|" + "---:|" * len(ns)]

    def grid(fmt: Callable[[CurvePoint], str], rows: Sequence[str]) -> list[str]:
        return [f"| {s} | " + " | ".join(fmt(cell[(s, n)]) if (s, n) in cell else "" for n in ns) + " |" for s in rows]

    def acc(p: CurvePoint) -> str:
        ci = f" [{100 * p.ci_low:.0f}-{100 * p.ci_high:.0f}]" if with_ci else ""
        return f"{100 * p.accuracy:.1f}{ci}"

    lines = header + grid(acc, names)
    spenders = [s for s in names if s != "pass@1" and "+" not in s]  # "+rule" rows spend what their search spent
    by_n: dict[int, set[int]] = {}
    for s in spenders:
        for n in ns:
            if (s, n) in cell:
                by_n.setdefault(n, set()).add(round(cell[(s, n)].generated_tokens))
    if all(len(v) == 1 for v in by_n.values()):
        tok = {n: next(iter(v)) for n, v in by_n.items()}
        lines.append("| generated tokens / problem | " + " | ".join(str(tok.get(n, "")) for n in ns) + " |")
    else:
        lines += ["", "Generated tokens per problem:", "", *header]
        lines += grid(lambda p: f"{p.generated_tokens:.0f}", [s for s in spenders if s != "oracle"])
    return "\n".join(lines)


def plot(points: Sequence[CurvePoint], path: str, title: str) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    # "+rule" variants (a search with another final pick) stay in the table, off the plot
    names = [s for s in dict.fromkeys(p.strategy for p in points) if s != "pass@1" and "+" not in s]
    for s in names:
        pts = sorted((p for p in points if p.strategy == s), key=lambda p: p.n)
        style = {"linestyle": ":", "color": "grey"} if s == "oracle" else {"marker": "o"}
        label = "oracle (any sample right)" if s == "oracle" else s
        for ax, xs in ((axes[0], [p.n for p in pts]), (axes[1], [p.generated_tokens for p in pts])):
            ys = [100 * p.accuracy for p in pts]
            ax.plot(xs, ys, label=label, **style)
            if s != "oracle":
                ax.fill_between(xs, [100 * p.ci_low for p in pts], [100 * p.ci_high for p in pts], alpha=0.12)
    p1 = next((p for p in points if p.strategy == "pass@1"), None)
    for ax in axes:
        if p1 is not None:
            ax.axhline(100 * p1.accuracy, color="black", linestyle="--", linewidth=0.8, label="pass@1 (one sample)")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].set_xscale("log", base=2)
    axes[0].set_xlabel("N (samples per problem)")
    axes[1].set_xscale("log")
    axes[1].xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    axes[1].xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:,.0f}"))
    axes[1].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[1].set_xlabel("generated tokens per problem")
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
