"""The thread governor: the cores the rest of the machine leaves free, read once a second."""

import pytest

from ttscale.engines.threads import ThreadGovernor, machine_busy_seconds, own_busy_seconds


class Meter:
    """A scripted machine: each step advances the clock one second, with the busy seconds given."""

    def __init__(self) -> None:
        self.t = self.machine = self.own = 0.0

    def step(self, machine: float, own: float, seconds: float = 1.0) -> None:
        self.t += seconds
        self.machine += machine
        self.own += own


@pytest.mark.parametrize(
    ("machine", "own", "threads"),
    [
        (2.0, 2.0, 2),  # only this engine is busy: every core
        (2.0, 1.0, 1),  # a neighbour takes one core: one thread
        (1.2, 1.0, 2),  # a little background work: not worth a thread
        (2.0, 0.0, 1),  # the machine is full: one thread still
    ],
)
def test_the_engine_gets_the_cores_others_leave(machine, own, threads):
    m = Meter()
    g = ThreadGovernor(2, machine=lambda: m.machine, own=lambda: m.own, clock=lambda: m.t)
    m.step(machine, own)
    assert g.threads() == threads


def test_it_rereads_only_once_an_interval_has_passed():
    m = Meter()
    g = ThreadGovernor(2, machine=lambda: m.machine, own=lambda: m.own, clock=lambda: m.t)
    m.step(2.0, 1.0)
    assert g.threads() == 1
    m.step(1.0, 1.0, seconds=0.5)  # the neighbour left, but half a second is too soon to tell
    assert g.threads() == 1
    m.step(1.0, 1.0, seconds=0.5)
    assert g.threads() == 2


def test_the_machine_readings_are_real_seconds():
    before, mine = machine_busy_seconds(), own_busy_seconds()
    sum(i * i for i in range(300_000))  # a little work of our own
    assert machine_busy_seconds() >= before and own_busy_seconds() > mine


def test_a_machine_without_proc_stat_keeps_every_core():
    def unreadable() -> float:
        raise FileNotFoundError("/proc/stat")

    m = Meter()
    g = ThreadGovernor(2, machine=unreadable, own=lambda: m.own, clock=lambda: m.t)
    m.step(2.0, 0.0)
    assert g.threads() == 2
