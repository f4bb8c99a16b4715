"""`ttscale eval`: run strategies over a dataset, write every result as it is done.

Two kinds of work, both recorded one JSON line at a time in samples.jsonl:
- a *pool* per problem: N independent samples drawn once, graded, scored by the verifiers;
  majority, Best-of-N and weighted Best-of-N are replayed on subsets of it at every budget;
- a *search* per (problem, strategy, budget): beam search, DVTS, particle filtering,
  self-refinement and compute_optimal cannot be subsampled, so each runs once per budget.

Re-running the same command resumes: finished work is read back, a line cut short by a kill
is dropped, only missing work runs. A directory written with other settings is refused.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..core import Candidate, Compute, Generator, Problem
from ..core.seeds import growth_seed, problem_seed
from ..strategies.catalogue import ROUNDS, check_domain, run_strategy
from ..strategies.pool import sample_pool
from ..tasks.code import is_code
from ..tasks.code_domain import CodeDomain
from ..tasks.datasets import SelectionError, load_dataset, report_errors, select_problems
from ..tasks.domain import domain_of
from ..verifiers.registry import (
    ALL_SCORERS,
    CODE_SCORERS,
    SCORERS,
    known_scorer,
    make_scorer,
    returns_certainties,
    scorer_name,
)
from .config import EvalConfig, EvalError, RecordKey
from .records import PoolRecord, SampleRecord, SearchRecord, candidates_of, pool_record, sample_record, search_record
from .store import RunStore
from .summary import EvalReport, has_scores, needs_work, summarize


def pool_scorers(cfg: EvalConfig, problem: Problem | None = None, generator: Any = None) -> list[str]:
    """Every model-free verifier the engine feeds (on code tasks, the execution ones too),
    and the configured one if it is none of those (a server's samples carry no self-certainty:
    their pools are not scored by it, rather than scored 0)."""
    free = [s for s in SCORERS if returns_certainties(generator) or not SCORERS[s].needs_certainties]
    names = free + (list(CODE_SCORERS) if problem is not None and is_code(problem) else [])
    return names + ([cfg.scorer] if cfg.scorer not in names else [])


def draw_samples(
    problem: Problem, generator: Generator, cfg: EvalConfig, n: int, seed: int
) -> tuple[list[SampleRecord], Compute]:
    """n samples of one problem, graded, with the step scores of every pool verifier."""
    t0 = time.perf_counter()
    scorers = [make_scorer(name, generator, cfg.system_prompt) for name in pool_scorers(cfg, problem, generator)]
    candidates, compute = sample_pool(problem, generator, scorers[0], n, cfg.run_spec(seed))
    scores: dict[str, list[list[float]]] = {scorers[0].name: [c.step_scores for c in candidates]}
    for s in scorers[1:]:
        scores[s.name], spent = s.score(problem, candidates)
        # what a verifier adds: its own tokens, and the tests it ran (or wrote) on code
        compute = compute + Compute(
            verifier_tokens=spent.verifier_tokens,
            flops=spent.flops,
            executed_tests=spent.executed_tests,
            execution_time=spent.execution_time,
            generated_tokens=spent.test_tokens,
            test_tokens=spent.test_tokens,
        )
    compute.wall_time = time.perf_counter() - t0
    samples = [sample_record(c, problem, {name: scores[name][k] for name in scores}) for k, c in enumerate(candidates)]
    return samples, compute


def sample_problem(problem: Problem, generator: Generator, cfg: EvalConfig) -> PoolRecord:
    """One problem's pool of samples, graded, with the per-step scores of every model-free
    verifier (and of the configured one, if it needs a model)."""
    seed = problem_seed(cfg.seed, problem.id)
    samples, compute = draw_samples(problem, generator, cfg, cfg.pool_n, seed)
    record = pool_record(problem, cfg.model, cfg.run_spec(seed).params, compute, samples)
    if cfg.engine:
        record["engine"] = cfg.engine
    return record


def grow_pool(record: PoolRecord, problem: Problem, generator: Generator, cfg: EvalConfig) -> PoolRecord:
    """A stored pool with its missing samples added, the stored ones kept as they are. The
    new samples are seeded apart from the first ones (a seed of their own, recorded under
    "grown" with the verifier that scored them live), so growing is reproducible; a pool
    drawn at the larger size afresh holds other, equally valid samples. The compute is the
    sum of both draws."""
    have = len(record["candidates"])
    restore_tests(problem, record)
    stored = set().union(*(c["scores"] for c in record["candidates"]))
    if missing := sorted(stored - {scorer_name(s) for s in pool_scorers(cfg, problem, generator)}):
        raise EvalError(
            f"the pool of {problem.id} is scored by {', '.join(missing)}; grow it with that --scorer, "
            "so the new samples carry the same scores"
        )
    seed = growth_seed(record["seed"], problem.id, have)
    samples, compute = draw_samples(problem, generator, cfg, cfg.pool_n - have, seed)
    growth: dict[str, Any] = {"from": have, "to": cfg.pool_n, "seed": seed, "scorer": cfg.scorer}
    if cfg.engine:
        growth["engine"] = cfg.engine
    return {
        **record,
        "compute": (Compute.from_dict(record["compute"]) + compute).to_dict(),
        "candidates": record["candidates"] + samples,
        "grown": [*record.get("grown", []), growth],
    }


def rescore_pool(record: PoolRecord, problem: Problem, generator: Generator, cfg: EvalConfig) -> PoolRecord:
    """A stored pool scored by one more verifier, without sampling again. Its cost is kept
    apart under "rescored": a probe replaying stored text pays a prefill that live sampling
    with hidden states does not."""
    scorer = make_scorer(cfg.scorer, generator, cfg.system_prompt, stored=True)
    restore_tests(problem, record)
    generator.reset()
    t0 = time.perf_counter()
    scores, spent = scorer.score(problem, candidates_of(record["candidates"]))
    spent.wall_time = time.perf_counter() - t0
    # a reading may serve more than one verifier (a judge probe's pass gives the judge's P(Yes)):
    # each is stored under its own name and charged the whole pass, as if it had run alone; a
    # verifier the pool already has keeps its own scores and cost
    had = set(record.get("rescored", {})).union(*(c["scores"] for c in record["candidates"]))
    side = {name: s for name, s in getattr(scorer, "side_scores", {}).items() if name not in had}
    by_name = {scorer.name: scores, **side}
    samples: list[SampleRecord] = [
        {**c, "scores": {**c["scores"], **{name: s[i] for name, s in by_name.items()}}}
        for i, c in enumerate(record["candidates"])
    ]
    cost = {**spent.to_dict(), **({"free_when_live": True} if getattr(scorer, "free_when_live", False) else {})}
    shared = {name: {**cost, "read_by": scorer.name} for name in by_name if name != scorer.name}
    return {
        **record,
        "candidates": samples,
        "rescored": {**record.get("rescored", {}), scorer.name: cost, **shared},
    }


def restore_tests(problem: Problem, record: PoolRecord) -> None:
    """A stored code pool's tests back in the problem's domain: new samples are checked
    against the tests the stored ones were."""
    domain = domain_of(problem)
    if isinstance(domain, CodeDomain) and "tests" in record:
        domain.tests = list(record["tests"])


def search_problem(
    problem: Problem, generator: Generator, cfg: EvalConfig, strategy: str, n: int
) -> tuple[SearchRecord, list[dict[str, Any]]]:
    """One per-budget strategy run, graded: the record (without the bulky trace) and the trace."""
    seed = problem_seed(cfg.seed, problem.id)
    scorer = make_scorer(cfg.scorer, generator, cfg.system_prompt)
    result = run_strategy(strategy, problem, generator, scorer, n, cfg.run_spec(seed), cfg.search)
    record = search_record(cfg.search_key(problem.id, strategy, n), problem, cfg.model, seed, result, n)
    if cfg.engine:
        record["engine"] = cfg.engine
    return record, result.trace or []


def rounds_problem(
    problem: Problem, generator: Generator, cfg: EvalConfig, store: RunStore, strategy: str
) -> list[SearchRecord]:
    """A round strategy (self_refine, self_debug) at every budget from one run at the
    largest: round r depends only on the rounds before it, so the first m rounds of that run
    are exactly a budget-m run. A stored run is reused rather than run again when it serves
    the largest budget (see each strategy's `reusable`)."""
    top = max(cfg.ns)
    rounds = ROUNDS[strategy]
    stored = _stored_rounds_run(problem, cfg, store, top, strategy)
    fresh = []
    if stored is None:
        stored, _ = search_problem(problem, generator, cfg, strategy, top)
        fresh.append(stored)
    candidates = [Candidate.from_dict(c) for c in stored["candidates"]]
    run = rounds.from_stored(stored["settings"], candidates, Compute.from_dict(stored["compute"]), stored["answer"])
    derived = [rounds.first_rounds(run, n) for n in sorted(cfg.ns) if n != stored["n"]]
    for r in derived:  # marked so that a total of compute spent counts the run once
        r.outcome.setdefault("derived_from", stored["n"])
    records = [
        search_record(
            cfg.search_key(problem.id, strategy, r.settings["n"]),
            problem,
            cfg.model,
            stored["seed"],
            r,
            r.settings["n"],
        )
        for r in derived
    ]
    return fresh + [r for r in records if r["key"] not in store.records]


def _stored_rounds_run(
    problem: Problem, cfg: EvalConfig, store: RunStore, top: int, strategy: str
) -> SearchRecord | None:
    best: Any = None
    for rec in store.records.values():
        if rec.get("strategy") != strategy or rec.get("id") != problem.id:
            continue
        if rec["key"] != cfg.search_key(problem.id, strategy, rec["n"]):
            continue  # another verifier's or other settings' run
        if ROUNDS[strategy].reusable(rec["settings"], rec["n"], top, cfg.search) and (
            best is None or rec["n"] > best["n"]
        ):
            best = rec
    return best


def _do(problem: Problem, rk: RecordKey, generator: Generator, cfg: EvalConfig, store: RunStore) -> dict[str, Any]:
    """One piece of missing work, stored; returns its (first) record."""
    if rk.kind == "pool":
        rec: Any = sample_problem(problem, generator, cfg)
        store.append(rec)
    elif rk.strategy in ROUNDS:
        records = rounds_problem(problem, generator, cfg, store, rk.strategy)
        for r in records:
            store.append(dict(r))
        rec = records[0]
    else:
        rec, trace = search_problem(problem, generator, cfg, rk.strategy, rk.n)
        store.append(dict(rec), trace)
    return dict(rec)


def _complete_pool(
    problem: Problem, rec: Any, generator: Generator, cfg: EvalConfig, say: Callable[[str], None]
) -> Any:
    """A stored pool grown to the run's size and scored by its verifier, as needed."""
    if len(rec["candidates"]) < cfg.pool_n:
        say(f"{cfg.dataset} growing pools to {cfg.pool_n}")
        rec = grow_pool(rec, problem, generator, cfg)
    if not has_scores(rec, cfg.scorer):
        say(f"{cfg.dataset} rescoring with {cfg.scorer}")
        rec = rescore_pool(rec, problem, generator, cfg)
    return rec


def _named(e: Exception, where: str) -> Exception:
    """The same kind of error, its message prefixed with where it happened (a caller catching
    RemoteError or EngineError still catches it)."""
    if isinstance(e, EvalError) or where in str(e):
        return e
    try:
        return type(e)(f"{where}: {e}")
    except Exception:
        return e


def _run(
    todo: Sequence[tuple[Problem, str]], generator: Generator, cfg: EvalConfig, store: RunStore, progress: bool
) -> None:
    bar = tqdm(todo, desc=f"{cfg.dataset}", unit="run", disable=not progress, file=sys.stderr)
    tokens = 0
    t0 = time.perf_counter()
    for problem, key in bar:
        if store.records.get(key, {}).get("kind") == "search":
            continue  # written beside a larger budget's run (self_refine, self_debug)
        if key in store.records:
            store.append(_complete_pool(problem, store.records[key], generator, cfg, bar.set_description))
            continue
        rk = RecordKey.parse(key)
        if rk.kind == "search":
            bar.set_description(f"{cfg.dataset} {rk.strategy} n={rk.n}")
        try:
            rec = _do(problem, rk, generator, cfg, store)
        except (ValueError, RuntimeError) as e:  # named, so that a resume stopping here says where and why
            named = _named(e, f"problem {problem.id} ({key}) failed")
            if named is e:
                raise
            raise named from e
        tokens += rec["compute"]["generated_tokens"]
        bar.set_postfix(tok_s=f"{tokens / (time.perf_counter() - t0):.0f}")


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
    cfg.check()
    if not known_scorer(cfg.scorer):
        raise EvalError(f"unknown scorer {cfg.scorer!r}; choose from {', '.join(ALL_SCORERS)}")
    ds = load_dataset(cfg.dataset, cfg.question_field, cfg.answer_field)
    report_errors(ds)
    try:
        problems = select_problems(ds.problems, cfg.limit, cfg.shard, cfg.start, cfg.levels)
    except SelectionError as e:
        raise EvalError(str(e)) from None
    kind = "code" if problems and is_code(problems[0]) else "math"
    for s in cfg.strategies:
        try:
            check_domain(s, kind)
        except ValueError as e:
            raise EvalError(str(e)) from None
    store = RunStore(out_dir, cfg, write=generate, grow=grow_pool)
    try:
        todo = [(p, k) for p in problems for k in cfg.work_keys(p.id) if needs_work(store.records.get(k), cfg)]
        if todo and generate:
            done_before = sum(len(cfg.work_keys(p.id)) for p in problems) - len(todo)
            if done_before:
                print(f"resuming: {done_before} finished pieces of work kept, {len(todo)} to go", file=sys.stderr)
            _run(todo, make_generator(), cfg, store, progress)
    finally:
        store.close()
    return summarize(problems, store, cfg, out_dir, n_boot, summary_name, compare, replay_policy)
