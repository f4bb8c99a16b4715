"""A deterministic fake engine for unit tests of strategies and evaluation logic.

It speaks the `Generator` protocol exactly (stop strings, max_tokens, partial answers,
token accounting with a prefix cache) but writes scripted text instead of running a model.
Tokens are whitespace-delimited pieces; log-probabilities come from a script or a hash.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence

from ..core import Completion, Compute, Generation, Prompt, SamplingParams, common_prefix, model_flops
from ..core.sampling import CONFIDENCE_WINDOW
from ..core.seeds import fake_seed
from .sequences import low_confidence

# (prompt, seed) -> full continuation text; seed = params.seed * 1000 + prompt index * 100 + sample
# index, so `seed % 100` is the sample's index within its prompt and `seed % 1000 // 100` the prompt's
Script = Callable[[Prompt, int], str]
_PIECES = re.compile(r"\s+|[^\s]+")


def _hash01(*parts: object) -> float:
    h = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(h[:4], "little") / 2**32


class FakeGenerator:
    name = "fake"
    n_params = 1_000_000

    def __init__(self, script: Script, logprob: Callable[[str], float] | None = None) -> None:
        self.script = script
        self.logprob = logprob or (lambda piece: -0.05 - _hash01(piece))
        self.calls: list[tuple[list[Prompt], int, SamplingParams]] = []
        self._cache: list[list[str]] = []

    def _tokens(self, prompt: Prompt) -> list[str]:
        toks = []
        for role, content in prompt.messages:
            toks += [f"<{role}>", *_PIECES.findall(content), "</>"]
        return [*toks, "<assistant>", *_PIECES.findall(prompt.partial)]

    def reset(self) -> None:
        self._cache = []

    def generate(self, prompts: Sequence[Prompt], n: int, params: SamplingParams) -> Generation:
        self.calls.append((list(prompts), n, params))
        compute = Compute()
        out: list[list[Completion]] = []
        for i, prompt in enumerate(prompts):
            toks = self._tokens(prompt)
            reuse = max((common_prefix(c, toks) for c in self._cache), default=0)
            compute.prompt_tokens += len(toks) - reuse
            compute.cached_prompt_tokens += reuse
            self._cache.append(toks)
            row = []
            for j in range(n):
                seed = fake_seed(params.seed, i, j)
                row.append(self._complete(self.script(prompt, seed), params))
            out.append(row)
            self._cache += [toks + _PIECES.findall(c.text) for c in row]  # what the sequences now hold
        compute.generated_tokens = sum(c.n_tokens for row in out for c in row)
        compute.flops = model_flops(self.n_params, compute.prompt_tokens + compute.generated_tokens)
        return Generation(out, compute)

    def next_token_logprobs(
        self, prompts: Sequence[Prompt], tokens: Sequence[str]
    ) -> tuple[list[list[float]], Compute]:
        """A hash of (prompt, token) in [-3, 0): enough for an LLM judge to run on."""
        rows = [[-3.0 * _hash01(p.messages, p.partial, t) for t in tokens] for p in prompts]
        computed = sum(len(self._tokens(p)) for p in prompts)
        return rows, Compute(prompt_tokens=computed, flops=model_flops(self.n_params, computed))

    def _complete(self, full: str, params: SamplingParams) -> Completion:
        text = b""
        ids: list[int] = []
        lps: list[float] = []
        offsets: list[int] = []
        finish = "eos"
        for piece in _PIECES.findall(full):
            if len(ids) >= params.max_tokens:
                finish = "length"
                break
            offsets.append(len(text))
            ids.append(int(_hash01(piece) * 50_000))
            lps.append(self.logprob(piece))
            before = len(text)
            text += piece.encode()
            hit = min(
                (at for s in params.stop if (at := text.find(s.encode(), max(0, before - len(s) + 1))) >= 0),
                default=-1,
            )
            if hit >= 0:
                text = text[:hit]
                finish = "stop"
                break
            floor = params.confidence_floor  # its certainty is -logprob: DeepConf's online stop
            if floor is not None and low_confidence(lps, -sum(lps[-CONFIDENCE_WINDOW:]), floor):
                finish = "low_confidence"
                break
        return Completion(
            text=text.decode(),
            token_ids=ids,
            logprobs=lps,
            certainties=[-lp for lp in lps],
            token_offsets=offsets,
            finish_reason=finish,
        )
