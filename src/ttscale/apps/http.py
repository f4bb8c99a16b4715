"""`ttscale serve`'s HTTP layer, on Starlette and uvicorn (the ASGI stack vLLM's and
llama-cpp-python's servers use): routes, Bearer auth, body limits, streaming, metrics.

- POST /v1/chat/completions: the answer of a test-time strategy (`serve.parse_request` says
  what a request may ask). With "stream": true, server-sent events: the assistant role at once,
  a progress chunk every second while the strategy runs, then the answer, usage, [DONE].
- GET /v1/models, GET /health (no auth), GET /metrics (Prometheus text).
- A body over the limit gets 413, a body not sent within `body_timeout` 408; a client that
  disconnects or outwaits `timeout` cancels its job.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import CancelledError
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ..core import Generator
from ..strategies.catalogue import CATALOGUE
from .serve import BadRequest, Job, ServeConfig, Service, parse_request, response_body

BACKLOG = 2048  # connections the kernel holds before accept: a burst gets 429s, not resets


class Metrics:
    """Counts for /metrics: requests by status, and recent latencies."""

    def __init__(self) -> None:
        self.status: Counter[int] = Counter()
        self.latency: deque[float] = deque(maxlen=1000)

    def record(self, status: int, seconds: float) -> None:
        self.status[status] += 1
        self.latency.append(seconds)

    def text(self, service: Service) -> str:
        lat = sorted(self.latency)
        q = {p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else 0.0 for p in (0.5, 0.99)}
        lines = ["# TYPE ttscale_requests_total counter"]
        lines += [f'ttscale_requests_total{{status="{s}"}} {n}' for s, n in sorted(self.status.items())]
        lines += [
            "# TYPE ttscale_queue_depth gauge",
            f"ttscale_queue_depth {service.queue.qsize()}",
            "# TYPE ttscale_jobs_running gauge",
            f"ttscale_jobs_running {service.running}",
            "# TYPE ttscale_request_seconds summary",
            f'ttscale_request_seconds{{quantile="0.5"}} {q[0.5]:.4f}',
            f'ttscale_request_seconds{{quantile="0.99"}} {q[0.99]:.4f}',
            f"ttscale_request_seconds_count {len(lat)}",
            "# TYPE ttscale_threads gauge",
            f"ttscale_threads {threading.active_count()}",
        ]
        return "\n".join(lines) + "\n"


def error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


async def _body(request: Request, cfg: ServeConfig) -> bytes:
    """The request body, refused past the size limit (413) or the time limit (408)."""
    limit = cfg.max_input_chars * 4 + 65536
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _Refused(413, f"the body is over {limit} bytes", "request_too_large")

    async def read() -> bytes:
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > limit:
                raise _Refused(413, f"the body is over {limit} bytes", "request_too_large")
        return bytes(data)

    try:
        return await asyncio.wait_for(read(), cfg.body_timeout)
    except asyncio.TimeoutError:
        raise _Refused(408, f"the body did not arrive within {cfg.body_timeout:.0f} s", "timeout") from None


class _Refused(Exception):
    def __init__(self, status: int, message: str, kind: str) -> None:
        super().__init__(message)
        self.status = status
        self.response = error(status, message, kind)


def _unauthorized(request: Request, cfg: ServeConfig) -> JSONResponse | None:
    """The 401 for a request without the server's API key; None when it may pass."""
    if cfg.api_key and request.headers.get("authorization") != f"Bearer {cfg.api_key}":
        return error(401, "a valid API key is needed: Authorization: Bearer <key>", "authentication_error")
    return None


async def _job_of(request: Request, cfg: ServeConfig) -> Job:
    try:
        data = await _body(request, cfg)
    except ClientDisconnect:
        raise _Refused(400, "the client went away", "invalid_request_error") from None
    try:
        return parse_request(json.loads(data or b"null"), cfg)
    except (BadRequest, ValueError) as e:  # json.JSONDecodeError is a ValueError
        raise _Refused(400, str(e), "invalid_request_error") from None
    except RecursionError:
        raise _Refused(400, "the body nests too deeply", "invalid_request_error") from None


async def _waiting(job: Job, request: Request, cfg: ServeConfig) -> AsyncIterator[float]:
    """The seconds waited, once a second while the job runs; returns when it is done (its
    result or its error are then the future's). When the timeout passes or the client leaves,
    the job is cancelled and _Refused raised (504, 499)."""
    done = asyncio.wrap_future(job.future)
    started = time.monotonic()
    while not done.done():
        try:
            await asyncio.wait_for(asyncio.shield(done), 1.0)
        except asyncio.TimeoutError:
            if time.monotonic() - started > cfg.timeout:
                _cancel(job)
                raise _Refused(504, f"no answer within {cfg.timeout:.0f} s", "timeout") from None
            if await request.is_disconnected():
                _cancel(job)
                raise _Refused(499, "the client went away", "cancelled") from None
            yield time.monotonic() - started
        except Exception:
            return  # the job failed: its future holds the error


