"""Running model-written code, which is hostile input: `run_python(code)` runs it in a
separate, contained process and says what happened.

The program runs as `python -I` (the system's Python, which `nobody` can run) in a fresh
directory with an emptied environment, through a
launcher (`sandbox_launch.py`) that, before it execs Python:
- enters new network, mount and process-id namespaces: no interface is up, so no socket
  reaches anything; /tmp, /var/tmp, /dev/shm and /run/lock are fresh, empty tmpfs mounts
  that vanish with it; /proc shows only its own processes, and when the program's first
  process ends the kernel kills every process it left behind (none outlives its run);
- drops from root to the unprivileged user `nobody`, so it reads none of the parent's
  files, cannot signal the parent, and the process-count limit holds;
- sets limits on CPU seconds, address space, file size (what it may write, its output
  included), open files and processes.
The parent waits at most `timeout_s` and then kills the whole process group. Input and
output are anonymous files outside its directory (the output capped by the file-size
limit, so gigabytes of it cost nothing).

Isolation needs root (these machines run as root). Elsewhere `run_python` refuses, unless
`unisolated=True` is passed, which runs the code with the limits but without namespaces or
another user, and says so in the result.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

NOBODY = 65534
LAUNCHER = Path(__file__).with_name("sandbox_launch.py")  # run as a script: it imports no ttscale
REFUSED = 97  # the launcher's exit code when it cannot isolate


class SandboxError(RuntimeError):
    pass


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0  # wall clock, then the process group is killed
    cpu_s: int = 10  # CPU seconds (SIGXCPU)
    memory_mb: int = 512  # address space
    output_kb: int = 1024  # the most any one file (stdout and stderr included) may grow to
    open_files: int = 64
    processes: int = 16  # as `nobody`, across every sandbox at once


@dataclass
class RunResult:
    ok: bool  # exit code 0 and no limit hit
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    limit: str | None  # "time", "cpu", "memory", "output", "processes" or None
    seconds: float
    isolated: bool


def isolation_available() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def run_python(code: str, *, stdin: str = "", limits: Limits = Limits(), unisolated: bool = False) -> RunResult:
    """Run `code` as a Python program, contained (see the module docstring)."""
    isolated = not unisolated
    if isolated and not isolation_available():
        raise SandboxError(
            "isolating model-written code needs root here; pass unisolated=True to run it without "
            "(code tasks: set TTSCALE_UNISOLATED_CODE=1)"
        )
    with (
        tempfile.TemporaryDirectory(prefix="ttscale-sandbox-", dir=_base()) as work,
        # stdin and the output are open files outside its directory, never paths inside it:
        # a program may delete and recreate what its directory holds, not what is read back
        tempfile.TemporaryFile() as inp,
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
    ):
        root = Path(work)
        (root / "main.py").write_text(code, "utf-8")
        inp.write(stdin.encode("utf-8"))
        inp.seek(0)
        if isolated:
            os.chown(root, NOBODY, NOBODY)
        cmd = [
            sys.executable, "-I", str(LAUNCHER),
            str(root), str(limits.cpu_s), str(limits.memory_mb), str(limits.output_kb),
            str(limits.open_files), str(limits.processes), "isolate" if isolated else "unisolated",
            program_python() if isolated else sys.executable,
        ]  # fmt: skip
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=inp, stdout=out, stderr=err, cwd=root, env={}, start_new_session=True)
        timed_out = False
        try:
            proc.wait(limits.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        _kill_group(proc)
        seconds = time.monotonic() - t0
        stdout, stderr = _read(out, limits), _read(err, limits)
    return _result(proc.returncode, stdout, stderr, timed_out, seconds, isolated)


def run_many(
    codes: Sequence[str], workers: int = 2, stdins: Sequence[str] | None = None, **kwargs: object
) -> list[RunResult]:
    """Several programs (each with its stdin, if given) through a bounded pool of sandboxes,
    results in order."""
    stdins = [""] * len(codes) if stdins is None else stdins
    if len(stdins) != len(codes):
        raise ValueError("one stdin per program")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda c, i: run_python(c, stdin=i, **kwargs), codes, stdins))  # type: ignore[arg-type]


@functools.cache
def _base() -> str:
    # not under /tmp: the sandbox mounts a fresh /tmp over it
    base = Path(os.environ.get("TTSCALE_SANDBOX_DIR") or "/var/cache/ttscale-sandbox")
    try:
        base.mkdir(parents=True, exist_ok=True)
        os.chmod(base, 0o711)  # nobody may enter its own directory, not list the others
    except OSError:
        base = Path(tempfile.gettempdir())
    return str(base)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def program_python() -> str:
    """The interpreter programs run with: one that `nobody` can execute with its standard
    library (a virtualenv under /root is not), the system's Python by default."""
    for candidate in (os.environ.get("TTSCALE_SANDBOX_PYTHON"), "/usr/bin/python3", "/usr/local/bin/python3"):
        if candidate and os.path.isfile(candidate) and os.stat(os.path.realpath(candidate)).st_mode & 0o001:
            return candidate
    raise SandboxError("no Python that an unprivileged user can run: set TTSCALE_SANDBOX_PYTHON")


def _read(f: IO[bytes], limits: Limits) -> str:
    f.seek(0)
    return f.read(limits.output_kb * 1024).decode("utf-8", errors="replace")


def _result(code: int, stdout: str, stderr: str, timed_out: bool, seconds: float, isolated: bool) -> RunResult:
    if code == REFUSED and "ttscale sandbox:" in stderr:
        raise SandboxError(stderr.strip().splitlines()[-1])
    limit = None
    if timed_out:
        limit = "time"
    elif code == -signal.SIGXCPU:
        limit = "cpu"
    elif code == -signal.SIGXFSZ or "File too large" in stderr:
        limit = "output"
    elif "MemoryError" in stderr or "Cannot allocate memory" in stderr:
        limit = "memory"
    elif "BlockingIOError: [Errno 11]" in stderr:  # fork refused: the process limit
        limit = "processes"
    return RunResult(code == 0 and limit is None, code, stdout, stderr, timed_out, limit, seconds, isolated)
