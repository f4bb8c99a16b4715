"""A second model that reads the policy's solutions (#20): the outcome judge, by the policy or
a larger model loaded once, and a layer reward trained on another model's layers."""

import hashlib

import numpy as np
import pytest

from ttscale.core import Candidate, Problem, Step
from ttscale.engines.fake import FakeGenerator
from ttscale.verifiers import readers
from ttscale.verifiers.judge import OutcomeJudgeScorer, outcome_prompt
from ttscale.verifiers.registry import known_scorer, make_scorer, scorer_name


def candidate(text: str) -> Candidate:
    return Candidate(text=text, steps=[Step(text, 5)], answer=text[-1])


@pytest.mark.parametrize(
    ("spec", "known", "stored_as"),
    [
        ("outcome_judge", True, "outcome_judge"),
        ("outcome_judge:qwen2.5-coder-1.5b", True, "outcome_judge:qwen2.5-coder-1.5b"),
        ("outcome_judge:", False, "outcome_judge:"),
        ("outcome_judgex", False, "outcome_judgex"),
    ],
)
def test_the_outcome_judge_is_named_with_its_model(spec, known, stored_as):
    assert known_scorer(spec) is known
    assert scorer_name(spec) == stored_as


def test_the_outcome_judge_scores_each_whole_solution_once_and_charges_its_prefill():
    policy = FakeGenerator(lambda p, s: "x")
    scorer = make_scorer("outcome_judge", policy)
    assert isinstance(scorer, OutcomeJudgeScorer) and scorer.engine is policy
    problem = Problem("p", "What is 3 + 4?")
    cands = [candidate("3 + 4 = 7"), candidate("3 + 4 = 8"), candidate("3 + 4 = 7")]
    scores, compute = scorer.score(problem, cands)
    assert [len(s) for s in scores] == [1, 1, 1] and all(0 < s[0] < 1 for s in scores)
    assert scores[0] == scores[2] != scores[1]  # the same text, the same verdict
    # two distinct texts judged: the prefill of exactly two prompts, as verifier tokens
    twice = sum(len(policy._tokens(outcome_prompt(problem.question, t))) for t in ("3 + 4 = 7", "3 + 4 = 8"))
    assert compute.verifier_tokens == twice and compute.generated_tokens == 0
    assert compute.flops == pytest.approx(2.0 * policy.n_params * twice)
    assert scorer.score(problem, []) == ([], compute.__class__())


def test_the_whole_solution_is_shown_to_the_judge():
    prompt = outcome_prompt("  What is 3 + 4? ", "First add.\n\nSo \\boxed{7}.")
    user = dict(prompt.messages)["user"]
    assert "What is 3 + 4?" in user and "First add.\n\nSo \\boxed{7}." in user and user.endswith("Yes or No.")


def test_a_larger_judge_is_loaded_once_and_the_policy_serves_when_it_is_that_model(monkeypatch):
    loaded = []

    class Larger(FakeGenerator):
        name = "larger"
        n_params = 3_000_000

    def load(model, n_ctx, n_seq_max, layers):
        loaded.append((model, layers))
        return Larger(lambda p, s: "x")

    monkeypatch.setattr(readers, "_ENGINES", {})
    monkeypatch.setattr("ttscale.engines.llamacpp.LlamaCppGenerator", load)
    policy = FakeGenerator(lambda p, s: "x")
    first = make_scorer("outcome_judge:larger", policy)
    second = make_scorer("outcome_judge:larger", policy)
    assert first.engine is second.engine and loaded == [("larger", None)]
    _, compute = first.score(Problem("p", "q"), [candidate("a 1")])
    assert compute.flops == pytest.approx(2.0 * Larger.n_params * compute.verifier_tokens)  # the judge's size
    assert make_scorer("outcome_judge:fake", policy).engine is policy  # the policy is that model


