"""How to sample: `SamplingParams`, the one object every engine reads. It checks itself when
it is made, so no caller re-checks its ranges."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

MAX_SEED = 2**63 - 1
CONFIDENCE_WINDOW = 32  # tokens over which a sample's confidence is watched (DeepConf's group)


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.7
    """Softmax temperature; 0 means greedy decoding."""
    top_p: float = 0.8
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p, in (0, 1]."""
    top_k: int = 20
    """Keep only the k most likely tokens; 0 keeps them all."""
    max_tokens: int = 1024
    """Generated tokens at most per sample (per step, in a step search's expansion)."""
    stop: tuple[str, ...] = ()
    """Strings that end a sample; the text is cut before the first one."""
    seed: int = 0
    """The call's seed: sample j of prompt i draws with a seed derived from (seed, i, j)."""
    confidence_floor: float | None = None
    """DeepConf's online stop: a sample whose mean self-certainty over its last
    CONFIDENCE_WINDOW tokens falls below this ends there, finish reason "low_confidence"
    (its tokens are still generated, and counted). None never stops one. An engine that
    cannot watch its tokens refuses it."""

    def __post_init__(self) -> None:
        _number("temperature", self.temperature, 0.0, math.inf)
        _number("top_p", self.top_p, 0.0, 1.0, open_low=True)
        _integer("top_k", self.top_k, 0, 2**31 - 1)
        _integer("max_tokens", self.max_tokens, 1, 2**31 - 1)
        _integer("seed", self.seed, 0, MAX_SEED)
        if isinstance(self.stop, str) or not all(isinstance(s, str) for s in self.stop):
            raise ValueError(f"stop must be a sequence of strings, not {self.stop!r}")
        if not isinstance(self.stop, tuple):
            object.__setattr__(self, "stop", tuple(self.stop))
        if self.confidence_floor is not None:
            _number("confidence_floor", self.confidence_floor, 0.0, math.inf)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        if self.confidence_floor is None:  # the layout of every run stored before it existed
            del d["confidence_floor"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SamplingParams:
        return cls(**{**d, "stop": tuple(d.get("stop", ()))})


def _number(name: str, value: Any, lo: float, hi: float, open_low: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{name} must be a number, not {value!r}")
    if value < lo or value > hi or (open_low and value == lo):
        low = f"above {lo}" if open_low else f"at least {lo}"
        raise ValueError(f"{name} must be {low}" + (f" and at most {hi}" if hi != math.inf else "") + f", not {value}")


def _integer(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, not {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be from {lo} to {hi}, not {value}")
