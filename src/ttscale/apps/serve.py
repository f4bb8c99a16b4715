"""`ttscale serve`: an OpenAI-compatible HTTP server whose answers come from a test-time strategy.

POST /v1/chat/completions picks the strategy and budget from the request: a model name
suffix ("qwen2.5-coder-0.5b:beam_search") or an extra body field
{"ttscale": {"strategy": ..., "n": ..., "scorer": ..., "return_candidates": true}}, with the
server's defaults for the rest. The reply's `usage` counts every generated token (all
candidates) and the verifier's tokens; `ttscale` in the reply carries the answer, the compute
and, when asked, every candidate with its score.

Work is bounded: a fixed number of workers run strategies, a queue of limited length holds
the waiting requests, and a request that finds the queue full gets HTTP 429 at once. A
request waits at most `timeout` seconds (HTTP 504). Every field is validated (HTTP 400 with a
message). Only the standard library is used.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..core import Generator, Problem, SamplingParams
from ..strategies.catalogue import CATALOGUE, run_strategy
from ..strategies.spec import RunSpec
from ..tasks.prompts import SYSTEM_PROMPT
from ..verifiers.model_free import MODEL_FREE
from ..verifiers.registry import make_scorer


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


@dataclass
class Job:
    problem: Problem
    system: str
    strategy: str
    n: int
    scorer: str
    params: SamplingParams
    return_candidates: bool
    future: Future = field(default_factory=Future)


def allowed_scorers(cfg: ServeConfig) -> list[str]:
    """The verifiers a request may name: the free ones, and the one the server was started with."""
    return list(dict.fromkeys([*MODEL_FREE, cfg.scorer]))


def parse_request(body: Any, cfg: ServeConfig) -> Job:
    """A validated job from a chat-completions body, or BadRequest saying what is wrong."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    if body.get("stream"):
        raise BadRequest("streaming is not supported")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list")
    for m in messages:
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("content"), str)
            or m.get("role") not in ("system", "user", "assistant")
        ):
            raise BadRequest("each message needs a role (system, user, assistant) and a string content")
    if sum(len(m["content"]) for m in messages) > cfg.max_input_chars:
        raise BadRequest(f"the messages exceed {cfg.max_input_chars} characters")
    users = [m["content"] for m in messages if m["role"] == "user"]
    if not users or not users[-1].strip():
        raise BadRequest("there is no user message to answer")
    system = next((m["content"] for m in messages if m["role"] == "system"), SYSTEM_PROMPT)
    extra = body.get("ttscale") or {}
    if not isinstance(extra, dict):
        raise BadRequest("ttscale must be an object")
    model = str(body.get("model") or cfg.model)
    strategy = extra.get("strategy") or (model.split(":", 1)[1] if ":" in model else cfg.strategy)
    if not isinstance(strategy, str) or strategy not in CATALOGUE:
        raise BadRequest(f"unknown strategy {strategy!r}; choose from {', '.join(CATALOGUE)}")
    n = extra.get("n", cfg.n)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= cfg.max_n:
        raise BadRequest(f"n (the budget) must be an integer from 1 to {cfg.max_n}")
    scorer = extra.get("scorer", cfg.scorer)
    allowed = allowed_scorers(cfg)
    if not isinstance(scorer, str) or scorer not in allowed:
        # never a path from the request: the server only offers what it was started with
        raise BadRequest(f"unavailable scorer {str(scorer)[:40]!r}; this server offers {', '.join(allowed)}")
    s = cfg.sampling
    max_tokens = _number(body, "max_tokens", s.max_tokens, int, 1, cfg.max_tokens_limit)
    temperature = _number(body, "temperature", s.temperature, float, 0.0, 2.0)
    top_p = _number(body, "top_p", s.top_p, float, 0.0, 1.0)
    seed = _number(body, "seed", s.seed, int, 0, 2**31 - 1)
    try:
        params = SamplingParams(temperature=temperature, top_p=top_p, top_k=s.top_k, max_tokens=max_tokens, seed=seed)
    except ValueError as e:
        raise BadRequest(str(e)) from None
    return Job(
        problem=Problem(id=f"req-{uuid.uuid4().hex[:8]}", question=users[-1]),
        system=system,
        strategy=strategy,
        n=n,
        scorer=scorer,
        params=params,
        return_candidates=bool(extra.get("return_candidates", False)),
    )


