"""Pick rules: which candidate a strategy answers with, as pure functions of (answer groups,
scores). Kept apart from sampling so an evaluation can draw one pool of N samples and replay
every rule on subsets of it without new generation."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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
    return replay(name, groups, [c.score for c in candidates])[0]


# ---- rules that only a pool replays: Borda voting, and votes that stop sampling early -------
BORDA_POWER = 1.0  # v(r) = (N - r + 1)^p (Kang et al., 2025, eq. 11); p = 1 is Borda's own count


def pick_borda(groups: Groups, scores: Sequence[float], power: float = BORDA_POWER) -> int | None:
    """Borda voting: candidates ranked by score (best first, ties by order), the r-th of N
    gives its answer (N - r + 1)^p votes; the best-scored member of the winning answer."""
    answered = [i for i, g in enumerate(groups) if g is not None]
    ranked = sorted(answered, key=lambda i: (-scores[i], i))
    votes = [0.0] * len(groups)
    for r, i in enumerate(ranked, start=1):
        votes[i] = float(len(ranked) - r + 1) ** power
    return pick_weighted(groups, votes)


def pick_filtered(groups: Groups, scores: Sequence[float], keep: float) -> int | None:
    """DeepConf's offline vote (Fu et al., 2025): keep the best-scored share `keep` of the
    answered candidates (at least one), then the score-weighted vote among them. With a
    confidence verifier (conf_group, conf_tail) this is DeepConf-low (keep 10%) or -high (90%)."""
    answered = [i for i, g in enumerate(groups) if g is not None]
    kept = set(sorted(answered, key=lambda i: (-scores[i], i))[: max(1, math.ceil(keep * len(answered)))])
    return pick_weighted([g if i in kept else None for i, g in enumerate(groups)], scores)


def window_agrees(groups: Groups) -> bool:
    """ESC (Li et al., 2024): the latest window of samples all give one answer."""
    return len(groups) > 0 and groups[0] is not None and len(set(groups)) == 1


def leader_is_settled(groups: Groups, threshold: float = 0.95) -> bool:
    """Adaptive-Consistency's Beta rule (Aggarwal et al., 2023): with v1 votes for the
    leading answer and v2 for the runner-up, the posterior probability that the leader's
    share exceeds the runner-up's, P(X > 1/2) for X ~ Beta(v1 + 1, v2 + 1), passes the
    threshold. For whole-number parameters that is P(Binomial(v1 + v2 + 1, 1/2) <= v1)."""
    counts = sorted((groups.count(g) for g in set(groups) if g is not None), reverse=True)
    if not counts:
        return False
    v1, v2 = counts[0], counts[1] if len(counts) > 1 else 0
    trials = v1 + v2 + 1
    return sum(math.comb(trials, j) for j in range(v1 + 1)) / 2**trials >= threshold


@dataclass(frozen=True)
class Stopping:
    """A vote that samples in rounds of `step` and stops once `settled` holds: on the latest
    window (ESC) or on every sample so far (Adaptive-Consistency)."""

    step: int
    settled: Callable[[Groups], bool]
    window: bool  # settled reads the latest round only

    def settled_after(self, groups: Groups) -> bool:
        """Whether the vote stops once it has read these samples (a whole number of rounds)."""
        return self.settled(groups[-self.step :] if self.window else groups)

    def stop_at(self, groups: Groups) -> int:
        """How many of these samples (in their order) the vote reads before it stops."""
        for used in range(self.step, len(groups), self.step):
            if self.settled_after(groups[:used]):
                return used
        return len(groups)


def esc_rule(window: int = 4) -> Stopping:
    """ESC: rounds of `window` samples, stopping at the first round that agrees."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"esc_window must be a positive integer, not {window!r}")
    return Stopping(step=window, settled=window_agrees, window=True)


def adaptive_rule(threshold: float = 0.95) -> Stopping:
    """Adaptive majority: rounds of 2, stopping once the Beta rule passes `threshold`."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.5 <= threshold <= 1:
        raise ValueError(f"adaptive_threshold must be a number from 0.5 to 1, not {threshold!r}")
    return Stopping(step=2, settled=functools.partial(leader_is_settled, threshold=float(threshold)), window=False)


# each stopping vote: its rule, from the run's option that sets it (absent: the default)
STOPPING: dict[str, tuple[Callable[..., Stopping], str]] = {
    "esc": (esc_rule, "esc_window"),
    "adaptive_majority": (adaptive_rule, "adaptive_threshold"),
}


def stopping(name: str, options: Mapping[str, Any] | None = None) -> Stopping:
    """A stopping vote's rule, with the run's setting of its parameter if it has one."""
    make, key = STOPPING[name]
    options = options or {}
    return make(options[key]) if key in options else make()


def replay(
    name: str, groups: Groups, scores: Sequence[float], options: Mapping[str, Any] | None = None
) -> tuple[int | None, int]:
    """A pool rule on a pool's samples in their order: the pick and how many it read (the
    run's options set a stopping vote's parameter)."""
    if name in STOPPING:
        used = stopping(name, options).stop_at(groups)
        return pick_majority(groups[:used], scores[:used]), used
    return VOTING_RULES[name](groups, scores), len(groups)


def pick_deepconf_low(groups: Groups, scores: Sequence[float]) -> int | None:
    """DeepConf-low: the score-weighted vote of the best-scored 10% (see `pick_filtered`)."""
    return pick_filtered(groups, scores, keep=0.1)


def pick_deepconf_high(groups: Groups, scores: Sequence[float]) -> int | None:
    """DeepConf-high: the score-weighted vote of the best-scored 90% (see `pick_filtered`)."""
    return pick_filtered(groups, scores, keep=0.9)


PASS_MARK = 0.5  # a verifier score that counts as a pass (the program check: most programs agree)


def pick_filter_vote(groups: Groups, scores: Sequence[float]) -> int | None:
    """Filter, then vote (PROVE): the majority among the candidates the verifier passes
    (score at least PASS_MARK), or among all when it passes none."""
    passed = [g if g is not None and scores[i] >= PASS_MARK else None for i, g in enumerate(groups)]
    return pick_majority(passed if any(g is not None for g in passed) else groups, scores)


# votes besides the three every search reports: replayed on pools, run live as pool strategies
VOTES: dict[str, Callable[[Groups, Sequence[float]], int | None]] = {
    "borda": pick_borda,
    "deepconf_low": pick_deepconf_low,
    "deepconf_high": pick_deepconf_high,
    "filter_vote": pick_filter_vote,
}
VOTING_RULES = {**PICKERS, **VOTES}  # every rule that reads a whole pool
POOL_RULES = (*PICKERS, *VOTES, *STOPPING)  # every rule a stored pool is replayed with
