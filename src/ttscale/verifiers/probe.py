"""A process reward model that costs nothing extra: a linear value probe on the policy's own
final hidden state at the end of each step, predicting whether the solution will end correct.

The engine returns those hidden states from the decode that samples the tokens (no second
forward pass). A saved probe is tied to the sha256 of the model it was trained on; loading it
for another model fails. Training it is `apps.train_probe`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..core import Candidate, Compute, Problem
from ..engines.models import REGISTRY
from ..tasks.prompts import SYSTEM_PROMPT, problem_prompt
from ..tasks.steps import split_steps
from .file_names import content_name


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
    """The name a probe's scores are stored under: "probe" for a model's default probe,
    otherwise named by its content (`file_names.content_name`)."""
    try:
        return content_name("probe", path, map(packaged_probe, REGISTRY))
    except OSError as e:
        raise ProbeError(f"cannot read probe {path}: {e.strerror or e}") from None


def packaged_probe(model_name: str) -> Path | None:
    p = resources.files("ttscale").joinpath("data").joinpath(f"probe-{model_name}.npz")
    return Path(str(p)) if p.is_file() else None


class ProbeScorer:
    """Per-step scores from the probe; needs an engine started with hidden_states=True."""

    # a stored text's replay is an artefact of rescoring: live, the sampling pass reads the states
    free_when_live = True

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
