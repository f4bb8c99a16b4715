"""`ttscale collect-layers`: training data for a verifier that reads several layers (#25).

Solutions are sampled with the chosen layers tapped (`engines/layer_tap.py`). What they say
and how they did goes to `samples.jsonl`, small enough to commit: per solution its text, its
steps' texts and token counts, its answer and whether it is right. What the model's layers
held goes to `states/`, one .npz per problem, too large for git: per step, the states at
its last token and their mean over its tokens; per solution, the states at the tokens of
its final answer (the last \\boxed{}) and at its last token.

What the exact-answer probe reads goes to `answers/` as well, small enough to commit (about
70 KB a problem): per solution the mean state over its answer tokens at every layer, in
float16 (its last token's where it boxes no answer). A fresh checkout can therefore train
the answer-token reader without replaying anything; the other readers need `states/`.

A judge probe's data is another reading of the same stored solutions (`read_judgements`):
a model, the policy or a larger one, asked as the outcome judge asks whether each solution
is right; its P(Yes) and its states where it answers go to `judge-MODEL/` (committed).

A problem is done when its line is in `samples.jsonl`; its states files are written first
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

from ..core import Completion, Problem, SamplingParams
from ..core.seeds import problem_seed
from ..strategies.candidates import from_completion
from ..tasks.domain import MATH, MathDomain
from ..tasks.layer_features import answer_tokens, completion_features
from ..tasks.prompts import SYSTEM_PROMPT
from ..util.jsonl import append_jsonl, read_jsonl
from ..verifiers.judge import outcome_prompt, read_judgement


class LayerDataError(RuntimeError):
    pass


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


def states_path(out_dir: Path, problem_id: str, kind: str = "states") -> Path:
    # ids hold slashes ("test/algebra/1.json"): the file is named by a digest of the id
    return out_dir / kind / f"{hashlib.sha1(problem_id.encode()).hexdigest()[:16]}.npz"


def answers_path(out_dir: Path, problem_id: str) -> Path:
    return states_path(out_dir, problem_id, "answers")


def judge_path(out_dir: Path, problem_id: str, model: str) -> Path:
    return states_path(out_dir, problem_id, f"judge-{model}")


def answer_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The committed part of one problem's states: each solution's mean answer-token state at
    every layer, (solutions, layers, width) float16, or its last token's where it has no
    answer tokens (what the answer reader reads then, too: `layer_reward.solution_vectors`)."""
    answer = arrays["answer_mean"].copy()
    missing = np.isnan(answer.astype(np.float32)).any(axis=tuple(range(1, answer.ndim)))
    answer[missing] = arrays["final"][missing]
    return {"answer_mean": answer, "has_answer": ~missing, "layers": arrays["layers"]}


def _write(path: Path, arrays: dict[str, np.ndarray], compress: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.stem + ".part.npz")
    (np.savez_compressed if compress else np.savez)(part, **arrays)  # type: ignore[arg-type]
    os.replace(part, path)


def _write_states(out_dir: Path, problem_id: str, arrays: dict[str, np.ndarray]) -> None:
    _write(states_path(out_dir, problem_id), arrays)
    _write(answers_path(out_dir, problem_id), answer_arrays(arrays), compress=True)


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
        features = completion_features(c)
        if features is None:
            raise LayerDataError("the engine returned no layer states: start it with layers")
        solutions.append(features)
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
        _write_states(out_dir, problem.id, _arrays(completions, layers))
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


def write_answers(out_dir: Path) -> int:
    """The committed answer states of every problem whose states are here but whose answers
    file is not (a collection made before they were kept). Returns how many were written."""
    written = 0
    for rec in read_jsonl(out_dir / "samples.jsonl"):
        states, answers = states_path(out_dir, rec["id"]), answers_path(out_dir, rec["id"])
        if states.exists() and not answers.exists():
            with np.load(states) as z:
                _write(answers, answer_arrays({k: z[k] for k in ("answer_mean", "final", "layers")}), compress=True)
            written += 1
    return written


