import numpy as np
import pytest

from ttscale.evaluation.curves import PoolProblem, budgets, curves
from ttscale.evaluation.tables import quality_table, table


def pool(correct, groups=None, scores=None, tokens=100):
    n = len(correct)
    return PoolProblem(
        groups=groups if groups is not None else [0 if c else 1 + k for k, c in enumerate(correct)],
        correct=np.array(correct, dtype=bool),
        scores=scores or [0.5] * n,
        tokens=np.full(n, float(tokens)),
    )


def at(points, strategy, n):
    return next(p for p in points if p.strategy == strategy and p.n == n)


def test_budgets_are_powers_of_two_and_the_pool_size():
    assert budgets(8) == [1, 2, 4, 8]
    assert budgets(12) == [1, 2, 4, 8, 12]
    assert budgets(1) == [1]


def test_all_right_and_all_wrong_pools():
    pts = curves([pool([True] * 4), pool([False] * 4)], ["majority", "best_of_n"], n_boot=20)
    for s in ("majority", "best_of_n", "oracle"):
        for n in (1, 2, 4):
            assert at(pts, s, n).accuracy == pytest.approx(0.5)
    assert at(pts, "pass@1", 1).accuracy == pytest.approx(0.5)


def test_oracle_is_exact_any_right_rate():
    # one right sample in four: oracle@1 = 1/4, oracle@2 = 1/2, oracle@4 = 1
    pts = curves([pool([True, False, False, False])], ["majority"], n_boot=400, seed=1)
    assert at(pts, "oracle", 4).accuracy == 1.0
    assert at(pts, "oracle", 2).accuracy == pytest.approx(0.5, abs=0.08)
    assert at(pts, "oracle", 1).accuracy == pytest.approx(0.25, abs=0.08)


def test_majority_beats_single_sample_when_the_right_answer_is_most_common():
    # right answer (class 0) on 3 of 5 samples, the wrong ones all differ
    pools = [pool([True, True, True, False, False]) for _ in range(10)]
    pts = curves(pools, ["majority"], n_boot=50)
    assert at(pts, "majority", 5).accuracy == 1.0
    assert at(pts, "pass@1", 1).accuracy == pytest.approx(0.6)


def test_weighted_uses_scores():
    # class 1 (wrong, 2 votes, low score) vs class 0 (right, 1 vote, high score)
    p = pool([True, False, False], groups=[0, 1, 1], scores=[0.9, 0.2, 0.2])
    pts = curves([p], ["majority", "weighted_best_of_n", "best_of_n"], n_boot=10)
    assert at(pts, "majority", 3).accuracy == 0.0
    assert at(pts, "weighted_best_of_n", 3).accuracy == 1.0
    assert at(pts, "best_of_n", 3).accuracy == 1.0


def test_tokens_scale_with_budget_and_interval_brackets_estimate():
    pools = [pool([k % 2 == 0, True, False, False], tokens=50 + k) for k in range(12)]
    pts = curves(pools, ["majority"], n_boot=50)
    t1, t4 = at(pts, "majority", 1).generated_tokens, at(pts, "majority", 4).generated_tokens
    assert t4 == pytest.approx(4 * t1)
    for p in pts:
        assert p.ci_low <= p.accuracy + 1e-9 and p.accuracy <= p.ci_high + 1e-9
    md = table(pts)
    assert "| majority |" in md and "generated tokens / problem" in md


def test_verifier_quality_separates_pooled_and_within_problem_ranking():
    from ttscale.evaluation.quality import verifier_quality

    def rec(pairs):
        return {"candidates": [{"scores": {"v": [0.1, s]}, "correct": y} for s, y in pairs]}

    # within each problem the right sample scores higher, but problem 2's scores are all lower
    records = [rec([(0.9, True), (0.8, False)]), rec([(0.3, True), (0.2, False)]), rec([(0.5, True), (0.6, True)])]
    rows = {(r["scorer"], r["aggregate"]): r for r in verifier_quality(records)}
    last = rows[("v", "last")]
    assert last["auroc_within_problem"] == 1.0 and last["problems_with_both"] == 2
    assert 0.5 < last["auroc"] < 1.0 and last["solutions"] == 6


