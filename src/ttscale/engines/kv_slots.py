"""The embedded engine's KV-cache bookkeeping, as pure functions over explicit state: which
sequence slot each prompt continues from, which slots its samples take, how one call's work
is packed into batches that fit the cache, and which slots an out-of-memory decode may drop.
No llama.cpp here: the engine applies these plans with its memory calls, and tests check them
without a model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..core import common_prefix


class SlotError(RuntimeError):
    pass


@dataclass
class Slot:
    tokens: list[int] = field(default_factory=list)  # what this sequence holds in the KV cache
    last_use: int = 0


@dataclass
class Unit:
    """Samples of one prompt text, as (prompt index, sample index) pairs. Identical prompts of
    one call share a unit, so their prompt is computed once; each sample keeps its own seed."""

    tokens: list[int]
    samples: list[tuple[int, int]]

    @property
    def count(self) -> int:
        return len(self.samples)


@dataclass(frozen=True)
class SlotPlan:
    """One prompt's plan: continue from `source` (-1: none), reusing its first `reuse` tokens,
    into `targets` (one slot per sample; the first holds the prompt, the others copy it)."""

    source: int
    reuse: int
    targets: list[int]


def pack_units(
    token_lists: Sequence[list[int]], n: int, n_seq_max: int, n_ctx: int, max_tokens: int
) -> list[list[Unit]]:
    """One call's work (n samples of each prompt) as groups of units that are decoded together:
    a group's sequences fit the slots and, at worst-case length, the KV cache. A search
    expanding one node k times sends k identical prompts: they merge into one unit."""
    samples_of: dict[tuple[int, ...], list[tuple[int, int]]] = {}
    for i, toks in enumerate(token_lists):
        samples_of.setdefault(tuple(toks), []).extend((i, j) for j in range(n))
    units: list[Unit] = []
    for key, samples in samples_of.items():
        per_unit = max(1, min(n_seq_max, (n_ctx - len(key)) // max(1, max_tokens)))
        units += [Unit(list(key), samples[a : a + per_unit]) for a in range(0, len(samples), per_unit)]
    groups: list[list[Unit]] = [[]]
    for u in units:
        g = groups[-1]
        seqs = sum(x.count for x in g) + u.count
        cells = sum(len(x.tokens) + x.count * max_tokens for x in g) + len(u.tokens) + u.count * max_tokens
        if g and (seqs > n_seq_max or cells > n_ctx):
            groups.append([u])
        else:
            g.append(u)
    return groups


def plan_slots(
    slots: Sequence[Slot], prompt_tokens: Sequence[list[int]], counts: Sequence[int], clock: int
) -> list[SlotPlan]:
    """For each prompt, the slot sharing its longest prefix and counts[i] target slots. A
    source is never handed to another prompt as a target, so its prefix survives until
    copied; the first prompt sourcing from a slot continues in place. Free slots are taken
    empty first, then least recently used. Marks the targets used at `clock`."""
    plan_src: list[tuple[int, int]] = []
    for toks in prompt_tokens:
        best, best_len = -1, 0
        for k, slot in enumerate(slots):
            m = common_prefix(slot.tokens, toks)
            if m > best_len:
                best, best_len = k, m
        # The last prompt token is always recomputed: its logits start the sampling.
        plan_src.append((best, min(best_len, len(toks) - 1)))
    sources = {s for s, r in plan_src if r > 0}
    claimed: set[int] = set()
    free = sorted(
        (k for k in range(len(slots)) if k not in sources),
        key=lambda k: (bool(slots[k].tokens), slots[k].last_use),
    )
    plan = []
    for (source, reuse), n in zip(plan_src, counts, strict=True):
        targets: list[int] = []
        if reuse > 0 and source not in claimed:
            claimed.add(source)
            targets.append(source)
        while len(targets) < n:
            if not free:
                raise SlotError("out of sequence slots; raise n_seq_max")
            targets.append(free.pop(0))
        for t in targets:
            slots[t].last_use = clock
        plan.append(SlotPlan(source if reuse > 0 else -1, reuse, targets))
    return plan


def idle_slots(slots: Sequence[Slot], clock: int) -> list[int]:
    """Slots holding tokens that the current call (`clock`) does not use: what a decode that
    ran out of cache may drop before it tries again."""
    return [k for k, slot in enumerate(slots) if slot.last_use < clock and slot.tokens]
