"""Fitting a stopping vote's parameter on calibration problems (never on those it is judged
on): for each value on a grid, the vote is replayed on the stored pools at budget n and
paired with majority voting over the same problems; the value chosen spends the fewest
tokens while its accuracy stays within `tolerance` of majority's (the paired mean)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..strategies.picks import STOPPING
from .curves import curves, pool_from_record

GRIDS: dict[str, tuple[float, ...]] = {
    "esc": (2, 3, 4, 6, 8),
    "adaptive_majority": (0.6, 0.7, 0.8, 0.9, 0.95, 0.99),
    "adaptive_confident": (0.6, 0.65, 0.7, 0.8, 0.9, 0.95),  # the gate (at most the threshold)
}


def fit_stopping(
    records: Sequence[dict[str, Any]],
    rule: str,
    n: int,
    tolerance: float = 0.015,
    scorer: str = "logprob",
    aggregation: str = "mean",
    n_boot: int = 100,
    seed: int = 0,
    fixed: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The chosen value and every value's replayed accuracy difference and token share;
    `fixed` holds the rule's other options (adaptive_confident's threshold)."""
    if rule not in STOPPING:
        raise ValueError(f"{rule!r} is not a stopping vote; choose from {', '.join(STOPPING)}")
    key = STOPPING[rule][1][0]
    fixed = fixed or {}
    pools = [r for r in records if r.get("kind", "pool") == "pool"]
    if not pools:
        raise ValueError("no stored pools among the calibration records")
    replayed = [pool_from_record(r, scorer, aggregation) for r in pools]
    rows = []
    ceiling = fixed.get("adaptive_threshold", 0.95) if rule == "adaptive_confident" else float("inf")
    for value in (v for v in GRIDS[rule] if v <= ceiling):
        setting = int(value) if rule == "esc" else float(value)
        options = {**fixed, key: setting}
        replays = curves(replayed, ["majority", rule], n_boot=n_boot, seed=seed, options=options)
        points = {p.strategy: p for p in replays if p.n == n}
        if rule not in points:
            raise ValueError(f"the pools hold fewer than {n} samples")
        mine, base = points[rule], points["majority"]
        assert mine.per_problem is not None and base.per_problem is not None
        rows.append(
            {
                key: setting,
                "accuracy": mine.accuracy,
                "majority": base.accuracy,
                "difference": float(np.mean(mine.per_problem - base.per_problem)),
                "token_share": mine.generated_tokens / base.generated_tokens,
            }
        )
    within = [r for r in rows if r["difference"] >= -tolerance]
    chosen = min(within, key=lambda r: r["token_share"]) if within else None
    return {
        "rule": rule,
        "n": n,
        "tolerance": tolerance,
        "chosen": None if chosen is None else chosen[key],
        "option": key,
        "fixed": fixed,
        "grid": rows,
        "calibration_ids": [r["id"] for r in pools],
    }
