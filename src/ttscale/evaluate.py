"""`ttscale eval`: run strategies over a dataset, write every result as it is done, report.

Two kinds of work, both recorded one JSON line at a time in samples.jsonl:
- a *pool* per problem: N independent samples drawn once, graded, scored by the verifiers;
  majority, Best-of-N and weighted Best-of-N are replayed on subsets of it at every budget;
- a *search* per (problem, strategy, budget): beam search, DVTS and particle filtering cannot
  be subsampled, so each runs once per budget.

A run directory holds config.json (what was asked), samples.jsonl, traces.jsonl (every node
each search made), summary.json/summary.md and plot.png. Re-running the same command resumes:
finished work is read back, a line cut short by a kill is dropped, only missing work runs.
A directory written with other settings is refused rather than mixed.
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

import numpy as np

from .analysis import (
    CurvePoint,
    curves,
    paired_differences,
    paired_table,
    plot,
    pool_from_record,
    problem_ci,
    quality_table,
    table,
    verifier_quality,
)
from .core import Candidate, Compute, Generator, Problem, Result, SamplingParams, Step
from .datasets import load_dataset, report_errors
from .grading import is_correct
from .optimal import Policy, policy_per_problem, replay_compute_optimal
from .prompts import SYSTEM_PROMPT
from .refine import PER_BUDGET, first_rounds
from .scorers import ALL_SCORERS, SCORERS, known_scorer, make_scorer, scorer_name
from .search import accepted_options
from .strategies import PICKERS, sample_pool

POOL_STRATEGIES = tuple(PICKERS)


class EvalError(RuntimeError):
    pass


@dataclass
class EvalConfig:
    dataset: str = "gsm8k"
    ns: tuple[int, ...] = (8,)
    model: str = "qwen2.5-coder-0.5b"
    seed: int = 0
    sampling: SamplingParams = field(default_factory=SamplingParams)
    system_prompt: str = SYSTEM_PROMPT
    limit: int | None = None
    start: int = 0  # skip the first `start` problems (a calibration slice beside an evaluation one)
    levels: tuple[int, ...] | None = None  # only problems of these difficulty levels (MATH), before start/limit
    strategies: tuple[str, ...] = POOL_STRATEGIES
    scorer: str = "logprob"
    aggregation: str = "mean"
    question_field: str | None = None
    answer_field: str | None = None
    search: dict[str, Any] = field(default_factory=dict)  # beam_width, lookahead, max_iterations, ...
    shard: tuple[int, int] | None = None  # (i, k): every k-th problem from the i-th, for several machines

    @property
    def pool_n(self) -> int:
        return max(self.ns)

    @property
    def pool_strategies(self) -> tuple[str, ...]:
        return tuple(s for s in self.strategies if s in PICKERS)

    @property
    def search_strategies(self) -> tuple[str, ...]:
        return tuple(s for s in self.strategies if s in PER_BUDGET)

    def identity(self) -> dict[str, Any]:
        """What must match for two runs to share a samples file. The limit, the strategies
        and the scorer only select work, so they may differ between resumes."""
        return {
            "dataset": self.dataset,
            "fields": [self.question_field, self.answer_field],
            "n": self.pool_n,
            "model": self.model,
            "seed": self.seed,
            "sampling": self.sampling.to_dict(),
            "system_prompt_sha1": hashlib.sha1(self.system_prompt.encode()).hexdigest(),
        }

    def search_key(self, problem_id: str, strategy: str, n: int) -> str:
        settings = json.dumps(self.search, sort_keys=True)
        return f"search|{problem_id}|{strategy}|{n}|{scorer_name(self.scorer)}|{self.aggregation}|{settings}"


def problem_seed(seed: int, problem_id: str) -> int:
    """Each problem's sampling seed depends only on the run seed and the problem, so a
    resumed or sharded run draws exactly what an uninterrupted one would."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{problem_id}".encode()).digest()[:4], "little") & 0x7FFFFFFF


def record_key(record: dict[str, Any]) -> str:
    return record.get("key") or f"pool|{record['id']}"


