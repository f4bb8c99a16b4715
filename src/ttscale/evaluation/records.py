"""The records a run stores, one JSON line each: a pool (N graded samples of one problem,
scored by every verifier) or a search (one strategy run at one budget). Typed here, built
here, and nowhere else; as TypedDicts they serialise to the same JSON they always had."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, TypedDict

from ..core import Candidate, Compute, Problem, Result, SamplingParams
from ..tasks.code_domain import CodeDomain
from ..tasks.domain import domain_of


class StepRecord(TypedDict):
    text: str
    n_tokens: int
    logprob_sum: float
    logprob_min: float
    certainty_sum: float


class _SampleOptional(TypedDict, total=False):
    confidence: dict[str, float]  # DeepConf's trace confidences (absent in runs before they were kept)
    behaviour: dict[str, Any] | None  # code: what the program did on the public calls and tests
    hidden_error: str | None  # code: why the hidden tests failed it (never shown to a strategy)


class SampleRecord(_SampleOptional):
    """One sample of a pool: graded, with every verifier's step scores."""

    text: str
    answer: str | None
    correct: bool
    finish_reason: str
    steps: list[StepRecord]
    scores: dict[str, list[float]]  # verifier name -> per-step scores


class ProblemFields(TypedDict):
    id: str
    question: str
    gold: str | None
    meta: dict[str, Any]
    model: str
    seed: int


class _PoolOptional(TypedDict, total=False):
    engine: dict[str, Any]  # what sampled it (EvalConfig.engine); absent in runs before it was kept
    grown: list[dict[str, Any]]  # each growth: from, to, seed, scorer, engine
    rescored: dict[str, dict[str, Any]]  # verifier added later -> what scoring cost
    tests: list[str]  # code: the asserts the model wrote for the problem


class PoolRecord(ProblemFields, _PoolOptional):
    sampling: dict[str, Any]
    compute: dict[str, Any]
    candidates: list[SampleRecord]


class PickRecord(TypedDict):
    answer: str | None
    correct: bool


class _SearchOptional(TypedDict, total=False):
    engine: dict[str, Any]  # what sampled it (EvalConfig.engine)


class SearchRecord(ProblemFields, _SearchOptional):
    key: str
    kind: str  # "search"
    strategy: str
    n: int
    answer: str | None
    correct: bool
    picks: dict[str, PickRecord]  # every final pick rule's answer
    settings: dict[str, Any]  # what was asked and what the run found out (Result.settings + outcome)
    compute: dict[str, Any]
    candidates: list[dict[str, Any]]


def problem_fields(problem: Problem, model: str, seed: int) -> ProblemFields:
    return {
        "id": problem.id,
        "question": problem.question,
        "gold": problem.gold,
        "meta": problem.meta,
        "model": model,
        "seed": seed,
    }


def sample_record(c: Candidate, problem: Problem, scores: dict[str, list[float]]) -> SampleRecord:
    domain = domain_of(problem)
    record: SampleRecord = {
        "text": c.text,
        "answer": c.answer,
        "correct": domain.is_correct(c.answer, problem.gold),
        "finish_reason": c.finish_reason,
        "steps": [s.to_dict() for s in c.steps],  # type: ignore[misc]
        "scores": scores,
    }
    if c.confidence:
        record["confidence"] = c.confidence
    if isinstance(domain, CodeDomain):
        record.update(code_fields(domain, c.answer, problem.gold))  # type: ignore[typeddict-item]
    return record


def code_fields(domain: CodeDomain, program: str | None, gold: str | None) -> dict[str, Any]:
    """What a program did: on the public calls and the model's tests (what the strategies
    saw), and why the hidden tests failed it, if they did (what they never see)."""
    (behaviour,), _ = domain.behaviours([program])
    hidden = domain.outcome(program, gold)
    return {
        "behaviour": None if behaviour is None else {**asdict(behaviour), "signature": behaviour.signature},
        "hidden_error": None if hidden.passed else (hidden.error or "wrong")[:500],
    }


def pool_record(
    problem: Problem, model: str, params: SamplingParams, compute: Compute, samples: list[SampleRecord]
) -> PoolRecord:
    record: PoolRecord = {
        **problem_fields(problem, model, params.seed),
        "sampling": params.to_dict(),
        "compute": compute.to_dict(),
        "candidates": samples,
    }
    domain = domain_of(problem)
    if isinstance(domain, CodeDomain):
        record["tests"] = domain.tests or []
    return record


def search_record(key: str, problem: Problem, model: str, seed: int, result: Result, n: int) -> SearchRecord:
    """A strategy's result, graded. Its stored settings hold inputs and outcome together
    (the layout every stored run has), without the picks, which get their own field."""
    domain = domain_of(problem)
    picks = result.outcome.get("picks", {})
    stored = {**result.settings, **{k: v for k, v in result.outcome.items() if k != "picks"}}
    return {
        "key": key,
        "kind": "search",
        **problem_fields(problem, model, seed),
        "strategy": result.strategy,
        "n": n,
        "answer": result.answer,
        "correct": domain.is_correct(result.answer, problem.gold),
        "picks": {rule: {"answer": a, "correct": domain.is_correct(a, problem.gold)} for rule, a in picks.items()},
        "settings": stored,
        "compute": result.compute.to_dict(),
        "candidates": [
            {**c.to_dict(), "correct": domain.is_correct(c.answer, problem.gold)} for c in result.candidates
        ],
    }


def candidates_of(samples: list[SampleRecord]) -> list[Candidate]:
    """A stored pool's samples as candidates, without scores: to score them again."""
    return [Candidate.from_dict({**s, "correct": None, "score": None}) for s in samples]
