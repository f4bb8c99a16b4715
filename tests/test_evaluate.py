import json

import pytest

from ttscale.core import SamplingParams, problem_seed
from ttscale.evaluation import EvalConfig, EvalError, run_eval


def write_dataset(path, n=5, bad_lines=()):
    lines = []
    for k in range(n):
        lines.append(json.dumps({"id": f"q{k}", "question": f"What is {k} plus {k}?", "answer": f"so\n#### {2 * k}"}))
    for at, text in bad_lines:
        lines.insert(at, text)
    path.write_text("\n".join(lines) + "\n")
    return path


def cfg_for(dataset, **kw):
    base = dict(dataset=str(dataset), ns=(4,), model="fake", seed=3, sampling=SamplingParams(max_tokens=64))
    base.update(kw)
    return EvalConfig(**base)


def doubling_generator(fake_factory, counter):
    """Samples answer 2k except the last of every four, which answers 2k+1."""

    def make():
        counter["loads"] += 1
        gen = fake_factory(["x"])

        def script(prompt, seed):
            k = int(prompt.messages[-1][1].split()[2])
            ans = 2 * k + (1 if seed % 100 == 3 else 0)
            return f"Add.\n\nTherefore, the final answer is $\\boxed{{{ans}}}$."

        gen.script = script
        return gen

    return make


def test_eval_writes_records_summary_and_plot(tmp_path, fake_factory):
    ds = write_dataset(tmp_path / "d.jsonl")
    counter = {"loads": 0}
    report = run_eval(
        cfg_for(ds), doubling_generator(fake_factory, counter), tmp_path / "run", progress=False, n_boot=20
    )
    records = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [f"q{k}" for k in range(5)]
    r0 = records[0]
    assert r0["seed"] == problem_seed(3, "q0")
    assert r0["sampling"]["max_tokens"] == 64 and r0["sampling"]["temperature"] == 0.7
    assert r0["compute"]["generated_tokens"] > 0
    assert [c["correct"] for c in r0["candidates"]] == [True, True, True, False]
    assert set(r0["candidates"][0]["scores"]) == {"logprob", "self_certainty", "conf_group", "conf_tail"}
    maj = next(p for p in report.points if p.strategy == "majority" and p.n == 4)
    assert maj.accuracy == 1.0
    p1 = next(p for p in report.points if p.strategy == "pass@1")
    assert p1.accuracy == pytest.approx(0.75)
    assert (tmp_path / "run" / "plot.png").stat().st_size > 1000
    assert "majority" in (tmp_path / "run" / "summary.md").read_text()
    assert counter["loads"] == 1


