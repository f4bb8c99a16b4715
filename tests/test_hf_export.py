"""The GGUF-to-Hugging Face export that lets vLLM serve the default model: tensor names and
config in tables, the manifest's refusals, and (integration) the real export computing what
llama.cpp computes."""

import json
import os

import pytest

from ttscale.engines.hf_export import MANIFEST, export_hf, hf_config, hf_name, seal, verify_export
from ttscale.engines.models import ModelError

NAMES = [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
    ("blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight"),
    ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight"),
    ("blk.3.attn_q.bias", "model.layers.3.self_attn.q_proj.bias"),
    ("blk.11.attn_k.bias", "model.layers.11.self_attn.k_proj.bias"),
    ("blk.23.attn_v.weight", "model.layers.23.self_attn.v_proj.weight"),
    ("blk.2.attn_output.weight", "model.layers.2.self_attn.o_proj.weight"),
    ("blk.2.ffn_norm.weight", "model.layers.2.post_attention_layernorm.weight"),
    ("blk.5.ffn_gate.weight", "model.layers.5.mlp.gate_proj.weight"),
    ("blk.5.ffn_up.weight", "model.layers.5.mlp.up_proj.weight"),
    ("blk.5.ffn_down.weight", "model.layers.5.mlp.down_proj.weight"),
]


@pytest.mark.parametrize("gguf_name,expected", NAMES)
def test_tensor_names(gguf_name, expected):
    assert hf_name(gguf_name) == expected


@pytest.mark.parametrize("name", ["blk.x.attn_q.weight", "blk.0.attn_qkv.weight", "rope_freqs.weight", "output"])
def test_unknown_tensors_are_refused(name):
    with pytest.raises(ModelError, match="no Hugging Face name"):
        hf_name(name)


QWEN_META = {
    "general.architecture": "qwen2",
    "qwen2.block_count": 24,
    "qwen2.context_length": 32768,
    "qwen2.embedding_length": 896,
    "qwen2.feed_forward_length": 4864,
    "qwen2.attention.head_count": 14,
    "qwen2.attention.head_count_kv": 2,
    "qwen2.rope.freq_base": 1000000.0,
    "qwen2.attention.layer_norm_rms_epsilon": 1e-6,
    "tokenizer.ggml.bos_token_id": 151643,
    "tokenizer.ggml.eos_token_id": 151645,
}


def test_config_from_the_metadata():
    cfg = hf_config(QWEN_META, 151936, tied=False)
    assert cfg["architectures"] == ["Qwen2ForCausalLM"]
    expected = {
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "rope_theta": 1e6,
        "vocab_size": 151936,
        "tie_word_embeddings": False,
        "eos_token_id": 151645,
    }
    assert {k: cfg[k] for k in expected} == expected
    assert hf_config(QWEN_META, 151936, tied=True)["tie_word_embeddings"] is True


@pytest.mark.parametrize(
    "meta,message",
    [
        ({**QWEN_META, "general.architecture": "llama"}, "only qwen2"),
        ({k: v for k, v in QWEN_META.items() if k != "qwen2.rope.freq_base"}, "no qwen2.rope.freq_base"),
    ],
)
def test_config_refuses_what_it_cannot_map(meta, message):
    with pytest.raises(ModelError, match=message):
        hf_config(meta, 100, tied=True)


def sealed(tmp_path):
    d = tmp_path / "export"
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "qwen2"}')
    (d / "model.safetensors").write_bytes(b"\0" * 1000)
    seal(d, "m.gguf", "abc")
    return d


def tamper_manifest(d, **changes):
    m = json.loads((d / MANIFEST).read_text())
    (d / MANIFEST).write_text(json.dumps({**m, **changes}))


CORRUPTIONS = [
    ("no manifest", lambda d: (d / MANIFEST).unlink(), "not a ttscale export"),
    ("unreadable manifest", lambda d: (d / MANIFEST).write_text("{not json"), "unreadable"),
    ("other format", lambda d: tamper_manifest(d, format=99), "not an export manifest"),
    ("other source", lambda d: tamper_manifest(d, source={"sha256": "def"}), "another GGUF"),
    ("missing file", lambda d: (d / "config.json").unlink(), "config.json is missing"),
    ("edited file", lambda d: (d / "model.safetensors").write_bytes(b"\1" * 1000), "does not match its checksum"),
    ("truncated file", lambda d: os.truncate(d / "model.safetensors", 10), "does not match its checksum"),
]


def test_a_sealed_export_verifies(tmp_path):
    d = sealed(tmp_path)
    assert verify_export(d, "abc")["source"]["gguf"] == "m.gguf"
    assert oct((d / "model.safetensors").stat().st_mode & 0o777) == "0o644"


@pytest.mark.parametrize("what,spoil,message", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_a_spoiled_export_is_refused_and_left_alone(tmp_path, what, spoil, message):
    d = sealed(tmp_path)
    spoil(d)
    before = sorted(p.name for p in d.iterdir())
    with pytest.raises(ModelError, match=message) as e:
        verify_export(d, "abc")
    assert "delete" in str(e.value)  # it says how to get a sound one
    assert sorted(p.name for p in d.iterdir()) == before


def test_export_into_a_directory_that_is_not_an_export_is_refused(tmp_path):
    fake = tmp_path / "m.gguf"
    fake.write_bytes(b"GGUF" + b"\0" * 64)
    mine = tmp_path / "my-dir"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(ModelError, match="not a ttscale export"):
        export_hf(str(fake), mine)
    assert (mine / "notes.txt").read_text() == "mine"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export_hf(out=tmp_path_factory.mktemp("hf") / "qwen-hf")


@pytest.mark.integration
def test_the_export_computes_what_llama_cpp_computes(exported):
    import torch
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ttscale.engines.models import model_path

    tokenizer = AutoTokenizer.from_pretrained(exported)
    model = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.bfloat16)
    prompt = "<|im_start|>user\nWhat is 12*34? Answer briefly.<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    ours = model.generate(ids, max_new_tokens=12, do_sample=False)[0, ids.shape[1] :].tolist()
    llm = Llama(str(model_path()), n_ctx=256, n_threads=2, verbose=False)
    assert llm.tokenize(prompt.encode(), add_bos=False, special=True) == ids[0].tolist()
    text = llm.create_completion(prompt, max_tokens=12, temperature=0)["choices"][0]["text"]
    theirs = llm.tokenize(text.encode(), add_bos=False, special=True)
    # bfloat16 weights against llama.cpp's quantized arithmetic: the greedy answer agrees
    assert ours[: len(theirs)] == theirs


@pytest.mark.integration
def test_a_second_export_reuses_the_verified_one(exported):
    weights = exported / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert export_hf(out=exported) == exported
    assert weights.stat().st_mtime_ns == stamp
    assert json.loads((exported / "config.json").read_text())["architectures"] == ["Qwen2ForCausalLM"]
