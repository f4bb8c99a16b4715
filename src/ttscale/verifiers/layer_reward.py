"""A reward read off several layers of the policy (#25): whether a solution will end right,
from the residual stream at chosen layers, pooled as the engine decoded it.

Three readers, all linear on standardised (optionally PCA-projected) states:
- **token probes**: one vector per solution, the state at its last token ("final") or the
  mean over the tokens of its final answer ("answer": Orgad et al. 2025 read the exact
  answer tokens), several layers side by side;
- **a judge probe** ("judge"): the reading model is asked, as the outcome judge asks it,
  whether the solution is right, and the probe reads its states at the token where it
  answers; one prefill gives both the judge's P(Yes) and the probe's input (#20: the larger
  model as a judge and through a probe, for the price of one reading);
- **gated step rewards** in the spirit of SWIFT (arXiv 2505.12225): every step s gets a
  reward r_s = w.x_s and a gate g_s = sigmoid(u.x_s + c); the solution's logit is
  sum_s g_s r_s / sum_s g_s + b. SWIFT gates every token; the engine keeps per-step pooled
  states (bounded memory), so the gate weighs steps (x_s is the step's last or mean state).

Inference is numpy only; training is `apps/train_reward.py`. A saved reward is tied to the
sha256 of the model whose layers it read.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..core import Candidate, Compute, Problem
from ..engines.models import REGISTRY
from ..tasks.domain import MathDomain
from ..tasks.layer_features import completion_features
from ..tasks.prompts import SYSTEM_PROMPT
from .file_names import content_name
from .judge import outcome_prompt, read_judgement
from .readers import model_with_sha256, reader_engine

KINDS = ("final", "answer", "gated_last", "gated_mean", "judge")
# the readers of the states a model's own sampling (or its replay) leaves; "judge" reads the
# reading model's states where it judges the solution (`judge.read_judgement`) instead
SOLUTION_KINDS = KINDS[:4]


class LayerRewardError(RuntimeError):
    pass


def layer_index(available: Sequence[int], wanted: Sequence[int]) -> list[int]:
    """Positions of the wanted layers among those the states hold."""
    missing = [layer for layer in wanted if layer not in available]
    if missing:
        raise LayerRewardError(f"the states hold layers {list(available)}, the reward reads {missing} too")
    return [list(available).index(layer) for layer in wanted]


def solution_vectors(kind: str, features: Mapping[str, np.ndarray], rows: Sequence[int]) -> np.ndarray:
    """What a reader of `kind` reads of one solution: (1, D) for the token probes, (steps, D)
    for the gated readers; D is the chosen layers' states side by side. A solution whose
    answer tokens were not kept (no box) reads its last token instead."""
    if kind == "final":
        vec = features["final"][rows]
    elif kind == "judge":
        vec = features["judge"][rows]
    elif kind == "answer":
        vec = features["answer_mean"][rows]
        if np.isnan(vec.astype(np.float32)).any():
            vec = features["final"][rows]
    elif kind in ("gated_last", "gated_mean"):
        steps = features["step_last" if kind == "gated_last" else "step_mean"][:, rows]
        if len(steps) == 0:  # no step with a state: the last token stands for the whole
            return features["final"][rows].reshape(1, -1).astype(np.float64)
        return steps.reshape(len(steps), -1).astype(np.float64)
    else:
        raise LayerRewardError(f"unknown reader {kind!r}: one of {', '.join(KINDS)}")
    return vec.reshape(1, -1).astype(np.float64)


@dataclass
class LayerReward:
    kind: str
    layers: tuple[int, ...]  # the model's layer numbers it reads, in this order
    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)
    projection: np.ndarray | None  # (D, k): PCA directions; None reads the D units themselves
    weights: np.ndarray  # (k,)
    bias: float
    gate: np.ndarray | None = None  # (k,) for the gated readers
    gate_bias: float = 0.0
    model_sha256: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def logit(self, vectors: np.ndarray) -> float:
        z = (vectors - self.mean) / self.scale
        if self.projection is not None:
            z = z @ self.projection
        r = z @ self.weights
        if self.gate is None:
            return float(r[0] + self.bias)
        g = 1.0 / (1.0 + np.exp(-np.clip(z @ self.gate + self.gate_bias, -40, 40)))
        return float((g * r).sum() / (g.sum() + 1e-9) + self.bias)

    def predict(self, features: Mapping[str, np.ndarray], available: Sequence[int]) -> float:
        """P(right) of one solution from its `layer_features.solution_states`."""
        z = self.logit(solution_vectors(self.kind, features, layer_index(available, self.layers)))
        return float(1.0 / (1.0 + np.exp(-np.clip(z, -40, 40))))

    def flops(self, steps: int) -> float:
        d, k = self.projection.shape if self.projection is not None else (len(self.mean), len(self.mean))
        per_vector = 2.0 * d * (k if self.projection is not None else 1) + 4.0 * k
        return per_vector * (max(steps, 1) if self.gate is not None else 1)

    def save(self, path: str | Path) -> None:
        arrays = {
            "kind": np.array(self.kind),
            "layers": np.asarray(self.layers, dtype=np.int32),
            "mean": self.mean.astype(np.float32),
            "scale": self.scale.astype(np.float32),
            "weights": self.weights.astype(np.float32),
            "bias": np.array([self.bias, self.gate_bias]),
            "model_sha256": np.array(self.model_sha256),
            "meta": np.array(json.dumps(self.meta)),
        }
        if self.gate is not None:
            arrays["gate"] = self.gate.astype(np.float32)
        if self.projection is not None:
            arrays["projection"] = self.projection.astype(np.float32)
        np.savez_compressed(path, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: str | Path, model_sha256: str | None = None) -> LayerReward:
        try:
            with np.load(path) as z:
                reward = cls(
                    kind=str(z["kind"]),
                    layers=tuple(int(x) for x in z["layers"]),
                    mean=z["mean"].astype(np.float64),
                    scale=z["scale"].astype(np.float64),
                    projection=z["projection"].astype(np.float64) if "projection" in z else None,
                    weights=z["weights"].astype(np.float64),
                    bias=float(z["bias"][0]),
                    gate=z["gate"].astype(np.float64) if "gate" in z else None,
                    gate_bias=float(z["bias"][1]),
                    model_sha256=str(z["model_sha256"]),
                    meta=json.loads(str(z["meta"])),
                )
        except (OSError, KeyError, ValueError, IndexError) as e:
            raise LayerRewardError(f"cannot read layer reward {path}: {e}") from None
        if reward.kind not in KINDS:
            raise LayerRewardError(f"layer reward {path} has an unknown reader {reward.kind!r}")
        if model_sha256 is not None and reward.model_sha256 != model_sha256:
            raise LayerRewardError(
                f"layer reward {path} was trained on the layers of the model with sha256 "
                f"{reward.model_sha256[:12]}..., not this one ({model_sha256[:12]}...)"
            )
        return reward


@functools.cache  # package data does not change while ttscale runs
def packaged_reward(model_name: str) -> Path | None:
    """The `layers` default shipped for a model, if any. It must read that model's own states
    of its own solutions: its scores are stored under the plain name "layers", which a run of
    that policy takes to mean exactly this, so a judge probe or a reward on another model's
    layers shipped here would be a packaging error, refused rather than misnamed."""
    p = resources.files("ttscale").joinpath("data").joinpath(f"layers-{model_name}.npz")
    return checked_default(Path(str(p)), model_name) if p.is_file() else None


def checked_default(path: Path, model_name: str) -> Path:
    """`path`, if it may ship as `model_name`'s default (see `packaged_reward`)."""
    reward = LayerReward.load(path, REGISTRY[model_name].sha256 if model_name in REGISTRY else None)
    if reward.kind not in SOLUTION_KINDS:
        raise LayerRewardError(f"{path} is a {reward.kind!r} reader: ship it under another name than layers-MODEL")
    return path


