"""`ttscale collect-layers`: training data for a verifier that reads several layers (#25).

Solutions are sampled with the chosen layers tapped (`engines/layer_tap.py`). What they say
and how they did goes to `samples.jsonl`, small enough to commit: per solution its text, its
steps' texts and token counts, its answer and whether it is right. What the model's layers
held goes to `states/`, one .npz per problem, too large for git: per step, the states at
its last token and their mean over its tokens; per solution, the states at the tokens of
its final answer (the last \\boxed{}) and at its last token.

A problem is done when its line is in `samples.jsonl`; its states file is written first
(then renamed into place), so a kill loses at most the problem in flight. On a machine
where `states/` is missing (a fresh checkout), `rebuild` replays the stored texts for
their states: one prefill per solution, no sampling, the same pooling (a test checks that
replayed and sampled states agree).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..core import Completion, LayerStates, Problem, SamplingParams
from ..core.seeds import problem_seed
from ..strategies.candidates import from_completion
from ..tasks.domain import MATH, MathDomain
from ..tasks.grading import last_boxed_span
from ..tasks.prompts import SYSTEM_PROMPT
from ..util.jsonl import append_jsonl, read_jsonl


class LayerDataError(RuntimeError):
    pass


def answer_tokens(text: str, offsets: Sequence[int]) -> list[int]:
    """The tokens that hold the content of the last \\boxed{} of `text` (token k starts at
    byte offsets[k]); none if it boxes nothing."""
    span = last_boxed_span(text)
    if span is None:
        return []
    start, end = len(text[: span[0]].encode()), len(text[: span[1]].encode())
    ends = [*offsets[1:], len(text.encode())]
    return [k for k, (a, b) in enumerate(zip(offsets, ends, strict=True)) if a < end and b > start]


def solution_states(states: LayerStates, answer: Sequence[int]) -> dict[str, np.ndarray]:
    """One solution's arrays: its steps' (last, mean) states, and the mean and last of its
    answer tokens' states where the tail kept them (NaN where it did not: an answer far from
    the end, or none), and the state at its last token with one."""
    width = states.step_last.shape[1:]
    kept = [k - states.tail_start for k in answer if 0 <= k - states.tail_start < len(states.tail)]
    rows = states.tail[kept].astype(np.float32) if kept else np.full((1, *width), np.nan, np.float32)
    final = states.tail[-1] if len(states.tail) else np.full(width, np.nan, np.float16)
    return {
        "step_last": states.step_last,
        "step_mean": states.step_mean,
        "step_ends": np.asarray(states.step_ends, dtype=np.int32),
        "answer_mean": rows.mean(axis=0).astype(np.float16),
        "answer_last": rows[-1].astype(np.float16),
        "final": final.astype(np.float16),
    }


def stack_solutions(solutions: Sequence[dict[str, np.ndarray]], layers: Sequence[int]) -> dict[str, np.ndarray]:
    """One problem's arrays: steps of every solution in one array with the solution each
    belongs to (`step_solution`), and one row per solution for the rest."""
    per_step = ("step_last", "step_mean", "step_ends")
    out = {k: np.concatenate([s[k] for s in solutions]) for k in per_step}
    out["step_solution"] = np.concatenate([np.full(len(s["step_ends"]), i, np.int32) for i, s in enumerate(solutions)])
    for k in ("answer_mean", "answer_last", "final"):
        out[k] = np.stack([s[k] for s in solutions])
    out["layers"] = np.asarray(layers, dtype=np.int32)
    return out


def states_path(out_dir: Path, problem_id: str) -> Path:
    # ids hold slashes ("test/algebra/1.json"): the file is named by a digest of the id
    return out_dir / "states" / f"{hashlib.sha1(problem_id.encode()).hexdigest()[:16]}.npz"


def _write_states(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.stem + ".part.npz")
    np.savez(part, **arrays)  # type: ignore[arg-type]
    os.replace(part, path)


def _solution_record(completion: Completion, problem: Problem) -> dict[str, Any]:
    c = from_completion(completion, MATH)
    return {
        "text": completion.text,
        "finish_reason": completion.finish_reason,
        "answer": c.answer,
        "correct": MATH.is_correct(c.answer, problem.gold),
        "steps": [s.text for s in c.steps],
        "step_tokens": [s.n_tokens for s in c.steps],
        "answer_tokens": len(answer_tokens(completion.text, completion.token_offsets)),
    }


def _arrays(completions: Sequence[Completion], layers: Sequence[int]) -> dict[str, np.ndarray]:
    solutions = []
    for c in completions:
        if c.layer_states is None:
            raise LayerDataError("the engine returned no layer states: start it with layers")
        solutions.append(solution_states(c.layer_states, answer_tokens(c.text, c.token_offsets)))
    return stack_solutions(solutions, layers)


def collect_layers(
    problems: Sequence[Problem],
    generator: Any,
    k: int,
    params: SamplingParams,
    out_dir: Path,
    system: str = SYSTEM_PROMPT,
    progress: bool = True,
) -> int:
    """Sample k solutions per problem with `generator` (an engine with layers) and store
    them; resumes where the last run stopped. Returns the number of problems added."""
    layers = list(generator.layers or ())
    if not layers:
        raise LayerDataError("collect-layers needs an engine started with layers")
    samples = out_dir / "samples.jsonl"
    done = {r["id"] for r in read_jsonl(samples)}
    todo = [p for p in problems if p.id not in done and p.gold is not None]
    out_dir.mkdir(parents=True, exist_ok=True)
    for problem in tqdm(todo, desc="layer data", unit="problem", disable=not progress):
        sampled = replace(params, seed=problem_seed(params.seed, problem.id))
        generator.reset()  # the same seed gives the same samples whatever ran before
        gen = generator.generate([MathDomain(problem).prompt(system)], k, sampled)
        completions = gen.completions[0]
        _write_states(states_path(out_dir, problem.id), _arrays(completions, layers))
        append_jsonl(
            samples,
            {
                "id": problem.id,
                "question": problem.question,
                "gold": problem.gold,
                "seed": sampled.seed,
                "sampling": sampled.to_dict(),
                "model": generator.name,
                "layers": layers,
                "system_prompt_sha1": hashlib.sha1(system.encode()).hexdigest(),
                "compute": gen.compute.to_dict(),
                "solutions": [_solution_record(c, problem) for c in completions],
            },
        )
    return len(todo)


def rebuild(generator: Any, out_dir: Path, system: str = SYSTEM_PROMPT, progress: bool = True) -> int:
    """Write the states file of every stored problem that has none, by replaying its
    solutions' texts. Returns how many were rebuilt."""
    layers = list(generator.layers or ())
    records = read_jsonl(out_dir / "samples.jsonl")
    missing = [r for r in records if not states_path(out_dir, r["id"]).exists()]
    for rec in tqdm(missing, desc="replaying", unit="problem", disable=not progress):
        if rec.get("layers") != layers:
            stored = rec.get("layers")
            raise LayerDataError(f"{rec['id']} was collected with layers {stored}, this engine reads {layers}")
        prompt = MathDomain(Problem(rec["id"], rec["question"])).prompt(system)
        replayed = [generator.replay(prompt, s["text"], s["finish_reason"])[0] for s in rec["solutions"]]
        _write_states(states_path(out_dir, rec["id"]), _arrays(replayed, layers))
    return len(missing)


def summary(out_dir: Path) -> dict[str, Any]:
    """What has been collected: problems, solutions, right ones, problems with both right and
    wrong solutions (the ones that teach a ranking), tokens and seconds."""
    records = read_jsonl(out_dir / "samples.jsonl")
    solutions = [s for r in records for s in r["solutions"]]
    mixed = sum(0 < sum(s["correct"] for s in r["solutions"]) < len(r["solutions"]) for r in records)
    return {
        "problems": len(records),
        "solutions": len(solutions),
        "correct_share": round(float(np.mean([s["correct"] for s in solutions])), 3) if solutions else None,
        "problems_with_both": mixed,
        "generated_tokens": sum(r["compute"]["generated_tokens"] for r in records),
        "seconds": round(sum(r["compute"]["wall_time"] for r in records), 1),
        "with_states": sum(states_path(out_dir, r["id"]).exists() for r in records),
        "layers": records[0]["layers"] if records else None,
    }
