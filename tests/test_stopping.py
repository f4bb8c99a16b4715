"""Votes that spend less: Borda voting, and ESC and adaptive majority, which stop sampling
once the answer is settled; replayed on stored pools, and live."""

import numpy as np
import pytest

from ttscale.core import Problem, SamplingParams
from ttscale.evaluation.curves import PoolProblem, curves
from ttscale.strategies.catalogue import run_strategy
from ttscale.strategies.picks import leader_is_settled, pick_borda, replay, stopping, window_agrees
from ttscale.strategies.spec import RunSpec
from ttscale.testing import FakeGenerator
from ttscale.verifiers.model_free import LogProbScorer

BORDA = [
    # (groups, scores, power, pick)
    ([0, 1, 1], [0.9, 0.5, 0.4], 1.0, 0),  # ranks 1, 2, 3 give 3, 2, 1 votes: 3 against 2 + 1
    ([0, 1, 1], [0.9, 0.5, 0.4], 0.5, 1),  # sqrt: 1.73 against 1.41 + 1
    ([0, 1, None], [0.1, 0.2, 0.9], 1.0, 1),  # a candidate without an answer neither ranks nor votes
    ([None, None], [0.5, 0.5], 1.0, None),
    ([0, 0, 2], [0.2, 0.3, 0.9], 1.0, 1),  # the winning answer's best-scored member
]


@pytest.mark.parametrize(("groups", "scores", "power", "want"), BORDA)
def test_borda_votes_by_rank(groups, scores, power, want):
    assert pick_borda(groups, scores, power) == want


SETTLED = [
    # (groups so far, settled by the Beta rule at 0.95)
    ([0, 0], False),  # P = 7/8
    ([0, 0, 0], False),  # 15/16
    ([0, 0, 0, 0], True),  # 31/32
    ([0, 0, 0, 0, 1], False),  # one dissent: 57/64
    ([0] * 6 + [1], True),
    ([None, None, None, None], False),
    ([0, 1, 0, 1, 0, 1, 0, 1], False),
]


@pytest.mark.parametrize(("groups", "settled"), SETTLED)
def test_the_beta_rule_waits_for_a_clear_leader(groups, settled):
    assert leader_is_settled(groups) is settled


CONFIDENT = [
    # (groups so far, each one's mean self-certainty, stops at gate 0.6 under threshold 0.95)
    ([0, 0, 1, 2], [3.0, 3.0, 1.0, 1.0], True),  # 2 votes to 1 (0.6875 >= 0.6), the leader surer
    ([0, 0, 1, 2], [1.0, 1.0, 3.0, 3.0], False),  # the same lead, the leader less sure
    ([0, 0, 1, 2], [2.0, 2.0, 2.0, 2.0], False),  # equally sure: not more self-certain
    ([0, 1, 2, 3], [9.0, 1.0, 1.0, 1.0], False),  # 1 vote to 1 (0.5) is below any gate
    ([0, 0, 0, 0, 0], [0.1, 0.1, 0.1, 0.1, 0.1], True),  # the Beta rule alone (63/64)
    ([0, 0, None, None], [1.0, 1.0, 5.0, 5.0], True),  # no other answer to be surer than
    ([None, None], [1.0, 1.0], False),
]


@pytest.mark.parametrize(("groups", "certainty", "stops"), CONFIDENT)
def test_a_weaker_lead_stops_only_when_the_leader_is_the_more_self_certain(groups, certainty, stops):
    from ttscale.strategies.picks import leader_is_confident

    assert leader_is_confident(groups, certainty, threshold=0.95, gate=0.6) is stops