def test_a_reward_on_another_models_layers_replays_every_solution_through_that_model(monkeypatch, tmp_path):
    from ttscale.engines.models import REGISTRY
    from ttscale.verifiers.layer_reward import LayerReward, LayerRewardError, LayerRewardScorer, reward_layers

    small, large = REGISTRY["qwen2.5-coder-0.5b"], REGISTRY["qwen2.5-coder-1.5b"]
    width = 4

    def reward_for(sha: str, path):
        reward = LayerReward("final", (5,), np.zeros(width), np.ones(width), None, np.ones(width), 0.0)
        reward.model_sha256 = sha
        reward.save(path)
        return str(path)

    class Reader:
        layers = (5,)
        replayed = 0

        def replay(self, prompt, text, finish_reason="eos"):
            from ttscale.core import Completion, Compute, LayerStates

            self.replayed += 1
            n = len(text.split())
            rows = np.ones((n, 1, width), np.float16)
            states = LayerStates(
                layers=(5,), step_ends=[n - 1], step_last=rows[-1:], step_mean=rows[-1:], tail_start=0, tail=rows
            )
            completion = Completion(text, list(range(n)), [], [], list(range(n)), finish_reason, layer_states=states)
            return completion, Compute(prompt_tokens=10 + n, flops=6.0e9)

    class Policy:
        spec, layers = small, None

    reader = Reader()
    monkeypatch.setattr(readers, "_ENGINES", {("qwen2.5-coder-1.5b", (5,)): reader})
    path = reward_for(large.sha256, tmp_path / "large.npz")
    assert reward_layers("qwen2.5-coder-0.5b", path) == ()  # the policy reads no layer for it
    scorer = LayerRewardScorer.for_generator(Policy(), path)
    assert scorer.generator is reader and not scorer.live
    live = candidate("three plus four is 7")
    live.layer_features = {"never": "read"}  # the policy's own states are not the reader's input
    scores, compute = scorer.score(Problem("p", "What is 3 + 4?"), [live])
    assert reader.replayed == 1 and 0 < scores[0][0] < 1
    assert compute.verifier_tokens == 15 and compute.flops >= 6.0e9
    with pytest.raises(LayerRewardError, match="neither this policy"):
        LayerRewardScorer.for_generator(Policy(), reward_for("f" * 64, tmp_path / "other.npz"))


@pytest.mark.integration
def test_a_second_real_model_judges_whole_solutions_at_its_own_size(monkeypatch):
    monkeypatch.setattr(readers, "_ENGINES", {})
    policy = FakeGenerator(lambda p, s: "x")
    scorer = make_scorer("outcome_judge:qwen2.5-coder-0.5b", policy)
    try:
        judge = scorer.engine
        assert judge is not policy and judge.name == "qwen2.5-coder-0.5b"
        problem = Problem("p", "Tom has 3 red balls and 4 blue balls. How many balls does he have?")
        right = candidate("He has 3 + 4 = 7 balls.\n\nThe answer is \\boxed{7}.")
        wrong = candidate("He has 3 * 4 = 12 balls.\n\nThe answer is \\boxed{12}.")
        scores, compute = scorer.score(problem, [right, wrong])
        assert all(0.0 < s[0] < 1.0 for s in scores) and scores[0] != scores[1]
        assert compute.verifier_tokens > 0 and compute.generated_tokens == 0
        assert compute.flops == pytest.approx(2.0 * judge.n_params * compute.verifier_tokens, rel=1e-6)
    finally:
        readers.close_readers()


class JudgingFake(FakeGenerator):
    """A judge with layers: its states where it answers carry, along unit 0, whether the
    solution it is shown ends in 7 (the right answer in these tests), plus noise."""

    name = "judger"
    layers = (3, 5)
    width = 4

    def read_next_token(self, prompts, tokens, states=False):
        logprobs, compute = self.next_token_logprobs(prompts, tokens)
        rows = []
        for p in prompts:
            user = dict(p.messages)["user"]
            # a stable seed: str hash() changes with every process, which made this test flaky
            rng = np.random.default_rng(int.from_bytes(hashlib.sha256(user.encode()).digest()[:4], "little"))
            x = rng.normal(size=(len(self.layers), self.width))
            x[1, 0] += 2.0 if "= 7" in user else -2.0
            rows.append(x)
        return logprobs, np.array(rows, np.float32) if states else None, compute


def test_a_judge_probe_reads_the_judge_where_it_answers_and_keeps_its_p_yes_from_the_same_pass():
    from ttscale.verifiers.layer_reward import LayerReward, LayerRewardScorer

    engine = JudgingFake(lambda p, s: "x")
    w = np.zeros(JudgingFake.width)
    w[0] = 1.0
    reward = LayerReward("judge", (5,), np.zeros(4), np.ones(4), None, w, 0.0)
    scorer = LayerRewardScorer(reward, engine, live=True)
    assert not scorer.live and not scorer.free_when_live  # its input is never the sampling pass's
    problem = Problem("p", "What is 3 + 4?")
    cands = [candidate("3 + 4 = 7"), candidate("3 + 4 = 8"), candidate("3 + 4 = 7")]
    cands[0].layer_features = {"never": "read"}
    scores, compute = scorer.score(problem, cands)
    assert scores[0] == scores[2] and scores[0][0] > 0.5 > scores[1][0]
    alone, judged = OutcomeJudgeScorer(engine, "outcome_judge:judger").score(problem, cands)
    assert scorer.side_scores == {"outcome_judge:judger": alone}  # the judge's P(Yes), not read twice
    assert compute.verifier_tokens == judged.verifier_tokens > 0 and compute.flops >= judged.flops


