"""`RunSpec`: what every strategy of a run shares besides the problem, the engine, the
verifier and the budget. One object in place of the same four keywords on every strategy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

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

    @classmethod
    def from_options(cls, params: SamplingParams, system: str, aggregation: str, options: Mapping[str, Any]) -> RunSpec:
        """A run's spec, its step tokens taken from the run's search options when they set them."""
        return cls(params, system, aggregation, int(options.get("step_tokens", cls.step_tokens)))

    def with_seed(self, seed: int) -> RunSpec:
        return replace(self, params=replace(self.params, seed=seed))
