"""ReLU + dropout between the two Linear layers of an MLP, the mask drawn from (seed, stream).

    d      = relu(a) * keep / (1 - p),   keep = noise(seed, stream, e) >= p   (e the element index)
    grad_a = grad_d / (1 - p)  where d > 0,  else 0

The backward needs no mask: ``d`` is non-zero exactly where the ReLU passed and the mask kept,
so it reads the output ``d`` (which the next Linear saves anyway) and nothing else.

``relu_dropout(a, seed, stream, p, *, backend, inplace=False)``: ``backend="torch"`` (seed a
Python int, :func:`rng.new_seed`) or ``"triton"`` (seed an int64 device tensor,
:func:`rng.draw_seed`; kernels in ``relu_dropout_triton.py``).
"""

from __future__ import annotations

import torch

from . import check_backend, tracked
from .rng import dropout_scale


def relu_dropout_torch(a: torch.Tensor, seed: int, stream: int, p: float, inplace: bool = False) -> torch.Tensor:
    """The plain-PyTorch forward (``inplace`` overwrites ``a``)."""
    d = a.clamp_min_(0.0) if inplace else torch.relu(a)
    if p > 0.0:
        d.mul_(dropout_scale(seed, stream, a.shape, a.device, p))
    return d


class ReluDropout(torch.autograd.Function):
    """``(a, seed) -> d``; saves only ``d``."""

    @staticmethod
    def forward(ctx, a, seed, stream: int, p: float, backend: str, inplace: bool):
        if backend == "triton":
            from .relu_dropout_triton import relu_dropout_forward

            d = relu_dropout_forward(a, seed, stream, p)
        else:
            if inplace:
                ctx.mark_dirty(a)
            d = relu_dropout_torch(a, seed, stream, p, inplace)
        ctx.p, ctx.backend = p, backend
        ctx.save_for_backward(d)
        return d

    @staticmethod
    def backward(ctx, grad_d):
        (d,) = ctx.saved_tensors
        if ctx.backend == "triton":
            from .relu_dropout_triton import relu_dropout_backward

            grad_a = relu_dropout_backward(grad_d, d, ctx.p)
        else:
            grad_a = torch.ops.aten.threshold_backward(grad_d, d, 0).mul_(1.0 / (1.0 - ctx.p))
        return grad_a, None, None, None, None, None


def relu_dropout(a: torch.Tensor, seed, stream: int, p: float, *, backend: str = "torch",
                 inplace: bool = False) -> torch.Tensor:
    """``dropout(relu(a), p)``, mask from ``(seed, stream)``; differentiable.

    ``inplace=True`` lets the torch backend overwrite ``a`` (the model passes its own Linear
    output, which nothing else keeps: no new buffer); the Triton kernel writes a new buffer.
    """
    check_backend(backend)
    p = float(p)
    if backend == "torch" and (p == 0.0 or not tracked(a)):
        if p == 0.0:  # a plain ReLU: autograd's own (it saves only the output too)
            return torch.relu_(a) if inplace else torch.relu(a)
        return relu_dropout_torch(a, seed, stream, p, inplace)
    return ReluDropout.apply(a, seed, stream, p, backend, bool(inplace))
