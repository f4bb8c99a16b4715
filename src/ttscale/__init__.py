"""ttscale: make small open models solve hard problems better by spending compute at inference time.

from ttscale import LlamaCppGenerator, LogProbScorer, Problem, weighted_best_of_n
result = weighted_best_of_n(Problem("p", "What is 6 x 7?"), LlamaCppGenerator(), LogProbScorer(), n=8)
print(result.answer, result.compute)
"""

from .core import Candidate, Completion, Compute, Generation, Generator, Problem, Prompt, Result  # isort: skip
from .core import SamplingParams, Scorer, Step  # isort: skip
from .engines.llamacpp import LlamaCppGenerator
from .strategies import STRATEGIES, RunSpec, best_of_n, majority, run_strategy, weighted_best_of_n
from .verifiers.model_free import LogProbScorer, SelfCertaintyScorer
from .verifiers.registry import make_scorer

__version__ = "0.1.0"

__all__ = [
    "STRATEGIES",
    "Candidate",
    "Completion",
    "Compute",
    "Generation",
    "Generator",
    "LlamaCppGenerator",
    "LogProbScorer",
    "Problem",
    "Prompt",
    "Result",
    "RunSpec",
    "SamplingParams",
    "Scorer",
    "SelfCertaintyScorer",
    "Step",
    "best_of_n",
    "majority",
    "make_scorer",
    "run_strategy",
    "weighted_best_of_n",
]
