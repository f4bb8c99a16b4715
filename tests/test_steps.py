from ttscale.core import Completion
from ttscale.tasks.steps import join_steps, split_steps


def completion(pieces, logprobs=None):
    text = ""
    offsets = []
    for p in pieces:
        offsets.append(len(text.encode()))
        text += p
    lps = logprobs or [-0.1 * (k + 1) for k in range(len(pieces))]
    return Completion(text, list(range(len(pieces))), lps, [1.0] * len(pieces), offsets, "eos")


def test_tokens_go_to_the_step_they_start_in_and_separators_close_a_step():
    c = completion(["First", " step", ".\n\n", "Second", "\n\n", "Third", " one"])
    steps = split_steps(c)
    assert [s.text for s in steps] == ["First step.", "Second", "Third one"]
    assert [s.n_tokens for s in steps] == [3, 2, 2]
    assert sum(s.n_tokens for s in steps) == len(c.token_ids)
    assert abs(steps[0].logprob_sum - (-0.1 - 0.2 - 0.3)) < 1e-9
    assert abs(steps[0].logprob_min + 0.3) < 1e-9
    assert join_steps(steps) == c.text


def test_runs_of_newlines_and_blank_pieces_fold_without_losing_tokens():
    c = completion(["\n\n", "A", "\n\n\n\n", "B", "\n\n", "  ", "\n\n", "C"])
    steps = split_steps(c)
    assert [s.text for s in steps] == ["A", "B", "C"]
    assert sum(s.n_tokens for s in steps) == 8
    assert sum(s.certainty_sum for s in steps) == 8.0


def test_multibyte_text_keeps_byte_offsets_aligned():
    c = completion(["π ≈ 3.14", "\n\n", "ü", "ber"])
    steps = split_steps(c)
    assert [s.text for s in steps] == ["π ≈ 3.14", "über"]
    assert [s.n_tokens for s in steps] == [2, 2]


def test_empty_completion_has_no_steps():
    assert split_steps(Completion("", [], [], [], [], "eos")) == []


def test_a_step_cut_by_the_length_limit_ends_with_the_state_that_sampled_its_last_token():
    # "A.\n\n" closes step one (its state is token 0's); the limit cuts "B" after one token, so
    # the last state captured is the separator's (token 1): it belongs to step two, and step
    # one keeps its own
    c = completion(["A.", "\n\n", "B"])
    c.finish_reason = "length"
    c.hidden = [(0, "state of A."), (1, "state that sampled B")]
    steps = split_steps(c)
    assert [s.text for s in steps] == ["A.", "B"]
    assert [s.hidden for s in steps] == ["state of A.", "state that sampled B"]
    c.finish_reason = "eos"  # not cut: every state goes to the step its token sits in
    c.hidden = [(0, "state of A."), (2, "state of B")]
    assert [s.hidden for s in split_steps(c)] == ["state of A.", "state of B"]
