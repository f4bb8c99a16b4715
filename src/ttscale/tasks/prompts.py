"""The default system prompt: reason in blank-line-separated steps, end with a boxed answer.

The default model is a coder model; left alone it tends to answer with a Python program,
which no verifier or grader can use. The prompt says so explicitly.
"""

from __future__ import annotations

from ..core import Prompt

SYSTEM_PROMPT = (
    "You are a careful mathematician. Solve the problem by reasoning in plain words and "
    "LaTeX. Do not write any code or programs.\n\n"
    "Write the solution as a sequence of short steps. Separate consecutive steps with a "
    "blank line, and keep each step on its own (no blank lines inside a step).\n\n"
    "End with exactly this sentence: Therefore, the final answer is $\\boxed{ANSWER}$. "
    "where ANSWER is just the final number or expression."
)


def problem_prompt(question: str, system: str = SYSTEM_PROMPT, partial: str = "") -> Prompt:
    return Prompt(messages=(("system", system), ("user", question.strip())), partial=partial)
