"""Triton kernels of ``detector_loss`` (``detector_loss.py`` holds the formula, the operand checks and
the autograd Function; the kernels compute its lines as written there).

One pass over the detector's last pre-activation ``z`` and the target ``t`` writes one float32
partial sum per program (the MSE is the sum of the partials; with a row weight per row of ``z``,
a masked mean costs one more load per element, from a tiny vector); the dropout mask is drawn
in-kernel and regenerated in the backward, so neither the sigmoid output nor the mask is stored.

Launchers (operands checked by ``detector_loss.py``: ``z``, ``t`` contiguous ``[rows, D]``, any
float dtype), in the op's argument order:

* ``detector_loss_forward(z, t, seed, stream, p, row_weight=None) -> partials fp32 [P]``
* ``detector_loss_backward(grad_partials, z, t, seed, stream, p, row_weight=None, need_grad_t=False)
  -> (grad_z, grad_t or None)``
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from . import mean_scale
from .rng import GROUP, LANE
from .triton_helpers import check_seed, group_uniform_or_keep, rounded_to


def num_partials(numel: int) -> int:
    """Programs (= MSE partials) the kernels use for ``numel`` elements."""
    return max(1, triton.cdiv(numel, GROUP))


# The formula and the names (sig, s, w_r, c_r) are those of detector_loss.py's docstring; `scale` is 1/(1 - p).
@triton.jit
def _forward_lane(z_ptr, t_ptr, w_ptr, e, numel, width, u, p, scale, DROPOUT: tl.constexpr, HAS_WEIGHT: tl.constexpr):
    inside = e < numel
    z = tl.load(z_ptr + e, mask=inside, other=0.0).to(tl.float32)
    t = tl.load(t_ptr + e, mask=inside, other=0.0).to(tl.float32)
    out = 1.0 / (1.0 + tl.exp(-z))  # sig
    if DROPOUT:
        out = out * tl.where(u >= p, scale, 0.0)  # a multiply, as PyTorch's dropout: a dropped NaN stays NaN
    square = (out - t) * (out - t)
    if HAS_WEIGHT:
        w = tl.load(w_ptr + e // width, mask=inside, other=0.0).to(tl.float32)
        inside = inside & (w != 0.0)
        square = square * w
    return tl.where(inside, square, 0.0)


@triton.jit
def _detector_loss_forward_kernel(z_ptr, t_ptr, seed_ptr, w_ptr, part_ptr, numel, width, p, scale, s,
                                  STREAM: tl.constexpr, DROPOUT: tl.constexpr, HAS_WEIGHT: tl.constexpr,
                                  LANE: tl.constexpr):
    # z_ptr, t_ptr: [numel] (row-major, any float dtype; rows of `width` elements);  seed_ptr: int64 [1]
    # (read with DROPOUT);  w_ptr: [numel / width] row weights (read with HAS_WEIGHT);
    # part_ptr: float32 [programs].  One program per aligned group of 4*LANE elements.
    pid = tl.program_id(0)
    first = pid.to(tl.int64) * (4 * LANE)
    j = tl.arange(0, LANE).to(tl.int64)
    u0, u1, u2, u3 = group_uniform_or_keep(seed_ptr, STREAM, first, LANE, DROPOUT)
    total = _forward_lane(z_ptr, t_ptr, w_ptr, first + j, numel, width, u0, p, scale, DROPOUT, HAS_WEIGHT)
    total += _forward_lane(z_ptr, t_ptr, w_ptr, first + LANE + j, numel, width, u1, p, scale, DROPOUT, HAS_WEIGHT)
    total += _forward_lane(z_ptr, t_ptr, w_ptr, first + 2 * LANE + j, numel, width, u2, p, scale, DROPOUT,
                           HAS_WEIGHT)
    total += _forward_lane(z_ptr, t_ptr, w_ptr, first + 3 * LANE + j, numel, width, u3, p, scale, DROPOUT,
                           HAS_WEIGHT)
    tl.store(part_ptr + pid, tl.sum(total, axis=0) * s)


@triton.jit
def _backward_lane(z_ptr, t_ptr, w_ptr, gz_ptr, gt_ptr, e, numel, width, u, p, scale, g, DROPOUT: tl.constexpr,
                   NEED_GRAD_T: tl.constexpr, HAS_WEIGHT: tl.constexpr):
    inside = e < numel
    z = tl.load(z_ptr + e, mask=inside, other=0.0).to(tl.float32)
    t = tl.load(t_ptr + e, mask=inside, other=0.0).to(tl.float32)
    sig = 1.0 / (1.0 + tl.exp(-z))
    slope = sig * (1.0 - sig)
    out = sig
    if DROPOUT:
        keep_scale = tl.where(u >= p, scale, 0.0)  # multiplied in, as PyTorch's dropout and its backward
        out = sig * keep_scale
        slope = slope * keep_scale
    c = g  # c_r = 2 * g * s (* w_r)
    if HAS_WEIGHT:
        c = c * tl.load(w_ptr + e // width, mask=inside, other=0.0).to(tl.float32)
    residual = c * (out - t)
    tl.store(gz_ptr + e, rounded_to(residual * slope, gz_ptr.dtype.element_ty), mask=inside)
    if NEED_GRAD_T:
        tl.store(gt_ptr + e, rounded_to(-residual, gt_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _detector_loss_backward_kernel(z_ptr, t_ptr, seed_ptr, w_ptr, gpart_ptr, gpart_stride, gz_ptr, gt_ptr, numel,
                                   width, p, scale, s, STREAM: tl.constexpr, DROPOUT: tl.constexpr,
                                   NEED_GRAD_T: tl.constexpr, HAS_WEIGHT: tl.constexpr, LANE: tl.constexpr):
    # as the forward, plus gpart_ptr: float32 [programs] with stride gpart_stride (0 for a broadcast
    # scalar);  gz_ptr: [numel];  gt_ptr: [numel] (written with NEED_GRAD_T)
    pid = tl.program_id(0)
    first = pid.to(tl.int64) * (4 * LANE)
    j = tl.arange(0, LANE).to(tl.int64)
    g = tl.load(gpart_ptr + pid * gpart_stride).to(tl.float32) * (2.0 * s)
    u0, u1, u2, u3 = group_uniform_or_keep(seed_ptr, STREAM, first, LANE, DROPOUT)
    _backward_lane(z_ptr, t_ptr, w_ptr, gz_ptr, gt_ptr, first + j, numel, width, u0, p, scale, g, DROPOUT,
                   NEED_GRAD_T, HAS_WEIGHT)
    _backward_lane(z_ptr, t_ptr, w_ptr, gz_ptr, gt_ptr, first + LANE + j, numel, width, u1, p, scale, g, DROPOUT,
                   NEED_GRAD_T, HAS_WEIGHT)
    _backward_lane(z_ptr, t_ptr, w_ptr, gz_ptr, gt_ptr, first + 2 * LANE + j, numel, width, u2, p, scale, g,
                   DROPOUT, NEED_GRAD_T, HAS_WEIGHT)
    _backward_lane(z_ptr, t_ptr, w_ptr, gz_ptr, gt_ptr, first + 3 * LANE + j, numel, width, u3, p, scale, g,
                   DROPOUT, NEED_GRAD_T, HAS_WEIGHT)


def detector_loss_forward(z: torch.Tensor, t: torch.Tensor, seed: Optional[torch.Tensor], stream: int, p: float,
                          row_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """float32 MSE partials of ``dropout(sigmoid(z), p)`` against ``t``; mask from ``(seed, stream)``.
    ``row_weight`` (one per row of ``z``): ``sum_r w_r * mse_r`` instead of the mean."""
    dropout = p > 0.0
    if dropout:
        check_seed(seed, z.device)
    numel, width = z.numel(), z.shape[-1]
    weighted = row_weight is not None
    parts = torch.empty(num_partials(numel), dtype=torch.float32, device=z.device)
    wrap_triton(_detector_loss_forward_kernel)[(parts.numel(),)](
        z, t, seed if dropout else z, row_weight.contiguous() if weighted else z, parts, numel, width, p,
        1.0 / (1.0 - p), mean_scale(numel, width, weighted), STREAM=int(stream), DROPOUT=dropout,
        HAS_WEIGHT=weighted, LANE=LANE)
    return parts


def detector_loss_backward(grad_partials: torch.Tensor, z: torch.Tensor, t: torch.Tensor,
                           seed: Optional[torch.Tensor], stream: int, p: float,
                           row_weight: Optional[torch.Tensor] = None, need_grad_t: bool = False):
    """``(grad_z, grad_t)`` from the partials' gradient (a stride-0 expanded scalar works)."""
    numel, width = z.numel(), z.shape[-1]
    grad_partials = grad_partials.reshape(-1)
    if grad_partials.numel() != num_partials(numel):
        raise ValueError(f"grad_partials: expected {num_partials(numel)} values, got {grad_partials.numel()}")
    dropout = p > 0.0
    if dropout:
        check_seed(seed, z.device)
    weighted = row_weight is not None
    grad_z = torch.empty_like(z)
    grad_t = torch.empty_like(t) if need_grad_t else None
    wrap_triton(_detector_loss_backward_kernel)[(num_partials(numel),)](
        z, t, seed if dropout else z, row_weight.contiguous() if weighted else z, grad_partials,
        grad_partials.stride(0), grad_z, grad_t if grad_t is not None else z, numel, width, p, 1.0 / (1.0 - p),
        mean_scale(numel, width, weighted), STREAM=int(stream), DROPOUT=dropout, NEED_GRAD_T=need_grad_t,
        HAS_WEIGHT=weighted, LANE=LANE)
    return grad_z, grad_t


# The launchers as custom ops: while torch.compile or torch.export traces, the autograd Function calls
# these, so the Triton kernels stay in the graph as themselves (eager calls skip the dispatcher).


@triton_op("ithp_fast::detector_loss_forward", mutates_args=())
def detector_loss_forward_op(z: torch.Tensor, t: torch.Tensor, seed: Optional[torch.Tensor], stream: int, p: float,
                             row_weight: Optional[torch.Tensor]) -> torch.Tensor:
    return detector_loss_forward(z, t, seed, stream, p, row_weight)


@triton_op("ithp_fast::detector_loss_backward", mutates_args=())
def detector_loss_backward_op(grad_partials: torch.Tensor, z: torch.Tensor, t: torch.Tensor,
                              seed: Optional[torch.Tensor], stream: int, p: float, row_weight: Optional[torch.Tensor],
                              need_grad_t: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(grad_z, grad_t)``; ``grad_t`` is empty when not wanted (an op returns no None)."""
    grad_z, grad_t = detector_loss_backward(grad_partials, z, t, seed, stream, p, row_weight, need_grad_t)
    return grad_z, grad_t if grad_t is not None else z.new_empty(0)
