"""Level 1: the data types, the Generator and Scorer protocols, sampling parameters, step-score
aggregation and every seed rule. Depends on nothing else in ttscale."""

from .aggregate import AGGREGATIONS, aggregate, check_aggregation
from .sampling import SamplingParams
from .seeds import problem_seed, sample_seed
from .types import (
    STEP_SEPARATOR,
    Candidate,
    Completion,
    Compute,
    Generation,
    Generator,
    LayerStates,
    Problem,
    Prompt,
    Result,
    Scorer,
    Step,
    common_prefix,
    model_flops,
)

__all__ = [
    "AGGREGATIONS",
    "STEP_SEPARATOR",
    "Candidate",
    "Completion",
    "Compute",
    "Generation",
    "Generator",
    "LayerStates",
    "Problem",
    "Prompt",
    "Result",
    "SamplingParams",
    "Scorer",
    "Step",
    "aggregate",
    "check_aggregation",
    "common_prefix",
    "model_flops",
    "problem_seed",
    "sample_seed",
]
