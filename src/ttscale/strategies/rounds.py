"""What the round strategies share (self_refine, self_debug): each round depends only on
the rounds before it, so a run's first m rounds are a budget-m run. Cutting a run's compute
to its first rounds, and rebuilding a stored run, live here once."""

from __future__ import annotations

from typing import Any

from ..core import Candidate, Compute, Result


def first_rounds_compute(run: Result, m: int, wall_time: float | None = None) -> tuple[Compute, int]:
    """The compute of a run's first m rounds (and how many it ran): the rounds' own, plus
    their share of the verifier's, which scored all rounds at once; wall time is the rounds'
    own plus the verifier's share, unless given."""
    all_rounds = run.outcome["rounds"]
    rounds = [Compute.from_dict(r) for r in all_rounds[:m]]
    share = len(rounds) / len(all_rounds)
    verifier = Compute.from_dict(run.outcome["verifier"])
    compute = sum(rounds, Compute()) + Compute(
        verifier_tokens=round(verifier.verifier_tokens * share),
        flops=verifier.flops * share,
        wall_time=verifier.wall_time * share,
        executed_tests=round(verifier.executed_tests * share),
        execution_time=verifier.execution_time * share,
    )
    if wall_time is not None:
        compute.wall_time = wall_time
    return compute, len(rounds)


def stored_run(
    strategy: str,
    outcome_keys: tuple[str, ...],
    settings: dict[str, Any],
    candidates: list[Candidate],
    compute: Compute,
    answer: str | None,
) -> Result:
    """A stored run of a round strategy (its record's settings hold inputs and outcome together)."""
    inputs = {k: v for k, v in settings.items() if k not in outcome_keys}
    outcome = {k: v for k, v in settings.items() if k in outcome_keys}
    return Result(strategy, answer, None, candidates, compute, inputs, outcome=outcome)
