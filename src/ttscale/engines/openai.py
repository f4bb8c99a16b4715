"""Engines that already scale: any OpenAI-compatible server (vLLM, SGLang, llama.cpp's server,
llama-cpp-python's server) as a `Generator` (a PRM served by vLLM's pooling endpoint, the
verifier side, is `verifiers.remote_prm`). ttscale only talks to them: the completions endpoint with a client-side chat
template, so a partial answer can be continued step by step.

Requests run concurrently (a bounded thread pool), spread round-robin over several server
URLs, with a timeout and retries with exponential backoff on transient failures (connection
errors, 429, 5xx). An unreachable server or a rejected request raises `RemoteError` naming
the URL and the status. Only the standard library is used.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import jinja2

from ..core import Completion, Compute, Generation, Prompt, SamplingParams, model_flops, sample_seed

# Client-side chat templates: the rendered prompt plus the partial answer go to /v1/completions.
TEMPLATES = {
    "chatml": (
        "{% for role, content in messages %}<|im_start|>{{ role }}\n{{ content }}<|im_end|>\n{% endfor %}"
        "<|im_start|>assistant\n"
    ),
    "llama3": (
        "<|begin_of_text|>{% for role, content in messages %}<|start_header_id|>{{ role }}<|end_header_id|>\n\n"
        "{{ content }}<|eot_id|>{% endfor %}<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
}
TRANSIENT = {408, 429, 500, 502, 503, 504}
LOGPROB_FLOOR = -30.0  # a token outside the server's top logprobs


class RemoteError(RuntimeError):
    pass


@dataclass
class _Job:
    prompt_index: int
    first_sample: int
    n: int
    body: dict[str, Any]


class OpenAIGenerator:
    """A `Generator` over OpenAI-compatible completion servers."""

    returns_certainties = False  # a server returns the sampled tokens' log-probabilities only

    def __init__(
        self,
        urls: Sequence[str],
        model: str,
        chat_template: str = "chatml",
        n_params: int = 0,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout: float = 300.0,
        retries: int = 3,
        backoff: float = 1.0,
        supports_n: bool | None = None,
    ) -> None:
        if not urls:
            raise ValueError("at least one server URL is needed")
        self.urls = [u.rstrip("/") for u in urls]
        self.name = model
        self.n_params = n_params
        source = TEMPLATES.get(chat_template)
        if source is None:
            with open(chat_template, encoding="utf-8") as f:  # a path to a Jinja template
                source = f.read()
        self._template = jinja2.Environment(keep_trailing_newline=True).from_string(source)
        self.api_key = api_key
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.supports_n = supports_n  # None: try n in one request, fall back if ignored
        self._pool = ThreadPoolExecutor(max_workers=concurrency)
        self._next_url = itertools.count()
        self._lock = threading.Lock()

    def render(self, prompt: Prompt) -> str:
        return self._template.render(messages=list(prompt.messages)) + prompt.partial

    def reset(self) -> None:
        """Nothing to drop here: the server owns its cache."""

    # --- HTTP ----------------------------------------------------------------------------

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST JSON to one server (round-robin), retrying transient failures on the next."""
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = ""
        for attempt in range(self.retries + 1):
            with self._lock:
                url = self.urls[next(self._next_url) % len(self.urls)] + path
            try:
                req = urllib.request.Request(url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as e:
                detail = e.read()[:300].decode("utf-8", errors="replace")
                last = f"{url} answered HTTP {e.code}: {detail}"
                if e.code not in TRANSIENT:
                    raise RemoteError(last) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                reason = getattr(e, "reason", e)
                last = f"{url} is unreachable ({reason})"
            except json.JSONDecodeError:
                last = f"{url} answered with something that is not JSON"
            if attempt < self.retries:
                time.sleep(self.backoff * 2**attempt)
        raise RemoteError(f"{last} (after {self.retries + 1} attempts)")

    # --- generation ------------------------------------------------------------------------

    def generate(self, prompts: Sequence[Prompt], n: int, params: SamplingParams) -> Generation:
        if params.confidence_floor is not None:
            raise ValueError(
                "an OpenAI-compatible server cannot stop a sample by its confidence (confidence_floor): "
                "use the embedded engine for online DeepConf"
            )
        t0 = time.perf_counter()
        texts = [self.render(p) for p in prompts]
        batched = self.supports_n is not False and n > 1
        jobs = []
        for i, text in enumerate(texts):
            for j0, count in [(0, n)] if batched else [(j, 1) for j in range(n)]:
                jobs.append(_Job(i, j0, count, self._body(text, count, params, sample_seed(params.seed, i, j0))))
        replies = list(self._pool.map(lambda job: self.post("/v1/completions", job.body), jobs))
        rows: list[list[Completion]] = [[] for _ in prompts]
        compute = Compute()
        missing: list[tuple[int, int]] = []
        for job, reply in zip(jobs, replies, strict=True):
            choices = sorted(reply.get("choices") or [], key=lambda c: c.get("index", 0))
            if not choices:  # never an empty pool stored as if it were an answer
                raise RemoteError(f"the server answered without any completion: {str(reply)[:200]}")
            rows[job.prompt_index] += [self._completion(c, params) for c in choices[: job.n]]
            compute = compute + _usage(reply, self.n_params)
            if len(choices) < job.n:  # the server ignores n: ask for the rest one by one
                start = job.first_sample + len(choices)
                missing += [(job.prompt_index, j) for j in range(start, job.first_sample + job.n)]
        if missing:
            self.supports_n = False
            extra = [(i, j, self._body(texts[i], 1, params, sample_seed(params.seed, i, j))) for i, j in missing]
            for (i, _, _), reply in zip(
                extra, self._pool.map(lambda x: self.post("/v1/completions", x[2]), extra), strict=True
            ):
                rows[i] += [self._completion(c, params) for c in reply.get("choices", [])[:1]]
                compute = compute + _usage(reply, self.n_params)
        compute.wall_time = time.perf_counter() - t0
        return Generation(rows, compute)

    def _body(self, text: str, n: int, params: SamplingParams, seed: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.name,
            "prompt": text,
            "n": n,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": seed,
            "logprobs": 1,
        }
        if params.top_k > 0:
            body["top_k"] = params.top_k
        if params.stop:
            body["stop"] = list(params.stop)
        return body

    def _completion(self, choice: dict[str, Any], params: SamplingParams) -> Completion:
        text = choice.get("text") or ""
        lp = choice.get("logprobs") or {}
        tokens = [t or "" for t in lp.get("tokens") or []]
        logprobs = [LOGPROB_FLOOR if x is None else float(x) for x in lp.get("token_logprobs") or []]
        offsets, at = [], 0
        for t in tokens:
            offsets.append(at)
            at += len(t.encode("utf-8"))
        return Completion(
            text=text,
            token_ids=[0] * len(tokens),  # servers return token strings, not ids
            logprobs=logprobs[: len(tokens)],
            certainties=[],  # the full next-token distribution never leaves the server
            token_offsets=offsets,
            finish_reason=_finish_reason(choice, text, params),
        )

    def next_token_logprobs(
        self, prompts: Sequence[Prompt], tokens: Sequence[str]
    ) -> tuple[list[list[float]], Compute]:
        """From the server's top log-probabilities of one generated token (a token outside
        them gets LOGPROB_FLOOR)."""
        t0 = time.perf_counter()
        bodies = [
            {"model": self.name, "prompt": self.render(p), "max_tokens": 1, "temperature": 0.0, "logprobs": 20}
            for p in prompts
        ]
        replies = list(self._pool.map(lambda b: self.post("/v1/completions", b), bodies))
        out = []
        compute = Compute()
        for reply in replies:
            top = ((reply["choices"][0].get("logprobs") or {}).get("top_logprobs") or [{}])[0] or {}
            out.append([float(top.get(t, top.get(" " + t, LOGPROB_FLOOR))) for t in tokens])
            compute = compute + _usage(reply, self.n_params)
        compute.generated_tokens = 0  # the one sampled token is not part of any solution
        compute.wall_time = time.perf_counter() - t0
        return out, compute

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _finish_reason(choice: dict[str, Any], text: str, params: SamplingParams) -> str:
    """OpenAI says "stop" both for a stop string and for the end of sequence. vLLM tells them
    apart in stop_reason; elsewhere an empty text that "stopped" is taken as the end (a step
    search then closes that solution) and any other "stop" as a stop string."""
    reason = choice.get("finish_reason") or "stop"
    if reason == "length":
        return "length"
    if "stop_reason" in choice:
        return "stop" if isinstance(choice["stop_reason"], str) and params.stop else "eos"
    if params.stop and text:
        return "stop"
    return "eos"


def _usage(reply: dict[str, Any], n_params: int) -> Compute:
    usage = reply.get("usage") or {}
    prompt = int(usage.get("prompt_tokens") or 0)
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    generated = int(usage.get("completion_tokens") or 0)
    return Compute(
        generated_tokens=generated,
        prompt_tokens=prompt - cached,
        cached_prompt_tokens=cached,
        flops=model_flops(n_params, prompt - cached + generated),
    )
