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


# --- the training data a layer-reading verifier learns from (apps/layer_data.py) ---------


def offsets_of(pieces):
    out, at = [], 0
    for p in pieces:
        out.append(at)
        at += len(p.encode())
    return out


@pytest.mark.parametrize(
    ("pieces", "tokens"),
    [
        (["The answer is ", "\\boxed{", "4", "2", "}", "."], [2, 3]),
        (["So ", "\\boxed{42}", " done"], [1]),  # one token holds the whole box
        (["π ≈ ", "\\boxed{", "3", "}"], [2]),  # byte offsets, not characters
        (["\\boxed{1} then ", "\\boxed{", "2", "}"], [2]),  # the last box counts
        (["no box, just 42"], []),
        (["\\boxed{", "4"], []),  # never closed
    ],
)
def test_the_answer_tokens_are_those_of_the_last_box(pieces, tokens):
    from ttscale.tasks.layer_features import answer_tokens

    assert answer_tokens("".join(pieces), offsets_of(pieces)) == tokens


def pooled(n_tokens, ends, layers=(3, 7), width=4, tail=6):
    pool = LayerPooler(layers, width, tail)
    for k in range(n_tokens):
        pool.add(k, states(k, len(layers), width))
        if k in ends:
            pool.end_step()
    return pool.states()


def test_a_solution_keeps_its_answer_tokens_and_its_last_token():
    from ttscale.tasks.layer_features import solution_states

    got = solution_states(pooled(10, {4, 9}), [7, 8])
    assert got["step_last"].shape == (2, 2, 4) and list(got["step_ends"]) == [4, 9]
    np.testing.assert_allclose(got["answer_mean"][:, 0], [7.5, 107.5])
    np.testing.assert_allclose(got["answer_last"][:, 0], [8, 108])
    np.testing.assert_allclose(got["final"][:, 0], [9, 109])
    # an answer the tail no longer holds (tokens 0-3 of 10, tail of 6), or none: NaN, not a guess
    for answer in ([1, 2], []):
        assert np.isnan(solution_states(pooled(10, {9}), answer)["answer_mean"]).all()


class LayeredFake:
    """The fake engine with made-up layer states: token k of a completion holds k + 100 l at
    layer l, so replay gives exactly what sampling gave."""

    layers = (3, 7)
    name = "fake"
    n_params = 1_000_000

    def __init__(self, script=None):
        from ttscale.engines.fake import FakeGenerator

        def whole(prompt, seed):
            right = seed % 2 == 0
            return f"Add them.\n\nThat makes \\boxed{{{7 if right else 8}}}."

        self.fake = FakeGenerator(script or whole)
        self.replayed = 0

    def reset(self):
        self.fake.reset()

    def _with_states(self, c):
        from dataclasses import replace

        data = c.text.encode()
        bounds = [*c.token_offsets[1:], len(data)]
        closing = [k for k, (a, b) in enumerate(zip(c.token_offsets, bounds, strict=True)) if b"\n\n" in data[a:b]]
        ends = {k - 1 for k in closing if k > 0} | {c.n_tokens - 1}  # as the engine closes steps
        return replace(c, layer_states=pooled(c.n_tokens, ends, width=4))

    def generate(self, prompts, n, params):
        from ttscale.core import Generation

        gen = self.fake.generate(prompts, n, params)
        return Generation([[self._with_states(c) for c in row] for row in gen.completions], gen.compute)

    def replay(self, prompt, text, finish_reason="eos"):
        self.replayed += 1
        from ttscale.core import SamplingParams

        gen = self.fake.generate([prompt], 2, SamplingParams(seed=0))
        match = next(c for c in gen.completions[0] if c.text == text)
        return self._with_states(match), gen.compute