@pytest.mark.parametrize(
    ("answers", "shares"),
    [
        (["4", "4", "5", "4"], [0.75, 0.75, 0.25, 0.75]),
        (["4", "4.0", "5", None], [0.5, 0.5, 0.25, 0.0]),  # equal under math-verify; no answer votes nothing
        (["x", "y"], [0.5, 0.5]),
        ([None, None], [0.0, 0.0]),
    ],
)
def test_vote_share_is_each_samples_share_of_its_answer(answers, shares):
    from ttscale.evaluation.quality import vote_shares

    assert vote_shares([{"answer": a} for a in answers]) == pytest.approx(shares)


def test_the_quality_table_starts_with_the_vote_share_baseline():
    from ttscale.evaluation.quality import VOTE_SHARE, verifier_quality

    # the majority answer is right in problem 1 and wrong in problem 2
    p1 = [("7", True, 0.2), ("7", True, 0.1), ("8", False, 0.9)]
    p2 = [("3", False, 0.5), ("3", False, 0.4), ("2", True, 0.6)]
    records = [{"candidates": [{"answer": a, "correct": y, "scores": {"v": [s]}} for a, y, s in p]} for p in (p1, p2)]
    rows = verifier_quality(records)
    assert rows[0]["scorer"] == VOTE_SHARE
    assert rows[0]["auroc_within_problem"] == pytest.approx(0.5)  # 1.0 in problem 1, 0.0 in problem 2
    assert [r["scorer"] for r in rows[1:]] == ["v"] * 3 + ["v+vote"]
    # v ranks the right samples of problem 2 first and those of problem 1 last: 0.5 within;
    # every row beside the baseline carries its paired difference from it over the same problems
    v = rows[1]
    assert v["auroc_within_problem"] == pytest.approx(0.5) and v["vs_vote_share"]["difference"] == pytest.approx(0.0)
    assert v["ci_low"] <= v["auroc_within_problem"] <= v["ci_high"]
    assert "vs_vote_share" not in rows[0] and "_within" not in rows[0] and "_within" not in v
    # weighted votes: in problem 1 the wrong "8" (0.9) outweighs the right "7" (0.2 + 0.1), in
    # problem 2 the wrong "3" (0.5 + 0.4) outweighs the right "2" (0.6): both ranked wrong
    combined = rows[-1]
    assert combined["auroc_within_problem"] == pytest.approx(0.0)
    assert combined["vs_vote_share"]["difference"] == pytest.approx(-0.5)
    assert "| v+vote | last |" in quality_table(rows) and "minus vote share" in quality_table(rows)


@pytest.mark.parametrize(
    ("answers", "scores", "shares"),
    [
        (["4", "4", "5", "4"], [0.5, 0.5, 1.0, 0.2], [0.3, 0.3, 0.25, 0.3]),
        (["4", "4.0", None, "5"], [1.0, 1.0, 9.0, 0.5], [0.5, 0.5, 0.0, 0.125]),  # no answer collects nothing
        (["1", "2"], [-1.0, -3.0], [-0.5, -1.5]),  # raw sums, as weighted Best-of-N adds them
    ],
)
def test_weighted_vote_share_is_the_summed_score_of_each_samples_answer(answers, scores, shares):
    from ttscale.evaluation.quality import weighted_vote_shares

    assert weighted_vote_shares([{"answer": a} for a in answers], scores) == pytest.approx(shares)


def test_a_subset_is_charged_its_share_of_the_pools_flops_and_time():
    a = pool([True] * 4, tokens=100)
    a.flops, a.wall_time = 800.0, 8.0
    b = pool([False] * 4, tokens=50)
    b.flops, b.wall_time = 400.0, 2.0
    pts = curves([a, b], ["majority"], n_boot=10)
    assert at(pts, "majority", 4).flops == pytest.approx(600.0)  # the mean of the two whole pools
    assert at(pts, "majority", 2).flops == pytest.approx(300.0)
    assert at(pts, "majority", 1).wall_time == pytest.approx((2.0 + 0.5) / 2)
    assert at(pts, "pass@1", 1).flops == pytest.approx(150.0)


