"""The reward over several layers (#25): its readers, the gated step reward's gradient, fitting
and choosing by validation on a synthetic collection, the scorer, and the file it ships as."""

import json

import numpy as np
import pytest

from ttscale.apps.layer_data import stack_solutions, states_path
from ttscale.apps.train_reward import (
    Reader,
    fit_gated,
    fit_reader,
    gated_loss,
    load_problems,
    logits,
    readers,
    report_markdown,
    train_reward,
    within_auroc,
)
from ttscale.core import Candidate, Problem, Step
from ttscale.verifiers.layer_reward import (
    KINDS,
    SOLUTION_KINDS,
    LayerReward,
    LayerRewardError,
    LayerRewardScorer,
    layer_index,
    solution_vectors,
)
from ttscale.verifiers.registry import known_scorer, needs_layers, scorer_name

LAYERS = [12, 20, 23]
WIDTH = 6


def features(rng, right: bool, steps: int = 3, signal: float = 2.0, answer: bool = True):
    """One solution's arrays: layer 20 (index 1) carries the outcome along unit 0 at its
    answer tokens and its last token; the step states carry it at the last step only."""
    shift = signal if right else -signal
    step_last = rng.normal(size=(steps, len(LAYERS), WIDTH))
    step_last[-1, 1, 0] += shift
    final = rng.normal(size=(len(LAYERS), WIDTH))
    final[1, 0] += shift
    answer_mean = final + 0.1 * rng.normal(size=final.shape) if answer else np.full(final.shape, np.nan)
    return {
        "step_last": step_last.astype(np.float16),
        "step_mean": rng.normal(size=(steps, len(LAYERS), WIDTH)).astype(np.float16),
        "step_ends": np.arange(steps, dtype=np.int32) * 10 + 9,
        "answer_mean": answer_mean.astype(np.float16),
        "answer_last": answer_mean.astype(np.float16),
        "final": final.astype(np.float16),
        "layers": np.asarray(LAYERS, dtype=np.int32),
    }


@pytest.mark.parametrize(
    ("kind", "answer", "shape"),
    [
        ("final", True, (1, 2 * WIDTH)),
        ("answer", True, (1, 2 * WIDTH)),
        ("answer", False, (1, 2 * WIDTH)),  # no box: the last token stands in
        ("gated_last", True, (3, 2 * WIDTH)),
        ("gated_mean", True, (3, 2 * WIDTH)),
        ("judge", True, (1, 2 * WIDTH)),  # a judge's states where it answers
    ],
)
def test_each_reader_reads_the_chosen_layers_side_by_side(kind, answer, shape):
    assert kind in KINDS
    f = features(np.random.default_rng(0), True, answer=answer)
    f["judge"] = f["final"] + 1.0
    rows = layer_index(LAYERS, (20, 23))
    got = solution_vectors(kind, f, rows)
    assert got.shape == shape and np.isfinite(got).all()
    if kind == "answer" and not answer:
        assert np.array_equal(got, solution_vectors("final", f, rows))
    if kind == "judge":
        assert np.allclose(got, solution_vectors("final", f, rows) + 1.0, atol=0.01)


def test_a_reader_asking_for_a_layer_the_states_lack_says_which():
    with pytest.raises(LayerRewardError, match=r"reads \[21\]"):
        layer_index(LAYERS, (20, 21))
    with pytest.raises(LayerRewardError, match="unknown reader"):
        solution_vectors("nope", features(np.random.default_rng(0), True), [0])


def test_the_gated_losss_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    k = 4
    z = rng.normal(size=(11, k))
    seg = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3])
    y = np.array([1.0, 0.0, 1.0, 0.0])
    theta = rng.normal(size=2 * k + 2) * 0.5
    _, grad = gated_loss(theta, z, seg, y, l2=0.3)
    eps = 1e-6
    numeric = [
        (gated_loss(theta + eps * e, z, seg, y, 0.3)[0] - gated_loss(theta - eps * e, z, seg, y, 0.3)[0]) / (2 * eps)
        for e in np.eye(len(theta))
    ]
    assert grad == pytest.approx(numeric, rel=1e-4, abs=1e-6)


