"""A registered GGUF model as a Hugging Face directory, so that vLLM (or transformers) serves
the very weights the embedded engine runs: `ttscale export-hf qwen2.5-coder-0.5b`.

The quantized tensors are dequantized by the `gguf` package's numpy code (seconds; going
through transformers' GGUF loader takes hours on this CPU) and saved as bfloat16
safetensors; the tokenizer comes from transformers' GGUF tokenizer loader and must agree with
llama.cpp's own on probe strings before the export is accepted. The directory is built
beside its target and renamed into place, so a killed export leaves no half directory; its
manifest holds every file's sha256, checked each time the export is used. A directory that
fails the check is refused, never overwritten: it may be someone's edit.

Needs the `hf-export` extra (gguf, torch, transformers, safetensors), imported lazily.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from .models import DEFAULT_MODEL, ModelError, cache_dir, process_alive, resolve, sha256_file

EXPORT_FORMAT = 1
MANIFEST = "ttscale-export.json"
WEIGHTS = "model.safetensors"

# llama.cpp's names of a qwen2 model's tensors (its convert_hf_to_gguf.py map, read backwards)
TOP_LEVEL = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
PER_LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
# the tokenizer must split these as llama.cpp does (chat markers, code, digits, unicode)
TOKENIZER_PROBES = (
    "<|im_start|>user\nWhat is 12*34?<|im_end|>\n<|im_start|>assistant\n",
    "def f(x):\n    return [i ** 2 for i in range(x)]  # squares\n",
    "The answer is $\\boxed{408}$.  Ünïcödé, 数学, emoji 🙂, tabs\t\tand  spaces",
)


def hf_name(name: str) -> str:
    """transformers' name of a llama.cpp qwen2 tensor."""
    if name in TOP_LEVEL:
        return TOP_LEVEL[name]
    parts = name.split(".", 2)
    if len(parts) == 3 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in PER_LAYER:
        return f"model.layers.{parts[1]}.{PER_LAYER[parts[2]]}"
    raise ModelError(f"tensor {name!r} has no Hugging Face name: only the qwen2 architecture is exported")


def hf_config(meta: dict[str, Any], vocab_size: int, tied: bool) -> dict[str, Any]:
    """transformers' Qwen2 config from the GGUF's metadata."""
    arch = meta.get("general.architecture")
    if arch != "qwen2":
        raise ModelError(f"architecture {arch!r}: only qwen2 models are exported")

    def key(k: str) -> Any:
        if f"qwen2.{k}" not in meta:
            raise ModelError(f"the GGUF has no qwen2.{k}")
        return meta[f"qwen2.{k}"]

    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": int(key("embedding_length")),
        "intermediate_size": int(key("feed_forward_length")),
        "num_hidden_layers": int(key("block_count")),
        "num_attention_heads": int(key("attention.head_count")),
        "num_key_value_heads": int(key("attention.head_count_kv")),
        "max_position_embeddings": int(key("context_length")),
        "rope_theta": float(key("rope.freq_base")),
        "rms_norm_eps": float(key("attention.layer_norm_rms_epsilon")),
        "hidden_act": "silu",
        "vocab_size": vocab_size,
        # a quantized file may hold its own output matrix even where the original tied it
        "tie_word_embeddings": tied,
        "use_sliding_window": False,
        "max_window_layers": int(key("block_count")),
        "attention_dropout": 0.0,
        "bos_token_id": int(meta.get("tokenizer.ggml.bos_token_id", 151643)),
        "eos_token_id": int(meta.get("tokenizer.ggml.eos_token_id", 151645)),
        "torch_dtype": "bfloat16",
    }


def default_export_dir(model: str) -> Path:
    gguf_path, spec = resolve(model)
    tag = f"{spec.name}-{spec.sha256[:12]}" if spec else gguf_path.stem
    return cache_dir() / f"{tag}-hf"


