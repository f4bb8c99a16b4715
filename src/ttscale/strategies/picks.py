"""Pick rules: which candidate a strategy answers with, as pure functions of (answer groups,
scores). Kept apart from sampling so an evaluation can draw one pool of N samples and replay
every rule on subsets of it without new generation."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..core import Candidate
from ..tasks.domain import MATH, Domain

Groups = Sequence[int | None]  # equivalence-class id per candidate; None = no answer


def pick_majority(groups: Groups, scores: Sequence[float]) -> int | None:
    """The first member of the most frequent answer class; ties go to the class seen first."""
    return _pick_by_total(groups, [1.0] * len(groups))


def pick_weighted(groups: Groups, scores: Sequence[float]) -> int | None:
    """The best-scored member of the answer class with the largest summed score."""
    winner = _pick_by_total(groups, scores)
    if winner is None:
        return None
    members = [i for i, g in enumerate(groups) if g == groups[winner]]
    return max(members, key=lambda i: (scores[i], -i))


def pick_best(groups: Groups, scores: Sequence[float]) -> int | None:
    """Vanilla Best-of-N: the highest-scored candidate that has an answer."""
    answered = [i for i, g in enumerate(groups) if g is not None]
    return max(answered, key=lambda i: (scores[i], -i)) if answered else None


def _pick_by_total(groups: Groups, weights: Sequence[float]) -> int | None:
    totals: dict[int, float] = {}
    first: dict[int, int] = {}
    for i, g in enumerate(groups):
        if g is None:
            continue
        totals[g] = totals.get(g, 0.0) + weights[i]
        first.setdefault(g, i)
    if not totals:
        return None
    best = max(totals, key=lambda g: (totals[g], -first[g]))
    return first[best]


PICKERS: dict[str, Callable[[Groups, Sequence[float]], int | None]] = {
    "majority": pick_majority,
    "best_of_n": pick_best,
    "weighted_best_of_n": pick_weighted,
}


def all_picks(candidates: list[Candidate], domain: Domain = MATH) -> dict[str, int | None]:
    """The candidate every pick rule chooses, answers grouped once."""
    groups = domain.group([c.answer for c in candidates])
    scores = [c.score for c in candidates]
    return {rule: fn(groups, scores) for rule, fn in PICKERS.items()}


def answers_of(candidates: list[Candidate], picks: dict[str, int | None]) -> dict[str, str | None]:
    """Each pick rule's answer."""
    return {rule: None if i is None else candidates[i].answer for rule, i in picks.items()}


def pick_from_pool(name: str, candidates: list[Candidate], domain: Domain = MATH) -> int | None:
    groups = domain.group([c.answer for c in candidates])
    return PICKERS[name](groups, [c.score for c in candidates])
