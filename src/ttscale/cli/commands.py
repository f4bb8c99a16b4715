"""What each `ttscale` subcommand does: one small function per subcommand, over the layers below."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..apps.bench import (
    bench_contention,
    bench_engine,
    bench_engine_server,
    bench_probe,
    bench_reproduce,
    bench_search,
    format_contention,
    format_engine,
    format_engine_server,
    format_probe,
    format_reproduce,
    format_search,
)
from ..apps.bench_serve import Load, bench_serve, format_serve
from ..apps.http import serve
from ..apps.layer_data import collect_layers, read_judgements
from ..apps.layer_data import rebuild as rebuild_layers
from ..apps.layer_data import summary as layer_data_summary
from ..apps.recipe import eval_args, load_recipe, plan
from ..apps.report import build_report
from ..apps.serve import ServeConfig
from ..apps.train_probe import collect, read_records, train, training_problems
from ..apps.train_reward import report_markdown, train_reward
from ..core import Problem, SamplingParams
from ..engines.llamacpp import LlamaCppGenerator
from ..engines.models import REGISTRY, ModelError, get_spec, model_path, recommended_sampling
from ..engines.openai import OpenAIGenerator, RemoteError
from ..evaluation.config import EvalConfig, EvalError
from ..evaluation.policy import fit_policy
from ..evaluation.run import run_eval
from ..evaluation.stopping_fit import fit_stopping
from ..evaluation.store import merge_runs, read_run
from ..strategies.catalogue import PER_BUDGET_STRATEGIES, check_domain, run_strategy
from ..strategies.spec import RunSpec
from ..tasks.code import CODE_SYSTEM_PROMPT, code_problem, is_code, strip_fences
from ..tasks.code_domain import CodeDomain
from ..tasks.datasets import load_dataset
from ..tasks.domain import domain_of
from ..tasks.prompts import SYSTEM_PROMPT
from ..verifiers.registry import layers_to_read, make_scorer, needs_hidden_states, scorer_name
from .arguments import build_parser


def _sampling(args: argparse.Namespace) -> SamplingParams:
    return recommended_sampling(
        args.model,
        max_tokens=args.max_tokens,
        seed=args.seed,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
    )


def _spec(args: argparse.Namespace) -> RunSpec:
    return RunSpec(_sampling(args), aggregation=args.aggregate, step_tokens=args.step_tokens)


def _verifier_and_sampling(args: argparse.Namespace, search: dict[str, Any]) -> dict[str, Any]:
    """The settings that eval and serve both take from the command line."""
    return {"scorer": args.scorer, "aggregation": args.aggregate, "sampling": _sampling(args), "search": search}


def _engine_identity(args: argparse.Namespace) -> dict[str, Any]:
    """What will sample, as a run records it."""
    if args.server:
        return {"kind": "openai", "model": args.server_model or args.model}
    build = f"llama-cpp-python {importlib.metadata.version('llama-cpp-python')}"
    return {"kind": "llama.cpp", "threads": args.threads, "build": build}


def _generator(args: argparse.Namespace) -> Any:
    if args.server:
        return OpenAIGenerator(
            [u.strip() for u in args.server.split(",") if u.strip()],
            args.server_model or args.model,
            chat_template=args.chat_template,
            n_params=int(args.model_params) or (REGISTRY[args.model].params if args.model in REGISTRY else 0),
            concurrency=args.concurrency,
            timeout=args.server_timeout,
            retries=args.server_retries,
        )
    scorer = getattr(args, "scorer", "")
    return LlamaCppGenerator(
        args.model,
        hidden_states=needs_hidden_states(scorer),
        layers=layers_to_read(scorer, args.model),
        n_threads=args.threads,
    )


def _search_options(args: argparse.Namespace) -> dict[str, Any]:
    options = {
        "beam_width": args.beam_width,
        "lookahead": args.lookahead,
        "max_iterations": args.max_iterations,
        "step_tokens": args.step_tokens,
    }
    if args.policy:
        options["policy"] = args.policy
    if args.refine_all_rounds:  # only when asked, so that the keys of stored runs stay as they were
        options["stop_on_repeat"] = False
    if args.deepconf_keep is not None:  # likewise
        options["keep"] = args.deepconf_keep
    return options


def _stopping_options(args: argparse.Namespace) -> dict[str, Any]:
    """The stopping votes' parameters, only where given (a run's keys keep their layout)."""
    given = {
        "esc_window": args.esc_window,
        "adaptive_threshold": args.adaptive_threshold,
        "confidence_gate": args.confidence_gate,
    }
    return {k: v for k, v in given.items() if v is not None}


def _bench_server(args: argparse.Namespace) -> OpenAIGenerator:
    params = REGISTRY[args.model].params if args.model in REGISTRY else 0
    return OpenAIGenerator([args.server], args.server_model or args.model, n_params=params, timeout=600)


def bench_command(args: argparse.Namespace) -> int:
    if args.bench == "reproduce":
        try:
            r = bench_reproduce(args.run, args.records, args.match, args.threads)
        except (OSError, ValueError, KeyError) as e:
            print(f"ttscale: error: {e}", file=sys.stderr)
            return 2
        text = format_reproduce(r)
    elif args.bench == "engine":
        if args.contention:
            r = bench_contention(
                args.model, args.n, args.max_tokens, args.seed, args.contention, neighbour=args.neighbour
            )
            text = format_contention(r)
        elif args.server:
            r = bench_engine_server(
                _bench_server(args), args.model, n=args.n, max_tokens=args.max_tokens, seed=args.seed
            )
            text = format_engine_server(r)
        else:
            r = bench_engine(args.model, n=args.n, max_tokens=args.max_tokens, seed=args.seed)
            text = format_engine(r)
    elif args.bench == "serve":
        r = bench_serve(Load(args.clients, args.requests, args.hostile_every))
        text = format_serve(r)
    elif args.bench == "probe":
        r = bench_probe(args.model, args.probe, args.problems, args.n, args.max_tokens, args.seed, args.layers)
        text = format_probe(r)
    else:
        a = args
        server = _bench_server(a) if a.server else None
        r = bench_search(
            a.model, a.problems, a.n, a.beam_width, a.max_tokens, a.step_tokens, a.seed, a.strategy, server
        )
        text = format_search(r)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))
    return 0


def fit_optimal_command(args: argparse.Namespace) -> int:
    records = [r for d in args.runs for r in read_run(d, args.start, args.limit)]
    policy = fit_policy(
        records,
        args.n,
        probe_n=args.probe_n,
        scorer=scorer_name(args.scorer),
        aggregation=args.aggregate,
        signal=args.signal,
        tolerance=args.tolerance,
        strategies=[x.strip() for x in args.strategies.split(",") if x.strip()] if args.strategies else None,
    )
    policy.save(args.output)
    shown = {k: v for k, v in policy.meta.items() if k != "calibration_ids"}
    print(json.dumps({"bins": policy.bins, "table": policy.table, **shown}, indent=2))
    return 0


def fit_stopping_command(args: argparse.Namespace) -> int:
    records = [r for d in args.runs for r in read_run(d, args.start, args.limit)]
    try:
        fixed = {} if args.adaptive_threshold is None else {"adaptive_threshold": args.adaptive_threshold}
        fit = fit_stopping(
            records, args.rule, args.n, args.tolerance, scorer_name(args.scorer), args.aggregate, fixed=fixed
        )
    except ValueError as e:
        print(f"ttscale: error: {e}", file=sys.stderr)
        return 2
    if args.output:
        args.output.write_text(json.dumps(fit, indent=2))
    shown = {k: v for k, v in fit.items() if k != "calibration_ids"}
    print(json.dumps({**shown, "calibration_problems": len(fit["calibration_ids"])}, indent=2))
    return 0


def report_command(args: argparse.Namespace) -> int:
    tree = (args.tree, args.tree_problem, args.tree_strategy) if args.tree else None
    args.output.parent.mkdir(parents=True, exist_ok=True)
    page = build_report(args.runs, tree, args.baseline, args.output.parent, args.title)
    args.output.write_text(page, "utf-8")
    print(f"report written to {args.output}")
    return 0


def models_command(args: argparse.Namespace) -> int:
    name = args.name
    if name:
        print(model_path(name))
        return 0
    for spec in REGISTRY.values():
        print(f"{spec.name:22s} {spec.description}\n{'':22s} install: {spec.install_hint}")
    return 0


def export_hf_command(args: argparse.Namespace) -> int:
    from ..engines.hf_export import export_hf

    print(export_hf(args.name, args.output))
    return 0


def solve_command(args: argparse.Namespace) -> int:
    try:
        problem = _solve_problem(args)
        check_domain(args.strategy, args.task)
    except ValueError as e:
        print(f"ttscale: error: {e}", file=sys.stderr)
        return 2
    gen = _generator(args)
    scorer = make_scorer(args.scorer, gen)
    spec = _spec(args)
    if args.task == "code" and spec.system == SYSTEM_PROMPT:
        spec = replace(spec, system=CODE_SYSTEM_PROMPT)
    result = run_strategy(
        args.strategy, problem, gen, scorer, args.n, spec, {**_search_options(args), **_stopping_options(args)}
    )
    domain = domain_of(problem)
    described = domain.describe([c.answer for c in result.candidates]) if isinstance(domain, CodeDomain) else None
    if args.json:
        out = result.to_dict()
        if described is not None:
            out["behaviour"] = described
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    if described is not None:
        _show_programs(result, described, args.show)
        return _print_compute(result, args)
    if args.show:
        for k, cand in enumerate(result.candidates):
            mark = "*" if k == result.chosen else " "
            print(
                f"{mark} [{k}] answer={cand.answer!r} score={cand.score:.3f} tokens={cand.n_tokens} "
                f"({cand.finish_reason})"
            )
    print(f"answer: {result.answer}")
    return _print_compute(result, args)


def _solve_problem(args: argparse.Namespace) -> Problem:
    if args.task == "code":
        return code_problem(strip_fences(args.problem), args.entry_point, "cli")
    return Problem(id="cli", question=args.problem)


def _show_programs(result: Any, described: list[dict[str, Any]], every: bool) -> None:
    """The chosen program, and with --show what each candidate did on the public tests."""
    for k, (cand, d) in enumerate(zip(result.candidates, described, strict=True)):
        if not every and k != result.chosen:
            continue
        mark = "*" if k == result.chosen else " "
        if d["examples"] is None:
            print(f"{mark} [{k}] no complete program ({cand.finish_reason})")
            continue
        ex = sum(e["passed"] for e in d["examples"])
        ts = sum(t["passed"] for t in d["tests"])
        print(
            f"{mark} [{k}] examples {ex}/{len(d['examples'])}, own tests {ts}/{len(d['tests'])}, "
            f"score {cand.score:.3f}, {cand.n_tokens} tokens"
        )
        for e in d["examples"] if every else []:
            print(f"      {'ok  ' if e['passed'] else 'FAIL'} {e['call']} -> {e['got']}")
    print("program:" if result.answer else "no program passed as an answer")
    if result.answer:
        print(result.answer)


def _print_compute(result: Any, args: argparse.Namespace) -> int:
    c = result.compute
    print(f"strategy {result.strategy}, n={args.n}, scorer {args.scorer}/{args.aggregate}, seed {args.seed}")
    print(
        f"compute: {c.generated_tokens} generated tokens, {c.prompt_tokens} prompt tokens computed, "
        f"{c.cached_prompt_tokens} from cache, {c.verifier_tokens} verifier tokens, "
        f"{c.wall_time:.1f} s, {c.flops:.3g} FLOPs"
        + (f", {c.executed_tests} tests run ({c.execution_time:.1f} s)" if c.executed_tests else "")
    )
    return 0


def eval_command(args: argparse.Namespace) -> int:
    strategies = tuple(s.strip() for s in args.strategy.split(",") if s.strip())
    if args.question_field or args.answer_field:
        # Resolve custom fields once so that a bad field name fails before the model loads.
        load_dataset(args.dataset, args.question_field, args.answer_field)
    searching = any(s in PER_BUDGET_STRATEGIES for s in strategies)
    same_name = ("dataset", "model", "seed", "limit", "start", "levels", "question_field", "answer_field", "shard")
    cfg = EvalConfig(
        **_verifier_and_sampling(
            args, search={**(_search_options(args) if searching else {}), **_stopping_options(args)}
        ),
        **{k: getattr(args, k) for k in same_name},
        ns=args.n,
        strategies=strategies,
        engine=_engine_identity(args),
    )
    if is_code(load_dataset(args.dataset, args.question_field, args.answer_field).problems[0]):
        cfg.for_code()
    name = Path(args.dataset).stem if args.dataset.endswith(".jsonl") else args.dataset
    model = Path(args.model).stem if args.model.endswith(".gguf") else args.model.replace("/", "_")
    shard = f"-shard{args.shard[0]}of{args.shard[1]}" if args.shard else ""
    out = args.output or Path("runs") / f"{name}-{model}-n{cfg.pool_n}-seed{args.seed}{shard}"
    try:
        report = run_eval(
            cfg,
            lambda: _generator(args),
            out,
            progress=not args.no_progress,
            n_boot=args.bootstrap,
            generate=not args.report_only,
            summary_name=args.summary,
            compare=args.compare,
            replay_policy=args.replay_optimal,
            grow_pool=args.grow_pool,
        )
    except EvalError as e:
        print(f"ttscale: error: {e}", file=sys.stderr)
        return 2
    partial = "" if report.complete else " (PARTIAL)"
    print(
        f"\n{report.n_problems} problems{partial}, {args.model}, N={','.join(map(str, cfg.ns))}, seed {args.seed}, "
        f"verifier {args.scorer}/{args.aggregate}; accuracy % [95% CI]\n"
    )
    print(report.table)
    c = report.compute
    print(
        f"\ncompute of everything run: {c.generated_tokens} generated tokens, {c.prompt_tokens} prompt tokens "
        f"computed, {c.cached_prompt_tokens} from cache, {c.verifier_tokens} verifier tokens, {c.wall_time:.0f} s"
    )
    plot_name = "plot" if args.summary == "summary" else args.summary
    print(f"results: {out}/{args.summary}.md, {out}/{plot_name}.png, samples in {out}/samples.jsonl")
    return 0


def merge_command(args: argparse.Namespace) -> int:
    try:
        r = merge_runs(args.output, args.shards, same_model=args.same_model, pools_only=args.pools_only)
    except EvalError as e:
        print(f"ttscale: error: {e}", file=sys.stderr)
        return 2
    print(f"merged {r.records} records from {len(args.shards)} shards into {args.output}")
    if r.duplicates:
        print(f"warning: {len(r.duplicates)} duplicated records kept once: {', '.join(r.duplicates[:5])}")
    if r.missing:
        print(f"warning: {len(r.missing)} problems have no result in any shard: {', '.join(r.missing[:10])}")
    print("summarise with the shards' eval command and --output", args.output)
    return 1 if r.missing else 0


def recipe_command(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.file)
    if args.dry_run:
        p = plan(recipe)
        print(f"{recipe.get('name', args.file)}\n{p.notes}\n")
        for name, server in recipe["servers"].items():
            print(f"# start the {name} server: {server.get('command', '(already running)')}")
        print("\n".join(p.commands))
        print(f"\n{p.problems} problems; at most {p.generation_requests:,} generation requests in all")
        return 0
    status = 0
    for run in recipe["runs"]:
        status = max(status, guarded(eval_command, build_parser().parse_args(eval_args(recipe, run, args.shard))))
    return status


def worker_threads(threads: int | str, workers: int) -> int | str:
    """The thread setting of each serve worker's engine. The workers share this process, and
    "auto" reads the CPU of other processes only: beside each other, each would take every
    core, so with several workers "auto" becomes each one's share of the cores."""
    if threads == "auto" and workers > 1:
        return max(1, (os.cpu_count() or 1) // workers)
    return threads


def serve_command(args: argparse.Namespace) -> int:
    cfg = ServeConfig(
        **_verifier_and_sampling(args, search=_search_options(args)),
        model=args.server_model or args.model,
        strategy=args.strategy,
        n=args.n,
        workers=args.workers,
        queue_limit=args.queue,
        timeout=args.timeout,
        max_n=args.max_n,
        api_key=args.api_key,
    )
    args.threads = worker_threads(args.threads, args.workers)
    httpd = serve(cfg, lambda: _generator(args), args.host, args.port)
    print(
        f"ttscale serve: http://{args.host}:{args.port}/v1 ({cfg.model}, default {cfg.strategy} n={cfg.n})", flush=True
    )
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
    return 0


def collect_layers_command(args: argparse.Namespace) -> int:
    get_spec(args.model)  # a registered model, or a clear error
    gen = LlamaCppGenerator(args.model, layers=args.layers, n_threads=args.threads)
    if args.rebuild and args.judge:
        raise ValueError("--rebuild replays the policy's states, --judge reads a judge's: one at a time")
    progress = not args.no_progress
    try:
        if args.judge:
            print(f"judged the solutions of {read_judgements(gen, args.output, progress=progress)} problems")
        elif args.rebuild:
            print(f"rebuilt the states of {rebuild_layers(gen, args.output, progress=progress)} problems")
        else:
            problems = training_problems(args.data, args.per_file, args.levels, args.by_subject)
            params = recommended_sampling(args.model, max_tokens=args.max_tokens, seed=args.seed)
            added = collect_layers(problems, gen, args.k, params, args.output, progress=progress)
            print(f"collected {added} new problems into {args.output}")
    finally:  # an interrupted collection (Ctrl-C) still says what it holds, if it holds anything
        if args.output.is_dir():
            done = layer_data_summary(args.output)
            (args.output / "summary.json").write_text(json.dumps(done, indent=2))
    print(json.dumps(done, indent=2))
    return 0


def train_reward_command(args: argparse.Namespace) -> int:
    spec = get_spec(args.model)
    if not 0.0 < args.val_fraction < 1.0:
        raise ValueError("--val-fraction is a share of the problems, between 0 and 1")
    judge = spec.name if args.judge else None
    reward, report = train_reward(args.data, spec.sha256, args.val_fraction, args.folds, args.seed, judge=judge)
    reward.save(args.output)
    stem = args.report or args.data / "reward"
    if stem.suffix in (".md", ".json"):
        stem = stem.with_suffix("")
    # appended, not with_suffix: a stem such as judge-probe-1.5b has a dot that is no suffix
    stem.with_name(stem.name + ".json").write_text(json.dumps(report, indent=2))
    stem.with_name(stem.name + ".md").write_text(report_markdown(report))
    print(report_markdown(report))
    print(f"layer reward for {spec.name} written to {args.output}")
    return 0


def train_probe_command(args: argparse.Namespace) -> int:
    spec = get_spec(args.model)
    samples = args.work / f"{spec.name}-k{args.k}-seed{args.seed}.jsonl"
    if not args.fit_only:
        problems = training_problems(args.data, args.per_file, args.levels, args.by_subject)
        gen = LlamaCppGenerator(args.model, hidden_states=True, n_threads=args.threads)
        params = recommended_sampling(args.model, max_tokens=args.max_tokens, seed=args.seed)
        added = collect(problems, gen, args.k, params, samples, progress=not args.no_progress)
        print(f"collected {added} new problems into {samples}")
    records = read_records(samples)
    probe = train(records, spec.sha256, l2=args.l2, seed=args.seed)
    probe.save(args.output)
    print(json.dumps(probe.meta, indent=2))
    print(f"probe for {spec.name} written to {args.output}")
    return 0


RUNNERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "eval": eval_command,
    "solve": solve_command,
    "bench": bench_command,
    "serve": serve_command,
    "recipe": recipe_command,
    "train-probe": train_probe_command,
    "collect-layers": collect_layers_command,
    "train-reward": train_reward_command,
    "report": report_command,
    "fit-optimal": fit_optimal_command,
    "fit-stopping": fit_stopping_command,
    "merge": merge_command,
    "models": models_command,
    "export-hf": export_hf_command,
}


def guarded(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a subcommand; a known failure becomes one line on stderr and exit status 2."""
    try:
        return run(args)
    except (ModelError, FileNotFoundError, ValueError, RemoteError, RuntimeError) as e:
        print(f"ttscale: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nttscale: interrupted; finished work is saved, re-run the same command to resume", file=sys.stderr)
        return 130