def test_the_confidence_gate_is_replayed_from_each_samples_certainty():
    groups, sure, unsure = [0, 1, 0, 2, 3, 3, 3, 3], [3.0, 1.0, 3.0, 1.0] + [1.0] * 4, [1.0, 3.0, 1.0, 3.0] + [1.0] * 4
    assert replay("adaptive_confident", groups, [0.0] * 8, None, sure) == (0, 4)
    assert replay("adaptive_confident", groups, [0.0] * 8, None, unsure) == (4, 8)  # 3 wins in the end
    assert replay("adaptive_confident", [0, 0, 1, 1], [0.0] * 4, None, [1.0] * 4) == (0, 2)  # 2 of 2 (7/8) alone
    assert replay("adaptive_confident", groups, [0.0] * 8, {"confidence_gate": 0.7}, sure) == (4, 8)
    with pytest.raises(ValueError, match="must not exceed"):
        stopping("adaptive_confident", {"confidence_gate": 0.9, "adaptive_threshold": 0.8})
    with pytest.raises(ValueError, match="confidence_gate"):
        stopping("adaptive_confident", {"confidence_gate": 0.3})
    # a stored pool carries each sample's certainty from its steps
    from ttscale.evaluation.curves import pool_from_record

    steps = [{"n_tokens": 4, "certainty_sum": 8.0}, {"n_tokens": 4, "certainty_sum": 0.0}]
    record = {"compute": {"flops": 0, "wall_time": 0}, "candidates": [{"answer": "1", "scores": {}, "steps": steps}]}
    assert pool_from_record(record, "logprob", "mean").certainty == [1.0]


def test_esc_stops_at_the_first_window_that_agrees():
    assert window_agrees([3, 3, 3, 3]) and not window_agrees([3, 3, 1, 3]) and not window_agrees([None] * 4)
    esc = stopping("esc")
    assert esc.stop_at([0, 1, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0]) == 8  # the second window agrees
    assert esc.stop_at([0, 1, 0, 0, 2, 2, 2, 1]) == 8  # none does: the whole budget
    assert esc.stop_at([0, 0, 0, 0]) == 4  # a window as large as the budget reads it all
    assert replay("esc", [5, 5, 5, 5, 1, 1, 1, 1], [0.0] * 8) == (0, 4)
    assert replay("adaptive_majority", [2, 2, 2, 2, 1, 1], [0.0] * 6) == (0, 4)
    assert replay("majority", [2, 1, 1], [0.0] * 3) == (1, 3)
    # a run's options set the parameters: windows of 2, a looser Beta rule
    assert replay("esc", [5, 5, 5, 5, 1, 1, 1, 1], [0.0] * 8, {"esc_window": 2}) == (0, 2)
    assert replay("adaptive_majority", [2, 2, 2, 2, 1, 1], [0.0] * 6, {"adaptive_threshold": 0.7}) == (0, 2)
    with pytest.raises(ValueError, match="adaptive_threshold"):
        stopping("adaptive_majority", {"adaptive_threshold": 0.2})
    with pytest.raises(ValueError, match="esc_window"):
        stopping("esc", {"esc_window": 0})


def test_a_vote_that_stops_early_is_charged_only_what_it_read():
    # every sample of both problems agrees: adaptive majority stops after 4 of 8
    pools = [
        PoolProblem(groups=[0] * 8, correct=np.array([True] * 8), scores=[0.5] * 8, tokens=np.full(8, 10.0), flops=80.0)
        for _ in range(2)
    ]
    points = {(p.strategy, p.n): p for p in curves(pools, ["majority", "adaptive_majority", "esc"], n_boot=4)}
    assert points[("majority", 8)].generated_tokens == 80 and points[("majority", 8)].flops == 80
    assert points[("adaptive_majority", 8)].generated_tokens == 40 and points[("adaptive_majority", 8)].flops == 40
    assert points[("esc", 8)].generated_tokens == 40
    assert points[("adaptive_majority", 8)].accuracy == points[("majority", 8)].accuracy == 1.0


def test_live_stopping_samples_in_rounds_and_reports_what_it_saved():
    def script(prompt, seed):
        return "So.\n\nTherefore, the final answer is $\\boxed{7}$."

    gen = FakeGenerator(script)
    problem = Problem("p", "What is 3 plus 4?", gold="7")
    spec = RunSpec(SamplingParams(max_tokens=40, seed=2))
    r = run_strategy("adaptive_majority", problem, gen, LogProbScorer(), 16, spec)
    assert r.answer == "7" and len(r.candidates) == 4 and r.outcome == {"samples": 4, "samples_saved": 12}
    assert [call[1] for call in gen.calls] == [2, 2]  # two rounds of two
    assert len({call[2].seed for call in gen.calls}) == 2  # each round its own seed
    e = run_strategy("esc", problem, FakeGenerator(script), LogProbScorer(), 16, spec)
    assert len(e.candidates) == 4 and e.outcome["samples_saved"] == 12
    e2 = run_strategy("esc", problem, FakeGenerator(script), LogProbScorer(), 16, spec, {"esc_window": 2})
    assert len(e2.candidates) == 2
    # both of the first round agree (7/8 passes the gate) and no other answer is surer: it stops there
    c = run_strategy("adaptive_confident", problem, FakeGenerator(script), LogProbScorer(), 16, spec)
    assert len(c.candidates) == 2 and c.outcome == {"samples": 2, "samples_saved": 14}
    b = run_strategy("borda", problem, FakeGenerator(script), LogProbScorer(), 3, spec)
    assert b.answer == "7" and len(b.candidates) == 3


