"""Compute-optimal scaling as a real strategy: estimate a problem's difficulty at inference
time from a cheap first probe (the agreement of its first few samples, or their mean
verifier score; never the gold answer), then spend the rest of the budget the way a policy
table says works best for that difficulty and budget. The probe's samples count toward the
budget and are reused; when they already agree strongly the strategy stops early and the
saved budget is reported. Fitting a policy on stored runs is `evaluation.policy`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core import Candidate, Compute, Generator, Problem, Result, Scorer
from ..core.seeds import continuation_seed
from ..tasks.domain import MATH, require_math
from .picks import PICKERS, all_picks, answers_of, pick_from_pool
from .pool import sample_pool
from .spec import RunSpec

# (strategy name, problem, generator, scorer, budget, spec, options) -> its Result: how
# compute_optimal runs a search it chose (the catalogue's run_strategy)
RunStrategy = Callable[[str, Problem, Generator, Scorer, int, RunSpec, dict[str, Any]], Result]

DEFAULT_BINS = (0.99, 0.74, 0.49)  # agreement >= 0.99: bin 0 (easy) ... below 0.49: bin 3 (hard)
SIGNALS = ("agreement", "verifier")


def agreement(answers: Sequence[str | None]) -> float:
    """Share of samples in the largest group of equivalent answers (no answer never agrees)."""
    if not answers:
        return 0.0
    groups = [g for g in MATH.group(answers) if g is not None]
    return max((groups.count(g) for g in set(groups)), default=0) / len(answers)


@dataclass
class Decision:
    """What a policy does with one problem once its probe samples are in."""

    estimate: float  # the difficulty signal
    difficulty: int  # its bin
    strategy: str
    options: dict[str, Any]  # the strategy's settings from the table
    spend: int  # samples (or search budget) in all, the probe's included; probe_n means stop there


@dataclass
class Policy:
    """(difficulty bin, budget) -> a strategy name and its settings. The difficulty signal is
    the probe samples' answer agreement or their mean verifier score (a value probe's
    estimate that a solution is right); bins are thresholds on it, easiest first."""

    bins: tuple[float, ...] = DEFAULT_BINS
    probe_n: int = 4
    stop_agreement: float = 1.0
    signal: str = "agreement"
    table: dict[str, dict[str, Any]] = field(default_factory=dict)
    default: dict[str, Any] = field(default_factory=lambda: {"strategy": "weighted_best_of_n"})
    meta: dict[str, Any] = field(default_factory=dict)

    def bin(self, estimate: float) -> int:
        return next((i for i, t in enumerate(self.bins) if estimate >= t), len(self.bins))

    def estimate(self, agree: float, scores: Sequence[float]) -> float:
        return agree if self.signal == "agreement" else float(np.mean(scores)) if len(scores) else 0.0

    def choose(self, difficulty: int, budget: int) -> dict[str, Any]:
        """The fitted choice for this bin at the largest fitted budget not above `budget`."""
        fitted = sorted(int(k.split("|")[1]) for k in self.table if k.startswith(f"{difficulty}|"))
        usable = [b for b in fitted if b <= budget]
        return self.table[f"{difficulty}|{usable[-1]}"] if usable else self.default

    def decide(self, agree: float, scores: Sequence[float], budget: int, probe_n: int) -> Decision:
        """The one decision the live strategy and its replay both follow: stop at the probe
        when its samples agree (a vote) or when the table spends no more than the probe;
        otherwise the table's strategy with its (possibly smaller) budget."""
        estimate = self.estimate(agree, scores)
        difficulty = self.bin(estimate)
        options = dict(self.choose(difficulty, budget))
        name = options.pop("strategy")
        spend = min(budget, options.pop("n", budget))  # the table may say a smaller budget does as well
        if agree >= self.stop_agreement:
            return Decision(estimate, difficulty, "majority", options, probe_n)
        if spend <= probe_n:
            return Decision(estimate, difficulty, name if name in PICKERS else "majority", options, probe_n)
        return Decision(estimate, difficulty, name, options, spend)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.__dict__, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        d = json.loads(Path(path).read_text())
        d["bins"] = tuple(d["bins"])
        return cls(**d)


def compute_optimal(
    problem: Problem,
    generator: Generator,
    scorer: Scorer,
    n: int,
    spec: RunSpec | None = None,
    *,
    policy: Policy | str | None = None,
    run_strategy: RunStrategy | None = None,
) -> Result:
    """policy: a fitted Policy, the path of one (`ttscale fit-optimal`), or None for the
    default (weighted Best-of-N whatever the difficulty, still with early stopping).
    run_strategy runs a search the policy names (the catalogue passes its own)."""
    require_math(problem, "compute_optimal", "a pool strategy or self_debug")
    policy = Policy.load(policy) if isinstance(policy, str) else (policy or Policy())
    spec = spec or RunSpec()
    t0 = time.perf_counter()
    probe_n = min(policy.probe_n, n)
    probe, compute = sample_pool(problem, generator, scorer, probe_n, spec)
    agree = agreement([c.answer for c in probe])
    d = policy.decide(agree, [c.score for c in probe], n, probe_n)
    settings: dict[str, Any] = {"n": n, "signal": policy.signal}
    outcome: dict[str, Any] = {
        "probe_n": probe_n,
        "agreement": agree,
        "estimate": d.estimate,
        "difficulty": d.difficulty,
        "strategy": d.strategy,
    }
    if d.spend <= probe_n:
        chosen = pick_from_pool(d.strategy, probe)
        outcome.update(stopped_early=n > probe_n, saved_budget=n - probe_n)
        candidates = probe
    else:
        outcome.update(choice=d.options, stopped_early=d.spend < n, saved_budget=n - d.spend)
        more, spent = _spend_rest(
            problem, generator, scorer, d, probe_n, spec.with_seed(continuation_seed(spec.params.seed)), run_strategy
        )
        candidates = probe + more
        compute = compute + spent
        # the probe's samples join the pool, or vote with a search's finalists
        rule = d.strategy if d.strategy in PICKERS else d.options.get("pick", "weighted_best_of_n")
        chosen = pick_from_pool(rule, candidates)
    outcome["picks"] = answers_of(candidates, all_picks(candidates))
    compute.wall_time = time.perf_counter() - t0
    settings.update(sampling=spec.params.to_dict(), scorer=scorer.name)
    return Result.picked("compute_optimal", candidates, chosen, compute, settings, outcome)


def _spend_rest(
    problem: Problem,
    generator: Generator,
    scorer: Scorer,
    d: Decision,
    probe_n: int,
    spec: RunSpec,
    run_strategy: RunStrategy | None,
) -> tuple[list[Candidate], Compute]:
    """The rest of the budget after the probe: more pool samples, or the chosen search."""
    if d.strategy in PICKERS:
        return sample_pool(problem, generator, scorer, d.spend - probe_n, spec)
    if run_strategy is None:
        raise ValueError(f"the policy chose {d.strategy}: run compute_optimal through the strategy catalogue")
    r = run_strategy(d.strategy, problem, generator, scorer, d.spend - probe_n, spec, d.options)
    return r.candidates, r.compute
