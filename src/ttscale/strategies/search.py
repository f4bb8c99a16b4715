"""Step-level search guided by a verifier: beam search, DVTS and particle filtering.

A solution grows one step at a time (steps end at a blank line). All three strategies use one
routine, `Search.expand`: k candidate next steps for each live node, decoded in one batch,
scored by the verifier. A child continues from its parent's text, and the engine continues
from the parent's cached KV state, so only new tokens are computed.

Nodes are plain, picklable records; the search keeps a trace of every node it made (kept,
pruned, resampled), so a report can draw why the search chose what it chose.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..core import STEP_SEPARATOR, Candidate, Compute, Generator, Problem, Result, Scorer, Step, aggregate
from ..core.seeds import expansion_seed
from ..tasks.domain import require_math
from ..tasks.grading import last_boxed
from ..tasks.layer_features import completion_features, extend_features
from ..tasks.prompts import problem_prompt
from ..tasks.steps import join_steps, split_steps
from .candidates import make_candidate
from .picks import all_picks, answers_of
from .spec import RunSpec


@dataclass
class Node:
    id: int
    parent: int | None
    steps: list[Step]
    step_scores: list[float] = field(default_factory=list)
    finish_reason: str | None = None  # None while the solution is still open
    guide: float | None = None  # the score that ranks this node (lookahead's, when used)
    # the layer states its decoding kept (`tasks.layer_features`), so a reward over layers reads
    # the node without a second forward pass; None when the engine reads no layers
    features: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def text(self) -> str:
        return join_steps(self.steps)

    @property
    def n_tokens(self) -> int:
        return sum(s.n_tokens for s in self.steps)


@dataclass
class Search:
    """Shared state of one search: the problem, the injected model and verifier, the step
    protocol's limits, the compute spent so far and the trace of every node."""

    problem: Problem
    generator: Generator
    scorer: Scorer
    spec: RunSpec = field(default_factory=RunSpec)
    compute: Compute = field(default_factory=Compute)
    trace: list[dict[str, Any]] = field(default_factory=list)
    _calls: int = 0

    def root(self) -> Node:
        return self._record(Node(id=len(self.trace), parent=None, steps=[]))

    def expand(self, parents: Sequence[Node], k: int, final: bool = False, greedy: bool = False) -> list[list[Node]]:
        """k candidate next steps for each parent, scored. On the final iteration a step runs
        to the end of the solution instead of stopping at the blank line."""
        open_parents = [p for p in parents if not p.finished]
        if not open_parents:
            return [[] for _ in parents]
        base = self.spec.params
        budget = max(1, base.max_tokens - max(p.n_tokens for p in open_parents))
        params = replace(
            base,
            stop=() if final else (STEP_SEPARATOR,),
            max_tokens=budget if final else min(self.spec.step_tokens, budget),
            temperature=0.0 if greedy else base.temperature,
            seed=expansion_seed(base.seed, self._calls),  # every expansion draws fresh samples
        )
        self._calls += 1
        prompts = [
            problem_prompt(self.problem.question, self.spec.system, p.text + STEP_SEPARATOR if p.steps else "")
            for p in open_parents
        ]
        gen = self.generator.generate(prompts, k, params)
        self.compute = self.compute + gen.compute
        per_parent: list[list[Node]] = []
        for parent, completions in zip(open_parents, gen.completions, strict=True):
            kids = []
            for c in completions:
                new_steps = split_steps(c) or [Step(text="", n_tokens=c.n_tokens)]
                if not final and len(new_steps) > 1:  # a step has no blank line inside it
                    new_steps = [_merge(new_steps)]
                node = Node(id=-1, parent=parent.id, steps=[*parent.steps, *new_steps])
                node.features = extend_features(parent.features, completion_features(c))
                node.finish_reason = self._finish_reason(node, c.finish_reason, final)
                kids.append(node)
            per_parent.append(kids)
        flat = [n for kids in per_parent for n in kids]
        self.score(flat)
        for n in flat:
            self._record(n)
        it = iter(per_parent)
        return [[] if p.finished else next(it) for p in parents]

    def _finish_reason(self, node: Node, engine_reason: str, final: bool) -> str | None:
        if engine_reason == "eos":
            return "eos"
        if last_boxed(node.steps[-1].text) is not None:
            return "answer"
        if node.n_tokens >= self.spec.params.max_tokens:
            return "length"
        if final:
            return engine_reason
        return None

    def score(self, nodes: Sequence[Node]) -> None:
        if not nodes:
            return
        step_scores, compute = self.scorer.score(self.problem, [to_candidate(n) for n in nodes])
        self.compute = self.compute + compute
        for n, s in zip(nodes, step_scores, strict=True):
            n.step_scores = list(s)
            n.guide = aggregate(n.step_scores, self.spec.aggregation)

    def lookahead(self, nodes: Sequence[Node], depth: int) -> None:
        """Roll each open node `depth` steps further greedily and rank it by the score of
        where it leads. The lookahead steps are scored, then dropped from the beam."""
        starts = [n for n in nodes if not n.finished]
        tips = list(starts)
        for _ in range(depth):
            live = [i for i, t in enumerate(tips) if not t.finished]
            if not live:
                break
            for i, kids in zip(live, self.expand([tips[i] for i in live], 1, greedy=True), strict=True):
                if kids:
                    tips[i] = kids[0]
                    self.trace[kids[0].id]["status"] = "lookahead"
        for start, tip in zip(starts, tips, strict=True):
            start.guide = tip.guide
            self.trace[start.id]["guide"] = tip.guide

    def mark(self, nodes: Sequence[Node], status: str) -> None:
        for n in nodes:
            self.trace[n.id]["status"] = status

    def _record(self, node: Node) -> Node:
        node.id = len(self.trace)
        self.trace.append(
            {
                "id": node.id,
                "parent": node.parent,
                "step": node.steps[-1].text if node.steps else "",
                "score": node.step_scores[-1] if node.step_scores else None,
                "finish_reason": node.finish_reason,
                "guide": node.guide,
                "status": "expanded",
            }
        )
        return node


