"""Markdown tables and plots of curve points, paired differences and verifier quality."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt
import matplotlib.ticker

from .curves import CurvePoint


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


def paired_table(rows: Sequence[dict[str, Any]], baseline: str = "majority") -> str:
    """Paired differences against the baseline (`curves.paired_differences`), or against it at
    matched tokens when the rows name the baseline's budget (`matched_token_differences`)."""
    matched = any("baseline_n" in r for r in rows)
    budget = f" {baseline}'s N |" if matched else ""
    lines = [
        f"| strategy | N |{budget} accuracy - {baseline} (points) | 95% interval | tokens / {baseline}'s |",
        "|---|---:|" + ("---:|" if matched else "") + "---:|---|---:|",
    ]
    for r in rows:
        sure = "" if r["ci_low"] <= 0 <= r["ci_high"] else " *"
        lines.append(
            f"| {r['strategy']} | {r['n']} |"
            + (f" {r['baseline_n']} |" if matched else "")
            + f" {100 * r['difference']:+.1f}{sure} | [{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}] "
            f"| {r['token_ratio']:.2f} |"
        )
    return "\n".join(lines)


def quality_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| verifier | aggregate | AUROC (all solutions) | AUROC within a problem [95% CI] "
        "| minus vote share [95% CI] |",
        "|---|---|---:|---:|---:|",
    ]
    for r in rows:
        vs = r.get("vs_vote_share")
        diff = f"{vs['difference']:+.3f} [{vs['ci_low']:+.3f}, {vs['ci_high']:+.3f}]" if vs else "-"
        lines.append(
            f"| {r['scorer']} | {r['aggregate']} | {r['auroc']:.3f} | {r['auroc_within_problem']:.3f} "
            f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}] ({r['problems_with_both']} problems) | {diff} |"
        )
    return "\n".join(lines)


def plot(points: Sequence[CurvePoint], path: str, title: str) -> None:
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