def test_a_rescored_verifier_is_charged_except_a_replay_of_the_policys_own_states():
    from ttscale.evaluation.curves import pool_from_record

    spent = {"flops": 7.0, "wall_time": 3.0}
    rec = {
        "compute": {"flops": 10.0, "wall_time": 1.0},
        "rescored": {
            "judge": {"flops": 5.0, "wall_time": 2.0},
            "probe": spent,
            "layers": spent,
            "layers@0123456789ab": {**spent, "free_when_live": True},  # another file on the policy's states
            "layers@ba9876543210": spent,  # a larger model's states: its replay is real work
        },
        "candidates": [{"answer": "1", "correct": True, "steps": [{"n_tokens": 3}], "scores": {"judge": [0.5]}}],
    }
    judged = pool_from_record(rec, "judge", "last")
    assert (judged.flops, judged.verifier_flops, judged.verifier_wall_time) == (10.0, 5.0, 2.0)
    for free in ("probe", "layers", "layers@0123456789ab"):
        assert pool_from_record(rec, free, "last").verifier_wall_time == 0.0
    assert pool_from_record(rec, "layers@ba9876543210", "last").verifier_flops == 7.0


def test_only_the_rules_that_read_a_rescored_verifier_pay_for_it():
    a = pool([True, False, True, False], tokens=100)
    a.flops, a.wall_time, a.verifier_flops, a.verifier_wall_time = 800.0, 8.0, 4000.0, 40.0
    pts = curves([a], ["majority", "weighted_best_of_n", "filter_vote", "adaptive_majority"], n_boot=10)
    # a vote over answers costs what the sampling did, whatever later read the pool
    for free in ("majority", "adaptive_majority", "oracle"):
        assert at(pts, free, 4).flops == pytest.approx(800.0)
    assert at(pts, "pass@1", 1).wall_time == pytest.approx(2.0)
    for paid in ("weighted_best_of_n", "filter_vote"):  # the verifier's share of the samples read
        assert at(pts, paid, 4).flops == pytest.approx(4800.0)
        assert at(pts, paid, 2).wall_time == pytest.approx(24.0)


def test_paired_differences_see_what_overlapping_intervals_hide():
    from ttscale.evaluation.curves import CurvePoint, paired_differences
    from ttscale.evaluation.tables import paired_table
    from ttscale.util.stats import problem_ci

    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 200).round()  # problems vary a lot...
    better = base.copy()
    better[:20] = 1.0  # ...but the other strategy is never worse and sometimes better
    better_ci = problem_ci(better)
    points = [
        CurvePoint("majority", 8, base.mean(), *problem_ci(base), 100.0, per_problem=base),
        CurvePoint("other", 8, better.mean(), *better_ci, 50.0, per_problem=better),
        CurvePoint("other", 4, better.mean(), *better_ci, 50.0, per_problem=better),  # no baseline at 4
    ]
    (row,) = paired_differences(points)
    assert row["strategy"] == "other" and row["n"] == 8 and row["token_ratio"] == 0.5
    assert row["difference"] == (better - base).mean() and 0 < row["ci_low"] <= row["difference"] <= row["ci_high"]
    assert better_ci[0] < base.mean()  # the two curves' own intervals overlap
    assert "*" in paired_table([row])
    # saved with the point, so that a run on the same problems pairs with it later (the headline)
    assert points[0].to_dict()["per_problem"] == base.tolist()


