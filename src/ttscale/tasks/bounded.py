"""Work that may never return, run where it can be stopped: a small pool of worker processes,
each call with a hard deadline. A worker that misses its deadline is killed and replaced, and
the call returns its fallback. Grading runs here, because sympy can hold the GIL for ever on an
answer like 9^{9^{9^9}}: no thread, signal or timeout inside the process can stop it then.

A worker is a fresh interpreter (`python -m ttscale.tasks.bounded_worker FD FD`), not a fork: forking
a process that runs llama.cpp threads is not safe, and multiprocessing's spawn would re-run the
caller's main script. A worker that dies for another reason is an error, never a silent
fallback.

A call's deadline bounds the call alone: a new worker's start, and its first import of the
module a call names, are waited for apart (up to STARTUP_SECONDS), because on a busy machine
importing sympy alone can outlast a grading deadline, and a timed-out comparison would
silently count two equal answers as different."""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

STARTUP_SECONDS = 300.0  # a worker's start or first import of a module; past it, an error


class WorkerDied(RuntimeError):
    pass


class _Worker:
    def __init__(self) -> None:
        to_child, child_in = os.pipe()[::-1]  # (write end for us, read end for the child)
        child_out, from_child = os.pipe()[::-1]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ttscale.tasks.bounded_worker", str(child_in), str(child_out)],
            pass_fds=(child_in, child_out),
            stdin=subprocess.DEVNULL,
        )
        os.close(child_in)
        os.close(child_out)
        self.outbox = Connection(to_child, readable=False)
        self.inbox = Connection(from_child, writable=False)
        self.started = False  # its ready message read
        self.imported: set[str] = set()  # modules of "module:function" calls it has imported

    def prepare(self, fn: Callable[..., Any] | str) -> None:
        """Wait (up to STARTUP_SECONDS) until the worker has started and imported the module
        `fn` names, so that the call's deadline counts the call alone."""
        steps: list[str | None] = [] if self.started else [None]
        module = fn.partition(":")[0] if isinstance(fn, str) else None
        if module is not None and module not in self.imported:
            steps.append(module)
        for step in steps:
            if step is not None:
                self.outbox.send((f"{step}:", ()))
            if not self.inbox.poll(STARTUP_SECONDS):
                raise WorkerDied(
                    f"a worker process did not {'start' if step is None else 'import ' + step} "
                    f"within {STARTUP_SECONDS:.0f} s"
                )
            status, value = self.inbox.recv()
            if status == "error":
                raise RuntimeError(value)
            if step is None:
                self.started = True
            else:
                self.imported.add(step)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(5)
        self.inbox.close()
        self.outbox.close()


class BoundedPool:
    """Up to `size` worker processes; callers on any thread each take an idle one."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._idle: list[_Worker] = []
        self._count = 0
        self._free = threading.Condition()
        self.timeouts = 0  # calls that missed their deadline (their workers were replaced)

    def call(self, fn: Callable[..., Any] | str, args: tuple[Any, ...], deadline: float, fallback: Any) -> Any:
        """fn(*args) in a worker; `fallback` if it does not return within `deadline` seconds.
        fn is a module-level function of an installed module, or its name "module:function",
        which only the worker imports (so the parent need not load what fn needs)."""
        worker = self._take()
        try:
            worker.prepare(fn)
        except (RuntimeError, EOFError, OSError) as e:  # RuntimeError: WorkerDied, or a failed import
            self._drop(worker, timed_out=False)
            if isinstance(e, RuntimeError):
                raise
            raise WorkerDied(f"a worker process died while starting ({e})") from None
        try:
            worker.outbox.send((fn, args))
            if not worker.inbox.poll(deadline):
                self._drop(worker, timed_out=True)
                return fallback
            status, value = worker.inbox.recv()
        except (EOFError, OSError) as e:
            self._drop(worker, timed_out=False)
            name = fn if isinstance(fn, str) else fn.__name__
            raise WorkerDied(f"a worker process died while running {name} ({e})") from None
        self._give(worker)
        if status == "error":
            raise RuntimeError(value)
        return value

    def _take(self) -> _Worker:
        with self._free:
            while not self._idle and self._count >= self.size:
                self._free.wait()
            if self._idle:
                return self._idle.pop()
            self._count += 1
        try:
            return _Worker()
        except Exception:
            with self._free:
                self._count -= 1
                self._free.notify()
            raise

    def _give(self, worker: _Worker) -> None:
        with self._free:
            self._idle.append(worker)
            self._free.notify()

    def _drop(self, worker: _Worker, timed_out: bool) -> None:
        worker.kill()
        with self._free:
            self._count -= 1
            self.timeouts += timed_out
            self._free.notify()

    def close(self) -> None:
        with self._free:
            idle, self._idle = self._idle, []
            self._count -= len(idle)
        for w in idle:
            w.kill()


POOL = BoundedPool()
atexit.register(POOL.close)
