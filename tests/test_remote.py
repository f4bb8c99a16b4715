"""The remote engine against a real OpenAI-compatible server: llama-cpp-python's, serving the
default model on a loopback port; and the pooling PRM scorer against a stub shaped like vLLM."""

import json
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from servers import free_port
from ttscale.core import Candidate, Problem, SamplingParams, Step
from ttscale.engines.openai import OpenAIGenerator, RemoteError
from ttscale.strategies.spec import RunSpec
from ttscale.tasks.prompts import problem_prompt
from ttscale.verifiers.model_free import LogProbScorer
from ttscale.verifiers.remote_prm import PoolingPRMScorer

QUESTION = "Tom has 3 red balls and 4 blue balls. How many balls does he have?"


def start_server(port):
    pytest.importorskip("uvicorn")
    from ttscale.engines.models import model_path

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model_path()),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "4096",
            "--n_threads",
            "2",
            "--verbose",
            "False",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            urllib.request.urlopen(url + "/v1/models", timeout=1)
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("llama_cpp.server exited at start") from None
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("llama_cpp.server did not start")


@pytest.fixture(scope="module")
def server():
    proc, url = start_server(free_port())
    yield url
    proc.kill()
    proc.wait()


@pytest.fixture
def client(server):
    gen = OpenAIGenerator([server], "qwen", n_params=630_000_000, concurrency=2, timeout=120)
    yield gen
    gen.close()


@pytest.mark.integration
def test_sampling_through_the_server(client):
    gen = client.generate([problem_prompt(QUESTION)], 3, SamplingParams(max_tokens=12, seed=1))
    (row,) = gen.completions
    assert len(row) == 3  # the server ignores n: the client asked for the rest one by one
    assert client.supports_n is False
    for c in row:
        assert c.text and len(c.logprobs) == len(c.token_offsets) > 0
        assert all(lp <= 0 for lp in c.logprobs)
    assert gen.compute.generated_tokens >= sum(c.n_tokens for c in row) > 0
    assert gen.compute.prompt_tokens + gen.compute.cached_prompt_tokens > 0


@pytest.mark.integration
def test_step_continuation_and_search_through_the_server(client):
    from ttscale.strategies import best_of_n
    from ttscale.strategies.search import beam_search

    partial = problem_prompt(QUESTION, partial="Tom has 3 red balls.\n\nHe also has")
    gen = client.generate([partial], 2, SamplingParams(max_tokens=40, stop=("\n\n",), seed=2))
    assert all("\n\n" not in c.text for c in gen.completions[0])

    problem = Problem("t", QUESTION, gold="7")
    r = best_of_n(problem, client, LogProbScorer(), 2, spec=RunSpec(SamplingParams(max_tokens=60, seed=0)))
    assert len(r.candidates) == 2 and r.compute.generated_tokens > 0
    b = beam_search(
        problem,
        client,
        LogProbScorer(),
        2,
        beam_width=2,
        max_iterations=2,
        spec=RunSpec(SamplingParams(max_tokens=60, seed=0), step_tokens=16),
    )
    assert 1 <= len(b.candidates) <= 2 and b.trace


@pytest.mark.integration
def test_rejected_request_names_the_url_and_status(client, server):
    # a 4xx is final: no retry, the URL and the status in the message
    with pytest.raises(RemoteError, match=rf"{server}/v1/no-such-endpoint answered HTTP 404") as err:
        client.post("/v1/no-such-endpoint", {"prompt": "x"})
    assert "attempts" not in str(err.value)


def test_unreachable_server_is_a_clear_error():
    gen = OpenAIGenerator([f"http://127.0.0.1:{free_port()}"], "m", retries=1, backoff=0.01, timeout=2)
    with pytest.raises(RemoteError, match=r"http://127\.0\.0\.1:\d+/v1/completions is unreachable.*2 attempts"):
        gen.generate([problem_prompt("hi")], 1, SamplingParams(max_tokens=2))


