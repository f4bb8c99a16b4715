"""How well each stored verifier separates right from wrong samples, per problem and pooled."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core import aggregate
from ..util.stats import auroc


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
