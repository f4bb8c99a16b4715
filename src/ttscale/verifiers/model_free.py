"""Verifiers that need no second model: they read the log-probabilities the engine already
computed while sampling, so their verifier cost is zero tokens."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..core import Candidate, Compute, Problem, Step


class _StepStatScorer:
    """Scores computed from each step's own token statistics."""

    name = ""
    # read the whole next-token distribution (self-certainty), which only the embedded
    # engine returns; a server returns the sampled tokens' log-probabilities
    needs_certainties = False

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
    needs_certainties = True

    def step_score(self, step: Step) -> float:
        return max(0.0, step.certainty_sum / step.n_tokens)


class _TraceConfidenceScorer:
    """DeepConf's trace confidence (`tasks/confidence.py`), one score per solution. A
    solution stored without token-level confidences (runs before they were kept, or a search
    node) is read at step level: its steps stand for the windows."""

    name = ""
    key = ""
    needs_certainties = True

    def score(self, problem: Problem, candidates: Sequence[Candidate]) -> tuple[list[list[float]], Compute]:
        return [[max(0.0, self.of(c))] for c in candidates], Compute()

    def of(self, c: Candidate) -> float:
        if self.key in c.confidence:
            return c.confidence[self.key]
        means = [s.certainty_sum / s.n_tokens for s in c.steps if s.n_tokens]
        if not means:
            return 0.0
        return min(means) if self.key == "lowest_group" else means[-1]


class LowestGroupConfidence(_TraceConfidenceScorer):
    """The lowest mean self-certainty over any window of 32 tokens: the weakest stretch."""

    name = "conf_group"
    key = "lowest_group"


class TailConfidence(_TraceConfidenceScorer):
    """The mean self-certainty of the last 64 tokens, where the answer is written."""

    name = "conf_tail"
    key = "tail"


MODEL_FREE: dict[str, type[_StepStatScorer] | type[_TraceConfidenceScorer]] = {
    LogProbScorer.name: LogProbScorer,
    SelfCertaintyScorer.name: SelfCertaintyScorer,
    LowestGroupConfidence.name: LowestGroupConfidence,
    TailConfidence.name: TailConfidence,
}
