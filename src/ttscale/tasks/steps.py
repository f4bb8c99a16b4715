"""Cutting a completion into blank-line-separated steps, each with its own token statistics."""

from __future__ import annotations

from bisect import bisect_right

from ..core import STEP_SEPARATOR, Completion, Step

_SEP = STEP_SEPARATOR.encode()


def split_steps(completion: Completion) -> list[Step]:
    """Steps of a completion. A token belongs to the step it starts in; separator tokens
    belong to the step they close. Whitespace-only pieces fold into a neighbour, so every
    token is counted exactly once."""
    data = completion.text.encode("utf-8")
    bounds: list[tuple[int, int]] = []  # (start, end) byte ranges of step texts
    sep_ends: list[int] = []
    start = 0
    while True:
        i = data.find(_SEP, start)
        if i < 0:
            bounds.append((start, len(data)))
            break
        bounds.append((start, i))
        j = i + len(_SEP)
        while data[j : j + 1] == b"\n":  # a run of 3+ newlines is one separator
            j += 1
        sep_ends.append(j)
        start = j

    steps = [Step(text=data[a:b].decode("utf-8", errors="replace")) for a, b in bounds]
    for k, offset in enumerate(completion.token_offsets):
        step = steps[min(bisect_right(sep_ends, offset), len(steps) - 1)]
        lp = completion.logprobs[k] if k < len(completion.logprobs) else 0.0
        if step.n_tokens == 0 or lp < step.logprob_min:
            step.logprob_min = lp
        step.n_tokens += 1
        step.logprob_sum += lp
        step.certainty_sum += completion.certainties[k] if k < len(completion.certainties) else 0.0
    captured = list(completion.hidden)
    # Cut short, the text's last token was sampled but never fed back: the last state is the
    # one that sampled it, so it ends the cut step, even where its own token (a separator,
    # say) sits in the step before.
    cut = captured.pop() if completion.finish_reason == "length" and captured else None
    for k, vec in captured:  # a step keeps the last state captured inside it
        if 0 <= k < len(completion.token_offsets):
            steps[min(bisect_right(sep_ends, completion.token_offsets[k]), len(steps) - 1)].hidden = vec
    if cut is not None:
        steps[-1].hidden = cut[1]
    return _fold_blank(steps)


def _fold_blank(steps: list[Step]) -> list[Step]:
    out: list[Step] = []
    pending: Step | None = None  # blank pieces before the first real step
    for s in steps:
        if s.text.strip():
            if pending is not None:
                _absorb(s, pending)
                pending = None
            out.append(s)
        elif out:
            _absorb(out[-1], s)
        elif pending is None:
            pending = s
        else:
            _absorb(pending, s)
    if not out:
        return [pending] if pending is not None and pending.n_tokens else []
    return out


def _absorb(into: Step, other: Step) -> None:
    if other.n_tokens:
        into.logprob_min = min(into.logprob_min, other.logprob_min) if into.n_tokens else other.logprob_min
    into.n_tokens += other.n_tokens
    into.logprob_sum += other.logprob_sum
    into.certainty_sum += other.certainty_sum
    if into.hidden is None:
        into.hidden = other.hidden


def join_steps(steps: list[Step]) -> str:
    return STEP_SEPARATOR.join(s.text for s in steps)
