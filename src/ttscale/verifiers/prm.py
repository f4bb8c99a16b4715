"""Adapters for the field's process reward models, through Hugging Face transformers.

Each PRM was trained on one exact input format and reads its step scores in one exact way;
an adapter is those two functions (`encode`: question and steps -> token ids plus the
positions where step scores are read; `read`: model output at those positions -> one
probability per step) and the way to load the model. torch and transformers are an
optional extra (`pip install 'ttscale[prm]'`), imported only when a PRM is used.

- rlhflow-8b (RLHFlow/Llama3.1-8B-PRM-Deepseek-Data): a chat in which every step is a user
  turn answered "+"; a step's score is P("+") against P("-") where its reply is predicted.
- math-shepherd (peiyi9979/math-shepherd-mistral-7b-prm): "question Step 1: ... ки\\n...";
  P("+") against P("-") at each "ки".
- qwen2.5-math-prm-7b (Qwen/Qwen2.5-Math-PRM-7B): a chat whose answer joins the steps with
  "<extra_0>" and ends with one; the class-1 probability at each "<extra_0>".
- skywork-1.5b (Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B): BOS, problem, "\\n", then each step
  followed by "\\n"; the sigmoid of the value head at each step's "\\n".
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import Candidate, Compute, Problem, model_flops

QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


class PRMError(RuntimeError):
    pass


@dataclass
class Encoded:
    input_ids: list[int]
    positions: list[int]  # one per step: where that step's score is read


class PRMFormat:
    key = ""
    hub_id = ""

    def encode(self, tokenizer: Any, question: str, steps: Sequence[str]) -> Encoded:
        raise NotImplementedError

    def read(self, output: Any, positions: list[int]) -> list[float]:
        raise NotImplementedError

    def bind(self, tokenizer: Any) -> None:
        """Resolve the read-out token ids once the tokenizer is known."""

    def load(self, path: str) -> tuple[Any, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def _single_token(tokenizer: Any, text: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        raise PRMError(f"tokenizer has no token for {text!r}")
    return int(ids[-1])


def _two_class(logits_row: Any, first: int, second: int) -> float:
    """Probability of `first` in a softmax over just the two tokens."""
    import torch

    pair = torch.stack([logits_row[first], logits_row[second]]).float()
    return float(torch.softmax(pair, dim=0)[0])


class RLHFlowFormat(PRMFormat):
    """The question opens the first user turn; every step is a user turn answered "+"."""

    key = "rlhflow-8b"
    hub_id = "RLHFlow/Llama3.1-8B-PRM-Deepseek-Data"

    def encode(self, tokenizer: Any, question: str, steps: Sequence[str]) -> Encoded:
        conversation: list[dict[str, str]] = []
        positions = []
        for k, step in enumerate(steps):
            conversation.append({"role": "user", "content": f"{question} {step}" if k == 0 else step})
            # the "+" reply starts where the generation prompt after this user turn ends
            prefix = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True)
            positions.append(len(_ids(prefix)))
            conversation.append({"role": "assistant", "content": "+"})
        ids = _ids(tokenizer.apply_chat_template(conversation, tokenize=True))
        plus = _single_token(tokenizer, "+")
        if any(p >= len(ids) or ids[p] != plus for p in positions):
            raise PRMError("the chat template does not put each '+' reply where expected")
        return Encoded(ids, positions)

    def read(self, output: Any, positions: list[int]) -> list[float]:
        logits = output.logits[0]
        return [_two_class(logits[p - 1], self.plus, self.minus) for p in positions]

    def bind(self, tokenizer: Any) -> None:
        self.plus, self.minus = _single_token(tokenizer, "+"), _single_token(tokenizer, "-")


class MathShepherdFormat(PRMFormat):
    key = "math-shepherd"
    hub_id = "peiyi9979/math-shepherd-mistral-7b-prm"
    step_tag = "ки"

    def encode(self, tokenizer: Any, question: str, steps: Sequence[str]) -> Encoded:
        ids = list(tokenizer.encode(math_shepherd_text(question, steps)))
        tag = _single_token(tokenizer, self.step_tag)
        positions = [i for i, t in enumerate(ids) if t == tag]
        if len(positions) != len(steps):
            raise PRMError(f"found {len(positions)} step tags for {len(steps)} steps (does a step contain 'ки'?)")
        return Encoded(ids, positions)

    def read(self, output: Any, positions: list[int]) -> list[float]:
        logits = output.logits[0]
        return [_two_class(logits[p], self.good, self.bad) for p in positions]

    def bind(self, tokenizer: Any) -> None:
        pair = tokenizer.encode("+ -", add_special_tokens=False)
        if len(pair) != 2:
            raise PRMError(f"'+ -' should be two tokens for this PRM, got {pair}")
        self.good, self.bad = int(pair[0]), int(pair[1])


def math_shepherd_text(question: str, steps: Sequence[str]) -> str:
    return f"{question} " + "".join(f"Step {k}: {s.strip()} ки\n" for k, s in enumerate(steps, start=1))


class QwenPRMFormat(PRMFormat):
    key = "qwen2.5-math-prm-7b"
    hub_id = "Qwen/Qwen2.5-Math-PRM-7B"
    step_sep = "<extra_0>"

    def encode(self, tokenizer: Any, question: str, steps: Sequence[str]) -> Encoded:
        messages = [
            {"role": "system", "content": QWEN_PRM_SYSTEM},
            {"role": "user", "content": question},
            {"role": "assistant", "content": self.step_sep.join(steps) + self.step_sep},
        ]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        ids = list(tokenizer.encode(text, add_special_tokens=False))
        sep = tokenizer.convert_tokens_to_ids(self.step_sep)
        positions = [i for i, t in enumerate(ids) if t == sep]
        if len(positions) != len(steps):
            raise PRMError(f"found {len(positions)} '<extra_0>' markers for {len(steps)} steps")
        return Encoded(ids, positions)

    def read(self, output: Any, positions: list[int]) -> list[float]:
        import torch

        logits = output[0][0] if isinstance(output, tuple) else output.logits[0]
        probs = torch.softmax(logits.float(), dim=-1)
        return [float(probs[p, 1]) for p in positions]

    def load(self, path: str) -> tuple[Any, Any]:
        from transformers import AutoConfig, AutoModel, AutoModelForTokenClassification, AutoTokenizer

        config = AutoConfig.from_pretrained(path, trust_remote_code=True)
        if "AutoModel" in (getattr(config, "auto_map", None) or {}):  # the released checkpoint's own head
            model = AutoModel.from_pretrained(path, trust_remote_code=True)
        else:
            model = AutoModelForTokenClassification.from_pretrained(path)
        return model, AutoTokenizer.from_pretrained(path)


class SkyworkFormat(PRMFormat):
    key = "skywork-1.5b"
    hub_id = "Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B"
    step_token = "\n"

    def encode(self, tokenizer: Any, question: str, steps: Sequence[str]) -> Encoded:
        ids = list(tokenizer.encode((tokenizer.bos_token or "") + question + "\n", add_special_tokens=False))
        step_id = _single_token(tokenizer, self.step_token)
        positions = []
        for s in steps:
            ids += [*tokenizer.encode(s, add_special_tokens=False), step_id]
            positions.append(len(ids) - 1)
        return Encoded(ids, positions)

    def read(self, output: Any, positions: list[int]) -> list[float]:
        import torch

        values = torch.sigmoid(output.float().cpu())[0]
        return [float(values[p]) for p in positions]

    def load(self, path: str) -> tuple[Any, Any]:
        """The base Qwen2 model plus the linear value head stored beside it as v_head.*."""
        import torch
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        base = AutoModel.from_pretrained(path)
        head = torch.nn.Linear(base.config.hidden_size, 1)
        state: dict[str, Any] = {}
        for f in sorted(Path(path).glob("*.safetensors")):
            state.update({k: v for k, v in load_file(str(f)).items() if "v_head" in k})
        weight = next((v for k, v in state.items() if k.endswith("weight")), None)
        if weight is None:
            raise PRMError(f"{path}: no v_head weights found")
        head.weight.data.copy_(weight.reshape(1, -1))
        bias = next((v for k, v in state.items() if k.endswith("bias")), None)
        if bias is not None:
            head.bias.data.copy_(bias.reshape(1))
        return ValueHeadModel(base, head), AutoTokenizer.from_pretrained(path)


class ValueHeadModel:
    """A base model whose last hidden state goes through a linear value head (one logit per token)."""

    def __init__(self, base: Any, head: Any) -> None:
        self.base, self.head = base, head

    def __call__(self, input_ids: Any) -> Any:
        hidden = self.base(input_ids=input_ids).last_hidden_state
        return self.head(hidden).squeeze(-1)

    def num_parameters(self) -> int:
        return int(self.base.num_parameters()) + sum(p.numel() for p in self.head.parameters())

    def eval(self) -> ValueHeadModel:
        self.base.eval()
        return self


FORMATS: dict[str, type[PRMFormat]] = {
    f.key: f for f in (RLHFlowFormat, MathShepherdFormat, QwenPRMFormat, SkyworkFormat)
}


class TransformersPRM:
    """A `Scorer` backed by a PRM in transformers, on the CPU unless told otherwise."""

    def __init__(self, fmt: PRMFormat, model: Any, tokenizer: Any) -> None:
        self.fmt = fmt
        self.model = model.eval() if hasattr(model, "eval") else model
        self.tokenizer = tokenizer
        self.name = f"prm:{fmt.key}"
        fmt.bind(tokenizer)
        import torch

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device != "cpu" and hasattr(self.model, "to"):
            self.model = self.model.to(self.device)
        self.n_params = int(model.num_parameters()) if hasattr(model, "num_parameters") else 0

    @classmethod
    def load(cls, key: str, path: str | None = None) -> TransformersPRM:
        """From a local directory (or a hub id, where the network allows)."""
        if key not in FORMATS:
            raise PRMError(f"unknown PRM {key!r}; known: {', '.join(FORMATS)}")
        try:
            import torch  # noqa: F401
            import transformers  # noqa: F401
        except ImportError:
            raise PRMError("PRM scorers need torch and transformers: pip install 'ttscale[prm]'") from None
        fmt = FORMATS[key]()
        try:
            model, tokenizer = fmt.load(path or fmt.hub_id)
        except OSError as e:
            raise PRMError(f"could not load PRM {key} from {path or fmt.hub_id}: {e}") from None
        return cls(fmt, model, tokenizer)

    def step_scores(self, question: str, steps: Sequence[str]) -> tuple[list[float], int]:
        import torch

        enc = self.fmt.encode(self.tokenizer, question, steps)
        with torch.no_grad():
            output = self.model(input_ids=torch.tensor([enc.input_ids], device=self.device))
        return self.fmt.read(output, enc.positions), len(enc.input_ids)

    def score(self, problem: Problem, candidates: Sequence[Candidate]) -> tuple[list[list[float]], Compute]:
        t0 = time.perf_counter()
        tokens = 0
        out = []
        for c in candidates:
            steps = [s.text for s in c.steps if s.text.strip()]
            if not steps:
                out.append([0.0])
                continue
            scores, n = self.step_scores(problem.question, steps)
            # blank steps (no text) get their predecessor's score, so scores stay aligned with c.steps
            aligned, k = [], 0
            for s in c.steps:
                if s.text.strip():
                    k += 1
                aligned.append(scores[k - 1] if k else 0.0)
            out.append(aligned)
            tokens += n
        compute = Compute(
            verifier_tokens=tokens, wall_time=time.perf_counter() - t0, flops=model_flops(self.n_params, tokens)
        )
        return out, compute


def _ids(encoded: Any) -> list[int]:
    """apply_chat_template(tokenize=True) returns a list, or a BatchEncoding in newer transformers."""
    if hasattr(encoded, "input_ids") or isinstance(encoded, dict):
        encoded = encoded["input_ids"]
    return [int(t) for t in encoded]
