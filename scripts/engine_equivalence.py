"""Two eval runs of the same model, problems, budgets and seed policy on two engines, side by
side: each strategy's accuracy on both, the difference paired over problems with its 95%
interval, and what each spent per problem.

    python scripts/engine_equivalence.py results/vllm-equivalence/embedded results/vllm-equivalence/vllm

Samples differ token for token between engines (other arithmetic), so agreement means the
paired differences sit within their intervals, not identical figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ttscale.util.stats import paired_difference

STRATEGIES = ("pass@1", "majority", "weighted_best_of_n", "best_of_n", "oracle")


def points(run: Path) -> dict[tuple[str, int], dict[str, Any]]:
    summary = json.loads((run / "summary.json").read_text())
    return {(p["strategy"], p["n"]): p for p in summary["points"]}


def spent(run: Path) -> dict[str, float]:
    """Mean per problem over the run's pool records."""
    records = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines() if line.strip()]
    keys = ("generated_tokens", "prompt_tokens", "cached_prompt_tokens", "wall_time", "flops")
    return {k: float(np.mean([r["compute"].get(k, 0) for r in records])) for k in keys}


def table(a: Path, b: Path, seed: int = 0) -> str:
    pa, pb = points(a), points(b)
    ids_a = json.loads((a / "summary.json").read_text())["problem_ids"]
    ids_b = json.loads((b / "summary.json").read_text())["problem_ids"]
    if ids_a != ids_b:
        raise SystemExit("the two runs hold other problems: compare runs of the same slice")
    rows = [
        f"| strategy | N | {a.name} | {b.name} | {b.name} - {a.name}, paired | 95% interval |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for key in sorted(set(pa) & set(pb), key=lambda k: (STRATEGIES.index(k[0]) if k[0] in STRATEGIES else 99, k[1])):
        if key[0] not in STRATEGIES:
            continue
        x, y = pa[key], pb[key]
        d = paired_difference(y["per_problem"], x["per_problem"], seed)
        rows.append(
            f"| {key[0]} | {key[1]} | {100 * x['accuracy']:.1f} | {100 * y['accuracy']:.1f} | "
            f"{100 * d['difference']:+.1f} | [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}] |"
        )
    sa, sb = spent(a), spent(b)
    rows += [
        "",
        f"| per problem (the whole pool) | {a.name} | {b.name} | {b.name} / {a.name} |",
        "|---|---:|---:|---:|",
    ]
    for k, label in (
        ("generated_tokens", "generated tokens"),
        ("prompt_tokens", "prompt tokens computed"),
        ("cached_prompt_tokens", "prompt tokens from cache"),
        ("flops", "FLOPs"),
        ("wall_time", "seconds"),
    ):
        ratio = f"{sb[k] / sa[k]:.2f}" if sa[k] else "–"
        rows.append(f"| {label} | {sa[k]:,.4g} | {sb[k]:,.4g} | {ratio} |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path, help="the reference run directory")
    ap.add_argument("b", type=Path, help="the other engine's run directory")
    args = ap.parse_args()
    print(table(args.a, args.b))
    return 0


if __name__ == "__main__":
    sys.exit(main())
