"""The `ttscale` command: eval, solve, bench, models."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .core import SamplingParams
from .models import DEFAULT_MODEL, REGISTRY, ModelError
from .scorers import AGGREGATIONS, SCORERS
from .strategies import STRATEGIES


def _sampling_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling (defaults: the model's recommended settings)")
    g.add_argument("--temperature", type=float)
    g.add_argument("--top-p", type=float)
    g.add_argument("--top-k", type=int)
    g.add_argument("--max-tokens", type=int, default=1024)
    g.add_argument("--seed", type=int, default=0)


def _common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"registered model ({', '.join(REGISTRY)}) or a path to any .gguf file"
    )
    p.add_argument("--n", type=int, default=8, help="samples per problem (the budget N)")
    p.add_argument("--scorer", default="logprob", choices=list(SCORERS), help="verifier")
    p.add_argument(
        "--aggregate",
        default="mean",
        choices=list(AGGREGATIONS),
        help="how step scores combine into one score per solution",
    )


def _sampling(args: argparse.Namespace) -> SamplingParams:
    from .models import get_spec

    base = SamplingParams() if args.model.endswith(".gguf") else get_spec(args.model).sampling
    return SamplingParams(
        temperature=base.temperature if args.temperature is None else args.temperature,
        top_p=base.top_p if args.top_p is None else args.top_p,
        top_k=base.top_k if args.top_k is None else args.top_k,
        max_tokens=args.max_tokens,
        seed=args.seed,
    )


def build_parser() -> argparse.ArgumentParser:
    strategies = ", ".join(STRATEGIES)
    scorers = ", ".join(SCORERS)
    parser = argparse.ArgumentParser(
        prog="ttscale",
        description="Test-time compute scaling for small open models.",
        epilog=f"strategies: {strategies}\nscorers: {scorers}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    ev = sub.add_parser(
        "eval",
        help="accuracy versus compute on a benchmark",
        description="Sample N solutions per problem once, then evaluate every strategy at every "
        "power of two up to N by subsampling the pool. Resumable: re-run the same command.",
        epilog=f"strategies: {strategies}\nscorers: {scorers}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ev.add_argument("--dataset", default="gsm8k", help="gsm8k, math500, or a JSONL path")
    ev.add_argument("--question-field", help="JSONL field holding the problem (default: problem/question)")
    ev.add_argument("--answer-field", help="JSONL field holding the reference answer (default: answer)")
    ev.add_argument("--limit", type=int, help="only the first LIMIT problems")
    ev.add_argument(
        "--strategy",
        default=",".join(STRATEGIES),
        help=f"comma-separated strategies to report (default: all of {strategies})",
    )
    ev.add_argument("--output", type=Path, help="run directory (default: runs/<dataset>-<model>-n<N>-seed<S>)")
    ev.add_argument("--bootstrap", type=int, default=100, help="subsample draws per budget")
    ev.add_argument("--no-progress", action="store_true")
    _common_args(ev)
    _sampling_args(ev)

    so = sub.add_parser(
        "solve",
        help="answer one problem with a strategy",
        epilog=f"strategies: {strategies}\nscorers: {scorers}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    so.add_argument("problem", help="the problem text")
    so.add_argument("--strategy", default="weighted_best_of_n", choices=list(STRATEGIES))
    so.add_argument("--show", action="store_true", help="print every candidate with its score")
    so.add_argument("--json", action="store_true", help="print the whole result as JSON")
    _common_args(so)
    _sampling_args(so)

    be = sub.add_parser("bench", help="benchmarks")
    bsub = be.add_subparsers(dest="bench", required=True)
    eng = bsub.add_parser("engine", help="batched sampling of N sequences versus a plain one-at-a-time loop")
    eng.add_argument("--model", default=DEFAULT_MODEL)
    eng.add_argument("--n", type=int, default=16)
    eng.add_argument("--max-tokens", type=int, default=128)
    eng.add_argument("--seed", type=int, default=0)
    eng.add_argument("--json", type=Path, help="also write the raw figures to this file")

    mo = sub.add_parser("models", help="list registered models, or assemble and verify one")
    mo.add_argument("name", nargs="?", help="assemble and verify this model, print its path")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (ModelError, FileNotFoundError, ValueError) as e:
        print(f"ttscale: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nttscale: interrupted; finished problems are saved, re-run the same command to resume", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "models":
        return _models(args.name)
    if args.command == "bench":
        from .bench import bench_engine, format_engine

        r = bench_engine(args.model, n=args.n, max_tokens=args.max_tokens, seed=args.seed)
        print(format_engine(r))
        if args.json:
            args.json.write_text(json.dumps(r, indent=2))
        return 0
    if args.command == "solve":
        return _solve(args)
    return _eval(args)


def _models(name: str | None) -> int:
    from .models import model_path

    if name:
        print(model_path(name))
        return 0
    for spec in REGISTRY.values():
        print(f"{spec.name:22s} {spec.description}\n{'':22s} install: {spec.install_hint}")
    return 0


def _solve(args: argparse.Namespace) -> int:
    from .core import Problem
    from .engine import LlamaCppGenerator
    from .scorers import make_scorer

    gen = LlamaCppGenerator(args.model)
    result = STRATEGIES[args.strategy](
        Problem(id="cli", question=args.problem),
        gen,
        make_scorer(args.scorer),
        args.n,
        params=_sampling(args),
        aggregation=args.aggregate,
    )
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
    from .datasets import load_dataset
    from .engine import LlamaCppGenerator
    from .evaluate import EvalConfig, EvalError, run_eval

    strategies = tuple(s.strip() for s in args.strategy.split(",") if s.strip())
    if args.n < 1:
        raise ValueError("--n must be at least 1")
    dataset = args.dataset
    if args.question_field or args.answer_field:
        # Resolve custom fields once so that a bad field name fails before the model loads.
        load_dataset(dataset, args.question_field, args.answer_field)
    cfg = EvalConfig(
        dataset=dataset,
        n=args.n,
        model=args.model,
        seed=args.seed,
        sampling=_sampling(args),
        limit=args.limit,
        strategies=strategies,
        scorer=args.scorer,
        aggregation=args.aggregate,
        question_field=args.question_field,
        answer_field=args.answer_field,
    )
    name = Path(dataset).stem if dataset.endswith(".jsonl") else dataset
    out = args.output or Path("runs") / f"{name}-{Path(args.model).stem}-n{args.n}-seed{args.seed}"
    try:
        report = run_eval(
            cfg, lambda: LlamaCppGenerator(args.model), out, progress=not args.no_progress, n_boot=args.bootstrap
        )
    except EvalError as e:
        print(f"ttscale: error: {e}", file=sys.stderr)
        return 2
    print(
        f"\n{report.n_problems} problems, {args.model}, N={args.n}, seed {args.seed}, "
        f"verifier {args.scorer}/{args.aggregate}; accuracy % [95% CI]\n"
    )
    print(report.table)
    c = report.compute
    print(
        f"\ncompute for the whole pool: {c.generated_tokens} generated tokens, {c.prompt_tokens} prompt tokens "
        f"computed, {c.cached_prompt_tokens} from cache, {c.wall_time:.0f} s"
    )
    print(f"results: {out}/summary.md, {out}/plot.png, samples in {out}/samples.jsonl")
    return 0
