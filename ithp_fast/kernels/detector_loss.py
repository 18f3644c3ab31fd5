"""Detector reconstruction loss of one IB level: sigmoid -> dropout -> mean squared error.

    s   = sigmoid(z);   out = s * keep / (1 - p),   keep = noise(seed, stream, e) >= p
    mse = sum((out - t)^2) / numel
          with row weights w (``z``, ``t`` as [rows, D]; a masked mean: 1/count on the rows kept,
          0 on the others, whose values then add nothing):  mse = sum_r w_r * sum_j (out - t)^2[r, j] / D
    backward, g = d loss / d mse, c_r = 2/numel (or 2 * w_r / D):
      grad_z = g * c_r * (out - t) * keep/(1 - p) * s * (1 - s);   grad_t = -g * c_r * (out - t)

The MSE comes out as partials whose sum is the MSE (one per Triton program; one for the torch
backend), float32 (float64 for a float64 input on the torch backend). The mean over no element
(an empty batch without a mask) is NaN, as torch's. What each backend keeps for the backward:

* ``triton``: ``z`` and ``t`` (and the row weights); the kernel regenerates the mask and the sigmoid.
* ``torch``: the loss is the last op of its level, so its gradient is known up to the incoming
  scalar: the forward keeps ``dMSE/dz`` (and ``dMSE/dt`` when the target needs a gradient) and the
  backward scales it -- no sigmoid, mask or target is kept.

``detector_loss_partials(z, t, seed, stream, p, *, row_weight=None, backend) -> partials``;
``detector_loss(...) -> mse`` sums them. Kernels: ``detector_loss_triton.py``.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import check_backend, inverse, tracked, widened
from .rng import dropout_scale


def _residual(z: torch.Tensor, t: torch.Tensor, seed: int, stream: int, p: float):
    """``(s, keep or None, out - t)`` in the compute dtype."""
    s = torch.sigmoid(widened(z))
    if p > 0.0:
        keep = dropout_scale(seed, stream, z.shape, z.device, p, s.dtype)
        return s, keep, torch.mul(s, keep).sub_(widened(t, s.dtype))
    return s, None, torch.sub(s, widened(t, s.dtype))


def detector_loss_torch(z: torch.Tensor, t: torch.Tensor, seed: int, stream: int, p: float, grad_z: bool = False,
                        grad_t: bool = False, row_weight: Optional[torch.Tensor] = None):
    """The plain-PyTorch forward: ``(mse, dmse/dz or None, dmse/dt or None)``, ``mse`` 0-dim
    (float32; float64 for float64 ``z``). With ``row_weight``, ``z`` and ``t`` are ``[rows, D]``."""
    s, keep, residual = _residual(z, t, seed, stream, p)
    if row_weight is None:
        flat = residual.view(-1)
        mse = torch.dot(flat, flat) * inverse(flat.numel())
        two = 2.0 * inverse(flat.numel())
    else:
        width = residual.shape[-1]
        weight = widened(row_weight, s.dtype)
        per_row = torch.linalg.vecdot(residual, residual)
        mse = torch.where(weight != 0, per_row, 0.0).dot(weight) * (1.0 / width)
        two = weight.mul(2.0 / width).unsqueeze(-1)
    d_t = residual * -two if grad_t else None
    d_z = None
    if grad_z:  # 2/numel * residual * keep * s * (1 - s)
        d_z = torch.addcmul(s, s, s, value=-1.0).mul_(residual).mul_(two)
        if keep is not None:
            d_z.mul_(keep)
    return mse, d_z, d_t


class DetectorLoss(torch.autograd.Function):
    """``(z, t, seed, row_weight) -> partials``; see the module docstring for what each backend saves."""

    @staticmethod
    def forward(ctx, z, t, seed, row_weight, stream: int, p: float, backend: str):
        ctx.backend, ctx.dtypes = backend, (z.dtype, t.dtype)
        ctx.set_materialize_grads(False)  # no gradient arriving means none to hand back (not 0 * NaN)
        if backend == "triton":
            from .detector_loss_triton import detector_loss_forward

            ctx.stream, ctx.p = stream, p
            ctx.save_for_backward(z, t, seed, row_weight)
            if torch.compiler.is_compiling():  # the registered op: the kernel stays in the traced graph
                return torch.ops.ithp_fast.detector_loss_forward(z, t, seed, row_weight, stream, p)
            return detector_loss_forward(z, t, seed, stream, p, row_weight=row_weight)
        mse, grad_z, grad_t = detector_loss_torch(z, t, seed, stream, p, ctx.needs_input_grad[0],
                                                  ctx.needs_input_grad[1], row_weight)
        ctx.save_for_backward(grad_z, grad_t)
        return mse.reshape(1)

    @staticmethod
    def backward(ctx, grad_parts):
        if grad_parts is None:
            return (None,) * 7
        if ctx.backend == "triton":
            from .detector_loss_triton import detector_loss_backward

            z, t, seed, row_weight = ctx.saved_tensors
            if torch.compiler.is_compiling():
                grad_z, grad_t = torch.ops.ithp_fast.detector_loss_backward(
                    z, t, grad_parts, seed, row_weight, ctx.stream, ctx.p, ctx.needs_input_grad[1])
                grad_t = grad_t if grad_t.numel() else None
            else:
                grad_z, grad_t = detector_loss_backward(z, t, grad_parts, seed, ctx.stream, ctx.p,
                                                        need_grad_t=ctx.needs_input_grad[1], row_weight=row_weight)
            return (grad_z.view_as(z), (grad_t.view_as(t) if grad_t is not None else None),
                    None, None, None, None, None)
        grad_z, grad_t = ctx.saved_tensors
        g = grad_parts.sum()
        return ((grad_z * g.to(grad_z.dtype)).to(ctx.dtypes[0]) if grad_z is not None else None,
                (grad_t * g.to(grad_t.dtype)).to(ctx.dtypes[1]) if grad_t is not None else None,
                None, None, None, None, None)


def _rows_and_weight(z: torch.Tensor, t: torch.Tensor, row_weight: Optional[torch.Tensor]):
    z, t = z.contiguous(), t.contiguous()
    if row_weight is None:
        return z, t, None
    if z.dim() < 1 or tuple(z.shape) != tuple(t.shape):
        raise ValueError(f"target: expected the shape of z {tuple(z.shape)}, got {tuple(t.shape)}")
    rows = z.numel() // max(z.shape[-1], 1) if z.dim() > 1 else 1
    if tuple(row_weight.shape) != (rows,):
        raise ValueError(f"row_weight: expected shape {(rows,)} (one weight per row of z), got "
                         f"{tuple(row_weight.shape)}")
    width = z.shape[-1]
    return z.view(rows, width), t.view(rows, width), row_weight


def detector_loss_partials(z: torch.Tensor, t: torch.Tensor, seed, stream: int, p: float, *,
                           row_weight: Optional[torch.Tensor] = None, backend: str = "torch") -> torch.Tensor:
    """Differentiable partials of ``mean((dropout(sigmoid(z), p) - t)^2)``; the MSE is their sum.

    ``row_weight`` (one per row of ``z``'s last dimension, e.g. :func:`ithp_fast.kernels.mean_weights`
    of a row mask): the mean over rows becomes ``sum_r w_r * mse_r`` (rows of weight 0 left out).
    """
    check_backend(backend)
    z, t, row_weight = _rows_and_weight(z, t, row_weight)
    if backend == "torch" and not tracked(z, t):
        return detector_loss_torch(z, t, seed, stream, float(p), row_weight=row_weight)[0].reshape(1)
    return DetectorLoss.apply(z, t, seed, row_weight, stream, float(p), backend)


def detector_loss(z: torch.Tensor, t: torch.Tensor, seed, stream: int, p: float, *,
                  row_weight: Optional[torch.Tensor] = None, backend: str = "torch") -> torch.Tensor:
    """Differentiable ``mean((dropout(sigmoid(z), p) - t)^2)`` as a 0-dim tensor."""
    return detector_loss_partials(z, t, seed, stream, p, row_weight=row_weight, backend=backend).sum()
