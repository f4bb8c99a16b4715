"""Every verifier by name: which names exist, the name its scores are stored under, and the
one function that builds a verifier from its name. Model-free verifiers need nothing; "judge"
runs on the policy engine; "outcome_judge:MODEL" on a second model, loaded once; the probe
reads its hidden states; a PRM loads through transformers (imported only then)."""

from __future__ import annotations

from typing import Any

from ..core import Scorer
from ..tasks.prompts import SYSTEM_PROMPT
from .execution import EXECUTION
from .judge import LLMJudgeScorer, OutcomeJudgeScorer
from .layer_reward import LayerRewardScorer, reward_layers, reward_name
from .model_free import MODEL_FREE
from .prm import TransformersPRM  # imports torch and transformers only when a PRM loads
from .probe import ProbeScorer, probe_name
from .program import SOLVER_PROGRAMS, ProgramScorer, SolverProgramScorer
from .readers import reader_engine

SCORERS = MODEL_FREE  # the verifiers that every pool is scored by, for free
MODEL_SCORERS = {
    "examples": "code: the share of the docstring's examples the program passes",
    "tests": "code: the share of the examples and the model's own tests it passes (CodeT)",
    "judge": "the policy model asked whether the last step is correct: P(Yes)",
    "outcome_judge[:MODEL]": "a model (default the policy; e.g. qwen2.5-coder-1.5b) asked whether the whole "
    "solution is correct: P(Yes), one prefill per solution",
    "program[:K]": "math: the policy turns the solution into K programs (1: greedy); the share printing its answer",
    "program_solve[:K]": f"math: the policy solves the problem alone in K programs (default {SOLVER_PROGRAMS}), "
    "once per problem; how many print the candidate's answer",
    "probe[@PATH]": "a value probe on the policy's hidden states (ttscale train-probe)",
    "layers[@PATH]": "a reward over several layers of the policy (ttscale train-reward)",
    "prm:KEY[@PATH]": "a process reward model through transformers (see ttscale.verifiers.prm.FORMATS)",
}
CODE_SCORERS = EXECUTION  # code tasks only: every code pool is scored by these too
ALL_SCORERS = [*SCORERS, *CODE_SCORERS, "judge", "outcome_judge", "probe", "layers", "program", "program_solve"]
PRM_KEYS = ["rlhflow-8b", "math-shepherd", "qwen2.5-math-prm-7b", "skywork-1.5b"]  # verifiers.prm.FORMATS


def known_scorer(name: str) -> bool:
    return (
        name in ALL_SCORERS
        or name.startswith("probe@")
        or name.startswith("layers@")
        or (name.startswith("outcome_judge:") and len(name) > len("outcome_judge:"))
        or program_check(name) is not None
        or (name.startswith("prm:") and name[4:].partition("@")[0] in PRM_KEYS)
    )


def scorer_name(spec: str) -> str:
    """The name a scorer's scores and searches are stored under: its spec without an @PATH,
    except that a probe file is named by its content (see `probe.probe_name`)."""
    if spec.startswith("probe@"):
        return probe_name(spec.partition("@")[2])
    if spec.startswith("layers@"):
        return reward_name(spec.partition("@")[2])
    return spec.partition("@")[0]


def returns_certainties(generator: Any) -> bool:
    """Whether the engine returns each token's self-certainty (the embedded and fake ones do;
    a server does not). No engine at all: scoring stored samples, which carry them."""
    return generator is None or bool(getattr(generator, "returns_certainties", True))


PROGRAM_CHECKS = {"program": 1, "program_solve": SOLVER_PROGRAMS}  # each check and its default K


def program_check(name: str) -> tuple[str, int] | None:
    """A program check's kind and K: `program[:K]` draws K programs per candidate,
    `program_solve[:K]` K per problem; None for other names."""
    head, colon, k = name.partition(":")
    if head not in PROGRAM_CHECKS:
        return None
    if not colon:
        return head, PROGRAM_CHECKS[head]
    return (head, int(k)) if k.isdigit() and int(k) >= 1 else None


def needs_hidden_states(name: str) -> bool:
    return name == "probe" or name.startswith("probe@")


def needs_layers(name: str) -> bool:
    return name == "layers" or name.startswith("layers@")


def layers_to_read(name: str, model: str) -> tuple[int, ...] | None:
    """The layers an engine must read for this scorer (the layer reward's), or None."""
    return reward_layers(model, name.partition("@")[2] or None) if needs_layers(name) else None


def make_scorer(name: str, generator: Any = None, system: str | None = None, stored: bool = False) -> Scorer:
    """A verifier by name. Model-free ones need nothing; "judge" runs on the generator; the
    probe needs the system prompt the solutions were sampled under, to replay stored ones.
    stored: it scores a stored pool, so DeepConf's confidences, which pools sampled before
    they were kept lack, are recomputed by replay (a search's growing nodes lack them too,
    and are read at step level instead: a replay per node would cost more than the node)."""
    if name in SCORERS:
        if SCORERS[name].needs_certainties and not returns_certainties(generator):
            raise ValueError(
                f"the {name} verifier reads the whole next-token distribution, which a server does not "
                "return: use logprob, or the embedded engine"
            )
        if stored and SCORERS[name].replays_stored:
            return SCORERS[name](generator, system or SYSTEM_PROMPT)  # type: ignore[call-arg]
        return SCORERS[name]()
    if name in CODE_SCORERS:
        return CODE_SCORERS[name](generator)
    if name == "judge":
        if not hasattr(generator, "next_token_logprobs"):
            raise ValueError("the judge scorer needs an engine that returns next-token log-probabilities")
        return LLMJudgeScorer(generator)
    if name == "outcome_judge" or name.startswith("outcome_judge:"):
        model = name.partition(":")[2]
        engine = reader_engine(model, generator) if model else generator
        if not hasattr(engine, "next_token_logprobs"):
            raise ValueError("the outcome judge needs an engine that returns next-token log-probabilities")
        return OutcomeJudgeScorer(engine, name)
    if (check := program_check(name)) is not None:
        if generator is None:
            raise ValueError("the program check needs the policy engine: it writes the programs")
        kind, k = check
        return ProgramScorer(generator, k) if kind == "program" else SolverProgramScorer(generator, k)
    if needs_layers(name):
        return LayerRewardScorer.for_generator(generator, name.partition("@")[2] or None, system)
    if needs_hidden_states(name):
        return ProbeScorer.for_generator(generator, name.partition("@")[2] or None, system)
    if name.startswith("prm:"):
        key, _, path = name[4:].partition("@")
        return TransformersPRM.load(key, path or None)
    raise ValueError(f"unknown scorer {name!r}; choose from {', '.join([*ALL_SCORERS, 'prm:KEY[@PATH]'])}")
