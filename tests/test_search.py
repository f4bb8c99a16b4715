"""Bookkeeping of the tree searches, pinned with a scripted engine and a scripted verifier."""

import re

import pytest

from ttscale.core import Compute, Problem, SamplingParams
from ttscale.strategies.search import Search, _systematic, beam_search, dvts, particle_filter
from ttscale.strategies.spec import RunSpec
from ttscale.testing import FakeGenerator

PROBLEM = Problem("p", "Find x.", gold="7")
PARAMS = SamplingParams(max_tokens=400, seed=0)


class StepScorer:
    """Scores each step by a number written in it: 'q=0.8' scores 0.8; otherwise 0.5."""

    name = "scripted"

    def __init__(self):
        self.calls = 0

    def score(self, problem, candidates):
        self.calls += 1
        out = []
        for c in candidates:
            out.append(
                [float(m.group(1)) if (m := re.search(r"q=([0-9.]+)", s.text)) else 0.5 for s in c.steps] or [0.0]
            )
        return out, Compute(verifier_tokens=sum(len(c.steps) for c in candidates))


def depth(prompt):
    return prompt.partial.count("\n\n")


def test_beam_search_keeps_the_best_beams_and_never_returns_more_than_n():
    # sample j writes quality j/10; every solution finishes at depth 2
    def script(prompt, seed):
        j = seed % 100
        if depth(prompt) >= 2:
            return f"Done q=0.{j % 10} so \\boxed{{{j % 3}}}."
        return f"Step {depth(prompt)} by sample {j} q=0.{j % 10}\n\nrest"

    n, m = 8, 4
    r = beam_search(PROBLEM, FakeGenerator(script), StepScorer(), n, beam_width=m, spec=RunSpec(PARAMS), dedup=False)
    assert len(r.candidates) <= n
    trace = r.trace
    # the first iteration sampled n children of the root; the kept ones are the n/m best
    first = [t for t in trace if t["parent"] == 0]
    assert len(first) == n
    kept = sorted((t for t in first if t["status"] != "pruned"), key=lambda t: -t["score"])
    pruned = [t for t in first if t["status"] == "pruned"]
    assert len(kept) == n // m
    assert min(t["score"] for t in kept) >= max(t["score"] for t in pruned)
    # every second-level node descends from a kept first-level node
    kept_ids = {t["id"] for t in kept}
    assert all(t["parent"] in kept_ids for t in trace if t["parent"] in {f["id"] for f in first})
    assert r.compute.verifier_tokens > 0
    assert set(r.outcome["picks"]) == {"majority", "best_of_n", "weighted_best_of_n"}


def test_beam_search_caps_completions_at_n():
    # half the first candidates finish, then all 8 of the second iteration: 12 completions in all
    def script(prompt, seed):
        if depth(prompt) == 0 and seed % 2 == 0:
            return "go q=0.5\n\nx"
        return f"\\boxed{{{seed % 5}}}\n\nx"

    r = beam_search(PROBLEM, FakeGenerator(script), StepScorer(), 8, beam_width=2, spec=RunSpec(PARAMS), dedup=False)
    assert len([t for t in r.trace if t["finish_reason"]]) == 12
    assert len(r.candidates) == 8
    assert all(c.finish_reason == "answer" for c in r.candidates)


def test_lookahead_scores_decide_the_pruning():
    # 'trap' looks best now (0.9) but its greedy continuation scores 0.1;
    # 'slow' looks worse (0.6) but continues to 0.95
    def script(prompt, seed):
        if "trap" in prompt.partial:
            return "doom q=0.1\n\nx"
        if "slow" in prompt.partial:
            return "win q=0.95\n\nx"
        return "trap q=0.9\n\nx" if seed % 2 == 0 else "slow q=0.6\n\nx"

    def first_kept(lookahead):
        r = beam_search(
            PROBLEM,
            FakeGenerator(script),
            StepScorer(),
            4,
            beam_width=4,
            max_iterations=2,
            lookahead=lookahead,
            spec=RunSpec(PARAMS),
            dedup=True,
        )
        level1 = [t for t in r.trace if t["parent"] == 0 and t["status"] != "duplicate"]
        return [t["step"].split()[0] for t in level1 if t["status"] != "pruned"]

    assert first_kept(0) == ["trap"]
    assert first_kept(1) == ["slow"]


def test_dedup_drops_identical_beams():
    r = beam_search(
        PROBLEM,
        FakeGenerator(lambda p, s: "same step\n\nx"),
        StepScorer(),
        8,
        beam_width=2,
        max_iterations=2,
        spec=RunSpec(PARAMS),
        dedup=True,
    )
    level1 = [t for t in r.trace if t["parent"] == 0]
    assert sum(t["status"] == "duplicate" for t in level1) == 7


