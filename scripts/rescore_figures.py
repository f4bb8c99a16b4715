"""What a rescore's report does not print: how one verifier's scores spread, and what it cost.

    python scripts/rescore_figures.py results/gsm8k-100-judge-1.5b outcome_judge:qwen2.5-coder-1.5b

For the pools of a run directory that the named verifier rescored (those whose record holds
its compute under "rescored"): how many samples score at least the pass mark (what
filter-then-vote keeps), the median score of right and of wrong samples, on how many mixed
problems the verifier ranks wrong samples above right ones, and the verifier's and the
policy's compute per problem, averaged over those pools. The pools not rescored are counted
by whether every sample is right or every one wrong (where no verifier changes a pick), and,
given --baseline (another run on the same problems, e.g. the 1.5B greedy), its right answers
on the rescored problems.
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

from ttscale.evaluation.store import read_run
from ttscale.strategies.picks import PASS_MARK
from ttscale.util.stats import auroc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a run directory (its samples.jsonl)")
    ap.add_argument("scorer", help="the verifier's name, as in the samples' scores")
    ap.add_argument("--baseline", type=Path, help="a run on the same problems, counted on the rescored ones")
    args = ap.parse_args()
    pools = _pools(args.run)
    read = [r for r in pools if args.scorer in r.get("rescored", {})]
    if not read:
        raise SystemExit(f"no pool in {args.run} was rescored by {args.scorer}")
    scored = [(c["scores"][args.scorer][-1], bool(c["correct"])) for r in read for c in r["candidates"]]
    within = [
        auroc([c["scores"][args.scorer][-1] for c in r["candidates"]], [bool(c["correct"]) for c in r["candidates"]])
        for r in read
    ]
    mixed = [a for a in within if not math.isnan(a)]
    print(f"{len(read)} pools rescored by {args.scorer}, {len(mixed)} of them mixed")
    rest = [[bool(c["correct"]) for c in r["candidates"]] for r in pools if args.scorer not in r.get("rescored", {})]
    print(f"{len(rest)} not rescored: {sum(all(y) for y in rest)} all right, {sum(not any(y) for y in rest)} all wrong")
    if args.baseline:
        right = {r["id"]: bool(r["candidates"][0]["correct"]) for r in _pools(args.baseline)}
        print(f"{args.baseline} right on {sum(right[r['id']] for r in read)} of the {len(read)} rescored")
    print(f"samples scoring >= {PASS_MARK}: {sum(s >= PASS_MARK for s, _ in scored)} of {len(scored)}")
    print(
        f"median score: right {statistics.median(s for s, y in scored if y):.3f}, "
        f"wrong {statistics.median(s for s, y in scored if not y):.3f}"
    )
    print(f"mixed problems ranked below chance (AUROC < 0.5): {sum(a < 0.5 for a in mixed)} of {len(mixed)}")
    for who, compute_of, keys in (
        (args.scorer, lambda r: r["rescored"][args.scorer], ("verifier_tokens", "flops", "wall_time")),
        ("policy", lambda r: r["compute"], ("generated_tokens", "flops", "wall_time")),
    ):
        print(
            f"{who} per problem: "
            + ", ".join(f"{k} {sum(compute_of(r)[k] for r in read) / len(read):.4g}" for k in keys)
        )


def _pools(run: Path) -> list[dict]:
    """A run's pool records (read as `eval` reads them; search records are left out)."""
    return [r for r in read_run(run) if r.get("kind") != "search"]


if __name__ == "__main__":
    main()
