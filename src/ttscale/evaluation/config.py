"""What an evaluation run is: its configuration, the part of it that must match for two runs
to share a samples file (its identity), and the key every record is stored under."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any

from ..core import SamplingParams
from ..strategies.catalogue import CATALOGUE, PER_BUDGET_STRATEGIES, POOL_STRATEGIES
from ..strategies.spec import RunSpec
from ..tasks.code import CODE_SYSTEM_PROMPT, FENCE
from ..tasks.prompts import SYSTEM_PROMPT
from ..verifiers.registry import scorer_name


class EvalError(RuntimeError):
    pass


@dataclass(frozen=True)
class RecordKey:
    """The key of one stored piece of work: a problem's pool ("pool|ID"), or one search run
    ("search|ID|STRATEGY|N|VERIFIER|AGGREGATION|SETTINGS", the settings as sorted JSON, so
    runs with other options never collide)."""

    kind: str  # "pool" or "search"
    problem_id: str
    strategy: str = ""
    n: int = 0
    scorer: str = ""
    aggregation: str = ""
    settings: str = ""

    @classmethod
    def pool(cls, problem_id: str) -> RecordKey:
        return cls("pool", problem_id)

    @classmethod
    def search(
        cls, problem_id: str, strategy: str, n: int, scorer: str, aggregation: str, options: dict[str, Any]
    ) -> RecordKey:
        return cls("search", problem_id, strategy, n, scorer, aggregation, json.dumps(options, sort_keys=True))

    def format(self) -> str:
        if self.kind == "pool":
            return f"pool|{self.problem_id}"
        return f"search|{self.problem_id}|{self.strategy}|{self.n}|{self.scorer}|{self.aggregation}|{self.settings}"

    @classmethod
    def parse(cls, text: str) -> RecordKey:
        kind, _, rest = text.partition("|")
        if kind == "pool" and rest:
            return cls("pool", rest)
        parts = rest.split("|", 5)
        if kind != "search" or len(parts) != 6 or not parts[2].isdigit():
            raise ValueError(f"not a record key: {text!r}")
        pid, strategy, n, scorer, aggregation, settings = parts
        return cls("search", pid, strategy, int(n), scorer, aggregation, settings)

    @classmethod
    def of(cls, record: dict[str, Any]) -> RecordKey:
        """A stored record's key: pool records carry none (their id names them)."""
        return cls.parse(record["key"]) if record.get("key") else cls.pool(record["id"])

    @property
    def options(self) -> dict[str, Any]:
        return json.loads(self.settings) if self.settings else {}


def record_key(record: dict[str, Any]) -> str:
    return record.get("key") or RecordKey.pool(record["id"]).format()


@dataclass
class EvalConfig:
    dataset: str = "gsm8k"
    ns: tuple[int, ...] = (8,)
    model: str = "qwen2.5-coder-0.5b"
    seed: int = 0
    sampling: SamplingParams = field(default_factory=SamplingParams)
    system_prompt: str = SYSTEM_PROMPT
    limit: int | None = None
    start: int = 0  # skip the first `start` problems (a calibration slice beside an evaluation one)
    levels: tuple[int, ...] | None = None  # only problems of these difficulty levels (MATH), before start/limit
    strategies: tuple[str, ...] = POOL_STRATEGIES
    scorer: str = "logprob"
    aggregation: str = "mean"
    question_field: str | None = None
    answer_field: str | None = None
    search: dict[str, Any] = field(default_factory=dict)  # beam_width, lookahead, max_iterations, ...
    shard: tuple[int, int] | None = None  # (i, k): every k-th problem from the i-th, for several machines
    # what samples: {"kind": "llama.cpp", "threads": T} or {"kind": "openai", "model": M}; kept
    # with every record (llama.cpp's arithmetic follows the thread count) and in config.json
    engine: dict[str, Any] | None = None

    @property
    def pool_n(self) -> int:
        return max(self.ns)

    @property
    def pool_strategies(self) -> tuple[str, ...]:
        return tuple(s for s in self.strategies if s in POOL_STRATEGIES)

    @property
    def search_strategies(self) -> tuple[str, ...]:
        return tuple(s for s in self.strategies if s in PER_BUDGET_STRATEGIES)

    def for_code(self) -> None:
        """A code set's own defaults, recorded with the run: its system prompt, and a stop at
        the end of the program's block."""
        if self.system_prompt == SYSTEM_PROMPT:
            self.system_prompt = CODE_SYSTEM_PROMPT
        if FENCE not in self.sampling.stop:
            self.sampling = replace(self.sampling, stop=(*self.sampling.stop, FENCE))

    def check(self) -> None:
        """Refuse unknown names and budgets before any work starts."""
        for s in self.strategies:
            if s not in CATALOGUE:
                raise EvalError(f"unknown strategy {s!r}; choose from {', '.join(CATALOGUE)}")
        if not self.ns or min(self.ns) < 1:
            raise EvalError("budgets (--n) must be positive")

    def run_spec(self, seed: int) -> RunSpec:
        """The spec every strategy of this run gets, seeded for one problem."""
        params = SamplingParams.from_dict({**self.sampling.to_dict(), "seed": seed})
        return RunSpec.from_options(params, self.system_prompt, self.aggregation, self.search)

    def identity(self) -> dict[str, Any]:
        """What must match for two runs to share a samples file. The limit, the strategies
        and the scorer only select work, so they may differ between resumes."""
        return {
            "dataset": self.dataset,
            "fields": [self.question_field, self.answer_field],
            "n": self.pool_n,
            "model": self.model,
            "seed": self.seed,
            "sampling": self.sampling.to_dict(),
            "system_prompt_sha1": hashlib.sha1(self.system_prompt.encode()).hexdigest(),
        }

    def search_key(self, problem_id: str, strategy: str, n: int) -> str:
        return RecordKey.search(
            problem_id, strategy, n, scorer_name(self.scorer), self.aggregation, self.search
        ).format()

    def work_keys(self, problem_id: str) -> list[str]:
        """Every piece of work this run asks of one problem."""
        keys = [RecordKey.pool(problem_id).format()] if self.pool_strategies else []
        return keys + [self.search_key(problem_id, s, n) for s in self.search_strategies for n in sorted(self.ns)]


def shard_text(shard: tuple[int, int] | None) -> str | None:
    return None if shard is None else f"{shard[0]}/{shard[1]}"
