"""Self-refinement: the model answers, then repeatedly checks its latest answer and writes a
revised one (n rounds in all, the budget). The conversation grows round by round, so each
round's prompt extends the previous one and the engine serves it from its KV cache.

The final pick is the last answer ("last", the usual self-refine), the verifier's best
("best_of_n"), or a vote over every round ("majority", "weighted_best_of_n").

A revision that repeats the answer it was asked to check, word for word, ends the run
(`stop_on_repeat`): the model has settled, and a small one then copies that answer round after
round (seen with Qwen2.5-Coder-0.5B: rounds 3 to 8 identical to the token). The rounds not run
are reported as saved.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from .core import Compute, Generator, Problem, Prompt, Result, SamplingParams, Scorer
from .optimal import compute_optimal
from .prompts import SYSTEM_PROMPT
from .search import SEARCH_STRATEGIES
from .strategies import PICKERS, all_picks, answers_of, score_candidates, to_candidate

REVISE = (
    "Check your solution above step by step. If any step is wrong, fix it. Then write the complete "
    "revised solution in short steps separated by blank lines, ending with: Therefore, the final "
    "answer is $\\boxed{ANSWER}$."
)


def self_refine(
    problem: Problem,
    generator: Generator,
    scorer: Scorer,
    n: int,
    pick: str = "last",
    params: SamplingParams | None = None,
    system: str = SYSTEM_PROMPT,
    aggregation: str = "mean",
    revise_prompt: str = REVISE,
    stop_on_repeat: bool = True,
) -> Result:
    if pick not in (*PICKERS, "last"):  # before any round is paid for
        raise ValueError(f"unknown pick {pick!r}; choose from {', '.join([*PICKERS, 'last'])}")
    params = params or SamplingParams()
    t0 = time.perf_counter()
    generator.reset()  # a fresh cache: the same seed gives the same rounds
    messages: list[tuple[str, str]] = [("system", system), ("user", problem.question.strip())]
    candidates = []
    rounds = []
    repeated = False
    for round_ in range(n):
        t_round = time.perf_counter()
        gen = generator.generate([Prompt(tuple(messages))], 1, _round_params(params, round_))
        completion = gen.completions[0][0]
        candidates.append(to_candidate(completion))
        messages += [("assistant", completion.text), ("user", revise_prompt)]
        rounds.append(replace(gen.compute, wall_time=time.perf_counter() - t_round))
        repeated = len(candidates) > 1 and completion.text.strip() == candidates[-2].text.strip()
        if stop_on_repeat and repeated:
            break
    t_score = time.perf_counter()
    verifier = score_candidates(problem, candidates, scorer, aggregation)
    verifier.wall_time = time.perf_counter() - t_score
    settings = {
        "pick": pick,
        "scorer": scorer.name,
        "aggregation": aggregation,
        "stop_on_repeat": stop_on_repeat,
        "stopped_on_repeat": stop_on_repeat and repeated,  # so any larger budget stops here too
        "sampling": params.to_dict(),
        # per round, so that the first m rounds are a self_refine(m) run (see first_rounds)
        "rounds": [r.to_dict() for r in rounds],
        "verifier": verifier.to_dict(),
    }
    return first_rounds(Result("self_refine", None, None, candidates, Compute(), settings), n, time.perf_counter() - t0)


def first_rounds(run: Result, m: int, wall_time: float | None = None) -> Result:
    """A self_refine run cut to its first m rounds: exactly what self_refine(m) with the
    same seed returns, since each round depends only on the rounds before it (a run that
    stopped on a repeat before round m is that run whole). Verifier compute, spent on all
    rounds at once, is charged per round; wall time is the rounds' own plus the verifier's
    share, unless given."""
    rounds = [Compute.from_dict(r) for r in run.settings["rounds"][:m]]
    share = len(rounds) / len(run.settings["rounds"])
    verifier = Compute.from_dict(run.settings["verifier"])
    compute = sum(rounds, Compute()) + Compute(
        verifier_tokens=round(verifier.verifier_tokens * share),
        flops=verifier.flops * share,
        wall_time=verifier.wall_time * share,
    )
    if wall_time is not None:
        compute.wall_time = wall_time
    candidates = run.candidates[:m]
    picks = all_picks(candidates)
    answered = [i for i, c in enumerate(candidates) if c.answer is not None]
    picks["last"] = answered[-1] if answered else None  # the latest answer that has one
    pick = run.settings["pick"]
    chosen = picks.get(pick)
    settings = {
        **run.settings,
        "n": m,
        "picks": answers_of(candidates, picks),
        "rounds": run.settings["rounds"][:m],
        "rounds_saved": m - len(rounds),
        "stopped_on_repeat": bool(run.settings.get("stopped_on_repeat")) and len(rounds) == len(run.candidates),
    }
    return Result.picked("self_refine", candidates, chosen, compute, settings)


def _round_params(params: SamplingParams, round_: int) -> SamplingParams:
    return replace(params, seed=params.seed + 104729 * round_)


# Strategies that run once per budget (they cannot be replayed on subsets of a pool).
PER_BUDGET: dict[str, Callable[..., Result]] = {
    **SEARCH_STRATEGIES,
    "self_refine": self_refine,
    "compute_optimal": compute_optimal,
}
