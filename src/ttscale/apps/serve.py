"""`ttscale serve`'s service: what a chat-completions request asks (validated), the bounded
queue and the workers that run strategies, and the reply. The HTTP layer on top is `http.py`.

POST /v1/chat/completions picks the strategy and budget from the request: a model name
suffix ("qwen2.5-coder-0.5b:beam_search") or an extra body field
{"ttscale": {"strategy": ..., "n": ..., "scorer": ..., "return_candidates": true}}, with the
server's defaults for the rest. The reply's `usage` counts every generated token (all
candidates, a trace stopped early included) and the verifier's tokens; `ttscale` in the reply
carries the answer, the compute, what the run found on the way (`outcome`: a stopping vote's
samples saved, DeepConf's floor) and, when asked, every candidate with its score, tokens and
finish reason.

Work is bounded: a fixed number of workers run strategies, a queue of limited length holds
the waiting requests, and a request that finds the queue full gets HTTP 429 at once. A job
whose client gave up (a timeout or a disconnect) is cancelled: skipped if it still waits,
stopped at its next engine call if it runs.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from ..core import Generator, Problem, SamplingParams
from ..strategies.catalogue import CATALOGUE, check_domain, run_strategy
from ..strategies.spec import RunSpec
from ..tasks.code import CODE_SYSTEM_PROMPT, FENCE, code_problem, strip_fences
from ..tasks.code_domain import CodeDomain
from ..tasks.domain import domain_of
from ..tasks.prompts import SYSTEM_PROMPT
from ..verifiers.model_free import MODEL_FREE
from ..verifiers.registry import CODE_SCORERS, make_scorer


class BadRequest(ValueError):
    pass


@dataclass
class ServeConfig:
    model: str
    """The model name the server answers as (and lists under /v1/models)."""
    strategy: str = "weighted_best_of_n"
    """The strategy of a request that names none."""
    n: int = 4
    """The budget of a request that names none."""
    scorer: str = "logprob"
    """The verifier of a request that names none."""
    aggregation: str = "mean"
    """How step scores become a solution score."""
    sampling: SamplingParams = field(default_factory=SamplingParams)
    """Sampling of a request that sets none (a request may set temperature, top_p, max_tokens, seed)."""
    workers: int = 1
    """Strategies running at once, one engine each."""
    queue_limit: int = 8
    """Requests that may wait; beyond that, HTTP 429."""
    timeout: float = 300.0
    """Seconds a request may take in all (HTTP 504 after)."""
    search: dict[str, Any] = field(default_factory=dict)
    """Search options (beam width, lookahead, ...) for every request."""
    max_n: int = 64
    """The largest budget a request may ask for."""
    max_tokens_limit: int = 4096
    """The largest max_tokens a request may ask for."""
    max_input_chars: int = 20_000
    """The longest conversation a request may send."""
    max_total_tokens: int = 65_536
    """A request's budget times its max_tokens at most: what one request may make the engine generate."""
    api_key: str | None = None
    """When set, every route but /health needs "Authorization: Bearer <key>" (as vLLM's --api-key)."""
    body_timeout: float = 30.0
    """Seconds a client may take to send its request body."""


@dataclass
class Job:
    problem: Problem
    system: str
    strategy: str
    n: int
    scorer: str
    params: SamplingParams
    return_candidates: bool
    stream: bool = False
    future: Future = field(default_factory=Future)
    cancelled: threading.Event = field(default_factory=threading.Event)
    progress: dict[str, Any] = field(default_factory=lambda: {"engine_calls": 0, "generated_tokens": 0})


class JobCancelled(RuntimeError):
    pass


class _Watched:
    """The worker's engine as one job sees it: every call first checks whether the job was
    cancelled (its client gave up), and counts what it generated (progress for streaming)."""

    def __init__(self, generator: Generator, job: Job) -> None:
        self._generator = generator
        self._job = job

    def generate(self, prompts: Any, n: int, params: SamplingParams) -> Any:
        if self._job.cancelled.is_set():
            raise JobCancelled("the client gave up")
        out = self._generator.generate(prompts, n, params)
        self._job.progress["engine_calls"] += 1
        self._job.progress["generated_tokens"] += out.compute.generated_tokens
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._generator, name)


def allowed_scorers(cfg: ServeConfig, task: str = "math") -> list[str]:
    """The verifiers a request may name: the free ones (on code, the execution ones too), and
    the one the server was started with."""
    return list(dict.fromkeys([*MODEL_FREE, *(CODE_SCORERS if task == "code" else ()), cfg.scorer]))


