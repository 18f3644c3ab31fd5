"""ReLU + dropout between the two Linear layers of an MLP, the mask drawn from (seed, stream).

    d      = relu(a) * keep / (1 - p),   keep = noise(seed, stream, e) >= p   (e the element index)
    grad_a = grad_d * keep / (1 - p)  where the ReLU passed (a > 0, or a NaN),  else 0

as PyTorch's ReLU and dropout compute them: NaN passes the ReLU, dropout multiplies by the mask
(a dropped NaN or +Inf stays non-finite: NaN * 0, Inf * 0), and the dropout backward multiplies
the incoming gradient by the mask too (a non-finite gradient at a dropped element whose ReLU
passed stays non-finite; where the ReLU blocked, the gradient is 0 whatever arrives).

The backward needs no mask: it reads the output ``d`` (which the next Linear saves anyway) and
nothing else. ``d`` carries one extra bit in the sign of its zeros: ``-0.0`` where the ReLU
blocked, ``+0.0`` where it passed and dropout dropped (``-0.0 == 0.0``, so no later computation
sees a difference). So, from ``d`` alone::

    grad_a = grad_d / (1 - p)  where d > 0 or d is NaN;   grad_d * 0  where d is +0.0;   0  where d is -0.0

Same non-finite pattern as PyTorch everywhere; the finite value differs only at a dropped NaN /
+Inf input (``grad_d / (1 - p)`` instead of 0: ``d`` is NaN either way). The torch backend marks
the ReLU with ``clamp_min(a, -0.0)``, which leaves an input of exactly ``+0.0`` unmarked: there a
non-finite incoming gradient gives NaN where PyTorch gives 0 (the Triton kernels mark it).

Every entry point takes the arguments in one order, ``(a, seed, stream, p)`` (backward:
``(grad_d, d, p)``): ``relu_dropout(a, seed, stream, p, *, backend, inplace=False)`` (which checks
``p``, once, and dispatches; ``backend="torch"``: seed a Python int, :func:`rng.new_seed`;
``"triton"``: seed an int64 device tensor, :func:`rng.draw_seed`), :class:`ReluDropout`,
:func:`relu_dropout_torch` / :func:`relu_dropout_backward_torch`, and the launchers
``relu_dropout_forward`` / ``relu_dropout_backward`` of ``relu_dropout_triton.py``.
"""

from __future__ import annotations

import math

import torch

from . import check_backend, check_p, compute_dtype, tracked
from .rng import dropout_scale


def relu_dropout_torch(a: torch.Tensor, seed: int, stream: int, p: float, inplace: bool = False) -> torch.Tensor:
    """The plain-PyTorch forward (``inplace`` overwrites ``a``)."""
    d = a.clamp_min_(-0.0) if inplace else torch.clamp_min(a, -0.0)  # NaN passes; -0.0 marks a blocked ReLU
    if p > 0.0:
        d.mul_(dropout_scale(seed, stream, a.shape, a.device, p, compute_dtype(a.dtype)))
    return d


def relu_dropout_backward_torch(grad_d: torch.Tensor, d: torch.Tensor, p: float) -> torch.Tensor:
    """``grad_a`` from ``d`` alone (see the module docstring)."""
    # float ops only (bool masks are many times slower on the CPU); threshold_backward(x, s, t)
    # is "0 where s <= t, else x"
    one = torch.ones((), dtype=d.dtype, device=d.device).expand_as(d)
    kept = torch.ops.aten.threshold_backward(one, d.abs(), 0)  # 0 where d is +-0.0, else 1 (NaN too: kept)
    grad_a = kept.mul_(grad_d)  # grad_d * 0 where dropout dropped: a NaN gradient stays NaN
    # 1 / d is -inf exactly where d is -0.0 (d is never negative): the ReLU blocked, so 0
    grad_a = torch.ops.aten.threshold_backward(grad_a, torch.reciprocal(d), -math.inf)
    return grad_a.mul_(1.0 / (1.0 - p))  # a Python float: 16-bit gradients are rounded once


class ReluDropout(torch.autograd.Function):
    """``(a, seed, stream, p, backend, inplace) -> d``; saves only ``d``."""

    @staticmethod
    def forward(ctx, a, seed, stream: int, p: float, backend: str, inplace: bool):
        if backend == "triton":
            from .relu_dropout_triton import relu_dropout_forward

            if torch.compiler.is_compiling():  # the registered op: the kernel stays in the traced graph
                d = torch.ops.ithp_fast.relu_dropout_forward(a, seed, stream, p)
            else:
                d = relu_dropout_forward(a, seed, stream, p)
        else:
            if inplace:
                ctx.mark_dirty(a)
            d = relu_dropout_torch(a, seed, stream, p, inplace)
        ctx.p, ctx.backend = p, backend
        ctx.save_for_backward(d)
        ctx.set_materialize_grads(False)
        return d

    @staticmethod
    def backward(ctx, grad_d):
        if grad_d is None:
            return None, None, None, None, None, None
        (d,) = ctx.saved_tensors
        if ctx.backend == "triton":
            from .relu_dropout_triton import relu_dropout_backward

            if torch.compiler.is_compiling():
                grad_a = torch.ops.ithp_fast.relu_dropout_backward(grad_d, d, ctx.p)
            else:
                grad_a = relu_dropout_backward(grad_d, d, ctx.p)
        else:
            grad_a = relu_dropout_backward_torch(grad_d, d, ctx.p)
        return grad_a, None, None, None, None, None


def relu_dropout(a: torch.Tensor, seed, stream: int, p: float, *, backend: str = "torch",
                 inplace: bool = False) -> torch.Tensor:
    """``dropout(relu(a), p)``, mask from ``(seed, stream)``; differentiable.

    ``inplace=True`` lets the torch backend overwrite ``a`` (the model passes its own Linear
    output, which nothing else keeps: no new buffer); the Triton kernel writes a new buffer.
    """
    check_backend(backend)
    p = check_p(p)
    if backend == "torch" and (p == 0.0 or not tracked(a)):
        if p == 0.0:  # a plain ReLU: autograd's own (it saves only the output too)
            return torch.relu_(a) if inplace else torch.relu(a)
        return relu_dropout_torch(a, seed, stream, p, inplace)
    return ReluDropout.apply(a, seed, stream, p, backend, bool(inplace))
