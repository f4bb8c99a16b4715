"""The vocabulary of ttscale: problems, prompts, compute, steps, completions, candidates,
results, and the two interfaces every strategy is written against (Generator and Scorer).

Everything here is plain, picklable data: a strategy is a function of
(problem, generator, scorer, budget, run spec) that returns a Result, and nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Protocol, runtime_checkable

from .sampling import SamplingParams

STEP_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    gold: str | None = None  # the reference answer, never shown to the model
    meta: dict[str, Any] = field(default_factory=dict)


CODE_COMPUTE = ("executed_tests", "execution_time", "test_tokens")


@dataclass
class Compute:
    """What a piece of work cost. Prompt tokens are split into those the engine actually
    computed and those it served from its KV cache, so shared prefixes are not hidden.

    generated_tokens: sampled by the policy, every candidate's (cut-off ones too);
    prompt_tokens: computed by the engine (prefill); cached_prompt_tokens: served from its KV
    cache; verifier_tokens: read by a verifier model (judge, PRM, a probe replaying stored
    text); wall_time: seconds on the machine that ran it; flops: 2 x parameters x tokens
    computed, the verifier's included. Code tasks add: executed_tests, how many
    (program, test) pairs ran in the sandbox, and execution_time, the sandbox seconds they
    took; test_tokens, the tokens of tests the model wrote (counted in generated_tokens too)."""

    generated_tokens: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    verifier_tokens: int = 0
    wall_time: float = 0.0
    flops: float = 0.0
    executed_tests: int = 0
    execution_time: float = 0.0
    test_tokens: int = 0

    def __add__(self, other: Compute) -> Compute:
        return Compute(
            generated_tokens=self.generated_tokens + other.generated_tokens,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            cached_prompt_tokens=self.cached_prompt_tokens + other.cached_prompt_tokens,
            verifier_tokens=self.verifier_tokens + other.verifier_tokens,
            wall_time=self.wall_time + other.wall_time,
            flops=self.flops + other.flops,
            executed_tests=self.executed_tests + other.executed_tests,
            execution_time=self.execution_time + other.execution_time,
            test_tokens=self.test_tokens + other.test_tokens,
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in CODE_COMPUTE:  # kept out of the records of tasks that run no code
            if not d[k]:
                del d[k]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Compute:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def model_flops(n_params: int, tokens: int) -> float:
    """The usual forward-pass estimate: 2 x parameters x tokens."""
    return 2.0 * n_params * tokens


def common_prefix(a: Sequence[object], b: Sequence[object]) -> int:
    """Length of the longest common prefix of two token sequences."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass
class Step:
    """One blank-line-separated step of a solution, with the token statistics the engine
    measured while generating it (enough for the log-probability verifiers)."""

    text: str
    n_tokens: int = 0
    logprob_sum: float = 0.0
    logprob_min: float = 0.0
    certainty_sum: float = 0.0
    # the policy's final hidden state at the step's last token, when the engine provides it
    # (what the value probe reads); never serialised
    hidden: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "hidden"}


@dataclass
class LayerStates:
    """Chosen layers' hidden states of one completion, pooled while the engine decoded it
    (memory bounded by the steps, not the tokens). Arrays are float16, indexed
    [step or token, layer, unit]. A token's state is the residual stream after the layer at
    that token's position, as the next token was sampled from it."""

    layers: tuple[int, ...]  # as the model counts them, 0 = the first block
    step_ends: list[int]  # the index of each step's last token with a state
    step_last: Any  # (steps, layers, width): the state at that token
    step_mean: Any  # (steps, layers, width): the mean over the step's tokens
    tail_start: int  # the index of the first token in `tail`
    tail: Any  # (tokens, layers, width): the last tokens one by one, where an answer is written


@dataclass
class Completion:
    """One sampled continuation, as an engine returns it."""

    text: str
    token_ids: list[int]
    logprobs: list[float]  # log p(token) under the model's untempered distribution
    certainties: list[float]  # per-token self-certainty: KL(uniform || p)
    token_offsets: list[int]  # byte offset in text.encode() where each token starts
    finish_reason: str  # "stop" (a stop string), "eos" or "length"
    # (index of a step's last generated token, -1 for the prompt's last; the model's final
    # hidden state there), at every step end: only from engines asked for hidden states
    hidden: list[tuple[int, Any]] = field(default_factory=list)
    # several layers' states, pooled per step: only from engines asked for layers
    layer_states: LayerStates | None = field(default=None, repr=False, compare=False)

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class Generation:
    completions: list[list[Completion]]  # one list of n completions per prompt
    compute: Compute


