"""The drop-in fast ITHP: the reference's modules and state_dict, a faster forward / encode.

``forward`` keeps the GEMMs in torch (``F.linear``: cuBLAS / MKL) and hands every elementwise
tail to the fused ops of the chosen backend (:mod:`ithp_fast.backends`):

    x --linear--> relu_dropout --linear--> h0 --reparam_kl--> b0, kl0
    b0 --linear--> relu_dropout --linear--> z1 --detector_loss(acoustic)--> mse0
    (level 1 the same from b0, with visual)      combine -> IB_total, kl0, mse0, kl1, mse1

Without dropout (eval mode, or ``drop_prob`` 0) ``relu_dropout`` is a plain ReLU and joins the
Linear before it instead (``ithp_fast.encode.linear_relu``: cuBLAS's ReLU epilogue on CUDA).
One int64 seed per forward (drawn from torch's generator on the input's device) addresses
every random number; nothing is read back to the host.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .backends import FusedOps, fused_ops, resolve_backend, validate_backend
from .checks import Noise, check_forward_inputs
from .config import ConfigLike
from .encode import linear_relu
from .kernels.rng import Stream
from .nvtx import stage
from .reference.ithp import ITHP as ReferenceITHP

# (hidden dropout of the encoder, eps, hidden dropout of the detector, detector output dropout)
_LEVEL_STREAMS = (
    (Stream.ENCODER1_HIDDEN, Stream.EPS0, Stream.MLP1_HIDDEN, Stream.MLP1_OUTPUT),
    (Stream.ENCODER2_HIDDEN, Stream.EPS1, Stream.MLP2_HIDDEN, Stream.MLP2_OUTPUT),
)
_STAGES = (
    ("encoder1", "level0.reparam_kl", "level0.detector_loss"),
    ("encoder2", "level1.reparam_kl", "level1.detector_loss"),
)


def _dropout_p(module: torch.nn.Module) -> float:
    """The probability a ``nn.Dropout`` applies now (0 in eval mode)."""
    return float(module.p) if module.training else 0.0


class ITHP(ReferenceITHP):
    """Drop-in for :class:`ithp_fast.reference.ITHP` (same constructor dict, same state_dict).

    Args:
        ITHP_args: the released model's argument dict or an :class:`ithp_fast.ITHPConfig`.
        eval_sampling: ``"sample"`` (released behaviour) or ``"mean"`` (``b = mu`` in eval mode).
        backend: ``"triton"``, ``"torch"``, ``"reference"`` or None (per device: CUDA -> triton,
            otherwise torch; the environment variable ``ITHP_FAST_BACKEND`` overrides the default).
    """

    def __init__(self, ITHP_args: ConfigLike, *, eval_sampling: str = "sample", backend: Optional[str] = None) -> None:
        super().__init__(ITHP_args, eval_sampling=eval_sampling)
        self.backend = validate_backend(backend)

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", backend={self.backend!r}" if self.backend else "")

    def forward(self, x: torch.Tensor, visual: torch.Tensor, acoustic: torch.Tensor, *, noise: Noise = None):
        """Returns ``(b1, IB_total, kl0, mse0, kl1, mse1)`` like the reference; note the order ``x, visual, acoustic``.

        ``noise=(eps0, eps1)`` injects the Gaussian draws (shapes of ``mu0`` and ``mu1``); the
        dropout masks still come from the forward's seed.

        Under ``torch.compile`` the forward traces the reference formula instead of the fused
        ops (one graph, no breaks; the compiler fuses the elementwise work itself, and the noise
        comes from torch's generator as in the reference). For the fastest CUDA training step
        use :class:`ithp_fast.serving.GraphedTrainStep` rather than compiling.
        """
        noise = check_forward_inputs(self.config, x, visual, acoustic, noise, self._first_param())
        name = resolve_backend(self.backend, x.device)
        if name == "reference" or torch.compiler.is_compiling():
            return ReferenceITHP.forward(self, x, visual, acoustic, noise=noise)
        ops = fused_ops(name)
        eps0, eps1 = noise or (None, None)
        with stage("ithp.forward"):
            seed = ops.new_seed(x.device) if self._draws_noise(noise) else None
            rows = x.reshape(-1, x.shape[-1])  # 2-D: every Linear output is a plain [N, d] buffer
            b0, kl0, mse0 = self._fused_level(ops, 0, rows, acoustic, eps0, seed)
            b1, kl1, mse1 = self._fused_level(ops, 1, b0, visual, eps1, seed)
            losses = ops.combine(kl0, mse0, kl1, mse1, self.config, x.dtype)
        return (b1.reshape(*x.shape[:-1], b1.shape[-1]),) + tuple(losses)

    def _draws_noise(self, noise: Noise) -> bool:
        """Whether this forward needs a seed (a host-side fact: modes and probabilities only)."""
        if self.samples and noise is None:
            return True
        dropouts = (self.encoder1[2], self.MLP1[2], self.MLP1[5], self.encoder2[2], self.MLP2[2], self.MLP2[5])
        return any(_dropout_p(m) > 0.0 for m in dropouts)

    def _fused_mlp(self, ops: FusedOps, mlp: torch.nn.Sequential, inp: torch.Tensor, seed, stream: int) -> torch.Tensor:
        """``Linear -> ReLU -> Dropout -> Linear`` with the middle fused; without dropout (eval
        mode, ``drop_prob`` 0) the ReLU joins the first Linear (cuBLAS's epilogue where it can)."""
        p = _dropout_p(mlp[2])
        if p == 0.0:
            hidden = linear_relu(mlp[0], inp)
        else:
            hidden = ops.relu_dropout(F.linear(inp, mlp[0].weight, mlp[0].bias), seed, stream, p)
        return F.linear(hidden, mlp[3].weight, mlp[3].bias)

    def _fused_level(self, ops: FusedOps, level: int, inp: torch.Tensor, target: torch.Tensor, eps, seed):
        encoder, detector = (self.encoder1, self.MLP1) if level == 0 else (self.encoder2, self.MLP2)
        hidden_stream, eps_stream, detector_stream, output_stream = _LEVEL_STREAMS[level]
        encoder_stage, reparam_stage, detector_stage = _STAGES[level]
        with stage(encoder_stage):
            h = self._fused_mlp(ops, encoder, inp, seed, hidden_stream)
        with stage(reparam_stage):
            width = h.shape[-1] // 2
            eps = eps.reshape(-1, width) if eps is not None else None
            b, kl = ops.reparam_kl(h, eps, seed, eps_stream, self.samples)
        with stage(detector_stage):
            z = self._fused_mlp(ops, detector, b, seed, detector_stream)
            mse = ops.detector_loss(z, target.reshape(-1, target.shape[-1]), seed, output_stream,
                                    _dropout_p(detector[5]))
        return b, kl, mse

    def encode(self, x, *, sample: bool = False, noise=None):
        from .encode import encode

        return encode(self, x, sample=sample, noise=noise)
