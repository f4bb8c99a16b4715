"""Strategies over one pool of independent samples: majority vote (self-consistency),
Best-of-N (highest verifier score) and weighted Best-of-N (verifier scores summed over
mathematically equivalent answers).

Each strategy is a plain function (problem, generator, scorer, n, ...) -> Result. The pick
itself is a separate pure function of (answer groups, scores), so an evaluation can draw
one pool of N samples and replay every strategy on subsets of it without new generation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from .core import Candidate, Completion, Compute, Generator, Problem, Result, SamplingParams, Scorer
from .grading import extract_answer, group_answers
from .prompts import SYSTEM_PROMPT, problem_prompt
from .scorers import aggregate
from .steps import split_steps

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


def to_candidate(completion: Completion) -> Candidate:
    """A cut-off solution only has an answer if it already boxed one: the last number of an
    unfinished text is noise, not an answer."""
    finished = completion.finish_reason != "length" or "\\boxed" in completion.text
    return Candidate(
        text=completion.text,
        steps=split_steps(completion),
        answer=extract_answer(completion.text) if finished else None,
        finish_reason=completion.finish_reason,
    )


def score_candidates(problem: Problem, candidates: list[Candidate], scorer: Scorer, how: str = "mean") -> Compute:
    """Fill in step_scores and the aggregated score of each candidate."""
    step_scores, compute = scorer.score(problem, candidates)
    for c, s in zip(candidates, step_scores, strict=True):
        c.step_scores = list(s)
        c.score = aggregate(s, how)
    return compute


def sample_pool(
    problem: Problem,
    generator: Generator,
    scorer: Scorer,
    n: int,
    params: SamplingParams,
    system: str = SYSTEM_PROMPT,
    how: str = "mean",
) -> tuple[list[Candidate], Compute]:
    """n independent complete solutions, decoded in one batch, scored by the verifier.
    Starts from a fresh engine cache, so the same seed gives the same pool whatever ran before."""
    generator.reset()
    gen = generator.generate([problem_prompt(problem.question, system)], n, params)
    candidates = [to_candidate(c) for c in gen.completions[0]]
    return candidates, gen.compute + score_candidates(problem, candidates, scorer, how)


def all_picks(candidates: list[Candidate]) -> dict[str, int | None]:
    """The candidate every pick rule chooses, answers grouped once."""
    groups = group_answers([c.answer for c in candidates])
    scores = [c.score for c in candidates]
    return {rule: fn(groups, scores) for rule, fn in PICKERS.items()}


def answers_of(candidates: list[Candidate], picks: dict[str, int | None]) -> dict[str, str | None]:
    """Each pick rule's answer."""
    return {rule: None if i is None else candidates[i].answer for rule, i in picks.items()}


def pick_from_pool(name: str, candidates: list[Candidate]) -> int | None:
    groups = group_answers([c.answer for c in candidates])
    return PICKERS[name](groups, [c.score for c in candidates])


def _pool_strategy(name: str) -> Callable[..., Result]:
    def strategy(
        problem: Problem,
        generator: Generator,
        scorer: Scorer,
        n: int,
        params: SamplingParams | None = None,
        system: str = SYSTEM_PROMPT,
        aggregation: str = "mean",
    ) -> Result:
        params = params or SamplingParams()
        t0 = time.perf_counter()
        candidates, compute = sample_pool(problem, generator, scorer, n, params, system, aggregation)
        chosen = pick_from_pool(name, candidates)
        compute.wall_time = time.perf_counter() - t0  # sampling, scoring and voting
        settings = {"n": n, "scorer": scorer.name, "aggregation": aggregation, "sampling": params.to_dict()}
        return Result.picked(name, candidates, chosen, compute, settings)

    strategy.__name__ = name
    strategy.__doc__ = f"{name} over n independent samples. " + (PICKERS[name].__doc__ or "")
    return strategy


majority = _pool_strategy("majority")
best_of_n = _pool_strategy("best_of_n")
weighted_best_of_n = _pool_strategy("weighted_best_of_n")

STRATEGIES: dict[str, Callable[..., Result]] = {
    "majority": majority,
    "best_of_n": best_of_n,
    "weighted_best_of_n": weighted_best_of_n,
}
