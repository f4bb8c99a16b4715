import pytest

from ttscale.core import Problem, SamplingParams
from ttscale.strategies.refine import REVISE, self_refine
from ttscale.strategies.spec import RunSpec
from ttscale.testing import FakeGenerator
from ttscale.verifiers.model_free import LogProbScorer

PROBLEM = Problem("p", "What is 3 + 4?", gold="7")


def reviser(answers):
    """Round r (counted from the assistant turns so far) answers answers[r]."""
    seen = []

    def script(prompt, seed):
        seen.append(prompt)
        r = sum(1 for role, _ in prompt.messages if role == "assistant")
        return f"Compute.\n\nTherefore, the final answer is $\\boxed{{{answers[r]}}}$."

    return FakeGenerator(script), seen


def test_rounds_revise_the_latest_answer_and_picks_differ():
    gen, seen = reviser(["3", "7", "7", "9"])
    r = self_refine(PROBLEM, gen, LogProbScorer(), 4, spec=RunSpec(SamplingParams(max_tokens=64)), stop_on_repeat=False)
    assert [c.answer for c in r.candidates] == ["3", "7", "7", "9"]
    assert r.answer == "9"  # the last answer
    assert r.outcome["picks"]["majority"] == "7"
    # round 3 saw the whole conversation: question, three answers, three requests to revise
    roles = [role for role, _ in seen[-1].messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user", "assistant", "user"]
    assert seen[-1].messages[-1] == ("user", REVISE)
    assert "\\boxed{7}" in seen[-1].messages[-2][1]
    # each round's prompt extends the previous one: most of it is served from the cache
    assert r.compute.cached_prompt_tokens > r.compute.prompt_tokens
    assert r.compute.generated_tokens == sum(c.n_tokens for c in r.candidates)


def test_vote_pick_and_bad_pick():
    gen, _ = reviser(["3", "7", "7", "9"])
    assert self_refine(PROBLEM, gen, LogProbScorer(), 4, pick="majority").answer == "7"
    with pytest.raises(ValueError, match="unknown pick"):
        self_refine(PROBLEM, gen, LogProbScorer(), 2, pick="oracle")


def eval_one_problem(tmp_path, ns, answers):
    """An eval config over one problem, and an engine factory whose engines revise through
    `answers` (every engine made is kept, to count its calls)."""
    import json

    from ttscale.evaluation import EvalConfig

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "a", "question": "What is 3 + 4?", "answer": "7"}) + "\n")
    cfg = EvalConfig(
        dataset=str(data), ns=ns, model="fake", strategies=("self_refine",), sampling=SamplingParams(max_tokens=64)
    )
    gens = []

    def make():
        gens.append(reviser(answers)[0])
        return gens[-1]

    return cfg, make, gens


def test_runs_in_eval_once_per_budget(tmp_path):
    import json

    from ttscale.evaluation import run_eval

    cfg, make, gens = eval_one_problem(tmp_path, (1, 2), ["3", "7", "7"])

    report = run_eval(cfg, make, tmp_path / "run", progress=False, n_boot=5)
    acc = {(p.strategy, p.n): p.accuracy for p in report.points}
    assert acc[("self_refine", 1)] == 0.0 and acc[("self_refine", 2)] == 1.0
    assert len(gens[0].calls) == 2  # one run of two rounds serves both budgets
    records = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert sorted(r["n"] for r in records) == [1, 2]
    one = next(r for r in records if r["n"] == 1)
    assert one["compute"]["generated_tokens"] == sum(s["n_tokens"] for s in one["candidates"][0]["steps"])
    # a larger budget later: the stored run is not reused (too short), a longer one is made
    cfg.ns = (1, 2, 3)
    run_eval(cfg, make, tmp_path / "run", progress=False, n_boot=5)
    assert len(gens[1].calls) == 3


def test_the_first_rounds_of_a_long_run_are_a_short_run():
    from ttscale.strategies.refine import first_rounds

    long = self_refine(PROBLEM, reviser(["3", "7", "9", "7"])[0], LogProbScorer(), 4, pick="majority")
    short = self_refine(PROBLEM, reviser(["3", "7", "9", "7"])[0], LogProbScorer(), 3, pick="majority")
    cut = first_rounds(long, 3)
    assert [c.answer for c in cut.candidates] == [c.answer for c in short.candidates] == ["3", "7", "9"]
    assert cut.outcome["picks"] == short.outcome["picks"] and cut.answer == short.answer
    for field in ("generated_tokens", "prompt_tokens", "cached_prompt_tokens", "verifier_tokens"):
        assert getattr(cut.compute, field) == getattr(short.compute, field)
    assert long.outcome["picks"]["majority"] == "7" and cut.settings["n"] == 3


def test_a_revision_that_repeats_its_input_ends_the_run():
    from ttscale.strategies.refine import first_rounds

    gen, seen = reviser(["3", "7", "7", "9", "9"])
    r = self_refine(PROBLEM, gen, LogProbScorer(), 5, pick="majority")
    assert len(seen) == 3  # round 3 copied round 2 word for word: rounds 4 and 5 never ran
    assert [c.answer for c in r.candidates] == ["3", "7", "7"] and r.answer == "7"
    assert r.outcome["rounds_saved"] == 2 and len(r.outcome["rounds"]) == 3
    assert r.compute.generated_tokens == sum(c.n_tokens for c in r.candidates)
    # a smaller budget is still the first rounds; a budget past the stop is the whole run
    assert [c.answer for c in first_rounds(r, 2).candidates] == ["3", "7"]
    assert first_rounds(r, 2).outcome["rounds_saved"] == 0
    whole = first_rounds(r, 8)
    assert whole.compute.generated_tokens == r.compute.generated_tokens and whole.outcome["rounds_saved"] == 5
    # revisions that never repeat run every round
    assert len(self_refine(PROBLEM, reviser(["3", "7", "9"])[0], LogProbScorer(), 3).candidates) == 3


def test_eval_reuses_a_run_that_stopped_for_any_larger_budget(tmp_path):
    import json

    from ttscale.evaluation import run_eval

    cfg, make, gens = eval_one_problem(tmp_path, (1, 4), ["3", "7", "7", "9"])
    run_eval(cfg, make, tmp_path / "run", progress=False, n_boot=5)
    assert len(gens[0].calls) == 3  # round 3 repeated round 2: the budget-4 run stopped there
    cfg.ns = (1, 4, 8)
    report = run_eval(cfg, make, tmp_path / "run", progress=False, n_boot=5)
    assert sum(len(g.calls) for g in gens) == 3  # budget 8 would have stopped at round 3 too: nothing more runs
    records = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert sorted(r["n"] for r in records) == [1, 4, 8]  # each budget once, none written twice
    eight = next(r for r in records if r["n"] == 8)
    assert [c["answer"] for c in eight["candidates"]] == ["3", "7", "7"]
    assert eight["settings"]["rounds_saved"] == 5 and eight["settings"]["stopped_on_repeat"]
    assert {(p.strategy, p.n): p.accuracy for p in report.points}[("self_refine", 8)] == 1.0
    four = next(r for r in records if r["n"] == 4)
    assert eight["settings"]["derived_from"] == 4 and "derived_from" not in four["settings"]
    assert report.compute.generated_tokens == four["compute"]["generated_tokens"] > 0  # the one run, counted once
