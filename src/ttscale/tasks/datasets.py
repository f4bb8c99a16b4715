"""Evaluation sets: MATH-500, GSM8K test and HumanEval ship inside the package; any JSONL
file works too (a code task's rows have `prompt`, `entry_point` and, to grade, `test`).
And which problems of a set a run takes (a slice, some levels, one shard).

A malformed row is reported with its line number and skipped: one bad line never kills a run.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

from ..core import Problem
from .code import CodeError, code_problem
from .grading import gold_from_gsm8k

BUILTIN = {"gsm8k": "gsm8k_test.jsonl", "math500": "math500.jsonl", "humaneval": "humaneval.jsonl.gz"}
QUESTION_FIELDS = ("problem", "question", "prompt", "input")
ANSWER_FIELDS = ("answer", "gold", "target")


@dataclass
class Dataset:
    name: str
    problems: list[Problem]
    errors: list[str] = field(default_factory=list)  # "line N: why", one per skipped row
    unanswered: list[int] = field(default_factory=list)  # lines of rows kept without a reference answer


def load_dataset(
    name_or_path: str,
    question_field: str | None = None,
    answer_field: str | None = None,
    gsm8k_answers: bool | None = None,
) -> Dataset:
    """A built-in name ("gsm8k", "math500") or a JSONL path. Field names default to the first
    present of the usual ones; GSM8K-style '#### n' answers are recognised by default."""
    if name_or_path in BUILTIN:
        raw = resources.files("ttscale").joinpath("data").joinpath(BUILTIN[name_or_path]).read_bytes()
        text = (gzip.decompress(raw) if BUILTIN[name_or_path].endswith(".gz") else raw).decode("utf-8")
        name = name_or_path
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"dataset {name_or_path!r} is neither a built-in ({', '.join(BUILTIN)}) nor a readable file"
            )
        text = path.read_bytes().decode("utf-8", errors="surrogateescape")  # bad bytes: reported per line
        name = path.stem
    ds = Dataset(name=name, problems=[])
    seen: set[str] = set()
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            if _undecodable(line):
                raise ValueError("not UTF-8 text")
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
            problem = _row_to_problem(row, question_field, answer_field, gsm8k_answers)
        except (ValueError, KeyError, TypeError) as e:
            ds.errors.append(f"line {lineno}: {e}")
            continue
        except RecursionError:  # a pathologically nested line: one bad row, not a dead dataset
            ds.errors.append(f"line {lineno}: nested too deeply to read")
            continue
        if problem.id in seen:
            ds.errors.append(f"line {lineno}: duplicate id {problem.id!r}")
            continue
        seen.add(problem.id)
        ds.problems.append(problem)
        if problem.gold is None:
            ds.unanswered.append(lineno)
    if not ds.problems:
        raise ValueError(f"dataset {name_or_path!r} has no usable rows ({len(ds.errors)} malformed)")
    return ds


def _row_to_problem(row: dict, qf: str | None, af: str | None, gsm8k_answers: bool | None) -> Problem:
    if "entry_point" in row:
        return _code_row(row)
    qf = qf or next((f for f in QUESTION_FIELDS if f in row), None)
    if qf is None or qf not in row:
        raise KeyError(f"no question field (looked for {qf or ', '.join(QUESTION_FIELDS)})")
    question = row[qf]
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"field {qf!r} is empty or not a string")
    af = af or next((f for f in ANSWER_FIELDS if f in row), None)
    gold: str | None = None
    if af is not None:
        if af not in row:
            raise KeyError(f"no answer field {af!r}")
        raw = row[af]
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            raw = str(raw)
        if not isinstance(raw, str):
            raise ValueError(f"field {af!r} is not a string or number")
        use_gsm8k = gsm8k_answers if gsm8k_answers is not None else "####" in raw
        gold = gold_from_gsm8k(raw) if use_gsm8k else raw.strip()
    pid = str(row.get("unique_id") or row.get("id") or _content_id(question))
    meta = {k: row[k] for k in ("level", "subject") if k in row}
    return Problem(id=pid, question=question, gold=gold, meta=meta)


def _code_row(row: dict) -> Problem:
    """A code task (HumanEval's layout): the prompt to complete, the function's name, and the
    hidden tests (a `check(candidate)` function) that grade it."""
    for key in ("prompt", "entry_point"):
        if not isinstance(row.get(key), str) or not row[key].strip():
            raise ValueError(f"a code row needs a non-empty string {key!r}")
    test = row.get("test")
    if test is not None and (not isinstance(test, str) or "def check" not in test):
        raise ValueError("field 'test' must define check(candidate)")
    pid = str(row.get("task_id") or row.get("id") or _content_id(row["prompt"]))
    try:
        return code_problem(row["prompt"], row["entry_point"], pid, test)
    except CodeError as e:
        raise ValueError(str(e)) from None


def _content_id(question: str) -> str:
    """Rows without an id are named by their text, so inserting rows never renames others."""
    return "q-" + hashlib.sha1(question.encode()).hexdigest()[:12]


def _undecodable(line: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in line)


def report_errors(ds: Dataset, stream: TextIO | None = None, most: int = 10) -> None:
    stream = stream or sys.stderr
    if ds.unanswered:
        lines = ", ".join(map(str, ds.unanswered[:most])) + (" ..." if len(ds.unanswered) > most else "")
        print(
            f"warning: {len(ds.unanswered)} row(s) of {ds.name} have no reference answer (lines {lines}): "
            "they are sampled, and graded as wrong",
            file=stream,
        )
    if not ds.errors:
        return
    print(f"warning: skipped {len(ds.errors)} malformed row(s) in {ds.name}:", file=stream)
    for e in ds.errors[:most]:
        print(f"  {e}", file=stream)
    if len(ds.errors) > most:
        print(f"  ... and {len(ds.errors) - most} more", file=stream)


class SelectionError(ValueError):
    pass


def select_problems(
    problems: Sequence[Problem],
    limit: int | None,
    shard: tuple[int, int] | None = None,
    start: int = 0,
    levels: Sequence[int] | None = None,
) -> list[Problem]:
    """`limit` problems from the `start`-th (the first ones by default), counted among the
    problems of the chosen `levels` if any; of those, shard (i, k) takes every k-th from the
    i-th, so the k shards partition the slice exactly, whatever machine runs which."""
    if start < 0:
        raise SelectionError("--start must be >= 0")
    if levels:
        if not any("level" in p.meta for p in problems):
            raise SelectionError("--levels needs a dataset whose rows have a 'level' field (math500 has)")
        wanted = set(levels)
        problems = [p for p in problems if _level(p.meta.get("level")) in wanted]
    chosen = list(problems[start : start + limit] if limit else problems[start:])
    if shard is None:
        return chosen
    i, k = shard
    if not 0 <= i < k:
        raise SelectionError(f"shard {i}/{k} does not exist: use 0/{k} .. {k - 1}/{k}")
    return chosen[i::k]


def interleave_by_subject(problems: Sequence[Problem]) -> list[Problem]:
    """The problems taken one from each subject in turn (subjects in order of first appearance,
    each in file order), so any prefix spreads over the subjects; rows with no subject count as
    one subject. Deterministic: the same file gives the same order."""
    by_subject: dict[Any, list[Problem]] = {}
    for p in problems:
        by_subject.setdefault(p.meta.get("subject"), []).append(p)
    queues = list(by_subject.values())
    longest = max(map(len, queues), default=0)
    return [q[i] for i in range(longest) for q in queues if i < len(q)]


def _level(value: Any) -> int | None:
    """MATH levels come as 3 or as "Level 3"."""
    digits = "".join(ch for ch in str(value) if ch.isdigit())
    return int(digits) if digits else None
