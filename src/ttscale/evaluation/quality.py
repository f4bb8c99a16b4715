"""How well each stored verifier separates right from wrong samples, per problem and pooled."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core import aggregate
from ..util.stats import auroc, paired_difference, problem_ci
from .curves import stored_groups

VOTE_SHARE = "vote_share"  # the baseline row: what voting already knows of each sample


def vote_shares(candidates: Sequence[dict[str, Any]]) -> list[float]:
    """Each sample's share of the pool that gives its answer (0 for no answer): majority
    voting's own ranking, which a verifier must beat to add anything to the vote."""
    groups = stored_groups(candidates)
    return [0.0 if g is None else groups.count(g) / len(groups) for g in groups]


def weighted_vote_shares(candidates: Sequence[dict[str, Any]], scores: Sequence[float]) -> list[float]:
    """Each sample's answer's summed score, over the pool size (0 for no answer): the
    ranking of answers weighted Best-of-N picks by (`picks.pick_weighted`), a verifier
    combined with the vote with nothing fitted."""
    groups = stored_groups(candidates)
    mass: dict[int, float] = {}
    for x, g in zip(scores, groups, strict=True):
        if g is not None:
            mass[g] = mass.get(g, 0.0) + x
    return [0.0 if g is None else mass[g] / len(groups) for g in groups]


def verifier_quality(
    pool_records: Sequence[dict[str, Any]], aggregations: Sequence[str] = ("last", "mean", "min"), seed: int = 0
) -> list[dict[str, Any]]:
    """How well each stored verifier separates right from wrong solutions: AUROC over all
    solutions pooled, and the mean AUROC within a problem (what picking among one problem's
    samples needs; problems with only right or only wrong samples are left out), with its
    bootstrap interval over problems and its paired difference from the vote share on the
    same problems. The first row is the vote share, the baseline every verifier is compared
    with; each verifier also gets a "+vote" row: its weighted vote share (aggregated the
    first way), the parameter-free combination weighted Best-of-N ranks by."""
    if not pool_records:
        return []
    names = list(pool_records[0]["candidates"][0]["scores"])
    names = [n for n in names if all(n in c["scores"] for r in pool_records for c in r["candidates"])]
    baseline = _row(VOTE_SHARE, "-", pool_records, lambda r: vote_shares(r["candidates"]), seed)
    rows = [baseline]
    for name in names:
        for how in aggregations:
            rows.append(_row(name, how, pool_records, functools.partial(_aggregated, name=name, how=how), seed))
        combined = functools.partial(_weighted_votes, name=name, how=aggregations[0])
        rows.append(_row(f"{name}+vote", aggregations[0], pool_records, combined, seed))
    for r in rows[1:]:
        r["vs_vote_share"] = paired_difference(r.pop("_within"), baseline["_within"], seed)
    baseline.pop("_within")
    return rows


def _aggregated(record: dict[str, Any], name: str, how: str) -> list[float]:
    return [aggregate(c["scores"][name], how) for c in record["candidates"]]


def _weighted_votes(record: dict[str, Any], name: str, how: str) -> list[float]:
    return weighted_vote_shares(record["candidates"], _aggregated(record, name, how))


def _row(name: str, how: str, pool_records: Sequence[dict[str, Any]], scores_of: Any, seed: int) -> dict[str, Any]:
    pooled_s: list[float] = []
    pooled_y: list[bool] = []
    within = []  # one entry per problem with both right and wrong samples, in record order
    for r in pool_records:
        s = scores_of(r)
        y = [bool(c.get("correct")) for c in r["candidates"]]
        pooled_s += s
        pooled_y += y
        if any(y) and not all(y):
            within.append(auroc(s, y))
    lo, hi = problem_ci(np.array(within), seed) if within else (float("nan"), float("nan"))
    return {
        "scorer": name,
        "aggregate": how,
        "auroc": auroc(pooled_s, pooled_y),
        "auroc_within_problem": float(np.mean(within)) if within else float("nan"),
        "ci_low": lo,
        "ci_high": hi,
        "problems_with_both": len(within),
        "solutions": len(pooled_y),
        "_within": within,
    }
