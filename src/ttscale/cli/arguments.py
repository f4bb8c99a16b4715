"""The `ttscale` command line's arguments: one function per subcommand adds its own, and
`build_parser` puts them together."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core import AGGREGATIONS
from ..engines.models import DEFAULT_MODEL, REGISTRY
from ..strategies.catalogue import CATALOGUE, PER_BUDGET_STRATEGIES, POOL_STRATEGIES, SEARCHES
from ..strategies.picks import STOPPING
from ..verifiers.registry import ALL_SCORERS, PRM_KEYS, known_scorer

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


def _layers(text: str) -> tuple[int, ...]:
    """Layers as the model counts them; negative ones from the end (the engine checks the range)."""
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"layers are comma-separated integers, e.g. 12,-1, not {text!r}") from None


def _threads(text: str) -> int | str:
    """A thread count, or "auto": the cores the rest of the machine leaves free."""
    return "auto" if text == "auto" else _positive(text)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a positive integer, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number of seconds, not {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a share in (0, 1], not {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], not {text}")
    return value


def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads",
        type=_threads,
        default="auto",
        help="CPU threads of the embedded engine: 'auto' (default), the cores the rest of the machine leaves "
        "free, re-read every second, or a fixed count (llama.cpp's threads wait for each other: beside a second "
        "engine on 2 cores, 2 fixed threads ran 13.7x slower than alone and 'auto' 1.95x; alone 'auto' is as "
        "fast as every core; the samples are the same at any count)",
    )


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
    _add_threads(p)
    r = p.add_argument_group("remote engine (instead of the embedded llama.cpp)")
    r.add_argument("--server", help="OpenAI-compatible server URL(s), comma-separated; requests spread over them")
    r.add_argument("--server-model", help="model name to send to the server (default: --model)")
    r.add_argument("--chat-template", default="chatml", help="chatml, llama3, or a Jinja template file")
    r.add_argument(
        "--model-params",
        type=float,
        default=0,
        help="parameter count, for FLOP estimates (default: a registered --model's)",
    )
    r.add_argument("--concurrency", type=_positive, default=8, help="requests in flight at once")
    r.add_argument("--server-timeout", type=_seconds, default=300.0, help="seconds one request may take")
    r.add_argument(
        "--server-retries", type=int, default=3, choices=range(11), metavar="0-10", help="retries of a failed request"
    )
    s = p.add_argument_group("step-level search")
    s.add_argument("--beam-width", type=int, default=4, help="M: candidates per beam (beam search, DVTS)")
    s.add_argument("--esc-window", type=_positive, help="esc: samples per window (default 4)")
    s.add_argument(
        "--adaptive-threshold",
        type=float,
        help="adaptive_majority, adaptive_confident: the Beta rule's probability to stop at (default 0.95)",
    )
    s.add_argument(
        "--confidence-gate",
        type=float,
        help="adaptive_confident: the weaker Beta probability at which a more self-certain leader stops (default 0.6)",
    )
    s.add_argument(
        "--deepconf-keep",
        type=_share,
        help="deepconf_online: the top share of the warm-up's confidences a sample must reach to go on "
        "(default 0.1, DeepConf-low; 0.9 is DeepConf-high)",
    )
    s.add_argument("--lookahead", type=int, default=0, help="greedy steps rolled out to score a candidate")
    s.add_argument("--max-iterations", type=int, default=20, help="steps at most")
    s.add_argument("--step-tokens", type=int, default=256, help="tokens at most per step")
    s.add_argument("--policy", help="compute_optimal: a policy file from `ttscale fit-optimal`")
    s.add_argument(
        "--refine-all-rounds",
        action="store_true",
        help="self_refine: run every round, even after a revision repeats the answer it checked word for word",
    )


def _compare(text: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        scorer, _, how = item.rpartition("/")
        if not scorer or how not in AGGREGATIONS:
            choices = ", ".join(AGGREGATIONS)
            raise argparse.ArgumentTypeError(f"{item!r} is not VERIFIER/AGGREGATE (aggregates: {choices})")
        pairs.append((scorer, how))
    return tuple(pairs)


def eval_parser(sub: Any, fmt: Any) -> None:
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


def solve_parser(sub: Any, fmt: Any) -> None:
    so = sub.add_parser("solve", help="answer one problem with a strategy", epilog=EPILOG, formatter_class=fmt)
    so.add_argument("problem", help="the problem text; with --task code, a function's signature and docstring")
    so.add_argument(
        "--task",
        choices=("math", "code"),
        default="math",
        help="code: complete the function; the program is run on its docstring's examples and on tests "
        "the model writes, in the sandbox",
    )
    so.add_argument("--entry-point", help="code: the function to complete (default: the last one defined)")
    so.add_argument("--strategy", default="weighted_best_of_n", choices=ALL_STRATEGIES)
    so.add_argument("--n", type=_positive, default=8, help="the budget N")
    so.add_argument("--show", action="store_true", help="print every candidate with its score")
    so.add_argument("--json", action="store_true", help="print the whole result as JSON")
    _add_common(so)


def bench_parser(sub: Any, fmt: Any) -> None:
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

    en = bench("engine", "batched sampling of N sequences versus a plain one-at-a-time loop", 16, 128)
    en.add_argument(
        "--contention",
        type=int,
        metavar="K",
        help="instead: decode speed alone and beside K busy processes, at each thread count and --threads auto",
    )
    en.add_argument(
        "--neighbour",
        choices=["loop", "engine"],
        default="loop",
        help="with --contention: each busy process is a Python loop (one core) or a second engine decoding "
        "with the same thread setting (two evaluations on one machine)",
    )
    se = bench("search", "KV-cache reuse of a tree search against re-prefilling every prefix", 8, 512, problems=3)
    for p in (en, se):
        p.add_argument("--server", help="an OpenAI-compatible server (vLLM) to measure against the embedded engine")
        p.add_argument("--server-model", help="the model name the server serves (default: --model)")
    se.add_argument("--strategy", default="beam_search", choices=SEARCHES)
    se.add_argument("--beam-width", type=int, default=4, help="beam search and DVTS")
    se.add_argument("--step-tokens", type=int, default=128)
    pb = bench("probe", "what the value probe costs: hidden states on/off, time per score", 16, 256, problems=2)
    pb.add_argument("--probe", help="probe file (default: the one shipped for the model)")
    pb.add_argument(
        "--layers",
        type=_layers,
        help="comma-separated layers to tap as well (negative: from the end; default 12,-4,-3,-2,-1)",
    )
    rp = bsub.add_parser("reproduce", help="re-run stored records of an eval run; compare them token for token")
    rp.add_argument("run", type=Path, help="an eval run directory")
    rp.add_argument("--records", type=int, default=2, help="how many of its records (the first that match)")
    rp.add_argument("--match", default="", help="only records whose key holds this, e.g. '|dvts|4|' or 'pool|'")
    rp.add_argument(
        "--threads",
        type=_threads,
        help="CPU threads (default: the count each record was sampled with, else every core)",
    )
    rp.add_argument("--json", type=Path, help="also write the raw figures to this file")
    ld = bsub.add_parser("serve", help="a bounded load test of ttscale serve on 127.0.0.1 (fake engine, hostile mix)")
    ld.add_argument("--clients", type=_positive, default=200, help="concurrent clients")
    ld.add_argument("--requests", type=_positive, default=1000, help="requests in all")
    ld.add_argument("--hostile-every", type=_positive, default=10, help="every K-th request is hostile")
    ld.add_argument("--json", type=Path, help="also write the raw figures to this file")


def serve_parser(sub: Any, fmt: Any) -> None:
    sv = sub.add_parser(
        "serve",
        help="an OpenAI-compatible server that answers with a test-time strategy",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8080)
    sv.add_argument("--strategy", default="weighted_best_of_n", choices=ALL_STRATEGIES, help="default strategy")
    sv.add_argument("--n", type=_positive, default=4, help="default budget")
    sv.add_argument("--max-n", type=_positive, default=64, help="largest budget a request may ask for")
    sv.add_argument("--workers", type=_positive, default=1, help="strategies running at once (one engine each)")
    sv.add_argument("--queue", type=_positive, default=8, help="requests that may wait; beyond that, HTTP 429")
    sv.add_argument("--timeout", type=_seconds, default=300.0, help="seconds a request may take in all")
    sv.add_argument("--api-key", help="require this Bearer token on every route but /health (as vLLM's --api-key)")
    _add_common(sv)


def recipe_parser(sub: Any, fmt: Any) -> None:
    rc = sub.add_parser("recipe", help="validate, plan or run a whole experiment described in a JSON file")
    rc.add_argument("file", type=Path)
    rc.add_argument("--dry-run", action="store_true", help="print the planned commands and request count only")
    rc.add_argument("--shard", type=int, help="run only this shard's evals (default: everything, unsharded)")


def _add_training_data(p: argparse.ArgumentParser, per_file: int) -> None:
    """Which training problems a collection samples (train-probe, collect-layers)."""
    p.add_argument("--data", action="append", required=True, help="a training JSONL file (repeatable)")
    p.add_argument("--per-file", type=int, default=per_file, help="problems taken from the start of each file")
    p.add_argument(
        "--levels",
        type=_positive_ints("levels", "1,2,3"),
        help="only these difficulty levels, in files whose rows have one (MATH train); others are taken whole",
    )
    p.add_argument(
        "--by-subject",
        action="store_true",
        help="take each file's problems from its subjects in turn (MATH train is sorted by subject: its first "
        "400 are all algebra)",
    )


def train_probe_parser(sub: Any, fmt: Any) -> None:
    tp = sub.add_parser("train-probe", help="sample training data and fit the hidden-state value probe")
    _add_training_data(tp, per_file=200)
    tp.add_argument("--k", type=int, default=8, help="solutions sampled per problem")
    tp.add_argument("--work", type=Path, default=Path("runs/probe-data"), help="where the samples accumulate")
    tp.add_argument("--output", type=Path, required=True, help="the probe file to write (.npz)")
    tp.add_argument("--fit-only", action="store_true", help="fit on the samples already collected")
    tp.add_argument("--l2", type=float, help="L2 strength (default: chosen on held-out problems)")
    tp.add_argument("--model", default=DEFAULT_MODEL, help="a registered model (the probe is tied to it)")
    tp.add_argument("--max-tokens", type=int, default=512)
    _add_threads(tp)
    tp.add_argument("--seed", type=int, default=0)
    tp.add_argument("--no-progress", action="store_true")


def collect_layers_parser(sub: Any, fmt: Any) -> None:
    cl = sub.add_parser(
        "collect-layers", help="sample training solutions with several layers' hidden states (a verifier's data)"
    )
    _add_training_data(cl, per_file=400)
    cl.add_argument("--k", type=_positive, default=8, help="solutions sampled per problem")
    cl.add_argument(
        "--layers", type=_layers, default=(12, -4, -3, -2, -1), help="layers to read (negative: from the end)"
    )
    cl.add_argument("--output", type=Path, required=True, help="the data directory (samples.jsonl, states/)")
    cl.add_argument("--rebuild", action="store_true", help="only replay stored solutions whose states are missing")
    cl.add_argument(
        "--judge",
        action="store_true",
        help="only read the stored solutions through --model as the outcome judge does, keeping its P(Yes) and its "
        "layers' states where it answers (judge-MODEL/: a judge probe's data)",
    )
    cl.add_argument("--model", default=DEFAULT_MODEL, help="a registered model")
    cl.add_argument("--max-tokens", type=_positive, default=512)
    _add_threads(cl)
    cl.add_argument("--seed", type=int, default=0)
    cl.add_argument("--no-progress", action="store_true")


def train_reward_parser(sub: Any, fmt: Any) -> None:
    tr = sub.add_parser(
        "train-reward", help="fit the reward over several layers on collect-layers data, chosen by validation"
    )
    tr.add_argument("--data", type=Path, required=True, help="a collect-layers directory (samples.jsonl, states/)")
    tr.add_argument("--output", type=Path, required=True, help="the reward file to write (.npz)")
    tr.add_argument("--report", type=Path, help="where the report goes (default: DATA/reward.md and .json)")
    tr.add_argument("--model", default=DEFAULT_MODEL, help="the registered model the states are of")
    tr.add_argument(
        "--judge", action="store_true", help="train the judge probe on --model's judgements (collect-layers --judge)"
    )
    tr.add_argument("--val-fraction", type=float, default=0.2, help="problems held out to judge the chosen reader")
    tr.add_argument("--folds", type=_positive, default=4, help="cross-validation folds that choose the reader")
    tr.add_argument("--seed", type=int, default=0)


def report_parser(sub: Any, fmt: Any) -> None:
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


def fit_optimal_parser(sub: Any, fmt: Any) -> None:
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


def merge_parser(sub: Any, fmt: Any) -> None:
    me = sub.add_parser("merge", help="combine the run directories of shards into one")
    me.add_argument(
        "output", type=Path, help="the merged run directory: new, or one of the shards (the others merge into it)"
    )
    me.add_argument("shards", type=Path, nargs="+", help="shard run directories")
    me.add_argument(
        "--same-model",
        action="store_true",
        help="declare that shards sampled by different engines (llama.cpp, vLLM, ...) served the same weights",
    )
    me.add_argument(
        "--pools-only",
        action="store_true",
        help="copy only the pools, into a new directory: a scratch copy to rescore or to run a live strategy beside "
        "them (merge it back into the run afterwards)",
    )


def models_parser(sub: Any, fmt: Any) -> None:
    mo = sub.add_parser("models", help="list registered models, or assemble and verify one")
    mo.add_argument("name", nargs="?", help="assemble and verify this model, print its path")


def export_hf_parser(sub: Any, fmt: Any) -> None:
    ex = sub.add_parser(
        "export-hf", help="a registered GGUF model as a Hugging Face directory (for vllm serve); prints its path"
    )
    ex.add_argument("name", nargs="?", default=DEFAULT_MODEL, help="a registered model or a .gguf path")
    ex.add_argument("--output", type=Path, help="the directory (default: beside the model in the cache)")


def fit_stopping_parser(sub: Any, fmt: Any) -> None:
    fs = sub.add_parser("fit-stopping", help="fit a stopping vote's window or threshold on calibration pools")
    fs.add_argument("runs", type=Path, nargs="+", help="eval run directories holding pools of calibration problems")
    fs.add_argument("--rule", required=True, choices=list(STOPPING))
    fs.add_argument(
        "--adaptive-threshold", type=float, help="adaptive_confident: the threshold held fixed while its gate is fitted"
    )
    fs.add_argument("--n", type=_positive, default=16, help="the budget it must hold majority's accuracy at")
    fs.add_argument("--tolerance", type=float, default=0.015, help="accuracy it may lose against majority (paired)")
    fs.add_argument("--scorer", default="logprob")
    fs.add_argument("--aggregate", default="mean", choices=list(AGGREGATIONS))
    fs.add_argument("--start", type=int, default=0, help="fit on the runs' problems from the START-th")
    fs.add_argument("--limit", type=int, help="fit on LIMIT problems only (the rest stay held out)")
    fs.add_argument("--output", type=Path, help="also write the fit here (.json)")


PARSERS: dict[str, Callable[[Any, Any], None]] = {
    "eval": eval_parser,
    "solve": solve_parser,
    "bench": bench_parser,
    "serve": serve_parser,
    "recipe": recipe_parser,
    "train-probe": train_probe_parser,
    "collect-layers": collect_layers_parser,
    "train-reward": train_reward_parser,
    "report": report_parser,
    "fit-optimal": fit_optimal_parser,
    "fit-stopping": fit_stopping_parser,
    "merge": merge_parser,
    "models": models_parser,
    "export-hf": export_hf_parser,
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
    for add in PARSERS.values():
        add(sub, fmt)
    return parser