def test_killed_run_resumes_without_losing_or_duplicating(tmp_path, fake_factory):
    ds = write_dataset(tmp_path / "d.jsonl")
    out = tmp_path / "run"
    counter = {"loads": 0}
    run_eval(cfg_for(ds, limit=3), doubling_generator(fake_factory, counter), out, progress=False, n_boot=5)
    samples = out / "samples.jsonl"
    lines = samples.read_text().splitlines()
    # a kill in the middle of writing the third record leaves half a line
    samples.write_text("\n".join(lines[:2]) + "\n" + lines[2][: len(lines[2]) // 2])
    report = run_eval(cfg_for(ds), doubling_generator(fake_factory, counter), out, progress=False, n_boot=5)
    ids = [json.loads(line)["id"] for line in samples.read_text().splitlines()]
    assert ids == ["q0", "q1", "q2", "q3", "q4"]
    assert report.n_problems == 5
    # everything done: a third run loads no model at all
    run_eval(cfg_for(ds), doubling_generator(fake_factory, counter), out, progress=False, n_boot=5)
    assert counter["loads"] == 2


def test_resumed_records_equal_uninterrupted_ones(tmp_path, fake_factory):
    ds = write_dataset(tmp_path / "d.jsonl")
    c = {"loads": 0}
    run_eval(cfg_for(ds), doubling_generator(fake_factory, c), tmp_path / "a", progress=False, n_boot=5)
    run_eval(cfg_for(ds, limit=2), doubling_generator(fake_factory, c), tmp_path / "b", progress=False, n_boot=5)
    run_eval(cfg_for(ds), doubling_generator(fake_factory, c), tmp_path / "b", progress=False, n_boot=5)

    def texts(d):
        return [
            ([x["text"] for x in r["candidates"]], r["seed"])
            for r in map(json.loads, (tmp_path / d / "samples.jsonl").read_text().splitlines())
        ]

    assert texts("a") == texts("b")


def test_foreign_settings_are_refused(tmp_path, fake_factory):
    ds = write_dataset(tmp_path / "d.jsonl")
    c = {"loads": 0}
    run_eval(cfg_for(ds), doubling_generator(fake_factory, c), tmp_path / "run", progress=False, n_boot=5)
    with pytest.raises(EvalError, match="seed"):
        run_eval(cfg_for(ds, seed=4), doubling_generator(fake_factory, c), tmp_path / "run", progress=False)
    with pytest.raises(EvalError, match="sampling"):
        run_eval(
            cfg_for(ds, sampling=SamplingParams(max_tokens=64, temperature=1.0)),
            doubling_generator(fake_factory, c),
            tmp_path / "run",
            progress=False,
        )


def test_malformed_rows_are_reported_with_line_numbers_and_skipped(tmp_path, fake_factory, capsys):
    ds = write_dataset(tmp_path / "d.jsonl", n=3, bad_lines=[(1, "{not json"), (3, json.dumps({"question": ""}))])
    c = {"loads": 0}
    report = run_eval(cfg_for(ds), doubling_generator(fake_factory, c), tmp_path / "run", progress=False, n_boot=5)
    err = capsys.readouterr().err
    assert "line 2:" in err and "line 4:" in err
    assert report.n_problems == 3


def test_unknown_strategy_is_a_clear_error(tmp_path, fake_factory):
    ds = write_dataset(tmp_path / "d.jsonl")
    with pytest.raises(EvalError, match="unknown strategy"):
        run_eval(cfg_for(ds, strategies=("nope",)), lambda: fake_factory(["1"]), tmp_path / "r", progress=False)


def test_shards_partition_the_slice_and_merge_back(tmp_path, fake_factory):
    from ttscale.evaluation import merge_runs

    ds = write_dataset(tmp_path / "d.jsonl", n=7)
    c = {"loads": 0}
    for i in range(3):
        run_eval(
            cfg_for(ds, shard=(i, 3)), doubling_generator(fake_factory, c), tmp_path / f"s{i}", progress=False, n_boot=5
        )
    ids = [
        [json.loads(x)["id"] for x in (tmp_path / f"s{i}" / "samples.jsonl").read_text().splitlines()] for i in range(3)
    ]
    assert ids == [["q0", "q3", "q6"], ["q1", "q4"], ["q2", "q5"]]
    r = merge_runs(tmp_path / "all", [tmp_path / f"s{i}" for i in range(3)])
    assert (r.records, r.duplicates, r.missing) == (7, [], [])
    # the merged directory summarises like an unsharded run, without generating anything
    whole = run_eval(cfg_for(ds), doubling_generator(fake_factory, c), tmp_path / "all", progress=False, n_boot=5)
    assert whole.complete and whole.n_problems == 7 and c["loads"] == 3


def test_merge_reports_missing_and_duplicates_and_refuses_foreign_shards(tmp_path, fake_factory):
    from ttscale.evaluation import merge_runs

    ds = write_dataset(tmp_path / "d.jsonl", n=4)
    c = {"loads": 0}
    run_eval(cfg_for(ds, shard=(0, 2)), doubling_generator(fake_factory, c), tmp_path / "a", progress=False)
    run_eval(cfg_for(ds, shard=(0, 2)), doubling_generator(fake_factory, c), tmp_path / "b", progress=False)
    r = merge_runs(tmp_path / "m", [tmp_path / "a", tmp_path / "b"])
    assert r.records == 2 and len(r.duplicates) == 2 and r.missing == ["q1", "q3"]
    run_eval(cfg_for(ds, shard=(1, 2), seed=9), doubling_generator(fake_factory, c), tmp_path / "c", progress=False)
    with pytest.raises(EvalError, match="other settings.*seed"):
        merge_runs(tmp_path / "m2", [tmp_path / "a", tmp_path / "c"])
    with pytest.raises(EvalError, match="shard 0/2, not 1/2"):
        run_eval(cfg_for(ds, shard=(1, 2)), doubling_generator(fake_factory, c), tmp_path / "a", progress=False)


ENGINES = [
    ("llama.cpp threads differ", {"kind": "llama.cpp", "threads": 2}, {"kind": "llama.cpp", "threads": 1}, None),
    ("llama.cpp and a server", {"kind": "llama.cpp", "threads": 2}, {"kind": "openai", "model": "qwen"}, "different"),
    ("two served models", {"kind": "openai", "model": "qwen"}, {"kind": "openai", "model": "llama"}, "different"),
]


@pytest.mark.parametrize("what,first,second,refused", ENGINES, ids=[e[0] for e in ENGINES])
def test_merge_refuses_shards_of_other_engines_unless_declared_the_same_model(
    tmp_path, fake_factory, what, first, second, refused
):
    from ttscale.evaluation import merge_runs

    ds = write_dataset(tmp_path / "d.jsonl", n=4)
    c = {"loads": 0}
    for i, engine in enumerate((first, second)):
        cfg = cfg_for(ds, shard=(i, 2), engine=engine)
        run_eval(cfg, doubling_generator(fake_factory, c), tmp_path / f"s{i}", progress=False, n_boot=5)
    shards = [tmp_path / "s0", tmp_path / "s1"]
    if refused:
        with pytest.raises(EvalError, match=f"{refused} engines.*--same-model"):
            merge_runs(tmp_path / "m", shards)
        assert not (tmp_path / "m" / "samples.jsonl").exists()
        r = merge_runs(tmp_path / "m", shards, same_model=True)
        meta = json.loads((tmp_path / "m" / "config.json").read_text())
        assert meta["same_model_declared"] is True and meta["engines"] == [first, second]
    else:
        r = merge_runs(tmp_path / "m", shards)
        assert json.loads((tmp_path / "m" / "config.json").read_text())["engine"] == first
    assert (r.records, r.missing) == (4, [])


def test_report_only_generates_nothing(tmp_path, fake_factory):
    ds = write_dataset(tmp_path / "d.jsonl", n=4)
    c = {"loads": 0}
    run_eval(cfg_for(ds, limit=2), doubling_generator(fake_factory, c), tmp_path / "r", progress=False, n_boot=5)
    report = run_eval(
        cfg_for(ds), doubling_generator(fake_factory, c), tmp_path / "r", progress=False, n_boot=5, generate=False
    )
    assert c["loads"] == 1 and report.n_problems == 2 and not report.complete
    assert "PARTIAL: 2 of 4" in (tmp_path / "r" / "summary.md").read_text()


def test_a_view_at_smaller_budgets_replays_the_whole_stored_pool(tmp_path, fake_factory):
    # searches run at N=2 only are viewed beside a pool of 4: the view asks for N=2 and
    # replays the pool it finds, while a run that would sample must match the pool's size
    ds = write_dataset(tmp_path / "d.jsonl", n=2)
    c = {"loads": 0}
    run_eval(cfg_for(ds), doubling_generator(fake_factory, c), tmp_path / "r", progress=False, n_boot=5)
    view = run_eval(
        cfg_for(ds, ns=(2,)),
        doubling_generator(fake_factory, c),
        tmp_path / "r",
        progress=False,
        n_boot=5,
        generate=False,
    )
    assert c["loads"] == 1 and view.complete
    assert max(p.n for p in view.points if p.strategy == "majority") == 4
    assert "subsets of 4 samples" in (tmp_path / "r" / "summary.md").read_text()
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["identity"]["n"] == 4
    with pytest.raises(EvalError, match="different settings \\(n\\)"):
        run_eval(cfg_for(ds, ns=(2,)), doubling_generator(fake_factory, c), tmp_path / "r", progress=False)
    with pytest.raises(EvalError, match="different settings \\(n\\)"):  # a view cannot invent samples
        run_eval(
            cfg_for(ds, ns=(8,)), doubling_generator(fake_factory, c), tmp_path / "r", progress=False, generate=False
        )


def test_a_stored_pool_is_rescored_by_another_verifier_without_sampling(tmp_path, fake_factory):
    ds = write_dataset(tmp_path / "d.jsonl", n=3)
    counter = {"loads": 0}
    make = doubling_generator(fake_factory, counter)
    run_eval(cfg_for(ds), make, tmp_path / "run", progress=False, n_boot=5)
    gens = []

    def tracked():
        gens.append(make())
        return gens[-1]

    report = run_eval(cfg_for(ds, scorer="judge"), tracked, tmp_path / "run", progress=False, n_boot=5)
    assert report.complete and gens and not gens[0].calls  # scored, nothing sampled again
    lines = (tmp_path / "run" / "samples.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 6  # each pool once more, rescored; a reload keeps the later line
    run_eval(cfg_for(ds, scorer="judge"), tracked, tmp_path / "run", progress=False, n_boot=5, generate=False)
    assert len((tmp_path / "run" / "samples.jsonl").read_text().splitlines()) == 6  # a reader rewrites nothing
    run_eval(cfg_for(ds, scorer="judge"), tracked, tmp_path / "run", progress=False, n_boot=5)  # nothing to do
    records = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["q0", "q1", "q2"]  # the writer compacted
    for r in records:
        assert all(
            set(c["scores"]) == {"logprob", "self_certainty", "conf_group", "conf_tail", "judge"}
            for c in r["candidates"]
        )
        assert all(len(c["scores"]["judge"]) == len(c["steps"]) for c in r["candidates"])
        assert r["rescored"]["judge"]["verifier_tokens"] > 0
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert "verifier judge/mean" in summary and "| judge | last |" in summary
    # the same strategies under another verifier, on the same samples
    report = run_eval(
        cfg_for(ds, scorer="judge"),
        tracked,
        tmp_path / "run",
        progress=False,
        n_boot=5,
        generate=False,
        compare=[("logprob", "last")],
    )
    labels = {p.strategy for p in report.points}
    assert {"weighted_best_of_n", "weighted_best_of_n (logprob/last)", "best_of_n (logprob/last)"} <= labels
    assert "majority (logprob/last)" not in labels  # majority ignores the verifier


def test_named_summaries_are_separate_views_of_one_run(tmp_path, fake_factory):
    ds = write_dataset(tmp_path / "d.jsonl", n=2)
    make = doubling_generator(fake_factory, {"loads": 0})
    run_eval(cfg_for(ds), make, tmp_path / "run", progress=False, n_boot=5)
    run_eval(
        cfg_for(ds, strategies=("majority",)), make, tmp_path / "run", progress=False, n_boot=5, summary_name="maj"
    )
    assert json.loads((tmp_path / "run" / "maj.json").read_text())["strategies"] == ["majority"]
    assert (tmp_path / "run" / "maj.png").exists() and (tmp_path / "run" / "maj.md").exists()
    assert "weighted_best_of_n" in json.loads((tmp_path / "run" / "summary.json").read_text())["strategies"]


def test_compute_optimal_is_replayed_on_the_stored_pools(tmp_path, fake_factory):
    from ttscale.strategies import Policy

    ds = write_dataset(tmp_path / "d.jsonl", n=3)
    Policy(probe_n=2, table={"1|4": {"strategy": "weighted_best_of_n"}}).save(tmp_path / "policy.json")
    make = doubling_generator(fake_factory, {"loads": 0})
    report = run_eval(
        cfg_for(ds), make, tmp_path / "run", progress=False, n_boot=10, replay_policy=str(tmp_path / "policy.json")
    )
    co = next(p for p in report.points if p.strategy == "compute_optimal" and p.n == 4)
    assert co.accuracy == 1.0 and co.generated_tokens > 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert 0.5 <= summary["compute_optimal_replayed"]["per_budget"]["4"]["budget_used"] <= 1.0


def test_policies_fitted_on_two_halves_cross_fit_the_slice_and_never_judge_their_own_problems(tmp_path, fake_factory):
    from ttscale.evaluation import read_run
    from ttscale.evaluation.policy import fit_policy

    ds = write_dataset(tmp_path / "d.jsonl", n=4)
    make = doubling_generator(fake_factory, {"loads": 0})
    run_eval(cfg_for(ds), make, tmp_path / "run", progress=False, n_boot=5)
    halves = [read_run(tmp_path / "run", 0, 2), read_run(tmp_path / "run", 2)]
    assert [[r["id"] for r in h] for h in halves] == [["q0", "q1"], ["q2", "q3"]]
    for k, records in enumerate(halves):
        policy = fit_policy(records, [4], probe_n=2)
        assert policy.meta["calibration_ids"] == [r["id"] for r in records]
        policy.save(tmp_path / f"half{k}.json")
    first, second = str(tmp_path / "half0.json"), str(tmp_path / "half1.json")
    with pytest.raises(EvalError, match="every policy was fitted on problem q0"):
        run_eval(cfg_for(ds), make, tmp_path / "run", progress=False, n_boot=5, replay_policy=first)
    held_out = run_eval(
        cfg_for(ds, start=2), make, tmp_path / "run", progress=False, n_boot=5, generate=False, replay_policy=first
    )
    crossed = run_eval(cfg_for(ds), make, tmp_path / "run", progress=False, n_boot=5, replay_policy=f"{first},{second}")
    assert held_out.n_problems == 2 and crossed.n_problems == 4
    assert any(p.strategy == "compute_optimal" for p in crossed.points)


def test_start_selects_a_later_slice_for_calibration(tmp_path, fake_factory):
    ds = write_dataset(tmp_path / "d.jsonl", n=6)
    make = doubling_generator(fake_factory, {"loads": 0})
    report = run_eval(cfg_for(ds, start=4, limit=5), make, tmp_path / "run", progress=False, n_boot=5)
    records = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["q4", "q5"] and report.n_problems == 2
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["start"] == 4


def test_levels_select_problems_before_the_slice(tmp_path, fake_factory):
    from ttscale.tasks.datasets import select_problems

    rows = [
        {"unique_id": f"p{k}", "problem": f"What is {k} plus {k}?", "answer": str(2 * k), "level": lvl}
        for k, lvl in enumerate([1, 4, "Level 2", 5, 3, 1])
    ]
    ds = tmp_path / "math.jsonl"
    ds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    make = doubling_generator(fake_factory, {"loads": 0})
    report = run_eval(cfg_for(ds, levels=(1, 2, 3), start=1, limit=2), make, tmp_path / "run", progress=False, n_boot=5)
    records = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["p2", "p4"] and report.n_problems == 2
    assert json.loads((tmp_path / "run" / "config.json").read_text())["levels"] == [1, 2, 3]
    gsm = write_dataset(tmp_path / "d.jsonl", n=2)
    with pytest.raises(EvalError, match="'level' field"):
        run_eval(cfg_for(gsm, levels=(1,)), make, tmp_path / "run2", progress=False, n_boot=5)
    assert select_problems([], None, levels=None) == []


def test_a_second_writer_is_refused_but_a_reader_may_look(tmp_path, fake_factory):
    from ttscale.evaluation import RunStore

    ds = write_dataset(tmp_path / "d.jsonl", n=2)
    make = doubling_generator(fake_factory, {"loads": 0})
    run_eval(cfg_for(ds), make, tmp_path / "run", progress=False, n_boot=5)
    writer = RunStore(tmp_path / "run", cfg_for(ds))  # another process busy with this directory
    with pytest.raises(EvalError, match="another ttscale process is writing"):
        run_eval(cfg_for(ds, limit=3), make, tmp_path / "run", progress=False, n_boot=5)
    report = run_eval(cfg_for(ds), make, tmp_path / "run", progress=False, n_boot=5, generate=False)
    assert report.n_problems == 2
    del writer


def test_a_refused_writer_changes_nothing_in_the_run_directory(tmp_path, fake_factory):
    from ttscale.evaluation import RunStore

    ds = write_dataset(tmp_path / "d.jsonl", n=2)
    make = doubling_generator(fake_factory, {"loads": 0})
    run_eval(cfg_for(ds), make, tmp_path / "run", progress=False, n_boot=5)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    writer = RunStore(tmp_path / "run", cfg_for(ds))  # holds the lock
    with pytest.raises(EvalError, match="another ttscale process is writing"):  # a growth that loses the lock
        run_eval(cfg_for(ds, ns=(8,)), make, tmp_path / "run", progress=False, n_boot=5, grow_pool=True)
    writer.close()
    after = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    assert after == before  # config.json not rewritten: the original command still runs
    run_eval(cfg_for(ds), make, tmp_path / "run", progress=False, n_boot=5)


def test_merge_covers_the_union_of_slices_that_extend_each_other(tmp_path, fake_factory):
    from ttscale.evaluation import merge_runs

    ds = write_dataset(tmp_path / "d.jsonl", n=6)
    c = {"loads": 0}
    run_eval(cfg_for(ds, limit=2), doubling_generator(fake_factory, c), tmp_path / "first", progress=False, n_boot=5)
    run_eval(
        cfg_for(ds, start=3, limit=3), doubling_generator(fake_factory, c), tmp_path / "later", progress=False, n_boot=5
    )
    r = merge_runs(tmp_path / "m", [tmp_path / "first", tmp_path / "later"])
    assert (r.records, r.duplicates, r.missing) == (5, [], ["q2"])  # the gap between the slices is named
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert (meta["start"], meta["limit"]) == (0, 6)


def test_merge_into_one_of_the_shards_keeps_its_views_and_gains_the_others_searches(tmp_path, fake_factory):
    from ttscale.evaluation import merge_runs
    from ttscale.evaluation.store import lock as _lock

    ds = write_dataset(tmp_path / "d.jsonl", n=4)
    c = {"loads": 0}
    searched = {"strategies": ("majority", "beam_search"), "search": {"beam_width": 2}}
    run_eval(cfg_for(ds, limit=2, **searched), doubling_generator(fake_factory, c), tmp_path / "pool", progress=False)
    later = cfg_for(ds, start=2, limit=2, **searched)
    run_eval(later, doubling_generator(fake_factory, c), tmp_path / "later", progress=False)
    view = (tmp_path / "pool" / "summary.md").read_text()
    with _lock(tmp_path / "pool" / ".lock"), pytest.raises(EvalError, match="another ttscale process"):
        merge_runs(tmp_path / "pool", [tmp_path / "pool", tmp_path / "later"])
    r = merge_runs(tmp_path / "pool", [tmp_path / "pool", tmp_path / "later"])
    assert (r.records, r.duplicates, r.missing) == (8, [], [])  # 4 pools and 4 searches
    assert (tmp_path / "pool" / "summary.md").read_text() == view
    traces = [json.loads(line)["key"] for line in (tmp_path / "pool" / "traces.jsonl").read_text().splitlines()]
    assert len(traces) == 4 and len(set(traces)) == 4
    # the merged directory reports all four problems without sampling anything
    whole = run_eval(cfg_for(ds, **searched), None, tmp_path / "pool", progress=False, n_boot=5, generate=False)
    assert whole.complete and whole.n_problems == 4 and c["loads"] == 2
    with pytest.raises(EvalError, match="merge into a new directory or into one of the shards"):
        merge_runs(tmp_path / "later", [tmp_path / "pool"])


def test_a_pools_only_copy_holds_the_pools_and_folds_back_with_what_ran_in_it(tmp_path, fake_factory):
    from ttscale.evaluation import merge_runs

    ds = write_dataset(tmp_path / "d.jsonl", n=3)
    c = {"loads": 0}
    searched = {"strategies": ("majority", "beam_search"), "search": {"beam_width": 2}}
    run_eval(cfg_for(ds, **searched), doubling_generator(fake_factory, c), tmp_path / "run", progress=False, n_boot=5)
    r = merge_runs(tmp_path / "copy", [tmp_path / "run"], pools_only=True)
    assert (r.records, r.duplicates, r.missing) == (3, [], [])
    copied = [json.loads(line) for line in (tmp_path / "copy" / "samples.jsonl").read_text().splitlines()]
    assert all(rec.get("kind") is None for rec in copied) and not (tmp_path / "copy" / "traces.jsonl").exists()
    # a verifier added in the copy folds back into the run, its searches kept
    run_eval(
        cfg_for(ds, scorer="judge"), doubling_generator(fake_factory, c), tmp_path / "copy", progress=False, n_boot=5
    )
    r = merge_runs(tmp_path / "run", [tmp_path / "run", tmp_path / "copy"])
    assert (r.records, r.duplicates) == (6, [])  # 3 pools, now judged, and 3 searches
    with pytest.raises(EvalError, match="new directory"):
        merge_runs(tmp_path / "run", [tmp_path / "run"], pools_only=True)


def test_merge_folds_a_rescored_copy_of_a_run_into_it(tmp_path, fake_factory):
    import shutil

    from ttscale.evaluation import merge_runs

    ds = write_dataset(tmp_path / "d.jsonl", n=3)
    make = doubling_generator(fake_factory, {"loads": 0})
    run_eval(cfg_for(ds), make, tmp_path / "run", progress=False, n_boot=5)
    shutil.copytree(tmp_path / "run", tmp_path / "copy")
    run_eval(cfg_for(ds, scorer="judge"), make, tmp_path / "copy", progress=False, n_boot=5)
    before = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    r = merge_runs(tmp_path / "run", [tmp_path / "run", tmp_path / "copy"])
    assert (r.records, r.duplicates, r.missing) == (3, [], [])  # a rescore is not duplicated work
    merged_from = json.loads((tmp_path / "run" / "config.json").read_text())["merged_from"]
    assert merged_from == [str(tmp_path / "run"), str(tmp_path / "copy")]
    after = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    for old, new in zip(before, after, strict=True):
        assert [c["text"] for c in new["candidates"]] == [c["text"] for c in old["candidates"]]
        assert all("judge" in c["scores"] and "logprob" in c["scores"] for c in new["candidates"])
        assert new["rescored"]["judge"]["verifier_tokens"] > 0
    # merged once more, the copy adds nothing new: duplicated work, kept once
    r = merge_runs(tmp_path / "again", [tmp_path / "run", tmp_path / "copy"])
    assert (r.records, len(r.duplicates)) == (3, 3)


def test_a_pool_grows_to_a_larger_budget_keeping_its_samples(tmp_path, fake_factory):
    ds = write_dataset(tmp_path / "d.jsonl", n=2)
    c = {"loads": 0}
    make = doubling_generator(fake_factory, c)
    run_eval(cfg_for(ds), make, tmp_path / "r", progress=False, n_boot=5)
    small = {json.loads(x)["id"]: json.loads(x) for x in (tmp_path / "r" / "samples.jsonl").read_text().splitlines()}
    with pytest.raises(EvalError, match="different settings \\(n\\)"):  # only on request
        run_eval(cfg_for(ds, ns=(8,)), make, tmp_path / "r", progress=False)
    grown = run_eval(cfg_for(ds, ns=(4, 8)), make, tmp_path / "r", progress=False, n_boot=5, grow_pool=True)
    assert grown.complete and max(p.n for p in grown.points if p.strategy == "majority") == 8
    assert json.loads((tmp_path / "r" / "config.json").read_text())["identity"]["n"] == 8
    lines = (tmp_path / "r" / "samples.jsonl").read_text().splitlines()
    records = {json.loads(x)["id"]: json.loads(x) for x in lines}
    for pid, old in small.items():
        new = records[pid]
        assert len(new["candidates"]) == 8 and new["candidates"][:4] == old["candidates"]
        assert new["compute"]["generated_tokens"] > old["compute"]["generated_tokens"]
        assert [g["from"] for g in new["grown"]] == [4] and new["grown"][0]["seed"] != old["seed"]
    # growing again from the same small pools gives the same samples
    again = tmp_path / "again"
    again.mkdir()
    (again / "config.json").write_text((tmp_path / "r" / "config.json").read_text().replace('"n": 8', '"n": 4', 1))
    (again / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in small.values()))
    run_eval(cfg_for(ds, ns=(8,)), make, again, progress=False, n_boot=5, grow_pool=True)
    regrown = {json.loads(x)["id"]: json.loads(x) for x in (again / "samples.jsonl").read_text().splitlines()}
    assert [c["text"] for r in regrown.values() for c in r["candidates"]] == [
        c["text"] for r in records.values() for c in r["candidates"]
    ]
    # a pool carrying scores the growth would not give its new samples is refused, not mixed
    judged = tmp_path / "judged"
    judged.mkdir()
    (judged / "config.json").write_text((again / "config.json").read_text().replace('"n": 8', '"n": 4', 1))
    for r in small.values():
        for cand in r["candidates"]:
            cand["scores"]["judge"] = [0.5]
    (judged / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in small.values()))
    with pytest.raises(EvalError, match="scored by judge"):
        run_eval(cfg_for(ds, ns=(8,)), make, judged, progress=False, grow_pool=True)


def test_a_merge_and_fit_optimal_read_a_grown_pool_not_the_line_it_superseded(tmp_path, fake_factory):
    from ttscale.evaluation import merge_runs, read_run

    ds = write_dataset(tmp_path / "d.jsonl", n=2)
    make = doubling_generator(fake_factory, {"loads": 0})
    run_eval(cfg_for(ds, ns=(2,)), make, tmp_path / "s", progress=False, n_boot=5)
    run_eval(cfg_for(ds, ns=(4,)), make, tmp_path / "s", progress=False, n_boot=5, grow_pool=True)
    assert len((tmp_path / "s" / "samples.jsonl").read_text().splitlines()) == 4  # not compacted yet
    assert [len(r["candidates"]) for r in read_run(tmp_path / "s")] == [4, 4]
    report = merge_runs(tmp_path / "m", [tmp_path / "s"])
    assert report.records == 2 and not report.duplicates
    merged = [json.loads(x) for x in (tmp_path / "m" / "samples.jsonl").read_text().splitlines()]
    assert [len(r["candidates"]) for r in merged] == [4, 4]


def test_an_output_that_is_a_file_is_a_clear_error(tmp_path, fake_factory):
    ds = write_dataset(tmp_path / "d.jsonl", n=1)
    (tmp_path / "taken").write_text("not a run")
    with pytest.raises(EvalError, match="is a file, not a run directory"):
        run_eval(cfg_for(ds), doubling_generator(fake_factory, {"loads": 0}), tmp_path / "taken", progress=False)


def test_the_engine_is_recorded_and_a_run_is_never_extended_by_another_kind(tmp_path, fake_factory, capsys):
    ds = write_dataset(tmp_path / "d.jsonl", n=2)
    make = doubling_generator(fake_factory, {"loads": 0})
    server = {"kind": "openai", "model": "qwen"}
    run_eval(cfg_for(ds, limit=1, engine=server), make, tmp_path / "run", progress=False, n_boot=5)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    record = json.loads((tmp_path / "run" / "samples.jsonl").read_text().splitlines()[0])
    assert config["engine"] == server and record["engine"] == server
    embedded = {"kind": "llama.cpp", "threads": 2}
    with pytest.raises(EvalError, match="sampled by a server \\(qwen\\), and this command uses the embedded"):
        run_eval(cfg_for(ds, engine=embedded), make, tmp_path / "run", progress=False, n_boot=5)
    # the embedded engine on another thread count may extend its own run, and says so
    run_eval(cfg_for(ds, limit=1, engine=embedded), make, tmp_path / "run2", progress=False, n_boot=5)
    run_eval(cfg_for(ds, engine={**embedded, "threads": 1}), make, tmp_path / "run2", progress=False, n_boot=5)
    assert "another engine setting (threads 2 -> 1)" in capsys.readouterr().err
    threads = [
        json.loads(line)["engine"]["threads"] for line in (tmp_path / "run2" / "samples.jsonl").read_text().splitlines()
    ]
    assert threads == [2, 1]  # each record keeps its own


@pytest.mark.parametrize("text", ["[1, 2]", '{"identity": 3}', "\udcff"])
def test_a_malformed_config_is_a_clear_error(tmp_path, fake_factory, text):
    ds = write_dataset(tmp_path / "d.jsonl", n=1)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(EvalError, match="config.json is (corrupt|not a run's config)"):
        run_eval(cfg_for(ds), doubling_generator(fake_factory, {"loads": 0}), tmp_path / "run", progress=False)


def test_a_problem_the_engine_refuses_is_named(tmp_path, fake_factory):
    ds = write_dataset(tmp_path / "d.jsonl", n=2)

    def make():
        gen = fake_factory(["4"])
        real = gen.generate

        def generate(prompts, n, params):
            if "1 plus 1" in prompts[0].messages[-1][1]:
                raise RuntimeError("prompt of 9000 tokens + max_tokens 64 exceeds n_ctx 4096")
            return real(prompts, n, params)

        gen.generate = generate
        return gen

    with pytest.raises(RuntimeError, match="problem q1 \\(pool\\|q1\\) failed: prompt of 9000 tokens"):
        run_eval(cfg_for(ds), make, tmp_path / "run", progress=False)
    assert len((tmp_path / "run" / "samples.jsonl").read_text().splitlines()) == 1  # q0's pool is kept