def _a_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("must be a number")  # not a bool, not a string
    return float(value)


Number = Annotated[float, BeforeValidator(_a_number)]


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    role: Literal["system", "user", "assistant"]
    content: str


class Options(BaseModel):
    """The request's "ttscale" field: what the OpenAI API has no word for."""

    model_config = ConfigDict(extra="forbid", strict=True)
    strategy: str | None = None
    n: int | None = None
    scorer: str | None = None
    return_candidates: bool = False
    task: Literal["math", "code"] = "math"
    """code: the last user message is a function's signature and docstring to complete."""
    entry_point: str | None = Field(default=None, max_length=200)


class ChatRequest(BaseModel):
    """The part of an OpenAI chat-completions body this server reads (other fields are ignored)."""

    model_config = ConfigDict(extra="ignore", strict=True)
    messages: list[Message] = Field(min_length=1)
    model: str | None = None
    stream: bool = False
    n: int = 1
    max_tokens: int | None = None
    temperature: Number | None = None
    top_p: Number | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    ttscale: Options | None = None


def _shape(body: Any) -> ChatRequest:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    try:
        return ChatRequest.model_validate(body)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise BadRequest(f"{where}: {first['msg']}{more}") from None


def parse_request(body: Any, cfg: ServeConfig) -> Job:
    """A validated job from a chat-completions body, or BadRequest saying what is wrong: the
    shape by pydantic (ChatRequest), the limits of this server here."""
    req = _shape(body)
    if req.n != 1:
        raise BadRequest("n must be 1 (one answer per request); the test-time budget is ttscale.n")
    if sum(len(m.content) for m in req.messages) > cfg.max_input_chars:
        raise BadRequest(f"the messages exceed {cfg.max_input_chars} characters")
    users = [m.content for m in req.messages if m.role == "user"]
    if not users or not users[-1].strip():
        raise BadRequest("there is no user message to answer")
    extra = req.ttscale or Options()
    default_system = CODE_SYSTEM_PROMPT if extra.task == "code" else SYSTEM_PROMPT
    system = next((m.content for m in req.messages if m.role == "system"), default_system)
    model = req.model or cfg.model
    if model.split(":", 1)[0] != cfg.model:
        raise BadRequest(f"unknown model {model[:60]!r}; this server answers as {cfg.model} (see /v1/models)")
    strategy = extra.strategy or (model.split(":", 1)[1] if ":" in model else cfg.strategy)
    if strategy not in CATALOGUE:
        raise BadRequest(f"unknown strategy {strategy[:40]!r}; choose from {', '.join(CATALOGUE)}")
    try:
        check_domain(strategy, extra.task)
        problem = _problem(users[-1], extra)
    except ValueError as e:
        raise BadRequest(str(e)) from None
    n = cfg.n if extra.n is None else extra.n
    if not 1 <= n <= cfg.max_n:
        raise BadRequest(f"n (the budget) must be an integer from 1 to {cfg.max_n}")
    scorer = extra.scorer or cfg.scorer
    allowed = allowed_scorers(cfg, extra.task)
    if scorer not in allowed:  # never a path from the request: only what the server was started with
        raise BadRequest(f"unavailable scorer {scorer[:40]!r}; this server offers {', '.join(allowed)}")
    params = _sampling(req, cfg, n)
    return Job(
        problem=problem,
        system=system,
        strategy=strategy,
        n=n,
        scorer=scorer,
        params=params,
        return_candidates=extra.return_candidates,
        stream=req.stream,
    )


def _problem(text: str, extra: Options) -> Problem:
    pid = f"req-{uuid.uuid4().hex[:8]}"
    if extra.task == "code":  # parsed, never run here: its code runs only in the sandbox
        return code_problem(strip_fences(text), extra.entry_point, pid)
    return Problem(id=pid, question=text)


def _sampling(req: ChatRequest, cfg: ServeConfig, n: int) -> SamplingParams:
    s = cfg.sampling
    max_tokens = _within("max_tokens", req.max_tokens, s.max_tokens, 1, cfg.max_tokens_limit)
    if n * max_tokens > cfg.max_total_tokens:
        raise BadRequest(f"n x max_tokens = {n * max_tokens} exceeds this server's {cfg.max_total_tokens}")
    try:
        return SamplingParams(
            temperature=float(_within("temperature", req.temperature, s.temperature, 0.0, 2.0)),
            top_p=float(_within("top_p", req.top_p, s.top_p, 0.0, 1.0)),
            top_k=_within("top_k", req.top_k, s.top_k, 0, 1000),
            max_tokens=max_tokens,
            stop=_stop(req.stop),
            seed=_within("seed", req.seed, s.seed, 0, 2**31 - 1),
        )
    except ValueError as e:
        raise BadRequest(str(e)) from None