def test_the_gate_learns_to_weigh_the_step_that_carries_the_outcome():
    rng = np.random.default_rng(2)
    steps, y = [], []
    for i in range(200):
        right = i % 2 == 0
        z = rng.normal(size=(3, 2))
        z[-1, 0] += 3.0 if right else -3.0  # the outcome is in the last step's unit 0
        z[:, 1] = [-2.0, -2.0, 2.0]  # unit 1 tells the last step from the others
        steps.append(z)
        y.append(float(right))
    w, b, u, c = fit_gated(steps, np.array(y), l2=0.01)
    gates = 1 / (1 + np.exp(-(steps[0] @ u + c)))
    assert gates[-1] > 2 * gates[:-1].max()
    logit = [
        (1 / (1 + np.exp(-(z @ u + c))) * (z @ w)).sum() / (1 / (1 + np.exp(-(z @ u + c)))).sum() + b for z in steps
    ]
    assert np.mean([(x > 0) == bool(t) for x, t in zip(logit, y, strict=True)]) > 0.9


def problems_of(rng, n_problems: int, k: int = 8):
    from ttscale.apps.train_reward import Solution

    out = []
    for _ in range(n_problems):
        right = rng.random(k) < 0.5
        right[0], right[1] = True, False  # every problem has both
        out.append([Solution(features(rng, bool(r)), bool(r), 1.0 / k) for r in right])
    return out


@pytest.mark.parametrize(
    "reader",
    [
        Reader("final", (20,), 10.0),
        Reader("answer", (12, 20, 23), 10.0),
        Reader("gated_last", (20,), 0.1, components=6),
    ],
)
def test_a_fitted_reader_ranks_held_out_problems_by_the_layer_that_knows(reader):
    rng = np.random.default_rng(3)
    fit, held = problems_of(rng, 40), problems_of(rng, 15)
    reward = fit_reader(reader, fit, LAYERS, "sha")
    score, each = within_auroc(logits(reward, held, LAYERS), held)
    assert score > 0.85 and len(each) == 15


def test_a_reader_of_a_layer_that_knows_nothing_ranks_at_chance():
    rng = np.random.default_rng(4)
    fit, held = problems_of(rng, 40), problems_of(rng, 30)
    reward = fit_reader(Reader("final", (12,), 10.0), fit, LAYERS, "sha")
    assert 0.35 < within_auroc(logits(reward, held, LAYERS), held)[0] < 0.65


def difficulty_problems(rng, n_problems: int, k: int = 8):
    """Problems of varying difficulty d: the share of right solutions rises with d, and unit 1
    of layer 20 is 2d plus noise, so across problems it predicts the outcome, while among one
    problem's solutions it is noise; unit 0 carries a weak outcome signal within each."""
    from ttscale.apps.train_reward import Solution

    out = []
    for _ in range(n_problems):
        d = rng.normal()
        right = rng.random(k) < 1 / (1 + np.exp(-4 * d))
        right[0], right[1] = True, False
        sols = []
        for r in right:
            f = features(rng, bool(r), signal=0.5)
            answer = f["answer_mean"].astype(np.float32)
            answer[1, 1] = 2 * d + 2 * rng.normal()
            f["answer_mean"] = answer.astype(np.float16)
            sols.append(Solution(f, bool(r), 1.0 / k))
        out.append(sols)
    return out


def test_a_within_problem_reader_ignores_what_only_tells_hard_problems_from_easy_ones():
    rng = np.random.default_rng(1)
    fit, held = difficulty_problems(rng, 60), difficulty_problems(rng, 40)
    fitted = {w: fit_reader(Reader("answer", (20,), 1.0, components=6, within=w), fit, LAYERS) for w in (False, True)}

    def nuisance_share(r):  # |weight on the difficulty unit| / |weight on the outcome unit|, raw units
        eff = (r.projection @ r.weights) / r.scale
        return abs(eff[1] / eff[0])

    assert nuisance_share(fitted[False]) > 0.25 and nuisance_share(fitted[True]) < 0.1
    plain, within = (within_auroc(logits(fitted[w], held, LAYERS), held)[0] for w in (False, True))
    assert within > plain + 0.05
    # still a probability: calibrated on the raw states, its mean is the share of right ones
    rows = layer_index(LAYERS, (20,))
    p = [fitted[True].predict(s.features, LAYERS) for q in fit for s in q]
    assert abs(np.mean(p) - np.mean([s.correct for q in fit for s in q])) < 0.05
    assert fitted[True].logit(solution_vectors("answer", fit[0][0].features, rows)) == pytest.approx(
        np.log(p[0] / (1 - p[0])), abs=1e-6
    )


