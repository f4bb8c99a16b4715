"""Real servers for the tests, on 127.0.0.1: a free port, and a vLLM OpenAI-compatible
server started for a test module and torn down after it.

vLLM's flags are those of README "Run it on vLLM": bfloat16, prefix caching, cached-token
counts in the usage, and a fixed KV-cache size (on the CPU, vLLM otherwise reserves a share
of the whole machine's memory and refuses to start beside other processes)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

STARTUP_S = 600  # the CPU build compiles its graphs on first start: about 2 minutes here


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_args(model_dir: Path, name: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--served-model-name", name,
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "bfloat16", "--max-model-len", "2048",
        "--kv-cache-memory-bytes", str(2 << 30),
        "--enable-prefix-caching", "--enable-prompt-tokens-details",
    ]  # fmt: skip


@contextmanager
def vllm_server(model_dir: Path, name: str, log: Path, extra: Sequence[str] = ()) -> Iterator[str]:
    """The base URL of a vLLM server serving `model_dir` as `name`, up and answering."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*server_args(model_dir, name, port), *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its engine and worker processes go down with it
            env={**os.environ, "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vLLM exited with status {proc.returncode}:\n{tail(log)}")
            try:
                with urllib.request.urlopen(url + "/v1/models", timeout=5) as r:
                    if name in {m["id"] for m in json.loads(r.read())["data"]}:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"vLLM did not come up within {STARTUP_S} s:\n{tail(log)}")
            time.sleep(2)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