@dataclass(frozen=True)
class Prompt:
    """A chat prompt plus an optional partial assistant answer to continue."""

    messages: tuple[tuple[str, str], ...]  # (role, content) pairs
    partial: str = ""

    def extended(self, text: str) -> Prompt:
        return Prompt(self.messages, self.partial + text)


@runtime_checkable
class Generator(Protocol):
    name: str
    n_params: int

    def generate(self, prompts: Sequence[Prompt], n: int, params: SamplingParams) -> Generation:
        """n samples for each prompt, decoded together; sample j of prompt i uses a seed
        derived from (params.seed, i, j). Calls are reproducible from the same cache state."""
        ...

    def reset(self) -> None:
        """Drop all cached state, so that what follows depends only on its own calls."""
        ...


@dataclass
class Candidate:
    """A (possibly partial) solution with everything needed to pick among candidates."""

    text: str
    steps: list[Step]
    answer: str | None = None
    finish_reason: str = "eos"
    step_scores: list[float] = field(default_factory=list)
    score: float = float("nan")
    correct: bool | None = None
    # DeepConf's trace confidences ("lowest_group", "tail", "mean"), from the sampling pass;
    # empty for a text not sampled whole (a search node, a stored text without them)
    confidence: dict[str, float] = field(default_factory=dict)
    # what a reward over several layers reads (`tasks.layer_features`), from an engine that
    # read layers while sampling it; never serialised
    layer_features: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def n_tokens(self) -> int:
        return sum(s.n_tokens for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(replace(self, layer_features=None))  # asdict would deep-copy the arrays
        del d["layer_features"]
        d["steps"] = [s.to_dict() for s in self.steps]  # without hidden states: arrays, not JSON
        if math.isnan(self.score):
            d["score"] = None
        if not self.confidence:  # the layout of records written before it was kept
            del d["confidence"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Candidate:
        score = d.get("score")
        return cls(
            text=d["text"],
            steps=[Step(**s) for s in d["steps"]],
            answer=d.get("answer"),
            finish_reason=d.get("finish_reason", "eos"),
            step_scores=list(d.get("step_scores", [])),
            score=float("nan") if score is None else float(score),
            correct=d.get("correct"),
            confidence=dict(d.get("confidence") or {}),
        )


@runtime_checkable
class Scorer(Protocol):
    """A verifier: per-step scores for each candidate. Higher is better; scores are
    non-negative so weighted voting can sum them."""

    name: str

    def score(self, problem: Problem, candidates: Sequence[Candidate]) -> tuple[list[list[float]], Compute]: ...


@dataclass
class Result:
    """What a strategy returns. `settings` holds what was asked (inputs only, enough to run it
    again); `outcome` holds what the run found out on the way (every pick rule's answer, the
    rounds it ran, resamples, the difficulty it estimated, ...)."""

    strategy: str
    answer: str | None
    chosen: int | None  # index into candidates, None when nothing had an answer
    candidates: list[Candidate]
    compute: Compute
    settings: dict[str, Any] = field(default_factory=dict)
    trace: list[dict[str, Any]] | None = None  # every node a search made, for drawing the tree
    outcome: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def picked(
        cls,
        strategy: str,
        candidates: list[Candidate],
        chosen: int | None,
        compute: Compute,
        settings: dict[str, Any],
        outcome: dict[str, Any] | None = None,
        trace: list[dict[str, Any]] | None = None,
    ) -> Result:
        """The result whose answer is the chosen candidate's (none when nothing had one)."""
        answer = None if chosen is None else candidates[chosen].answer
        return cls(strategy, answer, chosen, candidates, compute, settings, trace, outcome or {})

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "answer": self.answer,
            "chosen": self.chosen,
            "settings": self.settings,
            "outcome": self.outcome,
            "compute": self.compute.to_dict(),
            "candidates": [c.to_dict() for c in self.candidates],
            "trace": self.trace,
        }
