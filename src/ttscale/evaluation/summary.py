"""A run's report: accuracy-versus-compute points of every strategy on the problems whose
requested work is all done (so every strategy is compared on the same problems; a partial
run says so), paired differences to majority, verifier quality, and the compute of
everything run, written as NAME.json, NAME.md and a plot."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..core import Compute, Problem
from ..strategies.optimal import Policy
from ..strategies.picks import reads_scores
from ..verifiers.registry import scorer_name
from .config import EvalConfig, EvalError, RecordKey
from .curves import CurvePoint, curves, matched_token_differences, paired_differences, pool_from_record, search_picks
from .policy import policy_per_problem, replay_compute_optimal
from .quality import verifier_quality
from .store import RunStore
from .tables import paired_table, plot, quality_table, table


@dataclass
class EvalReport:
    out_dir: Path
    points: list[CurvePoint]
    n_problems: int
    compute: Compute
    table: str
    complete: bool


def has_scores(record: dict[str, Any], scorer: str) -> bool:
    name = scorer_name(scorer)
    return all(name in c["scores"] for c in record["candidates"])


def needs_work(record: dict[str, Any] | None, cfg: EvalConfig) -> bool:
    """Missing work, a pool sampled before this verifier was asked for, or a pool smaller
    than the run's (being grown)."""
    if record is None:
        return True
    if record.get("kind") == "search":
        return False
    return not has_scores(record, cfg.scorer) or len(record["candidates"]) < cfg.pool_n


@dataclass
class _Tally:
    """What the report gathers as it goes."""

    points: list[CurvePoint]
    compute: Compute
    quality: list[dict[str, Any]]
    spending: dict[str, Any]
    missing: list[str]


def _pool_part(
    done: Sequence[Problem], store: RunStore, cfg: EvalConfig, n_boot: int, policy: str | None, t: _Tally
) -> None:
    records = [store.records[RecordKey.pool(p.id).format()] for p in done]
    t.quality = verifier_quality(records)
    pools = [pool_from_record(r, scorer_name(cfg.scorer), cfg.aggregation) for r in records]
    t.points += curves(pools, cfg.pool_strategies, n_boot=n_boot, seed=cfg.seed, options=cfg.search)
    if policy and pools:
        try:
            fitted = [Policy.load(path) for path in policy.split(",")]
            per_pool = policy_per_problem(fitted, [p.id for p in done])
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise EvalError(f"--replay-optimal {policy}: {e}") from None
        replayed, t.spending = replay_compute_optimal(pools, per_pool, sorted(cfg.ns), n_boot, cfg.seed)
        t.points += replayed
    for r in records:
        t.compute = t.compute + pool_compute(r)


def pool_compute(record: dict[str, Any]) -> Compute:
    """Everything a stored pool cost: its sampling and every verifier added later, a pass two
    verifiers share (a judge probe's reading, which gives the judge's P(Yes)) counted once."""
    total = Compute.from_dict(record["compute"])
    for spent in record.get("rescored", {}).values():
        if "read_by" not in spent:
            total = total + Compute.from_dict(spent)
    return total


def _search_part(done: Sequence[Problem], store: RunStore, cfg: EvalConfig, t: _Tally) -> None:
    for strategy in cfg.search_strategies:
        for n in sorted(cfg.ns):
            recs = [store.records[cfg.search_key(p.id, strategy, n)] for p in done]
            if not recs:
                continue
            t.points += search_picks(recs, strategy, "", n, cfg.seed)
            for r in recs:
                if "derived_from" not in r["settings"]:  # a cut of another record's run: spent there
                    t.compute = t.compute + Compute.from_dict(r["compute"])


