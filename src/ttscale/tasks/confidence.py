"""DeepConf's trace confidences (Fu et al., 2025, "Deep Think with Confidence"), from the
per-token self-certainty the engine already measures.

DeepConf's token confidence is the negative mean log-probability of the k most likely
tokens; self-certainty, KL(uniform || p), is the same quantity over the whole vocabulary
(less the constant log V), so no second pass and no top-k read-out are needed. A trace's
group confidence is the mean over a sliding window of tokens; DeepConf ranks traces by
their lowest group confidence (the weakest stretch of reasoning) or by their tail (the
last tokens, where the answer is written). The windows suit short solutions: GSM8K's are
about 270 tokens, so a window of 32 is an eighth of one and the tail is the last 64 tokens
(chosen once, before any measurement; DeepConf's 2048 are for traces of 10k+ tokens).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..core.sampling import CONFIDENCE_WINDOW

GROUP_WINDOW = CONFIDENCE_WINDOW  # the window the engine watches online, too
TAIL_TOKENS = 64


def trace_confidence(certainties: Sequence[float]) -> dict[str, float]:
    """{"lowest_group", "tail", "mean"} of one trace; empty for a trace without tokens."""
    c = np.asarray(certainties, dtype=float)
    if c.size == 0:
        return {}
    if c.size <= GROUP_WINDOW:
        lowest = float(c.mean())
    else:
        sums = np.convolve(c, np.ones(GROUP_WINDOW), mode="valid")
        lowest = float(sums.min() / GROUP_WINDOW)
    return {"lowest_group": lowest, "tail": float(c[-TAIL_TOKENS:].mean()), "mean": float(c.mean())}


def mean_certainty(n_tokens: Sequence[int], certainty_sums: Sequence[float]) -> float:
    """A solution's mean self-certainty over all its tokens, from its steps' token counts and
    certainty sums (what every stored pool keeps, and what a stopping vote reads live)."""
    tokens = sum(n_tokens)
    return max(0.0, sum(certainty_sums) / tokens) if tokens else 0.0
