"""The sandbox against hostile programs: each is contained, with a clear result, and the
parent is unharmed."""

import os
import uuid

import pytest

from ttscale.sandbox import Limits, SandboxError, isolation_available, run_many, run_python

pytestmark = pytest.mark.skipif(not isolation_available(), reason="isolation needs root")
FAST = Limits(timeout_s=5, cpu_s=2, memory_mb=256, output_kb=64, processes=8)
ESCAPE = f"/tmp/ttscale-escaped-{uuid.uuid4().hex}"

HOSTILE = [
    # (what, program, the limit that must stop it, a string its stderr must hold)
    ("an infinite loop", "while True: pass", "cpu", ""),
    ("a sleeper", "import time\ntime.sleep(60)", "time", ""),
    ("a fork bomb", "import os\nwhile True:\n    os.fork()", "processes", "BlockingIOError"),
    ("a memory bomb", "x = bytearray(4 * 1024**3)", "memory", "MemoryError"),
    ("gigabytes of output", "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)", "output", "File too large"),
    ("a write outside its directory", "open('/work/ttscale-escaped', 'w').write('x')", None, "Permission denied"),
    # the parent is not even visible: the program sees only its own process-id namespace
    ("the parent's environment", f"open('/proc/{os.getpid()}/environ').read()", None, "No such file"),
    ("the parent's files", "print(open('/root/.bashrc').read())", None, "Permission denied"),
    ("a socket to 127.0.0.1", "import socket\nsocket.create_connection(('127.0.0.1', 80), 2)", None, "unreachable"),
    ("killing its parent", f"import os, signal\nos.kill({os.getpid()}, signal.SIGKILL)", None, "No such process"),
    ("killing its parent's group", "import os, signal\nos.kill(0, signal.SIGKILL)", None, ""),
]  # fmt: skip


@pytest.mark.parametrize(("what", "program", "limit", "said"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_programs_are_contained(what, program, limit, said):
    r = run_python(program, limits=FAST)
    assert not r.ok and r.limit == limit and said in r.stderr and r.isolated
    assert r.seconds < 30  # the parent got its answer and goes on
    assert len(r.stdout) <= FAST.output_kb * 1024


def test_scratch_directories_are_its_own_and_vanish():
    r = run_python(f"open('{ESCAPE}', 'w').write('x')\nprint('wrote')", limits=FAST)
    assert r.ok and r.stdout == "wrote\n"
    assert not os.path.exists(ESCAPE)  # the /tmp it wrote to was a fresh tmpfs of its own


def test_a_clean_program_with_stdin_and_an_empty_environment():
    r = run_python("import os, sys\nprint(sys.stdin.read().upper(), dict(os.environ))", stdin="abc", limits=FAST)
    assert r.ok and r.stdout.startswith("ABC") and "PATH" not in r.stdout and r.returncode == 0


def test_samples_run_in_a_bounded_pool_in_order():
    results = run_many([f"print({k} * {k})" for k in range(6)], workers=2, limits=FAST)
    assert [r.stdout for r in results] == [f"{k * k}\n" for k in range(6)]


def test_without_isolation_it_refuses_unless_told(monkeypatch):
    from ttscale.tasks import sandbox

    monkeypatch.setattr(sandbox, "isolation_available", lambda: False)
    with pytest.raises(SandboxError, match="needs root"):
        sandbox.run_python("print(1)")
    r = sandbox.run_python("print(1)", limits=FAST, unisolated=True)
    assert r.ok and not r.isolated  # said in the result


def test_nothing_it_leaves_running_outlives_it():
    # a daemon in its own session escapes a process-group kill; the process-id namespace does not let it
    import random
    import subprocess

    marker = f"59.{random.randrange(10**8):08d}"  # a sleep no other process has
    program = (
        f"import os\nif os.fork() == 0:\n    os.setsid()\n    os.execv('/bin/sleep', ['sleep', '{marker}'])\n"
        "print('left')"
    )
    r = run_python(program, limits=FAST)
    assert r.ok and r.stdout == "left\n" and r.seconds < 5
    assert subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, text=True).stdout == ""


def test_it_sees_only_its_own_processes():
    r = run_python("import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))", limits=FAST)
    assert r.ok and r.stdout.strip() == "[1, 2]"  # the namespace's init and the program itself