@pytest.mark.parametrize(
    ("tokens", "baseline_ns"),
    [
        (1000.0, [4]),  # exactly majority@4's tokens: one pairing
        (1001.0, [8, 4]),  # a token more: majority@4 would be given less, so @8 above and @4 below
        (1100.0, [8, 4]),
        (2000.0 * 0.85, [8, 4]),  # 15% under majority@8, at N=16: between @8 and @4
        (3000.0, [16, 8]),
        (100.0, [1]),  # less than majority's smallest budget: nothing below
        (9000.0, [16]),  # more than majority's largest budget: nothing above
    ],
)
def test_matched_tokens_set_majority_just_above_and_just_below_a_strategys_tokens(tokens, baseline_ns):
    from ttscale.evaluation.curves import CurvePoint, matched_token_differences
    from ttscale.evaluation.tables import paired_table

    rng = np.random.default_rng(1)
    hits = {n: rng.uniform(0, 1, 50) for n in (1, 2, 4, 8, 16)}
    points = [CurvePoint("majority", n, hits[n].mean(), 0, 1, 250.0 * n, per_problem=hits[n]) for n in hits]
    mine = rng.uniform(0, 1, 50)
    points.append(CurvePoint("early_stop", 16, mine.mean(), 0, 1, tokens, per_problem=mine))
    rows = matched_token_differences(points)
    assert [r["baseline_n"] for r in rows] == baseline_ns
    for row, n in zip(rows, baseline_ns, strict=True):
        assert row["strategy"] == "early_stop" and row["n"] == 16
        assert row["difference"] == pytest.approx((mine - hits[n]).mean())
        assert row["token_ratio"] == pytest.approx(tokens / (250.0 * n))
        assert f"| early_stop | 16 | {n} |" in paired_table([row])
    # majority above is never given fewer tokens, majority below never more
    assert all((r["token_ratio"] <= 1.0) == (250.0 * r["baseline_n"] >= tokens) for r in rows)


def test_matched_tokens_leave_out_what_spends_as_majority_does():
    from ttscale.evaluation.curves import CurvePoint, matched_token_differences

    hits = np.linspace(0, 1, 20)
    points = [CurvePoint("majority", n, 0.5, 0, 1, 100.0 * n, per_problem=hits) for n in (4, 8)]
    points += [
        CurvePoint("weighted", 8, 0.5, 0, 1, 810.0, per_problem=hits),  # within 10% of majority@8
        CurvePoint("oracle", 8, 0.9, 0, 1, 400.0, per_problem=hits),  # a bound, not a strategy
        CurvePoint("other_problems", 8, 0.5, 0, 1, 400.0, per_problem=hits[:10]),  # nothing to pair with
        CurvePoint("stopped", 8, 0.5, 0, 1, 380.0, per_problem=hits),
    ]
    assert [(r["strategy"], r["baseline_n"]) for r in matched_token_differences(points)] == [("stopped", 4)]


def test_views_with_other_strategy_lists_replay_the_same_subsets():
    # a compare view replays fewer rules over the same pool: the shared rule's points,
    # intervals and per-problem hits must not move with what else the view computes
    rng = np.random.default_rng(3)
    pools = [pool(list(rng.uniform(size=8) < 0.5), scores=list(rng.uniform(size=8)), tokens=50 + k) for k in range(30)]
    wide = curves(pools, ["majority", "best_of_n", "weighted_best_of_n"], n_boot=30, seed=7)
    narrow = curves(pools, ["weighted_best_of_n"], n_boot=30, seed=7)
    for n in (1, 2, 4, 8):
        a, b = at(wide, "weighted_best_of_n", n), at(narrow, "weighted_best_of_n", n)
        assert (a.accuracy, a.ci_low, a.ci_high) == (b.accuracy, b.ci_low, b.ci_high)
        assert np.array_equal(a.per_problem, b.per_problem)
        assert at(wide, "oracle", n).accuracy == at(narrow, "oracle", n).accuracy


