"""A PRM served by vLLM's pooling endpoint, as a `Scorer`: the request text is built in the
same format as the local adapter (`verifiers.prm`), the server computes the step scores."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..core import Candidate, Compute, Problem
from ..engines.openai import OpenAIGenerator, RemoteError
from .prm import QWEN_PRM_SYSTEM, math_shepherd_text


class PoolingPRMScorer:
    """A PRM served by vLLM's /pooling endpoint with step pooling (one row per step tag), e.g.

        vllm serve Qwen/Qwen2.5-Math-PRM-7B --task reward --override-pooler-config \\
            '{"pooling_type": "STEP", "step_tag_id": 151651, "returned_token_ids": [0, 1]}'

    The request text is built with the same format as the local adapter (`ttscale.prm`);
    the step score is column `index` of each row (1 for Qwen's class "correct", 0 for
    Math-Shepherd's "+" with returned_token_ids [648, 387])."""

    def __init__(self, client: OpenAIGenerator, text_format: str = "qwen2.5-math-prm-7b", index: int = 1) -> None:
        if text_format not in PRM_TEXT:
            raise ValueError(f"no text rendering for PRM format {text_format!r}; known: {', '.join(PRM_TEXT)}")
        self.client = client
        self.render = PRM_TEXT[text_format]
        self.index = index
        self.name = f"remote-prm:{text_format}"

    def score(self, problem: Problem, candidates: Sequence[Candidate]) -> tuple[list[list[float]], Compute]:
        t0 = time.perf_counter()
        bodies = [
            {"model": self.client.name, "input": self.render(problem.question, [s.text for s in c.steps])}
            for c in candidates
        ]
        replies = list(self.client._pool.map(lambda b: self.client.post("/pooling", b), bodies))
        out, tokens = [], 0
        for c, reply in zip(candidates, replies, strict=True):
            rows = reply["data"][0]["data"]
            if len(rows) != len(c.steps):
                raise RemoteError(
                    f"PRM returned {len(rows)} scores for {len(c.steps)} steps: is the server using STEP pooling?"
                )
            out.append([float(r[self.index]) if isinstance(r, list) else float(r) for r in rows])
            tokens += int((reply.get("usage") or {}).get("prompt_tokens") or 0)
        compute = Compute(verifier_tokens=tokens, wall_time=time.perf_counter() - t0)
        return out, compute


def _qwen_prm_text(question: str, steps: Sequence[str]) -> str:
    system = QWEN_PRM_SYSTEM
    answer = "<extra_0>".join(steps) + "<extra_0>"
    return (
        f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
        f"<|im_start|>assistant\n{answer}<|im_end|>\n"
    )


PRM_TEXT = {"qwen2.5-math-prm-7b": _qwen_prm_text, "math-shepherd": math_shepherd_text}
