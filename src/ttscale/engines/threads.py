"""Sharing the machine: how many threads the embedded engine should decode with right now.

llama.cpp splits every operation across its threads and waits for the slowest: when another
process takes one of two cores, each step waits for a thread that is not running. Measured
here (Qwen2.5-Coder-0.5B, beside one busy Python loop): 2 threads fell from 22 to 6 tokens
per second for one sequence (3.7x slower), while 1 thread ran at 11.5 (1.9x slower than 2
threads alone). Fewer threads beside a busy neighbour are faster than more. Changing the
count does not change the arithmetic: the same seed gave the same 8 samples of 96 tokens
at 1 and at 2 threads (`tests/test_engine_integration.py` checks it).

`ThreadGovernor` reads, about once a second, how much CPU the rest of the machine used
(all busy time from /proc/stat less this process's own) and gives the engine the cores the
others leave free, at least one. It is the default ("auto") because it costs nothing alone
and much beside a neighbour (`ttscale bench engine --contention 1`, BENCHMARKS.md): alone it
decoded as fast as every core; beside a second engine with the same setting, 2 fixed
threads fell 13.7x and "auto" 1.95x. Where /proc/stat cannot be read (not Linux), it keeps
every core.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable


def machine_busy_seconds() -> float:
    """CPU seconds every core has spent busy since boot (Linux /proc/stat)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_busy_seconds() -> float:
    t = os.times()
    return t.user + t.system


class ThreadGovernor:
    def __init__(
        self,
        most: int,
        interval: float = 1.0,
        machine: Callable[[], float] = machine_busy_seconds,
        own: Callable[[], float] = own_busy_seconds,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.most, self.interval = most, interval
        self._machine, self._own, self._clock = machine, own, clock
        self.current = most
        try:
            self._last: tuple[float, float, float] | None = (clock(), machine(), own())
        except OSError:  # no /proc/stat: nothing to read, so every core, as a fixed count
            self._last = None

    def threads(self) -> int:
        """The thread count for the next decode: re-read once an interval has passed."""
        if self._last is None:
            return self.current
        now = self._clock()
        then, machine_then, own_then = self._last
        if now - then < self.interval:
            return self.current
        machine, own = self._machine(), self._own()
        self._last = (now, machine, own)
        others = max(0.0, (machine - machine_then) - (own - own_then)) / (now - then)  # cores in use by others
        self.current = max(1, min(self.most, round(self.most - others)))
        return self.current
