"""`ttscale eval`: sample a pool per problem once, write it as it goes, replay every strategy.

A run directory holds config.json (what was asked), samples.jsonl (one line per finished
problem, appended and flushed as soon as it is done), summary.json/summary.md and plot.png.
Re-running the same command resumes: finished problems are read back, a line cut short by a
kill is dropped, and only the missing problems are generated. A directory written with other
settings is refused rather than mixed.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .analysis import CurvePoint, curves, plot, pool_from_record, table
from .core import Compute, Generator, Problem, SamplingParams
from .datasets import load_dataset, report_errors
from .grading import is_correct
from .prompts import SYSTEM_PROMPT
from .scorers import SCORERS, make_scorer
from .strategies import PICKERS, sample_pool

POOL_STRATEGIES = tuple(PICKERS)


class EvalError(RuntimeError):
    pass


@dataclass
class EvalConfig:
    dataset: str = "gsm8k"
    n: int = 8
    model: str = "qwen2.5-coder-0.5b"
    seed: int = 0
    sampling: SamplingParams = field(default_factory=SamplingParams)
    system_prompt: str = SYSTEM_PROMPT
    limit: int | None = None
    strategies: tuple[str, ...] = POOL_STRATEGIES
    scorer: str = "logprob"
    aggregation: str = "mean"
    question_field: str | None = None
    answer_field: str | None = None

    def identity(self) -> dict[str, Any]:
        """What must match for two runs to share a samples file. The limit, the strategies
        and the scorer only change the analysis, so they may differ between resumes."""
        return {
            "dataset": self.dataset,
            "fields": [self.question_field, self.answer_field],
            "n": self.n,
            "model": self.model,
            "seed": self.seed,
            "sampling": self.sampling.to_dict(),
            "system_prompt_sha1": hashlib.sha1(self.system_prompt.encode()).hexdigest(),
        }


def problem_seed(seed: int, problem_id: str) -> int:
    """Each problem's sampling seed depends only on the run seed and the problem, so a
    resumed or sharded run draws exactly what an uninterrupted one would."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{problem_id}".encode()).digest()[:4], "little") & 0x7FFFFFFF


