"""Self-debugging: self-refinement with execution feedback (Chen et al., 2023, "Teaching
Large Language Models to Self-Debug"). The model writes a program; it runs on the
docstring's examples; while one fails and the budget lasts, the model is shown the failing
call with what came back (or the traceback) and writes the function again. n is the most
programs it writes; a program that passes every example ends the run (the rounds left are
reported as saved). On math the 0.5B model only copies itself when asked to check its own
work; here it learns something it could not see: what its program actually does.

A revision that repeats the program it was shown ends the run too (`stop_on_repeat`).

The pick is the last program if it passed every example, otherwise the one that passed
the most (the latest among equals). A task without examples has nothing to run: one
program, the rest of the budget saved.

Each round extends the last round's conversation, so the engine serves the shared prefix
from its KV cache; round r depends only on the rounds before it, so the first m rounds of a
run are exactly a budget-m run (`first_rounds`), as for self_refine.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from ..core import Candidate, Compute, Generator, Problem, Prompt, Result, Scorer
from ..core.seeds import round_seed
from ..tasks.code import FENCE, Example, Verdict, example_tests
from ..tasks.code_domain import CodeDomain
from ..tasks.domain import domain_of
from .candidates import from_completion, score_candidates
from .picks import answers_of, pick_best
from .rounds import first_rounds_compute, stored_run
from .spec import RunSpec

OUTCOME_KEYS = ("rounds", "verifier", "passed_at", "rounds_saved", "derived_from", "feedback", "examples_passed")
FIX = "Fix the function. Reply with the complete corrected function in one ```python code block."


def self_debug(
    problem: Problem,
    generator: Generator,
    scorer: Scorer,
    n: int,
    spec: RunSpec | None = None,
    *,
    stop_on_repeat: bool = True,
) -> Result:
    """stop_on_repeat: a revision that writes the program it was shown again, character for
    character, ends the run (the small model then copies it round after round: seen on
    HumanEval/10 with Qwen2.5-Coder-0.5B, four identical rounds); the rest is saved."""
    domain = domain_of(problem)
    if not isinstance(domain, CodeDomain):
        raise ValueError(f"self_debug revises programs: {problem.id} is not a code task (self_refine is the math one)")
    spec = spec or RunSpec()
    t0 = time.perf_counter()
    generator.reset()  # a fresh cache: the same seed gives the same rounds
    first = domain.prompt(spec.system)
    history: list[tuple[str, str]] = []
    candidates: list[Candidate] = []
    rounds: list[Compute] = []
    feedback: list[str | None] = []
    shares: list[float] = []  # of the examples, per round
    passed_at = None
    tests = example_tests(domain.examples)
    for round_ in range(n):
        t_round = time.perf_counter()
        params = replace(domain.sampling(spec.params), seed=round_seed(spec.params.seed, round_))
        gen = generator.generate([Prompt(first.messages + tuple(history), first.partial)], 1, params)
        completion = gen.completions[0][0]
        candidate = from_completion(completion, domain)
        candidates.append(candidate)
        outcomes, ran = domain.runner.run(domain.task, [candidate.answer], tests)
        rounds.append(replace(gen.compute + ran, wall_time=time.perf_counter() - t_round))
        failing = next(((e, o) for e, o in zip(domain.examples, outcomes[0], strict=True) if not o.passed), None)
        shares.append(sum(o.passed for o in outcomes[0]) / len(tests) if tests else 0.0)
        if candidate.answer is not None and failing is None:
            passed_at = round_
            feedback.append(None)
            break
        if not tests:
            feedback.append(None)
            break  # nothing to run, nothing to learn from
        repeated = round_ > 0 and candidate.answer is not None and candidate.answer == candidates[-2].answer
        if stop_on_repeat and repeated:
            feedback.append(None)
            break
        message = describe_failure(candidate.answer, *failing) if failing else "The reply holds no complete function."
        feedback.append(message)
        history += [("assistant", first.partial + completion.text + FENCE), ("user", f"{message}\n\n{FIX}")]
    t_score = time.perf_counter()
    verifier = score_candidates(problem, candidates, scorer, spec.aggregation)
    verifier.wall_time = time.perf_counter() - t_score
    settings = {
        "scorer": scorer.name,
        "aggregation": spec.aggregation,
        "stop_on_repeat": stop_on_repeat,
        "sampling": spec.params.to_dict(),
    }
    outcome = {
        "rounds": [r.to_dict() for r in rounds],
        "verifier": verifier.to_dict(),
        "passed_at": passed_at,
        "feedback": feedback,
        "examples_passed": shares,
    }
    run = Result("self_debug", None, None, candidates, Compute(), settings, outcome=outcome)
    return first_rounds(run, n, time.perf_counter() - t0)


def describe_failure(program: str | None, example: Example, outcome: Verdict) -> str:
    """What the model is told: the call, and what came back against what the docstring says,
    or the error with the program's own traceback lines."""
    if program is None:
        return "The reply holds no complete function."
    error = outcome.error
    if error is None:
        return f"Running `{example.call}` returned `{outcome.got}`, but the docstring says it returns `{example.want}`."
    if error == "timed out":
        return f"Running `{example.call}` did not finish in time (an endless loop?)."
    return f"Running `{example.call}` failed:\n{_own_lines(error)}"


