"""A second model that reads the policy's solutions (#20): the outcome judge, by the policy or
a larger model loaded once, and a layer reward trained on another model's layers."""

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
