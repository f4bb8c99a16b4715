"""One sequence being decoded, and the pure bookkeeping of each sampled token: its
log-probability and self-certainty, its text, stop strings, the token limit, and where a
step ends (where the probe's hidden state is read). No llama.cpp here."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core import STEP_SEPARATOR, Completion, LayerStates
from ..core.sampling import CONFIDENCE_WINDOW

STEP_BYTES = STEP_SEPARATOR.encode()
TAIL_TOKENS = 32  # kept one by one at the end of a completion: a final answer is written there


class LayerPooler:
    """One sequence's chosen-layer states, pooled as they arrive: the open step's running
    sum and last state, each closed step's (last, mean), and the last TAIL_TOKENS tokens.
    Memory grows with the steps, not the tokens."""

    def __init__(self, layers: tuple[int, ...], width: int, tail: int = TAIL_TOKENS) -> None:
        self.layers = layers
        self._sum = np.zeros((len(layers), width), dtype=np.float64)
        self._count = 0
        self._last: np.ndarray | None = None
        self._last_index = -1
        self._ends: list[int] = []
        self._step_last: list[np.ndarray] = []
        self._step_mean: list[np.ndarray] = []
        self._tail: deque[np.ndarray] = deque(maxlen=tail)
        self._tail_end = 0  # one past the index of the newest token in the tail

    def add(self, index: int, states: np.ndarray) -> None:
        """Token `index`'s states, shape (layers, width); tokens come in order."""
        if index < self._last_index + 1:
            raise ValueError(f"token {index} came after token {self._last_index}")
        self._sum += states
        self._count += 1
        self._last, self._last_index = states, index
        self._tail.append(states.astype(np.float16))
        self._tail_end = index + 1

    def end_step(self) -> None:
        """Close the open step; a step with no token state yet (closed by the first token
        sampled, whose predecessor is the prompt's) adds nothing."""
        if not self._count or self._last is None:
            return
        self._ends.append(self._last_index)
        self._step_last.append(self._last.astype(np.float16))
        self._step_mean.append((self._sum / self._count).astype(np.float16))
        self._sum[:] = 0.0
        self._count = 0

    def states(self) -> LayerStates:
        self.end_step()
        width = self._sum.shape
        return LayerStates(
            layers=self.layers,
            step_ends=list(self._ends),
            step_last=_stack(self._step_last, width),
            step_mean=_stack(self._step_mean, width),
            tail_start=self._tail_end - len(self._tail),
            tail=_stack(list(self._tail), width),
        )


def _stack(rows: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    return np.stack(rows) if rows else np.empty((0, *shape), np.float16)


@dataclass
class Decoding:
    slot: int
    unit: int  # index of its work unit within the group
    sampler: Any
    sample: tuple[int, int]  # (prompt index, sample index) within the generate call
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    certainties: list[float] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    text: bytearray = field(default_factory=bytearray)
    finish_reason: str | None = None
    pending: int | None = None  # sampled, not yet fed to the model
    hidden: list[tuple[int, np.ndarray]] = field(default_factory=list)
    window_sum: float = 0.0  # self-certainty of the last CONFIDENCE_WINDOW tokens, summed
    pooler: LayerPooler | None = None  # only when the engine reads layers

    def completion(self) -> Completion:
        return Completion(
            text=bytes(self.text).decode("utf-8", errors="replace"),
            token_ids=self.token_ids,
            logprobs=self.logprobs,
            certainties=self.certainties,
            token_offsets=self.offsets,
            hidden=list(self.hidden),
            finish_reason=self.finish_reason or "length",
            layer_states=self.pooler.states() if self.pooler else None,
        )


def add_token(
    s: Decoding,
    tok: int,
    logprob: float,
    certainty: float,
    piece: bytes | None,
    stops: list[bytes],
    max_tokens: int,
    confidence_floor: float | None = None,
) -> bool:
    """Record one sampled token (piece None: the end of sequence) and decide whether the
    sequence is finished. Returns whether a step ends here (a blank line, or the end): where
    the hidden state of the token before is captured."""
    s.token_ids.append(tok)
    s.logprobs.append(logprob)
    s.certainties.append(certainty)
    s.window_sum += certainty
    if len(s.certainties) > CONFIDENCE_WINDOW:
        s.window_sum -= s.certainties[-CONFIDENCE_WINDOW - 1]
    s.offsets.append(len(s.text))
    s.pending = tok
    if piece is None:
        s.finish_reason = "eos"
        return True
    before = len(s.text)
    s.text += piece
    ends_step = s.text.find(STEP_BYTES, max(0, before - 1)) >= 0
    for stop in stops:
        at = s.text.find(stop, max(0, before - len(stop) + 1))
        if at >= 0:
            del s.text[at:]
            s.finish_reason = "stop"
            break
    if s.finish_reason is None and len(s.token_ids) >= max_tokens:
        s.finish_reason = "length"
    if (
        s.finish_reason is None
        and confidence_floor is not None
        and low_confidence(s.certainties, s.window_sum, confidence_floor)
    ):
        s.finish_reason = "low_confidence"
    return ends_step or s.finish_reason is not None


def low_confidence(certainties: list[float], window_sum: float, floor: float) -> bool:
    """DeepConf's online test: a full window whose mean self-certainty is below the floor."""
    return len(certainties) >= CONFIDENCE_WINDOW and window_sum / CONFIDENCE_WINDOW < floor


def step_end_tokens(pieces: list[bytes], finish_reason: str) -> tuple[list[int], set[int]]:
    """For a known text given as token pieces: each token's byte offset, and the tokens whose
    hidden state sampling would have captured (the token before one that closes a step, and
    the text's last, or the one before it for a text cut by the token limit)."""
    data = bytearray()
    offsets, wanted = [], set()
    for k, piece in enumerate(pieces):
        offsets.append(len(data))
        before = len(data)
        data += piece
        if data.find(STEP_BYTES, max(0, before - 1)) >= 0:
            wanted.add(k - 1)
    if pieces:
        wanted.add(len(pieces) - (2 if finish_reason == "length" else 1))
    return offsets, wanted


def logsumexp_rows(logits: np.ndarray) -> np.ndarray:
    peak = logits.max(axis=1)
    # one temporary of rows x vocabulary, exponentiated in place: a replay reads 512 rows of
    # 151,936 logits at a time, and a second temporary costs a tenth of its time
    shifted = np.subtract(logits, peak[:, None])
    np.exp(shifted, out=shifted)
    return peak + np.log(shifted.sum(axis=1))


def distribution_statistics(logits: np.ndarray, log_vocab: float) -> tuple[np.ndarray, np.ndarray]:
    """Per row of next-token logits: the log normaliser, and the self-certainty KL(uniform || p)
    = logsumexp(z) - mean(z) - log V (Kang et al., 2025), which DeepConf's confidences read."""
    lse = logsumexp_rows(logits)
    return lse, lse - logits.mean(axis=1) - log_vocab
