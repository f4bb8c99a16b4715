"""Verifiers. A scorer gives every step of every candidate a non-negative score (higher is
better); `aggregate` turns a candidate's step scores into one number.

The two scorers here need no second model: they read the log-probabilities the engine
already computed while sampling, so their verifier cost is zero tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from .core import Candidate, Compute, Problem, Scorer, Step

AGGREGATIONS: dict[str, Callable[[Sequence[float]], float]] = {
    "last": lambda s: s[-1],
    "min": min,
    "prod": lambda s: math.prod(s),
    "mean": lambda s: sum(s) / len(s),
}


def aggregate(step_scores: Sequence[float], how: str = "mean") -> float:
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {how!r}; choose from {', '.join(AGGREGATIONS)}")
    if not step_scores:
        return 0.0
    return float(AGGREGATIONS[how](step_scores))


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


SCORERS: dict[str, type[_StepStatScorer]] = {
    LogProbScorer.name: LogProbScorer,
    SelfCertaintyScorer.name: SelfCertaintyScorer,
}
MODEL_SCORERS = {
    "judge": "the policy model asked whether the last step is correct: P(Yes)",
    "probe[@PATH]": "a value probe on the policy's hidden states (ttscale train-probe)",
    "prm:KEY[@PATH]": "a process reward model through transformers (see ttscale.prm.FORMATS)",
}
ALL_SCORERS = [*SCORERS, "judge", "probe"]
PRM_KEYS = ["rlhflow-8b", "math-shepherd", "qwen2.5-math-prm-7b", "skywork-1.5b"]  # ttscale.prm.FORMATS


def known_scorer(name: str) -> bool:
    return (
        name in ALL_SCORERS
        or name.startswith("probe@")
        or (name.startswith("prm:") and name[4:].partition("@")[0] in PRM_KEYS)
    )


def scorer_name(spec: str) -> str:
    """The name a scorer's scores and searches are stored under: its spec without an @PATH,
    except that a probe file is named by its content (see `probe.probe_name`)."""
    if spec.startswith("probe@"):
        from .probe import probe_name

        return probe_name(spec.partition("@")[2])
    return spec.partition("@")[0]


def needs_hidden_states(name: str) -> bool:
    return name == "probe" or name.startswith("probe@")


def make_scorer(name: str, generator: Any = None, system: str | None = None) -> Scorer:
    """A verifier by name. Model-free ones need nothing; "judge" runs on the generator; the
    probe needs the system prompt the solutions were sampled under, to replay stored ones."""
    if name in SCORERS:
        return SCORERS[name]()
    if name == "judge":
        if not hasattr(generator, "next_token_logprobs"):
            raise ValueError("the judge scorer needs an engine that returns next-token log-probabilities")
        from .judge import LLMJudgeScorer

        return LLMJudgeScorer(generator)
    if needs_hidden_states(name):
        from .probe import ProbeScorer

        return ProbeScorer.for_generator(generator, name.partition("@")[2] or None, system)
    if name.startswith("prm:"):
        from .prm import TransformersPRM

        key, _, path = name[4:].partition("@")
        return TransformersPRM.load(key, path or None)
    raise ValueError(f"unknown scorer {name!r}; choose from {', '.join([*ALL_SCORERS, 'prm:KEY[@PATH]'])}")
