"""The program check for math (#20): the policy's program, run in the sandbox, against the
candidate's stated answer; filter-then-vote over what it passes."""

import pytest

from ttscale.core import Candidate, Problem
from ttscale.engines.fake import FakeGenerator
from ttscale.sandbox import isolation_available
from ttscale.strategies.picks import pick_filter_vote
from ttscale.tasks.sandbox import RunResult
from ttscale.verifiers.program import ProgramScorer, SolverProgramScorer, agrees, printed_answer
from ttscale.verifiers.registry import known_scorer, make_scorer, program_check, scorer_name


def ran(stdout, ok=True):
    return RunResult(ok, 0 if ok else 1, stdout, "", False, None, 0.01, True)


@pytest.mark.parametrize(
    ("stdout", "ok", "answer", "agree"),
    [
        ("18\n", True, "18", True),
        ("18.0\n", True, "18", True),
        ("$18\n", True, "18", True),
        ("working...\n18\n\n", True, "18", True),  # the last line printed
        ("0.5\n", True, "\\frac{1}{2}", True),  # math-verify equivalence
        ("17\n", True, "18", False),
        ("18\n", False, "18", False),  # it crashed after printing: no answer
        ("", True, "18", False),
    ],
)
def test_a_program_agrees_when_it_prints_the_candidates_answer(stdout, ok, answer, agree):
    assert agrees(printed_answer(ran(stdout, ok)), answer) is agree


@pytest.mark.parametrize(
    ("name", "check"),
    [
        ("program", ("program", 1)),
        ("program:4", ("program", 4)),
        ("program_solve", ("program_solve", 8)),
        ("program_solve:3", ("program_solve", 3)),
        ("program:0", None),
        ("program:x", None),
        ("program_solve:", None),
        ("programs", None),
        ("probe", None),
    ],
)
def test_a_program_check_is_named_with_its_kind_and_program_count(name, check):
    assert program_check(name) == check
    assert known_scorer(name) is (check is not None or name == "probe")


def test_filter_then_vote_votes_among_the_passed_and_falls_back_to_all():
    groups = [0, 0, 0, 1, 1, None]
    assert pick_filter_vote(groups, [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]) == 3  # the passed ones' answer
    assert pick_filter_vote(groups, [0.0] * 6) == 0  # none passed: plain majority
    assert pick_filter_vote(groups, [1.0, 0.0, 0.0, 1.0, 1.0, 0.0]) == 3  # 2 passed votes against 1


@pytest.mark.skipif(not isolation_available(), reason="the sandbox isolates as root")
def test_programs_are_drawn_in_one_call_run_in_the_sandbox_and_charged():
    # the fake policy writes, for every solution, a program that prints 3 + 4
    engine = FakeGenerator(lambda prompt, seed: "print(3 + 4)\n```")
    problem = Problem("p", "What is 3 + 4?", gold="7")
    right, wrong, none = (Candidate(f"so it is {a}", [], answer=a) for a in ("7", "8", None))
    scorer = make_scorer("program", engine)
    assert scorer_name("program") == scorer.name == "program"
    scores, spent = scorer.score(problem, [right, wrong, none])
    assert scores == [[1.0], [0.0], [0.0]]
    assert len(engine.calls) == 1 and len(engine.calls[0][0]) == 2  # one call, a prompt per answered candidate
    assert engine.calls[0][0][0].partial == "```python\n" and engine.calls[0][2].temperature == 0.0
    assert spent.executed_tests == 2 and spent.execution_time > 0 and spent.verifier_tokens > 0
    assert spent.generated_tokens == 0  # programs are verifier work, not the policy's answer
    again, spent = scorer.score(problem, [right, wrong])  # checked already: nothing drawn or run
    assert again == [[1.0], [0.0]] and spent.executed_tests == 0 and len(engine.calls) == 1
    # a hostile program is contained, and fails the check
    hostile = ProgramScorer(FakeGenerator(lambda p, s: "while True:\n    pass\n```"), k=2)
    scores, spent = hostile.score(problem, [right])
    assert scores == [[0.0]] and spent.executed_tests == 2


def test_the_program_check_needs_the_policy():
    with pytest.raises(ValueError, match="policy engine"):
        make_scorer("program:2", None)


@pytest.mark.skipif(not isolation_available(), reason="the sandbox isolates as root")
def test_solving_programs_are_drawn_once_per_problem_and_vote_for_the_answers_they_print():
    # four sampled programs, from the problem alone: three print 7, one prints 8
    printed = iter(["7", "7", "8", "7"])
    engine = FakeGenerator(lambda prompt, seed: f"print({next(printed)})\n```")
    problem = Problem("p", "What is 3 + 4?", gold="7")
    right, wrong, other, none = (Candidate(f"so it is {a}", [], answer=a) for a in ("7", "8", "9", None))
    scorer = make_scorer("program_solve:4", engine)
    assert isinstance(scorer, SolverProgramScorer) and scorer.name == scorer_name("program_solve:4")
    scores, spent = scorer.score(problem, [right, wrong, other, none])
    assert scores == [[4 / 6], [2 / 6], [1 / 6], [0.0]]  # (agreeing + 1) / (K + 2); no answer: 0
    assert len(engine.calls) == 1 and len(engine.calls[0][0]) == 1 and engine.calls[0][1] == 4  # one prompt, K programs
    prompt = engine.calls[0][0][0]
    assert "Solution:" not in prompt.messages[-1][1]  # the problem alone
    assert engine.calls[0][2].temperature > 0  # K programs sampled
    assert spent.executed_tests == 4 and spent.verifier_tokens > 0 and spent.generated_tokens == 0
    again, spent = scorer.score(problem, [wrong, right])  # a later call on the same problem draws nothing
    assert again == [[2 / 6], [4 / 6]] and spent.executed_tests == 0 and len(engine.calls) == 1
    assert pick_filter_vote([0, 1, 2, None], [s[0] for s in scores]) == 0  # 3 of 4 programs pass the 7
