"""Detector reconstruction loss of one IB level: sigmoid -> dropout -> mean squared error.

    sig = sigmoid(z);   out = sig * keep / (1 - p),   keep = noise(seed, stream, e) >= p
    mse = s * sum_r w_r * sum_j (out - t)^2[r, j]      (z, t as [rows, D])
          s = mean_scale(numel, D, weighted): 1/numel with every w_r = 1 (no mask), 1/D with row
          weights (a masked mean: 1/count on the rows kept, 0 on the others, whose values then
          add nothing)
    backward, g = d loss / d mse,  c_r = 2 * g * s * w_r:
      grad_z = c_r * (out - t) * keep/(1 - p) * sig * (1 - sig);   grad_t = -c_r * (out - t)

Both backends compute these lines as written (the Triton kernels in ``detector_loss_triton.py``).
The MSE comes out as partials whose sum is the MSE (one per Triton program; one for the torch
backend), float32 (float64 for a float64 input on the torch backend). The mean over no element
(an empty batch without a mask) is NaN, as torch's. What each backend keeps for the backward:

* ``triton``: ``z`` and ``t`` (and the row weights); the kernel regenerates the mask and the sigmoid.
* ``torch``: the loss is the last op of its level, so its gradient is known up to the incoming
  scalar: the forward keeps ``dMSE/dz`` (and ``dMSE/dt`` when the target needs a gradient) and the
  backward scales it -- no sigmoid, mask or target is kept.

Every entry point takes the arguments in one order, ``(z, t, seed, stream, p, row_weight)``
(backward: the incoming ``grad_partials`` first, ``need_grad_t`` last):
``detector_loss_partials(...) -> partials`` and ``detector_loss(...) -> mse`` (which check the
operands, once, and dispatch), :class:`DetectorLoss`, :func:`detector_loss_torch`, and the
launchers ``detector_loss_forward`` / ``detector_loss_backward`` of ``detector_loss_triton.py``.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import check_backend, check_p, check_row_weight, mean_scale, tracked, widened
from .rng import dropout_scale


def _residual(z: torch.Tensor, t: torch.Tensor, seed: int, stream: int, p: float):
    """``(sig, keep or None, out - t)`` in the compute dtype."""
    sig = torch.sigmoid(widened(z))
    if p > 0.0:
        keep = dropout_scale(seed, stream, z.shape, z.device, p, sig.dtype)
        return sig, keep, torch.mul(sig, keep).sub_(widened(t, sig.dtype))
    return sig, None, torch.sub(sig, widened(t, sig.dtype))


def detector_loss_torch(z: torch.Tensor, t: torch.Tensor, seed: int, stream: int, p: float,
                        row_weight: Optional[torch.Tensor] = None, need_grad_z: bool = False,
                        need_grad_t: bool = False):
    """The plain-PyTorch forward on ``[rows, D]``: ``(mse, dmse/dz or None, dmse/dt or None)``,
    ``mse`` 0-dim (float32; float64 for float64 ``z``)."""
    sig, keep, residual = _residual(z, t, seed, stream, p)
    s = mean_scale(residual.numel(), residual.shape[-1], row_weight is not None)
    if row_weight is None:
        flat = residual.view(-1)
        mse = torch.dot(flat, flat) * s
        c = 2.0 * s
    else:
        weight = widened(row_weight, sig.dtype)
        per_row = torch.linalg.vecdot(residual, residual)
        mse = torch.where(weight != 0, per_row, 0.0).dot(weight) * s
        c = weight.mul(2.0 * s).unsqueeze(-1)
    d_t = residual * -c if need_grad_t else None
    d_z = None
    if need_grad_z:  # c * residual * keep * sig * (1 - sig)
        d_z = torch.addcmul(sig, sig, sig, value=-1.0).mul_(residual).mul_(c)
        if keep is not None:
            d_z.mul_(keep)
    return mse, d_z, d_t


class DetectorLoss(torch.autograd.Function):
    """``(z, t, seed, stream, p, row_weight, backend) -> partials``; see the module docstring for what
    each backend saves."""

    @staticmethod
    def forward(ctx, z, t, seed, stream: int, p: float, row_weight, backend: str):
        ctx.backend, ctx.dtypes = backend, (z.dtype, t.dtype)
        ctx.set_materialize_grads(False)  # no gradient arriving means none to hand back (not 0 * NaN)
        if backend == "triton":
            from .detector_loss_triton import detector_loss_forward

            ctx.stream, ctx.p = stream, p
            ctx.save_for_backward(z, t, seed, row_weight)
            if torch.compiler.is_compiling():  # the registered op: the kernel stays in the traced graph
                return torch.ops.ithp_fast.detector_loss_forward(z, t, seed, stream, p, row_weight)
            return detector_loss_forward(z, t, seed, stream, p, row_weight)
        mse, grad_z, grad_t = detector_loss_torch(z, t, seed, stream, p, row_weight, ctx.needs_input_grad[0],
                                                  ctx.needs_input_grad[1])
        ctx.save_for_backward(grad_z, grad_t)
        return mse.reshape(1)

    @staticmethod
    def backward(ctx, grad_partials):
        if grad_partials is None:
            return (None,) * 7
        if ctx.backend == "triton":
            from .detector_loss_triton import detector_loss_backward

            z, t, seed, row_weight = ctx.saved_tensors
            args = (grad_partials, z, t, seed, ctx.stream, ctx.p, row_weight, ctx.needs_input_grad[1])
            if torch.compiler.is_compiling():
                grad_z, grad_t = torch.ops.ithp_fast.detector_loss_backward(*args)
                grad_t = grad_t if grad_t.numel() else None
            else:
                grad_z, grad_t = detector_loss_backward(*args)
            return (grad_z.view_as(z), (grad_t.view_as(t) if grad_t is not None else None),
                    None, None, None, None, None)
        grad_z, grad_t = ctx.saved_tensors
        g = grad_partials.sum()
        return ((grad_z * g.to(grad_z.dtype)).to(ctx.dtypes[0]) if grad_z is not None else None,
                (grad_t * g.to(grad_t.dtype)).to(ctx.dtypes[1]) if grad_t is not None else None,
                None, None, None, None, None)


def _as_rows(z: torch.Tensor, t: torch.Tensor, row_weight: Optional[torch.Tensor]):
    """``z`` and ``t`` as contiguous ``[rows, D]`` after the checks every entry point shares (once, here)."""
    if tuple(z.shape) != tuple(t.shape):
        raise ValueError(f"target: expected the shape of z {tuple(z.shape)}, got {tuple(t.shape)}")
    if z.dim() == 0:
        raise ValueError("z: expected rows along the last dimension, [..., D], got a 0-dim tensor")
    if z.device != t.device:
        raise ValueError(f"target: is on {t.device} but z is on {z.device}")
    width = z.shape[-1]
    rows = z.numel() // width if width else 0
    check_row_weight(row_weight, rows, z.device, "z")
    z, t = z.contiguous(), t.contiguous()
    return (z, t) if z.dim() == 2 else (z.view(rows, width), t.view(rows, width))


def detector_loss_partials(z: torch.Tensor, t: torch.Tensor, seed, stream: int, p: float, *,
                           row_weight: Optional[torch.Tensor] = None, backend: str = "torch") -> torch.Tensor:
    """Differentiable partials of ``mean((dropout(sigmoid(z), p) - t)^2)``; the MSE is their sum.

    ``z``, ``t``: one shape, rows along the last dimension. ``row_weight`` (one per row, e.g.
    :func:`ithp_fast.kernels.mean_weights` of a row mask): the mean over rows becomes
    ``sum_r w_r * mse_r`` (rows of weight 0 left out).
    """
    check_backend(backend)
    p = check_p(p)
    z, t = _as_rows(z, t, row_weight)
    if backend == "torch" and not tracked(z, t):
        return detector_loss_torch(z, t, seed, stream, p, row_weight)[0].reshape(1)
    return DetectorLoss.apply(z, t, seed, stream, p, row_weight, backend)


def detector_loss(z: torch.Tensor, t: torch.Tensor, seed, stream: int, p: float, *,
                  row_weight: Optional[torch.Tensor] = None, backend: str = "torch") -> torch.Tensor:
    """Differentiable ``mean((dropout(sigmoid(z), p) - t)^2)`` as a 0-dim tensor; as :func:`detector_loss_partials`."""
    return detector_loss_partials(z, t, seed, stream, p, row_weight=row_weight, backend=backend).sum()
