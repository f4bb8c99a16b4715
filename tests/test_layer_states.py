"""Several layers' hidden states read out of the sampling decode (#25): which layers a
request names, how one sequence's states are pooled, and the real engine's tap."""

import numpy as np
import pytest

from ttscale.core import SamplingParams
from ttscale.engines.layer_tap import resolve_layers
from ttscale.engines.sequences import LayerPooler
from ttscale.tasks.prompts import problem_prompt


@pytest.mark.parametrize(
    ("n_layer", "asked", "layers"),
    [
        (24, [12], (12,)),
        (24, [-1], (23,)),
        (24, [-24], (0,)),
        (24, [-1, 8, 16, -4], (8, 16, 20, 23)),
        (28, [0, 27], (0, 27)),
    ],
)
def test_layers_are_counted_as_the_model_counts_them(n_layer, asked, layers):
    assert resolve_layers(n_layer, asked) == layers


@pytest.mark.parametrize(
    ("asked", "says"),
    [
        ([], "at least one"),
        ([24], "does not exist"),
        ([-25], "does not exist"),
        ([23, -1], "twice"),
        ([1.5], "integer"),
        ([True], "integer"),
    ],
)
def test_a_layer_that_is_not_there_is_refused(asked, says):
    with pytest.raises(ValueError, match=says):
        resolve_layers(24, asked)


def states(index, layers=2, width=3):
    """A recognisable state for token `index`: every unit of layer l holds index + 100 l."""
    return np.array([[index + 100.0 * layer] * width for layer in range(layers)], dtype=np.float32)


def test_a_sequence_is_pooled_per_step_with_its_last_tokens_kept():
    pool = LayerPooler((8, 23), width=3, tail=4)
    pool.end_step()  # a step closed by the first token sampled: no state yet, nothing added
    for k in range(3):
        pool.add(k, states(k))
    pool.end_step()
    for k in range(3, 8):
        pool.add(k, states(k))
    got = pool.states()  # closes the open step
    assert got.layers == (8, 23)
    assert got.step_ends == [2, 7]
    assert got.step_last.shape == got.step_mean.shape == (2, 2, 3)
    assert got.step_last.dtype == np.float16
    np.testing.assert_allclose(got.step_last[:, 0, 0], [2, 7])
    np.testing.assert_allclose(got.step_mean[:, 0, 0], [1, 5])  # mean of 0..2, of 3..7
    np.testing.assert_allclose(got.step_mean[:, 1, 0], [101, 105])
    # the tail: the last four tokens one by one
    assert got.tail_start == 4 and got.tail.shape == (4, 2, 3)
    np.testing.assert_allclose(got.tail[:, 0, 0], [4, 5, 6, 7])


def test_a_completion_without_states_has_empty_arrays():
    got = LayerPooler((3,), width=5).states()
    assert got.step_ends == [] and got.step_last.shape == (0, 1, 5) and got.tail.shape == (0, 1, 5)


def test_tokens_come_in_order():
    pool = LayerPooler((1,), width=3)
    pool.add(4, states(4, layers=1))
    with pytest.raises(ValueError, match="came after"):
        pool.add(4, states(4, layers=1))


@pytest.mark.integration
def test_the_engine_reads_layers_while_it_samples():
    """The tap changes nothing that is sampled; it gives every step's states from the chosen
    layers; replaying the sampled text gives the same states."""
    from ttscale.engines.llamacpp import LlamaCppGenerator

    prompt = problem_prompt("Tom has 3 red balls and 4 blue balls. How many balls does he have?")
    params = SamplingParams(max_tokens=60, seed=3)
    plain = LlamaCppGenerator(n_ctx=2048, n_seq_max=4)
    try:
        expected = plain.generate([prompt], 2, params).completions[0]
    finally:
        plain.close()
    tapped = LlamaCppGenerator(n_ctx=2048, n_seq_max=4, layers=(8, -1), hidden_states=True)
    try:
        out = tapped.generate([prompt], 2, params).completions[0]
        assert [c.token_ids for c in out] == [c.token_ids for c in expected]
        for c in out:
            got = c.layer_states
            assert got.layers == (8, 23)
            steps = len(got.step_ends)
            assert steps == len([i for i, _ in c.hidden if i >= 0])  # where the probe's state is read
            assert got.step_last.shape == got.step_mean.shape == (steps, 2, tapped.n_embd)
            assert got.step_ends == [i for i, _ in c.hidden if i >= 0]
            last = got.step_ends[-1]
            assert got.tail_start + len(got.tail) == last + 1
            np.testing.assert_array_equal(got.tail[-1], got.step_last[-1])
            assert not np.allclose(got.step_mean[-1], got.step_last[-1])
            assert np.abs(got.step_last).sum() > 0 and np.isfinite(got.step_last.astype(np.float32)).all()
        again, _ = tapped.replay(prompt, out[0].text, out[0].finish_reason)
        ours, theirs = out[0].layer_states, again.layer_states
        assert theirs.step_ends == ours.step_ends and theirs.tail_start == ours.tail_start
        a, b = ours.step_last.astype(np.float32).ravel(), theirs.step_last.astype(np.float32).ravel()
        assert np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.99  # batched vs one by one
    finally:
        tapped.close()
