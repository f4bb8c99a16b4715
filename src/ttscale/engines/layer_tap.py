"""Reading chosen layers' hidden states out of the decode that samples: no second forward pass.

llama.cpp's scheduler asks an eval callback, for every tensor of the graph, whether it wants
to see it (the mechanism of llama.cpp's `eval-callback` example). The tap says yes only to
the residual stream after each chosen layer (tensors named `l_out-N`) and copies those rows
out once they are computed. Every "yes" splits the graph there, so only the chosen layers
are asked for, and only in the decodes that need them (`active`); `bench probe` measures
the cost against the tap off.

Rows come in batch order, one per token of the decode. llama.cpp trims only the last layer
to the tokens that ask for logits, so a decode that reads the last layer asks for every
token's logits; a replay reading earlier layers only asks for none (`reads_last_layer`),
which spares it the vocabulary projection of every token. `take` checks the row count.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

import numpy as np


class TapError(RuntimeError):
    pass


def resolve_layers(n_layer: int, layers: Sequence[int]) -> tuple[int, ...]:
    """Layer numbers as llama.cpp counts them (0 is the first block, n_layer - 1 the last);
    negative ones count from the end (-1 is the last). Sorted, each once."""
    if not layers:
        raise ValueError("name at least one layer")
    out = []
    for layer in layers:
        if not isinstance(layer, int) or isinstance(layer, bool):
            raise ValueError(f"a layer is an integer, not {layer!r}")
        k = layer + n_layer if layer < 0 else layer
        if not 0 <= k < n_layer:
            span = f"0..{n_layer - 1} or -1..-{n_layer}"
            raise ValueError(f"layer {layer} does not exist: the model has {n_layer} layers, {span}")
        out.append(k)
    if len(set(out)) != len(out):
        raise ValueError(f"layers {list(layers)} name one layer twice")
    return tuple(sorted(out))


def _ggml() -> Any:
    """The few ggml functions the tap needs, typed: reading a tensor through its accessors
    keeps ttscale independent of the C struct's layout, which changes between releases."""
    from llama_cpp._ggml import libggml

    void, size = ctypes.c_void_p, ctypes.c_size_t
    for name, result, args in (
        ("ggml_get_name", ctypes.c_char_p, [void]),
        ("ggml_nrows", ctypes.c_int64, [void]),
        ("ggml_nelements", ctypes.c_int64, [void]),
        ("ggml_element_size", size, [void]),
        ("ggml_is_contiguous", ctypes.c_bool, [void]),
        ("ggml_backend_tensor_get", None, [void, void, size, size]),
    ):
        fn = getattr(libggml, name)
        fn.restype, fn.argtypes = result, args
    return libggml


class LayerTap:
    """Set `callback` as the context's cb_eval before the context is made; keep the tap alive
    as long as the context."""

    def __init__(self, n_layer: int, layers: Sequence[int], width: int) -> None:
        import llama_cpp as L

        self.layers = resolve_layers(n_layer, layers)
        self.reads_last_layer = n_layer - 1 in self.layers
        self.width = width
        self.active = False
        self._names = {f"l_out-{k}".encode(): i for i, k in enumerate(self.layers)}
        self._arrived: list[list[np.ndarray]] = [[] for _ in self.layers]
        self._error: str | None = None
        self._g = _ggml()
        self.callback = L.ggml_backend_sched_eval_callback(self._observe)

    def _observe(self, tensor: int, ask: bool, _user: int) -> bool:
        # Called by llama.cpp from inside llama_decode: an exception here would be printed and
        # lost, so any trouble is kept for `take` to raise.
        i = self._names.get(self._g.ggml_get_name(tensor))
        if ask:
            return self.active and i is not None
        if i is None or not self.active:
            return True
        try:
            g = self._g
            n, rows = int(g.ggml_nelements(tensor)), int(g.ggml_nrows(tensor))
            if g.ggml_element_size(tensor) != 4 or not g.ggml_is_contiguous(tensor) or n != rows * self.width:
                raise TapError(f"layer {self.layers[i]}'s output is not a contiguous float32 matrix, {self.width} wide")
            out = np.empty((rows, self.width), dtype=np.float32)
            g.ggml_backend_tensor_get(tensor, out.ctypes.data, 0, n * 4)
            self._arrived[i].append(out)
        except Exception as e:  # kept and raised by take()
            self._error = str(e)
        return True

    def take(self, tokens: int) -> np.ndarray:
        """The last decode's states, shape (tokens, layers, width), and forget them."""
        arrived, self._arrived = self._arrived, [[] for _ in self.layers]
        error, self._error = self._error, None
        if error:
            raise TapError(error)
        parts = []
        for layer, chunks in zip(self.layers, arrived, strict=True):
            rows = np.concatenate(chunks) if chunks else np.empty((0, self.width), np.float32)
            if len(rows) != tokens:
                raise TapError(f"layer {layer} gave {len(rows)} rows for a decode of {tokens} tokens")
            parts.append(rows)
        return np.stack(parts, axis=1)
