"""The drop-in fast ITHP: the reference's modules and state_dict, a faster forward / encode.

``forward`` / ``forward_levels`` keep the GEMMs in torch (``F.linear``: cuBLAS / MKL) and hand
every elementwise tail to the fused ops of the chosen backend (:mod:`ithp_fast.backends`); per
level k (``inp`` = x, then the previous level's b)::

    inp --linear--> relu_dropout --linear--> h_k --reparam_kl--> b_k, kl_k
    b_k --linear--> relu_dropout --linear--> z_k --detector_loss(detector_k)--> mse_k
    combine -> IB_total, kl_terms, mse_terms

Masks enter the fused ops as one weight per row (``1/count`` on the rows kept, 0 elsewhere:
:func:`ithp_fast.kernels.mean_weights`), read inside the kernels; no extra pass over the activations.
Without dropout (eval mode, or ``drop_prob`` 0) ``relu_dropout`` is a plain in-place ReLU on the
Linear's output (``ithp_fast.encode.linear_relu``).
One int64 seed per forward (drawn from torch's generator on the input's device) addresses
every random number; nothing is read back to the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F

from .backends import FusedOps, fused_ops, resolve_backend, validate_backend
from .checks import Noise, check_forward_inputs, check_level_inputs
from .config import ConfigLike
from .encode import linear_relu
from .kernels import compute_dtype, mean_weights
from .kernels.rng import level_streams
from .nvtx import stage
from .reference.ithp import ITHP as ReferenceITHP
from .reference.ithp import Detector, Encoder, level_rows


def _dropout_p(module: torch.nn.Module) -> float:
    """The probability a ``nn.Dropout`` applies now (0 in eval mode)."""
    return float(module.p) if module.training else 0.0


class ITHP(ReferenceITHP):
    """Drop-in for [`ithp_fast.reference.ITHP`][] (same constructor dict, same state_dict).

    Args:
        ITHP_args: the released model's argument dict or an [`ithp_fast.ITHPConfig`][].
        eval_sampling: ``"sample"`` (released behaviour) or ``"mean"`` (``b = mu`` in eval mode).
        backend: ``"triton"``, ``"torch"``, ``"reference"`` or None (per device: CUDA -> triton,
            otherwise torch; the environment variable ``ITHP_FAST_BACKEND`` overrides the default).
            A float64 model runs the ``torch`` backend's ops on any device (they compute in
            float64; the Triton kernels accumulate in float32).
    """

    def __init__(self, ITHP_args: ConfigLike, *, eval_sampling: str = "sample", backend: Optional[str] = None) -> None:
        super().__init__(ITHP_args, eval_sampling=eval_sampling)
        self.backend = validate_backend(backend)

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", backend={self.backend!r}" if self.backend else "")

    def forward(self, x: torch.Tensor, visual: torch.Tensor, acoustic: torch.Tensor, *, noise: Noise = None,
                token_mask: Optional[torch.Tensor] = None, detector_mask: Optional[torch.Tensor] = None):
        """Returns ``(b1, IB_total, kl0, mse0, kl1, mse1)`` like the reference; note the order ``x, visual, acoustic``.

        ``noise=(eps0, eps1)`` injects the Gaussian draws (shapes of ``mu0`` and ``mu1``); the
        dropout masks still come from the forward's seed. Masks as in [`forward_levels`][ithp_fast.ITHP.forward_levels].

        Under ``torch.compile`` (and ``torch.export``) on CUDA with the ``triton`` backend the fused
        kernels stay in the traced graph as registered ops (``torch.library.triton_op``); elsewhere
        the forward traces the reference formula (one graph, no breaks; the compiler fuses the
        elementwise work itself, and the noise comes from torch's generator as in the reference).
        For the fastest CUDA training step use [`ithp_fast.serving.GraphedTrainStep`][].
        """
        noise = check_forward_inputs(self.config, x, visual, acoustic, noise, self._first_param(), token_mask,
                                     detector_mask)
        b1, IB_total, (kl0, kl1), (mse0, mse1) = self._fast_levels(x, (acoustic, visual), noise, token_mask,
                                                                  detector_mask)
        return b1, IB_total, kl0, mse0, kl1, mse1

    def forward_levels(self, x: torch.Tensor, detectors: Sequence[torch.Tensor], *, noise: Noise = None,
                       token_mask: Optional[torch.Tensor] = None, detector_mask: Optional[torch.Tensor] = None):
        """Returns ``(b_last, IB_total, kl_terms, mse_terms)`` like the reference's
        [`forward_levels`][ithp_fast.reference.ITHP.forward_levels] (detectors in level order, one eps per level)."""
        detectors, noise = check_level_inputs(self.config, x, detectors, noise, token_mask, detector_mask,
                                              self._first_param())
        return self._fast_levels(x, detectors, noise, token_mask, detector_mask)

    def _fast_levels(self, x, detectors, noise, token_mask, detector_mask):
        name = resolve_backend(self.backend, x.device)
        if name == "reference" or (torch.compiler.is_compiling() and not (name == "triton" and x.is_cuda)):
            return self._levels(x, detectors, noise, token_mask, detector_mask)
        ops = fused_ops("torch" if x.dtype == torch.float64 else name)
        lead = tuple(x.shape[:-1])
        weight_dtype = compute_dtype(x.dtype)
        with stage("ithp.forward"):
            seed = ops.new_seed(x.device) if self._draws_noise(noise) else None
            kl_weight = mean_weights(token_mask, weight_dtype) if token_mask is not None else None
            b = x.reshape(-1, x.shape[-1])  # 2-D: every Linear output is a plain [N, d] buffer
            kl_parts, mse_parts = [], []
            for k, target in enumerate(detectors):
                rows = level_rows(token_mask, detector_mask, k, lead)
                mse_weight = kl_weight if rows is token_mask else mean_weights(rows, weight_dtype)
                eps = noise[k] if noise is not None else None
                b, kl, mse = self._fused_level(ops, k, b, target, eps, seed, kl_weight, mse_weight)
                kl_parts.append(kl)
                mse_parts.append(mse)
            IB_total, kl_terms, mse_terms = ops.combine(kl_parts, mse_parts, self.config, x.dtype)
        return b.reshape(*lead, b.shape[-1]), IB_total, kl_terms, mse_terms

    def _draws_noise(self, noise: Noise) -> bool:
        """Whether this forward needs a seed (a host-side fact: modes and probabilities only)."""
        if self.samples_now and noise is None:
            return True
        levels = (self.level_modules(k) for k in range(self.config.levels))
        dropouts = (m for encoder, detector in levels for m in (encoder.dropout, detector.dropout,
                                                                  detector.output_dropout))
        return any(_dropout_p(m) > 0.0 for m in dropouts)

    def _fused_mlp(self, ops: FusedOps, mlp: Encoder | Detector, inp: torch.Tensor, seed, stream: int) -> torch.Tensor:
        """``first -> ReLU -> dropout -> last`` with the middle fused; without dropout (eval mode,
        ``drop_prob`` 0) it is a plain in-place ReLU on the first Linear's output."""
        p = _dropout_p(mlp.dropout)
        if p == 0.0:
            hidden = linear_relu(mlp.first, inp)
        else:
            hidden = ops.relu_dropout(F.linear(inp, mlp.first.weight, mlp.first.bias), seed, stream, p)
        return F.linear(hidden, mlp.last.weight, mlp.last.bias)

    def _fused_level(self, ops: FusedOps, level: int, inp: torch.Tensor, target: torch.Tensor, eps, seed,
                     kl_weight: Optional[torch.Tensor], mse_weight: Optional[torch.Tensor]):
        """``(b, kl partials, mse partials)`` of level ``level`` (0-based) on 2-D ``inp``."""
        encoder, detector = self.level_modules(level)
        streams = level_streams(level)
        with stage(f"encoder{level + 1}"):
            h = self._fused_mlp(ops, encoder, inp, seed, streams.encoder_hidden)
        with stage(f"level{level}.reparam_kl"):
            width = h.shape[-1] // 2
            eps = eps.reshape(-1, width) if eps is not None else None
            b, kl = ops.reparam_kl(h, seed, streams.eps, eps, self.samples_now, kl_weight)
        with stage(f"level{level}.detector_loss"):
            z = self._fused_mlp(ops, detector, b, seed, streams.detector_hidden)
            mse = ops.detector_loss(z, target.reshape(-1, target.shape[-1]), seed, streams.detector_output,
                                    _dropout_p(detector.output_dropout), mse_weight)
        return b, kl, mse

    def encode(self, x: torch.Tensor, *, sample: bool = False, noise: Noise = None,
               precision: Optional[str] = None) -> torch.Tensor:
        """The last level's ``b`` from ``x`` alone by the fastest path for the call
        ([`ithp_fast.encode.encode`][]; ``precision`` as there)."""
        from .encode import encode

        return encode(self, x, sample=sample, noise=noise, precision=precision)
