"""Detector reconstruction loss of one IB level: sigmoid -> dropout -> mean squared error.

    s   = sigmoid(z);   out = s * keep / (1 - p),   keep = noise(seed, stream, e) >= p
    mse = sum((out - t)^2) / numel
    backward, g = d loss / d mse:
      grad_z = g * 2/numel * (out - t) * keep/(1 - p) * s * (1 - s);   grad_t = -g * 2/numel * (out - t)

The MSE comes out as float32 partials whose sum is the MSE (one per Triton program; one for the
torch backend). What each backend keeps for the backward:

* ``triton``: ``z`` and ``t``; the kernel regenerates the mask and the sigmoid.
* ``torch``: the loss is the last op of its level, so its gradient is known up to the incoming
  scalar: the forward keeps ``dMSE/dz`` (and ``dMSE/dt`` when the target needs a gradient) and the
  backward scales it -- no sigmoid, mask or target is kept.

``detector_loss_partials(z, t, seed, stream, p, *, backend) -> partials``;
``detector_loss(...) -> mse`` sums them. Kernels: ``detector_loss_triton.py``.
"""

from __future__ import annotations

import torch

from . import check_backend, float32, tracked
from .rng import dropout_scale


def detector_loss_torch(z: torch.Tensor, t: torch.Tensor, seed: int, stream: int, p: float, grad_z: bool = False,
                        grad_t: bool = False):
    """The plain-PyTorch forward: ``(mse, dmse/dz or None, dmse/dt or None)``, ``mse`` float32 0-dim."""
    s = torch.sigmoid(float32(z))
    if p > 0.0:
        keep = dropout_scale(seed, stream, z.shape, z.device, p)
        residual = torch.mul(s, keep).sub_(float32(t))
    else:
        keep = None
        residual = torch.sub(s, float32(t))
    flat = residual.view(-1)
    numel = flat.numel()
    mse = torch.dot(flat, flat) / numel
    two = 2.0 / numel
    d_t = residual * -two if grad_t else None
    d_z = None
    if grad_z:  # 2/numel * residual * keep * s * (1 - s)
        d_z = torch.addcmul(s, s, s, value=-1.0).mul_(residual).mul_(two)
        if keep is not None:
            d_z.mul_(keep)
    return mse, d_z, d_t


class DetectorLoss(torch.autograd.Function):
    """``(z, t, seed) -> partials``; see the module docstring for what each backend saves."""

    @staticmethod
    def forward(ctx, z, t, seed, stream: int, p: float, backend: str):
        ctx.backend, ctx.dtypes = backend, (z.dtype, t.dtype)
        if backend == "triton":
            from .detector_loss_triton import detector_loss_forward

            ctx.stream, ctx.p = stream, p
            ctx.save_for_backward(z, t, seed)
            return detector_loss_forward(z, t, seed, stream, p)
        mse, grad_z, grad_t = detector_loss_torch(z, t, seed, stream, p, ctx.needs_input_grad[0],
                                                  ctx.needs_input_grad[1])
        ctx.save_for_backward(grad_z, grad_t)
        return mse.reshape(1)

    @staticmethod
    def backward(ctx, grad_parts):
        if ctx.backend == "triton":
            from .detector_loss_triton import detector_loss_backward

            z, t, seed = ctx.saved_tensors
            grad_z, grad_t = detector_loss_backward(z, t, grad_parts, seed, ctx.stream, ctx.p,
                                                    need_grad_t=ctx.needs_input_grad[1])
            return grad_z.view_as(z), (grad_t.view_as(t) if grad_t is not None else None), None, None, None, None
        grad_z, grad_t = ctx.saved_tensors
        g = grad_parts.float().sum()
        return ((grad_z * g).to(ctx.dtypes[0]) if grad_z is not None else None,
                (grad_t * g).to(ctx.dtypes[1]) if grad_t is not None else None, None, None, None, None)


def detector_loss_partials(z: torch.Tensor, t: torch.Tensor, seed, stream: int, p: float, *,
                           backend: str = "torch") -> torch.Tensor:
    """Differentiable float32 partials of ``mean((dropout(sigmoid(z), p) - t)^2)``; the MSE is their sum."""
    check_backend(backend)
    z, t = z.contiguous(), t.contiguous()
    if backend == "torch" and not tracked(z, t):
        return detector_loss_torch(z, t, seed, stream, float(p))[0].reshape(1)
    return DetectorLoss.apply(z, t, seed, stream, float(p), backend)


def detector_loss(z: torch.Tensor, t: torch.Tensor, seed, stream: int, p: float, *,
                  backend: str = "torch") -> torch.Tensor:
    """Differentiable ``mean((dropout(sigmoid(z), p) - t)^2)`` as a float32 0-dim tensor."""
    return detector_loss_partials(z, t, seed, stream, p, backend=backend).sum()