def _number(body: dict[str, Any], key: str, default: Any, kind: type, lo: float, hi: float) -> Any:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise BadRequest(f"{key} must be {'an integer' if kind is int else 'a number'}")
    if not lo <= value <= hi:
        raise BadRequest(f"{key} must be between {lo} and {hi}")
    return kind(value)


class Service:
    """The bounded queue and its workers around one generator."""

    def __init__(self, cfg: ServeConfig, make_generator: Callable[[], Generator]) -> None:
        self.cfg = cfg
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
            if not job.future.set_running_or_notify_cancel():
                continue  # its client gave up while it waited
            try:
                spec = RunSpec(
                    job.params, job.system, self.cfg.aggregation, int(self.cfg.search.get("step_tokens", 256))
                )
                scorer = make_scorer(job.scorer, generator, job.system)
                result = run_strategy(job.strategy, job.problem, generator, scorer, job.n, spec, self.cfg.search)
                job.future.set_result(result)
            except Exception as e:  # reported to the client as a 500
                job.future.set_exception(e)


def response_body(job: Job, result: Any, model: str) -> dict[str, Any]:
    chosen = result.candidates[result.chosen] if result.chosen is not None else None
    c = result.compute
    body: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": chosen.text if chosen else ""},
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
        },
    }
    if job.return_candidates:
        body["ttscale"]["candidates"] = [
            {"text": x.text, "answer": x.answer, "score": x.score, "step_scores": x.step_scores}
            for x in result.candidates
        ]
    return body


def make_handler(service: Service) -> type[BaseHTTPRequestHandler]:
    cfg = service.cfg

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, kind: str) -> None:
            self._send(status, {"error": {"message": message, "type": kind, "code": status}})

        def do_GET(self) -> None:
            if self.path.rstrip("/") != "/v1/models":
                return self._error(404, f"no route {self.path}", "not_found")
            ids = [cfg.model] + [f"{cfg.model}:{s}" for s in CATALOGUE]
            self._send(
                200, {"object": "list", "data": [{"id": i, "object": "model", "owned_by": "ttscale"} for i in ids]}
            )

        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/v1/chat/completions":
                return self._error(404, f"no route {self.path}", "not_found")
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if length > cfg.max_input_chars * 4 + 65536:
                    raise BadRequest("request body too large")
                job = parse_request(json.loads(self.rfile.read(length) or b"null"), cfg)
            except (BadRequest, json.JSONDecodeError, ValueError) as e:
                return self._error(400, str(e), "invalid_request_error")
            except RecursionError:
                return self._error(400, "the body nests too deeply", "invalid_request_error")
            if not service.submit(job):
                return self._error(429, "the server is busy: too many requests queued, retry later", "rate_limit")
            try:
                result = job.future.result(timeout=cfg.timeout)
            except FutureTimeout:
                job.future.cancel()
                return self._error(504, f"no answer within {cfg.timeout:.0f} s", "timeout")
            except Exception as e:
                return self._error(500, f"{type(e).__name__}: {e}", "server_error")
            self._send(200, response_body(job, result, cfg.model))

    return Handler


def serve(cfg: ServeConfig, make_generator: Callable[[], Generator], host: str, port: int) -> ThreadingHTTPServer:
    """Build the server (call serve_forever on it); the workers start at once."""
    service = Service(cfg, make_generator)
    httpd = ThreadingHTTPServer((host, port), make_handler(service))
    httpd.daemon_threads = True
    return httpd