def rebuild(generator: Any, out_dir: Path, system: str = SYSTEM_PROMPT, progress: bool = True) -> int:
    """Write the states file of every stored problem that has none, by replaying its
    solutions' texts. Returns how many were rebuilt. The engine may run another model than
    the one that sampled them (in a copy of the collection): then the states are that
    reader's, in the layers it reads (each states file records its layers)."""
    layers = list(generator.layers or ())
    records = read_jsonl(out_dir / "samples.jsonl")
    write_answers(out_dir)
    missing = [r for r in records if not states_path(out_dir, r["id"]).exists()]
    # problems with both right and wrong solutions first: they are what teaches a ranking,
    # so a rebuild cut short still leaves the most useful states
    missing.sort(key=lambda r: not _has_both(r))
    for rec in tqdm(missing, desc="replaying", unit="problem", disable=not progress):
        if rec.get("model") == generator.name and rec.get("layers") != layers:
            stored = rec.get("layers")
            raise LayerDataError(f"{rec['id']} was collected with layers {stored}, this engine reads {layers}")
        prompt = MathDomain(Problem(rec["id"], rec["question"])).prompt(system)
        replayed = [generator.replay(prompt, s["text"], s["finish_reason"])[0] for s in rec["solutions"]]
        _write_states(out_dir, rec["id"], _arrays(replayed, layers))
    return len(missing)


def read_judgements(engine: Any, out_dir: Path, progress: bool = True) -> int:
    """Every stored solution read by `engine` (an engine with layers) as the outcome judge
    reads it, for a judge probe (`layer_reward`, the "judge" reader): per problem, in
    `judge-MODEL/`, the judge's P(Yes) and its layers' states where it answers, float16
    (about 100 KB a problem for a 1,536-wide model at 4 layers: committed), and what the
    reading cost. Resumes; problems with both right and wrong solutions first, as `rebuild`."""
    layers = list(engine.layers or ())
    if not layers:
        raise LayerDataError("a judge probe's data is read from layers: start the engine with layers")
    records = read_jsonl(out_dir / "samples.jsonl")
    missing = [r for r in records if not judge_path(out_dir, r["id"], engine.name).exists()]
    missing.sort(key=lambda r: not _has_both(r))
    for rec in tqdm(missing, desc="judging", unit="problem", disable=not progress):
        prompts = [outcome_prompt(rec["question"], s["text"]) for s in rec["solutions"]]
        yes, states, spent = read_judgement(engine, prompts)
        arrays: dict[str, np.ndarray] = {
            "judge": states.astype(np.float16),
            "p_yes": np.asarray(yes, dtype=np.float64),
            "layers": np.asarray(layers, dtype=np.int32),
            "verifier_tokens": np.asarray(spent.verifier_tokens),
            "wall_time": np.asarray(spent.wall_time),
        }
        _write(judge_path(out_dir, rec["id"], engine.name), arrays, compress=True)
    return len(missing)


def _judges(out_dir: Path) -> list[str]:
    """The models whose judgements this collection holds (`read_judgements`)."""
    return [d.name.removeprefix("judge-") for d in sorted(out_dir.glob("judge-*")) if d.is_dir()]


def _has_both(record: dict[str, Any]) -> bool:
    right = sum(s["correct"] for s in record["solutions"])
    return 0 < right < len(record["solutions"])


def summary(out_dir: Path) -> dict[str, Any]:
    """What has been collected: problems, solutions, right ones, problems with both right and
    wrong solutions (the ones that teach a ranking), tokens and seconds."""
    records = read_jsonl(out_dir / "samples.jsonl")
    solutions = [s for r in records for s in r["solutions"]]
    mixed = sum(map(_has_both, records))
    return {
        "problems": len(records),
        "solutions": len(solutions),
        "correct_share": round(float(np.mean([s["correct"] for s in solutions])), 3) if solutions else None,
        "problems_with_both": mixed,
        "generated_tokens": sum(r["compute"]["generated_tokens"] for r in records),
        "seconds": round(sum(r["compute"]["wall_time"] for r in records), 1),
        "with_states": sum(states_path(out_dir, r["id"]).exists() for r in records),
        "with_answer_states": sum(answers_path(out_dir, r["id"]).exists() for r in records),
        "with_judge_states": {
            model: sum(judge_path(out_dir, r["id"], model).exists() for r in records) for model in _judges(out_dir)
        },
        "layers": records[0]["layers"] if records else None,
    }
