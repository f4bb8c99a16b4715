"""What a verifier over several layers reads of one solution: its steps' pooled states, and
the states at the tokens of its final answer (the last \\boxed{}) and at its last token.
Shared by the training-data collector (`apps/layer_data.py`) and the scorer
(`verifiers/layer_reward.py`), so both see the same numbers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..core import Completion, LayerStates
from .grading import last_boxed_span

# one solution's arrays, by name (`solution_states`), plus the layers they are of
Features = dict[str, np.ndarray]


def answer_tokens(text: str, offsets: Sequence[int]) -> list[int]:
    """The tokens that hold the content of the last \\boxed{} of `text` (token k starts at
    byte offsets[k]); none if it boxes nothing."""
    span = last_boxed_span(text)
    if span is None:
        return []
    start, end = len(text[: span[0]].encode()), len(text[: span[1]].encode())
    ends = [*offsets[1:], len(text.encode())]
    return [k for k, (a, b) in enumerate(zip(offsets, ends, strict=True)) if a < end and b > start]


def solution_states(states: LayerStates, answer: Sequence[int]) -> Features:
    """One solution's arrays: its steps' (last, mean) states, and the mean and last of its
    answer tokens' states where the tail kept them (NaN where it did not: an answer far from
    the end, or none), and the state at its last token with one."""
    width = states.step_last.shape[1:]
    kept = [k - states.tail_start for k in answer if 0 <= k - states.tail_start < len(states.tail)]
    rows = states.tail[kept].astype(np.float32) if kept else np.full((1, *width), np.nan, np.float32)
    final = states.tail[-1] if len(states.tail) else np.full(width, np.nan, np.float16)
    return {
        "step_last": states.step_last,
        "step_mean": states.step_mean,
        "step_ends": np.asarray(states.step_ends, dtype=np.int32),
        "answer_mean": rows.mean(axis=0).astype(np.float16),
        "answer_last": rows[-1].astype(np.float16),
        "final": final.astype(np.float16),
    }


def completion_features(completion: Completion) -> Features | None:
    """`solution_states` of a completion from an engine that read layers, with the layers
    they are of; None otherwise."""
    states = completion.layer_states
    if states is None:
        return None
    out = solution_states(states, answer_tokens(completion.text, completion.token_offsets))
    out["layers"] = np.asarray(states.layers, dtype=np.int32)
    return out


def extend_features(prefix: Features | None, step: Features | None) -> Features | None:
    """A search node's states: its parent's, followed by those of the step just decoded from
    the parent's cached text (a step's states already saw that whole prefix). The steps stack;
    the last token is the step's; the answer tokens are the step's if it boxed an answer, else
    the prefix's (the last box of the whole text). Step ends stay numbered within the step
    that holds them, since only their count is read. None when the engine read no layers."""
    if step is None:
        return None
    if prefix is None:
        return step
    if not np.array_equal(prefix["layers"], step["layers"]):
        raise ValueError(f"states of layers {list(prefix['layers'])} cannot continue with {list(step['layers'])}")
    boxed = not np.isnan(step["answer_mean"].astype(np.float32)).all()
    answer = step if boxed else prefix
    return {
        "step_last": np.concatenate([prefix["step_last"], step["step_last"]]),
        "step_mean": np.concatenate([prefix["step_mean"], step["step_mean"]]),
        "step_ends": np.concatenate([prefix["step_ends"], step["step_ends"]]),
        "answer_mean": answer["answer_mean"],
        "answer_last": answer["answer_last"],
        "final": step["final"],
        "layers": step["layers"],
    }