def reward_path(model_name: str, path: str | None) -> str:
    if path:
        return path
    shipped = packaged_reward(model_name)
    if shipped is None:
        raise LayerRewardError(f"no layer reward ships for {model_name}: train one with `ttscale train-reward`")
    return str(shipped)


def reward_name(path: str | Path) -> str:
    """The name a reward's scores are stored under: "layers" for a shipped reward, otherwise
    named by its content (`file_names.content_name`), so two files of one stem never mix."""
    try:
        return content_name("layers", path, map(packaged_reward, REGISTRY))
    except OSError as e:
        raise LayerRewardError(f"cannot read layer reward {path}: {e.strerror or e}") from None


def reward_layers(model_name: str, path: str | None = None) -> tuple[int, ...]:
    """The layers the policy engine must read for a reward, so it can be started with them:
    none when the reward reads another model's layers (that model reads them)."""
    reward = LayerReward.load(reward_path(model_name, path))
    spec = REGISTRY.get(model_name)
    return reward.layers if spec is None or reward.model_sha256 == spec.sha256 else ()


class LayerRewardScorer:
    """One score per candidate (a list of one: the reward judges the whole solution), from the
    layer states its sampling pass kept (`Candidate.layer_features`) or, for a stored text,
    from one replay through an engine that reads the reward's layers (charged as verifier
    tokens, as the probe's replay is). A reward trained on another model's layers (a larger
    reader of the policy's solutions) replays every solution through that model."""

    def __init__(
        self,
        reward: LayerReward,
        generator: Any = None,
        system: str = SYSTEM_PROMPT,
        name: str = "layers",
        live: bool = True,
    ):
        self.reward = reward
        self.generator = generator
        self.system = system
        self.name = name
        # whether a sampled candidate's own states are this reward's input; a judge probe's
        # never are: its input is the judge's reading of the finished text
        self.live = live and reward.kind != "judge"
        # then a stored text's replay is an artefact of rescoring, which live sampling never pays
        self.free_when_live = self.live
        # what a judge probe's reading gives besides: the judge's own P(Yes), by its scorer's name
        self.side_scores: dict[str, list[list[float]]] = {}
        if generator is not None:
            layer_index(getattr(generator, "layers", None) or (), reward.layers)

    @classmethod
    def for_generator(cls, generator: Any, path: str | None = None, system: str | None = None) -> LayerRewardScorer:
        spec = getattr(generator, "spec", None)
        if spec is None:
            raise LayerRewardError("the layer reward reads the policy's layers: use the embedded engine")
        path = reward_path(spec.name, path)
        reward = LayerReward.load(path)
        name, system = reward_name(path), system or SYSTEM_PROMPT
        if reward.model_sha256 == spec.sha256:
            return cls(reward, generator, system, name)
        model = model_with_sha256(reward.model_sha256)
        if model is None:
            raise LayerRewardError(
                f"layer reward {path} was trained on the layers of the model with sha256 "
                f"{reward.model_sha256[:12]}..., which is neither this policy ({spec.sha256[:12]}...) "
                "nor a registered model"
            )
        return cls(reward, reader_engine(model, layers=reward.layers), system, name, live=False)

    def score(self, problem: Problem, candidates: Sequence[Candidate]) -> tuple[list[list[float]], Compute]:
        if self.reward.kind == "judge":
            return self._score_by_judging(problem, candidates)
        t0 = time.perf_counter()
        out: list[list[float]] = []
        replayed = Compute()
        flops = 0.0
        for c in candidates:
            features = c.layer_features if self.live else None
            if features is None:
                features, spent = self._replay(problem, c)
                replayed = replayed + spent
            available = [int(x) for x in features["layers"]]
            out.append([self.reward.predict(features, available)])
            flops += self.reward.flops(len(features["step_ends"]))
        own = Compute(wall_time=time.perf_counter() - t0 - replayed.wall_time, flops=flops)
        return out, own + Compute(
            verifier_tokens=replayed.prompt_tokens, flops=replayed.flops, wall_time=replayed.wall_time
        )

    def _score_by_judging(self, problem: Problem, candidates: Sequence[Candidate]) -> tuple[list[list[float]], Compute]:
        """One outcome-judge prefill per distinct solution text (the problem's prefix shared in
        the cache): the probe reads the states where the judge answers, and the judge's P(Yes)
        is kept as the outcome judge's score (`side_scores`), so one reading serves both."""
        if self.generator is None or not hasattr(self.generator, "read_next_token"):
            raise LayerRewardError("a judge probe reads the judging model's layers: use the embedded engine")
        t0 = time.perf_counter()
        texts = list(dict.fromkeys(c.text for c in candidates))
        yes, states, spent = read_judgement(self.generator, [outcome_prompt(problem.question, t) for t in texts])
        available = list(self.generator.layers)
        probe = {t: self.reward.predict({"judge": x}, available) for t, x in zip(texts, states, strict=True)}
        judged = dict(zip(texts, yes, strict=True))
        self.side_scores = {f"outcome_judge:{self.generator.name}": [[judged[c.text]] for c in candidates]}
        own = Compute(wall_time=time.perf_counter() - t0 - spent.wall_time, flops=self.reward.flops(1) * len(texts))
        return [[probe[c.text]] for c in candidates], own + spent

    def _replay(self, problem: Problem, candidate: Candidate) -> tuple[dict[str, np.ndarray], Compute]:
        if self.generator is None or not hasattr(self.generator, "replay"):
            raise LayerRewardError(
                "a stored solution is scored by replay: use the embedded engine with the reward's layers"
            )
        prompt = MathDomain(problem).prompt(self.system)
        completion, spent = self.generator.replay(prompt, candidate.text, candidate.finish_reason)
        features = completion_features(completion)
        if features is None:
            raise LayerRewardError("the engine returned no layer states: start it with the reward's layers")
        return features, spent
