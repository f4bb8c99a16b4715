"""A task domain: how an answer is read out of a solution, when two answers are the same
(for voting), and whether an answer is right. Math is the one domain today; strategies and
evaluation call only this interface, so a code domain can sit beside it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from . import grading


class Domain(Protocol):
    name: str

    def answer_of(self, text: str, complete: bool) -> str | None:
        """The answer a solution gives; None when it gives none. An incomplete solution (cut
        short, or a search node still open) has one only if it already stated it."""
        ...

    def group(self, answers: Sequence[str | None]) -> list[int | None]:
        """Equivalence classes: each answer gets its class's first index (None stays None)."""
        ...

    def is_correct(self, answer: str | None, gold: str | None) -> bool: ...


class MathDomain:
    """Boxed answers compared by mathematical equivalence (math-verify)."""

    name = "math"

    def answer_of(self, text: str, complete: bool) -> str | None:
        # the last number of an unfinished text is noise, not an answer
        if not complete and grading.last_boxed(text) is None:
            return None
        return grading.extract_answer(text)

    def group(self, answers: Sequence[str | None]) -> list[int | None]:
        return grading.group_answers(list(answers))

    def is_correct(self, answer: str | None, gold: str | None) -> bool:
        return grading.is_correct(answer, gold)


MATH = MathDomain()
