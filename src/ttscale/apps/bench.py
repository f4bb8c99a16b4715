"""`ttscale bench engine`: batched sampling against the plain one-at-a-time loop, in one run.

Both sides use the same model file, prompt, sampling settings and token limit on the same
machine at the same time, so the ratio is meaningful even where absolute speed is noisy.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..core import Problem, SamplingParams
from ..engines.llamacpp import LlamaCppGenerator
from ..engines.models import DEFAULT_MODEL, recommended_sampling
from ..evaluation.config import EvalConfig, RecordKey
from ..evaluation.run import grow_pool, sample_problem, search_problem
from ..evaluation.store import read_records
from ..strategies.candidates import from_completion
from ..strategies.catalogue import ROUNDS, SEARCHES, run_strategy
from ..strategies.spec import RunSpec
from ..tasks.code import CODE_SYSTEM_PROMPT
from ..tasks.datasets import load_dataset
from ..tasks.prompts import SYSTEM_PROMPT, problem_prompt
from ..verifiers.model_free import LogProbScorer
from ..verifiers.probe import ProbeScorer
from ..verifiers.registry import known_scorer, needs_hidden_states


def bench_engine(
    model: str = DEFAULT_MODEL, n: int = 16, max_tokens: int = 128, seed: int = 0, problem_index: int = 0
) -> dict[str, Any]:
    from llama_cpp import Llama

    problem = load_dataset("math500").problems[problem_index]
    params = recommended_sampling(model, max_tokens=max_tokens, seed=seed)
    threads = os.cpu_count() or 1  # fixed, as the plain loop's: a like-for-like comparison
    gen = LlamaCppGenerator(model, n_threads=threads)
    prompt = problem_prompt(problem.question)
    text = gen.render(prompt)

    # Plain loop: llama-cpp-python's high-level API, one completion at a time.
    plain = Llama(model_path=str(gen.path), n_ctx=4096, n_threads=threads, n_threads_batch=threads, verbose=False)
    t0 = time.perf_counter()
    plain_tokens = 0
    for j in range(n):
        out = plain.create_completion(
            text,
            max_tokens=max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            seed=seed + j,
        )
        plain_tokens += int(out["usage"]["completion_tokens"])  # type: ignore[index]
    plain_s = time.perf_counter() - t0
    del plain

    gen.generate([prompt], 1, params)  # warm the prompt cache like the plain loop's first call did
    gen.timing = {"decode_s": 0.0, "sample_s": 0.0}
    t0 = time.perf_counter()
    result = gen.generate([prompt], n, params)
    batched_s = time.perf_counter() - t0
    batched_tokens = result.compute.generated_tokens
    timing = dict(gen.timing)

    t0 = time.perf_counter()
    single = gen.generate([prompt], 1, params)
    single_s = time.perf_counter() - t0

    plain_tps = plain_tokens / plain_s
    batched_tps = batched_tokens / batched_s
    return {
        "model": gen.name,
        "model_file": gen.path.name,
        "problem": f"math500[{problem_index}] {problem.id}",
        "n": n,
        "max_tokens": max_tokens,
        "sampling": params.to_dict(),
        "threads": threads,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "plain_loop": {"tokens": plain_tokens, "seconds": round(plain_s, 2), "tok_per_s": round(plain_tps, 1)},
        "ttscale_batched": {
            "tokens": batched_tokens,
            "seconds": round(batched_s, 2),
            "tok_per_s": round(batched_tps, 1),
            "decode_share": round(timing["decode_s"] / batched_s, 3),
            "sampling_share": round(timing["sample_s"] / batched_s, 3),
        },
        "ttscale_single": {
            "tokens": single.compute.generated_tokens,
            "seconds": round(single_s, 2),
            "tok_per_s": round(single.compute.generated_tokens / single_s, 1),
        },
        "speedup": round(batched_tps / plain_tps, 2),
    }


def bench_engine_server(
    server: Any,
    model: str = DEFAULT_MODEL,
    n: int = 16,
    max_tokens: int = 128,
    seed: int = 0,
    problem_index: int = 0,
    rounds: int = 3,
) -> dict[str, Any]:
    """A server (`server`, a remote `Generator` such as vLLM's) against the embedded engine on
    the same prompt and settings: N samples in one request / one batch, and one sample alone.
    The two sides alternate for `rounds` rounds and each side's tokens and seconds are summed,
    so a machine whose speed drifts (a shared host's steal time) hits both alike; an idle
    server uses no CPU while the embedded engine runs."""
    problem = load_dataset("math500").problems[problem_index]
    params = recommended_sampling(model, max_tokens=max_tokens, seed=seed)
    prompt = problem_prompt(problem.question)
    out: dict[str, Any] = {
        "model": model,
        "server_model": server.name,
        "problem": f"math500[{problem_index}] {problem.id}",
        "n": n,
        "max_tokens": max_tokens,
        "sampling": params.to_dict(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    out["threads"] = os.cpu_count() or 1  # every core, fixed: the server side uses none while this runs
    local = LlamaCppGenerator(model, n_threads=out["threads"])
    out["rounds"] = rounds
    sides = (("server", server), ("embedded", local))
    for _, gen in sides:
        gen.generate([prompt], 1, params)  # warm-up: the prompt's cache, a server's first shapes
    totals = {(side, key): [0, 0.0] for side, _ in sides for key in ("batched", "single")}
    for _ in range(rounds):
        for key, count in (("batched", n), ("single", 1)):
            for side, gen in sides:
                t0 = time.perf_counter()
                result = gen.generate([prompt], count, params)
                totals[(side, key)][0] += result.compute.generated_tokens
                totals[(side, key)][1] += time.perf_counter() - t0
    for (side, key), (tokens, seconds) in totals.items():
        out[f"{side}_{key}"] = {"tokens": tokens, "seconds": round(seconds, 2), "tok_per_s": round(tokens / seconds, 1)}
    for key in ("batched", "single"):
        out[f"{key}_ratio"] = round(out[f"server_{key}"]["tok_per_s"] / out[f"embedded_{key}"]["tok_per_s"], 2)
    return out


def format_engine_server(r: dict[str, Any]) -> str:
    rows = [
        f"| {side} | {key} ({r['n'] if key == 'batched' else 1} sequences) | {r[f'{side}_{key}']['tokens']} | "
        f"{r[f'{side}_{key}']['seconds']} | {r[f'{side}_{key}']['tok_per_s']} |"
        for key in ("batched", "single")
        for side in ("server", "embedded")
    ]
    return "\n".join(
        [
            f"model {r['model']} (server: {r['server_model']}), prompt {r['problem']}, {r['machine']}, "
            f"embedded engine at {r['threads']} threads, {r.get('rounds', 1)} alternating rounds summed",
            f"sampling {r['sampling']}",
            "",
            "| engine | run | generated tokens | seconds | tokens/s |",
            "|---|---|---:|---:|---:|",
            *rows,
            "",
            f"server / embedded tokens per second: {r['batched_ratio']}x with {r['n']} sequences, "
            f"{r['single_ratio']}x with one.",
        ]
    )


BUSY_LOOP = "while True:\n    pass\n"  # one core's worth of competing work
# a second evaluation on the same machine: another engine decoding 8 sequences without end,
# with the same thread setting as the engine measured (both at every core, or both auto)
ENGINE_LOOP = """import sys
from ttscale.core import SamplingParams
from ttscale.engines.llamacpp import LlamaCppGenerator
from ttscale.tasks.prompts import problem_prompt
model, threads = sys.argv[1], sys.argv[2]
gen = LlamaCppGenerator(model, n_threads=threads if threads == "auto" else int(threads), n_ctx=4096, n_seq_max=8)
print("ready", flush=True)
while True:
    gen.generate([problem_prompt("What is 12 * 34?")], 8, SamplingParams(max_tokens=64))
"""
NEIGHBOURS = ("loop", "engine")
NEIGHBOUR_TEXT = {"loop": "busy loop(s)", "engine": "second engine(s) with the same thread setting"}


def neighbour_command(kind: str, model: str, threads: int | str) -> list[str]:
    """The competing process: a busy Python loop, or a second engine set like the first."""
    if kind == "loop":
        return [sys.executable, "-c", BUSY_LOOP]
    if kind == "engine":
        return [sys.executable, "-c", ENGINE_LOOP, model, str(threads)]
    raise ValueError(f"a neighbour is one of {', '.join(NEIGHBOURS)}, not {kind!r}")


def start_neighbours(kind: str, model: str, threads: int | str, count: int) -> list[subprocess.Popen[str]]:
    """`count` competing processes, running once this returns (an engine has loaded its model)."""
    procs = [
        subprocess.Popen(neighbour_command(kind, model, threads), stdout=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    for p in procs:
        if kind == "engine" and p.stdout is not None and p.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the neighbour engine did not start (exit code {p.poll()})")
    time.sleep(1.5 if procs else 0.0)  # let an auto engine see them
    return procs


def bench_contention(
    model: str = DEFAULT_MODEL,
    n: int = 8,
    max_tokens: int = 64,
    seed: int = 0,
    neighbours: int = 1,
    make_generator: Callable[[int | str], Any] | None = None,
    neighbour: str = "loop",
) -> dict[str, Any]:
    """Decode speed alone and beside `neighbours` competing processes (each a Python loop
    taking one core, or a second engine with the same thread setting), at every fixed thread
    count and with --threads auto; the same samples each time."""
    neighbour_command(neighbour, model, 1)  # a bad kind fails before any model loads
    problem = load_dataset("math500").problems[0]
    params = recommended_sampling(model, max_tokens=max_tokens, seed=seed)
    prompt = problem_prompt(problem.question)
    cores = os.cpu_count() or 1
    rows = []
    for threads in [*range(1, cores + 1), "auto"]:
        gen = (make_generator or (lambda t: LlamaCppGenerator(model, n_threads=t, n_ctx=4096, n_seq_max=n)))(threads)
        gen.generate([prompt], 1, params)  # warm the prompt cache
        row: dict[str, Any] = {"threads": threads}
        for setting in ("alone", "busy"):
            procs = start_neighbours(neighbour, model, threads, neighbours if setting == "busy" else 0)
            try:
                gen.decodes_by_threads = {}
                t0 = time.perf_counter()
                out = gen.generate([prompt], n, params)
                seconds = time.perf_counter() - t0
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
            row[setting] = {
                "tok_per_s": round(out.compute.generated_tokens / seconds, 1),
                "decodes_by_threads": dict(gen.decodes_by_threads),
                "tokens": [c.token_ids for c in out.completions[0]],
            }
        row["slowdown"] = round(row["alone"]["tok_per_s"] / row["busy"]["tok_per_s"], 2)
        rows.append(row)
        if hasattr(gen, "close"):
            gen.close()
    best_alone = max(r["alone"]["tok_per_s"] for r in rows)
    same = all(r[s]["tokens"] == rows[0]["alone"]["tokens"] for r in rows for s in ("alone", "busy"))
    for r in rows:
        r["busy_vs_best_alone"] = round(best_alone / r["busy"]["tok_per_s"], 2)
        for setting in ("alone", "busy"):
            del r[setting]["tokens"]
    return {
        "model": model,
        "n": n,
        "max_tokens": max_tokens,
        "sampling": params.to_dict(),
        "machine": f"{platform.machine()}, {cores} cores",
        "neighbours": neighbours,
        "neighbour": neighbour,
        # llama.cpp's CPU threads meet at OpenMP barriers: how long a waiting thread spins
        "openmp_wait": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")},
        "rows": rows,
        "same_samples_everywhere": same,
    }


def format_contention(r: dict[str, Any]) -> str:
    lines = [
        f"{r['model']}, {r['n']} samples x {r['max_tokens']} tokens, {r['machine']}, beside {r['neighbours']} "
        f"{NEIGHBOUR_TEXT[r.get('neighbour', 'loop')]}; the same samples at every thread count: "
        f"{'yes' if r['same_samples_everywhere'] else 'NO'}; OpenMP wait: "
        f"{', '.join(f'{k}={v}' for k, v in r.get('openmp_wait', {}).items() if v) or 'the default'}",
        "",
        "| threads | alone tok/s | beside busy tok/s | slowdown | busy vs the best alone | decodes by threads (busy) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in r["rows"]:
        lines.append(
            f"| {row['threads']} | {row['alone']['tok_per_s']} | {row['busy']['tok_per_s']} | {row['slowdown']}x | "
            f"{row['busy_vs_best_alone']}x | {row['busy']['decodes_by_threads']} |"
        )
    return "\n".join(lines)


def format_engine(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"model {r['model']} ({r['model_file']}), prompt {r['problem']}, {r['machine']}, {r['threads']} threads",
            f"sampling {r['sampling']}",
            "",
            "| engine | sequences | generated tokens | seconds | tokens/s |",
            "|---|---:|---:|---:|---:|",
            f"| plain `Llama.create_completion` loop | {r['n']} one by one | {r['plain_loop']['tokens']} | "
            f"{r['plain_loop']['seconds']} | {r['plain_loop']['tok_per_s']} |",
            f"| ttscale batched | {r['n']} in one batch | {r['ttscale_batched']['tokens']} | "
            f"{r['ttscale_batched']['seconds']} | {r['ttscale_batched']['tok_per_s']} |",
            f"| ttscale single | 1 | {r['ttscale_single']['tokens']} | {r['ttscale_single']['seconds']} | "
            f"{r['ttscale_single']['tok_per_s']} |",
            "",
            f"speedup of batched over the plain loop: {r['speedup']}x; in the batched run llama_decode took "
            f"{100 * r['ttscale_batched']['decode_share']:.0f}% of the time, sampling + log-probabilities "
            f"{100 * r['ttscale_batched']['sampling_share']:.0f}%.",
        ]
    )


def distinct_tokens(sequences: list[list[int]]) -> int:
    """Nodes of the token trie over all sequences: what a perfect prefix cache would hold."""
    root: dict[int, dict] = {}
    count = 0
    for seq in sequences:
        node = root
        for tok in seq:
            nxt = node.get(tok)
            if nxt is None:
                nxt = node[tok] = {}
                count += 1
            node = nxt
    return count


SEARCH_BENCH_STRATEGIES = SEARCHES


def bench_search(
    model: str = DEFAULT_MODEL,
    problems: int = 3,
    n: int = 8,
    beam_width: int = 4,
    max_tokens: int = 512,
    step_tokens: int = 128,
    seed: int = 0,
    strategy: str = "beam_search",
    server: Any = None,
) -> dict[str, Any]:
    """A tree search (beam search, DVTS or particle filtering) on the first GSM8K problems with
    the model-free logprob verifier, so every prompt token counted is the policy's. Compares
    the prompt tokens the engine computed with what re-sending every prefix at every step would
    compute, and with the distinct tokens of the search tree. Through a `server` (a remote
    `Generator`), its usage says what its prefix cache served; the prompts it was sent and
    the tree's distinct tokens are the embedded engine's to count (None here)."""
    if strategy not in SEARCH_BENCH_STRATEGIES:
        raise ValueError(f"bench search runs one of {', '.join(SEARCH_BENCH_STRATEGIES)}, not {strategy!r}")
    width = {} if strategy == "particle_filter" else {"beam_width": beam_width}
    gen = server or LlamaCppGenerator(model)
    rows: list[dict[str, Any]] = []
    for problem in load_dataset("gsm8k").problems[:problems]:
        if server is None:
            gen.token_log = []
        spec = RunSpec(recommended_sampling(model, max_tokens=max_tokens, seed=seed), step_tokens=step_tokens)
        r = run_strategy(strategy, problem, gen, LogProbScorer(), n, spec, width)
        log = None if server else gen.token_log
        sent = r.compute.prompt_tokens + r.compute.cached_prompt_tokens
        rows.append(
            {
                "problem": problem.id,
                "prompts": len(log) if log is not None else None,
                "computed_prompt_tokens": r.compute.prompt_tokens,
                "cached_prompt_tokens": r.compute.cached_prompt_tokens,
                "generated_tokens": r.compute.generated_tokens,
                "reprefill_tokens": sum(len(p) for p, _ in log) if log is not None else sent,
                "distinct_tree_tokens": distinct_tokens([p + c for p, outs in log for c in outs]) if log else None,
                "seconds": round(r.compute.wall_time, 1),
            }
        )
    if server is None:
        gen.token_log = None
    total = {k: None if rows[0][k] is None else sum(r[k] for r in rows) for k in rows[0] if k != "problem"}
    total["seconds"] = round(float(total["seconds"] or 0.0), 1)
    distinct = total["distinct_tree_tokens"]
    computed, sent = int(total["computed_prompt_tokens"] or 0), int(total["reprefill_tokens"] or 0)
    return {
        "model": gen.name,
        "engine": "server" if server else "embedded",
        "strategy": strategy,
        "n": n,
        "beam_width": beam_width if width else None,
        "max_tokens": max_tokens,
        "step_tokens": step_tokens,
        "seed": seed,
        "rows": rows,
        "total": total,
        "computed_over_distinct": None if distinct is None else round(computed / distinct, 3),
        "reprefill_over_computed": round(sent / max(1, computed), 1),
    }


def format_search(r: dict[str, Any]) -> str:
    lines = [
        f"{r.get('strategy', 'beam_search')}, model {r['model']}, N={r['n']}, beam width {r['beam_width']}, "
        f"max_tokens {r['max_tokens']}, "
        f"step_tokens {r['step_tokens']}, seed {r['seed']}, verifier logprob, first {len(r['rows'])} GSM8K problems",
        "",
        "| problem | prompts sent | prompt tokens computed | served from cache | re-prefill would compute "
        "| distinct tree tokens | generated | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    keys = ("prompts", "computed_prompt_tokens", "cached_prompt_tokens", "reprefill_tokens", "distinct_tree_tokens")
    for row in [*r["rows"], {"problem": "total", **r["total"]}]:
        cells = ["–" if row[k] is None else str(row[k]) for k in (*keys, "generated_tokens", "seconds")]
        lines.append(f"| {row['problem']} | " + " | ".join(cells) + " |")
    over_distinct = r["computed_over_distinct"]
    lines += [
        "",
        f"computed prompt tokens / distinct tree tokens = "
        f"{'not countable through a server' if over_distinct is None else over_distinct} (target <= 1.2); "
        f"re-prefill / computed = {r['reprefill_over_computed']}x (target >= 5x)",
    ]
    return "\n".join(lines)


PROBE_BENCH_LAYERS = (12, -4, -3, -2, -1)  # a middle layer and the last four (#25)


def bench_probe(
    model: str = DEFAULT_MODEL,
    probe_path: str | None = None,
    problems: int = 2,
    n: int = 16,
    max_tokens: int = 256,
    seed: int = 0,
    layers: Sequence[int] | None = None,
) -> dict[str, Any]:
    """What the value probe costs: sampling with hidden states off, on (the final state at
    step ends), and with `layers` tapped as well (the same prompts, seeds and limits, the
    engines alternating so machine noise hits all), the probe's own time per scored step,
    and replaying stored text for its states. Every engine must sample the same tokens."""
    params = recommended_sampling(model, max_tokens=max_tokens, seed=seed)
    engines = {
        "off": LlamaCppGenerator(model),
        "on": LlamaCppGenerator(model, hidden_states=True),
        "layers": LlamaCppGenerator(model, hidden_states=True, layers=layers or PROBE_BENCH_LAYERS),
    }
    with_states = engines["on"]
    scorer = ProbeScorer.for_generator(with_states, probe_path)
    runs = {label: [0, 0.0] for label in engines}
    score_s = replay_s = 0.0
    steps = replay_tokens = 0
    same = True
    for problem in load_dataset("gsm8k").problems[:problems]:
        prompt = problem_prompt(problem.question)
        sampled = {}
        for label, gen in engines.items():
            gen.reset()
            t0 = time.perf_counter()
            sampled[label] = gen.generate([prompt], n, params)
            runs[label][0] += sampled[label].compute.generated_tokens
            runs[label][1] += time.perf_counter() - t0
        tokens = [[c.token_ids for c in g.completions[0]] for g in sampled.values()]
        same = same and all(t == tokens[0] for t in tokens)
        out = sampled["on"]
        candidates = [from_completion(c) for c in out.completions[0]]
        t0 = time.perf_counter()
        scorer.score(problem, candidates)
        score_s += time.perf_counter() - t0
        steps += sum(len(c.steps) for c in candidates)
        stored = [replace(c, steps=[replace(s, hidden=None) for s in c.steps]) for c in candidates]
        t0 = time.perf_counter()
        _, spent = scorer.score(problem, stored)
        replay_s += time.perf_counter() - t0
        replay_tokens += spent.verifier_tokens
    tps = {label: tokens / seconds for label, (tokens, seconds) in runs.items()}
    off_tps, on_tps = tps["off"], tps["on"]
    return {
        "model": with_states.name,
        "probe": scorer.probe.meta,
        "problems": problems,
        "n": n,
        "max_tokens": max_tokens,
        "seed": seed,
        "layers": list(engines["layers"].layers or ()),
        "sampling_tok_per_s": {
            "hidden_states_off": round(off_tps, 1),
            "hidden_states_on": round(on_tps, 1),
            "layers_tapped": round(tps["layers"], 1),
        },
        "hidden_state_overhead": round(off_tps / on_tps - 1, 3),
        "layer_tap_overhead": round(off_tps / tps["layers"] - 1, 3),
        "same_samples_everywhere": same,
        "probe_ms_per_step": round(1000 * score_s / max(1, steps), 4),
        "generation_ms_per_step": round(1000 * runs["on"][1] / max(1, steps), 1),
        "scored_steps": steps,
        "replay_tok_per_s": round(replay_tokens / replay_s, 1) if replay_s else None,
    }


def format_probe(r: dict[str, Any]) -> str:
    s = r["sampling_tok_per_s"]
    return "\n".join(
        [
            f"value probe cost, model {r['model']}, first {r['problems']} GSM8K problems, N={r['n']}, "
            f"max_tokens {r['max_tokens']}, seed {r['seed']}",
            "",
            "| what | figure |",
            "|---|---:|",
            f"| sampling, hidden states off (tokens/s) | {s['hidden_states_off']} |",
            f"| sampling, hidden states on (tokens/s) | {s['hidden_states_on']} |",
            f"| slowdown from capturing hidden states | {100 * r['hidden_state_overhead']:.1f}% |",
            f"| sampling, layers {r['layers']} tapped as well (tokens/s) | {s['layers_tapped']} |",
            f"| slowdown from tapping those layers | {100 * r['layer_tap_overhead']:.1f}% |",
            f"| the same samples from all three engines | {'yes' if r['same_samples_everywhere'] else 'NO'} |",
            f"| probe time per scored step (ms) | {r['probe_ms_per_step']} |",
            f"| generation time per step (ms) | {r['generation_ms_per_step']} |",
            f"| replaying stored text for its states (tokens/s) | {r['replay_tok_per_s']} |",
        ]
    )


def bench_reproduce(
    run_dir: Path,
    records: int = 2,
    match: str = "",
    threads: int | None = None,
    make_generator: Callable[[bool, int | None], Any] | None = None,
) -> dict[str, Any]:
    """Re-run stored records of an eval run (pools or tree searches) with this code on this
    machine, and compare them token for token with what the run stored: the seed and settings
    a record carries must give back its samples. make_generator(hidden_states, threads) builds
    the engine: the run's model on `threads` CPU threads, by default the count the record was
    sampled with (llama.cpp's arithmetic follows it), else every core. Round strategies
    (self-refinement, self-debugging) are not re-run here."""
    ident = json.loads((run_dir / "config.json").read_text())["identity"]
    latest = read_records(run_dir / "samples.jsonl")
    chosen = [r for key, r in latest.items() if match in key and not any(f"|{s}|" in key for s in ROUNDS)][:records]
    if not chosen:
        raise ValueError(f"no pool or tree-search record of {run_dir} matches {match!r}")
    if served := [r["id"] for r in chosen if (r.get("engine") or {}).get("kind") == "openai"]:
        raise ValueError(
            f"{len(served)} of the chosen records were sampled by a server ({served[0]}, ...): reproduce re-runs "
            "the embedded engine, and a server promises no token-for-token repeat (README, Run it on vLLM)"
        )
    problems = {p.id: p for p in load_dataset(ident["dataset"], *ident["fields"]).problems}
    base = next(
        (
            cfg
            for system in (SYSTEM_PROMPT, CODE_SYSTEM_PROMPT)  # rebuilt from the identity: only the prompt can differ
            if (
                cfg := EvalConfig(
                    dataset=ident["dataset"],
                    ns=(ident["n"],),
                    model=ident["model"],
                    seed=ident["seed"],
                    sampling=SamplingParams.from_dict(ident["sampling"]),
                    question_field=ident["fields"][0],
                    answer_field=ident["fields"][1],
                    system_prompt=system,
                )
            ).identity()
            == ident
        ),
        None,
    )
    if base is None:
        raise ValueError(f"{run_dir} was run with another system prompt than this version's")
    make = make_generator or (lambda hidden, t: LlamaCppGenerator(ident["model"], hidden_states=hidden, n_threads=t))
    engines = _Engines(make)
    rows = []
    for old in chosen:
        t0 = time.perf_counter()
        sampled_with = (old.get("engine") or {}).get("threads")
        count = threads if threads is not None else sampled_with
        new = _redo(old, problems[old["id"]], base, functools.partial(engines, threads=count))
        before, after = [c["text"] for c in old["candidates"]], [c["text"] for c in new["candidates"]]
        rows.append(
            {
                "key": RecordKey.of(old).format(),
                "identical_samples": sum(a == b for a, b in zip(before, after, strict=False)),
                "samples": len(before),
                "same_count": len(before) == len(after),
                "same_answer": old.get("answer") == new.get("answer"),
                "generated_tokens": [old["compute"]["generated_tokens"], new["compute"]["generated_tokens"]],
                "prompt_tokens": [old["compute"]["prompt_tokens"], new["compute"]["prompt_tokens"]],
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    exact = sum(r["same_count"] and r["identical_samples"] == r["samples"] for r in rows)
    return {"run": str(run_dir), "model": ident["model"], "records": rows, "reproduced_exactly": exact}


class _Engines:
    """Engines by (hidden states, thread count), each built when first needed and kept for the
    records that follow (one model load per kind)."""

    def __init__(self, make: Callable[[bool, int | None], Any]) -> None:
        self.make = make
        self.built: dict[tuple[bool, int | None], Any] = {}

    def __call__(self, hidden: bool, threads: int | None) -> Any:
        if (hidden, threads) not in self.built:
            self.built[(hidden, threads)] = self.make(hidden, threads)
        return self.built[(hidden, threads)]


def _redo(old: dict[str, Any], problem: Problem, base: EvalConfig, engines: Callable[[bool], Any]) -> dict[str, Any]:
    """A stored record drawn again the way it was drawn."""
    key = RecordKey.of(old)
    if key.kind == "pool":
        # A grown pool is drawn as it was: its first size, then each growth with the engine
        # (hidden states or not, which its batches follow) and the verifier it had.
        grown = old.get("grown", [])
        first = grown[0]["from"] if grown else len(old["candidates"])
        # a pool sampled beside the probe had hidden states on
        hidden = "probe" in old["candidates"][0]["scores"] and "probe" not in old.get("rescored", {})
        new = sample_problem(problem, engines(hidden), replace(base, ns=(first,)))
        for g in grown:
            cfg = replace(base, ns=(g["to"],), scorer=g.get("scorer", base.scorer))
            new = grow_pool(new, problem, engines(needs_hidden_states(cfg.scorer)), cfg)
        return dict(new)
    if not known_scorer(key.scorer):
        raise ValueError(f"{key.format()}: its verifier {key.scorer!r} is not available here")
    cfg = replace(base, scorer=key.scorer, aggregation=key.aggregation, search=key.options)
    return dict(search_problem(problem, engines(needs_hidden_states(key.scorer)), cfg, key.strategy, key.n)[0])


def format_reproduce(r: dict[str, Any]) -> str:
    lines = [
        f"{r['run']} ({r['model']}): {r['reproduced_exactly']} of {len(r['records'])} records reproduced token for "
        "token",
        "",
        "| record | identical samples | same pick | generated tokens (stored / now) | prompt tokens (stored / now) "
        "| s |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for row in r["records"]:
        g, p = row["generated_tokens"], row["prompt_tokens"]
        lines.append(
            f"| {row['key'][:60]} | {row['identical_samples']} of {row['samples']} | "
            f"{'yes' if row['same_answer'] else 'no'} | {g[0]} / {g[1]} | {p[0]} / {p[1]} | {row['seconds']} |"
        )
    return "\n".join(lines)
