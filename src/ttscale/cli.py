"""The `ttscale` command: one small function per subcommand, and the table of commands (COMMANDS)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .apps.bench import (
    bench_engine,
    bench_probe,
    bench_reproduce,
    bench_search,
    format_engine,
    format_probe,
    format_reproduce,
    format_search,
)
from .apps.recipe import eval_args, load_recipe, plan
from .apps.report import build_report
from .apps.serve import ServeConfig, serve
from .apps.train_probe import collect, read_records, train, training_problems
from .core import AGGREGATIONS, Problem, SamplingParams
from .engines.llamacpp import LlamaCppGenerator
from .engines.models import DEFAULT_MODEL, REGISTRY, ModelError, get_spec, model_path, recommended_sampling
from .engines.openai import OpenAIGenerator, RemoteError
from .evaluation.config import EvalConfig, EvalError
from .evaluation.policy import fit_policy
from .evaluation.run import run_eval
from .evaluation.store import merge_runs, read_run
from .strategies.catalogue import CATALOGUE, PER_BUDGET_STRATEGIES, POOL_STRATEGIES, SEARCHES, run_strategy
from .strategies.spec import RunSpec
from .tasks.datasets import load_dataset
from .verifiers.registry import ALL_SCORERS, PRM_KEYS, known_scorer, make_scorer, needs_hidden_states, scorer_name

ALL_STRATEGIES = list(CATALOGUE)
EPILOG = (
    f"strategies: {', '.join(POOL_STRATEGIES)} (over one pool of samples); "
    f"{', '.join(PER_BUDGET_STRATEGIES)} (search and self-refinement, run once per budget)\n"
    f"scorers: {', '.join(ALL_SCORERS)}, prm:KEY[@PATH] with KEY one of {', '.join(PRM_KEYS)}"
)


def _scorer(name: str) -> str:
    if not known_scorer(name):
        raise argparse.ArgumentTypeError(f"unknown scorer {name!r}")
    return name


def _shard(text: str) -> tuple[int, int]:
    try:
        i, k = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shard is i/k, like 0/4, not {text!r}") from None
    if not 0 <= i < k:
        raise argparse.ArgumentTypeError(f"shard {text} does not exist: i runs from 0 to k-1")
    return i, k


def _positive_ints(what: str, example: str) -> Callable[[str], tuple[int, ...]]:
    def parse(text: str) -> tuple[int, ...]:
        try:
            ns = tuple(int(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be integers like {example}, not {text!r}") from None
        if not ns or min(ns) < 1:
            raise argparse.ArgumentTypeError(f"{what} must be positive integers")
        return ns

    return parse


_budgets = _positive_ints("budgets", "4,8,16")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"registered model ({', '.join(REGISTRY)}) or a .gguf path")
    p.add_argument("--scorer", default="logprob", type=_scorer, help="verifier (see the list below)")
    p.add_argument("--aggregate", default="mean", choices=list(AGGREGATIONS), help="step scores -> solution score")
    g = p.add_argument_group("sampling (defaults: the model's recommended settings)")
    g.add_argument("--temperature", type=float)
    g.add_argument("--top-p", type=float)
    g.add_argument("--top-k", type=int)
    g.add_argument("--max-tokens", type=int, default=1024, help="per solution")
    g.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads of the embedded engine (default: every core); jobs sharing a machine should split the "
        "cores, since llama.cpp's threads wait by spinning and oversubscribed cores slow every job several-fold",
    )
    r = p.add_argument_group("remote engine (instead of the embedded llama.cpp)")
    r.add_argument("--server", help="OpenAI-compatible server URL(s), comma-separated; requests spread over them")
    r.add_argument("--server-model", help="model name to send to the server (default: --model)")
    r.add_argument("--chat-template", default="chatml", help="chatml, llama3, or a Jinja template file")
    r.add_argument("--model-params", type=float, default=0, help="parameter count, for FLOP estimates")
    r.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    s = p.add_argument_group("step-level search")
    s.add_argument("--beam-width", type=int, default=4, help="M: candidates per beam (beam search, DVTS)")
    s.add_argument("--lookahead", type=int, default=0, help="greedy steps rolled out to score a candidate")
    s.add_argument("--max-iterations", type=int, default=20, help="steps at most")
    s.add_argument("--step-tokens", type=int, default=256, help="tokens at most per step")
    s.add_argument("--policy", help="compute_optimal: a policy file from `ttscale fit-optimal`")
    s.add_argument(
        "--refine-all-rounds",
        action="store_true",
        help="self_refine: run every round, even after a revision repeats the answer it checked word for word",
    )


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


def _compare(text: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        scorer, _, how = item.rpartition("/")
        if not scorer or how not in AGGREGATIONS:
            choices = ", ".join(AGGREGATIONS)
            raise argparse.ArgumentTypeError(f"{item!r} is not VERIFIER/AGGREGATE (aggregates: {choices})")
        pairs.append((scorer, how))
    return tuple(pairs)


def _generator(args: argparse.Namespace) -> Any:
    if args.server:
        return OpenAIGenerator(
            [u.strip() for u in args.server.split(",") if u.strip()],
            args.server_model or args.model,
            chat_template=args.chat_template,
            n_params=int(args.model_params),
            concurrency=args.concurrency,
        )
    return LlamaCppGenerator(
        args.model, hidden_states=needs_hidden_states(getattr(args, "scorer", "")), n_threads=args.threads
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
    return options


def _eval_parser(sub: Any, fmt: Any) -> None:
    ev = sub.add_parser(
        "eval",
        help="accuracy versus compute on a benchmark",
        description="Pool strategies sample N solutions per problem once and are replayed on subsets at every "
        "power of two up to N; search strategies run once per budget. Resumable: re-run the same command.",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    ev.add_argument("--dataset", default="gsm8k", help="gsm8k, math500, or a JSONL path")
    ev.add_argument("--question-field", help="JSONL field holding the problem (default: problem/question)")
    ev.add_argument("--answer-field", help="JSONL field holding the reference answer (default: answer)")
    ev.add_argument("--limit", type=int, help="only the first LIMIT problems (from --start)")
    ev.add_argument("--start", type=int, default=0, help="skip the first START problems")
    ev.add_argument(
        "--levels", type=_positive_ints("levels", "1,2,3"), help="only these difficulty levels, e.g. 1,2,3 (MATH-500)"
    )
    ev.add_argument("--n", type=_budgets, default=(8,), help="budget(s) N, e.g. 16 or 4,8,16")
    ev.add_argument("--strategy", default=",".join(POOL_STRATEGIES), help="comma-separated strategies")
    ev.add_argument("--output", type=Path, help="run directory (default: runs/<dataset>-<model>-n<N>-seed<S>)")
    ev.add_argument(
        "--shard", type=_shard, help="i/k: this machine's share of the problems (merge with `ttscale merge`)"
    )
    ev.add_argument("--bootstrap", type=int, default=100, help="subsample draws per budget")
    ev.add_argument("--no-progress", action="store_true")
    ev.add_argument("--report-only", action="store_true", help="summarise what is done; generate nothing")
    ev.add_argument(
        "--grow-pool",
        action="store_true",
        help="the run holds smaller pools than the largest --n: keep them and sample only the missing ones",
    )
    ev.add_argument(
        "--compare",
        type=_compare,
        default=(),
        help="also report the strategies under these VERIFIER/AGGREGATE pairs, e.g. logprob/mean,judge/min",
    )
    ev.add_argument(
        "--replay-optimal",
        metavar="POLICY[,POLICY]",
        help="also report compute_optimal with these policy files, replayed on the stored pools (no generation); "
        "each problem uses a policy not fitted on it, so two policies fitted on two halves cross-fit a slice",
    )
    ev.add_argument(
        "--summary",
        default="summary",
        help="name of the report files (NAME.md, NAME.json, plot): several views of one run directory",
    )
    _add_common(ev)


def _solve_parser(sub: Any, fmt: Any) -> None:
    so = sub.add_parser("solve", help="answer one problem with a strategy", epilog=EPILOG, formatter_class=fmt)
    so.add_argument("problem", help="the problem text")
    so.add_argument("--strategy", default="weighted_best_of_n", choices=ALL_STRATEGIES)
    so.add_argument("--n", type=int, default=8, help="the budget N")
    so.add_argument("--show", action="store_true", help="print every candidate with its score")
    so.add_argument("--json", action="store_true", help="print the whole result as JSON")
    _add_common(so)


def _bench_parser(sub: Any, fmt: Any) -> None:
    be = sub.add_parser("bench", help="benchmarks")
    bsub = be.add_subparsers(dest="bench", required=True)

    def bench(name: str, help_text: str, n: int, max_tokens: int, problems: int | None = None) -> Any:
        p = bsub.add_parser(name, help=help_text)
        p.add_argument("--model", default=DEFAULT_MODEL)
        p.add_argument("--n", type=int, default=n)
        p.add_argument("--max-tokens", type=int, default=max_tokens)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--json", type=Path, help="also write the raw figures to this file")
        if problems is not None:
            p.add_argument("--problems", type=int, default=problems)
        return p

    bench("engine", "batched sampling of N sequences versus a plain one-at-a-time loop", 16, 128)
    se = bench("search", "KV-cache reuse of a tree search against re-prefilling every prefix", 8, 512, problems=3)
    se.add_argument("--strategy", default="beam_search", choices=SEARCHES)
    se.add_argument("--beam-width", type=int, default=4, help="beam search and DVTS")
    se.add_argument("--step-tokens", type=int, default=128)
    pb = bench("probe", "what the value probe costs: hidden states on/off, time per score", 16, 256, problems=2)
    pb.add_argument("--probe", help="probe file (default: the one shipped for the model)")
    rp = bsub.add_parser("reproduce", help="re-run stored records of an eval run; compare them token for token")
    rp.add_argument("run", type=Path, help="an eval run directory")
    rp.add_argument("--records", type=int, default=2, help="how many of its records (the first that match)")
    rp.add_argument("--match", default="", help="only records whose key holds this, e.g. '|dvts|4|' or 'pool|'")
    rp.add_argument("--threads", type=int, help="CPU threads of the engine (default: all)")
    rp.add_argument("--json", type=Path, help="also write the raw figures to this file")


def _serve_parser(sub: Any, fmt: Any) -> None:
    sv = sub.add_parser(
        "serve",
        help="an OpenAI-compatible server that answers with a test-time strategy",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8080)
    sv.add_argument("--strategy", default="weighted_best_of_n", choices=ALL_STRATEGIES, help="default strategy")
    sv.add_argument("--n", type=int, default=4, help="default budget")
    sv.add_argument("--max-n", type=int, default=64, help="largest budget a request may ask for")
    sv.add_argument("--workers", type=int, default=1, help="strategies running at once (one engine each)")
    sv.add_argument("--queue", type=int, default=8, help="requests that may wait; beyond that, HTTP 429")
    sv.add_argument("--timeout", type=float, default=300.0, help="seconds a request may take in all")
    _add_common(sv)


def _recipe_parser(sub: Any, fmt: Any) -> None:
    rc = sub.add_parser("recipe", help="validate, plan or run a whole experiment described in a JSON file")
    rc.add_argument("file", type=Path)
    rc.add_argument("--dry-run", action="store_true", help="print the planned commands and request count only")
    rc.add_argument("--shard", type=int, help="run only this shard's evals (default: everything, unsharded)")


def _train_probe_parser(sub: Any, fmt: Any) -> None:
    tp = sub.add_parser("train-probe", help="sample training data and fit the hidden-state value probe")
    tp.add_argument("--data", action="append", required=True, help="a training JSONL file (repeatable)")
    tp.add_argument("--per-file", type=int, default=200, help="problems taken from the start of each file")
    tp.add_argument(
        "--levels",
        type=_positive_ints("levels", "1,2,3"),
        help="only these difficulty levels, in files whose rows have one (MATH train); others are taken whole",
    )
    tp.add_argument("--k", type=int, default=8, help="solutions sampled per problem")
    tp.add_argument("--work", type=Path, default=Path("runs/probe-data"), help="where the samples accumulate")
    tp.add_argument("--output", type=Path, required=True, help="the probe file to write (.npz)")
    tp.add_argument("--fit-only", action="store_true", help="fit on the samples already collected")
    tp.add_argument("--l2", type=float, help="L2 strength (default: chosen on held-out problems)")
    tp.add_argument("--model", default=DEFAULT_MODEL, help="a registered model (the probe is tied to it)")
    tp.add_argument("--max-tokens", type=int, default=512)
    tp.add_argument("--threads", type=int, help="CPU threads of the engine (default: every core)")
    tp.add_argument("--seed", type=int, default=0)
    tp.add_argument("--no-progress", action="store_true")


def _report_parser(sub: Any, fmt: Any) -> None:
    rp = sub.add_parser("report", help="a self-contained HTML report of run directories")
    rp.add_argument("runs", type=Path, nargs="+", help="eval run directories, or named summaries (DIR/NAME.json)")
    rp.add_argument("--output", type=Path, default=Path("report.html"))
    rp.add_argument("--tree", type=Path, help="draw a search tree from this run directory's traces")
    rp.add_argument(
        "--tree-problem", help="the problem id whose tree to draw, or a whole search key (default: the first traced)"
    )
    rp.add_argument("--tree-strategy", help="beam_search, dvts or particle_filter (default: the first traced)")
    rp.add_argument(
        "--baseline",
        type=Path,
        action="append",
        default=[],
        help="a run the others on the same problems are measured against (e.g. a larger model, greedy); repeat it "
        "for several slices (GSM8K, MATH-500, ...): each run is compared with the baseline on its problems",
    )
    rp.add_argument("--title", default="ttscale report")


def _fit_optimal_parser(sub: Any, fmt: Any) -> None:
    fo = sub.add_parser("fit-optimal", help="fit the compute-optimal policy table from calibration eval runs")
    fo.add_argument("runs", type=Path, nargs="+", help="eval run directories on calibration problems")
    fo.add_argument("--n", type=_budgets, default=(4, 8, 16), help="budgets to fit")
    fo.add_argument("--probe-n", type=int, default=4, help="samples of the cheap first probe")
    fo.add_argument("--scorer", default="logprob")
    fo.add_argument("--aggregate", default="mean", choices=list(AGGREGATIONS))
    fo.add_argument(
        "--signal",
        default="agreement",
        choices=["agreement", "verifier"],
        help="difficulty from the probe samples' agreement, or from their mean verifier score (quartile bins)",
    )
    fo.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="per bin and budget, the cheapest choice within this accuracy (e.g. 0.02) of the best one",
    )
    fo.add_argument(
        "--strategies",
        help="the strategies the table may name, comma-separated (default: every one the runs measured; "
        "majority,best_of_n,weighted_best_of_n for a policy `eval --replay-optimal` can replay)",
    )
    fo.add_argument("--start", type=int, default=0, help="fit on the runs' problems from the START-th")
    fo.add_argument("--limit", type=int, help="fit on LIMIT problems only (the rest stay held out)")
    fo.add_argument("--output", type=Path, required=True, help="the policy file to write (.json)")


def _merge_parser(sub: Any, fmt: Any) -> None:
    me = sub.add_parser("merge", help="combine the run directories of shards into one")
    me.add_argument(
        "output", type=Path, help="the merged run directory: new, or one of the shards (the others merge into it)"
    )
    me.add_argument("shards", type=Path, nargs="+", help="shard run directories")


def _models_parser(sub: Any, fmt: Any) -> None:
    mo = sub.add_parser("models", help="list registered models, or assemble and verify one")
    mo.add_argument("name", nargs="?", help="assemble and verify this model, print its path")


def _bench(args: argparse.Namespace) -> int:
    if args.bench == "reproduce":
        try:
            r = bench_reproduce(args.run, args.records, args.match, args.threads)
        except (OSError, ValueError, KeyError) as e:
            print(f"ttscale: error: {e}", file=sys.stderr)
            return 2
        text = format_reproduce(r)
    elif args.bench == "engine":
        r = bench_engine(args.model, n=args.n, max_tokens=args.max_tokens, seed=args.seed)
        text = format_engine(r)
    elif args.bench == "probe":
        r = bench_probe(args.model, args.probe, args.problems, args.n, args.max_tokens, args.seed)
        text = format_probe(r)
    else:
        r = bench_search(
            args.model,
            problems=args.problems,
            n=args.n,
            beam_width=args.beam_width,
            max_tokens=args.max_tokens,
            step_tokens=args.step_tokens,
            seed=args.seed,
            strategy=args.strategy,
        )
        text = format_search(r)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))
    return 0


def _fit_optimal(args: argparse.Namespace) -> int:
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


def _report(args: argparse.Namespace) -> int:
    tree = (args.tree, args.tree_problem, args.tree_strategy) if args.tree else None
    args.output.parent.mkdir(parents=True, exist_ok=True)
    page = build_report(args.runs, tree, args.baseline, args.output.parent, args.title)
    args.output.write_text(page, "utf-8")
    print(f"report written to {args.output}")
    return 0


def _models(args: argparse.Namespace) -> int:
    name = args.name
    if name:
        print(model_path(name))
        return 0
    for spec in REGISTRY.values():
        print(f"{spec.name:22s} {spec.description}\n{'':22s} install: {spec.install_hint}")
    return 0


def _solve(args: argparse.Namespace) -> int:
    gen = _generator(args)
    problem = Problem(id="cli", question=args.problem)
    scorer = make_scorer(args.scorer, gen)
    result = run_strategy(args.strategy, problem, gen, scorer, args.n, _spec(args), _search_options(args))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        return 0
    if args.show:
        for k, cand in enumerate(result.candidates):
            mark = "*" if k == result.chosen else " "
            print(
                f"{mark} [{k}] answer={cand.answer!r} score={cand.score:.3f} tokens={cand.n_tokens} "
                f"({cand.finish_reason})"
            )
    c = result.compute
    print(f"answer: {result.answer}")
    print(f"strategy {result.strategy}, n={args.n}, scorer {args.scorer}/{args.aggregate}, seed {args.seed}")
    print(
        f"compute: {c.generated_tokens} generated tokens, {c.prompt_tokens} prompt tokens computed, "
        f"{c.cached_prompt_tokens} from cache, {c.verifier_tokens} verifier tokens, "
        f"{c.wall_time:.1f} s, {c.flops:.3g} FLOPs"
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    strategies = tuple(s.strip() for s in args.strategy.split(",") if s.strip())
    if args.question_field or args.answer_field:
        # Resolve custom fields once so that a bad field name fails before the model loads.
        load_dataset(args.dataset, args.question_field, args.answer_field)
    cfg = EvalConfig(
        dataset=args.dataset,
        ns=args.n,
        model=args.model,
        seed=args.seed,
        sampling=_sampling(args),
        limit=args.limit,
        start=args.start,
        levels=args.levels,
        strategies=strategies,
        scorer=args.scorer,
        aggregation=args.aggregate,
        question_field=args.question_field,
        answer_field=args.answer_field,
        search=_search_options(args) if any(s in PER_BUDGET_STRATEGIES for s in strategies) else {},
        shard=args.shard,
    )
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


def _merge(args: argparse.Namespace) -> int:
    try:
        r = merge_runs(args.output, args.shards)
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


def _recipe(args: argparse.Namespace) -> int:
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
        status = max(status, main(eval_args(recipe, run, args.shard)))
    return status


def _serve(args: argparse.Namespace) -> int:
    cfg = ServeConfig(
        model=args.server_model or args.model,
        strategy=args.strategy,
        n=args.n,
        scorer=args.scorer,
        aggregation=args.aggregate,
        sampling=_sampling(args),
        workers=args.workers,
        queue_limit=args.queue,
        timeout=args.timeout,
        max_n=args.max_n,
        search=_search_options(args),
    )
    if args.threads is None:  # each worker's engine gets its share of the cores, not all of them
        args.threads = max(1, (os.cpu_count() or 1) // max(1, args.workers))
    httpd = serve(cfg, lambda: _generator(args), args.host, args.port)
    print(
        f"ttscale serve: http://{args.host}:{args.port}/v1 ({cfg.model}, default {cfg.strategy} n={cfg.n})", flush=True
    )
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
    return 0


def _train_probe(args: argparse.Namespace) -> int:
    spec = get_spec(args.model)
    samples = args.work / f"{spec.name}-k{args.k}-seed{args.seed}.jsonl"
    if not args.fit_only:
        problems = training_problems(args.data, args.per_file, args.levels)
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


# subcommand -> (what adds its arguments, what runs it)
COMMANDS: dict[str, tuple[Callable[[Any, Any], None], Callable[[argparse.Namespace], int]]] = {
    "eval": (_eval_parser, _eval),
    "solve": (_solve_parser, _solve),
    "bench": (_bench_parser, _bench),
    "serve": (_serve_parser, _serve),
    "recipe": (_recipe_parser, _recipe),
    "train-probe": (_train_probe_parser, _train_probe),
    "report": (_report_parser, _report),
    "fit-optimal": (_fit_optimal_parser, _fit_optimal),
    "merge": (_merge_parser, _merge),
    "models": (_models_parser, _models),
}


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="ttscale",
        description="Test-time compute scaling for small open models.",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add, _ in COMMANDS.values():
        add(sub, fmt)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command][1](args)
    except (ModelError, FileNotFoundError, ValueError, RemoteError, RuntimeError) as e:
        print(f"ttscale: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nttscale: interrupted; finished work is saved, re-run the same command to resume", file=sys.stderr)
        return 130
