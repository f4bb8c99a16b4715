"""Record keys and typed records: every key round-trips, and every record is plain JSON."""

import json

import pytest

from ttscale.core import Candidate, Compute, Problem, Result, SamplingParams, Step
from ttscale.evaluation import EvalConfig, RecordKey
from ttscale.evaluation.config import record_key
from ttscale.evaluation.records import candidates_of, pool_record, sample_record, search_record

BEAM = RecordKey.search("q1", "beam_search", 16, "probe", "last", {"beam_width": 4})
OPTIMAL = RecordKey.search("q2", "compute_optimal", 8, "p@1", "min", {"policy": "a|b"})
KEYS = [
    ("pool|q0", RecordKey("pool", "q0")),
    ("pool|test/precalculus/807.json", RecordKey("pool", "test/precalculus/807.json")),
    ('search|q1|beam_search|16|probe|last|{"beam_width": 4}', BEAM),
    ("search|q1|dvts|4|logprob|mean|{}", RecordKey.search("q1", "dvts", 4, "logprob", "mean", {})),
    # a settings value may hold the separator: the settings are the rest of the key
    ('search|q2|compute_optimal|8|p@1|min|{"policy": "a|b"}', OPTIMAL),
]


@pytest.mark.parametrize(("text", "key"), KEYS)
def test_keys_format_and_parse_both_ways(text, key):
    assert key.format() == text
    assert RecordKey.parse(text) == key
    assert RecordKey.parse(key.format()).options == key.options


@pytest.mark.parametrize("text", ["", "pool|", "search|q|beam|x|s|a|{}", "search|q|beam|4", "grid|q", "q0"])
def test_a_malformed_key_is_refused(text):
    with pytest.raises(ValueError, match="not a record key"):
        RecordKey.parse(text)


def test_the_run_config_writes_keys_the_parser_reads():
    cfg = EvalConfig(scorer="logprob", aggregation="last", search={"max_iterations": 5, "beam_width": 2})
    key = RecordKey.parse(cfg.search_key("q3", "beam_search", 8))
    assert (key.problem_id, key.strategy, key.n, key.scorer, key.aggregation) == (
        "q3",
        "beam_search",
        8,
        "logprob",
        "last",
    )
    assert key.options == {"beam_width": 2, "max_iterations": 5}
    assert cfg.work_keys("q3")[0] == "pool|q3"


def test_a_pool_record_is_keyed_by_its_id_and_a_search_record_by_its_key():
    assert record_key({"id": "q9"}) == "pool|q9" and RecordKey.of({"id": "q9"}) == RecordKey.pool("q9")
    assert record_key({"key": "search|q9|dvts|4|s|a|{}", "id": "q9"}) == "search|q9|dvts|4|s|a|{}"


PROBLEM = Problem("q0", "What is 3 + 4?", gold="7")


def candidate(answer):
    return Candidate(text=f"so \\boxed{{{answer}}}", steps=[Step("so", n_tokens=2, logprob_sum=-0.5)], answer=answer)


def test_pool_records_are_json_and_grade_their_samples():
    samples = [sample_record(candidate(a), PROBLEM, {"logprob": [0.5]}) for a in ("7", "8")]
    rec = pool_record(PROBLEM, "m", SamplingParams(seed=11), Compute(generated_tokens=4), samples)
    back = json.loads(json.dumps(rec))
    assert back == rec and back["seed"] == 11 and back["sampling"]["seed"] == 11
    assert [s["correct"] for s in back["candidates"]] == [True, False]
    assert [c.answer for c in candidates_of(back["candidates"])] == ["7", "8"]


def test_a_search_record_keeps_inputs_and_outcome_in_settings_and_picks_apart():
    result = Result.picked(
        "dvts", [candidate("7")], 0, Compute(), {"n": 4, "beam_width": 2}, {"subtrees": 2, "picks": {"majority": "7"}}
    )
    rec = search_record("search|q0|dvts|4|s|a|{}", PROBLEM, "m", 3, result, 4)
    assert rec["settings"] == {"n": 4, "beam_width": 2, "subtrees": 2}
    assert rec["picks"] == {"majority": {"answer": "7", "correct": True}}
    assert rec["correct"] and json.loads(json.dumps(rec)) == rec


def test_a_record_appended_after_a_cut_line_is_not_lost(tmp_path):
    """A kill mid-line leaves no newline at the end; the next record starts a line of its own."""
    from ttscale.util.jsonl import append_jsonl, read_jsonl

    path = tmp_path / "data.jsonl"
    append_jsonl(path, {"id": 1})
    path.write_text(path.read_text() + '{"id": 2, "cut')
    append_jsonl(path, {"id": 3})
    assert [r["id"] for r in read_jsonl(path)] == [1, 3]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    append_jsonl(empty, {"id": 4})
    assert empty.read_text() == '{"id": 4}\n'
