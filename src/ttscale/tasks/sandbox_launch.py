"""The sandbox's launcher: `python -I sandbox_launch.py DIR CPU MEM OUT FILES PROCS MODE PYTHON`
isolates itself (new network, mount and process-id namespaces, fresh temporary directories
and /proc, the user `nobody`), sets its limits, and execs `PYTHON -I main.py` in DIR with an
empty environment.
Exit code 97 with a "ttscale sandbox:" line on stderr: it could not isolate."""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8
MS_REC = 0x4000
MS_PRIVATE = 0x40000
NOBODY = 65534
REFUSED = 97
SCRATCH = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")


def _refuse(why: str) -> None:
    print(f"ttscale sandbox: {why}", file=sys.stderr)
    os._exit(REFUSED)


def _isolate() -> None:
    """Namespaces and mounts as root; returns in the program's process (as `nobody`)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID) != 0:
        _refuse(f"cannot enter new namespaces ({os.strerror(ctypes.get_errno())})")
    if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        _refuse(f"cannot make the mounts private ({os.strerror(ctypes.get_errno())})")
    for path in SCRATCH:  # writable by anyone outside: fresh and empty inside
        if os.path.isdir(path) and libc.mount(b"tmpfs", path.encode(), b"tmpfs", 0, b"size=16m,mode=1777") != 0:
            _refuse(f"cannot mount a fresh {path} ({os.strerror(ctypes.get_errno())})")
    # The new process-id namespace takes this process's children. Its first one is a small
    # init (root, so the program cannot signal it) that runs the program as its own child:
    # when the program ends, init ends, and the kernel kills whatever the program left
    # running. The program is not init itself, since init ignores signals it has no handler
    # for (the CPU limit's SIGXCPU among them).
    status_r, status_w = os.pipe()
    init = os.fork()
    if init:
        os.close(status_w)
        _exit_as(init, status_r)
    os.close(status_r)
    if libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None) != 0:
        os.write(status_w, str(REFUSED << 8).encode())  # the launcher outside exits 97 too
        _refuse(f"cannot mount a fresh /proc ({os.strerror(ctypes.get_errno())})")
    program = os.fork()
    if program:
        _, status = os.waitpid(program, 0)
        os.write(status_w, str(status).encode())
        os._exit(0)
    os.close(status_w)
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def _exit_as(init: int, status_r: int) -> None:
    """The launcher outside the namespace ends as the program did (its exit code, or killed
    by its signal), so the caller reads the program's fate; init reports it over a pipe."""
    os.waitpid(init, 0)
    text = os.read(status_r, 64).decode() or "256"  # init died without a word: exit 1
    status = int(text)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):  # those two have no handler to reset
            signal.signal(sig, signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def main(argv: list[str]) -> None:
    work, cpu, mem, out_kb, files, procs, mode, python = argv
    if mode == "isolate":
        _isolate()
    os.chdir(work)
    limits = {
        resource.RLIMIT_CPU: int(cpu),
        resource.RLIMIT_AS: int(mem) * 1024 * 1024,
        resource.RLIMIT_FSIZE: int(out_kb) * 1024,
        resource.RLIMIT_NOFILE: int(files),
        resource.RLIMIT_NPROC: int(procs),
        resource.RLIMIT_CORE: 0,
    }
    for which, value in limits.items():
        # CPU: SIGXCPU at the soft limit says why; the hard one, a second later, kills for sure
        resource.setrlimit(which, (value, value + 1 if which == resource.RLIMIT_CPU else value))
    os.execve(python, [python, "-I", "main.py"], {})


if __name__ == "__main__":
    main(sys.argv[1:])
