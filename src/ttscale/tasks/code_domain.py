"""The code domain: programs, grouped by what they do on the public calls (the docstring's
examples and the asserts the model writes for the task), graded by the hidden tests. The
programs run through one sandbox pool and result cache per process (`RUNNER`)."""

from __future__ import annotations

import ast
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..core import Compute, Generator, Problem, Prompt, SamplingParams
from ..core.seeds import tests_seed
from .code import (
    CODE_SYSTEM_PROMPT,
    FENCE,
    CodeTask,
    Runner,
    Verdict,
    assert_tests,
    code_prompt,
    example_tests,
    hidden_tests,
    program_of,
)
from .prompts import SYSTEM_PROMPT

RUNNER = Runner()  # one sandbox pool and result cache per process
TESTS_WANTED = 10  # model-written asserts kept per problem
TEST_SAMPLES = 1  # completions asked for them (one is ~250 tokens: 2-3 programs' worth)


@dataclass
class Behaviour:
    """What one program did on the public calls: each example call's value (or the
    exception it raised) and which of the model's tests it passed."""

    values: list[str]
    examples_passed: list[bool]
    tests_passed: list[bool]

    @property
    def signature(self) -> str:
        return repr((self.values, self.tests_passed))


class CodeDomain:
    """Programs, grouped by behaviour and graded by the hidden tests."""

    name = "code"

    def __init__(self, problem: Problem, runner: Runner = RUNNER) -> None:
        self.task = CodeTask.of(problem)
        self.examples = self.task.examples
        self.runner = runner
        self.tests: list[str] | None = None  # the model's asserts, once written
        self._lock = threading.Lock()

    def prompt(self, system: str, partial: str = "") -> Prompt:
        # a run that kept the math default gets the code one
        return code_prompt(self.task, CODE_SYSTEM_PROMPT if system == SYSTEM_PROMPT else system, partial)

    def answer_of(self, text: str, complete: bool) -> str | None:
        return program_of(self.task, text, complete)

    def sampling(self, params: SamplingParams) -> SamplingParams:
        return params if FENCE in params.stop else replace(params, stop=(*params.stop, FENCE))

    def check(self, answers: Sequence[str | None]) -> Compute:
        return self.behaviours(answers)[1]

    def prepare(self, generator: Generator, params: SamplingParams) -> Compute:
        """The model writes tests for the task (AlphaCode's inputs, CodeT's tests): a few
        asserts, from its own reading of the docstring; never the hidden ones."""
        with self._lock:
            if self.tests is not None:
                return Compute()
            self.tests, spent = write_tests(self.task, generator, params)
            return spent

    def public_tests(self) -> list[dict]:
        return example_tests(self.examples) + assert_tests(self.tests or [])

    def behaviours(self, answers: Sequence[str | None]) -> tuple[list[Behaviour | None], Compute]:
        """Every program run once on the public calls (cached): what each did, and the cost."""
        tests = self.public_tests()
        outcomes, spent = self.runner.run(self.task, list(answers), tests)
        k = len(self.examples)
        return [None if a is None else _behaviour(o, k) for a, o in zip(answers, outcomes, strict=True)], spent

    def group(self, answers: Sequence[str | None]) -> list[int | None]:
        behaviours, _ = self.behaviours(answers)
        no_calls = not self.public_tests()
        keys = [
            None if b is None or a is None else (_normalised(a) if no_calls else b.signature)
            for a, b in zip(answers, behaviours, strict=True)
        ]
        first: dict[str, int] = {}
        return [None if key is None else first.setdefault(key, i) for i, key in enumerate(keys)]

    def is_correct(self, answer: str | None, gold: str | None) -> bool:
        return self.outcome(answer, gold).passed

    def describe(self, answers: Sequence[str | None]) -> list[dict[str, Any]]:
        """What each program did on the public calls and the model's tests (from the one run
        already made): for `solve --show` and a server's candidates."""
        behaviours, _ = self.behaviours(answers)
        calls = [e.call for e in self.examples]
        return [
            {"program": a, "examples": None, "tests": None}
            if b is None
            else {
                "program": a,
                "examples": [
                    {"call": c, "got": v, "passed": p}
                    for c, v, p in zip(calls, b.values, b.examples_passed, strict=True)
                ],
                "tests": [{"test": t, "passed": p} for t, p in zip(self.tests or [], b.tests_passed, strict=True)],
            }
            for a, b in zip(answers, behaviours, strict=True)
        ]

    def outcome(self, answer: str | None, gold: str | None) -> Verdict:
        if answer is None or not gold:
            return Verdict(False, None, "no program" if answer is None else "no hidden tests")
        outcomes, _ = self.runner.run(self.task, [answer], hidden_tests(gold))
        return outcomes[0][0]


def _behaviour(outcomes: list[Verdict], n_examples: int) -> Behaviour:
    calls, asserts = outcomes[:n_examples], outcomes[n_examples:]
    return Behaviour(
        values=[_error_kind(o.error) if o.error is not None else str(o.got) for o in calls],
        examples_passed=[o.passed for o in calls],
        tests_passed=[o.passed for o in asserts],
    )


def _error_kind(error: str) -> str:
    return "!" + error.split(":", 1)[0].split("\n", 1)[0]


def _normalised(program: str) -> str:
    """Programs that differ only in layout and comments are the same program."""
    try:
        return ast.dump(ast.parse(program))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return program


def write_tests(task: CodeTask, generator: Generator, params: SamplingParams) -> tuple[list[str], Compute]:
    """Up to TESTS_WANTED distinct one-line asserts on the function, from TEST_SAMPLES samples."""
    head = f"# tests of {task.entry_point}\nassert {task.entry_point}("
    prompt = Prompt(
        messages=(
            ("system", CODE_SYSTEM_PROMPT),
            (
                "user",
                f"Write {TESTS_WANTED} assert statements, one per line, that check a correct "
                f"implementation of this function:\n\n{FENCE}python\n{task.prompt.strip()}\n{FENCE}",
            ),
        ),
        partial=f"{FENCE}python\n{head}",
    )
    sampling = replace(params, seed=tests_seed(params.seed), max_tokens=min(params.max_tokens, 320), stop=(FENCE,))
    generator.reset()
    gen = generator.generate([prompt], TEST_SAMPLES, sampling)
    tests: list[str] = []
    for c in gen.completions[0]:
        for line in (f"assert {task.entry_point}(" + c.text).splitlines():
            line = line.strip()
            if _usable_assert(line, task.entry_point) and line not in tests:
                tests.append(line)
    spent = gen.compute
    spent.test_tokens = spent.generated_tokens
    return tests[:TESTS_WANTED], spent


def _usable_assert(line: str, entry_point: str) -> bool:
    if not line.startswith("assert ") or f"{entry_point}(" not in line:
        return False
    try:
        return isinstance(ast.parse(line).body[0], ast.Assert)
    except (SyntaxError, ValueError, IndexError, RecursionError, MemoryError):
        return False
