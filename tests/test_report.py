import json
from dataclasses import replace

import pytest

from ttscale.apps.report import STATUS_COLOURS, build_report, load_trace, tree_svg
from ttscale.core import SamplingParams
from ttscale.evaluation import EvalConfig, run_eval
from ttscale.testing import FakeGenerator


def script(prompt, seed):
    depth = prompt.partial.count("\n\n")
    if depth >= 2:
        return f"So \\boxed{{{seed % 3}}}."
    return f"step {depth} variant {seed % 5}.\n\nmore"


def searched_run(tmp_path, strategies, **kw):
    """Two problems, a pool strategy and beam search (width 2) at N=4 with the fake engine."""
    data = tmp_path / "d.jsonl"
    data.write_text(
        "".join(json.dumps({"id": f"q{k}", "question": f"What is {k}?", "answer": "1"}) + "\n" for k in range(2))
    )
    cfg = EvalConfig(
        dataset=str(data),
        ns=(4,),
        model="fake",
        strategies=strategies,
        sampling=SamplingParams(max_tokens=100),
        search={"beam_width": 2},
        **kw,
    )
    run_eval(cfg, lambda: FakeGenerator(script), tmp_path / "run", progress=False, n_boot=5)
    return cfg


def test_report_with_tables_plot_and_search_tree(tmp_path):
    searched_run(tmp_path, ("majority", "beam_search"))
    key, trace = load_trace(tmp_path / "run", "q1", "beam_search")
    assert key.startswith("search|q1|beam_search|4|")
    assert load_trace(tmp_path / "run", key) == (key, trace)  # a whole key names one run
    svg = tree_svg(trace)
    assert svg.count("<circle") == len(trace)
    assert STATUS_COLOURS["chosen"] in svg and STATUS_COLOURS["pruned"] in svg
    page = build_report([tmp_path / "run"], (tmp_path / "run", "q1", "beam_search"))
    assert "<table>" in page and "data:image/png;base64," in page and "<svg" in page
    assert "beam_search" in page and "majority" in page


def test_named_view_with_another_verifier_compared_and_reported(tmp_path):
    cfg = searched_run(tmp_path, ("weighted_best_of_n", "beam_search"), aggregation="last")
    other = replace(cfg, scorer="self_certainty")
    report = run_eval(
        other,
        lambda: FakeGenerator(script),
        tmp_path / "run",
        progress=False,
        n_boot=5,
        summary_name="sc",
        compare=[("logprob", "last"), ("logprob", "min")],
    )
    labels = {p.strategy for p in report.points}
    assert {"beam_search", "beam_search (logprob/last)", "weighted_best_of_n (logprob/min)"} <= labels
    assert {"beam_search+majority (logprob/last)", "beam_search+weighted_best_of_n (logprob/last)"} <= labels
    summary = json.loads((tmp_path / "run" / "sc.json").read_text())
    assert summary["not_compared"] == ["beam_search (logprob/min) n=4 missing on 2 of 2 problems"]  # never run with min
    page = build_report([tmp_path / "run" / "sc.json"])
    assert "beam_search (logprob/last)" in page and "data:image/png;base64," in page