def _merge(steps: list[Step]) -> Step:
    return Step(
        text=join_steps(steps),
        n_tokens=sum(s.n_tokens for s in steps),
        logprob_sum=sum(s.logprob_sum for s in steps),
        logprob_min=min(s.logprob_min for s in steps),
        certainty_sum=sum(s.certainty_sum for s in steps),
        hidden=next((s.hidden for s in reversed(steps) if s.hidden is not None), None),
    )


def to_candidate(node: Node) -> Candidate:
    c = make_candidate(node.text, list(node.steps), node.finish_reason or "open")
    c.step_scores = list(node.step_scores)
    c.score = node.guide if node.guide is not None else float("nan")
    c.layer_features = node.features
    return c


@dataclass
class Found:
    """What a search body returns: its final nodes, the settings it ran with beside n, what
    it found out on the way, and, for particle filtering, the final weights."""

    nodes: list[Node]
    settings: dict[str, Any]
    outcome: dict[str, Any] = field(default_factory=dict)
    weights: list[float] | None = None


def _result(name: str, search: Search, found: Found, n: int, pick: str, t0: float) -> Result:
    """Candidates from the final nodes, scored by their aggregated step scores (or by the
    given non-negative weights), and the answer every pick rule would give; the chosen rule's
    answer is the result's."""
    candidates = [to_candidate(node) for node in found.nodes]
    for k, c in enumerate(candidates):
        if found.weights is not None:
            c.score = float(found.weights[k])
        else:
            c.score = aggregate(c.step_scores, search.spec.aggregation) if c.step_scores else 0.0
    picks = all_picks(candidates)
    chosen = picks[pick]
    if chosen is not None:
        search.trace[found.nodes[chosen].id]["status"] = "chosen"
    search.compute.wall_time = time.perf_counter() - t0
    inputs = {
        "n": n,
        **found.settings,
        "scorer": search.scorer.name,
        "aggregation": search.spec.aggregation,
        "pick": pick,
        "sampling": search.spec.params.to_dict(),
        "step_tokens": search.spec.step_tokens,
    }
    outcome = {**found.outcome, "picks": answers_of(candidates, picks)}
    return Result.picked(name, candidates, chosen, search.compute, inputs, outcome, trace=search.trace)


Body = Callable[..., Found]  # (search, n, **options) -> Found


def tree_search(name: str, body: Body) -> Callable[..., Result]:
    """A search body as a strategy: (problem, generator, scorer, n, spec, *, pick, options).
    The body sees only the explicit search state; the engine and verifier come in through it.
    Starts from a fresh engine cache, so the same seed gives the same search."""

    def strategy(
        problem: Problem, generator: Generator, scorer: Scorer, n: int, spec: RunSpec | None = None, **options: Any
    ) -> Result:
        require_math(problem, name, "a pool strategy or self_debug")
        pick = options.pop("pick", "best_of_n")
        t0 = time.perf_counter()
        generator.reset()
        search = Search(problem, generator, scorer, spec or RunSpec())
        return _result(name, search, body(search, n, **options), n, pick, t0)

    own = list(inspect.signature(body).parameters.values())[2:]
    pick = inspect.Parameter("pick", inspect.Parameter.KEYWORD_ONLY, default="best_of_n", annotation="str")
    head = list(inspect.signature(strategy).parameters.values())[:5]
    strategy.__signature__ = inspect.Signature([*head, *own, pick], return_annotation="Result")  # type: ignore[attr-defined]
    strategy.__name__ = strategy.__qualname__ = name
    strategy.__doc__ = body.__doc__
    return strategy


