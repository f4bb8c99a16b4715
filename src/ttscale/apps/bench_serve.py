"""`ttscale bench serve`: a bounded load test of `ttscale serve` on 127.0.0.1 with the fake
engine, so it measures the server, not a model. Concurrent clients send requests, some of
them hostile (a 60,000-deep body, an oversized body, a verifier path, a pathological answer to
grade); every reply must be 200, 400, 413 or 429, none a reset connection. Reports latency
percentiles of the good requests, and the process's memory and thread count before and after."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..core import Prompt
from ..engines.fake import FakeGenerator
from .http import serve
from .serve import ServeConfig

GOOD = json.dumps({"messages": [{"role": "user", "content": "What is 2 + 3?"}]}).encode()
HOSTILE = {
    "deep": b"[" * 60_000,
    "huge": json.dumps({"messages": [{"role": "user", "content": "x" * 400_000}]}).encode(),
    "path": json.dumps(
        {"messages": [{"role": "user", "content": "hi"}], "ttscale": {"scorer": "probe@/dev/zero"}}
    ).encode(),
    "grade": json.dumps({"messages": [{"role": "user", "content": "What is a power tower?"}]}).encode(),
}


def _script(prompt: Prompt, seed: int) -> str:
    if "power tower" in prompt.messages[-1][1]:  # answers grading could hang on, for ever
        tower = ("9^{9^{9^9}}", "(99!)!")[seed % 2]
        return f"Therefore, the final answer is $\\boxed{{{tower}}}$."
    return f"Add them.\n\nTherefore, the final answer is $\\boxed{{{5 + seed % 2}}}$."


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def _send(url: str, body: bytes, timeout: float) -> tuple[int | str, float]:
    t0 = time.perf_counter()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            status: int | str = r.status
    except urllib.error.HTTPError as e:
        e.read()
        status = e.code
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
        status = f"failed: {type(getattr(e, 'reason', e)).__name__}"
    return status, time.perf_counter() - t0


ENGINE_DELAY_S = 0.01  # the fake engine's time per call: a little engine work per request


@dataclass(frozen=True)
class Load:
    clients: int = 200  # concurrent clients
    requests: int = 1000  # requests in all
    hostile_every: int = 10  # every K-th request is hostile
    workers: int = 2  # the server's workers
    queue: int = 64  # the server's queue


def _fake_engine() -> FakeGenerator:
    gen = FakeGenerator(_script)
    real = gen.generate

    def generate(prompts: Any, n: int, params: Any) -> Any:
        time.sleep(ENGINE_DELAY_S)
        return real(prompts, n, params)

    gen.generate = generate  # type: ignore[method-assign]
    return gen


def bench_serve(load: Load = Load()) -> dict[str, Any]:
    """`load.requests` requests from `load.clients` concurrent clients, every `hostile_every`-th hostile."""
    cfg = ServeConfig(model="fake", strategy="majority", n=2, workers=load.workers, queue_limit=load.queue, timeout=60)
    httpd = serve(cfg, _fake_engine, "127.0.0.1", 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/v1/chat/completions"
    kinds = list(HOSTILE)
    hostile = [kinds[k // load.hostile_every % len(kinds)] for k in range(load.requests)]
    plan = [
        ("good", GOOD) if k % load.hostile_every else (hostile[k], HOSTILE[hostile[k]]) for k in range(load.requests)
    ]
    try:
        _send(url, GOOD, 60)  # warm up: the grading workers start
        before = {"rss_kib": _rss_kib(), "threads": threading.active_count()}
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=load.clients) as pool:
            replies = list(pool.map(lambda kb: (kb[0], *_send(url, kb[1], 120)), plan))
        seconds = time.perf_counter() - t0
        time.sleep(1.0)  # let finished connections close
        after = {"rss_kib": _rss_kib(), "threads": threading.active_count()}
    finally:
        httpd.shutdown()
        httpd.server_close()
    return {**asdict(load), "engine_delay_s": ENGINE_DELAY_S, "machine": f"{os.cpu_count()} cores",
            "seconds": round(seconds, 2), **_tally(replies), "before": before, "after": after}  # fmt: skip


def _tally(replies: list[tuple[str, int | str, float]]) -> dict[str, Any]:
    statuses: dict[str, dict[str, int]] = {}
    for kind, status, _ in replies:
        statuses.setdefault(kind, {}).setdefault(str(status), 0)
        statuses[kind][str(status)] += 1
    ok = np.array([s for kind, status, s in replies if kind == "good" and status == 200])
    return {
        "statuses": statuses,
        "connection_failures": sum(isinstance(status, str) for _, status, _ in replies),
        "latency_ms_200": {
            "p50": round(1000 * float(np.percentile(ok, 50)), 1) if len(ok) else None,
            "p99": round(1000 * float(np.percentile(ok, 99)), 1) if len(ok) else None,
        },
    }


def format_serve(r: dict[str, Any]) -> str:
    setup = (
        f"{r['requests']} requests from {r['clients']} concurrent clients, every {r['hostile_every']}th hostile; "
        f"{r['workers']} workers, queue {r['queue']}, fake engine ({r['engine_delay_s']} s a call), {r['machine']}"
    )
    lines = [f"ttscale serve under load: {setup}, {r['seconds']} s", "", "| request | replies by status |", "|---|---|"]
    lines += [
        f"| {kind} | {', '.join(f'{s}: {n}' for s, n in sorted(st.items()))} |" for kind, st in r["statuses"].items()
    ]
    lat = r["latency_ms_200"]
    lines += [
        "",
        f"connections reset or refused: {r['connection_failures']}; latency of answered good requests: "
        f"p50 {lat['p50']} ms, p99 {lat['p99']} ms",
        f"memory {r['before']['rss_kib'] / 1024:.0f} MiB -> {r['after']['rss_kib'] / 1024:.0f} MiB, "
        f"threads {r['before']['threads']} -> {r['after']['threads']}",
    ]
    return "\n".join(lines)