@pytest.mark.parametrize("free", [True, False])
def test_a_rescore_marks_a_replay_that_live_sampling_would_not_pay(monkeypatch, free):
    from types import SimpleNamespace

    from ttscale.core import Compute, Problem
    from ttscale.engines.fake import FakeGenerator
    from ttscale.evaluation import run

    class Replaying:
        name = "layers@0123456789ab"
        free_when_live = free

        def score(self, problem, candidates):
            return [[0.5] for _ in candidates], Compute(verifier_tokens=9)

    monkeypatch.setattr(run, "make_scorer", lambda *args, **kwargs: Replaying())
    stored = {"text": "x", "steps": [{"text": "x", "n_tokens": 1}], "answer": "1", "scores": {"logprob": [-1.0]}}
    record = {"id": "p", "candidates": [stored]}
    out = run.rescore_pool(
        record, Problem("p", "q"), FakeGenerator(lambda p, s: "x"), SimpleNamespace(scorer="x", system_prompt=None)
    )
    spent = out["rescored"]["layers@0123456789ab"]
    assert spent["verifier_tokens"] == 9 and spent.get("free_when_live", False) is free
    assert out["candidates"][0]["scores"] == {"logprob": [-1.0], "layers@0123456789ab": [0.5]}


def test_a_rescore_stores_what_one_reading_gives_two_verifiers_and_counts_the_pass_once(monkeypatch):
    """A judge probe's pass also yields the judge's P(Yes): both are stored, each charged the
    whole pass in its own curve, and the run's total counts the pass once."""
    from types import SimpleNamespace

    from ttscale.core import Compute, Problem
    from ttscale.engines.fake import FakeGenerator
    from ttscale.evaluation import run
    from ttscale.evaluation.curves import pool_from_record
    from ttscale.evaluation.summary import pool_compute

    class Reading:
        name = "layers@0123456789ab"
        free_when_live = False

        def __init__(self):
            self.side_scores = {}

        def score(self, problem, candidates):
            self.side_scores = {"outcome_judge:big": [[0.9] for _ in candidates]}
            return [[0.25] for _ in candidates], Compute(verifier_tokens=7, flops=70.0, wall_time=2.0)

    monkeypatch.setattr(run, "make_scorer", lambda *args, **kwargs: Reading())
    stored = {"text": "x", "steps": [{"text": "x", "n_tokens": 1}], "answer": "1", "scores": {"logprob": [-1.0]}}
    out = run.rescore_pool(
        {"id": "p", "candidates": [stored, dict(stored)], "compute": {"generated_tokens": 3, "flops": 5.0}},
        Problem("p", "q"),
        FakeGenerator(lambda p, s: "x"),
        SimpleNamespace(scorer="x", system_prompt=None),
    )
    assert [c["scores"] for c in out["candidates"]] == [
        {"logprob": [-1.0], "layers@0123456789ab": [0.25], "outcome_judge:big": [0.9]}
    ] * 2
    probe, judge = out["rescored"]["layers@0123456789ab"], out["rescored"]["outcome_judge:big"]
    assert probe["verifier_tokens"] == judge["verifier_tokens"] == 7 and judge["read_by"] == "layers@0123456789ab"
    assert "read_by" not in probe
    for name in ("layers@0123456789ab", "outcome_judge:big"):  # each curve is charged the whole pass
        assert pool_from_record(out, name, "last").verifier_flops == pytest.approx(70.0)
    total = pool_compute(out)
    assert (total.verifier_tokens, total.flops, total.generated_tokens) == (7, 75.0, 3)
    # a verifier the pool already has keeps its own scores and cost: nothing is overwritten
    earlier = {**stored, "scores": {"outcome_judge:big": [0.1]}}
    again = run.rescore_pool(
        {"id": "p", "candidates": [earlier], "compute": {}, "rescored": {"outcome_judge:big": {"flops": 1.0}}},
        Problem("p", "q"),
        FakeGenerator(lambda p, s: "x"),
        SimpleNamespace(scorer="x", system_prompt=None),
    )
    assert again["candidates"][0]["scores"]["outcome_judge:big"] == [0.1]
    assert again["rescored"]["outcome_judge:big"] == {"flops": 1.0}