def test_a_search_guided_by_the_layer_reward_reads_every_node_from_its_own_decoding():
    """A tree search's nodes carry the states their steps were decoded with, stacked over the
    steps: the reward scores them with no replay (no verifier tokens), reading the last token
    of the newest step and the answer tokens of the step that boxed the answer."""
    from ttscale.core import Problem
    from ttscale.strategies.search import beam_search
    from ttscale.strategies.spec import RunSpec
    from ttscale.verifiers.layer_reward import LayerReward, LayerRewardScorer

    # step 1: "Add them." and the blank line that stops it (4 tokens); step 2 boxes at token 4
    def script(prompt, seed):
        return f"That makes \\boxed{{{7 if seed % 2 else 8}}}." if prompt.partial else "Add them.\n\nrest"

    engine = LayeredFake(script)
    width = 2 * 4  # two layers of four units, side by side
    reward = LayerReward("answer", (3, 7), np.zeros(width), np.ones(width), None, np.full(width, 0.01), 0.0)
    result = beam_search(
        Problem("p", "Find x.", gold="7"),
        engine,
        LayerRewardScorer(reward, engine),
        4,
        beam_width=2,
        spec=RunSpec(SamplingParams(max_tokens=100, seed=0)),
    )
    assert engine.replayed == 0 and result.compute.verifier_tokens == 0
    assert result.candidates and all(c.answer in ("7", "8") for c in result.candidates)
    for c in result.candidates:
        f = c.layer_features
        np.testing.assert_allclose(f["step_last"][:, :, 0], [[3, 103], [4, 104]])  # one row a step
        np.testing.assert_allclose(f["answer_mean"][:, 0], [4, 104])
        np.testing.assert_allclose(f["final"][:, 0], [4, 104])
        assert c.score == pytest.approx(reward.predict(f, [3, 7]))


def test_a_step_without_a_box_keeps_the_answer_its_prefix_read_and_layers_must_agree():
    from ttscale.tasks.layer_features import extend_features, solution_states

    def features(n_tokens, answer, layers=(3, 7)):
        out = solution_states(pooled(n_tokens, {n_tokens - 1}, layers=layers), answer)
        return out | {"layers": np.asarray(layers, dtype=np.int32)}

    boxed, plain = features(5, [3]), features(4, [])
    got = extend_features(boxed, plain)
    np.testing.assert_allclose(got["answer_mean"][:, 0], [3, 103])  # the prefix's box
    np.testing.assert_allclose(got["final"][:, 0], [3, 103])  # the newest step's last token
    assert got["step_last"].shape[0] == 2 and list(got["step_ends"]) == [4, 3]
    assert extend_features(None, plain) is plain and extend_features(boxed, None) is None
    with pytest.raises(ValueError, match="cannot continue"):
        extend_features(boxed, features(4, [], layers=(3, 8)))


def test_collection_resumes_and_rebuilds_missing_states(tmp_path):
    from ttscale.apps.layer_data import collect_layers, rebuild, states_path, summary
    from ttscale.core import Problem, SamplingParams
    from ttscale.util.jsonl import read_jsonl

    problems = [Problem(f"train/{i}", f"What is 3 + {i}?", gold="7") for i in range(3)]
    engine = LayeredFake()
    out = tmp_path / "data"
    assert collect_layers(problems[:2], engine, 2, SamplingParams(seed=0), out, progress=False) == 2
    # a kill in the middle of the second problem's line: it is sampled again, once
    lines = (out / "samples.jsonl").read_text().splitlines()
    (out / "samples.jsonl").write_text(lines[0] + "\n" + lines[1][:40])
    assert collect_layers(problems, engine, 2, SamplingParams(seed=0), out, progress=False) == 2
    records = read_jsonl(out / "samples.jsonl")
    assert [r["id"] for r in records] == ["train/0", "train/1", "train/2"]
    first = records[0]
    assert first["layers"] == [3, 7] and first["sampling"]["seed"] == first["seed"]
    assert [s["correct"] for s in first["solutions"]] == [True, False]
    assert first["solutions"][0]["answer_tokens"] >= 1 and first["solutions"][0]["steps"][0] == "Add them."
    kept = dict(np.load(states_path(out, "train/0")))
    assert kept["answer_mean"].shape == (2, 2, 4) and list(kept["step_solution"]) == [0, 0, 1, 1]
    assert list(kept["layers"]) == [3, 7]
    # a fresh checkout has the samples but not the states: replay writes them again, the same
    for r in records:
        states_path(out, r["id"]).unlink()
    assert summary(out)["with_states"] == 0
    assert rebuild(engine, out, progress=False) == 3 and engine.replayed == 6
    again = dict(np.load(states_path(out, "train/0")))
    assert all(np.array_equal(kept[k], again[k], equal_nan=True) for k in kept)
    done = summary(out)
    assert done["problems"] == 3 and done["solutions"] == 6 and done["correct_share"] == 0.5
    assert done["problems_with_both"] == 3 and done["with_states"] == 3


