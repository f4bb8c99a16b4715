"""JSONL files written one record per line, each on disk before the call returns, so a kill
loses at most the line being written; readers skip a line cut short."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def append_jsonl(path: Path, obj: dict[str, Any]) -> None:
    """One record as one line, on disk before returning, so a kill loses at most this line.
    After a line cut short by a kill, the record starts a line of its own (readers skip the
    cut one), instead of being glued to it and lost with it."""
    line = json.dumps(obj, ensure_ascii=False) + "\n"
    if _ends_cut(path):
        line = "\n" + line
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def _ends_cut(path: Path) -> bool:
    """Whether the file ends in the middle of a line."""
    try:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except (FileNotFoundError, OSError):  # no file yet, or an empty one
        return False


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every intact record of a JSONL file written line by line (a line cut short by a kill
    is skipped); nothing if the file does not exist yet."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text("utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def write_lines_atomically(path: Path, lines: list[str]) -> None:
    """Replace a file's lines at once: written aside and renamed, so a crash leaves the old file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines), "utf-8")
    os.replace(tmp, path)
