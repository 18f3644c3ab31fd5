"""ReLU + dropout between the two Linear layers of an MLP, mask drawn in-kernel.

The backward needs no mask: ``d`` is non-zero exactly where the ReLU passed and the mask kept,
so it reads the output ``d`` (which the next Linear saves anyway) and nothing else.

Standalone launchers (any float dtype; ``a`` is read in row-major element order):

* ``relu_dropout_forward(a, seed, stream, p, *, start=0) -> d``
* ``relu_dropout_backward(grad_d, d, p) -> grad_a``
* ``relu_dropout(a, seed, stream, p) -> d`` (autograd)
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .rounding import rounded_to
from .rng import GROUP, QUARTER, group_uniform_or_keep

_BWD_BLOCK = 1024


def _check_p(p: float) -> float:
    p = float(p)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p: dropout probability must lie in [0, 1), got {p}")
    return p


def _check_seed(seed: torch.Tensor, device: torch.device) -> None:
    if not isinstance(seed, torch.Tensor) or seed.dtype != torch.int64 or seed.numel() != 1:
        raise TypeError(f"seed: expected a one-element int64 tensor (rng.draw_seed), got {seed!r}")
    if seed.device != device:
        raise ValueError(f"seed: is on {seed.device} but the data is on {device}")


# d = relu(a) * keep / (1 - p),  keep = uniform(seed, stream, e) >= p   (e the element index)
# grad_a = grad_d / (1 - p)  where d > 0,  else 0
@triton.jit
def _forward_quarter(a_ptr, d_ptr, offs, numel, u, p, scale, DROPOUT: tl.constexpr):
    inside = offs < numel
    a = tl.load(a_ptr + offs, mask=inside, other=0.0).to(tl.float32)
    d = tl.maximum(a, 0.0)
    if DROPOUT:
        d = tl.where(u >= p, d * scale, 0.0)
    tl.store(d_ptr + offs, rounded_to(d, d_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _relu_dropout_forward_kernel(a_ptr, d_ptr, seed_ptr, numel, start, p, scale, STREAM: tl.constexpr,
                                 DROPOUT: tl.constexpr, QUARTER: tl.constexpr):
    first = tl.program_id(0).to(tl.int64) * (4 * QUARTER)
    j = tl.arange(0, QUARTER).to(tl.int64)
    u0, u1, u2, u3 = group_uniform_or_keep(seed_ptr, STREAM, start + first, QUARTER, DROPOUT)
    _forward_quarter(a_ptr, d_ptr, first + j, numel, u0, p, scale, DROPOUT)
    _forward_quarter(a_ptr, d_ptr, first + QUARTER + j, numel, u1, p, scale, DROPOUT)
    _forward_quarter(a_ptr, d_ptr, first + 2 * QUARTER + j, numel, u2, p, scale, DROPOUT)
    _forward_quarter(a_ptr, d_ptr, first + 3 * QUARTER + j, numel, u3, p, scale, DROPOUT)


@triton.jit
def _relu_dropout_backward_kernel(gd_ptr, d_ptr, ga_ptr, numel, scale, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    inside = offs < numel
    gd = tl.load(gd_ptr + offs, mask=inside, other=0.0).to(tl.float32)
    d = tl.load(d_ptr + offs, mask=inside, other=0.0).to(tl.float32)
    ga = tl.where(d > 0.0, gd * scale, 0.0)
    tl.store(ga_ptr + offs, rounded_to(ga, ga_ptr.dtype.element_ty), mask=inside)


def relu_dropout_forward(a: torch.Tensor, seed: torch.Tensor, stream: int, p: float, *, start: int = 0) -> torch.Tensor:
    """``relu(a)`` with dropout ``p`` (none when ``p == 0``); mask from ``(seed, stream, start + e)``.

    ``start`` (a multiple of ``rng.GROUP``) is the stream index of ``a``'s first element.
    """
    p = _check_p(p)
    if start % GROUP:
        raise ValueError(f"start: must be a multiple of rng.GROUP={GROUP}, got {start}")
    a = a.contiguous()
    d = torch.empty_like(a)
    dropout = p > 0.0
    if dropout:
        _check_seed(seed, a.device)
    numel = a.numel()
    if numel:
        grid = (triton.cdiv(numel, GROUP),)
        _relu_dropout_forward_kernel[grid](a, d, seed if dropout else a, numel, start, p, 1.0 / (1.0 - p),
                                           STREAM=int(stream), DROPOUT=dropout, QUARTER=QUARTER)
    return d


def relu_dropout_backward(grad_d: torch.Tensor, d: torch.Tensor, p: float) -> torch.Tensor:
    """Gradient w.r.t. ``a`` from the output ``d`` alone."""
    p = _check_p(p)
    if grad_d.shape != d.shape:
        raise ValueError(f"grad_d: expected shape {tuple(d.shape)}, got {tuple(grad_d.shape)}")
    grad_d = grad_d.contiguous()
    d = d.contiguous()
    grad_a = torch.empty_like(d)
    numel = d.numel()
    if numel:
        _relu_dropout_backward_kernel[(triton.cdiv(numel, _BWD_BLOCK),)](grad_d, d, grad_a, numel, 1.0 / (1.0 - p),
                                                                         BLOCK=_BWD_BLOCK)
    return grad_a


class ReluDropout(torch.autograd.Function):
    """Autograd wrapper of :func:`relu_dropout_forward` / :func:`relu_dropout_backward`."""

    @staticmethod
    def forward(ctx, a, seed, stream: int, p: float):
        d = relu_dropout_forward(a, seed, stream, p)
        ctx.p = p
        ctx.save_for_backward(d)
        return d

    @staticmethod
    def backward(ctx, grad_d):
        (d,) = ctx.saved_tensors
        return relu_dropout_backward(grad_d, d, ctx.p), None, None, None


def relu_dropout(a: torch.Tensor, seed: torch.Tensor, stream: int, p: float) -> torch.Tensor:
    """``dropout(relu(a), p)`` with the mask drawn in-kernel from ``(seed, stream)``; differentiable."""
    return ReluDropout.apply(a, seed, stream, p)
