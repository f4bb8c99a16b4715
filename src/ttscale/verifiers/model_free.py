"""Verifiers that need no second model: they read the log-probabilities the engine already
computed while sampling, so their verifier cost is zero tokens."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..core import Candidate, Compute, Problem, Step


class _StepStatScorer:
    """Scores computed from each step's own token statistics."""

    name = ""

    def step_score(self, step: Step) -> float:
        raise NotImplementedError

    def score(self, problem: Problem, candidates: Sequence[Candidate]) -> tuple[list[list[float]], Compute]:
        return [[self.step_score(s) for s in c.steps if s.n_tokens] or [0.0] for c in candidates], Compute()


class LogProbScorer(_StepStatScorer):
    """exp(mean token log-probability) of the step: the geometric-mean token probability,
    in (0, 1]. A confident, fluent step scores near 1."""

    name = "logprob"

    def step_score(self, step: Step) -> float:
        return math.exp(step.logprob_sum / step.n_tokens)


class SelfCertaintyScorer(_StepStatScorer):
    """Mean self-certainty of the step's tokens: KL(uniform || p) of each next-token
    distribution (Kang et al., 2025, "Scalable Best-of-N Selection via Self-Certainty").
    Non-negative; a peaked, confident distribution scores high."""

    name = "self_certainty"

    def step_score(self, step: Step) -> float:
        return max(0.0, step.certainty_sum / step.n_tokens)


MODEL_FREE: dict[str, type[_StepStatScorer]] = {
    LogProbScorer.name: LogProbScorer,
    SelfCertaintyScorer.name: SelfCertaintyScorer,
}
