"""The CPU serving path of ``ServingEncoder``: the posterior-mean chain on oneDNN with prepacked weights.

``b1 = mu1`` takes four Linears (the mu rows of each encoder's last Linear only). On the CPU
torch runs a float32 ``addmm`` through MKL, whose kernels are not the fastest on every CPU (on
AMD EPYC MKL does not use its AVX-512 code); oneDNN's JIT kernels are, once the weights are
reordered into its blocked layout. This module reorders them once
(``torch.ops.mkldnn._reorder_linear_weight``) and runs each Linear as one
``torch.ops.mkldnn._linear_pointwise`` call: exact float32, any number of rows (the packing does
not depend on them), no padding. The ReLUs run in torch (``relu_``), not in oneDNN's epilogue,
which turns NaN into 0; NaN and Inf therefore propagate as in the reference.

The packed weights are rebuilt when a weight changes: every call compares each parameter's
version counter and storage with the ones packed (in-place updates such as ``load_state_dict``
or an optimiser step bump the counter), so the next call sees new weights, as the other paths do.
"""

from __future__ import annotations

import threading
from typing import Optional

import torch
from torch import nn

from ..encode import layers


def available(model: nn.Module, dtype: torch.dtype, device: torch.device) -> bool:
    """Whether this path serves ``model``: float32 on the CPU, with torch built with oneDNN."""
    return (device.type == "cpu" and dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight") and not model.training)


def _signature(tensors) -> tuple:
    return tuple((t._version, t.data_ptr()) for t in tensors)


class PrepackedChain:
    """``b1 = mu1`` of ``[rows, X0_dim]`` through four oneDNN Linears with prepacked weights.

    Safe to call from several threads at once (the packed weights are only read; a repack after a
    weight update swaps them in one assignment).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._layers = layers(model)  # the parameters, looked up once (replacing them needs a new wrapper)
        self._lock = threading.Lock()
        self._packed: Optional[tuple] = None
        self._seen: Optional[tuple] = None

    def _pack(self) -> tuple:
        cfg = self.model.config
        w0, c0, w1, c1, w2, c2, w3, c3 = (t.detach() for t in self._layers)
        weights = (w0, w1[: cfg.B0_dim], w2, w3[: cfg.B1_dim])
        biases = (c0, c1[: cfg.B0_dim], c2, c3[: cfg.B1_dim])
        reorder = torch.ops.mkldnn._reorder_linear_weight
        return tuple((reorder(w.contiguous()), b.contiguous()) for w, b in zip(weights, biases))

    def packed(self) -> tuple:
        """The packed ``(weight, bias)`` of each Linear, rebuilt if a weight changed since."""
        seen = _signature(self._layers)
        if seen != self._seen:
            with self._lock:
                if seen != self._seen:
                    self._packed, self._seen = self._pack(), seen
        return self._packed

    def __call__(self, x2d: torch.Tensor) -> torch.Tensor:
        (w0, c0), (w1, c1), (w2, c2), (w3, c3) = self.packed()
        linear = torch.ops.mkldnn._linear_pointwise
        h = linear(x2d, w0, c0, "none", [], "").relu_()
        b0 = linear(h, w1, c1, "none", [], "")
        h = linear(b0, w2, c2, "none", [], "").relu_()
        return linear(h, w3, c3, "none", [], "")
