"""ttscale.sandbox: running model-written code, contained (see `tasks.sandbox`)."""

from .tasks.sandbox import Limits, RunResult, SandboxError, isolation_available, run_many, run_python

__all__ = ["Limits", "RunResult", "SandboxError", "isolation_available", "run_many", "run_python"]