class RunStore:
    """The run directory: refuses foreign settings, drops a truncated last line, appends.
    One process writes to a directory at a time (a lock file says so); a reader (report
    only) never rewrites the samples file, so it is safe beside a running writer."""

    def __init__(self, out_dir: Path, cfg: EvalConfig, write: bool = True, grow: bool = False) -> None:
        """grow: a writer asking for larger pools than the run holds raises the run's pool
        size, and each stored pool then gets its missing samples (`grow_pool`)."""
        self.dir = out_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.write = write
        self._lock: Any = None
        self.samples = self.dir / "samples.jsonl"
        self.traces = self.dir / "traces.jsonl"
        cfg_path = self.dir / "config.json"
        identity = cfg.identity()
        if cfg_path.exists():
            try:
                stored = json.loads(cfg_path.read_text())
            except json.JSONDecodeError as e:
                raise EvalError(f"{cfg_path} is corrupt ({e}); remove it or use another --output") from None
            stored_identity = stored.get("identity", {})

            stored_n = stored_identity.get("n", 0)
            growing = grow and write and bool(cfg.pool_strategies) and stored_n < identity["n"]

            def binds(k: str) -> bool:
                # The pool size binds only runs that use the pool (a search may add a larger
                # budget), and a view, which samples nothing, may replay a larger pool.
                if k != "n":
                    return True
                return bool(cfg.pool_strategies) and not growing and (write or stored_n < identity["n"])

            diff = sorted(k for k in identity if stored_identity.get(k) != identity[k] and binds(k))
            if diff:
                raise EvalError(
                    f"{self.dir} holds a run with different settings ({', '.join(diff)}); "
                    "use another --output or the original settings"
                )
            if stored.get("shard") != _shard_text(cfg.shard):
                raise EvalError(f"{self.dir} holds shard {stored.get('shard')}, not {_shard_text(cfg.shard)}")
            if growing:
                stored["identity"]["n"] = identity["n"]
                stored["grown_from"] = [*stored.get("grown_from", []), stored_n]
                cfg_path.write_text(json.dumps(stored, indent=2))
        else:
            meta = {
                "identity": identity,
                "shard": _shard_text(cfg.shard),
                "limit": cfg.limit,
                "start": cfg.start,
                "levels": list(cfg.levels) if cfg.levels else None,
                "created": time.time(),
            }
            cfg_path.write_text(json.dumps(meta, indent=2))
        if write:
            self._lock = _lock(self.dir / ".lock")
        self.records: dict[str, dict[str, Any]] = {}
        self._load()

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _load(self) -> None:
        if not self.samples.exists():
            return
        good: dict[str, str] = {}
        dropped = 0
        for line in self.samples.read_text("utf-8").splitlines():
            try:
                rec = json.loads(line)
                key = record_key(rec)
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                dropped += 1
                continue
            if key in self.records:  # a later line supersedes (a pool rescored by another verifier)
                dropped += 1
            self.records[key] = rec
            good[key] = line
        if dropped and self.write:
            print(f"note: compacted {dropped} incomplete or superseded line(s) of {self.samples}", file=sys.stderr)
            tmp = self.samples.with_suffix(".tmp")
            tmp.write_text("".join(g + "\n" for g in good.values()), "utf-8")
            os.replace(tmp, self.samples)

    def append(self, record: dict[str, Any], trace: list[dict[str, Any]] | None = None) -> None:
        if trace is not None:  # the trace first: a record on disk always has its trace
            append_jsonl(self.traces, {"key": record_key(record), "trace": trace})
        append_jsonl(self.samples, record)
        self.records[record_key(record)] = record


def _lock(path: Path) -> Any:
    """An exclusive lock held while the returned file stays open (released when the
    process ends, however it ends)."""
    import fcntl

    f = open(path, "a")  # noqa: SIM115  (held open on purpose)
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise EvalError(
            f"another ttscale process is writing to {path.parent}; wait for it, or use --report-only to read"
        ) from None
    return f


