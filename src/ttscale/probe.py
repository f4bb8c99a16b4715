"""A process reward model that costs nothing extra: a linear value probe on the policy's own
final hidden state at the end of each step, predicting whether the solution will end correct.

The engine returns those hidden states from the decode that samples the tokens (no second
forward pass). `collect` samples K solutions per training problem and stores, per step, the
hidden state and the step text; `soft_labels` labels a step Math-Shepherd style with the
fraction of sampled solutions through the same prefix that end correct; `fit` is an L2
logistic regression (Newton's method, numpy only) on standardised states. A saved probe is
tied to the sha256 of the model it was trained on; loading it for another model fails.
"""

from __future__ import annotations

import base64
import functools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .analysis import auroc
from .core import Candidate, Compute, Generator, Problem, SamplingParams
from .grading import is_correct
from .models import REGISTRY, sha256_file
from .prompts import SYSTEM_PROMPT, problem_prompt
from .steps import split_steps
from .strategies import sample_pool


class ProbeError(RuntimeError):
    pass


@dataclass
class Probe:
    weights: np.ndarray
    bias: float
    mean: np.ndarray
    scale: np.ndarray
    model_sha256: str
    meta: dict[str, Any] = field(default_factory=dict)

    def predict(self, states: np.ndarray) -> np.ndarray:
        z = ((np.asarray(states, dtype=np.float64) - self.mean) / self.scale) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(z, -40, 40)))

    def save(self, path: str | Path) -> None:
        np.savez_compressed(
            path,
            weights=self.weights.astype(np.float32),
            bias=np.array([self.bias]),
            mean=self.mean.astype(np.float32),
            scale=self.scale.astype(np.float32),
            model_sha256=np.array(self.model_sha256),
            meta=np.array(json.dumps(self.meta)),
        )

    @classmethod
    def load(cls, path: str | Path, model_sha256: str | None = None) -> Probe:
        try:
            with np.load(path) as z:
                probe = cls(
                    weights=z["weights"].astype(np.float64),
                    bias=float(z["bias"][0]),
                    mean=z["mean"].astype(np.float64),
                    scale=z["scale"].astype(np.float64),
                    model_sha256=str(z["model_sha256"]),
                    meta=json.loads(str(z["meta"])),
                )
        except (OSError, KeyError, ValueError) as e:
            raise ProbeError(f"cannot read probe {path}: {e}") from None
        if model_sha256 is not None and probe.model_sha256 != model_sha256:
            raise ProbeError(
                f"probe {path} was trained for the model with sha256 {probe.model_sha256[:12]}..., "
                f"not for this one ({model_sha256[:12]}...): train one with `ttscale train-probe`"
            )
        return probe


def probe_name(path: str | Path) -> str:
    """The name a probe's scores are stored under. A model's default probe gives "probe"; any
    other probe file is named by its content ("probe@" and 12 hex digits of its sha256), so
    scores of two different probes never mix in a run directory, whatever their paths.
    (A retrained default probe must therefore ship under a new file name.)"""
    try:
        digest = _file_digest(Path(path))
    except OSError as e:
        raise ProbeError(f"cannot read probe {path}: {e.strerror or e}") from None
    defaults = [p for p in map(packaged_probe, REGISTRY) if p is not None]
    return "probe" if digest in map(_file_digest, defaults) else f"probe@{digest[:12]}"


