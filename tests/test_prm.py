"""PRM adapters against tiny, randomly initialised models of each PRM's architecture family,
built here with tokenizers that carry the special tokens each format needs. The real PRMs
cannot be downloaded on these machines; what is tested is the exact input format, that each
step's score is read where that step ends, and the read-out arithmetic."""

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from ttscale.core import Candidate, Problem, Step  # noqa: E402
from ttscale.strategies.spec import RunSpec  # noqa: E402
from ttscale.verifiers.prm import (  # noqa: E402
    FORMATS,
    MathShepherdFormat,
    QwenPRMFormat,
    RLHFlowFormat,
    SkyworkFormat,
    TransformersPRM,
    ValueHeadModel,
)

QUESTION = "What is 2 + 3? Find x."
STEPS = ["Add 2 and 3 to get 5.", "So x = 5.", "The answer is \\boxed{5}."]

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "What is 2 + 3? Find x. Add 2 and 3 to get 5. So x = 5. The answer is \\boxed{5}.",
    "+ - + - + - Step 1: Step 2: Step 3: \n\n \n",
    "Please reason step by step, and put your final answer within \\boxed{}.",
] * 20


def tiny_tokenizer(specials, template=None, added=()):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<s>", "</s>", *specials],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="</s>",
        additional_special_tokens=list(specials),
    )
    if added:
        fast.add_tokens(list(added))
    if template:
        fast.chat_template = template
    return fast


def tiny_config(cls, tokenizer, **extra):
    torch.manual_seed(0)
    return cls(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        **extra,
    )