def append_jsonl(path: Path, obj: dict[str, Any]) -> None:
    """One record as one line, on disk before returning, so a kill loses at most this line."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _problem_fields(problem: Problem, cfg: EvalConfig, seed: int) -> dict[str, Any]:
    return {
        "id": problem.id,
        "question": problem.question,
        "gold": problem.gold,
        "meta": problem.meta,
        "model": cfg.model,
        "seed": seed,
    }


def sample_problem(problem: Problem, generator: Generator, cfg: EvalConfig) -> dict[str, Any]:
    """One problem's pool of samples, graded, with the per-step scores of every model-free
    verifier (and of the configured one, if it needs a model)."""
    seed = problem_seed(cfg.seed, problem.id)
    candidates, compute = _draw_samples(problem, generator, cfg, cfg.pool_n, seed)
    return {
        **_problem_fields(problem, cfg, seed),
        "sampling": replace(cfg.sampling, seed=seed).to_dict(),
        "compute": compute.to_dict(),
        "candidates": candidates,
    }


def grow_pool(record: dict[str, Any], problem: Problem, generator: Generator, cfg: EvalConfig) -> dict[str, Any]:
    """A stored pool with its missing samples added, the stored ones kept as they are. The
    new samples are seeded apart from the first ones (a seed of their own, recorded under
    "grown" with the verifier that scored them live), so growing is reproducible; a pool
    drawn at the larger size afresh holds other, equally valid samples. The compute is the
    sum of both draws."""
    have = len(record["candidates"])
    stored = set().union(*(c["scores"] for c in record["candidates"]))
    if missing := sorted(stored - {scorer_name(s) for s in _pool_scorers(cfg)}):
        raise EvalError(
            f"the pool of {problem.id} is scored by {', '.join(missing)}; grow it with that --scorer, "
            "so the new samples carry the same scores"
        )
    seed = problem_seed(record["seed"], f"{problem.id}|grown from {have}")
    candidates, compute = _draw_samples(problem, generator, cfg, cfg.pool_n - have, seed)
    return {
        **record,
        "compute": (Compute.from_dict(record["compute"]) + compute).to_dict(),
        "candidates": record["candidates"] + candidates,
        "grown": [*record.get("grown", []), {"from": have, "to": cfg.pool_n, "seed": seed, "scorer": cfg.scorer}],
    }


def _pool_scorers(cfg: EvalConfig) -> list[str]:
    """Every model-free verifier, and the configured one if it needs a model."""
    return list(SCORERS) + ([cfg.scorer] if cfg.scorer not in SCORERS else [])


def _draw_samples(
    problem: Problem, generator: Generator, cfg: EvalConfig, n: int, seed: int
) -> tuple[list[dict[str, Any]], Compute]:
    params = replace(cfg.sampling, seed=seed)
    t0 = time.perf_counter()
    scorers = [make_scorer(name, generator, cfg.system_prompt) for name in _pool_scorers(cfg)]
    candidates, compute = sample_pool(problem, generator, scorers[0], n, params, cfg.system_prompt)
    scores: dict[str, list[list[float]]] = {scorers[0].name: [c.step_scores for c in candidates]}
    for s in scorers[1:]:
        scores[s.name], spent = s.score(problem, candidates)
        compute = compute + Compute(verifier_tokens=spent.verifier_tokens, flops=spent.flops)
    compute.wall_time = time.perf_counter() - t0
    return [
        {
            "text": c.text,
            "answer": c.answer,
            "correct": is_correct(c.answer, problem.gold),
            "finish_reason": c.finish_reason,
            "steps": [s.to_dict() for s in c.steps],
            "scores": {name: scores[name][k] for name in scores},
        }
        for k, c in enumerate(candidates)
    ], compute


def search_problem(
    problem: Problem, generator: Generator, cfg: EvalConfig, strategy: str, n: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One search run, graded: the record (without the bulky trace) and the trace."""
    params = replace(cfg.sampling, seed=problem_seed(cfg.seed, problem.id))
    scorer = make_scorer(cfg.scorer, generator, cfg.system_prompt)
    fn = PER_BUDGET[strategy]
    result = fn(
        problem,
        generator,
        scorer,
        n,
        params=params,
        system=cfg.system_prompt,
        aggregation=cfg.aggregation,
        **accepted_options(fn, cfg.search),
    )
    return _search_record(problem, cfg, params.seed, result, n), result.trace or []


def refine_problem(problem: Problem, generator: Generator, cfg: EvalConfig, store: RunStore) -> list[dict[str, Any]]:
    """self_refine at every budget from one run at the largest: round r depends only on
    the rounds before it, so the first m rounds of that run are exactly a self_refine(m)
    run. A stored run is reused rather than run again when it covers the largest budget:
    it ran at least that many rounds, or it stopped on a repeat before running out of them
    (a larger budget would have stopped there too)."""
    top = max(cfg.ns)
    stored = _stored_refine_run(problem, cfg, store, top)
    fresh = []
    if stored is None:
        stored, _ = search_problem(problem, generator, cfg, "self_refine", top)
        fresh.append(stored)
    run = Result(
        "self_refine",
        stored["answer"],
        None,
        [Candidate.from_dict(c) for c in stored["candidates"]],
        Compute.from_dict(stored["compute"]),
        stored["settings"],
    )
    derived = [first_rounds(run, n) for n in sorted(cfg.ns) if n != stored["n"]]
    for r in derived:  # marked so that a total of compute spent counts the run once
        r.settings.setdefault("derived_from", stored["n"])
    records = [_search_record(problem, cfg, stored["seed"], r, r.settings["n"]) for r in derived]
    return fresh + [r for r in records if r["key"] not in store.records]


