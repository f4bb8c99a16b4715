"""Held-out validation of train-reward's readers, split by where the problems came from.

    python scripts/reward_by_source.py results/layers-0.5b "answer @ 22 (l2 300, pca 128, within-problem)"

Rebuilds train-reward's split (same seed and validation share), refits the named readers on
the fitting part only, and prints each one's within-problem AUROC on the held-out GSM8K train
and MATH train problems apart, beside the vote share of the same samples: a mixed collection's
single validation figure can hide a reader that works on one source and not the other.
MATH train ids are its file paths (`train/<subject>/<n>.json`); every other id is GSM8K's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ttscale.apps import train_reward as tr
from ttscale.apps.layer_data import answers_path, states_path
from ttscale.util.jsonl import read_jsonl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="a collect-layers directory")
    ap.add_argument("readers", nargs="+", help="reader labels as train-reward's report prints them")
    ap.add_argument("--val-fraction", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    problems, available, kinds = tr.load_problems(args.data)
    # load_problems skips problems without states: keep the ids of the ones it kept, in order
    ids = [
        r["id"]
        for r in read_jsonl(args.data / "samples.jsonl")
        if states_path(args.data, r["id"]).exists() or answers_path(args.data, r["id"]).exists()
    ]
    assert len(ids) == len(problems), "the ids and the loaded problems disagree"
    order = np.random.default_rng(args.seed).permutation(len(problems))  # as train_reward splits
    n_val = max(1, int(len(problems) * args.val_fraction))
    val_i, fit_i = sorted(order[:n_val]), sorted(order[n_val:])
    grid = {r.label: r for r in tr.readers(available, kinds=kinds)}
    for label in args.readers:
        if label not in grid:
            raise SystemExit(f"no reader {label!r} in the grid for {args.data}")
        held = tr.fit_reader(grid[label], [problems[i] for i in fit_i], available)
        for source, math_train in (("gsm8k", False), ("math", True)):
            val = [problems[i] for i in val_i if is_math_train(ids[i]) == math_train]
            reward, each = tr.within_auroc(tr.logits(held, val, available), val)
            votes, _ = tr.within_auroc([[s.vote_share for s in p] for p in val], val)
            print(
                f"{label} | {source}: {len(val)} held-out problems, {len(each)} with both right and wrong:"
                f" reward {reward:.3f}, vote share {votes:.3f}"
            )


def is_math_train(problem_id: str) -> bool:
    return problem_id.startswith("train/")


if __name__ == "__main__":
    main()
