"""The embedded engine's KV-slot planning, without llama.cpp."""

import pytest

from ttscale.engines.kv_slots import Slot, SlotError, idle_slots, pack_units, plan_slots


def test_identical_prompts_of_one_call_share_one_unit():
    groups = pack_units([[1, 2, 3], [1, 2, 3], [9]], n=2, n_seq_max=8, n_ctx=1000, max_tokens=10)
    (group,) = groups
    assert [u.tokens for u in group] == [[1, 2, 3], [9]]
    assert group[0].samples == [(0, 0), (0, 1), (1, 0), (1, 1)]  # each sample keeps its own index


@pytest.mark.parametrize(
    ("n", "n_seq_max", "n_ctx", "max_tokens", "sizes"),
    [
        (4, 8, 1000, 10, [[4]]),  # everything fits one batch
        (10, 4, 1000, 10, [[4], [4], [2]]),  # more samples than slots: one unit per batch of slots
        (4, 8, 43, 10, [[4]]),  # 3 prompt tokens + 4 x 10: exactly the cache
        (4, 8, 42, 10, [[3], [1]]),  # one cell short: the fourth sample waits for the next batch
    ],
)
def test_units_fit_the_slots_and_the_cache_at_worst_case_length(n, n_seq_max, n_ctx, max_tokens, sizes):
    groups = pack_units([[1, 2, 3]], n, n_seq_max, n_ctx, max_tokens)
    assert [[u.count for u in g] for g in groups] == sizes
    for g in groups:
        assert sum(u.count for u in g) <= n_seq_max
        assert sum(len(u.tokens) + u.count * max_tokens for u in g) <= max(n_ctx, len(g[0].tokens) + max_tokens)


def test_a_prompt_continues_from_the_slot_with_its_longest_prefix():
    slots = [Slot([1, 2]), Slot([1, 2, 3, 4, 5]), Slot(), Slot()]
    (p,) = plan_slots(slots, [[1, 2, 3, 4, 9]], [1], clock=1)
    assert (p.source, p.reuse, p.targets) == (1, 4, [1])  # in place: the source is its own target


def test_the_last_prompt_token_is_always_recomputed():
    slots = [Slot([1, 2, 3]), Slot()]
    (p,) = plan_slots(slots, [[1, 2, 3]], [1], clock=1)
    assert p.reuse == 2  # its logits start the sampling


def test_a_source_is_never_handed_to_another_prompt():
    slots = [Slot([1, 2, 3]), Slot(), Slot(), Slot()]
    a, b = plan_slots(slots, [[1, 2, 3, 4], [1, 2, 3, 5]], [1, 2], clock=1)
    assert a.targets == [0] and a.source == 0
    assert b.source == 0 and 0 not in b.targets and len(b.targets) == 2  # copies from slot 0, lands elsewhere


def test_free_slots_go_empty_first_then_least_recently_used():
    slots = [Slot([7], last_use=5), Slot([8], last_use=2), Slot(), Slot([9], last_use=1)]
    (p,) = plan_slots(slots, [[1]], [3], clock=6)
    assert p.targets == [2, 3, 1]
    assert all(slots[t].last_use == 6 for t in p.targets)


def test_too_many_samples_for_the_slots_is_an_error():
    with pytest.raises(SlotError, match="raise n_seq_max"):
        plan_slots([Slot(), Slot()], [[1]], [3], clock=1)


def test_idle_slots_are_those_holding_tokens_the_current_call_does_not_use():
    slots = [Slot([1], last_use=3), Slot([2], last_use=2), Slot([], last_use=1), Slot([4], last_use=1)]
    assert idle_slots(slots, clock=3) == [1, 3]
