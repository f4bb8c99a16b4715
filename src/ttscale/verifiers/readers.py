"""A second model that reads the policy's solutions: a larger outcome judge, or a reward on
another model's layers (#20: "what a three-times-larger verifier buys").

The scorer is built again for every problem; the model must not be. So each reading engine
is loaded once per process, by (model, layers), and kept. Its forward passes are charged as
verifier work with its own size: the engine computes its FLOPs from its own parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..engines.models import REGISTRY

_ENGINES: dict[tuple[str, tuple[int, ...] | None], Any] = {}


def is_model(generator: Any, model: str) -> bool:
    """Whether the engine runs `model` (a registered name, or the file it was loaded from)."""
    return getattr(generator, "name", None) == model or str(getattr(generator, "path", "")) == model


def reader_engine(model: str, policy: Any = None, layers: Sequence[int] | None = None) -> Any:
    """An engine that runs `model` (reading `layers`, if given): the policy itself when it is
    that model and reads those layers, otherwise an embedded engine loaded once."""
    wanted = tuple(layers) if layers else None
    if policy is not None and is_model(policy, model) and (wanted is None or set(wanted) <= set(policy.layers or ())):
        return policy
    key = (model, wanted)
    if key not in _ENGINES:
        from ..engines.llamacpp import LlamaCppGenerator  # llama.cpp only when a reader is asked for

        _ENGINES[key] = LlamaCppGenerator(model, n_ctx=16384, n_seq_max=16, layers=wanted)
    return _ENGINES[key]


def model_with_sha256(sha256: str) -> str | None:
    """The registered model whose GGUF has this checksum, if any."""
    return next((name for name, spec in REGISTRY.items() if spec.sha256 == sha256), None)


def close_readers() -> None:
    for engine in _ENGINES.values():
        engine.close()
    _ENGINES.clear()
