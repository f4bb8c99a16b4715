"""A worker process of `bounded.BoundedPool`: `python -m ttscale.tasks.bounded_worker IN OUT`
reads (function, args) from file descriptor IN and answers on OUT until IN closes."""

from __future__ import annotations

import importlib
import sys
from multiprocessing.connection import Connection


def _serve(inbox: Connection, outbox: Connection) -> None:
    """A worker's loop: say it is ready, then call what it is sent and send back ("ok", value)
    or ("error", message). "module:" (no function) only imports the module, so that the
    caller can wait for a slow import apart from the call's own deadline."""
    outbox.send(("ok", None))
    while True:
        try:
            fn, args = inbox.recv()
        except (EOFError, OSError):
            return
        try:
            if isinstance(fn, str):  # "module:function", imported here, never in the parent
                module, _, name = fn.partition(":")
                loaded = importlib.import_module(module)
                if not name:
                    outbox.send(("ok", None))
                    continue
                fn = getattr(loaded, name)
            outbox.send(("ok", fn(*args)))
        except Exception as e:  # reported to the caller, who decides
            outbox.send(("error", f"{type(e).__name__}: {e}"))


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False))
