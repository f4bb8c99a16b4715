"""Candidates: a solution with its answer and scores, whatever made it (a pool sample, a
search node). One rule for "has an answer" lives in the task domain."""

from __future__ import annotations

from ..core import Candidate, Completion, Compute, Problem, Scorer, Step, aggregate
from ..tasks.confidence import trace_confidence
from ..tasks.domain import MATH, Domain
from ..tasks.layer_features import completion_features
from ..tasks.steps import split_steps

# cut short by the token limit or by a confidence floor (DeepConf online); a search node still growing
INCOMPLETE = ("length", "low_confidence", "open")


def make_candidate(text: str, steps: list[Step], finish_reason: str, domain: Domain = MATH) -> Candidate:
    """A candidate whose answer the domain reads off its text; a solution that did not end
    has one only if it already stated it."""
    complete = finish_reason not in INCOMPLETE
    return Candidate(text=text, steps=steps, answer=domain.answer_of(text, complete), finish_reason=finish_reason)


def from_completion(completion: Completion, domain: Domain = MATH) -> Candidate:
    c = make_candidate(completion.text, split_steps(completion), completion.finish_reason, domain)
    c.confidence = trace_confidence(completion.certainties)
    c.layer_features = completion_features(completion)
    return c


def score_candidates(problem: Problem, candidates: list[Candidate], scorer: Scorer, how: str = "mean") -> Compute:
    """Fill in step_scores and the aggregated score of each candidate."""
    step_scores, compute = scorer.score(problem, candidates)
    for c, s in zip(candidates, step_scores, strict=True):
        c.step_scores = list(s)
        c.score = aggregate(s, how)
    return compute
