import math

import pytest

from ttscale.core import Candidate, Problem, SamplingParams, Step, aggregate
from ttscale.strategies import (
    POOL_STRATEGIES,
    STRATEGIES,
    best_of_n,
    majority,
    pick_best,
    pick_majority,
    pick_weighted,
    weighted_best_of_n,
)
from ttscale.strategies.spec import RunSpec
from ttscale.testing import FakeGenerator
from ttscale.verifiers.model_free import LogProbScorer, SelfCertaintyScorer
from ttscale.verifiers.registry import make_scorer

PROBLEM = Problem(id="p1", question="What is 6 times 7?", gold="42")


def test_majority_counts_and_breaks_ties_by_first_seen():
    assert pick_majority([0, 1, 1, None, 0, 1], [0.0] * 6) == 1
    assert pick_majority([2, 0, 0, 2], [0.0] * 4) == 0  # tie: class 2 appears first
    assert pick_majority([None, None], [1.0, 1.0]) is None


def test_weighted_sums_scores_per_class_and_returns_best_member():
    groups = [0, 1, 1, 1]
    scores = [0.9, 0.2, 0.25, 0.3]  # class 0 total 0.9 > class 1 total 0.75
    assert pick_weighted(groups, scores) == 0
    scores = [0.6, 0.2, 0.5, 0.3]  # class 1 total 1.0 wins, its best member is index 2
    assert pick_weighted(groups, scores) == 2


def test_best_ignores_candidates_without_an_answer():
    assert pick_best([None, 0, 1], [0.99, 0.5, 0.7]) == 2
    assert pick_best([None], [1.0]) is None


def test_aggregations():
    s = [0.9, 0.5, 0.8]
    assert aggregate(s, "last") == 0.8
    assert aggregate(s, "min") == 0.5
    assert math.isclose(aggregate(s, "prod"), 0.36)
    assert math.isclose(aggregate(s, "mean"), 2.2 / 3)
    with pytest.raises(ValueError):
        aggregate(s, "median")


def test_logprob_scores_are_per_step_geometric_mean_probabilities():
    c = Candidate("a\n\nb", [Step("a", 2, -0.2, -0.15, 1.0), Step("b", 1, -1.0, -1.0, 3.0)])
    scores, compute = LogProbScorer().score(PROBLEM, [c])
    assert scores[0] == pytest.approx([math.exp(-0.1), math.exp(-1.0)])
    assert compute.verifier_tokens == 0
    sc, _ = SelfCertaintyScorer().score(PROBLEM, [c])
    assert sc[0] == pytest.approx([0.5, 3.0])
    with pytest.raises(ValueError):
        make_scorer("nope")


def _fake(answers, confident):
    """Sample j answers answers[j]; the confident answer's tokens get high log-probabilities."""

    def script(prompt, seed):
        a = answers[seed % 100]
        return f"Think.\n\nTherefore, the final answer is $\\boxed{{{a}}}$."

    def logprob(piece):
        return -0.01 if confident in piece else -1.0

    return FakeGenerator(script, logprob)


def test_strategies_disagree_where_they_should():
    # 42 is the majority; 41 is the single most confident sample.
    gen = _fake(["42", "42", "41", "6*7"], confident="{41}")
    params = SamplingParams(max_tokens=64, seed=0)
    scorer = LogProbScorer()
    maj = majority(PROBLEM, gen, scorer, 4, spec=RunSpec(params))
    assert maj.answer == "42"
    # "6*7" is equivalent to 42: three votes, not two
    assert sum(c.answer in ("42", "6*7") for c in maj.candidates) == 3
    best = best_of_n(PROBLEM, gen, scorer, 4, spec=RunSpec(params, aggregation="last"))
    assert best.answer == "41"
    wbon = weighted_best_of_n(PROBLEM, gen, scorer, 4, spec=RunSpec(params, aggregation="last"))
    assert wbon.answer in ("42", "6*7")
    for r in (maj, best, wbon):
        assert len(r.candidates) == 4
        assert r.compute.generated_tokens == sum(c.n_tokens for c in r.candidates) > 0
        assert r.compute.prompt_tokens + r.compute.cached_prompt_tokens > 0
        assert r.settings["sampling"]["seed"] == 0
        assert all(len(c.step_scores) == len(c.steps) == 2 for c in r.candidates)


def test_one_generate_call_per_strategy_with_n_samples_in_one_batch():
    gen = _fake(["1", "2"], confident="x")
    majority(PROBLEM, gen, LogProbScorer(), 2, spec=RunSpec(SamplingParams(max_tokens=32)))
    assert len(gen.calls) == 1
    prompts, n, _ = gen.calls[0]
    assert len(prompts) == 1 and n == 2


def test_registry_lists_every_pool_strategy():
    assert set(STRATEGIES) == set(POOL_STRATEGIES)


def test_truncated_solution_without_boxed_answer_has_no_answer():
    gen = FakeGenerator(lambda p, s: "We compute 5 then 6 then 7 and so on forever " * 10)
    r = majority(PROBLEM, gen, LogProbScorer(), 1, spec=RunSpec(SamplingParams(max_tokens=10)))
    assert r.candidates[0].finish_reason == "length"
    assert r.candidates[0].answer is None and r.answer is None


def test_a_candidate_with_hidden_states_serialises_without_them():
    import json

    import numpy as np

    c = Candidate("a\n\nb", [Step("a", 2, hidden=np.ones(4, np.float32)), Step("b", 1, hidden=np.zeros(4))])
    d = json.loads(json.dumps(c.to_dict()))
    assert [s["text"] for s in d["steps"]] == ["a", "b"] and all("hidden" not in s for s in d["steps"])
    assert Candidate.from_dict(d).steps[1].n_tokens == 1
