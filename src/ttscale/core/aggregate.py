"""Step scores -> one solution score. A verifier scores every step; strategies rank whole
solutions by one of these aggregates."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

AGGREGATIONS: dict[str, Callable[[Sequence[float]], float]] = {
    "last": lambda s: s[-1],
    "min": min,
    "prod": lambda s: math.prod(s),
    "mean": lambda s: sum(s) / len(s),
}


def check_aggregation(how: str) -> str:
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {how!r}; choose from {', '.join(AGGREGATIONS)}")
    return how


def aggregate(step_scores: Sequence[float], how: str = "mean") -> float:
    check_aggregation(how)
    if not step_scores:
        return 0.0
    return float(AGGREGATIONS[how](step_scores))