async def _outcome(job: Job, request: Request, cfg: ServeConfig) -> Any:
    """The job's result; cancels it when the client leaves or the timeout passes."""
    async for _ in _waiting(job, request, cfg):
        pass
    try:
        return job.future.result()
    except CancelledError:
        raise _Refused(499, "the job was cancelled", "cancelled") from None


def _cancel(job: Job) -> None:
    job.cancelled.set()
    job.future.cancel()


def _chunk(job: Job, model: str, delta: dict[str, Any], **extra: Any) -> str:
    body = {
        "id": job.problem.id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": extra.pop("finish_reason", None)}],
        **extra,
    }
    return f"data: {json.dumps(body)}\n\n"


async def _stream(job: Job, request: Request, cfg: ServeConfig) -> AsyncIterator[str]:
    yield _chunk(job, cfg.model, {"role": "assistant"})
    try:
        async for seconds in _waiting(job, request, cfg):
            yield _chunk(job, cfg.model, {}, ttscale={"progress": {**job.progress, "seconds": round(seconds, 1)}})
        body = response_body(job, job.future.result(), cfg.model)
    except _Refused as r:
        yield f"data: {json.dumps({'error': {'message': str(r), 'code': r.status}})}\n\n"
        return
    except Exception as e:
        yield f"data: {json.dumps({'error': {'message': f'{type(e).__name__}: {e}', 'code': 500}})}\n\n"
        return
    choice = body["choices"][0]
    yield _chunk(
        job,
        cfg.model,
        {"content": choice["message"]["content"]},
        finish_reason=choice["finish_reason"],
        usage=body["usage"],
        ttscale=body["ttscale"],
    )
    yield "data: [DONE]\n\n"


def make_app(service: Service) -> Starlette:
    cfg = service.cfg
    metrics = Metrics()

    async def completions(request: Request) -> Response:
        t0 = time.monotonic()
        response = await _answer(request)
        metrics.record(response.status_code, time.monotonic() - t0)
        return response

    async def _answer(request: Request) -> Response:
        if (refused := _unauthorized(request, cfg)) is not None:
            return refused
        try:
            job = await _job_of(request, cfg)
            if not service.submit(job):
                return error(429, "the server is busy: too many requests queued, retry later", "rate_limit")
            if job.stream:
                return StreamingResponse(_stream(job, request, cfg), media_type="text/event-stream")
            result = await _outcome(job, request, cfg)
        except _Refused as r:
            return r.response
        except Exception as e:
            return error(500, f"{type(e).__name__}: {e}", "server_error")
        return JSONResponse(response_body(job, result, cfg.model))

    async def models(request: Request) -> Response:
        if (refused := _unauthorized(request, cfg)) is not None:
            return refused
        ids = [cfg.model] + [f"{cfg.model}:{s}" for s in CATALOGUE]
        return JSONResponse(
            {"object": "list", "data": [{"id": i, "object": "model", "owned_by": "ttscale"} for i in ids]}
        )

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "queued": service.queue.qsize(), "running": service.running})

    async def metrics_text(request: Request) -> Response:
        return PlainTextResponse(metrics.text(service), media_type="text/plain; version=0.0.4")

    routes = [
        Route("/v1/chat/completions", completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics_text, methods=["GET"]),
    ]
    return Starlette(routes=routes)


class Server:
    """The server on a socket it binds at once (port 0: any free port; see server_address)."""

    def __init__(self, cfg: ServeConfig, make_generator: Callable[[], Generator], host: str, port: int) -> None:
        if host not in ("127.0.0.1", "localhost", "::1") and not cfg.api_key:
            print(f"warning: serving on {host} without --api-key: anyone who can reach it may use it", file=sys.stderr)
        self.service = Service(cfg, make_generator)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))
        self.socket.listen(BACKLOG)
        self.server_address = self.socket.getsockname()
        config = uvicorn.Config(
            make_app(self.service), log_level="warning", backlog=BACKLOG, timeout_keep_alive=5, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._running = threading.Event()
        self._stopped = threading.Event()

    def serve_forever(self) -> None:
        self._running.set()
        try:
            self._server.run(sockets=[self.socket])
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop serving; returns once serve_forever (on another thread) has returned."""
        self._server.should_exit = True
        if self._running.is_set():
            self._stopped.wait(30)

    def server_close(self) -> None:
        self.socket.close()


def serve(cfg: ServeConfig, make_generator: Callable[[], Generator], host: str, port: int) -> Server:
    """Build the server (call serve_forever on it); the workers start at once."""
    return Server(cfg, make_generator, host, port)
