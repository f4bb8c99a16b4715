"""The vLLM reward endpoint as a PRM (`PoolingPRMScorer`), against a real vLLM serving a
stand-in process reward model: the default model's exported weights with a random
two-class head on top, in the layout of Qwen2.5-Math-PRM (`Qwen2ForProcessRewardModel`,
step tag `<extra_0>` = token 151651). The weights are random; the API, the step pooling and
the scorer are real, and the scores must equal a transformers forward of the same head.
Its own module, so that its server starts after the generation server is gone."""

import json
import shutil

import pytest

pytest.importorskip("vllm")

from servers import vllm_server
from ttscale.core import Candidate, Problem, Step
from ttscale.engines.hf_export import WEIGHTS, export_hf
from ttscale.engines.openai import OpenAIGenerator
from ttscale.verifiers.remote_prm import PoolingPRMScorer, _qwen_prm_text

pytestmark = [pytest.mark.vllm, pytest.mark.integration]

STEP_TAG_ID = 151651  # Qwen2.5-Math-PRM's <extra_0>; <|quad_end|> in the Coder vocabulary
SERVED = "stand-in-prm"


def stand_in_prm(export, out, seed=0):
    """A Qwen2ForProcessRewardModel directory: the exported body, a random score head."""
    import torch
    from safetensors.torch import load_file, save_file

    out.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (export / name).exists():
            shutil.copy(export / name, out / name)
    config = json.loads((export / "config.json").read_text())
    config.update(architectures=["Qwen2ForProcessRewardModel"], num_labels=2)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    weights = {k: v for k, v in load_file(str(export / WEIGHTS)).items() if not k.startswith("lm_head.")}
    g = torch.Generator().manual_seed(seed)
    h = config["hidden_size"]
    head = {
        "score.0.weight": torch.randn(h, h, generator=g) / h**0.5,
        "score.0.bias": torch.randn(h, generator=g) * 0.1,
        # scaled and offset so that its scores spread over (0, 1) on the test's steps, where a
        # mismatch would show (an unscaled head saturates at 0.9999 on every step)
        "score.2.weight": torch.randn(2, h, generator=g) / (4 * h**0.5),
        "score.2.bias": torch.tensor([0.0, -2.4]),
    }
    weights.update({k: v.to(torch.bfloat16) for k, v in head.items()})
    save_file(weights, str(out / WEIGHTS), metadata={"format": "pt"})
    # the step tag by the name the PRM text uses, at the id Qwen2.5-Math-PRM gives it
    tok = json.loads((out / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    vocab["<extra_0>"] = vocab.pop(next(k for k, v in vocab.items() if v == STEP_TAG_ID))
    for t in tok["added_tokens"]:
        if t["id"] == STEP_TAG_ID:
            t["content"] = "<extra_0>"
    (out / "tokenizer.json").write_text(json.dumps(tok))
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    if str(STEP_TAG_ID) in cfg.get("added_tokens_decoder", {}):
        cfg["added_tokens_decoder"][str(STEP_TAG_ID)]["content"] = "<extra_0>"
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    return out


@pytest.fixture(scope="module")
def prm(tmp_path_factory):
    root = tmp_path_factory.mktemp("prm")
    model_dir = stand_in_prm(export_hf(), root / "prm")
    pooler = json.dumps({"step_tag_id": STEP_TAG_ID})
    with vllm_server(model_dir, SERVED, root / "server.log", extra=["--pooler-config", pooler]) as url:
        client = OpenAIGenerator([url], SERVED, concurrency=2, timeout=300)
        yield model_dir, client
        client.close()


QUESTION = "Tom has 3 red balls and 4 blue balls. How many balls does he have?"
STEPS = [
    ["Tom has 3 red balls and 4 blue balls.", "3 + 4 = 7.", "The answer is \\boxed{7}."],
    ["He has 3 balls of each colour.", "3 * 2 = 6, so \\boxed{6}."],
]


def transformers_step_scores(model_dir, text):
    """The head's probability of class 1 at every step tag, from a transformers forward."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    body = AutoModel.from_pretrained(model_dir, dtype=torch.float32)  # Qwen2Model: the "model." weights
    head = {k: v.float() for k, v in load_file(str(model_dir / WEIGHTS)).items() if k.startswith("score.")}
    ids = tokenizer(text, add_special_tokens=False).input_ids
    with torch.no_grad():
        hidden = body(torch.tensor([ids])).last_hidden_state[0]
        at_tags = hidden[[i for i, t in enumerate(ids) if t == STEP_TAG_ID]]
        inner = torch.relu(at_tags @ head["score.0.weight"].T + head["score.0.bias"])
        logits = inner @ head["score.2.weight"].T + head["score.2.bias"]
    return torch.softmax(logits, dim=-1)[:, 1].tolist()


def test_the_pooling_prm_scores_every_step_as_transformers_does(prm):
    model_dir, client = prm
    problem = Problem("t", QUESTION, gold="7")
    candidates = [Candidate("\n\n".join(steps), [Step(s) for s in steps]) for steps in STEPS]
    scores, compute = PoolingPRMScorer(client, "qwen2.5-math-prm-7b", index=1).score(problem, candidates)
    assert [len(s) for s in scores] == [3, 2]  # one score per step, from the step pooling
    assert compute.verifier_tokens > 0 and compute.wall_time > 0
    for steps, served in zip(STEPS, scores, strict=True):
        expected = transformers_step_scores(model_dir, _qwen_prm_text(QUESTION, steps))
        assert served == pytest.approx(expected, abs=0.03)  # bfloat16 on the server, float32 here
    flat = [x for s in scores for x in s]
    assert max(flat) - min(flat) > 0.1  # a head that tells steps apart, so the match means something
