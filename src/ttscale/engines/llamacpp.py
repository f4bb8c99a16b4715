"""The embedded engine: llama.cpp on the CPU through llama-cpp-python's low-level API.

Why low-level: the high-level `Llama` object decodes one sequence at a time. Test-time
compute needs the opposite: many samples of one prompt, decoded together in one batch, the
prompt's KV cache computed once and shared (llama.cpp sequence copy in a unified KV buffer).

The KV cache is managed as a set of sequence slots, each remembering the tokens it holds.
A new prompt starts from the slot sharing its longest prefix, so a repeated prompt, or a
partial answer that extends an earlier one, only computes its new tokens. Sampling runs in
llama.cpp's native sampler chain (one chain per sequence, seeded per sample); numpy only
computes one log-sum-exp per row for the log-probabilities the verifiers need.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core import Completion, Compute, Generation, Prompt, SamplingParams, model_flops, sample_seed
from .kv_slots import Slot, SlotError, SlotPlan, Unit, idle_slots, pack_units, plan_slots
from .layer_tap import LayerTap
from .models import DEFAULT_MODEL, ModelError, resolve
from .sequences import Decoding, LayerPooler, add_token, distribution_statistics, logsumexp_rows, step_end_tokens
from .threads import ThreadGovernor


class EngineError(RuntimeError):
    pass


class LlamaCppGenerator:
    """A `Generator` over one GGUF model. Not thread-safe: one call at a time."""

    replays_certainties = True  # `replay(..., certainties=True)` recomputes a stored text's token statistics

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        n_ctx: int = 32768,
        n_seq_max: int = 64,
        n_batch: int = 512,
        n_threads: int | str | None = "auto",
        verbose: bool = False,
        hidden_states: bool = False,
        layers: Sequence[int] | None = None,
    ) -> None:
        """hidden_states: also return the final hidden state at the end of every step, read
        from the same decode that yields the logits (llama.cpp embeddings, no pooling).
        layers: also return these layers' states (negative: from the end), pooled per step
        and kept for the last tokens (`Completion.layer_states`), read from the same decode
        through llama.cpp's eval callback (`layer_tap.py`).
        n_threads: "auto" (the default): every core the rest of the machine leaves free,
        re-read about once a second (`threads.py`); or a fixed count (None: every core)."""
        import llama_cpp as L
        from llama_cpp import _logger

        _logger.set_verbose(verbose)
        self._L = L
        path, spec = resolve(model)
        self.path = path
        self.spec = spec
        self.name = spec.name if spec else path.stem
        L.llama_backend_init()
        self._model = L.llama_model_load_from_file(str(path).encode(), L.llama_model_default_params())
        if not self._model:
            raise ModelError(f"llama.cpp could not load {path}")
        cp = L.llama_context_default_params()
        cp.n_ctx = n_ctx
        cp.n_batch = n_batch
        cp.n_ubatch = n_batch
        cp.n_seq_max = n_seq_max
        cores = os.cpu_count() or 1
        self._governor = ThreadGovernor(cores) if n_threads == "auto" else None
        if isinstance(n_threads, str) and n_threads != "auto":
            raise ValueError(f"n_threads must be a positive integer or 'auto', not {n_threads!r}")
        threads = cores if n_threads in (None, "auto") else int(n_threads)
        self._threads = threads
        self.decodes_by_threads: dict[int, int] = {}  # how many decodes ran at each thread count
        cp.n_threads = threads
        cp.n_threads_batch = threads
        cp.kv_unified = True  # shared prefixes live once in the cache, across sequences
        if hidden_states:
            cp.embeddings = True
            cp.pooling_type = L.LLAMA_POOLING_TYPE_NONE
        self.n_embd = int(L.llama_model_n_embd(self._model))
        self._tap = LayerTap(int(L.llama_model_n_layer(self._model)), layers, self.n_embd) if layers else None
        self.layers = self._tap.layers if self._tap else None
        if self._tap:
            cp.cb_eval = self._tap.callback
            cp.cb_eval_user_data = None
        self._states: np.ndarray | None = None  # the last decode's layer states, one row per token
        self._ctx = L.llama_init_from_model(self._model, cp)
        if not self._ctx:
            L.llama_model_free(self._model)
            raise EngineError(f"llama.cpp could not create a context (n_ctx={n_ctx}, n_seq_max={n_seq_max})")
        self._vocab = L.llama_model_get_vocab(self._model)
        self._mem = L.llama_get_memory(self._ctx)
        self.n_vocab = L.llama_vocab_n_tokens(self._vocab)
        self.hidden_states = hidden_states
        self.n_params = int(L.llama_model_n_params(self._model))
        self.n_ctx = L.llama_n_ctx(self._ctx)
        self.n_seq_max = n_seq_max
        self.n_batch = n_batch
        tmpl = L.llama_model_chat_template(self._model, None)
        if not tmpl:
            raise ModelError(f"{path} carries no chat template")
        self._template: bytes = tmpl
        self._batch = L.llama_batch_init(max(n_batch, n_seq_max), 0, 1)
        self._slots = [Slot() for _ in range(n_seq_max)]
        self._clock = 0
        self._pieces: dict[int, bytes] = {}
        self._log_v = math.log(self.n_vocab)
        self.timing = {"decode_s": 0.0, "sample_s": 0.0}  # where the time goes, for `bench engine`
        # Set to a list to record (prompt tokens, [generated tokens per sample]) of every
        # generate call: `bench search` measures the search tree with it.
        self.token_log: list[tuple[list[int], list[list[int]]]] | None = None

    # --- text <-> tokens ---------------------------------------------------------------

    def render(self, prompt: Prompt) -> str:
        """The chat template applied with an open assistant turn, then the partial answer."""
        L = self._L
        msgs = (L.llama_chat_message * len(prompt.messages))()
        keep = []  # the bytes must outlive the call
        for k, (role, content) in enumerate(prompt.messages):
            r, c = role.encode(), content.encode()
            keep += [r, c]
            msgs[k].role, msgs[k].content = r, c
        size = 4096 + sum(len(c) for _, c in prompt.messages) * 2
        buf = ctypes.create_string_buffer(size)
        n = L.llama_chat_apply_template(self._template, msgs, len(msgs), True, buf, size)
        if n > size:
            buf = ctypes.create_string_buffer(n)
            n = L.llama_chat_apply_template(self._template, msgs, len(msgs), True, buf, n)
        if n < 0:
            raise EngineError("llama.cpp does not support this model's chat template")
        return buf.raw[:n].decode("utf-8") + prompt.partial

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        L = self._L
        data = text.encode("utf-8")
        cap = len(data) + 16
        buf = (L.llama_token * cap)()
        n = L.llama_tokenize(self._vocab, data, len(data), buf, cap, False, special)
        if n < 0:
            cap = -n
            buf = (L.llama_token * cap)()
            n = L.llama_tokenize(self._vocab, data, len(data), buf, cap, False, special)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        p = self._pieces.get(token)
        if p is None:
            buf = ctypes.create_string_buffer(64)
            n = self._L.llama_token_to_piece(self._vocab, token, buf, 64, 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = self._L.llama_token_to_piece(self._vocab, token, buf, -n, 0, False)
            p = self._pieces[token] = buf.raw[:n]
        return p

    # --- generation --------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every cached sequence. llama.cpp's numerics depend (slightly) on where
        tokens sit in the KV buffer, so the same seed reproduces the same samples only from
        the same cache state: strategies reset at the start of each problem."""
        self._L.llama_memory_clear(self._mem, True)
        for slot in self._slots:
            slot.tokens = []
            slot.last_use = 0

    def generate(self, prompts: Sequence[Prompt], n: int, params: SamplingParams) -> Generation:
        if n < 1:
            raise ValueError("n must be >= 1")
        token_lists = [self.tokenize(self.render(p)) for p in prompts]
        for toks in token_lists:
            if not toks:
                raise EngineError("empty prompt")
            if len(toks) + params.max_tokens > self.n_ctx:
                raise EngineError(
                    f"prompt of {len(toks)} tokens + max_tokens {params.max_tokens} exceeds n_ctx {self.n_ctx}"
                )
        groups = pack_units(token_lists, n, self.n_seq_max, self.n_ctx, params.max_tokens)
        numbered: list[list[tuple[int, Completion]]] = [[] for _ in prompts]
        compute = Compute()
        for g in groups:
            done, comp = self._generate_group(g, params)
            for (i, j), completion in done:
                numbered[i].append((j, completion))
            compute = compute + comp
        rows = [[c for _, c in sorted(row, key=lambda jc: jc[0])] for row in numbered]
        if self.token_log is not None:
            self.token_log += [(toks, [c.token_ids for c in row]) for toks, row in zip(token_lists, rows, strict=True)]
        return Generation(rows, compute)

    def _generate_group(
        self, units: list[Unit], params: SamplingParams
    ) -> tuple[list[tuple[tuple[int, int], Completion]], Compute]:
        L = self._L
        t0 = time.perf_counter()
        self._clock += 1
        plan, computed, cached = self._prefill([u.tokens for u in units], [u.count for u in units])

        seqs: list[Decoding] = []
        for i, step in enumerate(plan):
            targets = step.targets
            for j, slot in enumerate(targets):
                if j:
                    L.llama_memory_seq_rm(self._mem, slot, -1, -1)
                    L.llama_memory_seq_cp(self._mem, targets[0], slot, -1, -1)
                    self._slots[slot].tokens = list(self._slots[targets[0]].tokens)
                prompt_index, sample_index = units[i].samples[j]
                seed = sample_seed(params.seed, prompt_index, sample_index)
                pooler = LayerPooler(self._tap.layers, self.n_embd) if self._tap else None
                seqs.append(
                    Decoding(slot, i, self._sampler(params, seed), sample=(prompt_index, sample_index), pooler=pooler)
                )

        stops = [s.encode("utf-8") for s in params.stop if s]
        rows = [s.unit for s in seqs]
        active = seqs
        try:
            while active:
                self._sample(active, rows, params, stops)
                active = [s for s in active if s.finish_reason is None]
                if not active:
                    break
                self._decode([(s.slot, s.pending) for s in active], logits=True, states=True)  # type: ignore[misc]
                rows = list(range(len(active)))
        finally:
            for s in seqs:
                L.llama_sampler_free(s.sampler)

        out = [(s.sample, s.completion()) for s in seqs]
        generated = sum(len(s.token_ids) for s in seqs)
        compute = Compute(
            generated_tokens=generated,
            prompt_tokens=computed,
            cached_prompt_tokens=cached,
            wall_time=time.perf_counter() - t0,
            flops=model_flops(self.n_params, computed + generated),
        )
        return out, compute

    def _prefill(
        self, prompt_tokens: list[list[int]], counts: list[int], states: bool = False
    ) -> tuple[list[SlotPlan], int, int]:
        """Bring each prompt into the first of its slots, computing only what no slot already
        holds; afterwards logits row i belongs to prompt i (and, with `states`, the chosen
        layers' states at its last token are `self._states[i]`). Returns the slot plan and the
        prompt tokens computed and served from cache."""
        L = self._L
        try:
            plan = plan_slots(self._slots, prompt_tokens, counts, self._clock)
        except SlotError as e:
            raise EngineError(str(e)) from None
        computed = cached = 0
        # Copies first, then in-place truncations, so no source is cut before every copy is taken.
        for in_place in (False, True):
            for i, p in enumerate(plan):
                source, reuse, first = p.source, p.reuse, p.targets[0]
                if (first == source) != in_place:
                    continue
                if in_place:
                    L.llama_memory_seq_rm(self._mem, first, reuse, -1)
                else:
                    L.llama_memory_seq_rm(self._mem, first, -1, -1)
                    if reuse:
                        L.llama_memory_seq_cp(self._mem, source, first, 0, reuse)
                self._slots[first].tokens = prompt_tokens[i][:reuse]
                cached += reuse
                computed += len(prompt_tokens[i]) - reuse
        # Every prompt's new tokens but the last, then all last tokens in one batch, so that
        # every prompt's logits are available together.
        body = [(p.targets[0], tok) for i, p in enumerate(plan) for tok in prompt_tokens[i][p.reuse : -1]]
        for at in range(0, len(body), self.n_batch):
            self._decode(body[at : at + self.n_batch], logits=False)
        self._decode([(p.targets[0], prompt_tokens[i][-1]) for i, p in enumerate(plan)], logits=True, states=states)
        return plan, computed, cached

    def next_token_logprobs(
        self, prompts: Sequence[Prompt], tokens: Sequence[str]
    ) -> tuple[list[list[float]], Compute]:
        """log p(token | prompt) of each given single token at the position after each prompt:
        one forward pass over whatever part of each prompt is not cached yet (an LLM judge's
        "Yes"/"No", for instance)."""
        logprobs, _, compute = self.read_next_token(prompts, tokens)
        return logprobs, compute

    def read_next_token(
        self, prompts: Sequence[Prompt], tokens: Sequence[str], states: bool = False
    ) -> tuple[list[list[float]], np.ndarray | None, Compute]:
        """`next_token_logprobs`, and with `states` the chosen layers' states at each prompt's
        last token, shape (prompts, layers, width): where a judge decides, read from the same
        forward pass (what a probe of the judge reads, #20)."""
        if states and not self._tap:
            raise EngineError("the states at a prompt's end are read from layers: start the engine with layers")
        ids = []
        for t in tokens:
            tok = self.tokenize(t, special=False)
            if len(tok) != 1:
                raise EngineError(f"{t!r} is {len(tok)} tokens for this model, not one")
            ids.append(tok[0])
        out: list[list[float]] = []
        read: list[np.ndarray] = []
        compute = Compute()
        token_lists = [self.tokenize(self.render(p)) for p in prompts]
        per_batch = self.n_seq_max // 2 or 1
        for at in range(0, len(token_lists), per_batch):
            t0 = time.perf_counter()
            self._clock += 1
            chunk = token_lists[at : at + per_batch]
            _, computed, cached = self._prefill(chunk, [1] * len(chunk), states=states)
            if states and self._states is not None:
                read.append(self._states.copy())
            logits = np.ctypeslib.as_array(self._L.llama_get_logits(self._ctx), shape=(len(chunk), self.n_vocab))
            lse = logsumexp_rows(logits)
            out += [[float(logits[r, t] - lse[r]) for t in ids] for r in range(len(chunk))]
            compute = compute + Compute(
                prompt_tokens=computed,
                cached_prompt_tokens=cached,
                wall_time=time.perf_counter() - t0,
                flops=model_flops(self.n_params, computed),
            )
        if not states:
            return out, None, compute
        empty = np.empty((0, len(self.layers or ()), self.n_embd), np.float32)  # no prompts
        return out, np.concatenate(read) if read else empty, compute

    def replay(
        self, prompt: Prompt, text: str, finish_reason: str = "eos", certainties: bool = False
    ) -> tuple[Completion, Compute]:
        """The completion this engine would have returned had it sampled exactly `text` after
        `prompt`: the hidden states it captures at step ends and, with `certainties`, each
        token's log-probability and self-certainty (what a pool stored before DeepConf's token
        confidences were kept lacks). One prefill, no sampling: this is how a stored solution
        is scored, and it costs a forward pass that sampling gets for free."""
        if not certainties and not self.hidden_states and not self._tap:
            raise EngineError("replay reads hidden states: start the engine with hidden_states=True or layers")
        t0 = time.perf_counter()
        self._clock += 1
        prompt_tokens = self.tokenize(self.render(prompt))
        answer = self.tokenize(text, special=False) if text else []
        if len(prompt_tokens) + len(answer) > self.n_ctx:
            raise EngineError(f"prompt + text of {len(prompt_tokens) + len(answer)} tokens exceed n_ctx {self.n_ctx}")
        plan, computed, cached = self._prefill([prompt_tokens], [1])
        slot = plan[0].targets[0]
        # Sampling captures the state of token k-1 when token k closes a step or the text.
        offsets, wanted = step_end_tokens([self.piece(t) for t in answer], finish_reason)
        states: dict[int, np.ndarray] = {}
        pooler = LayerPooler(self._tap.layers, self.n_embd) if self._tap else None
        last = max(wanted, default=-1)  # sampling never computes a state past it
        logprobs: list[float] = []
        certainty: list[float] = []
        # what each position predicted: the prompt's last token the first token, and so on;
        # a sample that ended by itself also drew the end-of-turn token, as sampling records
        predicted = answer[1:] + ([self._end_of_turn()] if finish_reason == "eos" else [])
        if certainties and answer:
            self._token_statistics([0], answer[:1], logprobs, certainty)
        # no logits are read back unless asked for: only where a state or a certainty needs them
        logits = certainties or bool(self.hidden_states) or bool(self._tap and self._tap.reads_last_layer)
        for at in range(0, len(answer), self.n_batch):
            chunk = answer[at : at + self.n_batch]
            self._decode([(slot, tok) for tok in chunk], logits=logits, states=True)
            if certainties:  # row j predicted token at + j + 1
                following = predicted[at : at + len(chunk)]
                self._token_statistics(list(range(len(following))), following, logprobs, certainty)
            for k in range(at, at + len(chunk)):
                if pooler and self._states is not None and k <= last:
                    pooler.add(k, self._states[k - at])
                if k in wanted:
                    if self.hidden_states:
                        states[k] = self._embedding(k - at)
                    if pooler:
                        pooler.end_step()
        computed += len(answer)
        completion = Completion(
            text=text,
            token_ids=answer,
            logprobs=logprobs,
            certainties=certainty,
            token_offsets=offsets,
            hidden=sorted(states.items(), key=lambda kv: kv[0]),
            finish_reason=finish_reason,
            layer_states=pooler.states() if pooler else None,
        )
        compute = Compute(
            prompt_tokens=computed,
            cached_prompt_tokens=cached,
            wall_time=time.perf_counter() - t0,
            flops=model_flops(self.n_params, computed),
        )
        return completion, compute

    def _end_of_turn(self) -> int:
        eot = int(self._L.llama_vocab_eot(self._vocab))
        return eot if eot >= 0 else int(self._L.llama_vocab_eos(self._vocab))

    def _token_statistics(
        self, rows: list[int], tokens: list[int], logprobs: list[float], certainty: list[float]
    ) -> None:
        """Append the log-probability of tokens[j] under logits row rows[j], and that row's
        self-certainty, as sampling records them (`_sample`)."""
        if not rows:
            return
        logits = np.ctypeslib.as_array(self._L.llama_get_logits(self._ctx), shape=(max(rows) + 1, self.n_vocab))
        # a replay asks for consecutive rows from 0: a view, not a copy of rows x vocabulary
        read = logits[: len(rows)] if rows == list(range(len(rows))) else logits[rows]
        lse, certain = distribution_statistics(read, self._log_v)
        certainty += certain.tolist()
        logprobs += (logits[rows, tokens] - lse).tolist()

    def _embedding(self, row: int) -> np.ndarray:
        vec = np.ctypeslib.as_array(self._L.llama_get_embeddings_ith(self._ctx, row), shape=(self.n_embd,))
        return vec.copy()

    def _decode(self, items: list[tuple[int, int]], logits: bool, states: bool = False) -> None:
        """One llama_decode of (slot, token) pairs, each at the next position of its slot;
        states: read the chosen layers' states of every token (`self._states`), when the
        engine reads layers."""
        L = self._L
        b = self._batch
        pos: dict[int, int] = {}
        for k, (slot, tok) in enumerate(items):
            p = pos.get(slot, len(self._slots[slot].tokens))
            pos[slot] = p + 1
            b.token[k] = tok
            b.pos[k] = p
            b.n_seq_id[k] = 1
            b.seq_id[k][0] = slot
            b.logits[k] = 1 if logits else 0
        b.n_tokens = len(items)
        self._govern()
        tap = self._tap if states else None
        if self._tap:
            self._tap.active = tap is not None
        t0 = time.perf_counter()
        rc = L.llama_decode(self._ctx, b)
        if rc == 1:  # no room in the KV cache: nothing was computed
            self._evict_idle()
            rc = L.llama_decode(self._ctx, b)
        if rc != 0:
            raise EngineError(
                f"llama_decode failed (code {rc}): the KV cache (n_ctx={self.n_ctx}) is too small for "
                "this many samples x max_tokens; lower n or max_tokens, or raise n_ctx"
            )
        self.timing["decode_s"] += time.perf_counter() - t0
        self._states = tap.take(len(items)) if tap else None
        for slot, tok in items:
            self._slots[slot].tokens.append(tok)

    def _govern(self) -> None:
        """With n_threads="auto", decode with the cores the rest of the machine leaves free."""
        if self._governor is not None and (t := self._governor.threads()) != self._threads:
            self._L.llama_set_n_threads(self._ctx, t, t)
            self._threads = t
        self.decodes_by_threads[self._threads] = self.decodes_by_threads.get(self._threads, 0) + 1

    def _evict_idle(self) -> None:
        for k in idle_slots(self._slots, self._clock):
            self._L.llama_memory_seq_rm(self._mem, k, -1, -1)
            self._slots[k].tokens = []

    def _sampler(self, params: SamplingParams, seed: int) -> Any:
        L = self._L
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        if params.temperature <= 0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
            return chain
        if params.top_k > 0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(params.top_k))
        if params.top_p < 1.0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(params.top_p, 1))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(params.temperature))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(seed))
        return chain

    def _sample(self, seqs: list[Decoding], rows: list[int], params: SamplingParams, stops: list[bytes]) -> None:
        """Sample the next token of each sequence from logits row rows[k]; record its
        log-probability and self-certainty; decide whether the sequence is finished."""
        L = self._L
        t0 = time.perf_counter()
        logits = np.ctypeslib.as_array(L.llama_get_logits(self._ctx), shape=(max(rows) + 1, self.n_vocab))
        lse, certainty = distribution_statistics(logits, self._log_v)
        for s, row in zip(seqs, rows, strict=True):
            if s.pooler and self._states is not None and s.token_ids:
                s.pooler.add(len(s.token_ids) - 1, self._states[row])  # the token just fed
            tok = L.llama_sampler_sample(s.sampler, self._ctx, row)
            piece = None if L.llama_vocab_is_eog(self._vocab, tok) else self.piece(tok)
            lp, cert = float(logits[row, tok] - lse[row]), float(certainty[row])
            if add_token(s, tok, lp, cert, piece, stops, params.max_tokens, params.confidence_floor):
                self._capture(s, row)
        self.timing["sample_s"] += time.perf_counter() - t0

    def _capture(self, s: Decoding, row: int) -> None:
        """The hidden state of the last token fed for this sequence: the end of the step that
        the token just sampled closes."""
        if self.hidden_states:
            s.hidden.append((len(s.token_ids) - 2, self._embedding(row)))
        if s.pooler:
            s.pooler.end_step()

    def close(self) -> None:
        L = self._L
        if getattr(self, "_ctx", None):
            L.llama_batch_free(self._batch)
            L.llama_free(self._ctx)
            L.llama_model_free(self._model)
            self._ctx = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown may have unloaded llama_cpp
            self.close()
