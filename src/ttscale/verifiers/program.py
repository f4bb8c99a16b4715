"""The program check (PROVE, Toh et al. 2024, arXiv 2410.12608): for every math candidate,
the policy turns its solution into a short Python program that computes the answer the way
the solution does; the sandbox runs it; the candidate scores the share of its k programs
whose printed answer equals its stated one (math-verify equivalence). This is information
the pool does not have: a computation, not another reading of the same text. A wrong
calculation in the solution meets a right one in the program and disagrees.

Measured on GSM8K with this 0.5B model: solving by program alone is no better than by chain
of thought, so the program checks a solution, it does not replace it.

The programs are verifier work: their prompt and generated tokens count as verifier tokens
(and FLOPs), their runs as executed tests and execution time. Every candidate's programs are
drawn in one engine call; a candidate already checked (the same problem and text) is not
checked again. `program` draws one program greedily; `program:K` samples K.

`program_solve[:K]` is the check without the solution: the policy solves the problem K times
by program alone (default 8, sampled), and a candidate scores how many of those programs print
its answer. A program written from the solution inherits the solution's reasoning (on the
GSM8K-100 pools a third of the wrong samples' programs reproduce the wrong answer); one written
from the problem alone is a second, independent way to the answer, so its agreement is
evidence the chain-of-thought vote does not already hold. Its K programs are drawn once per
problem, not per candidate, so it costs a fixed K programs whatever N is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ..core import Candidate, Compute, Generator, Problem, Prompt, SamplingParams
from ..tasks.code import unisolated_from_env, warn_unisolated
from ..tasks.grading import equivalent
from ..tasks.sandbox import Limits, RunResult, run_many

PROGRAM_SYSTEM = "You turn a math solution into a Python program. Reply with one ```python code block."
SOLVER_SYSTEM = "You solve math problems by writing Python programs. Reply with one ```python code block."
PROGRAM_LIMITS = Limits(timeout_s=5.0, cpu_s=5, memory_mb=256, output_kb=64)
PROGRAM_TOKENS = 256


def program_prompt(question: str, solution: str) -> Prompt:
    user = (
        f"Problem:\n{question.strip()}\n\nSolution:\n{solution.strip()}\n\n"
        "Write a short Python program that follows this solution step by step, computing every number "
        "it uses, and ends by printing only the final answer."
    )
    return Prompt(messages=(("system", PROGRAM_SYSTEM), ("user", user)), partial="```python\n")


def solver_prompt(question: str) -> Prompt:
    user = (
        f"Problem:\n{question.strip()}\n\n"
        "Write a short Python program that solves this problem, computing every number it needs, "
        "and ends by printing only the final answer."
    )
    return Prompt(messages=(("system", SOLVER_SYSTEM), ("user", user)), partial="```python\n")


def printed_answer(result: RunResult) -> str | None:
    """The program's answer: the last line it printed, if it ran to the end."""
    if not result.ok:
        return None
    lines = [ln.strip() for ln in result.stdout.splitlines() if ln.strip()]
    return lines[-1] if lines else None


def agrees(printed: str | None, answer: str) -> bool:
    if printed is None:
        return False
    # "18.0" for 18, "$18" for 18: what a program prints is plainer than what a solution boxes
    plain = printed.removeprefix("$").rstrip(".")
    return equivalent(plain, answer) or (plain.endswith(".0") and equivalent(plain[:-2], answer))


def draw_and_run(
    generator: Generator, prompts: list[Prompt], k: int, unisolated: bool
) -> tuple[list[str | None], Compute]:
    """K programs per prompt, drawn in one engine call (greedy when K is 1) and run in the
    sandbox: what each printed last (None if it failed), prompt by prompt, and their cost as
    verifier compute."""
    sampled = SamplingParams(max_tokens=PROGRAM_TOKENS, stop=("```",))
    params = dataclasses.replace(sampled, temperature=0.0) if k == 1 else sampled
    gen = generator.generate(prompts, k, params)
    programs = [c.text for row in gen.completions for c in row]
    if unisolated:
        warn_unisolated()
    results = run_many(programs, workers=2, limits=PROGRAM_LIMITS, unisolated=unisolated)
    spent = gen.compute
    compute = Compute(
        verifier_tokens=spent.prompt_tokens + spent.generated_tokens,
        wall_time=spent.wall_time,
        flops=spent.flops,
        executed_tests=len(results),
        execution_time=sum(r.seconds for r in results),
    )
    return [printed_answer(r) for r in results], compute


class ProgramScorer:
    def __init__(self, generator: Generator, k: int = 1, unisolated: bool | None = None) -> None:
        if k < 1:
            raise ValueError("the program check draws at least one program per candidate")
        self.generator, self.k = generator, k
        self.name = "program" if k == 1 else f"program:{k}"
        self.unisolated = unisolated_from_env() if unisolated is None else unisolated
        self._memo: dict[tuple[str, str], float] = {}

    def score(self, problem: Problem, candidates: Sequence[Candidate]) -> tuple[list[list[float]], Compute]:
        todo = {
            (problem.question, c.text): c.answer
            for c in candidates
            if c.answer is not None and (problem.question, c.text) not in self._memo
        }
        compute = Compute()
        if todo:
            prompts = [program_prompt(question, text) for question, text in todo]
            printed, compute = draw_and_run(self.generator, prompts, self.k, self.unisolated)
            for i, (key, answer) in enumerate(todo.items()):
                mine = printed[i * self.k : (i + 1) * self.k]
                self._memo[key] = sum(agrees(p, answer) for p in mine) / self.k
        scores = [[0.0] if c.answer is None else [self._memo[(problem.question, c.text)]] for c in candidates]
        return scores, compute


SOLVER_PROGRAMS = 8  # program_solve's default K


class SolverProgramScorer:
    """`program_solve[:K]`: K programs that solve the problem alone, drawn once per problem; a
    candidate scores (agreeing + 1) / (K + 2), Laplace's estimate of the chance that one more
    program prints its answer. An answer no program printed still scores above an unanswered
    candidate (0), so a weighted vote over it falls back to the plain vote rather than to the
    first sample; PASS_MARK (0.5) passes an answer that at least half of the K programs print."""

    def __init__(self, generator: Generator, k: int = SOLVER_PROGRAMS, unisolated: bool | None = None) -> None:
        if k < 1:
            raise ValueError("program_solve draws at least one program per problem")
        self.generator, self.k = generator, k
        self.name = "program_solve" if k == SOLVER_PROGRAMS else f"program_solve:{k}"
        self.unisolated = unisolated_from_env() if unisolated is None else unisolated
        self._printed: dict[str, list[str | None]] = {}

    def score(self, problem: Problem, candidates: Sequence[Candidate]) -> tuple[list[list[float]], Compute]:
        compute = Compute()
        if problem.question not in self._printed:
            printed, compute = draw_and_run(self.generator, [solver_prompt(problem.question)], self.k, self.unisolated)
            self._printed[problem.question] = printed
        printed = self._printed[problem.question]
        scores = [
            [0.0] if c.answer is None else [(sum(agrees(p, c.answer) for p in printed) + 1) / (self.k + 2)]
            for c in candidates
        ]
        return scores, compute