def test_trace_confidence_windows_and_tail():
    from ttscale.tasks.confidence import GROUP_WINDOW, TAIL_TOKENS, trace_confidence

    assert trace_confidence([]) == {}
    short = trace_confidence([1.0, 3.0])  # shorter than a window: one group
    assert short == {"lowest_group": 2.0, "tail": 2.0, "mean": 2.0}
    dip = [5.0] * 100 + [1.0] * GROUP_WINDOW + [5.0] * 100
    c = trace_confidence(dip)
    assert c["lowest_group"] == 1.0 and c["tail"] == 5.0 and c["mean"] > 4
    assert trace_confidence([0.0] * 10 + [2.0] * TAIL_TOKENS)["tail"] == 2.0


def test_confidence_verifiers_read_the_trace_or_fall_back_to_steps():
    from ttscale.core import Candidate, Step
    from ttscale.verifiers.model_free import LowestGroupConfidence, TailConfidence

    steps = [Step("a", n_tokens=2, certainty_sum=8.0), Step("b", n_tokens=2, certainty_sum=2.0)]
    stored = Candidate("a\n\nb", steps, answer="1")  # no token-level confidences: steps stand in
    live = Candidate("a\n\nb", steps, answer="1", confidence={"lowest_group": 0.5, "tail": 3.0, "mean": 2.5})
    problem = Problem("p", "q")
    assert LowestGroupConfidence().score(problem, [stored, live])[0] == [[1.0], [0.5]]
    assert TailConfidence().score(problem, [stored, live])[0] == [[1.0], [3.0]]


class _Replaying:
    """An engine that recomputes a stored text's token statistics: one certainty per character."""

    replays_certainties = True

    def __init__(self):
        self.replayed = []

    def replay(self, prompt, text, finish_reason="eos", certainties=False):
        from ttscale.core import Completion, Compute

        assert certainties
        self.replayed.append(text)
        values = [float(len(text))] * len(text)
        n = len(text)
        done = Completion(text, list(range(n)), [-0.1] * n, values, list(range(n)), finish_reason)
        return done, Compute(prompt_tokens=len(text), flops=2.0 * len(text), wall_time=0.5)


def test_an_old_pool_gets_real_token_confidences_by_replay_only_when_it_is_rescored():
    from ttscale.core import Candidate, Step
    from ttscale.verifiers.registry import make_scorer

    steps = [Step("a", n_tokens=2, certainty_sum=8.0), Step("b", n_tokens=2, certainty_sum=2.0)]
    stored = Candidate("abc", steps, answer="1")  # sampled before token confidences were kept
    live = Candidate("abcd", steps, answer="1", confidence={"lowest_group": 0.5, "tail": 3.0, "mean": 2.5})
    problem = Problem("p", "q")
    engine = _Replaying()
    group = make_scorer("conf_group", engine, stored=True)
    scores, spent = group.score(problem, [stored, live])
    assert scores == [[3.0], [0.5]] and engine.replayed == ["abc"]  # the live sample's own are kept
    # the same replay measures the tail confidence too: a rescore stores it, nothing replayed again
    tail = make_scorer("conf_tail", engine, stored=True)
    assert group.side_scores == {"conf_tail": tail.score(problem, [stored, live])[0]} and engine.replayed == ["abc"] * 2
    assert spent.verifier_tokens == 3 and spent.flops == 6.0 and spent.generated_tokens == 0
    # scoring live samples or a search's nodes: read at step level, no replay (it would cost a node's prefill)
    assert make_scorer("conf_group", engine).score(problem, [stored])[0] == [[1.0]] and engine.replayed == ["abc"] * 2
    # an engine that cannot replay (a server): step level, nothing charged
    scores, spent = make_scorer("conf_tail", object(), stored=True).score(problem, [stored])
    assert scores == [[1.0]] and spent.verifier_tokens == 0
    assert make_scorer("conf_tail", engine, stored=True).free_when_live  # live sampling measures them for free