def _compared_part(
    done: Sequence[Problem],
    store: RunStore,
    cfg: EvalConfig,
    pair: tuple[str, str],
    n_boot: int,
    t: _Tally,
) -> None:
    """The same strategies under another (verifier, aggregation), where the run holds them."""
    scorer, how = pair
    other = replace(cfg, scorer=scorer, aggregation=how)
    label = f" ({scorer}/{how})"
    rules = [s for s in cfg.pool_strategies if reads_scores(s)]
    pools = [store.records[RecordKey.pool(p.id).format()] for p in done] if rules else []
    scored = [r for r in pools if has_scores(r, scorer)]
    if rules and len(scored) == len(done):
        replayed = curves(
            [pool_from_record(r, scorer_name(scorer), how) for r in pools],
            rules,
            n_boot=n_boot,
            seed=cfg.seed,
            options=cfg.search,
        )
        t.points += [replace(pt, strategy=pt.strategy + label) for pt in replayed if pt.strategy in rules]
    elif rules:
        t.missing.append(f"{scorer} scores missing on {len(done) - len(scored)} of {len(done)} pools")
    for strategy in cfg.search_strategies:
        for n in sorted(cfg.ns):
            keys = [other.search_key(p.id, strategy, n) for p in done]
            found = [store.records[k] for k in keys if k in store.records]
            if len(found) == len(keys):
                t.points += search_picks(found, strategy, label, n, cfg.seed)
            else:
                t.missing.append(f"{strategy}{label} n={n} missing on {len(keys) - len(found)} of {len(keys)} problems")


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
    """Report on the problems whose requested work is all done; writes the report files."""
    done = [p for p in problems if not any(needs_work(store.records.get(k), cfg) for k in cfg.work_keys(p.id))]
    t = _Tally([], Compute(), [], {}, [])
    if cfg.pool_strategies:
        _pool_part(done, store, cfg, n_boot, replay_policy, t)
    _search_part(done, store, cfg, t)
    for pair in compare:
        _compared_part(done, store, cfg, pair, n_boot, t)
    paired = paired_differences(t.points, seed=cfg.seed)
    matched = matched_token_differences(t.points, seed=cfg.seed)
    # A view at smaller budgets replays the whole stored pool: its identity names that pool.
    first_pool = store.records[RecordKey.pool(done[0].id).format()] if cfg.pool_strategies and done else None
    pool_size = len(first_pool["candidates"]) if first_pool else cfg.pool_n
    summary: dict[str, Any] = {
        "identity": {**cfg.identity(), "n": pool_size},
        # what sampled the run (a report names a server's runs by it); merged runs list each shard's
        **{k: store.meta[k] for k in ("engine", "engines") if k in store.meta},
        "limit": cfg.limit,
        "start": cfg.start,
        "levels": list(cfg.levels) if cfg.levels else None,
        "complete": len(done) == len(problems),
        "problems": len(done),
        "problems_requested": len(problems),
        "problem_ids": [p.id for p in done],
        "strategies": list(cfg.strategies),
        "budgets": list(cfg.ns),
        "scorer": cfg.scorer,
        "aggregation": cfg.aggregation,
        "search_settings": cfg.search,
        "bootstrap_draws": n_boot,
        "compute_total": t.compute.to_dict(),
        "points": [p.to_dict() for p in t.points],
        "verifier_quality": t.quality,
        "compared": [f"{a}/{b}" for a, b in compare],
        "compute_optimal_replayed": {"policy": replay_policy, "per_budget": t.spending} if replay_policy else None,
        "not_compared": t.missing,
        "vs_majority": paired,
        "vs_majority_matched_tokens": matched,
    }
    (out_dir / f"{summary_name}.json").write_text(json.dumps(summary, indent=2))
    title = _title(cfg, len(done), len(problems))
    md = table(t.points)
    (out_dir / f"{summary_name}.md").write_text(
        _markdown(title, md, t, paired, matched, pool_size, replay_policy, len(done))
    )
    if t.points:
        plot(t.points, str(out_dir / ("plot.png" if summary_name == "summary" else f"{summary_name}.png")), title)
    return EvalReport(out_dir, t.points, len(done), t.compute, md, len(done) == len(problems))


def _title(cfg: EvalConfig, done: int, requested: int) -> str:
    status = "" if done == requested else f" - PARTIAL: {done} of {requested} problems done"
    return (
        f"{cfg.model} on {cfg.dataset} ({done} problems), N={','.join(map(str, cfg.ns))}, seed {cfg.seed}, "
        f"verifier {cfg.scorer}/{cfg.aggregation}{status}"
    )


def _markdown(
    title: str,
    md: str,
    t: _Tally,
    paired: list[dict[str, Any]],
    matched: list[dict[str, Any]],
    pool_size: int,
    replay_policy: str | None,
    done: int,
) -> str:
    per = max(1, done)
    c = t.compute
    optimal_md = (
        "\ncompute_optimal (replayed on the stored pools with the policy "
        f"`{replay_policy}`): share of the budget spent / share of problems stopped early: "
        + ", ".join(f"n={n}: {v['budget_used']:.2f} / {v['stopped_early']:.2f}" for n, v in t.spending.items())
        + ".\n"
        if t.spending
        else ""
    )
    missing_md = f"\nNot compared (not run on every problem above): {'; '.join(t.missing)}.\n" if t.missing else ""
    matched_md = (
        "\n## Against majority voting at matched tokens\n\nEach strategy that spends a different number "
        "of generated tokens from majority at its N, against majority at its smallest budget that "
        "generated at least as many tokens per problem and at its largest budget that generated at "
        "most as many (tokens / majority's below 1 and above 1); paired over problems as above.\n\n"
        f"{paired_table(matched)}\n"
        if matched
        else ""
    )
    quality_md = (
        f"\n## How well each verifier separates right from wrong samples\n\n{quality_table(t.quality)}\n"
        if t.quality
        else ""
    )
    paired_md = (
        "\n## Against majority voting at the same N, on the same problems\n\nPaired over problems, so "
        "the interval is that of the difference itself (* when it excludes zero).\n\n"
        f"{paired_table(paired)}\n"
        if paired
        else ""
    )
    return (
        f"# {title}\n\nAccuracy in %, 95% bootstrap interval in brackets. Pool strategies are replayed on "
        f"subsets of {pool_size} samples per problem; search strategies ran once per budget "
        f"(`+majority`, `+weighted_best_of_n`: the same searches with the other final pick).\n\n{md}\n\n"
        f"Compute of everything run, per problem: {c.generated_tokens / per:.0f} generated tokens, "
        f"{c.prompt_tokens / per:.0f} prompt tokens computed, {c.cached_prompt_tokens / per:.0f} "
        f"served from cache, {c.verifier_tokens / per:.0f} verifier tokens, "
        f"{c.wall_time / per:.1f} s wall, {c.flops / per:.3g} FLOPs.\n"
        f"{optimal_md}{missing_md}{paired_md}{matched_md}{quality_md}"
    )
