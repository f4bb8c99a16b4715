"""LLM-as-judge verifier: the policy model itself is asked whether the last step is correct,
and the step's score is P("Yes") against P("No") at the first token of its reply.

It works with any engine that can return next-token log-probabilities. Each step costs one
forward pass over the judge prompt, most of which is cached: the prompt for step k+1
extends the prompt for step k, and scores are memoised per (problem, steps so far).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

from ..core import Candidate, Compute, Problem, Prompt

JUDGE_SYSTEM = (
    "You are a strict math teacher. You check a student's solution one step at a time. Answer only Yes or No."
)


class NextTokenEngine(Protocol):
    def next_token_logprobs(
        self, prompts: Sequence[Prompt], tokens: Sequence[str]
    ) -> tuple[list[list[float]], Compute]: ...


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
        compute = Compute()
        if wanted:
            logprobs, spent = self.engine.next_token_logprobs(list(wanted.values()), self.tokens)
            # The judge's forward passes are verifier work, whatever model runs them.
            compute = Compute(verifier_tokens=spent.prompt_tokens, wall_time=spent.wall_time, flops=spent.flops)
            for key, (lp_yes, lp_no) in zip(wanted, logprobs, strict=True):
                self._memo[key] = 1.0 / (1.0 + math.exp(lp_no - lp_yes))
        scores = [
            [self._memo[(problem.question, tuple(s.text for s in c.steps[:k]))] for k in range(1, len(c.steps) + 1)]
            or [0.0]
            for c in candidates
        ]
        return scores, compute
