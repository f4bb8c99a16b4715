"""A run directory on disk: config.json (what was asked), samples.jsonl (one record per line),
traces.jsonl (every node each search made). One writer at a time (a lock file); a reader
never rewrites anything, so reading beside a running writer is safe. Also: reading a run's
records back, and merging the directories of shards into one."""

from __future__ import annotations

import fcntl
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import Problem
from ..tasks.datasets import load_dataset, select_problems
from ..util.jsonl import append_jsonl, read_jsonl, write_lines_atomically
from .config import EvalConfig, EvalError, RecordKey, record_key, shard_text


class RunStore:
    """The run directory: refuses foreign settings, drops a truncated last line, appends."""

    def __init__(self, out_dir: Path, cfg: EvalConfig, write: bool = True, grow: bool = False) -> None:
        """grow: a writer asking for larger pools than the run holds raises the run's pool
        size, and each stored pool then gets its missing samples (`run.grow_pool`). A writer
        takes the lock before it writes anything, so a refused run changes nothing."""
        self.dir = out_dir
        if out_dir.exists() and not out_dir.is_dir():
            raise EvalError(f"{out_dir} is a file, not a run directory; choose another --output")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.write = write
        self._lock: Any = lock(self.dir / ".lock") if write else None
        self.samples = self.dir / "samples.jsonl"
        self.traces = self.dir / "traces.jsonl"
        self.meta: dict[str, Any] = {}  # config.json as settled: what was asked, and what sampled it
        try:
            self._settle_config(cfg, grow)
        except EvalError:
            self.close()
            raise
        self.records: dict[str, dict[str, Any]] = {}
        self._load()

    def _settle_config(self, cfg: EvalConfig, grow: bool) -> None:
        """Write a new run's config.json, or check a stored one against this run's settings."""
        cfg_path = self.dir / "config.json"
        identity = cfg.identity()
        if not cfg_path.exists():
            meta = {
                "identity": identity,
                "shard": shard_text(cfg.shard),
                "limit": cfg.limit,
                "start": cfg.start,
                "levels": list(cfg.levels) if cfg.levels else None,
                "created": time.time(),
                **({"engine": cfg.engine} if cfg.engine else {}),
            }
            cfg_path.write_text(json.dumps(meta, indent=2))
            self.meta = meta
            return
        try:
            stored = json.loads(cfg_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise EvalError(f"{cfg_path} is corrupt ({e}); remove it or use another --output") from None
        if not isinstance(stored, dict) or not isinstance(stored.get("identity", {}), dict):
            raise EvalError(f"{cfg_path} is not a run's config; remove it or use another --output")
        stored_n = stored.get("identity", {}).get("n", 0)
        growing = grow and self.write and bool(cfg.pool_strategies) and stored_n < identity["n"]
        diff = [
            k
            for k in identity_diff(stored.get("identity", {}), identity)
            if k != "n" or _pool_size_binds(cfg, self.write, growing, stored_n)
        ]
        if diff:
            raise EvalError(
                f"{self.dir} holds a run with different settings ({', '.join(diff)}); "
                "use another --output or the original settings"
            )
        if self.write:
            _check_engine(self.dir, stored.get("engine"), cfg.engine)
        if stored.get("shard") != shard_text(cfg.shard):
            raise EvalError(f"{self.dir} holds shard {stored.get('shard')}, not {shard_text(cfg.shard)}")
        if growing:
            stored["identity"]["n"] = identity["n"]
            stored["grown_from"] = [*stored.get("grown_from", []), stored_n]
            cfg_path.write_text(json.dumps(stored, indent=2))
        self.meta = stored

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
            write_lines_atomically(self.samples, list(good.values()))

    def append(self, record: dict[str, Any], trace: list[dict[str, Any]] | None = None) -> None:
        if trace is not None:  # the trace first: a record on disk always has its trace
            append_jsonl(self.traces, {"key": record_key(record), "trace": trace})
        append_jsonl(self.samples, record)
        self.records[record_key(record)] = record


def _check_engine(run_dir: Path, stored: dict[str, Any] | None, now: dict[str, Any] | None) -> None:
    """A run sampled by one kind of engine is not extended by another; a change of thread
    count is allowed (each record keeps its own) but said."""
    if not stored or not now or stored == now:
        return
    if stored.get("kind") != now.get("kind") or stored.get("model") != now.get("model"):
        raise EvalError(
            f"{run_dir} was sampled by {_engine_text(stored)}, and this command uses {_engine_text(now)}; "
            "use another --output, or the same engine"
        )
    changed = ", ".join(
        f"{k} {stored.get(k)} -> {now.get(k)}" for k in sorted(set(stored) | set(now)) if stored.get(k) != now.get(k)
    )
    print(
        f"note: {run_dir} was sampled with another engine setting ({changed}): llama.cpp's arithmetic follows the "
        "thread count and the build, so each record keeps its own engine and reproduces with it",
        file=sys.stderr,
    )


def _engine_text(engine: dict[str, Any]) -> str:
    return "a server (" + str(engine.get("model")) + ")" if engine.get("kind") == "openai" else "the embedded llama.cpp"


def identity_diff(stored: dict[str, Any], identity: dict[str, Any]) -> list[str]:
    return sorted(k for k in identity if stored.get(k) != identity[k])


def _pool_size_binds(cfg: EvalConfig, write: bool, growing: bool, stored_n: int) -> bool:
    """The pool size binds only runs that use the pool (a search may add a larger budget),
    and a view, which samples nothing, may replay a larger pool than it asks for."""
    return bool(cfg.pool_strategies) and not growing and (write or stored_n < cfg.pool_n)


def lock(path: Path) -> Any:
    """An exclusive lock held while the returned file stays open (released when the
    process ends, however it ends)."""
    f = open(path, "a")  # noqa: SIM115  (held open on purpose)
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise EvalError(
            f"another ttscale process is writing to {path.parent}; wait for it, or use --report-only to read"
        ) from None
    return f


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


@dataclass
class MergeReport:
    records: int
    duplicates: list[str]
    missing: list[str]


def _shard_metas(shard_dirs: Sequence[Path]) -> list[dict[str, Any]]:
    """Each shard's config, all of one identity and one choice of levels."""
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
    if len({tuple(m.get("levels") or ()) for m in metas}) > 1:
        raise EvalError(f"the shards select different levels: {sorted({tuple(m.get('levels') or ()) for m in metas})}")
    return metas


def _shard_engines(shard_dirs: Sequence[Path], metas: Sequence[dict[str, Any]], same_model: bool) -> dict[str, Any]:
    """The merged run's engine fields: one engine (thread counts may differ: every record
    keeps its own), or, declared the same model, every shard's."""
    sampled_by = [(m.get("engine") or {}).get("kind", "llama.cpp") for m in metas]
    served = [(m.get("engine") or {}).get("model") for m in metas]
    if len(set(zip(sampled_by, served, strict=True))) == 1:
        return {"engine": metas[0]["engine"]} if metas[0].get("engine") else {}
    if not same_model:
        listed = ", ".join(
            f"{d}: {_engine_text(m.get('engine') or {})}" for d, m in zip(shard_dirs, metas, strict=True)
        )
        raise EvalError(
            f"the shards were sampled by different engines ({listed}); their samples come from other "
            "arithmetic, and perhaps other weights. If they serve the same model (say vLLM serving "
            "`ttscale export-hf` of the embedded engine's GGUF), merge with --same-model"
        )
    return {"engines": [m.get("engine") for m in metas], "same_model_declared": True}


def fold_rescored(kept: dict[str, Any], other: dict[str, Any]) -> dict[str, Any] | None:
    """One record holding both copies' verifier scores, when they are the same samples and the
    other copy adds a verifier (a copy of a run rescored by another); None otherwise (other
    samples, or nothing new: duplicated work). Where both copies scored with one verifier,
    the kept copy's scores and cost stay."""
    texts = [c.get("text") for c in kept.get("candidates", [])]
    if not texts or texts != [c.get("text") for c in other.get("candidates", [])]:
        return None
    if not set(other.get("rescored", {})) - set(kept.get("rescored", {})):
        return None
    candidates = [
        {**mine, "scores": {**theirs.get("scores", {}), **mine.get("scores", {})}}
        for mine, theirs in zip(kept["candidates"], other["candidates"], strict=True)
    ]
    return {**kept, "candidates": candidates, "rescored": {**other.get("rescored", {}), **kept.get("rescored", {})}}


def _merged_lines(shard_dirs: Sequence[Path]) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """(records, traces, duplicated keys): each key's latest record of the first shard holding
    it; a later shard's copy of the same samples adds the verifier scores the first lacks
    (not a duplicate), while a copy with other samples is a duplicate, left out."""
    records: dict[str, dict[str, Any]] = {}
    traces: dict[str, str] = {}
    duplicates = []
    for d in shard_dirs:
        for key, rec in read_records(d / "samples.jsonl").items():
            if key not in records:
                records[key] = rec
            elif (folded := fold_rescored(records[key], rec)) is not None:
                records[key] = folded
            else:
                duplicates.append(key)
        for t in read_jsonl(d / "traces.jsonl"):
            if "key" in t:
                traces.setdefault(t["key"], json.dumps(t, ensure_ascii=False))
    return {k: json.dumps(r, ensure_ascii=False) for k, r in records.items()}, traces, duplicates


def _earlier_merges(out_dir: Path, in_place: bool) -> list[str]:
    if not in_place:
        return []
    return list(json.loads((out_dir / "config.json").read_text()).get("merged_from") or [])


def merge_runs(
    out_dir: Path, shard_dirs: Sequence[Path], same_model: bool = False, pools_only: bool = False
) -> MergeReport:
    """Combine shard run directories into one (their records and search traces). Refuses
    shards run with other settings, and shards sampled by other engines (the embedded
    llama.cpp, a server, another server's model) unless `same_model` declares that they
    serve the same weights; reports duplicated work (kept once) and problems of the covered
    slice no shard finished. The output is a new directory, or one of the shards (merging
    the others into it in place, under its lock: its views stay where they are).
    pools_only: keep the pools alone, into a new directory: a scratch copy of a committed
    run in which to rescore its samples or run a live strategy beside them, folded back later."""
    metas = _shard_metas(shard_dirs)
    engines = _shard_engines(shard_dirs, metas, same_model)
    levels = tuple(metas[0].get("levels") or ())
    # Slices may differ (a later run extending an earlier one's problems): the merge covers
    # from the first start to the last end, and names whatever no shard finished in between.
    start = min(m.get("start", 0) for m in metas)
    ends = [None if m.get("limit") is None else m.get("start", 0) + m["limit"] for m in metas]
    limit = None if None in ends else max(e for e in ends if e is not None) - start
    in_place = any(out_dir.resolve() == d.resolve() for d in shard_dirs)
    if in_place and pools_only:
        raise EvalError("a pools-only copy goes into a new directory: in place it would drop the run's searches")
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / "samples.jsonl").exists() and not in_place:
        raise EvalError(f"{out_dir} already holds samples; merge into a new directory or into one of the shards")
    held = lock(out_dir / ".lock") if in_place else None
    try:
        records, traces, duplicates = _merged_lines(shard_dirs)
        if pools_only:
            records = {k: line for k, line in records.items() if RecordKey.parse(k).kind == "pool"}
            traces = {}
        # written aside and renamed, so a merge in place that dies leaves the shard as it was
        for name, lines in (("traces.jsonl", traces), ("samples.jsonl", records)):
            if lines:
                write_lines_atomically(out_dir / name, list(lines.values()))
        meta = {
            "identity": metas[0]["identity"],
            "shard": None,
            "limit": limit,
            "start": start,
            "levels": list(levels) or None,
            # merged in place, the directory keeps the history of what it was merged from before
            "merged_from": list(dict.fromkeys([*_earlier_merges(out_dir, in_place), *map(str, shard_dirs)])),
            "created": time.time(),
            **engines,
        }
        (out_dir / "config.json").write_text(json.dumps(meta, indent=2))
    finally:
        if held is not None:
            held.close()
    problems = run_slice(metas[0]["identity"], limit, start, levels)
    done = {RecordKey.parse(key).problem_id for key in records}
    missing = [p.id for p in problems if p.id not in done]
    return MergeReport(len(records), duplicates, missing)
