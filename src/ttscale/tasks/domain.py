"""A task domain: how a prompt is built, how an answer is read out of a solution, when two
answers are the same (for voting), and whether an answer is right. Strategies and
evaluation call only this interface; `domain_of(problem)` says which domain a problem is in.

- math: boxed answers, compared by mathematical equivalence;
- code (`code_domain.py`): the answer is a program; two programs are the same when they
  behave the same on the calls the docstring shows and on the tests the model wrote; a
  program is right when it passes the task's hidden tests, run by the judge in the sandbox.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

from ..core import Compute, Generator, Problem, Prompt, SamplingParams
from . import grading
from .code import is_code
from .code_domain import CodeDomain
from .prompts import problem_prompt


class Domain(Protocol):
    name: str

    def prompt(self, system: str, partial: str = "") -> Prompt:
        """The prompt a solution is sampled from, continuing `partial`."""
        ...

    def answer_of(self, text: str, complete: bool) -> str | None:
        """The answer a solution gives; None when it gives none. An incomplete solution (cut
        short, or a search node still open) has one only if it already stated it."""
        ...

    def sampling(self, params: SamplingParams) -> SamplingParams:
        """The run's sampling, with what the domain needs (code: stop at the block's end)."""
        ...

    def prepare(self, generator: Generator, params: SamplingParams) -> Compute:
        """Whatever the domain needs before it can check answers (code: the model writes its
        tests); what that cost. Done once per problem."""
        ...

    def check(self, answers: Sequence[str | None]) -> Compute:
        """Check answers against what a solver may know (code: run them on the public calls
        and the model's tests, once each: grouping and the execution verifiers reuse it);
        what that cost."""
        ...

    def group(self, answers: Sequence[str | None]) -> list[int | None]:
        """Equivalence classes: each answer gets its class's first index (None stays None)."""
        ...

    def is_correct(self, answer: str | None, gold: str | None) -> bool: ...


class MathDomain:
    """Boxed answers compared by mathematical equivalence (math-verify)."""

    name = "math"

    def __init__(self, problem: Problem | None = None) -> None:
        self.question = problem.question if problem else ""

    def prompt(self, system: str, partial: str = "") -> Prompt:
        return problem_prompt(self.question, system, partial)

    def answer_of(self, text: str, complete: bool) -> str | None:
        # the last number of an unfinished text is noise, not an answer
        if not complete and grading.last_boxed(text) is None:
            return None
        return grading.extract_answer(text)

    def sampling(self, params: SamplingParams) -> SamplingParams:
        return params

    def prepare(self, generator: Generator, params: SamplingParams) -> Compute:
        return Compute()

    def check(self, answers: Sequence[str | None]) -> Compute:
        return Compute()

    def group(self, answers: Sequence[str | None]) -> list[int | None]:
        return grading.group_answers(list(answers))

    def is_correct(self, answer: str | None, gold: str | None) -> bool:
        return grading.is_correct(answer, gold)


MATH = MathDomain()


def require_math(problem: Problem, strategy: str, instead: str) -> None:
    """Strategies built on math's step protocol refuse other domains, saying what to use."""
    if is_code(problem):
        raise ValueError(f"{strategy} works on math problems; {problem.id} is a code task: use {instead}")


_DOMAINS: OrderedDict[tuple[str, str], CodeDomain] = OrderedDict()
_DOMAINS_LOCK = threading.Lock()


def domain_of(problem: Problem) -> Domain:
    """The problem's domain: its code domain (one per problem and process, so the tests the
    model wrote and the programs already run are kept), or math."""
    if not is_code(problem):
        return MathDomain(problem)
    key = (problem.id, problem.question)
    with _DOMAINS_LOCK:
        if key not in _DOMAINS:
            _DOMAINS[key] = CodeDomain(problem)
            while len(_DOMAINS) > 256:
                _DOMAINS.popitem(last=False)
        _DOMAINS.move_to_end(key)
        return _DOMAINS[key]