def build(key):
    """(format, model, tokenizer) for one PRM key, tiny and random."""
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForTokenClassification,
        Qwen2Model,
    )

    if key == "rlhflow-8b":
        tok = tiny_tokenizer(["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], LLAMA3_TEMPLATE)
        return RLHFlowFormat(), LlamaForCausalLM(tiny_config(LlamaConfig, tok)), tok
    if key == "math-shepherd":
        tok = tiny_tokenizer([], added=["ки"])
        return MathShepherdFormat(), MistralForCausalLM(tiny_config(MistralConfig, tok)), tok
    if key == "qwen2.5-math-prm-7b":
        tok = tiny_tokenizer(["<|im_start|>", "<|im_end|>", "<extra_0>"], CHATML_TEMPLATE)
        model = Qwen2ForTokenClassification(tiny_config(Qwen2Config, tok, num_labels=2))
        return QwenPRMFormat(), model, tok
    tok = tiny_tokenizer([])
    base = Qwen2Model(tiny_config(Qwen2Config, tok))
    return SkyworkFormat(), ValueHeadModel(base, torch.nn.Linear(32, 1)), tok


def marker_token(key, tok):
    return {
        "rlhflow-8b": lambda: tok.encode("+", add_special_tokens=False)[-1],
        "math-shepherd": lambda: tok.convert_tokens_to_ids("ки"),
        "qwen2.5-math-prm-7b": lambda: tok.convert_tokens_to_ids("<extra_0>"),
        "skywork-1.5b": lambda: tok.encode("\n", add_special_tokens=False)[-1],
    }[key]()


def candidate(steps):
    return Candidate(text="\n\n".join(steps), steps=[Step(text=s, n_tokens=3) for s in steps])


@pytest.mark.parametrize("key", list(FORMATS))
def test_step_positions_line_up_with_the_steps(key):
    fmt, _, tok = build(key)
    enc = fmt.encode(tok, QUESTION, STEPS)
    assert len(enc.positions) == len(STEPS)
    assert enc.positions == sorted(enc.positions)
    marker = marker_token(key, tok)
    assert all(enc.input_ids[p] == marker for p in enc.positions)
    # the text just before each step's marker is that step
    starts = [0, *enc.positions[:-1]]
    for step, a, b in zip(STEPS, starts, enc.positions, strict=True):
        assert step.strip() in tok.decode(enc.input_ids[a:b])
    assert QUESTION in tok.decode(enc.input_ids[: enc.positions[0]])


def test_exact_input_formats():
    fmt, _, tok = build("math-shepherd")
    text = tok.decode(fmt.encode(tok, QUESTION, STEPS[:2]).input_ids)
    assert text.endswith(f"{QUESTION} Step 1: {STEPS[0]} ки\nStep 2: {STEPS[1]} ки\n")

    fmt, _, tok = build("qwen2.5-math-prm-7b")
    text = tok.decode(fmt.encode(tok, QUESTION, STEPS[:2]).input_ids)
    assert "<|im_start|>system\nPlease reason step by step" in text
    assert f"<|im_start|>assistant\n{STEPS[0]}<extra_0>{STEPS[1]}<extra_0><|im_end|>" in text

    fmt, _, tok = build("rlhflow-8b")
    text = tok.decode(fmt.encode(tok, QUESTION, STEPS[:2]).input_ids)
    assert f"<|start_header_id|>user<|end_header_id|>\n\n{QUESTION} {STEPS[0]}<|eot_id|>" in text
    assert text.count("<|start_header_id|>assistant<|end_header_id|>\n\n+<|eot_id|>") == 2

    fmt, _, tok = build("skywork-1.5b")
    text = tok.decode(fmt.encode(tok, QUESTION, STEPS[:2]).input_ids)
    assert text == f"<s>{QUESTION}\n{STEPS[0]}\n{STEPS[1]}\n"


@pytest.mark.parametrize("key", list(FORMATS))
def test_read_out_matches_a_manual_computation(key):
    fmt, model, tok = build(key)
    prm = TransformersPRM(fmt, model, tok)
    (scores,), compute = prm.score(Problem("p", QUESTION), [candidate(STEPS)])
    enc = fmt.encode(tok, QUESTION, STEPS)
    ids = torch.tensor([enc.input_ids])
    with torch.no_grad():
        if key == "skywork-1.5b":
            manual = [float(torch.sigmoid(model(input_ids=ids)[0, p])) for p in enc.positions]
        elif key == "qwen2.5-math-prm-7b":
            logits = model(input_ids=ids).logits[0]
            manual = [float(torch.softmax(logits[p], -1)[1]) for p in enc.positions]
        else:
            logits = model(input_ids=ids).logits[0]
            if key == "rlhflow-8b":
                plus, minus = (
                    tok.encode("+", add_special_tokens=False)[-1],
                    tok.encode("-", add_special_tokens=False)[-1],
                )
                rows = [logits[p - 1] for p in enc.positions]
            else:
                plus, minus = tok.encode("+ -", add_special_tokens=False)
                rows = [logits[p] for p in enc.positions]
            manual = [float(torch.softmax(torch.stack([r[plus], r[minus]]), 0)[0]) for r in rows]
    assert scores == pytest.approx(manual, abs=1e-6)
    assert all(0 <= s <= 1 for s in scores)
    assert compute.verifier_tokens == len(enc.input_ids)
    assert compute.flops == 2 * prm.n_params * len(enc.input_ids)


@pytest.mark.parametrize("key", list(FORMATS))
def test_a_step_score_depends_only_on_the_steps_up_to_it(key):
    fmt, model, tok = build(key)
    prm = TransformersPRM(fmt, model, tok)
    full, _ = prm.step_scores(QUESTION, STEPS)
    prefix, _ = prm.step_scores(QUESTION, STEPS[:2])
    assert prefix == pytest.approx(full[:2], abs=1e-5)


def test_blank_steps_keep_scores_aligned():
    fmt, model, tok = build("qwen2.5-math-prm-7b")
    prm = TransformersPRM(fmt, model, tok)
    c = Candidate("", steps=[Step("Add 2 and 3 to get 5."), Step("  "), Step("So x = 5.")])
    (scores,), _ = prm.score(Problem("p", QUESTION), [c])
    plain, _ = prm.step_scores(QUESTION, ["Add 2 and 3 to get 5.", "So x = 5."])
    assert scores == pytest.approx([plain[0], plain[0], plain[1]])


def test_load_from_a_local_directory(tmp_path):
    from safetensors.torch import save_file

    fmt, model, tok = build("qwen2.5-math-prm-7b")
    model.save_pretrained(tmp_path / "qwen")
    tok.save_pretrained(tmp_path / "qwen")
    loaded = TransformersPRM.load("qwen2.5-math-prm-7b", str(tmp_path / "qwen"))
    # the same weights through the loader: the same scores (tokenizer round trips of a
    # hand-built test tokenizer are not what is tested here, so both use the loaded one)
    assert loaded.step_scores(QUESTION, STEPS)[0] == pytest.approx(
        TransformersPRM(fmt, model, loaded.tokenizer).step_scores(QUESTION, STEPS)[0], abs=1e-5
    )

    fmt, vmodel, tok = build("skywork-1.5b")
    vmodel.base.save_pretrained(tmp_path / "sky")
    tok.save_pretrained(tmp_path / "sky")
    save_file(
        {
            "v_head.summary.weight": vmodel.head.weight.data.clone(),
            "v_head.summary.bias": vmodel.head.bias.data.clone(),
        },
        str(tmp_path / "sky" / "value_head.safetensors"),
    )
    loaded = TransformersPRM.load("skywork-1.5b", str(tmp_path / "sky"))
    assert loaded.step_scores(QUESTION, STEPS)[0] == pytest.approx(
        TransformersPRM(fmt, vmodel, loaded.tokenizer).step_scores(QUESTION, STEPS)[0], abs=1e-5
    )


def test_missing_model_is_a_clear_error(tmp_path):
    from ttscale.verifiers.prm import PRMError
    from ttscale.verifiers.registry import make_scorer

    with pytest.raises(PRMError, match="could not load PRM"):
        make_scorer(f"prm:math-shepherd@{tmp_path / 'nothing-here'}")
    with pytest.raises(PRMError, match="unknown PRM"):
        TransformersPRM.load("gpt-prm")


def test_a_prm_guides_beam_search():
    from ttscale.core import SamplingParams
    from ttscale.strategies.search import beam_search
    from ttscale.testing import FakeGenerator

    fmt, model, tok = build("math-shepherd")
    prm = TransformersPRM(fmt, model, tok)

    def script(prompt, seed):
        depth = prompt.partial.count("\n\n")
        return f"So x = {seed % 4}.\n\nmore" if depth < 1 else f"The answer is \\boxed{{{seed % 3}}}."

    r = beam_search(
        Problem("p", QUESTION),
        FakeGenerator(script),
        prm,
        4,
        beam_width=2,
        spec=RunSpec(SamplingParams(max_tokens=100)),
    )
    assert r.candidates and r.compute.verifier_tokens > 0
    assert all(len(c.step_scores) == len(c.steps) for c in r.candidates)
