"""Re-summarise committed eval views and compare every figure with the committed one.

    python scripts/resummarise.py results/gsm8k-100/probe.json results/math500-l123-60/merged/search.json
    python scripts/resummarise.py --all          # every eval summary under results/
    python scripts/resummarise.py --all --write  # ...and replace the committed view files


Each view's summary JSON names everything `eval --report-only` needs (dataset slice, pool
identity, strategies, budgets, verifier, compared pairs, replayed policies). The view is
rebuilt from the run's samples into a scratch directory (the committed files are never
touched) and its figures are compared with the committed ones. Exit status 1 if any differs.
Run from the repository root: policy paths in the summaries are relative to it.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from ttscale.core import SamplingParams
from ttscale.evaluation import EvalConfig, run_eval
from ttscale.tasks.code import is_code
from ttscale.tasks.datasets import load_dataset

FIGURES = (
    "points",
    "vs_majority",
    "verifier_quality",
    "compute_total",
    "problem_ids",
    "not_compared",
    "compute_optimal_replayed",
    "complete",
    "problems",
)
# Fields of a curve point that summaries written before they existed do not hold: a committed
# summary without them is compared on the rest.
ADDED_LATER = ("per_problem", "flops", "wall_time")


def same(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two JSON values differ (floats to 1e-9 relative)."""
    if isinstance(a, float) or isinstance(b, float):
        numbers = isinstance(a, (int, float)) and isinstance(b, (int, float))
        if numbers and ((math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)):
            return []
        return [f"{path}: {a!r} != {b!r}"]
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(k for k in set(a) | set(b) if not (k in ADDED_LATER and b.get(k) is None))
        return [d for k in keys for d in same(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in same(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def config_of(summary: dict[str, Any]) -> EvalConfig:
    ident = summary["identity"]
    fields = ident.get("fields") or [None, None]
    cfg = EvalConfig(
        dataset=ident["dataset"],
        ns=tuple(summary["budgets"]),
        model=ident["model"],
        seed=ident["seed"],
        sampling=SamplingParams(**{**ident["sampling"], "stop": tuple(ident["sampling"].get("stop", ()))}),
        limit=summary.get("limit"),
        start=summary.get("start", 0),
        levels=tuple(summary["levels"]) if summary.get("levels") else None,
        strategies=tuple(summary["strategies"]),
        scorer=summary["scorer"],
        aggregation=summary["aggregation"],
        question_field=fields[0],
        answer_field=fields[1],
        search=summary.get("search_settings") or {},
    )
    if is_code(load_dataset(cfg.dataset, cfg.question_field, cfg.answer_field).problems[0]):
        cfg.for_code()
    return cfg


def check(view: Path, write: bool = False) -> list[str]:
    committed = json.loads(view.read_text())
    cfg = config_of(committed)
    shard = json.loads((view.parent / "config.json").read_text()).get("shard")
    if shard:  # "i/k": the run samples every k-th problem from the i-th
        cfg.shard = tuple(int(x) for x in shard.split("/"))  # type: ignore[assignment]
    compare = tuple(tuple(c.rsplit("/", 1)) for c in committed.get("compared") or ())
    policy = (committed.get("compute_optimal_replayed") or {}).get("policy")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        shutil.copy(view.parent / "config.json", scratch / "config.json")
        (scratch / "samples.jsonl").symlink_to((view.parent / "samples.jsonl").resolve())
        run_eval(
            cfg,
            lambda: None,
            scratch,
            progress=False,
            n_boot=committed.get("bootstrap_draws", 100),
            generate=False,
            summary_name=view.stem,
            compare=compare,
            replay_policy=policy,
        )  # type: ignore[arg-type, return-value]
        fresh = json.loads((scratch / f"{view.stem}.json").read_text())
        if write:  # the view's own files (summary, tables, plot); the run's files stay
            for made in scratch.iterdir():
                if made.name.startswith(view.stem + ".") or made.name.startswith(view.stem + "_"):
                    shutil.copy(made, view.parent / made.name)
    return [d for key in FIGURES if key in committed for d in same(fresh.get(key), committed.get(key), key)]


def all_views(root: Path) -> list[Path]:
    out = []
    for path in sorted(root.rglob("*.json")):
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(d, dict) and "points" in d and "identity" in d and (path.parent / "samples.jsonl").exists():
            out.append(path)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("views", nargs="*", type=Path)
    ap.add_argument("--all", action="store_true", help="every eval summary under results/")
    ap.add_argument("--write", action="store_true", help="replace each view's committed files with the fresh ones")
    args = ap.parse_args()
    views = all_views(Path("results")) if args.all else args.views
    bad = 0
    for view in views:
        diffs = check(view, args.write)
        bad += bool(diffs)
        print(f"{'same' if not diffs else 'DIFFERS'}  {view}" + "".join(f"\n    {d}" for d in diffs[:5]))
    print(f"{len(views) - bad} of {len(views)} views re-summarise to the committed figures")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
