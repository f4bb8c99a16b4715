"""`RunSpec`: what every strategy of a run shares besides the problem, the engine, the
verifier and the budget. One object in place of the same four keywords on every strategy."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..core import SamplingParams, check_aggregation
from ..tasks.prompts import SYSTEM_PROMPT


@dataclass(frozen=True)
class RunSpec:
    params: SamplingParams = field(default_factory=SamplingParams)
    """How samples are drawn; its seed is the strategy's base seed."""
    system: str = SYSTEM_PROMPT
    """The system prompt every solution is sampled under."""
    aggregation: str = "mean"
    """How a solution's step scores become one score: last, min, prod or mean."""
    step_tokens: int = 256
    """Tokens at most per step of a step-level search."""

    def __post_init__(self) -> None:
        check_aggregation(self.aggregation)
        if isinstance(self.step_tokens, bool) or not isinstance(self.step_tokens, int) or self.step_tokens < 1:
            raise ValueError(f"step_tokens must be a positive integer, not {self.step_tokens!r}")

    def with_seed(self, seed: int) -> RunSpec:
        return replace(self, params=replace(self.params, seed=seed))
