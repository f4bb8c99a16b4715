"""LLM-as-judge verifiers: a model is asked whether a solution is correct, and the score is
P("Yes") against P("No") at the first token of its reply.

- `LLMJudgeScorer` ("judge"): the policy model judges every step. Each step costs one
  forward pass over the judge prompt, most of which is cached: the prompt for step k+1
  extends the prompt for step k, and scores are memoised per (problem, steps so far).
- `OutcomeJudgeScorer` ("outcome_judge[:MODEL]"): a model, the policy or a larger one
  (`readers.reader_engine`), judges the whole solution once: one prefill per solution, no
  decoding, the problem's prefix shared by its solutions in the cache.

Both work with any engine that returns next-token log-probabilities; their forward passes
are verifier tokens and FLOPs, charged with the judging model's size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from ..core import Candidate, Compute, Problem, Prompt

JUDGE_SYSTEM = (
    "You are a strict math teacher. You check a student's solution one step at a time. Answer only Yes or No."
)


class NextTokenEngine(Protocol):
    def next_token_logprobs(
        self, prompts: Sequence[Prompt], tokens: Sequence[str]
    ) -> tuple[list[list[float]], Compute]: ...


OUTCOME_SYSTEM = "You are a strict math teacher. You check a student's whole solution. Answer only Yes or No."


def _as_verifier_work(spent: Compute) -> Compute:
    return Compute(verifier_tokens=spent.prompt_tokens, wall_time=spent.wall_time, flops=spent.flops)


def _yes_share(logprobs: Sequence[Sequence[float]]) -> list[float]:
    return [1.0 / (1.0 + math.exp(lp_no - lp_yes)) for lp_yes, lp_no in logprobs]


def p_yes(engine: NextTokenEngine, prompts: Sequence[Prompt], yes: str, no: str) -> tuple[list[float], Compute]:
    """P(yes) against P(no) as the first token of the reply to each prompt, and the forward
    passes' cost as verifier work, whatever model runs them."""
    if not prompts:
        return [], Compute()
    logprobs, spent = engine.next_token_logprobs(list(prompts), (yes, no))
    return _yes_share(logprobs), _as_verifier_work(spent)


def read_judgement(
    engine: Any, prompts: Sequence[Prompt], yes: str = "Yes", no: str = "No"
) -> tuple[list[float], np.ndarray, Compute]:
    """`p_yes`, and the judging engine's layer states where it decides (the last prompt
    token), (prompts, layers, width), from the same forward pass: a probe of the judge reads
    them (`layer_reward`, the "judge" reader)."""
    logprobs, states, spent = engine.read_next_token(list(prompts), (yes, no), states=True)
    return _yes_share(logprobs), states, _as_verifier_work(spent)


def outcome_prompt(question: str, solution: str) -> Prompt:
    user = (
        f"Problem:\n{question.strip()}\n\nStudent's solution:\n\n{solution.strip()}\n\n"
        "Is this solution correct, with the right final answer? Answer Yes or No."
    )
    return Prompt(messages=(("system", OUTCOME_SYSTEM), ("user", user)))


def judge_prompt(question: str, steps: Sequence[str]) -> Prompt:
    shown = "\n\n".join(f"Step {k}: {s}" for k, s in enumerate(steps, start=1))
    user = (
        f"Problem:\n{question.strip()}\n\nStudent's solution so far:\n\n{shown}\n\n"
        f"Is Step {len(steps)} correct? Answer Yes or No."
    )
    return Prompt(messages=(("system", JUDGE_SYSTEM), ("user", user)))


class LLMJudgeScorer:
    name = "judge"

    def __init__(self, engine: NextTokenEngine, yes: str = "Yes", no: str = "No") -> None:
        self.engine = engine
        self.tokens = (yes, no)
        self._memo: dict[tuple[str, tuple[str, ...]], float] = {}

    def score(self, problem: Problem, candidates: Sequence[Candidate]) -> tuple[list[list[float]], Compute]:
        wanted: dict[tuple[str, tuple[str, ...]], Prompt] = {}
        for c in candidates:
            texts = [s.text for s in c.steps]
            for k in range(1, len(texts) + 1):
                key = (problem.question, tuple(texts[:k]))
                if key not in self._memo:
                    wanted[key] = judge_prompt(problem.question, texts[:k])
        probabilities, compute = p_yes(self.engine, list(wanted.values()), *self.tokens)
        self._memo.update(zip(wanted, probabilities, strict=True))
        scores = [
            [self._memo[(problem.question, tuple(s.text for s in c.steps[:k]))] for k in range(1, len(c.steps) + 1)]
            or [0.0]
            for c in candidates
        ]
        return scores, compute


class OutcomeJudgeScorer:
    """One score per solution (a list of one): the judging model's P(Yes) that it is right.
    Identical solution texts are judged once."""

    def __init__(self, engine: NextTokenEngine, name: str = "outcome_judge", yes: str = "Yes", no: str = "No"):
        self.engine = engine
        self.name = name
        self.tokens = (yes, no)

    def score(self, problem: Problem, candidates: Sequence[Candidate]) -> tuple[list[list[float]], Compute]:
        texts = list(dict.fromkeys(c.text for c in candidates))
        probabilities, compute = p_yes(self.engine, [outcome_prompt(problem.question, t) for t in texts], *self.tokens)
        by_text = dict(zip(texts, probabilities, strict=True))
        return [[by_text[c.text]] for c in candidates], compute