def test_another_model_rebuilds_a_collection_with_its_own_layers_but_the_sampler_must_match(tmp_path):
    from ttscale.apps.layer_data import LayerDataError, collect_layers, rebuild, states_path
    from ttscale.core import Problem, SamplingParams

    out = tmp_path / "data"
    collect_layers(
        [Problem("train/0", "What is 3 + 4?", gold="7")], LayeredFake(), 2, SamplingParams(seed=0), out, progress=False
    )
    states_path(out, "train/0").unlink()
    same = LayeredFake()
    same.layers = (3,)
    with pytest.raises(LayerDataError, match="collected with layers"):
        rebuild(same, out, progress=False)  # the sampling model, with other layers: a mistake
    reader = LayeredFake()
    reader.name, reader.layers = "larger", (5,)
    assert rebuild(reader, out, progress=False) == 1  # a larger reader of the same texts
    assert list(np.load(states_path(out, "train/0"))["layers"]) == [5]


@pytest.mark.integration
def test_collect_layers_on_the_real_model_and_rebuild_by_replay(tmp_path, capsys):
    """The command end to end: two solutions of one training problem with two layers read,
    then the states thrown away and replayed from the stored texts: the same states."""
    import json

    from ttscale.apps.layer_data import states_path
    from ttscale.cli import main

    data = tmp_path / "train.jsonl"
    row = {"question": "Tom has 3 red balls and 4 blue balls. How many balls?", "answer": "#### 7"}
    data.write_text(json.dumps(row))
    out = tmp_path / "layers"
    args = ["collect-layers", "--data", str(data), "--k", "2", "--layers", "8,-1", "--max-tokens", "96"]
    assert main([*args, "--output", str(out), "--no-progress"]) == 0
    done = json.loads((out / "summary.json").read_text())
    assert done["problems"] == 1 and done["solutions"] == 2 and done["layers"] == [8, 23]
    (record,) = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    path = states_path(out, record["id"])
    sampled = dict(np.load(path))
    assert sampled["step_last"].shape[1:] == (2, 896) and len(sampled["step_solution"]) == len(sampled["step_ends"])
    path.unlink()
    assert main([*args, "--output", str(out), "--rebuild", "--no-progress"]) == 0
    replayed = dict(np.load(path))
    assert list(replayed["step_ends"]) == list(sampled["step_ends"])
    for key in ("step_last", "step_mean", "final", "answer_mean"):
        a, b = sampled[key].astype(np.float32), replayed[key].astype(np.float32)
        assert np.array_equal(np.isnan(a), np.isnan(b)), key
        a, b = a[~np.isnan(a)], b[~np.isnan(b)]
        if a.size:
            assert np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.99, key


def test_an_interrupted_collection_still_writes_what_it_holds(tmp_path, monkeypatch):
    """Ctrl-C in the middle of a long collection leaves summary.json true to the files."""
    import json

    from ttscale.apps.layer_data import collect_layers
    from ttscale.cli import commands, main
    from ttscale.core import Problem, SamplingParams

    out = tmp_path / "data"
    problems = [Problem(f"train/{i}", f"What is 3 + {i}?", gold="7") for i in range(2)]
    assert collect_layers(problems, LayeredFake(), 2, SamplingParams(seed=0), out, progress=False) == 2

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "LlamaCppGenerator", lambda *a, **k: LayeredFake())
    monkeypatch.setattr(commands, "read_judgements", interrupted)
    args = ["collect-layers", "--judge", "--data", str(out / "samples.jsonl"), "--layers", "3,7", "--output", str(out)]
    assert main(args) == 130  # interrupted: re-run to resume
    done = json.loads((out / "summary.json").read_text())
    assert done["problems"] == 2 and done["solutions"] == 4 and done["with_states"] == 2


def test_a_collection_that_cannot_start_reports_its_own_error(tmp_path, monkeypatch, capsys):
    """A missing data file on a fresh output directory is the error shown, not a missing summary."""
    from ttscale.cli import commands, main

    monkeypatch.setattr(commands, "LlamaCppGenerator", lambda *a, **k: LayeredFake())
    out = tmp_path / "fresh"
    assert main(["collect-layers", "--data", str(tmp_path / "missing.jsonl"), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "missing.jsonl" in err and "summary.json" not in err and not out.exists()
