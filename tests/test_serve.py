"""`ttscale serve`: validation, the bounded queue under a load test, the official openai client."""

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from ttscale.apps.http import serve
from ttscale.apps.serve import BadRequest, ServeConfig, parse_request
from ttscale.core import SamplingParams
from ttscale.testing import FakeGenerator

CFG = ServeConfig(
    model="m", sampling=SamplingParams(max_tokens=64), max_n=16, max_input_chars=1000, max_total_tokens=10_000
)
MSG = [{"role": "user", "content": "What is 2 + 3?"}]


@pytest.mark.parametrize(
    "body, message",
    [
        ([1, 2], "JSON object"),
        ({"messages": []}, "messages: List should have at least 1 item"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "role"),
        ({"messages": [{"role": "user", "content": "x" * 2000}]}, "exceed 1000"),
        ({"messages": [{"role": "system", "content": "x"}]}, "no user message"),
        ({"messages": MSG, "ttscale": {"n": 0}}, "n \\(the budget\\)"),
        ({"messages": MSG, "ttscale": {"n": 99}}, "n \\(the budget\\)"),
        ({"messages": MSG, "ttscale": {"strategy": "mcts"}}, "unknown strategy"),
        ({"messages": MSG, "model": "m:nope"}, "unknown strategy"),
        ({"messages": MSG, "ttscale": {"scorer": "oracle"}}, "scorer"),
        ({"messages": MSG, "ttscale": {"strategy": ["majority"]}}, "ttscale.strategy: Input should be a valid string"),
        ({"messages": MSG, "ttscale": {"n": True}}, "ttscale.n: Input should be a valid integer"),
        ({"messages": MSG, "ttscale": {"beam": 3}}, "ttscale.beam: Extra inputs are not permitted"),
        ({"messages": MSG, "temperature": True}, "temperature: Value error, must be a number"),
        # a request never names a server file: the error says nothing about whether it exists
        ({"messages": MSG, "ttscale": {"scorer": "probe@/etc/passwd"}}, "unavailable scorer .*offers logprob"),
        ({"messages": MSG, "ttscale": {"scorer": "probe@/dev/zero"}}, "unavailable scorer"),
        ({"messages": MSG, "ttscale": {"scorer": "probe"}}, "unavailable scorer"),  # not started with the probe
        ({"messages": MSG, "ttscale": {"scorer": "prm:skywork-1.5b@/models"}}, "unavailable scorer"),
        ({"messages": MSG, "max_tokens": 0}, "max_tokens"),
        ({"messages": MSG, "temperature": "hot"}, "temperature: Value error, must be a number"),
        ({"messages": MSG, "stream": "yes"}, "stream: Input should be a valid boolean"),
        ({"messages": MSG, "n": 3}, "n must be 1"),
        ({"messages": MSG, "model": "gpt-4"}, "unknown model 'gpt-4'"),
        ({"messages": MSG, "ttscale": {"n": 16}, "max_tokens": 1000}, "exceeds this server's"),
        ({"messages": MSG, "stop": ["a", "b", "c", "d", "e"]}, "stop must be"),
        ({"messages": MSG, "top_k": -2}, "top_k must be between"),
    ],
)
def test_every_field_is_validated(body, message):
    with pytest.raises(BadRequest, match=message):
        parse_request(body, CFG)


def test_the_server_offers_its_own_verifier_and_the_free_ones():
    probe_server = ServeConfig(model="m", scorer="probe")
    assert parse_request({"messages": MSG, "ttscale": {"scorer": "probe"}}, probe_server).scorer == "probe"
    assert parse_request({"messages": MSG, "ttscale": {"scorer": "self_certainty"}}, CFG).scorer == "self_certainty"


def test_strategy_from_model_suffix_or_body():
    assert parse_request({"messages": MSG, "model": "m:dvts"}, CFG).strategy == "dvts"
    job = parse_request({"messages": MSG, "ttscale": {"strategy": "majority", "n": 8}, "seed": 3}, CFG)
    assert (job.strategy, job.n, job.params.seed, job.params.max_tokens) == ("majority", 8, 3, 64)
    assert parse_request({"messages": MSG}, CFG).strategy == CFG.strategy


