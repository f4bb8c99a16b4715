"""Strategies over one pool of independent samples: majority vote (self-consistency),
Best-of-N (highest verifier score), weighted Best-of-N (verifier scores summed over
equivalent answers) and Borda voting (votes by verifier rank); and two votes that stop
sampling once the answer is settled: ESC (a window of samples agrees) and adaptive majority
(Adaptive-Consistency's Beta rule). Each is a plain function (problem, generator, scorer, n,
spec) -> Result; the pick itself is a pure rule of `picks`, which an evaluation replays on a
stored pool."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from ..core import Candidate, Compute, Generator, Problem, Result, Scorer
from ..core.seeds import round_seed
from ..tasks.confidence import mean_certainty
from ..tasks.domain import Domain, domain_of
from .candidates import from_completion, score_candidates
from .picks import (
    VOTING_RULES,
    Stopping,
    adaptive_confident_rule,
    adaptive_rule,
    esc_rule,
    pick_from_pool,
    pick_majority,
)
from .spec import RunSpec


def sample_pool(
    problem: Problem, generator: Generator, scorer: Scorer, n: int, spec: RunSpec
) -> tuple[list[Candidate], Compute]:
    """n independent complete solutions, decoded in one batch, checked as the domain checks
    them (code: run on the public calls and the model's own tests), scored by the verifier.
    Starts from a fresh engine cache, so the same seed gives the same pool whatever ran before."""
    _, sampled, prepared = begin(problem, generator, n, spec)
    candidates, compute = draw(problem, generator, n, sampled)
    return candidates, prepared + compute + score_candidates(problem, candidates, scorer, spec.aggregation)


def begin(problem: Problem, generator: Generator, n: int, spec: RunSpec) -> tuple[Domain, RunSpec, Compute]:
    """The start of every sampling strategy: the problem's domain, the spec with the domain's
    sampling (code: stop at the block's end), what preparing the domain cost (code: the
    model writes its tests; one sample needs none: nothing to choose), and a fresh engine
    cache, so the same seed gives the same samples whatever ran before."""
    domain = domain_of(problem)
    sampled = replace(spec, params=domain.sampling(spec.params))
    prepared = domain.prepare(generator, sampled.params) if n > 1 else Compute()
    generator.reset()
    return domain, sampled, prepared


def draw(problem: Problem, generator: Generator, k: int, spec: RunSpec) -> tuple[list[Candidate], Compute]:
    """k samples in one batch, checked by the domain (not scored); no reset, so a later
    round reuses the prompt's cached prefix."""
    domain = domain_of(problem)
    gen = generator.generate([domain.prompt(spec.system)], k, spec.params)
    candidates = [from_completion(c, domain) for c in gen.completions[0]]
    return candidates, gen.compute + domain.check([c.answer for c in candidates])


def _settings(n: int, scorer: Scorer, spec: RunSpec) -> dict[str, object]:
    return {"n": n, "scorer": scorer.name, "aggregation": spec.aggregation, "sampling": spec.params.to_dict()}


def _pool_strategy(name: str) -> Callable[..., Result]:
    def strategy(problem: Problem, generator: Generator, scorer: Scorer, n: int, spec: RunSpec | None = None) -> Result:
        spec = spec or RunSpec()
        t0 = time.perf_counter()
        candidates, compute = sample_pool(problem, generator, scorer, n, spec)
        chosen = pick_from_pool(name, candidates, domain_of(problem))
        compute.wall_time = time.perf_counter() - t0  # sampling, scoring and voting
        return Result.picked(name, candidates, chosen, compute, _settings(n, scorer, spec))

    strategy.__name__ = name
    strategy.__doc__ = f"{name} over n independent samples. " + (VOTING_RULES[name].__doc__ or "")
    return strategy


def _stop_early(
    name: str, rule: Stopping, problem: Problem, generator: Generator, scorer: Scorer, n: int, spec: RunSpec | None
) -> Result:
    """Sample in rounds (each with a seed of its own; the first round's are the pool's first
    samples) and stop once the rule says the answer is settled, or at n samples; the pick is
    the majority over what was drawn. The samples not drawn are reported as saved."""
    spec = spec or RunSpec()
    t0 = time.perf_counter()
    domain, sampled, compute = begin(problem, generator, n, spec)
    candidates: list[Candidate] = []
    while len(candidates) < n:
        k = min(rule.step, n - len(candidates))
        round_ = len(candidates) // rule.step
        seeded = replace(sampled, params=replace(sampled.params, seed=round_seed(sampled.params.seed, round_)))
        drawn, spent = draw(problem, generator, k, seeded)
        candidates, compute = candidates + drawn, compute + spent
        groups = domain.group([c.answer for c in candidates])
        certainty = [candidate_certainty(c) for c in candidates]
        if len(candidates) < n and rule.settled_after(groups, certainty):
            break
    compute = compute + score_candidates(problem, candidates, scorer, spec.aggregation)
    chosen = pick_majority(domain.group([c.answer for c in candidates]), [c.score for c in candidates])
    compute.wall_time = time.perf_counter() - t0
    outcome = {"samples": len(candidates), "samples_saved": n - len(candidates)}
    return Result.picked(name, candidates, chosen, compute, _settings(n, scorer, spec), outcome)


def candidate_certainty(c: Candidate) -> float:
    """A drawn sample's mean self-certainty, as a stored pool's replay reads it."""
    return mean_certainty([s.n_tokens for s in c.steps], [s.certainty_sum for s in c.steps])


def esc(
    problem: Problem, generator: Generator, scorer: Scorer, n: int, spec: RunSpec | None = None, *, esc_window: int = 4
) -> Result:
    """Majority, sampling in windows of `esc_window` until one window's answers all agree
    (ESC, Li et al., 2024)."""
    return _stop_early("esc", esc_rule(esc_window), problem, generator, scorer, n, spec)


def adaptive_majority(
    problem: Problem,
    generator: Generator,
    scorer: Scorer,
    n: int,
    spec: RunSpec | None = None,
    *,
    adaptive_threshold: float = 0.95,
) -> Result:
    """Majority, sampling 2 at a time until the leading answer is settled by the Beta rule
    at `adaptive_threshold` (Adaptive-Consistency, Aggarwal et al., 2023)."""
    return _stop_early("adaptive_majority", adaptive_rule(adaptive_threshold), problem, generator, scorer, n, spec)


def adaptive_confident(
    problem: Problem,
    generator: Generator,
    scorer: Scorer,
    n: int,
    spec: RunSpec | None = None,
    *,
    confidence_gate: float = 0.6,
    adaptive_threshold: float = 0.95,
) -> Result:
    """Adaptive majority that also stops at a weaker lead (the Beta rule past
    `confidence_gate`) when the leading answer's samples are the more self-certain."""
    rule = adaptive_confident_rule(confidence_gate, adaptive_threshold)
    return _stop_early("adaptive_confident", rule, problem, generator, scorer, n, spec)


majority = _pool_strategy("majority")
best_of_n = _pool_strategy("best_of_n")
weighted_best_of_n = _pool_strategy("weighted_best_of_n")
borda = _pool_strategy("borda")
deepconf_low = _pool_strategy("deepconf_low")
deepconf_high = _pool_strategy("deepconf_high")
filter_vote = _pool_strategy("filter_vote")