def test_the_grid_fits_every_token_probe_within_problems_too():
    grid = readers([20, 23])
    within = [r for r in grid if r.within]
    assert {r.kind for r in within} == {"final", "answer"} and len(within) == 2 * 3 * 3
    assert all("within-problem" in r.label for r in within) and not any("within" in r.label for r in grid[:6])


def write_collection(tmp_path, rng, n_problems: int = 30, k: int = 8):
    out = tmp_path / "layers"
    lines = []
    for p in range(n_problems):
        right = rng.random(k) < 0.5
        right[0], right[1] = True, False
        sols = [features(rng, bool(r)) for r in right]
        arrays = stack_solutions(sols, LAYERS)
        path = states_path(out, f"q{p}")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)
        # the wrong ones disagree with each other, the right ones agree: the vote knows too
        answers = ["7" if r else str(10 + i) for i, r in enumerate(right)]
        sol_records = [{"answer": a, "correct": bool(r)} for a, r in zip(answers, right, strict=True)]
        lines.append(json.dumps({"id": f"q{p}", "solutions": sol_records}))
    (out / "samples.jsonl").write_text("\n".join(lines) + "\n")
    return out


def test_loading_a_collection_splits_each_problem_back_into_its_solutions(tmp_path):
    out = write_collection(tmp_path, np.random.default_rng(5), n_problems=3)
    problems, layers, kinds = load_problems(out)
    assert layers == LAYERS and len(problems) == 3 and kinds == SOLUTION_KINDS and all(len(p) == 8 for p in problems)
    first = problems[0][0]
    assert first.features["step_last"].shape == (3, 3, WIDTH) and first.features["final"].shape == (3, WIDTH)
    assert first.correct and first.vote_share == pytest.approx(sum(s.correct for s in problems[0]) / 8)


def test_the_committed_answer_states_train_the_answer_reader_without_the_full_states(tmp_path):
    from ttscale.apps.layer_data import answers_path, write_answers
    from ttscale.apps.train_reward import TrainRewardError

    out = write_collection(tmp_path, np.random.default_rng(9))
    grid = [Reader("answer", (12,), 10.0), Reader("answer", (20,), 10.0)]
    _, with_states = train_reward(out, "sha", grid=grid, progress=False)
    assert write_answers(out) == 30 and write_answers(out) == 0  # once per problem
    with np.load(answers_path(out, "q0")) as z, np.load(states_path(out, "q0")) as full:
        assert z["answer_mean"].dtype == np.float16 and z["answer_mean"].shape == (8, len(LAYERS), WIDTH)
        assert np.array_equal(z["answer_mean"], full["answer_mean"]) and z["has_answer"].all()
    for f in (out / "states").iterdir():  # a fresh checkout: only what git holds
        f.unlink()
    problems, layers, kinds = load_problems(out)
    assert kinds == ("answer",) and layers == LAYERS and set(problems[0][0].features) == {"answer_mean"}
    _, from_answers = train_reward(out, "sha", grid=grid, progress=False)
    assert from_answers["validation"] == with_states["validation"]  # the same numbers, nothing replayed
    assert from_answers["readers_served"] == ["answer"] and with_states["readers_served"] == list(SOLUTION_KINDS)
    assert all(t["reader"].startswith("answer") for t in train_reward(out, "sha", progress=False)[1]["tried"])
    with pytest.raises(TrainRewardError, match="--rebuild"):
        train_reward(out, "sha", grid=[Reader("final", (20,), 10.0)], progress=False)
    assert len(list((out / "answers").iterdir())) == 30


