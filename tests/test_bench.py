import json
from dataclasses import replace

import pytest

from ttscale.apps.bench import bench_reproduce, format_reproduce
from ttscale.core import SamplingParams
from ttscale.evaluation import EvalConfig, run_eval
from ttscale.testing import FakeGenerator


def script(prompt, seed):
    depth = prompt.partial.count("\n\n")
    if depth >= 2:
        return f"So \\boxed{{{seed % 3}}}."
    return f"step {depth} variant {seed % 5}.\n\nmore"


def test_reproduce_reruns_stored_pools_and_searches_and_finds_a_changed_one(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {k}?", "answer": "1"}) + "\n" for k in range(2)))
    cfg = EvalConfig(
        dataset=str(data),
        ns=(4,),
        model="fake",
        strategies=("majority", "beam_search"),
        sampling=SamplingParams(max_tokens=100),
        search={"beam_width": 2},
    )
    run = tmp_path / "run"
    run_eval(cfg, lambda: FakeGenerator(script), run, progress=False, n_boot=5)
    built = []

    def make(hidden, threads):
        built.append(hidden)
        return FakeGenerator(script)

    r = bench_reproduce(run, records=10, make_generator=make)
    assert r["reproduced_exactly"] == len(r["records"]) == 4  # 2 pools, 2 beam searches
    assert built == [False]  # one engine for all: no record needed hidden states
    assert "4 of 4 records reproduced token for token" in format_reproduce(r)

    # a stored sample that the seed does not give back is found, and only that record
    lines = (run / "samples.jsonl").read_text().splitlines()
    rec = json.loads(lines[0])
    rec["candidates"][1]["text"] += " (edited)"
    (run / "samples.jsonl").write_text("\n".join([json.dumps(rec), *lines[1:]]) + "\n")
    r = bench_reproduce(run, records=10, match="pool|", make_generator=make)
    assert [row["identical_samples"] for row in r["records"]] == [3, 4] and r["reproduced_exactly"] == 1
    with pytest.raises(ValueError, match="no pool or tree-search record"):
        bench_reproduce(run, match="|dvts|", make_generator=make)


def test_reproduce_redraws_a_grown_pool_as_it_was_grown(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"question": f"What is {k}?", "answer": "1"}) + "\n" for k in range(2)))
    cfg = EvalConfig(dataset=str(data), ns=(2,), model="fake", sampling=SamplingParams(max_tokens=100))
    run = tmp_path / "run"
    run_eval(cfg, lambda: FakeGenerator(script), run, progress=False, n_boot=5)
    run_eval(replace(cfg, ns=(5,)), lambda: FakeGenerator(script), run, False, 5, grow_pool=True)
    grown = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()][-1]
    assert len(grown["candidates"]) == 5 and grown["grown"][0]["scorer"] == "logprob"

    r = bench_reproduce(run, records=10, make_generator=lambda hidden, threads: FakeGenerator(script))
    assert r["reproduced_exactly"] == len(r["records"]) == 2
    assert all(row["samples"] == 5 for row in r["records"])


def test_reproduce_uses_the_thread_count_each_record_was_sampled_with(tmp_path):
    def script(prompt, seed):
        return f"Step.\n\nTherefore, the final answer is $\\boxed{{{seed % 3}}}$."

    ds = tmp_path / "d.jsonl"
    ds.write_text("".join(json.dumps({"id": f"q{k}", "question": f"Q{k}?", "answer": "1"}) + "\n" for k in range(2)))
    cfg = EvalConfig(dataset=str(ds), ns=(2,), model="fake", engine={"kind": "llama.cpp", "threads": 3})
    run_eval(cfg, lambda: FakeGenerator(script), tmp_path / "run", progress=False, n_boot=5)
    asked = []

    def make(hidden, threads):
        asked.append(threads)
        return FakeGenerator(script)

    assert bench_reproduce(tmp_path / "run", records=2, make_generator=make)["reproduced_exactly"] == 2
    assert asked == [3]  # the recorded count, one engine for both records
    bench_reproduce(tmp_path / "run", records=1, threads=1, make_generator=make)
    assert asked == [3, 1]  # an explicit --threads wins


def test_reproduce_refuses_records_a_server_sampled(tmp_path):
    ds = tmp_path / "d.jsonl"
    ds.write_text(json.dumps({"id": "q0", "question": "Q?", "answer": "1"}) + "\n")
    cfg = EvalConfig(dataset=str(ds), ns=(2,), model="fake", engine={"kind": "openai", "model": "served"})
    run_eval(cfg, lambda: FakeGenerator(lambda p, s: "\\boxed{1}"), tmp_path / "run", progress=False, n_boot=5)
    with pytest.raises(ValueError, match="sampled by a server"):
        bench_reproduce(tmp_path / "run", records=1, make_generator=lambda hidden, threads: FakeGenerator())


def test_the_contention_bench_runs_every_thread_count_alone_and_beside_a_busy_process():
    import os

    from ttscale.apps.bench import bench_contention, format_contention
    from ttscale.testing import FakeGenerator

    def make(threads):
        gen = FakeGenerator(lambda prompt, seed: f"Steps.\n\nTherefore, the final answer is $\\boxed{{{seed % 3}}}$.")
        gen.decodes_by_threads = {}
        return gen

    r = bench_contention("fake", n=2, max_tokens=16, make_generator=make)
    assert [row["threads"] for row in r["rows"]] == [*range(1, (os.cpu_count() or 1) + 1), "auto"]
    assert r["same_samples_everywhere"] and all(row["slowdown"] > 0 for row in r["rows"])
    assert "beside busy tok/s" in format_contention(r)


def test_a_contention_neighbour_is_a_busy_loop_or_a_second_engine_that_has_loaded(monkeypatch):
    import sys

    from ttscale.apps import bench
    from ttscale.testing import FakeGenerator

    assert bench.neighbour_command("loop", "m", 2) == [sys.executable, "-c", bench.BUSY_LOOP]
    assert bench.neighbour_command("engine", "qwen2.5-coder-0.5b", "auto")[-2:] == ["qwen2.5-coder-0.5b", "auto"]
    with pytest.raises(ValueError, match="loop, engine"):
        bench.bench_contention("fake", neighbour="gpu")
    # a stand-in engine that says it is ready only after a while: the bench waits for it
    started = []

    def stand_in(kind, model, threads):
        started.append(threads)
        return [sys.executable, "-c", "import time; time.sleep(0.3); print('ready', flush=True); time.sleep(60)"]

    monkeypatch.setattr(bench, "neighbour_command", stand_in)

    def make(threads):
        gen = FakeGenerator(lambda prompt, seed: "Steps.\n\nSo $\\boxed{1}$.")
        gen.decodes_by_threads = {}
        return gen

    r = bench.bench_contention("fake", n=2, max_tokens=16, make_generator=make, neighbour="engine")
    assert r["neighbour"] == "engine" and "second engine" in bench.format_contention(r)
    # checked once up front, then one neighbour per busy row, set like the engine measured
    assert started == [1, *[row["threads"] for row in r["rows"]]]