def test_deepconf_votes_among_its_most_confident_traces():
    from ttscale.strategies.picks import pick_filtered

    groups = [0, 0, 0, 1, 1]
    scores = [0.1, 0.2, 0.1, 0.9, 0.8]
    assert replay("majority", groups, scores)[0] == 0
    assert pick_filtered(groups, scores, keep=0.4) == 3  # the two most confident both say 1
    assert pick_filtered(groups, scores, keep=0.1) == 3  # at least one is kept
    assert replay("deepconf_high", groups, scores)[0] == 3  # 5 kept: 0.4 against 1.7
    assert pick_filtered([None, None], [1.0, 1.0], keep=0.5) is None


def test_deepconf_online_stops_unconfident_samples_while_they_are_generated():
    from ttscale.strategies.deepconf import deepconf_online

    # the fake's certainty of a piece is -logprob: "hi" is confident (5), "lo" is not (0.1)
    def logprob(piece):
        return {"hi": -5.0, "lo": -0.1, "mid": -4.0}.get(piece.strip(), -1.0)

    def script(prompt, seed):
        first_call, j = seed // 1000 == 2, seed % 100  # the warm-up runs at the spec's seed, 2
        if first_call:
            word, answer = [("hi ", 7), ("mid ", 9), ("lo ", 8), ("lo ", 8)][j]
        else:
            word, answer = ("hi ", 7) if j < 2 else ("lo ", 8)
        return word * 40 + f"so $\\boxed{{{answer}}}$."

    gen = FakeGenerator(script, logprob=logprob)
    problem = Problem("p", "What is 3 plus 4?", gold="7")
    r = deepconf_online(problem, gen, LogProbScorer(), 12, RunSpec(SamplingParams(seed=2)), keep=0.5, round_size=4)
    assert r.answer == "7"
    floor = r.outcome["floor"]
    assert 0.1 < floor < 4.0  # between the warm-up's kept two and its unconfident two
    stopped = [c for c in r.candidates if c.finish_reason == "low_confidence"]
    assert r.outcome["stopped_early"] == len(stopped) == 4  # two per round, two rounds after the warm-up
    assert all(c.n_tokens == 32 and c.answer is None for c in stopped)  # stopped at the first full window
    assert len(r.candidates) == 12 and r.outcome["kept"] == 2 + 4
    assert r.compute.generated_tokens == sum(c.n_tokens for c in r.candidates)  # stopped tokens are charged
    assert all(call[2].confidence_floor == floor for call in gen.calls[1:]) and gen.calls[0][2].confidence_floor is None
    with pytest.raises(ValueError, match="cannot stop a sample by its confidence"):
        from ttscale.engines.openai import OpenAIGenerator

        OpenAIGenerator(["http://127.0.0.1:9"], "m").generate([], 1, SamplingParams(confidence_floor=1.0))


def test_deepconf_online_does_not_take_one_kept_sample_for_a_consensus():
    from ttscale.strategies.deepconf import deepconf_online

    def logprob(piece):  # the fake's certainty of a piece is -logprob
        return {"hi": -5.0, "lo": -0.1, "mid": -4.0}.get(piece.strip(), -1.0)

    def script(prompt, seed):
        j = seed % 100
        if seed // 1000 == 2:  # the warm-up: one confident sample among four
            word, answer = [("hi ", 7), ("mid ", 9), ("lo ", 8), ("lo ", 8)][j]
        else:
            word, answer = ("hi ", 7) if j < 2 else ("lo ", 8)
        return word * 40 + f"so $\\boxed{{{answer}}}$."

    problem = Problem("p", "What is 3 plus 4?", gold="7")
    spec = RunSpec(SamplingParams(seed=2))

    def run(**options):
        return deepconf_online(problem, FakeGenerator(script, logprob=logprob), LogProbScorer(), 16, spec, **options)

    alone = run(min_votes=1, round_size=4)
    assert len(alone.candidates) == 4 and alone.outcome["kept"] == 1  # the warm-up's best agreed with itself
    r = run(round_size=4)
    assert r.answer == "7" and len(r.candidates) == 8 and r.outcome["kept"] == 3 and r.settings["min_votes"] == 2
    whole = run()  # by default the rest of the budget in one batch, as DeepConf's online script
    assert whole.answer == "7" and len(whole.candidates) == 16 and whole.settings["round_size"] == 12
    with pytest.raises(ValueError, match="min_votes"):
        deepconf_online(problem, FakeGenerator(script), LogProbScorer(), 16, spec, min_votes=0)