def test_a_solution_without_answer_tokens_commits_its_last_tokens_state():
    from ttscale.apps.layer_data import answer_arrays

    rng = np.random.default_rng(10)
    arrays = stack_solutions([features(rng, True), features(rng, False, answer=False)], LAYERS)
    kept = answer_arrays(arrays)
    assert kept["has_answer"].tolist() == [True, False]
    assert np.array_equal(kept["answer_mean"][1], arrays["final"][1])
    assert solution_vectors("answer", {"answer_mean": kept["answer_mean"][1]}, [1]).tolist() == (
        solution_vectors("answer", {k: v[1] for k, v in arrays.items() if k in ("answer_mean", "final")}, [1]).tolist()
    )


def test_a_collection_without_states_is_a_clear_error(tmp_path):
    from ttscale.apps.train_reward import TrainRewardError

    out = write_collection(tmp_path, np.random.default_rng(5), n_problems=2)
    for f in (out / "states").iterdir():
        f.unlink()
    with pytest.raises(TrainRewardError, match="--rebuild"):
        load_problems(out)


def test_training_chooses_by_cross_validation_and_judges_on_held_out_problems(tmp_path):
    out = write_collection(tmp_path, np.random.default_rng(6))
    grid = [Reader("final", (12,), 10.0), Reader("final", (20,), 10.0), Reader("gated_last", (20,), 0.1, 4)]
    reward, report = train_reward(out, "sha256-of-model", grid=grid, progress=False)
    assert report["chosen"] != grid[0].label  # layer 12 carries nothing
    assert report["val_problems"] == 6 and report["fit_problems"] == 24
    v = report["validation"]
    assert set(v) == {"reward", "vote_share", "reward+vote_share"}
    assert v["reward"]["auroc_within_problem"] > 0.8
    assert v["reward"]["ci"][0] <= v["reward"]["auroc_within_problem"] <= v["reward"]["ci"][1]
    assert [t["reader"] for t in report["tried"]] == [r.label for r in grid]
    md = report_markdown(report)
    assert "| vote_share |" in md and "reward+vote_share" in md
    path = tmp_path / "reward.npz"
    reward.save(path)
    again = LayerReward.load(path, "sha256-of-model")
    assert again.kind == reward.kind and again.layers == reward.layers and again.meta["chosen"] == report["chosen"]


def test_a_reward_is_tied_to_its_models_checksum_and_a_bad_file_is_a_clear_error(tmp_path):
    rng = np.random.default_rng(7)
    reward = fit_reader(Reader("final", (20,), 10.0), problems_of(rng, 10), LAYERS, "aaa")
    reward.save(tmp_path / "r.npz")
    with pytest.raises(LayerRewardError, match="sha256"):
        LayerReward.load(tmp_path / "r.npz", "bbb")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(LayerRewardError, match="cannot read"):
        LayerReward.load(tmp_path / "bad.npz")


def test_the_scorer_reads_the_states_a_sampling_pass_kept_and_charges_its_arithmetic():
    rng = np.random.default_rng(8)
    reward = fit_reader(Reader("gated_last", (20, 23), 0.1, 4), problems_of(rng, 30), LAYERS, "sha")
    scorer = LayerRewardScorer(reward)
    cands = []
    for right in (True, False):
        c = Candidate(text="x", steps=[Step("x", 3)], answer="1")
        c.layer_features = features(rng, right, signal=4.0)
        cands.append(c)
    scores, compute = scorer.score(Problem("p", "q"), cands)
    assert [len(s) for s in scores] == [1, 1] and scores[0][0] > scores[1][0]
    assert compute.flops > 0 and compute.verifier_tokens == 0
    bare = Candidate(text="x", steps=[Step("x", 3)], answer="1")
    with pytest.raises(LayerRewardError, match="replay"):
        scorer.score(Problem("p", "q"), [bare])


@pytest.mark.parametrize(
    ("spec", "known", "layers", "stored_as"),
    [
        ("layers", True, True, "layers"),
        ("layersx", False, False, "layersx"),
        ("probe", True, False, "probe"),
    ],
)
def test_the_layer_reward_is_named_in_the_registry(spec, known, layers, stored_as):
    assert known_scorer(spec) is known
    assert needs_layers(spec) is layers
    assert scorer_name(spec) == stored_as


