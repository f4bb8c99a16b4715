"""The sandbox's launcher: `python -I sandbox_launch.py DIR CPU MEM OUT FILES PROCS MODE PYTHON`
isolates itself (new network and mount namespaces, fresh temporary directories, the user
`nobody`), sets its limits, and execs `PYTHON -I main.py` in DIR with an empty environment.
Exit code 97 with a "ttscale sandbox:" line on stderr: it could not isolate."""

from __future__ import annotations

import ctypes
import os
import resource
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
NOBODY = 65534
SCRATCH = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")


def _refuse(why: str) -> None:
    print(f"ttscale sandbox: {why}", file=sys.stderr)
    os._exit(97)


def _isolate() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET | CLONE_NEWNS) != 0:
        _refuse(f"cannot enter new namespaces ({os.strerror(ctypes.get_errno())})")
    if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        _refuse(f"cannot make the mounts private ({os.strerror(ctypes.get_errno())})")
    for path in SCRATCH:  # writable by anyone outside: fresh and empty inside
        if os.path.isdir(path) and libc.mount(b"tmpfs", path.encode(), b"tmpfs", 0, b"size=16m,mode=1777") != 0:
            _refuse(f"cannot mount a fresh {path} ({os.strerror(ctypes.get_errno())})")
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


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
