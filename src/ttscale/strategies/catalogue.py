"""The one catalogue of strategies: every caller (eval, solve, serve, recipes,
compute_optimal) runs a strategy by name through `run_strategy`, with whatever options it has;
each strategy takes the options it understands.

A pool strategy's N samples are drawn once and can be replayed on subsets at every budget; a
per-budget strategy (a search, self-refinement, compute_optimal) runs once per budget.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core import Generator, Problem, Result, Scorer
from . import debug, optimal, refine
from .debug import self_debug
from .deepconf import deepconf_online
from .picks import POOL_RULES
from .pool import (
    adaptive_confident,
    adaptive_majority,
    best_of_n,
    borda,
    deepconf_high,
    deepconf_low,
    esc,
    filter_vote,
    majority,
    weighted_best_of_n,
)
from .refine import self_refine
from .search import beam_search, dvts, particle_filter
from .spec import RunSpec

BOTH = ("math", "code")
INJECTED = ("run_strategy",)  # bound by the catalogue, never a user option
POOL = "pool"
PER_BUDGET = "per_budget"


@dataclass(frozen=True)
class Entry:
    name: str
    fn: Callable[..., Result]
    kind: str  # POOL or PER_BUDGET
    summary: str
    domains: tuple[str, ...] = ("math",)  # the task domains it works on

    @property
    def options(self) -> tuple[str, ...]:
        """The keyword options this strategy takes besides (problem, generator, scorer, n, spec)."""
        params = list(inspect.signature(self.fn).parameters.values())[5:]
        return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in INJECTED)


def entry(name: str) -> Entry:
    """The catalogue entry of a strategy, or a ValueError that lists the known ones."""
    if not isinstance(name, str) or name not in CATALOGUE:
        raise ValueError(f"unknown strategy {name!r}; choose from {', '.join(CATALOGUE)}")
    return CATALOGUE[name]


def check_domain(name: str, domain: str) -> None:
    """A ValueError when strategy `name` does not work on `domain` tasks, naming those that do."""
    if domain not in entry(name).domains:
        fits = [n for n, e in CATALOGUE.items() if domain in e.domains]
        raise ValueError(f"{name} does not work on {domain} tasks; choose from {', '.join(fits)}")


def accepted_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The subset of `options` that strategy `name` takes (DVTS has no lookahead, ...)."""
    taken = entry(name).options
    return {k: v for k, v in options.items() if k in taken}


def run_strategy(
    name: str,
    problem: Problem,
    generator: Generator,
    scorer: Scorer,
    n: int,
    spec: RunSpec | None = None,
    options: dict[str, Any] | None = None,
) -> Result:
    """Run a strategy by name; options it does not take are ignored."""
    return entry(name).fn(problem, generator, scorer, n, spec or RunSpec(), **accepted_options(name, options or {}))


# compute_optimal runs the searches its policy names through this catalogue (injected, so
# that optimal.py needs no catalogue below it)
compute_optimal = functools.update_wrapper(
    functools.partial(optimal.compute_optimal, run_strategy=run_strategy), optimal.compute_optimal
)

CATALOGUE: dict[str, Entry] = {
    e.name: e
    for e in (
        Entry("majority", majority, POOL, "the most frequent answer (self-consistency)", BOTH),
        Entry("best_of_n", best_of_n, POOL, "the verifier's best sample", BOTH),
        Entry("weighted_best_of_n", weighted_best_of_n, POOL, "verifier scores summed over equal answers", BOTH),
        Entry("borda", borda, POOL, "Borda voting: (N - rank + 1) votes by verifier rank", BOTH),
        Entry("deepconf_low", deepconf_low, POOL, "DeepConf: a weighted vote of the best-scored 10%", BOTH),
        Entry("deepconf_high", deepconf_high, POOL, "DeepConf: a weighted vote of the best-scored 90%", BOTH),
        Entry("filter_vote", filter_vote, POOL, "majority over the samples the verifier passes (PROVE)", BOTH),
        Entry("esc", esc, POOL, "majority, sampling in windows of 4 until one window agrees", BOTH),
        Entry(
            "adaptive_majority",
            adaptive_majority,
            POOL,
            "majority, sampling 2 at a time until the leader is settled",
            BOTH,
        ),
        Entry(
            "adaptive_confident",
            adaptive_confident,
            POOL,
            "adaptive majority that trusts a weaker lead when it is the more self-certain",
            BOTH,
        ),
        Entry("beam_search", beam_search, PER_BUDGET, "verifier-guided beam search over steps"),
        Entry("dvts", dvts, PER_BUDGET, "diverse verifier tree search: n/M independent subtrees"),
        Entry("particle_filter", particle_filter, PER_BUDGET, "particle filtering weighted by step scores"),
        Entry("self_refine", self_refine, PER_BUDGET, "answer, then check and revise, n rounds"),
        Entry("self_debug", self_debug, PER_BUDGET, "code: revise with what the failing example did", ("code",)),
        Entry(
            "deepconf_online",
            deepconf_online,
            PER_BUDGET,
            "DeepConf online: a warm-up sets a floor, stop the rest below it",
            BOTH,
        ),
        Entry("compute_optimal", compute_optimal, PER_BUDGET, "spend by estimated difficulty (a fitted policy)"),
    )
}
POOL_STRATEGIES = tuple(name for name, e in CATALOGUE.items() if e.kind == POOL)
PER_BUDGET_STRATEGIES = tuple(name for name, e in CATALOGUE.items() if e.kind == PER_BUDGET)
SEARCHES = ("beam_search", "dvts", "particle_filter")  # step-level tree searches


@dataclass(frozen=True)
class Rounds:
    """A strategy of rounds, each depending only on those before it: one run at the largest
    budget gives every smaller one (its first m rounds). How to cut a run, rebuild a stored
    one, and tell whether a stored run serves a budget."""

    first_rounds: Callable[[Result, int], Result]
    from_stored: Callable[..., Result]
    reusable: Callable[[dict[str, Any], int, int, dict[str, Any]], bool]


ROUNDS = {
    "self_refine": Rounds(refine.first_rounds, refine.run_from_stored, refine.reusable),
    "self_debug": Rounds(debug.first_rounds, debug.run_from_stored, debug.reusable),
}
assert set(POOL_STRATEGIES) == set(POOL_RULES), "every pool strategy is a rule replayed on the pool"
