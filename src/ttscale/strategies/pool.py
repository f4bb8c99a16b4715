"""Strategies over one pool of independent samples: majority vote (self-consistency),
Best-of-N (highest verifier score) and weighted Best-of-N (verifier scores summed over
equivalent answers). Each is a plain function (problem, generator, scorer, n, spec) -> Result;
the pick itself is a pure rule of `picks`."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..core import Candidate, Compute, Generator, Problem, Result, Scorer
from ..tasks.domain import domain_of
from .candidates import from_completion, score_candidates
from .picks import PICKERS, pick_from_pool
from .spec import RunSpec


def sample_pool(
    problem: Problem, generator: Generator, scorer: Scorer, n: int, spec: RunSpec
) -> tuple[list[Candidate], Compute]:
    """n independent complete solutions, decoded in one batch, checked as the domain checks
    them (code: run on the public calls and the model's own tests), scored by the verifier.
    Starts from a fresh engine cache, so the same seed gives the same pool whatever ran before."""
    domain = domain_of(problem)
    params = domain.sampling(spec.params)
    prepared = domain.prepare(generator, params) if n > 1 else Compute()  # one sample: nothing to choose
    generator.reset()
    gen = generator.generate([domain.prompt(spec.system)], n, params)
    candidates = [from_completion(c, domain) for c in gen.completions[0]]
    checked = domain.check([c.answer for c in candidates])
    return candidates, prepared + gen.compute + checked + score_candidates(
        problem, candidates, scorer, spec.aggregation
    )


def _pool_strategy(name: str) -> Callable[..., Result]:
    def strategy(problem: Problem, generator: Generator, scorer: Scorer, n: int, spec: RunSpec | None = None) -> Result:
        spec = spec or RunSpec()
        t0 = time.perf_counter()
        candidates, compute = sample_pool(problem, generator, scorer, n, spec)
        chosen = pick_from_pool(name, candidates, domain_of(problem))
        compute.wall_time = time.perf_counter() - t0  # sampling, scoring and voting
        settings = {"n": n, "scorer": scorer.name, "aggregation": spec.aggregation, "sampling": spec.params.to_dict()}
        return Result.picked(name, candidates, chosen, compute, settings)

    strategy.__name__ = name
    strategy.__doc__ = f"{name} over n independent samples. " + (PICKERS[name].__doc__ or "")
    return strategy


majority = _pool_strategy("majority")
best_of_n = _pool_strategy("best_of_n")
weighted_best_of_n = _pool_strategy("weighted_best_of_n")
