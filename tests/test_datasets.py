import json

import pytest

from ttscale.tasks.datasets import load_dataset


def test_builtin_sets_ship_with_the_package():
    gsm = load_dataset("gsm8k")
    assert len(gsm.problems) == 1319 and not gsm.errors
    assert gsm.problems[0].gold == "18"
    math = load_dataset("math500")
    assert len(math.problems) == 500 and not math.errors
    assert math.problems[0].id.startswith("test/")
    assert "level" in math.problems[0].meta


def test_builtin_sets_match_the_shared_copies():
    from pathlib import Path

    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not shared.is_dir():
        pytest.skip("../shared/data not present")
    rows = [json.loads(line) for line in (shared / "math500.jsonl").read_text().splitlines()]
    assert [p.gold for p in load_dataset("math500").problems] == [r["answer"] for r in rows]


def test_custom_fields_and_numbers(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text(json.dumps({"q": "2+2?", "a": 4}) + "\n" + json.dumps({"q": "3+3?", "a": "6"}) + "\n")
    ds = load_dataset(str(p), question_field="q", answer_field="a")
    assert [(x.question, x.gold) for x in ds.problems] == [("2+2?", "4"), ("3+3?", "6")]
    with pytest.raises(ValueError, match="no usable rows"):
        load_dataset(str(p), question_field="q", answer_field="missing")


def test_bad_rows_and_bad_files(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text(
        "\n".join(
            [
                json.dumps({"problem": "ok?", "answer": "1"}),
                "[1, 2]",
                json.dumps({"problem": "no marker", "answer": "####"}),
                json.dumps({"answer": "1"}),
                json.dumps({"problem": "ok?", "answer": "1"}),
            ]
        )
    )
    ds = load_dataset(str(p))
    assert len(ds.problems) == 1
    assert [e.split(":")[0] for e in ds.errors] == ["line 2", "line 3", "line 4", "line 5"]
    with pytest.raises(FileNotFoundError, match="neither a built-in"):
        load_dataset(str(tmp_path / "missing.jsonl"))
    empty = tmp_path / "e.jsonl"
    empty.write_text("garbage\n")
    with pytest.raises(ValueError, match="no usable rows"):
        load_dataset(str(empty))


def test_a_pathologically_nested_line_is_one_bad_row(tmp_path):
    path = tmp_path / "d.jsonl"
    good = json.dumps({"id": "a", "question": "1+1?", "answer": "2"})
    path.write_text(good + "\n" + "[" * 100_000 + "\n" + good.replace('"a"', '"b"') + "\n")
    ds = load_dataset(str(path))
    assert [p.id for p in ds.problems] == ["a", "b"]
    assert ds.errors == ["line 2: nested too deeply to read"]


def test_bad_bytes_and_missing_answers_are_reported_not_hidden(tmp_path, capsys):
    from ttscale.tasks.datasets import report_errors

    path = tmp_path / "d.jsonl"
    good = json.dumps({"id": "a", "question": "1+1?", "answer": "2"}).encode()
    bad = b'{"id": "b", "question": "caf\xe9?", "answer": "1"}'  # latin-1, not UTF-8
    blank = json.dumps({"id": "c", "question": "2+2?"}).encode()
    path.write_bytes(good + b"\n" + bad + b"\n" + blank + b"\n")
    ds = load_dataset(str(path))
    assert [p.id for p in ds.problems] == ["a", "c"]
    assert ds.errors == ["line 2: not UTF-8 text"] and ds.unanswered == [3]
    report_errors(ds)
    err = capsys.readouterr().err
    assert "1 row(s) of d have no reference answer (lines 3)" in err and "line 2: not UTF-8 text" in err