def test_headline_compares_runs_on_the_same_problems_against_a_baseline(tmp_path):
    import pytest

    data = tmp_path / "d.jsonl"
    data.write_text(
        "".join(json.dumps({"id": f"q{k}", "question": f"What is {k}?", "answer": str(k)}) + "\n" for k in range(3))
    )

    def right_then_wrong(prompt, seed):  # the first sample of each problem is right, then 1 in 4
        k = prompt.messages[-1][1].split()[2].rstrip("?")
        return f"So \\\\boxed{{{k if seed % 100 % 4 == 0 else 99}}}."

    big = EvalConfig(
        dataset=str(data), ns=(1,), model="big", strategies=("majority",), sampling=SamplingParams(temperature=0)
    )
    small = EvalConfig(dataset=str(data), ns=(4,), model="small", strategies=("majority", "weighted_best_of_n"))
    run_eval(big, lambda: FakeGenerator(right_then_wrong), tmp_path / "big", progress=False, n_boot=5)
    run_eval(small, lambda: FakeGenerator(right_then_wrong), tmp_path / "small", progress=False, n_boot=5)
    page = build_report([tmp_path / "big", tmp_path / "small"], baselines=[tmp_path / "big"], out_dir=tmp_path / "h")
    md = (tmp_path / "h" / "headline.md").read_text()
    assert "| big greedy | 1 | 100.0" in md and "small majority" in md
    (head,) = json.loads((tmp_path / "h" / "headline.json").read_text())["slices"]
    assert head["name"] == "d-3" and head["problems"] == 3
    assert head["baseline"]["accuracy"] == 1.0
    assert set(head["matches"]) == {
        "small majority",
        "small weighted_best_of_n (logprob/mean)",
        "small oracle (pass@N)",
    }
    # every system is paired with the baseline over the same problems: its closest point
    # is its best accuracy minus the baseline's, and here it falls short on every draw
    best = max((p for p in head["points"] if p["system"] == "small majority"), key=lambda p: p["accuracy"])
    closest = head["matches"]["small majority"]["closest"]
    assert head["matches"]["small majority"]["n"] is None
    assert closest["difference"] == pytest.approx(best["accuracy"] - 1.0) and closest["ci_high"] < 0
    assert "closest at N = " in md and "vs big greedy, paired" in md
    assert all(p["flops"] > 0 for p in head["points"])
    assert "Headline" in page and (tmp_path / "h" / "headline-d-3.png").stat().st_size > 1000
    # a second view of the same pool adds none of its points again
    run_eval(small, None, tmp_path / "small", generate=False, progress=False, n_boot=5, summary_name="again")
    views = [tmp_path / "big", tmp_path / "small", tmp_path / "small" / "again.json"]
    build_report(views, baselines=[tmp_path / "big"], out_dir=tmp_path / "h3")
    (again,) = json.loads((tmp_path / "h3" / "headline.json").read_text())["slices"]
    assert again["points"] == head["points"]

    # a second slice (the first 2 problems, cut as named summaries) against its own baseline
    for cfg, run in ((big, "big"), (small, "small")):
        run_eval(
            replace(cfg, limit=2), None, tmp_path / run, generate=False, progress=False, n_boot=5, summary_name="two"
        )
    cut = [tmp_path / "big" / "two.json", tmp_path / "small" / "two.json"]
    build_report([tmp_path / "small", *cut], baselines=[tmp_path / "big", cut[0]], out_dir=tmp_path / "h2")
    slices = json.loads((tmp_path / "h2" / "headline.json").read_text())["slices"]
    assert [(s["name"], s["problems"]) for s in slices] == [("d-3", 3), ("d-2", 2)]
    assert [p["system"] for p in slices[1]["points"]][:1] == [
        "big greedy"
    ]  # a baseline listed as a run is in its slice
    assert "## d-2" in (tmp_path / "h2" / "headline.md").read_text()
    other = tmp_path / "d2.jsonl"
    other.write_text(data.read_text().splitlines()[0] + "\n")
    run_eval(
        EvalConfig(dataset=str(other), ns=(1,), model="x"),
        lambda: FakeGenerator(right_then_wrong),
        tmp_path / "x",
        progress=False,
        n_boot=5,
    )
    with pytest.raises(ValueError, match="no baseline run covers the 1 problems"):
        build_report([tmp_path / "big", tmp_path / "x"], baselines=[tmp_path / "big"], out_dir=tmp_path / "h")


def test_round_strategies_meet_resampling_at_matched_tokens():
    from ttscale.apps.report import matched_tokens

    def point(system, n, tokens, per_problem):
        return {"system": system, "n": n, "generated_tokens": tokens, "per_problem": per_problem}

    points = [
        point("m self_debug", 1, 100, [0, 1, 0, 1]),
        point("m self_debug", 2, 200, [1, 1, 0, 1]),
        point("m best_of_n (examples/mean)", 1, 90, [0, 1, 0, 0]),
        point("m best_of_n (examples/mean)", 2, 190, [0, 1, 1, 0]),
        point("m best_of_n (examples/mean)", 4, 380, [1, 1, 1, 1]),
        point("m greedy", 1, 80, [1, 1, 1, 1]),
        point("m oracle (pass@N)", 4, 380, [1, 1, 1, 1]),
    ]
    rows = matched_tokens(points)
    # resampling gets the smallest budget with at least as many tokens: 2 against 1, 4 against 2
    assert [(r["n"], r["against_n"]) for r in rows] == [(1, 2), (2, 4)]
    assert [r["against"] for r in rows] == ["m best_of_n (examples/mean)"] * 2  # not greedy, not the oracle
    assert rows[0]["difference"] == 0.0 and rows[1]["difference"] == -0.25


def test_report_command_creates_its_output_directory(tmp_path, capsys):
    from ttscale.cli import main

    searched_run(tmp_path, ("majority", "beam_search"))
    out = tmp_path / "new" / "dir" / "report.html"
    assert main(["report", str(tmp_path / "run"), "--tree", str(tmp_path / "run"), "--output", str(out)]) == 0
    assert "<svg" in out.read_text() and "report written" in capsys.readouterr().out


LABELS = [
    ("embedded engine", {"kind": "llama.cpp", "threads": 2}, 0.7, "qwen"),
    ("embedded, greedy", {"kind": "llama.cpp", "threads": 2}, 0.0, "qwen greedy"),
    ("a server", {"kind": "openai", "model": "qwen-0.5b"}, 0.7, "qwen via server qwen-0.5b"),
    ("a server, greedy", {"kind": "openai", "model": "qwen-0.5b"}, 0.0, "qwen via server qwen-0.5b greedy"),
    ("written before engines were kept", None, 0.7, "qwen"),
]


@pytest.mark.parametrize("what,engine,temperature,label", LABELS, ids=[x[0] for x in LABELS])
def test_a_run_is_labelled_by_its_model_and_the_server_that_sampled_it(what, engine, temperature, label):
    from ttscale.apps.report import run_label

    summary = {"identity": {"model": "qwen", "sampling": {"temperature": temperature}}}
    assert run_label({**summary, **({"engine": engine} if engine else {})}) == label
