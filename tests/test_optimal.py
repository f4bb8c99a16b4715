import json

import pytest

from ttscale.core import Problem, SamplingParams
from ttscale.evaluation.policy import fit_policy
from ttscale.strategies import Policy, agreement, compute_optimal
from ttscale.strategies.spec import RunSpec
from ttscale.testing import FakeGenerator
from ttscale.verifiers.model_free import LogProbScorer

PARAMS = SamplingParams(max_tokens=64)


def answering(answers):
    return FakeGenerator(
        lambda p, seed: f"Work.\n\nTherefore, the final answer is $\\boxed{{{answers[seed % 100 % len(answers)]}}}$."
    )


def test_agreement():
    assert agreement(["1", "1", "1", "1"]) == 1.0
    assert agreement(["1", "0.5", "1/2", None]) == 0.5
    assert agreement([None, None]) == 0.0


def test_easy_problem_stops_early_and_reports_the_saving():
    gen = answering(["7"])
    r = compute_optimal(Problem("p", "3+4?", "7"), gen, LogProbScorer(), 16, spec=RunSpec(PARAMS))
    assert r.answer == "7" and len(r.candidates) == 4
    assert r.outcome["stopped_early"] and r.outcome["saved_budget"] == 12
    assert len(gen.calls) == 1 and gen.calls[0][1] == 4


def test_hard_problem_spends_the_rest_as_the_policy_says_and_reuses_the_probe():
    policy = Policy(table={"2|8": {"strategy": "majority"}, "3|8": {"strategy": "beam_search", "beam_width": 2}})
    gen = answering(["7", "7", "3", "5"])  # 2 of 4 agree: bin 2
    r = compute_optimal(Problem("p", "3+4?", "7"), gen, LogProbScorer(), 8, policy=policy, spec=RunSpec(PARAMS))
    assert r.outcome["difficulty"] == 2 and r.outcome["strategy"] == "majority"
    assert len(r.candidates) == 8  # 4 probe samples + 4 more
    assert sum(call[1] for call in gen.calls) == 8
    # the table may spend less than the budget: 6 of 8 samples, 2 saved
    cheap = Policy(table={"2|8": {"strategy": "majority", "n": 6}})
    gen = answering(["7", "7", "3", "5"])
    r = compute_optimal(Problem("p", "3+4?", "7"), gen, LogProbScorer(), 8, policy=cheap, spec=RunSpec(PARAMS))
    assert len(r.candidates) == 6 and r.outcome["saved_budget"] == 2 and r.outcome["stopped_early"]
    gen = answering(["1", "2", "3", "4"])  # no agreement: bin 3, a beam search with the rest
    r = compute_optimal(Problem("p", "3+4?", "7"), gen, LogProbScorer(), 8, policy=policy, spec=RunSpec(PARAMS))
    assert r.outcome["strategy"] == "beam_search" and r.outcome["choice"] == {"beam_width": 2}
    # pruned branches cost tokens too: compute counts more than the final candidates hold
    assert r.compute.generated_tokens >= sum(c.n_tokens for c in r.candidates)


def test_policy_falls_back_to_the_nearest_smaller_budget_then_the_default(tmp_path):
    policy = Policy(table={"1|4": {"strategy": "best_of_n"}, "1|16": {"strategy": "dvts"}})
    assert policy.choose(1, 8) == {"strategy": "best_of_n"}
    assert policy.choose(1, 32) == {"strategy": "dvts"}
    assert policy.choose(0, 8) == policy.default
    policy.save(tmp_path / "p.json")
    assert Policy.load(tmp_path / "p.json") == policy


def pool_record(pid, answers, gold="7"):
    return {
        "id": pid,
        "candidates": [
            {
                "answer": a,
                "correct": a == gold,
                "steps": [{"text": "x", "n_tokens": 10}],
                "scores": {"logprob": [0.9 if a == "9" else 0.5]},
            }
            for a in answers
        ],
    }


def test_fit_picks_the_best_strategy_per_difficulty():
    # easy problems (all agree, right); hard ones where a confident wrong "9" fools best_of_n
    # but a search run got them right
    records = [pool_record(f"e{k}", ["7"] * 8) for k in range(3)]
    records += [pool_record(f"h{k}", ["1", "2", "9", "7", "9", "9", "3", "7"]) for k in range(3)]
    records += [
        {
            "kind": "search",
            "id": f"h{k}",
            "strategy": "dvts",
            "n": 8,
            "correct": steered_by == "logprob",
            "compute": {"generated_tokens": 80},
            "settings": {"scorer": steered_by, "aggregation": "mean"},
        }
        for k in range(3)
        for steered_by in ("logprob", "probe")  # the probe-steered runs are not this policy's
    ]
    policy = fit_policy(records, [8], probe_n=4)
    assert policy.meta["per_bin"] == {"0": 3, "3": 3}
    assert policy.table["3|8"] == {"strategy": "dvts"}
    assert policy.table["0|8"]["strategy"] in ("majority", "best_of_n", "weighted_best_of_n")
    assert policy.table["0|8"]["n"] == 4  # on easy problems the probe's four samples do as well as eight
    json.dumps(policy.__dict__)  # saveable
    lax = fit_policy(records, [8], probe_n=4, tolerance=1.0)  # any accuracy will do: the cheapest wins
    assert lax.table["3|8"]["n"] == 4 and lax.meta["tolerance"] == 1.0
    by_probe = fit_policy(records, [8], probe_n=4, scorer="probe")  # its dvts runs were all wrong
    assert by_probe.table["3|8"]["strategy"] != "dvts"
    pools_only = fit_policy(records, [8], probe_n=4, strategies=["majority", "weighted_best_of_n"])
    assert {e["strategy"] for e in pools_only.table.values()} <= {"majority", "weighted_best_of_n"}


