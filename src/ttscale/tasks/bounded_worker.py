"""A worker process of `bounded.BoundedPool`: `python -m ttscale.tasks.bounded_worker IN OUT`
reads (function, args) from file descriptor IN and answers on OUT until IN closes."""

from __future__ import annotations

import importlib
import sys
from multiprocessing.connection import Connection


def _serve(inbox: Connection, outbox: Connection) -> None:
    """A worker's loop: call what it is sent, send back ("ok", value) or ("error", message)."""
    while True:
        try:
            fn, args = inbox.recv()
        except (EOFError, OSError):
            return
        try:
            if isinstance(fn, str):  # "module:function", imported here, never in the parent
                module, _, name = fn.partition(":")
                fn = getattr(importlib.import_module(module), name)
            outbox.send(("ok", fn(*args)))
        except Exception as e:  # reported to the caller, who decides
            outbox.send(("error", f"{type(e).__name__}: {e}"))


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False))
