"""Triton kernels of ``relu_dropout`` (``relu_dropout.py`` holds the formula, the check of ``p`` and the
autograd Function).

Launchers (any float dtype; ``a`` is read in row-major element order), in the op's argument order:

* ``relu_dropout_forward(a, seed, stream, p, *, start=0) -> d``
* ``relu_dropout_backward(grad_d, d, p) -> grad_a``
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from .rng import GROUP, LANE
from .triton_helpers import check_seed, group_uniform_or_keep, is_negative_zero, relu_marked, rounded_to

_BWD_BLOCK = 1024


@triton.jit
def _forward_lane(a_ptr, d_ptr, offs, numel, u, p, scale, DROPOUT: tl.constexpr):
    inside = offs < numel
    a = tl.load(a_ptr + offs, mask=inside, other=0.0).to(tl.float32)
    d = relu_marked(a)
    if DROPOUT:
        d = d * tl.where(u >= p, scale, 0.0)  # a multiply, as PyTorch's dropout: a dropped NaN stays NaN
    tl.store(d_ptr + offs, rounded_to(d, d_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _relu_dropout_forward_kernel(a_ptr, d_ptr, seed_ptr, numel, start, p, scale, STREAM: tl.constexpr,
                                 DROPOUT: tl.constexpr, LANE: tl.constexpr):
    # a_ptr, d_ptr: [numel] (any float dtype);  seed_ptr: int64 [1] (read only with DROPOUT)
    # one program per aligned group of 4*LANE elements
    first = tl.program_id(0).to(tl.int64) * (4 * LANE)
    j = tl.arange(0, LANE).to(tl.int64)
    u0, u1, u2, u3 = group_uniform_or_keep(seed_ptr, STREAM, start + first, LANE, DROPOUT)
    _forward_lane(a_ptr, d_ptr, first + j, numel, u0, p, scale, DROPOUT)
    _forward_lane(a_ptr, d_ptr, first + LANE + j, numel, u1, p, scale, DROPOUT)
    _forward_lane(a_ptr, d_ptr, first + 2 * LANE + j, numel, u2, p, scale, DROPOUT)
    _forward_lane(a_ptr, d_ptr, first + 3 * LANE + j, numel, u3, p, scale, DROPOUT)


@triton.jit
def _relu_dropout_backward_kernel(gd_ptr, d_ptr, ga_ptr, numel, scale, BLOCK: tl.constexpr):
    # gd_ptr, d_ptr, ga_ptr: [numel]
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    inside = offs < numel
    gd = tl.load(gd_ptr + offs, mask=inside, other=0.0).to(tl.float32)
    d = tl.load(d_ptr + offs, mask=inside, other=0.0).to(tl.float32)
    # d is +0.0 where dropout dropped an element the ReLU passed (grad_d * 0: NaN stays NaN),
    # -0.0 where the ReLU blocked (0 whatever arrives); positive or NaN where both passed
    ga = tl.where(is_negative_zero(d), 0.0, gd * tl.where(d == 0.0, 0.0, scale))
    tl.store(ga_ptr + offs, rounded_to(ga, ga_ptr.dtype.element_ty), mask=inside)


def relu_dropout_forward(a: torch.Tensor, seed: torch.Tensor, stream: int, p: float, *, start: int = 0) -> torch.Tensor:
    """``relu(a)`` with dropout ``p`` (none when ``p == 0``); mask from ``(seed, stream, start + e)``.

    ``start`` (a multiple of ``rng.GROUP``) is the stream index of ``a``'s first element.
    """
    if start % GROUP:
        raise ValueError(f"start: must be a multiple of rng.GROUP={GROUP}, got {start}")
    a = a.contiguous()
    d = torch.empty_like(a)
    dropout = p > 0.0
    if dropout:
        check_seed(seed, a.device)
    numel = a.numel()
    if numel:
        grid = (triton.cdiv(numel, GROUP),)
        wrap_triton(_relu_dropout_forward_kernel)[grid](a, d, seed if dropout else a, numel, start, p,
                                                        1.0 / (1.0 - p), STREAM=int(stream), DROPOUT=dropout, LANE=LANE)
    return d


def relu_dropout_backward(grad_d: torch.Tensor, d: torch.Tensor, p: float) -> torch.Tensor:
    """Gradient w.r.t. ``a`` from the output ``d`` alone."""
    if grad_d.shape != d.shape:
        raise ValueError(f"grad_d: expected shape {tuple(d.shape)}, got {tuple(grad_d.shape)}")
    grad_d = grad_d.contiguous()
    d = d.contiguous()
    grad_a = torch.empty_like(d)
    numel = d.numel()
    if numel:
        grid = (triton.cdiv(numel, _BWD_BLOCK),)
        wrap_triton(_relu_dropout_backward_kernel)[grid](grad_d, d, grad_a, numel, 1.0 / (1.0 - p), BLOCK=_BWD_BLOCK)
    return grad_a


# The launchers as custom ops: while torch.compile or torch.export traces, the autograd Function calls
# these, so the Triton kernels stay in the graph as themselves (eager calls skip the dispatcher).


@triton_op("ithp_fast::relu_dropout_forward", mutates_args=())
def relu_dropout_forward_op(a: torch.Tensor, seed: Optional[torch.Tensor], stream: int, p: float) -> torch.Tensor:
    return relu_dropout_forward(a, seed, stream, p)


@triton_op("ithp_fast::relu_dropout_backward", mutates_args=())
def relu_dropout_backward_op(grad_d: torch.Tensor, d: torch.Tensor, p: float) -> torch.Tensor:
    return relu_dropout_backward(grad_d, d, p)