def test_compute_optimal_in_eval(tmp_path):
    from ttscale.evaluation import EvalConfig, run_eval

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "a", "question": "3+4?", "answer": "7"}) + "\n")
    cfg = EvalConfig(dataset=str(data), ns=(8,), model="fake", strategies=("compute_optimal",), sampling=PARAMS)
    report = run_eval(cfg, lambda: answering(["7"]), tmp_path / "run", progress=False, n_boot=5)
    assert [(p.strategy, p.accuracy) for p in report.points if p.strategy == "compute_optimal"] == [
        ("compute_optimal", 1.0)
    ]


@pytest.mark.parametrize("bad", ["nope.json"])
def test_missing_policy_file(bad):
    with pytest.raises(FileNotFoundError):
        compute_optimal(Problem("p", "q"), answering(["1", "2"]), LogProbScorer(), 8, policy=bad, spec=RunSpec(PARAMS))


def test_replayed_compute_optimal_stops_early_on_agreement_and_follows_the_table():
    import numpy as np

    from ttscale.evaluation.curves import PoolProblem
    from ttscale.evaluation.policy import replay_compute_optimal

    easy = PoolProblem(groups=[0] * 16, correct=np.ones(16, bool), scores=[0.5] * 16, tokens=np.full(16, 10.0))
    # hard: four answer classes; the right one (class 3) is rare but always scored highest
    groups = [0, 1, 2] * 5 + [3]
    hard = PoolProblem(
        groups=groups,
        correct=np.array([g == 3 for g in groups]),
        scores=[1.0 if g == 3 else 0.1 for g in groups],
        tokens=np.full(16, 10.0),
    )
    policy = Policy(table={f"{b}|{n}": {"strategy": "best_of_n"} for b in range(4) for n in (8, 16)})
    points, spending = replay_compute_optimal([easy, hard], policy, [4, 8, 16], n_boot=50)
    at = {p.n: p for p in points}
    assert spending["16"]["stopped_early"] == pytest.approx(0.5)  # the easy problem, every time
    assert spending["16"]["budget_used"] == pytest.approx((4 / 16 + 1) / 2)
    assert at[16].generated_tokens == pytest.approx((40 + 160) / 2)
    assert at[16].accuracy == pytest.approx(1.0)  # best_of_n finds the lone right sample at n=16
    # n=4 is the probe alone, picked by the policy's default (weighted BoN): the hard problem is
    # right when its lone right sample is among the four drawn (1/4 of draws)
    assert 0.55 <= at[4].accuracy <= 0.7
    # a table that says a smaller budget does as well spends only that much
    policy.table.update({f"{b}|16": {"strategy": "best_of_n", "n": 8} for b in range(4)})
    points, spending = replay_compute_optimal([hard], policy, [16], n_boot=50)
    # (rarely the four probe samples agree and it stops at four)
    assert spending["16"]["budget_used"] == pytest.approx(0.5, abs=0.02)
    assert points[0].generated_tokens == pytest.approx(80.0, abs=2.0)
    with pytest.raises(ValueError, match="run compute_optimal live"):
        replay_compute_optimal([easy], Policy(table={"0|8": {"strategy": "beam_search"}}), [8])


def test_difficulty_from_the_verifier_uses_calibration_quartiles_and_steers_the_replay():
    import numpy as np

    from ttscale.evaluation.curves import PoolProblem
    from ttscale.evaluation.policy import replay_compute_optimal

    # calibration: problems whose first samples score high are easy; low-scored ones hard
    records = [pool_record(f"e{k}", ["9"] * 8, gold="9") for k in range(4)]  # "9" scores 0.9
    records += [pool_record(f"h{k}", ["1", "2", "3", "7", "4", "5", "6", "7"]) for k in range(4)]  # 0.5
    policy = fit_policy(records, [8], probe_n=4, signal="verifier")
    assert policy.signal == "verifier" and len(policy.bins) == 3
    assert policy.bin(0.9) == 0 and policy.bin(0.5) == 2 and policy.meta["per_bin"] == {"0": 4, "2": 4}
    # in the replay, a problem is binned by its probe samples' mean score, not their agreement:
    # they agree on a wrong answer, but score low, so the hard bin's best_of_n finds the right one
    agreeing_but_low = PoolProblem(
        groups=[0] * 7 + [1],
        correct=np.array([False] * 7 + [True]),
        scores=[0.5] * 7 + [0.56],
        tokens=np.full(8, 5.0),
    )
    policy.table = {"2|8": {"strategy": "best_of_n"}, "0|8": {"strategy": "majority"}, "1|8": {"strategy": "majority"}}
    policy.stop_agreement = 2.0  # never stop early here
    points, _ = replay_compute_optimal([agreeing_but_low], policy, [8], n_boot=20)
    assert points[0].accuracy == 1.0 and points[0].generated_tokens == pytest.approx(40.0)
    policy.signal = "agreement"
    points, _ = replay_compute_optimal([agreeing_but_low], policy, [8], n_boot=20)
    assert points[0].accuracy == 0.0
    with pytest.raises(ValueError, match="difficulty signal"):
        fit_policy(records, [8], signal="vibes")