def _stored_refine_run(problem: Problem, cfg: EvalConfig, store: RunStore, top: int) -> dict[str, Any] | None:
    stops = cfg.search.get("stop_on_repeat", True)
    best = None
    for rec in store.records.values():
        if rec.get("strategy") != "self_refine" or rec.get("id") != problem.id:
            continue
        settings = rec["settings"]
        if rec["key"] != cfg.search_key(problem.id, "self_refine", rec["n"]) or "rounds" not in settings:
            continue  # another verifier's or other settings' run, or one stored before rounds were kept
        if settings.get("stop_on_repeat", False) != stops:
            continue
        stopped = settings.get("stopped_on_repeat", len(settings["rounds"]) < rec["n"])  # older runs: no flag
        if (rec["n"] >= top or stopped) and (best is None or rec["n"] > best["n"]):
            best = rec
    return best


def _search_record(problem: Problem, cfg: EvalConfig, seed: int, result: Result, n: int) -> dict[str, Any]:
    picks = result.settings.get("picks", {})
    return {
        "key": cfg.search_key(problem.id, result.strategy, n),
        "kind": "search",
        **_problem_fields(problem, cfg, seed),
        "strategy": result.strategy,
        "n": n,
        "answer": result.answer,
        "correct": is_correct(result.answer, problem.gold),
        "picks": {rule: {"answer": a, "correct": is_correct(a, problem.gold)} for rule, a in picks.items()},
        "settings": {k: v for k, v in result.settings.items() if k != "picks"},
        "compute": result.compute.to_dict(),
        "candidates": [{**c.to_dict(), "correct": is_correct(c.answer, problem.gold)} for c in result.candidates],
    }


@dataclass
class EvalReport:
    out_dir: Path
    points: list[CurvePoint]
    n_problems: int
    compute: Compute
    table: str
    complete: bool


def run_eval(
    cfg: EvalConfig,
    make_generator: Callable[[], Generator],
    out_dir: Path,
    progress: bool = True,
    n_boot: int = 100,
    generate: bool = True,
    summary_name: str = "summary",
    compare: Sequence[tuple[str, str]] = (),
    replay_policy: str | None = None,
    grow_pool: bool = False,
) -> EvalReport:
    """Run the missing work (unless generate is False: then only report what is done).
    summary_name names the report files, so one run directory can hold several views;
    compare adds the same strategies under other (verifier, aggregation) pairs whose scores
    or searches the run already holds; replay_policy adds compute_optimal with that policy
    file, replayed on the stored pools; grow_pool lets a larger --n keep the stored pools and
    sample only what they lack."""
    for s in cfg.strategies:
        if s not in PICKERS and s not in PER_BUDGET:
            known = ", ".join([*PICKERS, *PER_BUDGET])
            raise EvalError(f"unknown strategy {s!r}; choose from {known}")
    if not known_scorer(cfg.scorer):
        raise EvalError(f"unknown scorer {cfg.scorer!r}; choose from {', '.join(ALL_SCORERS)}")
    if not cfg.ns or min(cfg.ns) < 1:
        raise EvalError("budgets (--n) must be positive")
    ds = load_dataset(cfg.dataset, cfg.question_field, cfg.answer_field)
    report_errors(ds)
    problems = select_problems(ds.problems, cfg.limit, cfg.shard, cfg.start, cfg.levels)
    store = RunStore(out_dir, cfg, write=generate, grow=grow_pool)
    try:
        todo = [(p, key) for p in problems for key in _work_keys(p, cfg) if _needs_work(store.records.get(key), cfg)]
        if todo and generate:
            done_before = sum(len(_work_keys(p, cfg)) for p in problems) - len(todo)
            if done_before:
                print(f"resuming: {done_before} finished pieces of work kept, {len(todo)} to go", file=sys.stderr)
            _run(todo, make_generator(), cfg, store, progress)
    finally:
        store.close()
    return summarize(problems, store, cfg, out_dir, n_boot, summary_name, compare, replay_policy)


