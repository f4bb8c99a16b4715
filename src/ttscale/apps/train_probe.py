"""`ttscale train-probe`: sample training solutions with their hidden states, label every
step, and fit the value probe (`verifiers.probe`).

`collect` samples K solutions per training problem and stores, per step, the hidden state and
the step text; `soft_labels` labels a step Math-Shepherd style with the fraction of sampled
solutions through the same prefix that end correct; `fit` is an L2 logistic regression
(Newton's method, numpy only) on standardised states.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..core import Generator, Problem, SamplingParams
from ..core.seeds import problem_seed
from ..strategies.pool import sample_pool
from ..strategies.spec import RunSpec
from ..tasks.datasets import interleave_by_subject, load_dataset, report_errors, select_problems
from ..tasks.domain import MATH
from ..tasks.prompts import SYSTEM_PROMPT
from ..util.jsonl import append_jsonl, read_jsonl
from ..util.stats import auroc
from ..verifiers.model_free import LogProbScorer
from ..verifiers.probe import Probe, ProbeError


def _pack(vec: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vec, dtype=np.float16).tobytes()).decode()


def _unpack(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.float16).astype(np.float32)


def training_problems(
    paths: Sequence[str], per_file: int, levels: Sequence[int] | None = None, by_subject: bool = False
) -> list[Problem]:
    """The first `per_file` problems of each training file; of the chosen difficulty levels in
    files whose rows have one (MATH train), so a probe can be fitted on the levels it will score.
    `by_subject` takes them in turn from each subject (`interleave_by_subject`) where rows have
    one: MATH train is sorted by subject, so its first 400 are all algebra."""
    problems = []
    for path in paths:
        ds = load_dataset(path)
        report_errors(ds)
        has_levels = any("level" in p.meta for p in ds.problems)
        pool = select_problems(ds.problems, None, levels=levels if has_levels else None)
        if by_subject:
            pool = interleave_by_subject(pool)
        problems += pool[:per_file]
    return problems


def collect(
    problems: Sequence[Problem],
    generator: Generator,
    k: int,
    params: SamplingParams,
    out_path: Path,
    system: str = SYSTEM_PROMPT,
    progress: bool = True,
) -> int:
    """Sample k solutions per problem and append one line per problem (steps, their hidden
    states as float16, final correctness). Resumes: problems already in the file are skipped,
    a line cut short by a kill is ignored. Returns the number of problems added."""
    done = {r["id"] for r in read_records(out_path)}
    todo = [p for p in problems if p.id not in done and p.gold is not None]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    for problem in tqdm(todo, desc="probe data", unit="problem", disable=not progress):
        sampled = replace(params, seed=problem_seed(params.seed, problem.id))
        candidates, _ = sample_pool(problem, generator, LogProbScorer(), k, RunSpec(sampled, system))
        rec = {
            "id": problem.id,
            "seed": sampled.seed,
            "sampling": sampled.to_dict(),
            "solutions": [
                {
                    "correct": MATH.is_correct(c.answer, problem.gold),
                    "steps": [s.text for s in c.steps],
                    "hidden": [_pack(s.hidden) if s.hidden is not None else None for s in c.steps],
                }
                for c in candidates
            ],
        }
        append_jsonl(out_path, rec)
    return len(todo)


def read_records(path: Path) -> list[dict[str, Any]]:
    return read_jsonl(path)


def soft_labels(solutions: Sequence[dict[str, Any]]) -> list[list[float]]:
    """For step j of a solution: the fraction of the problem's sampled solutions sharing its
    first j steps that end correct (for a step no other solution shares, its own outcome)."""
    outcomes: dict[tuple[str, ...], list[bool]] = {}
    for s in solutions:
        for j in range(1, len(s["steps"]) + 1):
            outcomes.setdefault(tuple(s["steps"][:j]), []).append(bool(s["correct"]))
    return [[float(np.mean(outcomes[tuple(s["steps"][:j])])) for j in range(1, len(s["steps"]) + 1)] for s in solutions]


def dataset(records: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(states, soft labels, problem index, is-last-step) over every step with a state."""
    xs, ys, groups, last = [], [], [], []
    for g, rec in enumerate(records):
        for sol, labels in zip(rec["solutions"], soft_labels(rec["solutions"]), strict=True):
            for j, (h, y) in enumerate(zip(sol["hidden"], labels, strict=True)):
                if h is None:
                    continue
                xs.append(_unpack(h))
                ys.append(y)
                groups.append(g)
                last.append(j == len(sol["hidden"]) - 1)
    if not xs:
        raise ProbeError("no steps with hidden states in the data")
    return np.stack(xs), np.array(ys), np.array(groups), np.array(last)


def fit(
    states: np.ndarray, labels: np.ndarray, l2: float = 1.0, iterations: int = 30
) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """L2-regularised logistic regression on standardised features, by Newton's method;
    labels may be soft (in [0, 1])."""
    mean = states.mean(axis=0)
    scale = states.std(axis=0) + 1e-6
    x = np.hstack([(states - mean) / scale, np.ones((len(states), 1))])
    w = np.zeros(x.shape[1])
    reg = np.full(x.shape[1], l2)
    reg[-1] = 0.0  # the bias is not shrunk
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -40, 40)))
        grad = x.T @ (p - labels) + reg * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-6:
            break
    return w[:-1], float(w[-1]), mean, scale


L2_GRID = (1.0, 10.0, 100.0, 1e3, 1e4, 1e5)


def train(
    records: Sequence[dict[str, Any]],
    model_sha256: str,
    val_fraction: float = 0.2,
    l2: float | None = None,
    seed: int = 0,
) -> Probe:
    """Fit on a random (1 - val_fraction) of the problems and measure on the rest (choosing
    the L2 strength there when none is given), then refit on all of them for the probe
    that ships. The validation split is by problem: steps of one problem are never on
    both sides."""
    states, labels, groups, last = dataset(records)
    rng = np.random.default_rng(seed)
    problems = np.unique(groups)
    val = set(rng.choice(problems, size=max(1, int(len(problems) * val_fraction)), replace=False).tolist())
    is_val = np.array([g in val for g in groups])
    outcome = labels[is_val] >= 0.5
    tried = {}
    for strength in L2_GRID if l2 is None else (l2,):
        held = Probe(*fit(states[~is_val], labels[~is_val], strength), model_sha256)
        pred = held.predict(states[is_val])
        tried[strength] = (auroc(pred[last[is_val]], outcome[last[is_val]]), auroc(pred, outcome))
    best = max(tried, key=lambda k: (np.nan_to_num(tried[k][0]), -k))
    meta = {
        "problems": len(problems),
        "steps": len(states),
        "solutions": int(last.sum()),
        "correct_share": float(np.mean(labels[last] >= 0.5)),
        "l2": best,
        "l2_tried": {str(k): v[0] for k, v in tried.items()},
        "seed": seed,
        "val_problems": len(val),
        "val_auroc_last_step": tried[best][0],
        "val_auroc_all_steps": tried[best][1],
    }
    w, b, mean, scale = fit(states, labels, best)
    return Probe(w, b, mean, scale, model_sha256, meta)
