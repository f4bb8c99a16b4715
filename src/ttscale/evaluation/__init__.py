"""Level 5: evaluation. Run configuration and record keys, typed records, the run directory
(store, resume, merge), running the missing work, accuracy-versus-compute curves, policy
fitting and replay, and the report of a run."""

from .config import EvalConfig, EvalError, RecordKey
from .run import grow_pool, run_eval, sample_problem, search_problem
from .store import MergeReport, RunStore, merge_runs, read_records, read_run
from .summary import EvalReport

__all__ = [
    "EvalConfig",
    "EvalError",
    "EvalReport",
    "MergeReport",
    "RecordKey",
    "RunStore",
    "grow_pool",
    "merge_runs",
    "read_records",
    "read_run",
    "run_eval",
    "sample_problem",
    "search_problem",
]
