"""Level 4: strategies, plain functions (problem, generator, scorer, n, spec, **options) ->
Result. Pick rules, pool strategies, step-level searches, self-refinement, compute-optimal
scaling, and the one catalogue that runs any of them by name."""

from .catalogue import (
    CATALOGUE,
    PER_BUDGET_STRATEGIES,
    POOL_STRATEGIES,
    accepted_options,
    compute_optimal,
    entry,
    run_strategy,
)
from .optimal import Policy, agreement
from .picks import PICKERS, all_picks, pick_best, pick_majority, pick_weighted
from .pool import best_of_n, majority, sample_pool, weighted_best_of_n
from .refine import first_rounds, self_refine
from .search import beam_search, dvts, particle_filter
from .spec import RunSpec

STRATEGIES = {name: e.fn for name, e in CATALOGUE.items() if e.kind == "pool"}  # the pool strategies

__all__ = [
    "CATALOGUE",
    "PER_BUDGET_STRATEGIES",
    "PICKERS",
    "POOL_STRATEGIES",
    "STRATEGIES",
    "Policy",
    "RunSpec",
    "accepted_options",
    "agreement",
    "all_picks",
    "beam_search",
    "best_of_n",
    "compute_optimal",
    "dvts",
    "entry",
    "first_rounds",
    "majority",
    "particle_filter",
    "pick_best",
    "pick_majority",
    "pick_weighted",
    "run_strategy",
    "sample_pool",
    "self_refine",
    "weighted_best_of_n",
]