def _file_digest(path: Path) -> str:
    st = path.stat()  # run keys ask often: hash a file again only when it changed
    return _digest(str(path.resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=64)
def _digest(path: str, mtime_ns: int, size: int) -> str:
    return sha256_file(Path(path))


def packaged_probe(model_name: str) -> Path | None:
    p = resources.files("ttscale").joinpath("data").joinpath(f"probe-{model_name}.npz")
    return Path(str(p)) if p.is_file() else None


class ProbeScorer:
    """Per-step scores from the probe; needs an engine started with hidden_states=True."""

    def __init__(self, probe: Probe, generator: Any = None, system: str = SYSTEM_PROMPT, name: str = "probe") -> None:
        self.name = name
        self.probe = probe
        self.generator = generator  # to replay stored solutions that carry no hidden states
        self.system = system

    @classmethod
    def for_generator(cls, generator: Any, path: str | None = None, system: str | None = None) -> ProbeScorer:
        if not getattr(generator, "hidden_states", False):
            raise ProbeError("the probe reads hidden states: use the embedded engine with hidden_states=True")
        spec = getattr(generator, "spec", None)
        sha = spec.sha256 if spec is not None else None
        name = probe_name(path) if path else "probe"
        path = path or (str(packaged_probe(spec.name)) if spec is not None and packaged_probe(spec.name) else None)
        if path is None:
            raise ProbeError(f"no probe ships for {generator.name}: train one with `ttscale train-probe`")
        return cls(Probe.load(path, sha), generator, system or SYSTEM_PROMPT, name)

    def score(self, problem: Problem, candidates: Sequence[Candidate]) -> tuple[list[list[float]], Compute]:
        t0 = time.perf_counter()
        out = []
        n_steps = 0
        replayed = Compute()
        for c in candidates:
            if not c.steps:
                out.append([0.0])
                continue
            states = [s.hidden for s in c.steps]
            if any(h is None for h in states):
                states, spent = self._replay(problem, c)
                replayed = replayed + spent
            out.append([float(x) for x in self.probe.predict(np.stack(states))])
            n_steps += len(c.steps)
        d = len(self.probe.weights)
        own = Compute(wall_time=time.perf_counter() - t0, flops=4.0 * d * n_steps)
        # Reading stored text again is verifier work; live sampling gets the states for free.
        return out, own + Compute(verifier_tokens=replayed.prompt_tokens, flops=replayed.flops)

    def _replay(self, problem: Problem, candidate: Candidate) -> tuple[list[Any], Compute]:
        """Hidden states of a solution sampled without them (a stored run, another engine),
        from one prefill of its text through the policy model."""
        if self.generator is None or not hasattr(self.generator, "replay"):
            raise ProbeError(
                "a step has no hidden state and there is no engine to replay it on: sample with an "
                "embedded engine started with hidden_states=True"
            )
        completion, spent = self.generator.replay(
            problem_prompt(problem.question, self.system), candidate.text, candidate.finish_reason
        )
        steps = split_steps(completion)
        if len(steps) != len(candidate.steps) or any(s.hidden is None for s in steps):
            with_states = sum(s.hidden is not None for s in steps)
            raise ProbeError(
                f"replaying a solution of {len(candidate.steps)} steps gave {len(steps)} steps, {with_states} of them "
                "with a hidden state"
            )
        return [s.hidden for s in steps], spent


# --- data ------------------------------------------------------------------------------------


def _pack(vec: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vec, dtype=np.float16).tobytes()).decode()


def _unpack(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.float16).astype(np.float32)


def training_problems(paths: Sequence[str], per_file: int, levels: Sequence[int] | None = None) -> list[Problem]:
    """The first `per_file` problems of each training file; of the chosen difficulty levels in
    files whose rows have one (MATH train), so a probe can be fitted on the levels it will score."""
    from .datasets import load_dataset, report_errors
    from .evaluate import select_problems

    problems = []
    for path in paths:
        ds = load_dataset(path)
        report_errors(ds)
        has_levels = any("level" in p.meta for p in ds.problems)
        problems += select_problems(ds.problems, per_file, levels=levels if has_levels else None)
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
    from tqdm import tqdm

    from .evaluate import append_jsonl, problem_seed

    done = {r["id"] for r in read_records(out_path)}
    todo = [p for p in problems if p.id not in done and p.gold is not None]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    from .scorers import LogProbScorer

    for problem in tqdm(todo, desc="probe data", unit="problem", disable=not progress):
        sampled = replace(params, seed=problem_seed(params.seed, problem.id))
        candidates, _ = sample_pool(problem, generator, LogProbScorer(), k, sampled, system)
        rec = {
            "id": problem.id,
            "seed": sampled.seed,
            "sampling": sampled.to_dict(),
            "solutions": [
                {
                    "correct": is_correct(c.answer, problem.gold),
                    "steps": [s.text for s in c.steps],
                    "hidden": [_pack(s.hidden) if s.hidden is not None else None for s in c.steps],
                }
                for c in candidates
            ],
        }
        append_jsonl(out_path, rec)
    return len(todo)


def read_records(path: Path) -> list[dict[str, Any]]:
    from .evaluate import read_jsonl

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


# --- fitting and evaluation ---------------------------------------------------------------------


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