def _beam(
    s: Search, n: int, *, beam_width: int = 4, max_iterations: int = 20, lookahead: int = 0, dedup: bool = True
) -> Found:
    """Keep n/M beams; each iteration expands every beam into M candidate steps (the first
    iteration samples n from the root), scores them, and keeps the best n/M open ones.
    Finished beams leave the active set; at most n completions are returned."""
    keep = max(1, n // beam_width)
    active = [s.root()]
    completed: list[Node] = []
    for it in range(max_iterations):
        final = it == max_iterations - 1
        candidates = [c for kids in s.expand(active, n if it == 0 else beam_width, final) for c in kids]
        if dedup:
            seen: set[str] = set()
            unique = []
            for c in candidates:
                if c.text not in seen:
                    seen.add(c.text)
                    unique.append(c)
            s.mark([c for c in candidates if c not in unique], "duplicate")
            candidates = unique
        if lookahead:
            s.lookahead(candidates, lookahead)
        completed += [c for c in candidates if c.finished]
        ranked = sorted((c for c in candidates if not c.finished), key=lambda c: -_guide(c))
        active = ranked[:keep]
        s.mark(ranked[keep:], "pruned")
        if len(completed) >= n or not active:
            break
    completed = sorted(completed, key=lambda c: -_guide(c))[:n] or active
    s.mark(completed, "final")
    settings = {"beam_width": beam_width, "max_iterations": max_iterations, "lookahead": lookahead, "dedup": dedup}
    return Found(completed, settings)


def _dvts(s: Search, n: int, *, beam_width: int = 4, max_iterations: int = 20) -> Found:
    """Diverse verifier tree search: n/M independent subtrees, each expanded into M candidate
    steps per iteration and continued greedily along the best-scored one until it finishes."""
    root = s.root()
    current = [root] * max(1, n // beam_width)
    leaves: list[Node | None] = [None] * len(current)
    siblings: list[Node] = []  # other finished candidates of each subtree's final expansion
    for it in range(max_iterations):
        live = [i for i, leaf in enumerate(leaves) if leaf is None]
        if not live:
            break
        kids = s.expand([current[i] for i in live], beam_width, final=it == max_iterations - 1)
        for i, options in zip(live, kids, strict=True):
            if not options:
                leaves[i] = current[i]
                continue
            best = max(options, key=_guide)
            s.mark([o for o in options if o is not best], "pruned")
            current[i] = best
            if best.finished:
                leaves[i] = best
                siblings += [o for o in options if o is not best and o.finished]
    finals = [leaf if leaf is not None else current[i] for i, leaf in enumerate(leaves)]
    s.mark(finals, "final")
    settings = {"beam_width": beam_width, "max_iterations": max_iterations}
    return Found(finals + siblings, settings, {"subtrees": len(current)})


def _particles(s: Search, n: int, *, max_iterations: int = 20, ess_threshold: float = 0.5) -> Found:
    """n particles grow one step at a time; each is weighted by the logit of its latest
    step score. When the effective sample size of the open particles drops below
    ess_threshold x their number, they are resampled (systematic resampling). Finished
    particles are absorbing: they keep their weight and are never resampled."""
    rng = np.random.default_rng(s.spec.params.seed)
    particles = [s.root()] * n
    finished: list[Node] = []
    resamples = 0
    for it in range(max_iterations):
        if not particles:
            break
        kids = [k[0] for k in s.expand(particles, 1, final=it == max_iterations - 1) if k]
        finished += [k for k in kids if k.finished]
        particles = [k for k in kids if not k.finished]
        if len(particles) > 1:
            logw = np.array([_logit(p.step_scores[-1]) for p in particles])
            w = np.exp(logw - logw.max())
            w /= w.sum()
            if 1.0 / float((w**2).sum()) < ess_threshold * len(particles):
                idx = _systematic(w, rng)
                survivors = set(idx)
                s.mark([p for i, p in enumerate(particles) if i not in survivors], "resampled-away")
                particles = [particles[i] for i in idx]
                resamples += 1
    finals = finished + particles
    logits = np.array([_logit(p.step_scores[-1]) if p.step_scores else -50.0 for p in finals])
    weights = np.exp(logits - logits.max()) if len(finals) else logits
    weights = weights / weights.sum() if len(finals) else weights
    for p, lw in zip(finals, logits, strict=True):
        p.guide = float(lw)
    s.mark(finals, "final")
    # a particle's weight is the softmax of its logit: the pick by weight is the highest logit
    settings = {"max_iterations": max_iterations, "ess_threshold": ess_threshold}
    return Found(finals, settings, {"resamples": resamples}, list(weights))


beam_search = tree_search("beam_search", _beam)
dvts = tree_search("dvts", _dvts)
particle_filter = tree_search("particle_filter", _particles)


def _guide(node: Node) -> float:
    return node.guide if node.guide is not None else -math.inf


def _logit(p: float, eps: float = 1e-6) -> float:
    p = min(max(p, eps), 1 - eps)
    return math.log(p / (1 - p))


def _systematic(weights: np.ndarray, rng: np.random.Generator) -> list[int]:
    """Systematic resampling: one uniform offset, n evenly spaced pointers into the CDF."""
    n = len(weights)
    positions = (rng.random() + np.arange(n)) / n
    cdf = np.cumsum(weights)
    cdf[-1] = 1.0
    return [int(i) for i in np.searchsorted(cdf, positions, side="right")]


SEARCH_STRATEGIES: dict[str, Callable[..., Result]] = {
    "beam_search": beam_search,
    "dvts": dvts,
    "particle_filter": particle_filter,
}
