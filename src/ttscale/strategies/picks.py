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


# A stopping vote reads the answer groups of the samples drawn so far and each one's mean
# self-certainty (the engine measures it while sampling, so reading it costs nothing).
Certainty = Sequence[float]


def window_agrees(groups: Groups, certainty: Certainty = ()) -> bool:
    """ESC (Li et al., 2024): the latest window of samples all give one answer."""
    return len(groups) > 0 and groups[0] is not None and len(set(groups)) == 1


def _leader_and_runner_up(groups: Groups) -> tuple[int | None, int, int]:
    """The leading answer class (ties to the one seen first), its votes and the runner-up's."""
    counts: dict[int, int] = {}
    for g in groups:
        if g is not None:
            counts[g] = counts.get(g, 0) + 1
    if not counts:
        return None, 0, 0
    ranked = sorted(counts, key=lambda g: (-counts[g], groups.index(g)))
    return ranked[0], counts[ranked[0]], counts[ranked[1]] if len(ranked) > 1 else 0


def beta_leader_probability(groups: Groups) -> float:
    """Adaptive-Consistency's Beta rule (Aggarwal et al., 2023): with v1 votes for the
    leading answer and v2 for the runner-up, the posterior probability that the leader's
    share exceeds the runner-up's, P(X > 1/2) for X ~ Beta(v1 + 1, v2 + 1). For whole-number
    parameters that is P(Binomial(v1 + v2 + 1, 1/2) <= v1); 0 with no answer yet."""
    leader, v1, v2 = _leader_and_runner_up(groups)
    return 0.0 if leader is None else _beta_rule(v1, v2)


def _beta_rule(v1: int, v2: int) -> float:
    trials = v1 + v2 + 1
    return sum(math.comb(trials, j) for j in range(v1 + 1)) / 2**trials


def leader_is_settled(groups: Groups, certainty: Certainty = (), threshold: float = 0.95) -> bool:
    """The Beta rule passes the threshold."""
    return beta_leader_probability(groups) >= threshold


def leader_is_confident(groups: Groups, certainty: Certainty, threshold: float = 0.95, gate: float = 0.6) -> bool:
    """The Beta rule passes `threshold`; or it passes the weaker `gate` and the leading
    answer's samples are, on average, more self-certain than the other answered samples
    (vacuously so when there are none: two samples that agree, 7/8, pass a gate of 0.6). A
    lead of 2 votes to 1 (0.6875) passes a gate of 0.6 but not a threshold of 0.7: such a
    lead is trusted only when the model was surer of it (the idea of DeepConf's
    confidence-weighted consensus, applied to when to stop)."""
    leader, v1, v2 = _leader_and_runner_up(groups)
    p = 0.0 if leader is None else _beta_rule(v1, v2)
    if p >= threshold:
        return True
    if p < gate:
        return False
    mine = [c for g, c in zip(groups, certainty, strict=True) if g == leader]
    others = [c for g, c in zip(groups, certainty, strict=True) if g is not None and g != leader]
    return not others or sum(mine) / len(mine) > sum(others) / len(others)


@dataclass(frozen=True)
class Stopping:
    """A vote that samples in rounds of `step` and stops once `settled` holds: on the latest
    window (ESC) or on every sample so far (Adaptive-Consistency)."""

    step: int
    settled: Callable[[Groups, Certainty], bool]
    window: bool  # settled reads the latest round only

    def settled_after(self, groups: Groups, certainty: Certainty) -> bool:
        """Whether the vote stops once it has read these samples (a whole number of rounds)."""
        if self.window:
            return self.settled(groups[-self.step :], certainty[-self.step :])
        return self.settled(groups, certainty)

    def stop_at(self, groups: Groups, certainty: Certainty = ()) -> int:
        """How many of these samples (in their order) the vote reads before it stops; without
        their certainties, every sample counts as equally sure."""
        certainty = list(certainty) or [0.0] * len(groups)
        for used in range(self.step, len(groups), self.step):
            if self.settled_after(groups[:used], certainty[:used]):
                return used
        return len(groups)


def esc_rule(window: int = 4) -> Stopping:
    """ESC: rounds of `window` samples, stopping at the first round that agrees."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"esc_window must be a positive integer, not {window!r}")
    return Stopping(step=window, settled=window_agrees, window=True)


def _probability(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.5 <= value <= 1:
        raise ValueError(f"{name} must be a number from 0.5 to 1, not {value!r}")
    return float(value)


def adaptive_rule(threshold: float = 0.95) -> Stopping:
    """Adaptive majority: rounds of 2, stopping once the Beta rule passes `threshold`."""
    settled = functools.partial(leader_is_settled, threshold=_probability("adaptive_threshold", threshold))
    return Stopping(step=2, settled=settled, window=False)


def adaptive_confident_rule(gate: float = 0.6, threshold: float = 0.95) -> Stopping:
    """Adaptive majority with a confidence gate: rounds of 2, stopping once the Beta rule
    passes `threshold`, or passes `gate` with the leading answer the more self-certain."""
    threshold = _probability("adaptive_threshold", threshold)
    gate = _probability("confidence_gate", gate)
    if gate > threshold:
        raise ValueError(f"confidence_gate ({gate}) must not exceed adaptive_threshold ({threshold})")
    settled = functools.partial(leader_is_confident, threshold=threshold, gate=gate)
    return Stopping(step=2, settled=settled, window=False)


# each stopping vote: its rule, and the run's options that set it (absent: the defaults); the
# first option is the one `fit-stopping` fits
STOPPING: dict[str, tuple[Callable[..., Stopping], tuple[str, ...]]] = {
    "esc": (esc_rule, ("esc_window",)),
    "adaptive_majority": (adaptive_rule, ("adaptive_threshold",)),
    "adaptive_confident": (adaptive_confident_rule, ("confidence_gate", "adaptive_threshold")),
}
OPTION_ARGUMENT = {"esc_window": "window", "adaptive_threshold": "threshold", "confidence_gate": "gate"}


def stopping(name: str, options: Mapping[str, Any] | None = None) -> Stopping:
    """A stopping vote's rule, with the run's settings of its parameters where it has them."""
    make, keys = STOPPING[name]
    options = options or {}
    return make(**{OPTION_ARGUMENT[k]: options[k] for k in keys if k in options})


def replay(
    name: str,
    groups: Groups,
    scores: Sequence[float],
    options: Mapping[str, Any] | None = None,
    certainty: Certainty = (),
) -> tuple[int | None, int]:
    """A pool rule on a pool's samples in their order: the pick and how many it read (the
    run's options set a stopping vote's parameters; `certainty` is each sample's mean
    self-certainty, which a confidence-gated vote reads)."""
    if name in STOPPING:
        used = stopping(name, options).stop_at(groups, certainty)
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


def reads_scores(rule: str) -> bool:
    """Whether a pool rule reads the verifier's scores: majority and the stopping votes read
    only answers and self-certainty, so they never pay for a verifier."""
    return rule not in ("majority", *STOPPING)