def _own_lines(error: str) -> str:
    """The traceback without the judge's own frames: only what points into the program."""
    lines = error.strip().splitlines()
    kept = [ln for i, ln in enumerate(lines) if "code_judge" not in ln and not _judge_frame(lines, i)]
    return "\n".join(kept[-12:])


def _judge_frame(lines: list[str], i: int) -> bool:
    return lines[i].lstrip().startswith('File "<string>"') or (
        i > 0 and lines[i - 1].lstrip().startswith('File "<string>"')
    )


def first_rounds(run: Result, m: int, wall_time: float | None = None) -> Result:
    """A self_debug run cut to its first m rounds: what self_debug(m) with the same seed
    returns (a run that passed before round m is that run whole). The verifier's compute is
    charged per round."""
    compute, ran = first_rounds_compute(run, m, wall_time)
    all_rounds = run.outcome["rounds"]
    candidates = run.candidates[:m]
    passed_at = run.outcome.get("passed_at")
    passed = passed_at is not None and passed_at < m
    shares = run.outcome["examples_passed"][:m]
    answered = [i for i, c in enumerate(candidates) if c.answer is not None]
    best = max(answered, key=lambda i: (shares[i], i)) if answered else None
    picks = {
        "last_passing": len(candidates) - 1 if passed else best,
        "best_of_n": pick_best(
            [0 if i in answered else None for i in range(len(candidates))], [c.score for c in candidates]
        ),
    }
    outcome = {
        **run.outcome,
        "rounds": all_rounds[:m],
        "feedback": run.outcome.get("feedback", [])[:m],
        "examples_passed": shares,
        "passed_at": passed_at if passed else None,
        "picks": answers_of(candidates, picks),
        "rounds_saved": m - ran,
    }
    return Result.picked("self_debug", candidates, picks["last_passing"], compute, {**run.settings, "n": m}, outcome)


def run_from_stored(
    settings: dict[str, Any], candidates: list[Candidate], compute: Compute, answer: str | None
) -> Result:
    """A stored self_debug run."""
    return stored_run("self_debug", OUTCOME_KEYS, settings, candidates, compute, answer)


def reusable(settings: dict[str, Any], n: int, top: int, options: dict[str, Any]) -> bool:
    """Whether a stored run of budget n serves every budget up to top: it ran that many
    rounds, or stopped before (its program passed, or there was nothing to run)."""
    return "rounds" in settings and (n >= top or len(settings["rounds"]) < n)