@pytest.mark.integration
def test_server_dying_mid_run_keeps_finished_problems_and_resumes(tmp_path):
    from ttscale.evaluation import EvalConfig, run_eval

    data = tmp_path / "d.jsonl"
    data.write_text(
        "".join(
            json.dumps({"id": f"q{k}", "question": f"What is {k} + 1?", "answer": str(k + 1)}) + "\n" for k in range(3)
        )
    )
    cfg = EvalConfig(dataset=str(data), ns=(2,), model="qwen", sampling=SamplingParams(max_tokens=16))
    port = free_port()
    proc, url = start_server(port)
    try:
        gen = OpenAIGenerator([url], "qwen", retries=1, backoff=0.05, timeout=30)
        real = gen.generate
        calls = []

        def generate_then_die(prompts, n, params):
            calls.append(1)
            if len(calls) == 2:  # the server dies while the second problem is being sampled
                proc.kill()
                proc.wait()
            return real(prompts, n, params)

        gen.generate = generate_then_die
        with pytest.raises(RemoteError, match="unreachable"):
            run_eval(cfg, lambda: gen, tmp_path / "run", progress=False, n_boot=5)
        lines = (tmp_path / "run" / "samples.jsonl").read_text().splitlines()
        assert [json.loads(x)["id"] for x in lines] == ["q0"]
    finally:
        proc.kill()
    proc, url = start_server(port)
    try:
        report = run_eval(cfg, lambda: OpenAIGenerator([url], "qwen"), tmp_path / "run", progress=False, n_boot=5)
    finally:
        proc.kill()
    ids = [json.loads(x)["id"] for x in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert ids == ["q0", "q1", "q2"] and report.complete


class _PoolingStub(BaseHTTPRequestHandler):
    """Answers /pooling like vLLM with STEP pooling: one [p(bad), p(good)] row per step."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        steps = body["input"].count("<extra_0>")
        rows = [[1 - 0.1 * (k + 1), 0.1 * (k + 1)] for k in range(steps)]
        out = json.dumps({"data": [{"index": 0, "data": rows}], "usage": {"prompt_tokens": 50}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


def test_pooling_prm_scorer_reads_one_score_per_step():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _PoolingStub)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        client = OpenAIGenerator([f"http://127.0.0.1:{httpd.server_address[1]}"], "prm")
        scorer = PoolingPRMScorer(client, "qwen2.5-math-prm-7b", index=1)
        c = Candidate("a\n\nb\n\nc", [Step("a"), Step("b"), Step("c")])
        (scores,), compute = scorer.score(Problem("p", "Q?"), [c])
        assert scores == pytest.approx([0.1, 0.2, 0.3])
        assert compute.verifier_tokens == 50
    finally:
        httpd.shutdown()


def test_client_side_templates_render_like_the_engine():
    gen = OpenAIGenerator(["http://127.0.0.1:9"], "m")
    text = gen.render(problem_prompt("Q?", system="S", partial="Step 1"))
    assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\nStep 1"


class _EmptyChoicesStub(_PoolingStub):
    """A server that answers 200 with no completion at all."""

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        out = json.dumps({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 0}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


def test_a_server_answering_without_completions_is_an_error_not_an_empty_pool():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _EmptyChoicesStub)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        gen = OpenAIGenerator([f"http://127.0.0.1:{httpd.server_address[1]}"], "m", retries=0)
        with pytest.raises(RemoteError, match="without any completion"):
            gen.generate([problem_prompt("Q?")], 2, SamplingParams(max_tokens=8))
    finally:
        httpd.shutdown()


def test_eval_bounds_a_hanging_server_with_its_own_timeout_and_retries():
    from ttscale.cli import build_parser
    from ttscale.cli.commands import _generator

    args = build_parser().parse_args(
        ["eval", "--server", "http://127.0.0.1:9", "--server-timeout", "5", "--server-retries", "0"]
    )
    gen = _generator(args)
    assert (gen.timeout, gen.retries) == (5.0, 0)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", "--server-retries", "11"])


@pytest.mark.parametrize("name", ["self_certainty", "conf_group", "conf_tail"])
def test_a_server_is_not_scored_by_verifiers_that_need_the_whole_distribution(name):
    from ttscale.evaluation import EvalConfig
    from ttscale.evaluation.run import pool_scorers
    from ttscale.verifiers.registry import make_scorer

    gen = OpenAIGenerator(["http://127.0.0.1:9"], "m")
    with pytest.raises(ValueError, match=f"the {name} verifier reads the whole next-token distribution"):
        make_scorer(name, gen)
    # its pools are scored by the verifiers it can feed, not by zeros of the others
    assert name not in pool_scorers(EvalConfig(), None, gen)
    assert "logprob" in pool_scorers(EvalConfig(), None, gen)
    assert name in pool_scorers(EvalConfig(), None, None)