def test_dvts_subtrees_stay_independent():
    def script(prompt, seed):
        if depth(prompt) >= 2:
            return f"end q=0.{seed % 10} \\boxed{{1}}"
        return f"s{depth(prompt)}-{seed % 100} q=0.{seed % 10}\n\nx"

    n, m = 8, 2
    r = dvts(PROBLEM, FakeGenerator(script), StepScorer(), n, beam_width=m, spec=RunSpec(PARAMS))
    assert r.outcome["subtrees"] == n // m
    parent = {t["id"]: t["parent"] for t in r.trace}

    def lineage(node_id):
        chain = []
        while node_id is not None:
            chain.append(node_id)
            node_id = parent[node_id]
        return chain

    finals = [t["id"] for t in r.trace if t["status"] in ("final", "chosen")]
    assert len(finals) == n // m
    branches = [set(lineage(f)[:-1]) for f in finals]  # without the shared root
    for i in range(len(branches)):
        for j in range(i + 1, len(branches)):
            assert not branches[i] & branches[j]
    # each subtree expanded exactly m children of its chosen node at every level
    children: dict[int, int] = {}
    for t in r.trace:
        if t["parent"] is not None and t["parent"] != 0:
            children[t["parent"]] = children.get(t["parent"], 0) + 1
    assert set(children.values()) == {m}


def test_particle_filter_finished_particles_stay_finished():
    # half the particles finish at the first step with a poor score; the rest continue
    def script(prompt, seed):
        j = seed % 1000 // 100  # FakeGenerator: the prompt (particle) index
        if depth(prompt) == 0:
            return f"quit q=0.05 \\boxed{{{j}}}" if j % 2 else f"go q=0.{5 + j % 4}\n\nx"
        if depth(prompt) >= 2:
            return "finish q=0.9 \\boxed{7}"
        return f"more q=0.{1 + j % 8}\n\nx"

    n = 8
    r = particle_filter(PROBLEM, FakeGenerator(script), StepScorer(), n, spec=RunSpec(PARAMS), ess_threshold=0.99)
    trace = {t["id"]: t for t in r.trace}
    quitters = [t for t in r.trace if t["step"].startswith("quit")]
    assert len(quitters) == n // 2
    for q in quitters:
        assert q["status"] in ("final", "chosen")
        assert not any(t["parent"] == q["id"] for t in r.trace)  # never extended, never revived
    assert r.outcome["resamples"] >= 1
    assert len(r.candidates) == n
    assert r.answer == "7"  # the highest weight is a 0.9 finisher
    assert sum(trace[i]["status"] in ("final", "chosen") for i in trace) == n
    assert sum(trace[i]["status"] == "chosen" for i in trace) == 1


def test_systematic_resampling():
    import numpy as np

    rng = np.random.default_rng(0)
    idx = _systematic(np.array([0.0, 1.0, 0.0, 0.0]), rng)
    assert idx == [1, 1, 1, 1]
    idx = _systematic(np.array([0.5, 0.5]), rng)
    assert sorted(idx) == [0, 1]


def test_children_continue_their_parents_text():
    seen = []

    def script(prompt, seed):
        seen.append(prompt.partial)
        return "next q=0.5\n\nx" if depth(prompt) < 2 else "\\boxed{1}"

    s = Search(PROBLEM, FakeGenerator(script), StepScorer(), RunSpec(PARAMS))
    root = s.root()
    (kids,) = s.expand([root], 2)
    (grand,) = s.expand([kids[0]], 1)
    assert seen[-1] == "next q=0.5\n\n"
    assert grand[0].text == "next q=0.5\n\nnext q=0.5"
    assert [st.text for st in grand[0].steps] == ["next q=0.5", "next q=0.5"]


@pytest.mark.parametrize("fn", [beam_search, dvts, particle_filter])
def test_same_seed_same_search(fn):
    def script(prompt, seed):
        return f"a{seed % 7} q=0.{seed % 9}\n\nb" if depth(prompt) < 2 else f"\\boxed{{{seed % 3}}}"

    a = fn(PROBLEM, FakeGenerator(script), StepScorer(), 4, spec=RunSpec(PARAMS))
    b = fn(PROBLEM, FakeGenerator(script), StepScorer(), 4, spec=RunSpec(PARAMS))
    assert [c.text for c in a.candidates] == [c.text for c in b.candidates]
    assert a.answer == b.answer