def slow_fake(delay):
    def script(prompt, seed):
        return f"Add them.\n\nTherefore, the final answer is $\\boxed{{{5 + seed % 2}}}$."

    gen = FakeGenerator(script)
    real = gen.generate

    def generate(prompts, n, params):
        time.sleep(delay)
        return real(prompts, n, params)

    gen.generate = generate
    return gen


@pytest.fixture
def fake_server():
    cfg = ServeConfig(model="fake", strategy="majority", n=3, workers=1, queue_limit=1, timeout=30)
    httpd = serve(cfg, lambda: slow_fake(0.3), "127.0.0.1", 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def post(url, body, timeout=30):
    req = urllib.request.Request(
        url + "/v1/chat/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_answer_usage_and_candidates(fake_server):
    status, body = post(fake_server, {"messages": MSG, "ttscale": {"return_candidates": True}})
    assert status == 200
    assert body["ttscale"]["answer"] in ("5", "6") and len(body["ttscale"]["candidates"]) == 3
    assert body["usage"]["completion_tokens"] == body["ttscale"]["compute"]["generated_tokens"] > 0
    assert "\\boxed" in body["choices"][0]["message"]["content"]
    status, body = post(fake_server, {"messages": MSG, "ttscale": {"n": 1000}})
    assert status == 400 and "budget" in body["error"]["message"]
    req = urllib.request.Request(
        fake_server + "/v1/chat/completions", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 400


def raw_post(url, data):
    req = urllib.request.Request(url + "/v1/chat/completions", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_hostile_bodies_get_an_answer_not_a_dropped_connection(fake_server):
    status, body = raw_post(fake_server, b"[" * 60_000)  # json.loads recurses past Python's limit
    assert status == 400 and "nests too deeply" in body["error"]["message"]
    status, body = post(fake_server, {"messages": MSG, "ttscale": {"strategy": ["majority"]}})
    assert status == 400 and "valid string" in body["error"]["message"]
    status, body = post(fake_server, {"messages": MSG, "ttscale": {"scorer": "probe@/etc/passwd"}})
    assert status == 400 and "passwd" not in body["error"]["message"].replace("'probe@/etc/passwd'", "")
    assert post(fake_server, {"messages": MSG})[0] == 200  # the server still answers


def test_bounded_load_every_request_answered_or_refused(fake_server):
    # 1 worker, a queue of 1, each request takes 0.3 s: of 8 at once, some must be refused
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = [s for s, _ in pool.map(lambda _: post(fake_server, {"messages": MSG}, timeout=20), range(8))]
    assert set(statuses) <= {200, 429}
    assert statuses.count(200) >= 1 and statuses.count(429) >= 1
    # once the burst is over, the server answers again
    assert post(fake_server, {"messages": MSG})[0] == 200


@pytest.mark.integration
def test_openai_client_against_a_real_ttscale_serve():
    openai = pytest.importorskip("openai")
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ttscale",
            "serve",
            "--port",
            str(port),
            "--strategy",
            "majority",
            "--n",
            "2",
            "--max-tokens",
            "48",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert "ttscale serve" in proc.stdout.readline()
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", timeout=300)
        ids = [m.id for m in client.models.list().data]
        assert "qwen2.5-coder-0.5b" in ids and "qwen2.5-coder-0.5b:beam_search" in ids
        r = client.chat.completions.create(
            model="qwen2.5-coder-0.5b:weighted_best_of_n",
            messages=[{"role": "user", "content": "What is 2 + 3?"}],
            max_tokens=48,
            extra_body={"ttscale": {"n": 2, "return_candidates": True}},
        )
        assert r.choices[0].message.content
        extra = r.model_extra["ttscale"]
        assert extra["strategy"] == "weighted_best_of_n" and len(extra["candidates"]) == 2
        assert r.usage.completion_tokens == extra["compute"]["generated_tokens"] > 0
        stream = client.chat.completions.create(
            model="qwen2.5-coder-0.5b:majority",
            messages=[{"role": "user", "content": "What is 2 + 3?"}],
            max_tokens=32,
            stream=True,
            extra_body={"ttscale": {"n": 2}},
        )
        chunks = list(stream)
        assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].usage.completion_tokens > 0
        assert "".join(c.choices[0].delta.content or "" for c in chunks) or chunks[-1].model_extra["ttscale"]["note"]
        with pytest.raises(openai.BadRequestError, match="budget"):
            client.chat.completions.create(
                model="qwen2.5-coder-0.5b",
                messages=[{"role": "user", "content": "hi"}],
                extra_body={"ttscale": {"n": 0}},
            )
    finally:
        proc.kill()
        proc.wait()


def test_the_votes_that_spend_less_are_served_and_charged_every_token_they_generated():
    # DeepConf online: the fake's certainty of a piece is -logprob, "hi" confident, "lo" not;
    # the warm-up (seed 2) disagrees, so later samples run under the floor and the "lo" ones stop
    def logprob(piece):
        return {"hi": -5.0, "lo": -0.1, "mid": -4.0}.get(piece.strip(), -1.0)

    def script(prompt, seed):
        warm_up, j = seed // 1000 == 2, seed % 100
        warm, later = [("hi ", 7), ("mid ", 9), ("lo ", 8), ("lo ", 8)], [("hi ", 7), ("lo ", 8)]
        word, answer = warm[j] if warm_up else later[j >= 2]
        return word * 40 + f"so $\\boxed{{{answer}}}$."

    cfg = ServeConfig(model="fake", strategy="majority", n=4, max_n=16, search={"keep": 0.5, "round_size": 4})
    httpd, url = start(cfg, lambda: FakeGenerator(script, logprob=logprob))
    try:
        ask, candidates = {"messages": MSG, "seed": 2, "max_tokens": 200}, {"return_candidates": True}
        status, body = post(url, {**ask, "ttscale": {"strategy": "deepconf_online", "n": 12, **candidates}})
        assert status == 200, body
        extra = body["ttscale"]
        stopped = [c for c in extra["candidates"] if c["finish_reason"] == "low_confidence"]
        assert extra["answer"] == "7" and len(extra["candidates"]) == 12
        assert len(stopped) == extra["outcome"]["stopped_early"] == 4 and all(c["tokens"] > 0 for c in stopped)
        assert body["usage"]["completion_tokens"] == sum(c["tokens"] for c in extra["candidates"])
        # a stopping vote reports the samples it did not draw, and is charged only those it drew
        status, body = post(url, {**ask, "ttscale": {"strategy": "adaptive_majority", "n": 16, **candidates}})
        assert status == 200, body
        extra = body["ttscale"]
        assert extra["outcome"]["samples"] + extra["outcome"]["samples_saved"] == 16
        assert len(extra["candidates"]) == extra["outcome"]["samples"] < 16
        assert body["usage"]["completion_tokens"] == sum(c["tokens"] for c in extra["candidates"])
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize(
    "argv",
    [["--queue", "0"], ["--queue", "-1"], ["--workers", "0"], ["--n", "0"], ["--max-n", "0"], ["--timeout", "0"]],
)
def test_serve_refuses_values_that_would_unbound_the_queue_or_stall_every_request(argv, capsys):
    from ttscale.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", *argv])
    assert "must be" in capsys.readouterr().err


def start(cfg, make):
    httpd = serve(cfg, make, "127.0.0.1", 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def get(url, path, headers=None):
    req = urllib.request.Request(url + path, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_api_key_health_and_metrics():
    httpd, url = start(ServeConfig(model="fake", strategy="majority", n=2, api_key="sekret"), lambda: slow_fake(0))
    try:
        assert get(url, "/v1/models")[0] == 401
        assert get(url, "/v1/models", {"Authorization": "Bearer sekret"})[0] == 200
        assert get(url, "/health")[0] == 200  # a load balancer needs no key
        req = urllib.request.Request(
            url + "/v1/chat/completions",
            data=json.dumps({"messages": MSG}).encode(),
            headers={"Content-Type": "application/json", "Authorization": "Bearer wrong"},
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 401
        status, text = get(url, "/metrics")
        assert status == 200 and 'ttscale_requests_total{status="401"} 1' in text and "ttscale_queue_depth 0" in text
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_an_oversized_body_gets_413_and_the_server_goes_on(fake_server):
    status, body = raw_post(
        fake_server, json.dumps({"messages": [{"role": "user", "content": "x" * 300_000}]}).encode()
    )
    assert status == 413 and "over" in body["error"]["message"]
    assert post(fake_server, {"messages": MSG})[0] == 200


def test_streaming_with_the_openai_client(fake_server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=fake_server + "/v1", api_key="none", timeout=30)
    chunks = list(client.chat.completions.create(model="fake", messages=MSG, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert "\\boxed" in text and chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].model_extra["ttscale"]["answer"] in ("5", "6")
    assert chunks[-1].usage.completion_tokens > 0


def test_a_request_that_times_out_cancels_its_job():
    cfg = ServeConfig(model="fake", strategy="beam_search", n=4, timeout=1.0, search={"max_iterations": 40})
    httpd, url = start(cfg, lambda: slow_fake(0.4))  # 40 steps of 0.4 s: 16 s if nobody stopped it
    try:
        assert post(url, {"messages": MSG})[0] == 504
        for _ in range(40):  # the worker stops at its next engine call
            if json.loads(get(url, "/health")[1])["running"] == 0:
                break
            time.sleep(0.25)
        assert json.loads(get(url, "/health")[1])["running"] == 0
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_load_bench_gets_an_answer_to_every_request_good_or_hostile():
    from ttscale.apps.bench_serve import Load, bench_serve, format_serve

    r = bench_serve(Load(clients=20, requests=60, hostile_every=3, workers=1, queue=4))
    assert r["connection_failures"] == 0
    allowed = {"good": {"200", "429"}, "deep": {"400"}, "huge": {"413"}, "path": {"400"}, "grade": {"200", "429"}}
    for kind, statuses in r["statuses"].items():
        assert set(statuses) <= allowed[kind], (kind, statuses)
    assert sum(sum(s.values()) for s in r["statuses"].values()) == 60
    assert "connections reset or refused: 0" in format_serve(r)


def test_a_body_that_never_arrives_gets_408_and_frees_the_server():
    import socket

    cfg = ServeConfig(model="fake", strategy="majority", n=2, body_timeout=1.0)
    httpd, url = start(cfg, lambda: slow_fake(0))
    try:
        host, port = httpd.server_address[:2]
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 1000\r\n\r\n{"messages":'  # 12 of the 1,000 bytes it claims
            )
            reply = b""
            while b"}}" not in reply:  # the headers and the JSON body may come in two segments
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
            reply = reply.decode()
        assert reply.startswith("HTTP/1.1 408") and "did not arrive" in reply
        assert post(url, {"messages": MSG})[0] == 200  # and the server goes on
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_public_address_without_an_api_key_is_warned_about(capsys):
    httpd = serve(ServeConfig(model="fake"), lambda: slow_fake(0), "0.0.0.0", 0)
    httpd.server_close()
    assert "serving on 0.0.0.0 without --api-key" in capsys.readouterr().err
    httpd = serve(ServeConfig(model="fake", api_key="k"), lambda: slow_fake(0), "0.0.0.0", 0)
    httpd.server_close()
    assert "without --api-key" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("threads", "workers", "expected"),
    [
        ("auto", 1, "auto"),  # one engine in the process: it reads its neighbours itself
        ("auto", 2, max(1, (os.cpu_count() or 1) // 2)),  # engines in one process cannot see each other
        (1, 2, 1),  # a count given is kept
    ],
)
def test_several_workers_split_the_cores_since_auto_cannot_tell_them_apart(threads, workers, expected):
    from ttscale.cli.commands import worker_threads

    assert worker_threads(threads, workers) == expected
