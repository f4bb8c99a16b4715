"""`ttscale bench engine`: batched sampling against the plain one-at-a-time loop, in one run.

Both sides use the same model file, prompt, sampling settings and token limit on the same
machine at the same time, so the ratio is meaningful even where absolute speed is noisy.
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any

from .core import SamplingParams
from .datasets import load_dataset
from .engine import LlamaCppGenerator
from .models import DEFAULT_MODEL, get_spec
from .prompts import problem_prompt


def bench_engine(
    model: str = DEFAULT_MODEL, n: int = 16, max_tokens: int = 128, seed: int = 0, problem_index: int = 0
) -> dict[str, Any]:
    from llama_cpp import Llama

    problem = load_dataset("math500").problems[problem_index]
    sampling = get_spec(model).sampling if not model.endswith(".gguf") else SamplingParams()
    params = SamplingParams(
        temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k, max_tokens=max_tokens, seed=seed
    )
    gen = LlamaCppGenerator(model)
    prompt = problem_prompt(problem.question)
    text = gen.render(prompt)
    threads = os.cpu_count() or 1

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
