"""Answer extraction and mathematical equivalence, on top of math-verify.

Answers travel as strings (what math-verify extracted, in LaTeX); equivalence is decided on
the parsed expressions, so "1/2", "0.5" and "\\frac{1}{2}" are one answer. Every parse and
comparison runs in a worker process (`bounded.POOL`) with a hard deadline, on whatever thread
asks: sympy can hold the GIL for ever on an answer like 9^{9^{9^9}}, and a stuck worker is
killed and replaced. Inside the worker, math-verify's own alarm bounds each step too, and
answers are length-bounded. An answer that cannot be parsed in time is compared as a string.
A timed-out comparison counts as "not equivalent", which would make grading depend on how busy
the machine is: so the bounds are far above what a real comparison takes (under 2 s on a
loaded 2-core machine), and answers that only time out (integer powers too large to evaluate)
are caught before.
"""

from __future__ import annotations

import re
from functools import lru_cache

from .bounded import POOL

CALLS = "ttscale.tasks.math_verify_calls"  # run by name in the workers: the parent never loads sympy

TIMEOUT_SECONDS = 10  # math-verify's alarm, inside a worker
DEADLINE_SECONDS = 15.0  # the hard bound on one call, from outside
MAX_ANSWER_CHARS = 300  # longer "answers" are compared as plain strings
# answers sympy would try to compute digit by digit: compared as strings, before any worker is
# asked (the workers' deadline is the backstop for whatever these miss)
HUGE_ANSWER = re.compile(
    r"\^\s*\{?\s*\d{5,}"  # an exponent of 5+ digits
    r"|\^\s*\{[^{}]*\^"  # a tower: an exponent with an exponent inside (9^{9^{9^9}})
    r"|(\d{4,}|\^\s*\{[^{}]*\}\s*\))\s*!"  # the factorial of a huge number ((10^{100})!)
)
_GSM8K_GOLD = re.compile(r"####\s*(.+?)\s*$", re.S)


@lru_cache(maxsize=100_000)
def extract_answer(text: str) -> str | None:
    """The final answer of a model's solution: the last \\boxed{} if any, else math-verify's
    fallbacks ("the final answer is ...", the last expression). None if there is none, or if
    reading it does not finish within the deadline."""
    if not text.strip():
        return None
    answer: str | None = POOL.call(f"{CALLS}:extract", (text,), DEADLINE_SECONDS, None)
    return answer


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (or \\fbox{...}), braces matched; None if absent
    or never closed."""
    span = last_boxed_span(text)
    return text[span[0] : span[1]] if span else None


def last_boxed_span(text: str) -> tuple[int, int] | None:
    """Where the content of the last \\boxed{...} (or \\fbox{...}) lies in `text`, as
    [start, end) character indices; None if absent or never closed."""
    at = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if at < 0:
        return None
    start = text.index("{", at) + 1
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return start, i
    return None


def gold_from_gsm8k(answer_field: str) -> str:
    """GSM8K reference solutions end with '#### 1,234'."""
    m = _GSM8K_GOLD.search(answer_field)
    if not m:
        raise ValueError("no '#### answer' line in GSM8K answer field")
    return m.group(1).replace(",", "").strip()


@lru_cache(maxsize=100_000)
def _parses(answer: str) -> bool:
    """Whether an answer parses within the deadline (a worker process does it)."""
    if len(answer) > MAX_ANSWER_CHARS or HUGE_ANSWER.search(answer):
        return False
    return bool(POOL.call(f"{CALLS}:parses", (answer,), DEADLINE_SECONDS, False))


@lru_cache(maxsize=200_000)
def equivalent(a: str, b: str) -> bool:
    """Mathematical equivalence of two answer strings; a string match short-circuits. Two
    answers that do not both parse in time are equivalent only as strings."""
    if _normalise(a) == _normalise(b):
        return True
    if not (_parses(a) and _parses(b)):
        return False
    return bool(POOL.call(f"{CALLS}:equivalent", (a, b), DEADLINE_SECONDS, False))


def is_correct(answer: str | None, gold: str | None) -> bool:
    if answer is None or gold is None:
        return False
    return equivalent(gold, answer)


def _normalise(s: str) -> str:
    return re.sub(r"\s+", "", s).rstrip(".").replace("\\!", "").replace("dfrac", "frac").replace("tfrac", "frac")


def group_answers(answers: list[str | None]) -> list[int | None]:
    """Cluster answers by equivalence: answer i gets the index of its cluster's first member
    (None stays None). Each answer is compared with one representative per cluster."""
    reps: list[int] = []
    groups: list[int | None] = []
    for i, a in enumerate(answers):
        if a is None:
            groups.append(None)
            continue
        for r in reps:
            ra = answers[r]
            if ra is not None and equivalent(ra, a):
                groups.append(r)
                break
        else:
            reps.append(i)
            groups.append(i)
    return groups