class RunStore:
    """The run directory: refuses foreign settings, drops a truncated last line, appends."""

    def __init__(self, out_dir: Path, cfg: EvalConfig) -> None:
        self.dir = out_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.samples = self.dir / "samples.jsonl"
        cfg_path = self.dir / "config.json"
        identity = cfg.identity()
        if cfg_path.exists():
            try:
                stored = json.loads(cfg_path.read_text())
            except json.JSONDecodeError as e:
                raise EvalError(f"{cfg_path} is corrupt ({e}); remove it or use another --output") from None
            if stored.get("identity") != identity:
                diff = sorted(k for k in identity if stored.get("identity", {}).get(k) != identity[k])
                raise EvalError(
                    f"{self.dir} holds a run with different settings ({', '.join(diff)}); "
                    "use another --output or the original settings"
                )
        else:
            cfg_path.write_text(json.dumps({"identity": identity, "created": time.time()}, indent=2))
        self.records: dict[str, dict[str, Any]] = {}
        self._load()

    def _load(self) -> None:
        if not self.samples.exists():
            return
        good: list[str] = []
        dropped = 0
        for line in self.samples.read_text("utf-8").splitlines():
            try:
                rec = json.loads(line)
                pid = rec["id"]
            except (json.JSONDecodeError, KeyError, TypeError):
                dropped += 1
                continue
            if pid in self.records:
                dropped += 1
                continue
            self.records[pid] = rec
            good.append(line)
        if dropped:
            print(f"note: dropped {dropped} incomplete or duplicate line(s) from {self.samples}", file=sys.stderr)
            tmp = self.samples.with_suffix(".tmp")
            tmp.write_text("".join(g + "\n" for g in good), "utf-8")
            os.replace(tmp, self.samples)

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False)
        with open(self.samples, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.records[record["id"]] = record


def sample_problem(problem: Problem, generator: Generator, cfg: EvalConfig) -> dict[str, Any]:
    """One problem's pool of cfg.n samples, graded and scored by every model-free verifier."""
    params = replace(cfg.sampling, seed=problem_seed(cfg.seed, problem.id))
    t0 = time.perf_counter()
    scorers = [make_scorer(name) for name in SCORERS]
    candidates, compute = sample_pool(problem, generator, scorers[0], cfg.n, params, cfg.system_prompt)
    scores = {s.name: s.score(problem, candidates)[0] for s in scorers}
    compute.wall_time = time.perf_counter() - t0
    return {
        "id": problem.id,
        "question": problem.question,
        "gold": problem.gold,
        "meta": problem.meta,
        "model": cfg.model,
        "seed": params.seed,
        "sampling": params.to_dict(),
        "compute": compute.to_dict(),
        "candidates": [
            {
                "text": c.text,
                "answer": c.answer,
                "correct": is_correct(c.answer, problem.gold),
                "finish_reason": c.finish_reason,
                "steps": [s.to_dict() for s in c.steps],
                "scores": {name: scores[name][k] for name in scores},
            }
            for k, c in enumerate(candidates)
        ],
    }


@dataclass
class EvalReport:
    out_dir: Path
    points: list[CurvePoint]
    n_problems: int
    compute: Compute
    table: str


def run_eval(
    cfg: EvalConfig,
    make_generator: Callable[[], Generator],
    out_dir: Path,
    progress: bool = True,
    n_boot: int = 100,
) -> EvalReport:
    for s in cfg.strategies:
        if s not in PICKERS:
            raise EvalError(f"unknown strategy {s!r}; pool strategies: {', '.join(PICKERS)}")
    if cfg.scorer not in SCORERS:
        raise EvalError(f"unknown scorer {cfg.scorer!r}; choose from {', '.join(SCORERS)}")
    ds = load_dataset(cfg.dataset, cfg.question_field, cfg.answer_field)
    report_errors(ds)
    problems = ds.problems[: cfg.limit] if cfg.limit else ds.problems
    store = RunStore(out_dir, cfg)
    todo = [p for p in problems if p.id not in store.records]
    if todo:
        if len(todo) < len(problems):
            print(f"resuming: {len(problems) - len(todo)} of {len(problems)} problems already done", file=sys.stderr)
        _generate(todo, make_generator(), cfg, store, progress)
    records = [store.records[p.id] for p in problems]
    return summarize(records, cfg, out_dir, n_boot)


def _generate(todo: Sequence[Problem], generator: Generator, cfg: EvalConfig, store: RunStore, progress: bool) -> None:
    from tqdm import tqdm

    bar = tqdm(todo, desc=f"{cfg.dataset} n={cfg.n}", unit="problem", disable=not progress, file=sys.stderr)
    tokens = 0
    t0 = time.perf_counter()
    for problem in bar:
        rec = sample_problem(problem, generator, cfg)
        store.append(rec)
        tokens += rec["compute"]["generated_tokens"]
        bar.set_postfix(tok_s=f"{tokens / (time.perf_counter() - t0):.0f}")


def summarize(records: list[dict[str, Any]], cfg: EvalConfig, out_dir: Path, n_boot: int = 100) -> EvalReport:
    pools = [pool_from_record(r, cfg.scorer, cfg.aggregation) for r in records]
    points = curves(pools, cfg.strategies, n_boot=n_boot, seed=cfg.seed)
    compute = Compute()
    for r in records:
        compute = compute + Compute.from_dict(r["compute"])
    md = table(points)
    title = (
        f"{cfg.model} on {cfg.dataset} ({len(records)} problems), N={cfg.n}, seed {cfg.seed}, "
        f"verifier {cfg.scorer}/{cfg.aggregation}"
    )
    summary = {
        "identity": cfg.identity(),
        "limit": cfg.limit,
        "problems": len(records),
        "problem_ids": [r["id"] for r in records],
        "scorer": cfg.scorer,
        "aggregation": cfg.aggregation,
        "bootstrap_draws": n_boot,
        "compute_total": compute.to_dict(),
        "points": [p.to_dict() for p in points],
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    per = max(1, len(records))
    (out_dir / "summary.md").write_text(
        f"# {title}\n\nAccuracy in %, 95% bootstrap interval in brackets.\n\n{md}\n\n"
        f"Compute for the whole pool, per problem: {compute.generated_tokens / per:.0f} generated tokens, "
        f"{compute.prompt_tokens / per:.0f} prompt tokens computed, {compute.cached_prompt_tokens / per:.0f} "
        f"served from cache, {compute.verifier_tokens / per:.0f} verifier tokens, "
        f"{compute.wall_time / per:.1f} s wall, {compute.flops / per:.3g} FLOPs.\n"
    )
    if points:
        plot(points, str(out_dir / "plot.png"), title)
    return EvalReport(out_dir, points, len(records), compute, md)
