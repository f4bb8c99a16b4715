"""Every seed rule of ttscale, in one place. A seed depends only on the run's seed and on
where the draw sits (problem, prompt, sample, expansion, round), never on what ran before,
so a resumed, sharded or reordered run draws exactly what an uninterrupted one would."""

from __future__ import annotations

import hashlib

SEARCH_EXPANSION_STRIDE = 7919  # a prime: the k-th expansion of a search draws fresh samples
REFINE_ROUND_STRIDE = 104729  # a prime: each self-refinement round draws apart from the others
CONTINUATION_OFFSET = 1  # compute_optimal's samples after its probe
TESTS_OFFSET = 15485863  # a prime: the tests a model writes for a code problem


def problem_seed(seed: int, problem_id: str) -> int:
    """Each problem's sampling seed, from the run seed and the problem's id only."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{problem_id}".encode()).digest()[:4], "little") & 0x7FFFFFFF


def growth_seed(record_seed: int, problem_id: str, grown_from: int) -> int:
    """The seed of the samples added to a stored pool of `grown_from` samples: apart from the
    pool's own, so growing is reproducible and never repeats a stored sample."""
    return problem_seed(record_seed, f"{problem_id}|grown from {grown_from}")


def sample_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """A distinct, reproducible 32-bit seed per (call seed, prompt, sample), what engines give
    each sequence. 0xFFFFFFFF is avoided: llama.cpp reads it as 'pick a random seed'."""
    x = (seed * 0x9E3779B1 + prompt_index * 0x85EBCA77 + sample_index * 0xC2B2AE3D) & 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    return x if x != 0xFFFFFFFF else 0


def expansion_seed(seed: int, expansion: int) -> int:
    """The seed of a step search's `expansion`-th call to the engine."""
    return seed + SEARCH_EXPANSION_STRIDE * expansion


def round_seed(seed: int, round_: int) -> int:
    """The seed of self-refinement round `round_` (0 is the first answer)."""
    return seed + REFINE_ROUND_STRIDE * round_


def continuation_seed(seed: int) -> int:
    """The seed of what compute_optimal spends after its probe samples."""
    return seed + CONTINUATION_OFFSET


def tests_seed(seed: int) -> int:
    """The seed of the tests a model writes for a code problem, apart from its programs'."""
    return seed + TESTS_OFFSET


def fake_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """The fake engine's script seed: `% 100` is the sample, `% 1000 // 100` the prompt."""
    return seed * 1000 + prompt_index * 100 + sample_index