def test_a_judge_probe_is_trained_on_a_judges_readings_of_a_collection_and_set_beside_its_p_yes(tmp_path):
    import json

    from ttscale.apps.layer_data import judge_path, read_judgements, summary
    from ttscale.apps.train_reward import TrainRewardError, load_problems, train_reward

    out = tmp_path / "collection"
    out.mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for p in range(30):
        right = rng.random(8) < 0.5
        right[0], right[1] = True, False
        sols = [
            {"text": f"so {p} = {7 if r else 10 + i}", "answer": "7" if r else str(10 + i), "correct": bool(r)}
            for i, r in enumerate(right)
        ]
        lines.append(
            json.dumps(
                {
                    "id": f"q{p}",
                    "question": f"question {p}",
                    "solutions": sols,
                    "layers": [12],
                    "compute": {"generated_tokens": 0, "wall_time": 0.0},
                }
            )
        )
    (out / "samples.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(TrainRewardError, match="--judge"):
        load_problems(out, "judger")
    engine = JudgingFake(lambda p, s: "x")
    assert read_judgements(engine, out, progress=False) == 30
    assert read_judgements(engine, out, progress=False) == 0  # resumes: nothing left
    with np.load(judge_path(out, "q0", "judger")) as z:
        assert z["judge"].shape == (8, 2, 4) and z["judge"].dtype == np.float16 and z["layers"].tolist() == [3, 5]
        assert z["p_yes"].shape == (8,) and int(z["verifier_tokens"]) > 0
    assert summary(out)["with_judge_states"] == {"judger": 30}
    problems, layers, kinds = load_problems(out, "judger")
    assert kinds == ("judge",) and layers == [3, 5] and len(problems) == 30
    reward, report = train_reward(out, "sha", progress=False, judge="judger")
    assert reward.kind == "judge" and report["judge"] == "judger"
    assert all(t["reader"].startswith("judge") for t in report["tried"])
    v = report["validation"]
    assert v["reward"]["auroc_within_problem"] > 0.9  # layer 5 knows
    assert set(v) == {"reward", "vote_share", "reward+vote_share", "judge_p_yes"}


@pytest.mark.integration
def test_a_real_judge_reads_its_states_where_it_answers_in_the_pass_that_gives_its_p_yes():
    """On the real model: the judge's layer states at the token where it answers come from
    the prefill that gives its P(Yes) (the same P(Yes) as without them), one row per prompt
    whether judged alone or beside another, and a judge probe over them keeps that P(Yes) as
    the outcome judge's score."""
    from ttscale.engines.llamacpp import LlamaCppGenerator
    from ttscale.verifiers.judge import read_judgement
    from ttscale.verifiers.layer_reward import LayerReward, LayerRewardScorer

    problem = Problem("p", "Tom has 3 red balls and 4 blue balls. How many balls does he have?")
    texts = ["He has 3 + 4 = 7 balls.\n\nThe answer is \\boxed{7}.", "He has 3 * 4 = 12.\n\nSo \\boxed{12}."]
    prompts = [outcome_prompt(problem.question, t) for t in texts]
    gen = LlamaCppGenerator(n_ctx=2048, n_seq_max=4, layers=(12, -1))
    try:
        plain, _ = gen.next_token_logprobs(prompts, ["Yes", "No"])
        gen.reset()
        yes, states, spent = read_judgement(gen, prompts)
        gen.reset()
        _, alone, _ = read_judgement(gen, prompts[1:])
        width = states.shape[2]
        w = np.random.default_rng(0).normal(size=width) / np.sqrt(width)
        reward = LayerReward("judge", (23,), np.zeros(width), np.full(width, np.sqrt((states**2).mean())), None, w, 0.0)
        gen.reset()
        scorer = LayerRewardScorer(reward, gen)
        scores, cost = scorer.score(problem, [candidate(t) for t in texts])
    finally:
        gen.close()
    assert states.shape == (2, 2, gen.n_embd) and np.isfinite(states).all()
    assert yes == pytest.approx([1.0 / (1.0 + np.exp(n - y)) for y, n in plain], abs=0.01)
    assert np.abs(alone[0] - states[1]).max() <= 0.02 * np.abs(states[1]).max()
    assert not np.allclose(states[0], states[1])  # each prompt its own row
    assert spent.verifier_tokens > 0 and cost.verifier_tokens == spent.verifier_tokens
    assert [s[0] for s in scorer.side_scores["outcome_judge:qwen2.5-coder-0.5b"]] == pytest.approx(yes, abs=1e-6)
    assert all(0.0 < s[0] < 1.0 for s in scores)