def test_reward_files_are_named_by_content_so_two_of_one_stem_never_mix(tmp_path):
    rng = np.random.default_rng(9)
    first, second, copy = tmp_path / "a" / "r.npz", tmp_path / "b" / "r.npz", tmp_path / "c" / "r.npz"
    for path in (first, second, copy):
        path.parent.mkdir()
    fit_reader(Reader("final", (20,), 10.0), problems_of(rng, 10), LAYERS, "sha").save(first)
    fit_reader(Reader("final", (20,), 0.1), problems_of(rng, 10), LAYERS, "sha").save(second)
    copy.write_bytes(first.read_bytes())
    name = scorer_name(f"layers@{first}")
    assert name.startswith("layers@") and len(name) == len("layers@") + 12
    assert name == scorer_name(f"layers@{copy}") != scorer_name(f"layers@{second}")
    with pytest.raises(LayerRewardError, match="cannot read layer reward"):
        scorer_name(f"layers@{tmp_path / 'missing.npz'}")


def random_last_token_reward(gen, layers, scale, seed, folder):
    """A saved reward on `gen`'s own layers that reads the last token with random weights
    (states divided by `scale`): enough to tell whether two readings of a text agree."""
    width = len(layers) * gen.n_embd
    weights = np.random.default_rng(seed).normal(size=width) / np.sqrt(width)
    reward = LayerReward(
        "final", layers, np.zeros(width), np.full(width, scale), None, weights, 0.0, model_sha256=gen.spec.sha256
    )
    path = folder / "reward.npz"
    reward.save(path)
    return path


@pytest.mark.integration
@pytest.mark.parametrize("layers", [(8, 23), (8, 22)])
def test_the_layer_reward_scores_a_live_sample_as_it_scores_its_replay(tmp_path, layers):
    """On the real model: candidates sampled with layers carry their states and cost the
    reward no forward pass; the same texts without them are replayed (charged as verifier
    tokens) and score the same, whether the reward reads the last layer (the replay asks
    for every token's logits, so llama.cpp keeps all its rows) or earlier ones only (the
    replay asks for none)."""
    from ttscale.core import SamplingParams
    from ttscale.engines.llamacpp import LlamaCppGenerator
    from ttscale.strategies.candidates import from_completion
    from ttscale.tasks.domain import MathDomain
    from ttscale.tasks.prompts import SYSTEM_PROMPT

    problem = Problem("balls", "Tom has 3 red balls and 4 blue balls. How many balls does he have?")
    gen = LlamaCppGenerator(n_ctx=2048, n_seq_max=4, layers=layers)
    try:
        out = gen.generate([MathDomain(problem).prompt(SYSTEM_PROMPT)], 2, SamplingParams(max_tokens=80, seed=5))
        live = [from_completion(c) for c in out.completions[0]]
        assert all(c.layer_features is not None for c in live)
        vectors = np.concatenate([solution_vectors("final", c.layer_features, [0, 1]) for c in live])
        rms = np.sqrt((vectors**2).mean()) + 1e-6
        path = random_last_token_reward(gen, layers, rms, 0, tmp_path)
        scorer = LayerRewardScorer.for_generator(gen, str(path))
        assert scorer.name == scorer_name(f"layers@{path}") != "layers"
        live_scores, live_cost = scorer.score(problem, live)
        stored = [from_completion(c) for c in out.completions[0]]
        for c in stored:
            c.layer_features = None
        replay_scores, replay_cost = scorer.score(problem, stored)
    finally:
        gen.close()
    assert live_cost.verifier_tokens == 0 and replay_cost.verifier_tokens >= sum(c.n_tokens for c in live)
    assert replay_cost.flops > live_cost.flops > 0
    assert np.ravel(replay_scores) == pytest.approx(np.ravel(live_scores), abs=0.05)


