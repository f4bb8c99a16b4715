"""The judge: runs tests against a model-written program that it never lets into its own
process. It is the program `run_python` runs (as main.py, the job as JSON on stdin); it
imports no ttscale, since it runs under the system's Python as `nobody`.

Why two processes: a program that shares the tests' interpreter can fake any verdict (exit
with 0 before the asserts, redefine `check` or the builtins, return an object equal to
everything). Here the judge starts the program in a child process (the same file, run
with the argument "candidate") and gives the tests a stand-in function that sends each
call's arguments to the child over a pipe and reads the return value back, decoded into
plain builtin values only (int, float, str, list, tuple, dict, set, ...). The tests' asserts
then compare real values in the judge, and only the judge writes its stdout. Before the
child starts the judge deletes the job's files, so the hidden tests cannot be read from
disk, and makes itself non-dumpable, so the child (the same user) can neither trace it nor
open its memory or its file descriptors.

A test is one of:
- {"kind": "check", "code": C}: C defines check(candidate); passes when check returns;
- {"kind": "call", "expr": E, "want": W}: E calls the function; its value is reported (as
  repr), and it passes when it equals W evaluated (or W is null: a probe of behaviour);
- {"kind": "assert", "code": C}: passes when C runs without an exception.
The trusted `prompt` (the task's own code: helpers, imports) runs in the judge first, so
tests can use its helpers. Every test has its own deadline; a program that hangs or dies is
started again for the next test.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import subprocess
import sys
import time
import traceback

MARK = "TTSCALE-JUDGE "
MAX_REPLY = 8 * 1024 * 1024  # bytes of one encoded value
MAX_DEPTH = 200
PR_SET_DUMPABLE = 4


# plain values <-> JSON, both ways typed exactly: nothing but builtins comes out
def encode(x: object, depth: int = 0) -> object:
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply")
    t = type(x)
    if x is None or t is bool or t is int or t is str:
        return x
    if t is float:
        return {"f": repr(x)}
    if t is list or t is tuple or t is set or t is frozenset:
        tag = {list: "l", tuple: "t", set: "s", frozenset: "fs"}[t]
        return {tag: [encode(v, depth + 1) for v in x]}  # type: ignore[attr-defined]
    if t is dict:
        return {"d": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in x.items()]}  # type: ignore[attr-defined]
    if t is bytes:
        return {"b": x.hex()}  # type: ignore[attr-defined]
    if t is complex:
        return {"c": [repr(x.real), repr(x.imag)]}  # type: ignore[attr-defined]
    raise TypeError(f"returned a {t.__name__} object, not a plain value")


def decode(x: object) -> object:
    if x is None or type(x) in (bool, int, str):
        return x
    if type(x) is not dict or len(x) != 1:
        raise ValueError("not an encoded value")
    ((tag, v),) = x.items()
    if tag == "f":
        return float(v)
    if tag in ("l", "t", "s", "fs"):
        items = [decode(i) for i in v]
        return {"l": list, "t": tuple, "s": set, "fs": frozenset}[tag](items)
    if tag == "d":
        return {decode(k): decode(val) for k, val in v}
    if tag == "b":
        return bytes.fromhex(v)
    if tag == "c":
        return complex(float(v[0]), float(v[1]))
    raise ValueError(f"unknown tag {tag!r}")


def _short_traceback(limit_chars: int = 1500) -> str:
    text = traceback.format_exc()
    return text[-limit_chars:]


# ---- the child: the model's program, answering calls --------------------------------------
def candidate_main() -> None:
    # the protocol gets private descriptors; the program's own prints go nowhere
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    sys.stdin = open(os.devnull)  # noqa: SIM115
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115

    def reply(message: dict) -> None:
        proto_out.write(json.dumps(message).encode() + b"\n")
        proto_out.flush()

    job = json.loads(proto_in.readline())
    namespace: dict = {"__name__": "__main__"}
    try:
        exec(compile(job["program"], "solution.py", "exec"), namespace)
        fn = namespace[job["entry_point"]]
    except BaseException:
        reply({"error": "the program does not load", "traceback": _short_traceback()})
        return
    reply({"ready": True})
    for line in proto_in:
        call = json.loads(line)
        try:
            args, kwargs = decode(call["args"]), decode(call["kwargs"])
            value = fn(*args, **kwargs)  # type: ignore[misc, arg-type]
            message: dict = {"value": encode(value)}
        except BaseException as e:  # SystemExit too: a call that exits has failed
            message = {
                "error": f"{type(e).__name__}: {e}"[:500],
                "type": type(e).__name__,
                "traceback": _short_traceback(),
            }
        reply(message)


# ---- the judge ----------------------------------------------------------------------------
class CandidateFailed(Exception):
    """The program raised, did not load, died, hung or returned something that is not a value."""


class Child:
    """The program in its process, started on first use and again after it died."""

    def __init__(self, source: str, program: str, entry_point: str) -> None:
        self.source, self.program, self.entry_point = source, program, entry_point
        self.proc: subprocess.Popen | None = None
        self.deadline = 0.0

    def _start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-c", self.source, "candidate"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True,
        )  # fmt: skip
        self._send({"program": self.program, "entry_point": self.entry_point})
        ready = self._receive()
        if "error" in ready:
            raise CandidateFailed(f"{ready['error']}\n{ready.get('traceback', '')}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def _send(self, message: dict) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(message).encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.stop()
            raise CandidateFailed("the program exited") from None

    def _receive(self) -> dict:
        assert self.proc is not None and self.proc.stdout is not None
        out = self.proc.stdout
        line = b""
        while not line.endswith(b"\n"):
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([out], [], [], left)[0]:
                self.stop()
                raise CandidateFailed("timed out")
            chunk = os.read(out.fileno(), 65536)
            if not chunk:
                self.stop()
                raise CandidateFailed("the program exited")
            line += chunk
            if len(line) > MAX_REPLY:
                self.stop()
                raise CandidateFailed("the program's reply is too large")
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            self.stop()
            raise CandidateFailed("the program's reply is unreadable") from None
        if type(message) is not dict:
            raise CandidateFailed("the program's reply is unreadable")
        return message

    def __call__(self, *args: object, **kwargs: object) -> object:
        if self.proc is None:
            self._start()
        self._send({"args": encode(list(args)), "kwargs": encode(dict(kwargs))})
        reply = self._receive()
        if "error" in reply:
            raise CandidateFailed(f"{reply['error']}\n{reply.get('traceback', '')}")
        try:
            return decode(reply.get("value"))
        except (ValueError, TypeError, KeyError, RecursionError, OverflowError):
            raise CandidateFailed("the program's reply is not a value") from None


def run_test(test: dict, child: Child, prompt: str, entry_point: str, timeout: float) -> dict:
    namespace: dict = {"__name__": "__judge__"}
    exec(compile(prompt, "task.py", "exec"), namespace)  # trusted: the task's own helpers
    namespace[entry_point] = child
    namespace["candidate"] = child
    child.deadline = time.monotonic() + timeout
    outcome: dict = {"passed": False, "got": None, "error": None}
    try:
        if test["kind"] == "check":
            exec(compile(test["code"], "test.py", "exec"), namespace)
            namespace["check"](child)
            outcome["passed"] = True
        elif test["kind"] == "call":
            got = eval(compile(test["expr"], "call.py", "eval"), namespace)
            outcome["got"] = repr(got)[:2000]
            want = test.get("want")
            outcome["passed"] = want is None or got == eval(compile(want, "want.py", "eval"), {})
        else:
            exec(compile(test["code"], "test.py", "exec"), namespace)
            outcome["passed"] = True
    except CandidateFailed as e:
        outcome["error"] = str(e)[:2000]
    except BaseException as e:
        outcome["error"] = f"{type(e).__name__}: {e}"[:2000] if str(e) else type(e).__name__
    return outcome


def judge_main() -> None:
    source = open(__file__).read() if os.path.exists(__file__) else ""  # noqa: SIM115
    job = json.loads(sys.stdin.read())
    for name in ("main.py", "stdin.txt"):  # the hidden tests leave the disk before the program starts
        with contextlib.suppress(OSError):
            os.unlink(name)
    if job.get("isolated", True):
        ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    child = Child(source, job["program"], job["entry_point"])
    outcomes: list[dict] = []
    for test in job["tests"]:
        if child.proc is None and outcomes and outcomes[-1].get("load_error"):
            outcomes.append(dict(outcomes[-1]))  # it did not load before: it will not now
            continue
        outcome = run_test(test, child, job.get("prompt", ""), job["entry_point"], float(job["timeout"]))
        if outcome["error"] and outcome["error"].startswith("the program does not load"):
            outcome["load_error"] = True
        outcomes.append(outcome)
    child.stop()
    sys.stdout.write(MARK + json.dumps(outcomes) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    if sys.argv[1:] == ["candidate"]:
        candidate_main()
    else:
        judge_main()
