"""The name a trained verifier file's scores are stored under, by its content: the shipped
default gives the plain name ("probe", "layers"); any other file gives the name, "@" and 12
hex digits of its sha256. So scores of two different files never mix in a run directory,
whatever their paths or stems (a retrained default must therefore ship under a new name)."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path

from ..engines.models import sha256_file


def content_name(base: str, path: str | Path, defaults: Iterable[Path | None]) -> str:
    """`base` if `path` holds the same bytes as one of the shipped `defaults`, otherwise
    `base@` and its digest. An unreadable file raises OSError."""
    digest = file_digest(Path(path))
    shipped = {file_digest(p) for p in defaults if p is not None}
    return base if digest in shipped else f"{base}@{digest[:12]}"


def file_digest(path: Path) -> str:
    st = path.stat()  # run keys ask often: hash a file again only when it changed
    return _digest(str(path.resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=64)
def _digest(path: str, mtime_ns: int, size: int) -> str:
    return sha256_file(Path(path))