def export_hf(model: str = DEFAULT_MODEL, out: Path | None = None) -> Path:
    """The Hugging Face directory of `model` (a registered name or a .gguf path), exported on
    first use and verified on every later one."""
    gguf_path, spec = resolve(model)
    target = out or default_export_dir(model)
    source_sha = spec.sha256 if spec else sha256_file(gguf_path)
    if target.exists():
        verify_export(target, source_sha)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(target.name + ".tmp*"):  # exports killed mid-way
        pid = stale.suffix.removeprefix(".tmp")
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    try:
        tmp.mkdir()
        _write_export(gguf_path, tmp)
        seal(tmp, gguf_path.name, source_sha)
        os.rename(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def seal(directory: Path, source: str, source_sha: str) -> None:
    """Write the manifest of a finished export: every file's sha256, and the GGUF it came from.
    The files are made readable by all (safetensors writes its file private): a server run
    by another user may read the export."""
    files = {}
    for path in sorted(directory.iterdir()):
        path.chmod(0o644)
        files[path.name] = sha256_file(path)
    manifest = {"format": EXPORT_FORMAT, "source": {"gguf": source, "sha256": source_sha}, "files": files}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def verify_export(directory: Path, source_sha: str | None = None) -> dict[str, Any]:
    """The manifest of a sound export of the GGUF with sha256 `source_sha`; anything else is
    an error that says what is wrong and leaves the directory alone."""
    refuse = f"ttscale does not overwrite it: delete {directory} and export again, or choose another --output"
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        raise ModelError(f"{directory} exists and is not a ttscale export (no {MANIFEST}); {refuse}") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(f"{directory}/{MANIFEST} is unreadable ({e}); {refuse}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT or "files" not in manifest:
        raise ModelError(f"{directory}/{MANIFEST} is not an export manifest of format {EXPORT_FORMAT}; {refuse}")
    if source_sha and manifest.get("source", {}).get("sha256") != source_sha:
        raise ModelError(f"{directory} was exported from another GGUF file; {refuse}")
    for name, digest in manifest["files"].items():
        path = directory / name
        if not path.is_file():
            raise ModelError(f"{directory} is a corrupt export: {name} is missing; {refuse}")
        if sha256_file(path) != digest:
            raise ModelError(f"{directory} is a corrupt export: {name} does not match its checksum; {refuse}")
    return manifest


def _write_export(gguf_path: Path, out: Path) -> None:
    try:
        import gguf
        import torch
        from safetensors.torch import save_file
    except ImportError as e:
        raise ModelError(
            f"exporting needs the hf-export extra ({e.name} is missing): pip install 'ttscale[hf-export]'"
        ) from None
    reader = gguf.GGUFReader(str(gguf_path))
    meta = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.ggml.")}
    meta.update(
        {k: reader.fields[k].contents() for k in ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id")}
    )
    tensors, vocab_size = {}, 0
    for t in reader.tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type)  # float32, in transformers' layout
        name = hf_name(t.name)
        if name == "model.embed_tokens.weight":
            vocab_size = values.shape[0]
        tensors[name] = torch.from_numpy(values.copy()).to(torch.bfloat16)
    config = hf_config(meta, vocab_size, tied="lm_head.weight" not in tensors)
    save_file(tensors, str(out / WEIGHTS), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    eos = [config["eos_token_id"], config["bos_token_id"]]  # Qwen stops at <|im_end|> and <|endoftext|>
    generation = {"bos_token_id": config["bos_token_id"], "eos_token_id": eos, "pad_token_id": config["bos_token_id"]}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    _write_tokenizer(gguf_path, out)


def _write_tokenizer(gguf_path: Path, out: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    from llama_cpp import Llama

    vocab = Llama(str(gguf_path), vocab_only=True, verbose=False)
    for text in TOKENIZER_PROBES:
        ours = tokenizer.encode(text, add_special_tokens=False)
        theirs = vocab.tokenize(text.encode(), add_bos=False, special=True)
        if ours != theirs:
            raise ModelError(f"the exported tokenizer splits {text!r} unlike llama.cpp: {ours} != {theirs}")
    tokenizer.save_pretrained(str(out))