@pytest.mark.integration
def test_a_real_search_guided_by_the_layer_reward_reads_its_nodes_from_the_decoding_not_a_replay(tmp_path):
    """On the real model: a beam search's nodes carry the states their steps were sampled
    with, so the reward guiding it costs no verifier tokens, and a node's live score is the
    score a replay of its whole text gives (the last token saw the same context)."""
    from dataclasses import replace

    from ttscale.core import SamplingParams
    from ttscale.engines.llamacpp import LlamaCppGenerator
    from ttscale.strategies.search import beam_search
    from ttscale.strategies.spec import RunSpec

    problem = Problem("balls", "Tom has 3 red balls and 4 blue balls. How many balls does he have?")
    layers = (8, 22)
    gen = LlamaCppGenerator(n_ctx=2048, n_seq_max=4, layers=layers)
    try:
        scorer = LayerRewardScorer.for_generator(gen, str(random_last_token_reward(gen, layers, 2.0, 1, tmp_path)))
        spec = RunSpec(SamplingParams(max_tokens=60, seed=2), aggregation="last", step_tokens=24)
        result = beam_search(problem, gen, scorer, 2, beam_width=2, spec=spec)
        live = [c.score for c in result.candidates]
        stored = [replace(c, layer_features=None) for c in result.candidates]
        replayed, cost = scorer.score(problem, stored)
    finally:
        gen.close()
    assert result.compute.verifier_tokens == 0 and cost.verifier_tokens > 0
    rows = [len(c.layer_features["step_last"]) for c in result.candidates]
    assert max(rows) >= 2 and all(r >= len(c.steps) for r, c in zip(rows, result.candidates, strict=True))
    assert np.ravel(replayed) == pytest.approx(live, abs=0.05)


def test_the_shipped_reward_is_stored_under_the_name_its_scorer_gives_itself():
    from ttscale.verifiers.layer_reward import packaged_reward, reward_name

    shipped = packaged_reward("qwen2.5-coder-0.5b")
    assert shipped is not None
    assert scorer_name(f"layers@{shipped}") == reward_name(shipped) == "layers"


def test_only_a_reward_on_its_own_models_solutions_may_ship_as_that_models_default(tmp_path):
    """A shipped layers-MODEL file is stored under the plain name "layers", which a run of that
    policy reads as its own states' reward: a judge probe, or a reward on another model's
    layers, placed there is refused as a packaging error instead of being misnamed."""
    from ttscale.engines.models import REGISTRY
    from ttscale.verifiers.layer_reward import checked_default

    sha = REGISTRY["qwen2.5-coder-0.5b"].sha256
    rng = np.random.default_rng(3)
    own, foreign, judge = (tmp_path / f"{n}.npz" for n in ("own", "foreign", "judge"))
    fit_reader(Reader("final", (20,), 1.0), problems_of(rng, 10), LAYERS, sha).save(own)
    fit_reader(Reader("final", (20,), 1.0), problems_of(rng, 10), LAYERS, "f" * 64).save(foreign)
    LayerReward("judge", (20,), np.zeros(4), np.ones(4), None, np.ones(4), 0.0, model_sha256=sha).save(judge)
    assert checked_default(own, "qwen2.5-coder-0.5b") == own
    with pytest.raises(LayerRewardError, match="trained on the layers of the model"):
        checked_default(foreign, "qwen2.5-coder-0.5b")
    with pytest.raises(LayerRewardError, match="'judge' reader: ship it under another name"):
        checked_default(judge, "qwen2.5-coder-0.5b")


@pytest.mark.parametrize("given, written", [("judge-probe-1.5b", "judge-probe-1.5b"), ("rep.md", "rep")])
def test_the_training_report_keeps_a_stem_with_a_dot_in_it(tmp_path, monkeypatch, given, written):
    """`--report DIR/judge-probe-1.5b` writes judge-probe-1.5b.md and .json, not judge-probe-1.md."""
    from ttscale.cli import commands, main

    out = write_collection(tmp_path, np.random.default_rng(6))
    grid = [Reader("final", (20,), 10.0)]
    monkeypatch.setattr(commands, "train_reward", lambda *a, **k: train_reward(*a[:5], grid=grid, progress=False))
    args = ["train-reward", "--data", str(out), "--output", str(tmp_path / "r.npz"), "--report", str(tmp_path / given)]
    assert main(args) == 0
    assert (tmp_path / f"{written}.md").is_file() and (tmp_path / f"{written}.json").is_file()
    assert json.loads((tmp_path / f"{written}.json").read_text())["chosen"] == grid[0].label