def select_problems(
    problems: Sequence[Problem],
    limit: int | None,
    shard: tuple[int, int] | None = None,
    start: int = 0,
    levels: Sequence[int] | None = None,
) -> list[Problem]:
    """`limit` problems from the `start`-th (the first ones by default), counted among the
    problems of the chosen `levels` if any; of those, shard (i, k) takes every k-th from the
    i-th, so the k shards partition the slice exactly, whatever machine runs which."""
    if start < 0:
        raise EvalError("--start must be >= 0")
    if levels:
        if not any("level" in p.meta for p in problems):
            raise EvalError("--levels needs a dataset whose rows have a 'level' field (math500 has)")
        wanted = set(levels)
        problems = [p for p in problems if _level(p.meta.get("level")) in wanted]
    chosen = list(problems[start : start + limit] if limit else problems[start:])
    if shard is None:
        return chosen
    i, k = shard
    if not 0 <= i < k:
        raise EvalError(f"shard {i}/{k} does not exist: use 0/{k} .. {k - 1}/{k}")
    return chosen[i::k]


def _level(value: Any) -> int | None:
    """MATH levels come as 3 or as "Level 3"."""
    digits = "".join(ch for ch in str(value) if ch.isdigit())
    return int(digits) if digits else None


def _shard_text(shard: tuple[int, int] | None) -> str | None:
    return None if shard is None else f"{shard[0]}/{shard[1]}"


@dataclass
class MergeReport:
    records: int
    duplicates: list[str]
    missing: list[str]


