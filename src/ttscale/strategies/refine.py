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
from dataclasses import replace
from typing import Any

from ..core import Candidate, Compute, Generator, Problem, Prompt, Result, Scorer
from ..core.seeds import round_seed
from ..tasks.domain import require_math
from .candidates import from_completion, score_candidates
from .picks import PICKERS, all_picks, answers_of
from .rounds import first_rounds_compute, stored_run
from .spec import RunSpec

REVISE = (
    "Check your solution above step by step. If any step is wrong, fix it. Then write the complete "
    "revised solution in short steps separated by blank lines, ending with: Therefore, the final "
    "answer is $\\boxed{ANSWER}$."
)


# What a run found out, as opposed to what it was asked (kept in Result.outcome)
OUTCOME_KEYS = ("stopped_on_repeat", "rounds", "verifier", "rounds_saved", "derived_from")


def self_refine(
    problem: Problem,
    generator: Generator,
    scorer: Scorer,
    n: int,
    spec: RunSpec | None = None,
    *,
    pick: str = "last",
    revise_prompt: str = REVISE,
    stop_on_repeat: bool = True,
) -> Result:
    require_math(problem, "self_refine", "self_debug (revision with execution feedback)")
    if pick not in (*PICKERS, "last"):  # before any round is paid for
        raise ValueError(f"unknown pick {pick!r}; choose from {', '.join([*PICKERS, 'last'])}")
    spec = spec or RunSpec()
    t0 = time.perf_counter()
    generator.reset()  # a fresh cache: the same seed gives the same rounds
    messages: list[tuple[str, str]] = [("system", spec.system), ("user", problem.question.strip())]
    candidates: list[Candidate] = []
    rounds = []
    repeated = False
    for round_ in range(n):
        t_round = time.perf_counter()
        params = replace(spec.params, seed=round_seed(spec.params.seed, round_))
        gen = generator.generate([Prompt(tuple(messages))], 1, params)
        completion = gen.completions[0][0]
        candidates.append(from_completion(completion))
        messages += [("assistant", completion.text), ("user", revise_prompt)]
        rounds.append(replace(gen.compute, wall_time=time.perf_counter() - t_round))
        repeated = len(candidates) > 1 and completion.text.strip() == candidates[-2].text.strip()
        if stop_on_repeat and repeated:
            break
    t_score = time.perf_counter()
    verifier = score_candidates(problem, candidates, scorer, spec.aggregation)
    verifier.wall_time = time.perf_counter() - t_score
    settings = {
        "pick": pick,
        "scorer": scorer.name,
        "aggregation": spec.aggregation,
        "stop_on_repeat": stop_on_repeat,
        "sampling": spec.params.to_dict(),
    }
    outcome = {
        "stopped_on_repeat": stop_on_repeat and repeated,  # so any larger budget stops here too
        # per round, so that the first m rounds are a self_refine(m) run (see first_rounds)
        "rounds": [r.to_dict() for r in rounds],
        "verifier": verifier.to_dict(),
    }
    run = Result("self_refine", None, None, candidates, Compute(), settings, outcome=outcome)
    return first_rounds(run, n, time.perf_counter() - t0)


def first_rounds(run: Result, m: int, wall_time: float | None = None) -> Result:
    """A self_refine run cut to its first m rounds: exactly what self_refine(m) with the
    same seed returns, since each round depends only on the rounds before it (a run that
    stopped on a repeat before round m is that run whole). Verifier compute, spent on all
    rounds at once, is charged per round; wall time is the rounds' own plus the verifier's
    share, unless given."""
    compute, ran = first_rounds_compute(run, m, wall_time)
    all_rounds = run.outcome["rounds"]
    candidates = run.candidates[:m]
    picks = all_picks(candidates)
    answered = [i for i, c in enumerate(candidates) if c.answer is not None]
    picks["last"] = answered[-1] if answered else None  # the latest answer that has one
    chosen = picks.get(run.settings["pick"])
    outcome = {
        **run.outcome,
        "stopped_on_repeat": bool(run.outcome.get("stopped_on_repeat")) and ran == len(run.candidates),
        "rounds": all_rounds[:m],
        "picks": answers_of(candidates, picks),
        "rounds_saved": m - ran,
    }
    return Result.picked("self_refine", candidates, chosen, compute, {**run.settings, "n": m}, outcome)


def run_from_stored(
    settings: dict[str, Any], candidates: list[Candidate], compute: Compute, answer: str | None
) -> Result:
    """A stored self_refine run."""
    return stored_run("self_refine", OUTCOME_KEYS, settings, candidates, compute, answer)


def reusable(settings: dict[str, Any], n: int, top: int, options: dict[str, Any]) -> bool:
    """Whether a stored run of budget n serves every budget up to top: it ran at least that
    many rounds, or stopped on a repeat before running out of them (a larger budget would
    have stopped there too), under the same stop rule."""
    if "rounds" not in settings:
        return False  # stored before rounds were kept
    if settings.get("stop_on_repeat", False) != options.get("stop_on_repeat", True):
        return False
    stopped = settings.get("stopped_on_repeat", len(settings["rounds"]) < n)  # older runs: no flag
    return n >= top or bool(stopped)
