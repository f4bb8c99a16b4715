"""Verifiers that run the program: for code tasks, execution is an exact check of what it
is run on. Both read the domain's one run of every program on the public calls (the
docstring's examples) and on the tests the model wrote (`CodeDomain.check`), so scoring
costs no second run.

- "examples": the share of the docstring's examples the program gets right (Best-of-N
  filtered by the public examples);
- "tests": the share of the examples and of the model's own tests it passes. Weighted
  Best-of-N with it sums the share over programs that behave alike, so a behaviour class
  scores (programs in it) x (tests they pass): CodeT's dual agreement.
A task with nothing to run gets 0.5 for every program: no evidence either way.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..core import Candidate, Compute, Generator, Problem, SamplingParams
from ..tasks.code_domain import Behaviour, CodeDomain
from ..tasks.domain import domain_of

NO_EVIDENCE = 0.5


class _ExecutionScorer:
    name = ""

    def __init__(self, generator: Generator | None = None) -> None:
        self.generator = generator  # writes the tests, if the pool has none yet

    def score(self, problem: Problem, candidates: Sequence[Candidate]) -> tuple[list[list[float]], Compute]:
        domain = domain_of(problem)
        if not isinstance(domain, CodeDomain):
            raise ValueError(f"the {self.name!r} verifier runs programs: problem {problem.id} is not a code task")
        spent = Compute()
        if domain.tests is None and self.generator is not None and len(candidates) > 1:
            spent = domain.prepare(self.generator, domain.sampling(SamplingParams()))
        behaviours, ran = domain.behaviours([c.answer for c in candidates])
        return [[0.0] if b is None else [_share(self.passed(b))] for b in behaviours], spent + ran

    def passed(self, behaviour: Behaviour) -> list[bool]:
        raise NotImplementedError


class ExamplesScorer(_ExecutionScorer):
    name = "examples"

    def passed(self, behaviour: Behaviour) -> list[bool]:
        return behaviour.examples_passed


class TestsScorer(_ExecutionScorer):
    name = "tests"

    def passed(self, behaviour: Behaviour) -> list[bool]:
        return behaviour.examples_passed + behaviour.tests_passed


EXECUTION: dict[str, type[_ExecutionScorer]] = {ExamplesScorer.name: ExamplesScorer, TestsScorer.name: TestsScorer}


def _share(passed: list[bool]) -> float:
    return sum(passed) / len(passed) if passed else NO_EVIDENCE