def merge_runs(out_dir: Path, shard_dirs: Sequence[Path]) -> MergeReport:
    """Combine shard run directories into one (their records and search traces). Refuses
    shards run with other settings; reports duplicated work (kept once) and problems of the
    covered slice no shard finished. The output is a new directory, or one of the shards
    (merging the others into it in place, under its lock: its views stay where they are)."""
    metas = []
    for d in shard_dirs:
        try:
            metas.append(json.loads((d / "config.json").read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise EvalError(f"{d} is not a run directory ({e})") from None
    identity = metas[0]["identity"]
    for d, m in zip(shard_dirs, metas, strict=True):
        if m["identity"] != identity:
            diff = sorted(k for k in identity if m["identity"].get(k) != identity[k])
            raise EvalError(f"{d} was run with other settings than {shard_dirs[0]} ({', '.join(diff)})")
    levels_of = {tuple(m.get("levels") or ()) for m in metas}
    if len(levels_of) > 1:
        raise EvalError(f"the shards select different levels: {sorted(map(list, levels_of))}")
    levels = levels_of.pop()
    # Slices may differ (a later run extending an earlier one's problems): the merge covers
    # from the first start to the last end, and names whatever no shard finished in between.
    start = min(m.get("start", 0) for m in metas)
    ends = [None if m.get("limit") is None else m.get("start", 0) + m["limit"] for m in metas]
    limit = None if None in ends else max(e for e in ends if e is not None) - start
    in_place = any(out_dir.resolve() == d.resolve() for d in shard_dirs)
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / "samples.jsonl").exists() and not in_place:
        raise EvalError(f"{out_dir} already holds samples; merge into a new directory or into one of the shards")
    lock = _lock(out_dir / ".lock") if in_place else None
    try:
        records: dict[str, str] = {}
        duplicates = []
        traces: dict[str, str] = {}
        for d in shard_dirs:
            for key, rec in read_records(d / "samples.jsonl").items():
                if key in records:
                    duplicates.append(key)
                else:
                    records[key] = json.dumps(rec, ensure_ascii=False)
            for t in read_jsonl(d / "traces.jsonl"):
                if "key" in t:
                    traces.setdefault(t["key"], json.dumps(t, ensure_ascii=False))
        # written aside and renamed, so a merge in place that dies leaves the shard as it was
        for name, lines in (("traces.jsonl", traces), ("samples.jsonl", records)):
            if lines:
                tmp = out_dir / f"{name}.merging"
                tmp.write_text("".join(v + "\n" for v in lines.values()), "utf-8")
                os.replace(tmp, out_dir / name)
        meta = {
            "identity": identity,
            "shard": None,
            "limit": limit,
            "start": start,
            "levels": list(levels) or None,
            "merged_from": [str(d) for d in shard_dirs],
            "created": time.time(),
        }
        (out_dir / "config.json").write_text(json.dumps(meta, indent=2))
    finally:
        if lock is not None:
            lock.close()
    problems = run_slice(identity, limit, start, levels)
    done = {key.split("|")[1] if "|" in key else key for key in records}
    missing = [p.id for p in problems if p.id not in done]
    return MergeReport(len(records), duplicates, missing)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every intact record of a JSONL file written line by line (a line cut short by a kill
    is skipped); nothing if the file does not exist yet."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text("utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def read_records(path: Path) -> dict[str, dict[str, Any]]:
    """A samples file's records by key, a later line superseding an earlier one (a pool
    rescored or grown), as a resumed run reads them."""
    return {record_key(r): r for r in read_jsonl(path) if "key" in r or "id" in r}


def read_run(run_dir: Path, start: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
    """A run's records; with start/limit, only those of that slice of its dataset (counted
    like `eval --start --limit`), e.g. one half of a slice to fit a policy on."""
    if not (run_dir / "samples.jsonl").exists():
        raise EvalError(f"{run_dir} has no samples.jsonl")
    records = list(read_records(run_dir / "samples.jsonl").values())
    if not start and limit is None:
        return records
    try:
        meta = json.loads((run_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise EvalError(f"{run_dir}/config.json is missing or corrupt ({e})") from None
    ids = {p.id for p in run_slice(meta["identity"], limit, start, meta.get("levels"))}
    return [r for r in records if r["id"] in ids]


def run_slice(
    identity: dict[str, Any], limit: int | None, start: int = 0, levels: Sequence[int] | None = None
) -> list[Problem]:
    """The problems of a slice of a run's dataset (as its identity names it)."""
    fields = identity.get("fields") or [None, None]
    return select_problems(load_dataset(identity["dataset"], *fields).problems, limit, start=start, levels=levels)


def _needs_work(record: dict[str, Any] | None, cfg: EvalConfig) -> bool:
    """Missing work, a pool sampled before this verifier was asked for, or a pool smaller
    than the run's (being grown)."""
    if record is None:
        return True
    if record.get("kind") == "search":
        return False
    return not _has_scores(record, cfg.scorer) or len(record["candidates"]) < cfg.pool_n


def _has_scores(record: dict[str, Any], scorer: str) -> bool:
    name = scorer_name(scorer)
    return all(name in c["scores"] for c in record["candidates"])


def rescore_pool(record: dict[str, Any], problem: Problem, generator: Generator, cfg: EvalConfig) -> dict[str, Any]:
    """A stored pool scored by one more verifier, without sampling again. Its cost is kept
    apart under "rescored": a probe replaying stored text pays a prefill that live sampling
    with hidden states does not."""
    scorer = make_scorer(cfg.scorer, generator, cfg.system_prompt)
    candidates = [
        Candidate(
            text=c["text"],
            steps=[Step(**s) for s in c["steps"]],
            answer=c["answer"],
            finish_reason=c["finish_reason"],
        )
        for c in record["candidates"]
    ]
    generator.reset()
    t0 = time.perf_counter()
    scores, spent = scorer.score(problem, candidates)
    spent.wall_time = time.perf_counter() - t0
    return {
        **record,
        "candidates": [
            {**c, "scores": {**c["scores"], scorer.name: s}} for c, s in zip(record["candidates"], scores, strict=True)
        ],
        "rescored": {**record.get("rescored", {}), scorer.name: spent.to_dict()},
    }


def _work_keys(problem: Problem, cfg: EvalConfig) -> list[str]:
    keys = [f"pool|{problem.id}"] if cfg.pool_strategies else []
    return keys + [cfg.search_key(problem.id, s, n) for s in cfg.search_strategies for n in sorted(cfg.ns)]


def _run(
    todo: Sequence[tuple[Problem, str]], generator: Generator, cfg: EvalConfig, store: RunStore, progress: bool
) -> None:
    from tqdm import tqdm

    bar = tqdm(todo, desc=f"{cfg.dataset}", unit="run", disable=not progress, file=sys.stderr)
    tokens = 0
    t0 = time.perf_counter()
    for problem, key in bar:
        if store.records.get(key, {}).get("kind") == "search":
            continue  # written beside a larger budget's run (self_refine)
        if key in store.records:
            rec = store.records[key]
            if len(rec["candidates"]) < cfg.pool_n:
                bar.set_description(f"{cfg.dataset} growing pools to {cfg.pool_n}")
                rec = grow_pool(rec, problem, generator, cfg)
            if not _has_scores(rec, cfg.scorer):
                bar.set_description(f"{cfg.dataset} rescoring with {cfg.scorer}")
                rec = rescore_pool(rec, problem, generator, cfg)
            store.append(rec)
            continue
        if key.startswith("pool|"):
            rec = sample_problem(problem, generator, cfg)
            store.append(rec)
        else:
            _, _, strategy, n, *_ = key.split("|")
            bar.set_description(f"{cfg.dataset} {strategy} n={n}")
            if strategy == "self_refine":
                records = refine_problem(problem, generator, cfg, store)
                for rec in records:
                    store.append(rec)
                rec = records[0]
            else:
                rec, trace = search_problem(problem, generator, cfg, strategy, int(n))
                store.append(rec, trace)
        tokens += rec["compute"]["generated_tokens"]
        bar.set_postfix(tok_s=f"{tokens / (time.perf_counter() - t0):.0f}")


def search_points(
    records: Sequence[dict[str, Any]], label: str, n: int, rule: str | None, rng: np.random.Generator
) -> CurvePoint:
    hits = np.array([bool(r["picks"][rule]["correct"] if rule else r["correct"]) for r in records], dtype=float)
    lo, hi = problem_ci(hits, rng)
    tokens = float(np.mean([r["compute"]["generated_tokens"] for r in records]))
    flops = float(np.mean([r["compute"]["flops"] for r in records]))
    wall = float(np.mean([r["compute"]["wall_time"] for r in records]))
    return CurvePoint(label, n, float(hits.mean()), lo, hi, tokens, flops, wall, hits)


def search_picks(
    records: Sequence[dict[str, Any]], strategy: str, label: str, n: int, rng: np.random.Generator
) -> list[CurvePoint]:
    """A search's own pick, then the majority and weighted votes over its final candidates."""
    return [search_points(records, strategy + label, n, None, rng)] + [
        search_points(records, f"{strategy}+{rule}{label}", n, rule, rng) for rule in ("majority", "weighted_best_of_n")
    ]


def summarize(
    problems: Sequence[Problem],
    store: RunStore,
    cfg: EvalConfig,
    out_dir: Path,
    n_boot: int = 100,
    summary_name: str = "summary",
    compare: Sequence[tuple[str, str]] = (),
    replay_policy: str | None = None,
) -> EvalReport:
    """Report on the problems whose requested work is all done, so every strategy is
    compared on the same problems; a partial run says so."""
    done = [p for p in problems if not any(_needs_work(store.records.get(k), cfg) for k in _work_keys(p, cfg))]
    rng = np.random.default_rng(cfg.seed)
    points: list[CurvePoint] = []
    compute = Compute()
    quality: list[dict[str, Any]] = []
    spending: dict[str, Any] = {}
    if cfg.pool_strategies:
        pool_records = [store.records[f"pool|{p.id}"] for p in done]
        quality = verifier_quality(pool_records)
        pools = [pool_from_record(r, scorer_name(cfg.scorer), cfg.aggregation) for r in pool_records]
        points += curves(pools, cfg.pool_strategies, n_boot=n_boot, seed=cfg.seed)
        if replay_policy and pools:
            try:
                fitted = [Policy.load(path) for path in replay_policy.split(",")]
                per_pool = policy_per_problem(fitted, [p.id for p in done])
            except (OSError, ValueError, TypeError, KeyError) as e:
                raise EvalError(f"--replay-optimal {replay_policy}: {e}") from None
            replayed, spending = replay_compute_optimal(pools, per_pool, sorted(cfg.ns), n_boot, cfg.seed)
            points += replayed
        for r in pool_records:
            compute = compute + Compute.from_dict(r["compute"])
            for spent in r.get("rescored", {}).values():
                compute = compute + Compute.from_dict(spent)
    for strategy in cfg.search_strategies:
        for n in sorted(cfg.ns):
            recs = [store.records[cfg.search_key(p.id, strategy, n)] for p in done]
            if not recs:
                continue
            points += search_picks(recs, strategy, "", n, rng)
            for r in recs:
                if "derived_from" not in r["settings"]:  # a cut of another record's run: spent there
                    compute = compute + Compute.from_dict(r["compute"])
    missing: list[str] = []
    for scorer, how in compare:
        other = replace(cfg, scorer=scorer, aggregation=how)
        label = f" ({scorer}/{how})"
        verifier_rules = [s for s in cfg.pool_strategies if s != "majority"]
        scored = [p for p in done if _has_scores(store.records[f"pool|{p.id}"], scorer)] if verifier_rules else []
        if verifier_rules and len(scored) == len(done):
            pools = [pool_from_record(store.records[f"pool|{p.id}"], scorer_name(scorer), how) for p in done]
            points += [
                replace(pt, strategy=pt.strategy + label)
                for pt in curves(pools, verifier_rules, n_boot=n_boot, seed=cfg.seed)
                if pt.strategy in verifier_rules
            ]
        elif verifier_rules:
            missing.append(f"{scorer} scores missing on {len(done) - len(scored)} of {len(done)} pools")
        for strategy in cfg.search_strategies:
            for n in sorted(cfg.ns):
                keys = [other.search_key(p.id, strategy, n) for p in done]
                found = [store.records[k] for k in keys if k in store.records]
                if len(found) == len(keys):
                    points += search_picks(found, strategy, label, n, rng)
                else:
                    missing.append(
                        f"{strategy}{label} n={n} missing on {len(keys) - len(found)} of {len(keys)} problems"
                    )
    complete = len(done) == len(problems)
    md = table(points)
    paired = paired_differences(points, seed=cfg.seed)
    status = "" if complete else f" - PARTIAL: {len(done)} of {len(problems)} problems done"
    title = (
        f"{cfg.model} on {cfg.dataset} ({len(done)} problems), N={','.join(map(str, cfg.ns))}, seed {cfg.seed}, "
        f"verifier {cfg.scorer}/{cfg.aggregation}{status}"
    )
    # A view at smaller budgets replays the whole stored pool: its identity names that pool.
    pool_size = len(store.records[f"pool|{done[0].id}"]["candidates"]) if cfg.pool_strategies and done else cfg.pool_n
    summary = {
        "identity": {**cfg.identity(), "n": pool_size},
        "limit": cfg.limit,
        "start": cfg.start,
        "levels": list(cfg.levels) if cfg.levels else None,
        "complete": complete,
        "problems": len(done),
        "problems_requested": len(problems),
        "problem_ids": [p.id for p in done],
        "strategies": list(cfg.strategies),
        "budgets": list(cfg.ns),
        "scorer": cfg.scorer,
        "aggregation": cfg.aggregation,
        "search_settings": cfg.search,
        "bootstrap_draws": n_boot,
        "compute_total": compute.to_dict(),
        "points": [p.to_dict() for p in points],
        "verifier_quality": quality,
        "compared": [f"{a}/{b}" for a, b in compare],
        "compute_optimal_replayed": {"policy": replay_policy, "per_budget": spending} if replay_policy else None,
        "not_compared": missing,
        "vs_majority": paired,
    }
    (out_dir / f"{summary_name}.json").write_text(json.dumps(summary, indent=2))
    per = max(1, len(done))
    optimal_md = (
        "\ncompute_optimal (replayed on the stored pools with the policy "
        f"`{replay_policy}`): share of the budget spent / share of problems stopped early: "
        + ", ".join(f"n={n}: {v['budget_used']:.2f} / {v['stopped_early']:.2f}" for n, v in spending.items())
        + ".\n"
        if spending
        else ""
    )
    missing_md = f"\nNot compared (not run on every problem above): {'; '.join(missing)}.\n" if missing else ""
    quality_md = (
        f"\n## How well each verifier separates right from wrong samples\n\n{quality_table(quality)}\n"
        if quality
        else ""
    )
    paired_md = (
        "\n## Against majority voting at the same N, on the same problems\n\nPaired over problems, so "
        "the interval is that of the difference itself (* when it excludes zero).\n\n"
        f"{paired_table(paired)}\n"
        if paired
        else ""
    )
    (out_dir / f"{summary_name}.md").write_text(
        f"# {title}\n\nAccuracy in %, 95% bootstrap interval in brackets. Pool strategies are replayed on "
        f"subsets of {pool_size} samples per problem; search strategies ran once per budget "
        f"(`+majority`, `+weighted_best_of_n`: the same searches with the other final pick).\n\n{md}\n\n"
        f"Compute of everything run, per problem: {compute.generated_tokens / per:.0f} generated tokens, "
        f"{compute.prompt_tokens / per:.0f} prompt tokens computed, {compute.cached_prompt_tokens / per:.0f} "
        f"served from cache, {compute.verifier_tokens / per:.0f} verifier tokens, "
        f"{compute.wall_time / per:.1f} s wall, {compute.flops / per:.3g} FLOPs.\n"
        f"{optimal_md}{missing_md}{paired_md}{quality_md}"
    )
    if points:
        plot(points, str(out_dir / ("plot.png" if summary_name == "summary" else f"{summary_name}.png")), title)
    return EvalReport(out_dir, points, len(done), compute, md, complete)