def test_deepconf_high_online_is_asked_for_on_the_command_line():
    from ttscale.cli import build_parser
    from ttscale.cli.commands import _search_options
    from ttscale.strategies.catalogue import accepted_options

    parse = build_parser().parse_args
    given = _search_options(parse(["eval", "--strategy", "deepconf_online", "--deepconf-keep", "0.9"]))
    assert given["keep"] == 0.9 and accepted_options("deepconf_online", given) == {"keep": 0.9}
    assert "keep" not in accepted_options("beam_search", given)  # only the strategy that takes it
    assert "keep" not in _search_options(parse(["eval"]))  # stored runs keep their keys
    for bad in ("0", "1.5", "most"):
        with pytest.raises(SystemExit):
            parse(["eval", "--deepconf-keep", bad])


def test_a_confidence_floor_is_checked_and_kept_out_of_old_records():
    assert "confidence_floor" not in SamplingParams().to_dict()  # stored runs keep their identity
    assert SamplingParams(confidence_floor=0.5).to_dict()["confidence_floor"] == 0.5
    with pytest.raises(ValueError, match="confidence_floor"):
        SamplingParams(confidence_floor=-1.0)


def test_a_stopping_parameter_is_fitted_to_spend_least_within_the_tolerance():
    from ttscale.evaluation.stopping_fit import fit_stopping

    def pool(pid, answers, right):
        cands = [
            {"answer": a, "correct": a == right, "scores": {"logprob": [0.5]}, "steps": [{"n_tokens": 10}]}
            for a in answers
        ]
        return {"id": pid, "compute": {"flops": 1.0, "wall_time": 1.0}, "candidates": cands}

    # agreeing pools let every threshold stop early; the last pool's leader changes late
    records = [pool(f"p{k}", ["7"] * 8, "7") for k in range(3)] + [
        pool("late", ["1", "1", "2", "2", "2", "2", "2", "2"], "2")
    ]
    fit = fit_stopping(records, "adaptive_majority", 8, tolerance=0.0, n_boot=5)
    rows = {r["adaptive_threshold"]: r for r in fit["grid"]}
    assert rows[0.6]["token_share"] < rows[0.99]["token_share"] <= 1.0
    assert all(r["difference"] >= 0.0 for r in fit["grid"] if r["adaptive_threshold"] == fit["chosen"])
    assert fit["calibration_ids"] == ["p0", "p1", "p2", "late"] and fit["option"] == "adaptive_threshold"
    with pytest.raises(ValueError, match="not a stopping vote"):
        fit_stopping(records, "majority", 8)


def test_the_confidence_gate_is_fitted_under_a_fixed_threshold():
    from ttscale.evaluation.stopping_fit import fit_stopping

    sample = {"answer": "7", "correct": True, "scores": {"logprob": [0.5]}, "steps": [{"n_tokens": 10}]}
    cands = [dict(sample) for _ in range(4)]
    records = [{"id": "p", "compute": {"flops": 1.0, "wall_time": 1.0}, "candidates": cands}]
    fit = fit_stopping(records, "adaptive_confident", 4, n_boot=3, fixed={"adaptive_threshold": 0.8})
    assert fit["option"] == "confidence_gate" and fit["fixed"] == {"adaptive_threshold": 0.8}
    assert [r["confidence_gate"] for r in fit["grid"]] == [0.6, 0.65, 0.7, 0.8]  # the gate stays under 0.8
