"""How well each stored verifier separates right from wrong samples, per problem and pooled."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core import aggregate
from ..util.stats import auroc
from .curves import stored_groups

VOTE_SHARE = "vote_share"  # the baseline row: what voting already knows of each sample


def vote_shares(candidates: Sequence[dict[str, Any]]) -> list[float]:
    """Each sample's share of the pool that gives its answer (0 for no answer): majority
    voting's own ranking, which a verifier must beat to add anything to the vote."""
    groups = stored_groups(candidates)
    return [0.0 if g is None else groups.count(g) / len(groups) for g in groups]


def verifier_quality(
    pool_records: Sequence[dict[str, Any]], aggregations: Sequence[str] = ("last", "mean", "min")
) -> list[dict[str, Any]]:
    """How well each stored verifier separates right from wrong solutions: AUROC over all
    solutions pooled, and the mean AUROC within a problem (what picking among one problem's
    samples needs; problems with only right or only wrong samples are left out). The first
    row is the vote share, the baseline every verifier is compared with."""
    names = [n for n in pool_records[0]["candidates"][0]["scores"]] if pool_records else []
    names = [n for n in names if all(n in c["scores"] for r in pool_records for c in r["candidates"])]
    rows = [_row(VOTE_SHARE, "-", pool_records, lambda r: vote_shares(r["candidates"]))] if pool_records else []
    for name in names:
        for how in aggregations:
            rows.append(_row(name, how, pool_records, functools.partial(_aggregated, name=name, how=how)))
    return rows


def _aggregated(record: dict[str, Any], name: str, how: str) -> list[float]:
    return [aggregate(c["scores"][name], how) for c in record["candidates"]]


def _row(name: str, how: str, pool_records: Sequence[dict[str, Any]], scores_of: Any) -> dict[str, Any]:
    pooled_s: list[float] = []
    pooled_y: list[bool] = []
    within = []
    for r in pool_records:
        s = scores_of(r)
        y = [bool(c.get("correct")) for c in r["candidates"]]
        pooled_s += s
        pooled_y += y
        a = auroc(s, y)
        if not math.isnan(a):
            within.append(a)
    return {
        "scorer": name,
        "aggregate": how,
        "auroc": auroc(pooled_s, pooled_y),
        "auroc_within_problem": float(np.mean(within)) if within else float("nan"),
        "problems_with_both": len(within),
        "solutions": len(pooled_y),
    }
