"""Verifiers that need no second model: they read the log-probabilities the engine already
computed while sampling, so their verifier cost is zero tokens."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..core import Candidate, Compute, Problem, Step
from ..tasks.confidence import trace_confidence
from ..tasks.domain import domain_of
from ..tasks.prompts import SYSTEM_PROMPT


class _StepStatScorer:
    """Scores computed from each step's own token statistics."""

    name = ""
    # read the whole next-token distribution (self-certainty), which only the embedded
    # engine returns; a server returns the sampled tokens' log-probabilities
    needs_certainties = False
    replays_stored = False  # a stored step carries what these read

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
    """DeepConf's trace confidence (`tasks/confidence.py`), one score per solution, from the
    token-level confidences its sampling pass kept. A solution stored without them (pools
    sampled before they were kept) is replayed through an engine that can recompute them
    (`replays_certainties`: one prefill, charged as verifier tokens, which live sampling
    never pays); with no such engine it is read at step level: its steps stand for the
    windows, an approximation its scores say nothing of, so a run states which it used."""

    name = ""
    key = ""
    needs_certainties = True
    replays_stored = True  # built with an engine, to recompute what an old pool lacks
    free_when_live = True  # a replay only stands in for what sampling measured for free

    def __init__(self, generator: Any = None, system: str = SYSTEM_PROMPT):
        self.generator = generator if getattr(generator, "replays_certainties", False) else None
        self.system = system
        # the other trace confidences of the same token statistics, by their scorers' names: a
        # replay measures them all, so a rescore stores them all (`evaluation.run.rescore_pool`)
        self.side_scores: dict[str, list[list[float]]] = {}

    def score(self, problem: Problem, candidates: Sequence[Candidate]) -> tuple[list[list[float]], Compute]:
        spent = Compute()
        confidences = []
        for c in candidates:
            confidence = c.confidence
            if not confidence and self.generator is not None and c.text:
                confidence, cost = self._replay(problem, c)
                spent = spent + cost
            confidences.append(confidence)
        by_name = {
            name: [
                [max(0.0, trace_score(c, confidence, key))]
                for c, confidence in zip(candidates, confidences, strict=True)
            ]
            for name, key in TRACE_CONFIDENCES.items()
        }
        own = by_name.pop(self.name)
        self.side_scores = by_name
        return own, spent

    def _replay(self, problem: Problem, c: Candidate) -> tuple[dict[str, float], Compute]:
        assert self.generator is not None
        prompt = domain_of(problem).prompt(self.system)
        completion, cost = self.generator.replay(prompt, c.text, c.finish_reason, certainties=True)
        return trace_confidence(completion.certainties), Compute(
            verifier_tokens=cost.prompt_tokens, flops=cost.flops, wall_time=cost.wall_time
        )


class LowestGroupConfidence(_TraceConfidenceScorer):
    """The lowest mean self-certainty over any window of 32 tokens: the weakest stretch."""

    name = "conf_group"
    key = "lowest_group"


class TailConfidence(_TraceConfidenceScorer):
    """The mean self-certainty of the last 64 tokens, where the answer is written."""

    name = "conf_tail"
    key = "tail"


TRACE_CONFIDENCES = {LowestGroupConfidence.name: LowestGroupConfidence.key, TailConfidence.name: TailConfidence.key}


def trace_score(c: Candidate, confidence: dict[str, float], key: str) -> float:
    """One trace confidence of a solution: from its token-level confidences when it has them,
    else at step level (its steps stand for the windows)."""
    if key in confidence:
        return confidence[key]
    means = [s.certainty_sum / s.n_tokens for s in c.steps if s.n_tokens]
    if not means:
        return 0.0
    return min(means) if key == "lowest_group" else means[-1]


MODEL_FREE: dict[str, type[_StepStatScorer] | type[_TraceConfidenceScorer]] = {
    LogProbScorer.name: LogProbScorer,
    SelfCertaintyScorer.name: SelfCertaintyScorer,
    LowestGroupConfidence.name: LowestGroupConfidence,
    TailConfidence.name: TailConfidence,
}