def _within(key: str, value: Any, default: Any, lo: float, hi: float) -> Any:
    if value is None:
        return default
    if not lo <= value <= hi:
        raise BadRequest(f"{key} must be between {lo} and {hi}")
    return value


def _stop(value: str | list[str] | None) -> tuple[str, ...]:
    """OpenAI's stop: a string or up to 4 strings."""
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value  # strings: the request model checked
    if len(stops) > 4 or not all(0 < len(x) <= 64 for x in stops):
        raise BadRequest("stop must be a string or a list of at most 4 non-empty strings of at most 64 characters")
    return tuple(stops)


class Service:
    """The bounded queue and its workers around one generator."""

    def __init__(self, cfg: ServeConfig, make_generator: Callable[[], Generator]) -> None:
        self.cfg = cfg
        self.running = 0  # jobs a worker is on now
        self._count = threading.Lock()  # workers on several threads update `running`
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=cfg.queue_limit)
        self.generators = [make_generator() for _ in range(cfg.workers)]
        self.threads = [threading.Thread(target=self._work, args=(g,), daemon=True) for g in self.generators]
        for t in self.threads:
            t.start()

    def submit(self, job: Job) -> bool:
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            return False
        return True

    def _work(self, generator: Generator) -> None:
        while True:
            job = self.queue.get()
            if job.cancelled.is_set() or not job.future.set_running_or_notify_cancel():
                continue  # its client gave up while it waited
            with self._count:
                self.running += 1
            try:
                spec = RunSpec.from_options(job.params, job.system, self.cfg.aggregation, self.cfg.search)
                watched: Any = _Watched(generator, job)
                scorer = make_scorer(job.scorer, watched, job.system)
                result = run_strategy(job.strategy, job.problem, watched, scorer, job.n, spec, self.cfg.search)
                job.future.set_result(result)
            except Exception as e:  # reported to the client as a 500 (or dropped: it gave up)
                job.future.set_exception(e)
            finally:
                with self._count:
                    self.running -= 1


def _content(chosen: Any, answer: str | None, code: bool) -> str:
    """The chosen solution; for a code task, the chosen program in a code block."""
    if chosen is None:
        return ""
    return f"{FENCE}python\n{answer}{FENCE}" if code and answer else chosen.text


def response_body(job: Job, result: Any, model: str) -> dict[str, Any]:
    chosen = result.candidates[result.chosen] if result.chosen is not None else None
    domain = domain_of(job.problem)
    code = isinstance(domain, CodeDomain)
    c = result.compute
    body: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": _content(chosen, result.answer, code)},
                "finish_reason": "stop" if chosen and chosen.finish_reason != "length" else "length",
            }
        ],
        "usage": {
            "prompt_tokens": c.prompt_tokens + c.cached_prompt_tokens,
            "completion_tokens": c.generated_tokens,
            "total_tokens": c.prompt_tokens + c.cached_prompt_tokens + c.generated_tokens + c.verifier_tokens,
            "prompt_tokens_details": {"cached_tokens": c.cached_prompt_tokens},
            "verifier_tokens": c.verifier_tokens,
        },
        "ttscale": {
            "strategy": job.strategy,
            "n": job.n,
            "scorer": job.scorer,
            "answer": result.answer,
            "compute": c.to_dict(),
            "seed": job.params.seed,
            # what the run found on the way: a stopping vote's samples saved, DeepConf's floor
            "outcome": result.outcome,
        },
    }
    if chosen is None:  # an empty content is not silent
        body["ttscale"]["note"] = f"no candidate reached an answer ({len(result.candidates)} tried)"
    if job.return_candidates:
        body["ttscale"]["candidates"] = [
            {
                "text": x.text,
                "answer": x.answer,
                "score": x.score,
                "step_scores": x.step_scores,
                "tokens": x.n_tokens,  # a trace stopped early ("low_confidence") is charged what it generated
                "finish_reason": x.finish_reason,
            }
            for x in result.candidates
        ]
        if isinstance(domain, CodeDomain):  # what each program did on the examples and the model's tests
            for row, did in zip(
                body["ttscale"]["candidates"], domain.describe([x.answer for x in result.candidates]), strict=True
            ):
                row.update(examples=did["examples"], tests=did["tests"])
    return body
