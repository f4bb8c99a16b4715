"""What grading asks math-verify, run inside the worker processes of `bounded.POOL`. The
parent names these functions and never imports this module, so math-verify and sympy load only
in the workers. Inside a worker each call runs on its main thread, where math-verify's own
alarm works too."""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from .grading import HUGE_ANSWER, MAX_ANSWER_CHARS, TIMEOUT_SECONDS, last_boxed

_PRED_CONFIG = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())


def _timeout() -> int | None:
    return TIMEOUT_SECONDS if threading.current_thread() is threading.main_thread() else None


def extract(text: str) -> str | None:
    """grading.extract_answer's work."""
    boxed = last_boxed(text)
    if boxed is not None:
        text = "\\boxed{" + boxed + "}"  # a solution that boxes twice means the last one
    parsed = parse(text, extraction_config=list(_PRED_CONFIG), parsing_timeout=_timeout())
    if len(parsed) < 2 or not str(parsed[1]).strip():
        return None
    return str(parsed[1]).strip()


@lru_cache(maxsize=100_000)
def _parsed(answer: str) -> tuple[Any, ...]:
    if len(answer) > MAX_ANSWER_CHARS or HUGE_ANSWER.search(answer):
        return ()
    return tuple(parse("\\boxed{" + answer + "}", parsing_timeout=_timeout()))


def parses(answer: str) -> bool:
    return bool(_parsed(answer))


def equivalent(a: str, b: str) -> bool:
    """grading.equivalent's work."""
    pa, pb = _parsed(a), _parsed(b)
    if not pa or not pb:
        return False
    return bool(verify(list(pa), list(pb), timeout_seconds=_timeout()))
