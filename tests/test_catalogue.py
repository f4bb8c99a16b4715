"""The one catalogue of strategies: every name runs through it, with the options it takes."""

import pytest

from ttscale.core import Problem, SamplingParams
from ttscale.strategies import CATALOGUE, PER_BUDGET_STRATEGIES, POOL_STRATEGIES, Policy, RunSpec, run_strategy
from ttscale.strategies.catalogue import accepted_options, entry
from ttscale.verifiers.model_free import LogProbScorer

PROBLEM = Problem("p", "What is 3 plus 4?", gold="7")
SPEC = RunSpec(SamplingParams(max_tokens=40, seed=2), step_tokens=16)
ALL_OPTIONS = {"beam_width": 2, "max_iterations": 3, "lookahead": 1, "ess_threshold": 0.9, "unknown": 1}


@pytest.mark.parametrize("name", [n for n, e in CATALOGUE.items() if "math" in e.domains])
def test_every_math_strategy_runs_by_name_and_ignores_options_it_does_not_take(name, fake_factory):
    r = run_strategy(name, PROBLEM, fake_factory(["7", "7", "8"]), LogProbScorer(), 4, SPEC, ALL_OPTIONS)
    assert r.strategy == name and r.candidates and r.compute.generated_tokens > 0
    if name in ("majority", "weighted_best_of_n", "compute_optimal"):  # votes over 7, 7, 8, 7
        assert r.answer == "7"
    if name in ("beam_search", "dvts", "particle_filter"):
        assert r.trace and r.settings["max_iterations"] == 3
    assert r.settings["scorer"] == "logprob" and r.settings["sampling"]["seed"] == 2


def test_the_kinds_partition_the_catalogue():
    assert set(POOL_STRATEGIES) | set(PER_BUDGET_STRATEGIES) == set(CATALOGUE)
    assert not set(POOL_STRATEGIES) & set(PER_BUDGET_STRATEGIES)
    assert POOL_STRATEGIES == (
        "majority",
        "best_of_n",
        "weighted_best_of_n",
        "borda",
        "deepconf_low",
        "deepconf_high",
        "filter_vote",
        "esc",
        "adaptive_majority",
        "adaptive_confident",
    )


@pytest.mark.parametrize(
    ("name", "taken"),
    [
        ("majority", {}),
        ("beam_search", {"beam_width": 2, "max_iterations": 3, "lookahead": 1}),
        ("dvts", {"beam_width": 2, "max_iterations": 3}),
        ("particle_filter", {"max_iterations": 3, "ess_threshold": 0.9}),
        ("self_refine", {}),
        ("compute_optimal", {}),
    ],
)
def test_each_strategy_takes_its_own_options(name, taken):
    assert accepted_options(name, ALL_OPTIONS) == taken
    assert "run_strategy" not in entry(name).options  # the catalogue binds it; no user sets it


@pytest.mark.parametrize("bad", ["", "beam", "Majority", None, ["majority"]])
def test_an_unknown_strategy_names_the_known_ones(bad):
    with pytest.raises(ValueError, match="unknown strategy .*choose from majority"):
        entry(bad)


def test_the_run_spec_reaches_the_engine(fake_factory):
    gen = fake_factory(["7"])
    run_strategy(
        "majority", PROBLEM, gen, LogProbScorer(), 2, RunSpec(SamplingParams(max_tokens=9, seed=5), "Be brief.")
    )
    prompts, n, params = gen.calls[-1]
    assert n == 2 and params.max_tokens == 9 and params.seed == 5
    assert prompts[0].messages[0] == ("system", "Be brief.")


def test_compute_optimal_runs_the_search_its_policy_names_through_the_catalogue(fake_factory):
    policy = Policy(table={f"{b}|8": {"strategy": "beam_search", "beam_width": 2} for b in range(4)}, probe_n=2)
    gen = fake_factory(["7", "8"])  # the probe disagrees: no early stop
    r = run_strategy("compute_optimal", PROBLEM, gen, LogProbScorer(), 8, SPEC, {"policy": policy})
    assert r.outcome["strategy"] == "beam_search" and r.outcome["choice"] == {"beam_width": 2}
    assert len(r.candidates) > 2  # the probe's samples and the search's finalists vote together
