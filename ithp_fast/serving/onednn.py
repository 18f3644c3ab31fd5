"""The CPU serving path of ``ServingEncoder``: the posterior-mean chain on oneDNN with prepacked weights.

``b1 = mu1`` takes two Linears per level (the mu rows of each encoder's last Linear only). On the CPU
torch runs a float32 ``addmm`` through MKL, whose kernels are not the fastest on every CPU (on
AMD EPYC MKL does not use its AVX-512 code); oneDNN's JIT kernels are, once the weights are
reordered into its blocked layout. This module reorders them once
(``torch.ops.mkldnn._reorder_linear_weight``) and runs each Linear as one
``torch.ops.mkldnn._linear_pointwise`` call: exact float32, any number of rows (the packing does
not depend on them), no padding. The ReLUs run in torch (``relu_``), not in oneDNN's epilogue,
which turns NaN into 0; NaN and Inf therefore propagate as in the reference.

The packed weights are rebuilt when a weight changes: every call compares each parameter's
version counter and storage with the ones packed (:func:`~ithp_fast.serving.buckets.weights_version`:
``load_state_dict``, an optimiser step, an in-place op on a parameter or on ``p.detach()`` bump
the counter; ``p.data = t`` changes the storage), so the next call sees new weights. A write
that bypasses the counter (through ``p.data`` or a NumPy / DLPack view) is seen after
:meth:`PrepackedChain.refresh`.
"""

from __future__ import annotations

import threading
from typing import Optional

import torch
from torch import nn

from .buckets import weights_version


def available(model: nn.Module, dtype: torch.dtype, device: torch.device) -> bool:
    """Whether this path serves ``model``: float32 on the CPU, with torch built with oneDNN."""
    return (device.type == "cpu" and dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight") and not model.training)


def encoder_linears(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor, Optional[int]]]:
    """``(weight, bias, rows kept)`` of each Linear on the posterior-mean chain, level by level:
    the encoder's first Linear (all rows) and the mu rows of its last (``bottleneck_dims[k]``).
    The parameters themselves, not views: a parameter whose data is replaced is seen."""
    out = []
    for k, width in enumerate(model.config.bottleneck_dims):
        encoder = model.level_modules(k).encoder
        out += [(encoder.first.weight, encoder.first.bias, None), (encoder.last.weight, encoder.last.bias, width)]
    return out


class PrepackedChain:
    """The last level's ``b = mu`` of ``[rows, X0_dim]`` through oneDNN Linears with prepacked
    weights (two per level: four for the paper's two levels).

    Safe to call from several threads at once (the packed weights are only read; a repack after a
    weight update swaps them in one assignment).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._lock = threading.Lock()
        self._packed: Optional[tuple] = None
        self._seen: Optional[tuple] = None
        self._look_up()

    def _look_up(self) -> None:
        # The parameters, looked up here (not on every call; refresh() looks them up again).
        self._linears = encoder_linears(self.model)
        self._tensors = tuple(t for w, b, _ in self._linears for t in (w, b))

    def _pack(self) -> tuple:
        reorder = torch.ops.mkldnn._reorder_linear_weight
        return tuple((reorder(w.detach()[:rows].contiguous()), b.detach()[:rows].contiguous())
                     for w, b, rows in self._linears)

    def refresh(self) -> None:
        """Look the parameters up again and pack them now, whatever their version counters say."""
        with self._lock:
            self._look_up()
            self._packed, self._seen = self._pack(), weights_version(self._tensors)

    def packed(self) -> tuple:
        """The packed ``(weight, bias)`` of each Linear, rebuilt if a weight changed since."""
        seen = weights_version(self._tensors)
        if seen != self._seen:
            with self._lock:
                if seen != self._seen:
                    self._packed, self._seen = self._pack(), seen
        return self._packed

    def __call__(self, x2d: torch.Tensor) -> torch.Tensor:
        linear = torch.ops.mkldnn._linear_pointwise
        b = x2d
        packed = self.packed()
        for first in range(0, len(packed), 2):  # per level: Linear -> ReLU -> Linear (mu rows)
            (w, c), (w_mu, c_mu) = packed[first], packed[first + 1]
            b = linear(linear(b, w, c, "none", [], "").relu_(), w_mu, c_mu, "none", [], "")
        return b
