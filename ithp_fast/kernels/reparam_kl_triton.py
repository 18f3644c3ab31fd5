"""Triton kernels of ``reparam_kl`` (``reparam_kl.py`` holds the formula, the operand checks and the
autograd Function; the kernels compute its lines as written there).

One pass reads ``h`` (and ``eps`` only when injected, and one weight per row when masked), writes
``b`` and one float32 partial KL sum per program; the KL is the sum of the partials. The backward
regenerates ``eps`` from the seed (never stored) and gets each partial's gradient from a pointer (a
stride-0 view of a scalar works), so nothing waits on the host.

Launchers (operands checked by ``reparam_kl.py``; ``h``: ``[N, 2B]``, any float dtype), in the
op's argument order:

* ``reparam_kl_forward(h, seed, stream, eps=None, sample=True, row_weight=None)
  -> (b [N, B], partials fp32 [P])``
* ``reparam_kl_backward(grad_b, grad_partials, h, seed, stream, eps=None, sample=True, row_weight=None,
  need_grad_eps=False) -> (grad_h [N, 2B], grad_eps or None)``
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from . import mean_scale
from .rng import GROUP, LANE
from .triton_helpers import check_seed, group_normal_or_zero, rounded_to


def num_partials(n_rows: int, width: int) -> int:
    """Programs (= KL partials) the kernels use for ``n_rows`` rows of ``width`` latent features."""
    return max(1, triton.cdiv(n_rows * width, GROUP))


# The formula and the names (s, w_r, c_r) are those of reparam_kl.py's docstring.
@triton.jit
def _forward_lane(h_ptr, eps_ptr, w_ptr, b_ptr, e, n_elem, row_stride, noise, B: tl.constexpr, SAMPLE: tl.constexpr,
                  HAS_EPS: tl.constexpr, HAS_WEIGHT: tl.constexpr):
    inside = e < n_elem
    row = e // B
    at = h_ptr + row * row_stride + e % B
    mu = tl.load(at, mask=inside, other=0.0).to(tl.float32)
    logvar = tl.load(at + B, mask=inside, other=0.0).to(tl.float32)
    std = tl.exp(0.5 * logvar)
    if SAMPLE:
        if HAS_EPS:
            noise = tl.load(eps_ptr + e, mask=inside, other=0.0).to(tl.float32)
        b = mu + noise * std
    else:
        b = mu
    tl.store(b_ptr + e, rounded_to(b, b_ptr.dtype.element_ty), mask=inside)
    term = 1.0 + logvar - mu * mu - std * std  # summed, then times -0.5 * s per program
    if HAS_WEIGHT:
        w = tl.load(w_ptr + row, mask=inside, other=0.0).to(tl.float32)
        inside = inside & (w != 0.0)
        term = term * w
    return tl.where(inside, term, 0.0)


@triton.jit
def _reparam_kl_forward_kernel(h_ptr, eps_ptr, seed_ptr, w_ptr, b_ptr, part_ptr, n_elem, row_stride, s,
                               STREAM: tl.constexpr, B: tl.constexpr, SAMPLE: tl.constexpr, HAS_EPS: tl.constexpr,
                               GENERATE: tl.constexpr, HAS_WEIGHT: tl.constexpr, LANE: tl.constexpr):
    # h_ptr: [N, 2B] (row stride row_stride);  eps_ptr: [N, B] (read with HAS_EPS);  seed_ptr: int64 [1]
    # (read with GENERATE);  w_ptr: [N] row weights (read with HAS_WEIGHT);  b_ptr: [N, B];
    # part_ptr: float32 [programs].  n_elem = N*B; one program per aligned group of 4*LANE elements of mu.
    pid = tl.program_id(0)
    first = pid.to(tl.int64) * (4 * LANE)
    j = tl.arange(0, LANE).to(tl.int64)
    n0, n1, n2, n3 = group_normal_or_zero(seed_ptr, STREAM, first, LANE, GENERATE)
    total = _forward_lane(h_ptr, eps_ptr, w_ptr, b_ptr, first + j, n_elem, row_stride, n0,
                          B, SAMPLE, HAS_EPS, HAS_WEIGHT)
    total += _forward_lane(h_ptr, eps_ptr, w_ptr, b_ptr, first + LANE + j, n_elem, row_stride, n1,
                           B, SAMPLE, HAS_EPS, HAS_WEIGHT)
    total += _forward_lane(h_ptr, eps_ptr, w_ptr, b_ptr, first + 2 * LANE + j, n_elem, row_stride, n2,
                           B, SAMPLE, HAS_EPS, HAS_WEIGHT)
    total += _forward_lane(h_ptr, eps_ptr, w_ptr, b_ptr, first + 3 * LANE + j, n_elem, row_stride, n3,
                           B, SAMPLE, HAS_EPS, HAS_WEIGHT)
    tl.store(part_ptr + pid, tl.sum(total, axis=0) * (-0.5 * s))


@triton.jit
def _backward_lane(h_ptr, eps_ptr, w_ptr, gb_ptr, gh_ptr, geps_ptr, e, n_elem, row_stride, noise, g,
                   B: tl.constexpr, SAMPLE: tl.constexpr, HAS_EPS: tl.constexpr, HAS_GRAD_B: tl.constexpr,
                   HAS_GRAD_PART: tl.constexpr, NEED_GRAD_EPS: tl.constexpr, HAS_WEIGHT: tl.constexpr):
    inside = e < n_elem
    row = e // B
    col = e % B
    at = h_ptr + row * row_stride + col
    mu = tl.load(at, mask=inside, other=0.0).to(tl.float32)
    logvar = tl.load(at + B, mask=inside, other=0.0).to(tl.float32)
    std = tl.exp(0.5 * logvar)
    if HAS_GRAD_PART:
        c = g  # c_r = -0.5 * g * s (* w_r)
        if HAS_WEIGHT:
            c = c * tl.load(w_ptr + row, mask=inside, other=0.0).to(tl.float32)
        grad_mu = -2.0 * c * mu
        grad_logvar = c * (1.0 - std * std)
    else:  # no KL term at all (not 0 * mu: an infinite mu would give NaN where PyTorch gives nothing)
        grad_mu = tl.zeros_like(mu)
        grad_logvar = tl.zeros_like(mu)
    if HAS_GRAD_B:
        gb = tl.load(gb_ptr + e, mask=inside, other=0.0).to(tl.float32)
        grad_mu += gb
        if SAMPLE:
            if HAS_EPS:
                noise = tl.load(eps_ptr + e, mask=inside, other=0.0).to(tl.float32)
            grad_logvar += 0.5 * gb * noise * std
            if NEED_GRAD_EPS:
                tl.store(geps_ptr + e, rounded_to(gb * std, geps_ptr.dtype.element_ty), mask=inside)
    out = gh_ptr + row * (2 * B) + col
    tl.store(out, rounded_to(grad_mu, gh_ptr.dtype.element_ty), mask=inside)
    tl.store(out + B, rounded_to(grad_logvar, gh_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _reparam_kl_backward_kernel(h_ptr, eps_ptr, seed_ptr, w_ptr, gb_ptr, gpart_ptr, gpart_stride, gh_ptr, geps_ptr,
                                n_elem, row_stride, s, STREAM: tl.constexpr, B: tl.constexpr,
                                SAMPLE: tl.constexpr, HAS_EPS: tl.constexpr, GENERATE: tl.constexpr,
                                HAS_GRAD_B: tl.constexpr, HAS_GRAD_PART: tl.constexpr,
                                NEED_GRAD_EPS: tl.constexpr, HAS_WEIGHT: tl.constexpr, LANE: tl.constexpr):
    # as the forward, plus gb_ptr: [N, B] (HAS_GRAD_B);  gpart_ptr: float32 [programs] with stride
    # gpart_stride (HAS_GRAD_PART; 0 for a broadcast scalar);  gh_ptr: [N, 2B] contiguous;
    # geps_ptr: [N, B] (NEED_GRAD_EPS)
    pid = tl.program_id(0)
    first = pid.to(tl.int64) * (4 * LANE)
    j = tl.arange(0, LANE).to(tl.int64)
    if HAS_GRAD_PART:
        g = tl.load(gpart_ptr + pid * gpart_stride).to(tl.float32) * (-0.5 * s)
    else:
        g = 0.0
    n0, n1, n2, n3 = group_normal_or_zero(seed_ptr, STREAM, first, LANE, GENERATE)
    _backward_lane(h_ptr, eps_ptr, w_ptr, gb_ptr, gh_ptr, geps_ptr, first + j, n_elem, row_stride, n0, g,
                   B, SAMPLE, HAS_EPS, HAS_GRAD_B, HAS_GRAD_PART, NEED_GRAD_EPS, HAS_WEIGHT)
    _backward_lane(h_ptr, eps_ptr, w_ptr, gb_ptr, gh_ptr, geps_ptr, first + LANE + j, n_elem, row_stride, n1, g,
                   B, SAMPLE, HAS_EPS, HAS_GRAD_B, HAS_GRAD_PART, NEED_GRAD_EPS, HAS_WEIGHT)
    _backward_lane(h_ptr, eps_ptr, w_ptr, gb_ptr, gh_ptr, geps_ptr, first + 2 * LANE + j, n_elem, row_stride, n2, g,
                   B, SAMPLE, HAS_EPS, HAS_GRAD_B, HAS_GRAD_PART, NEED_GRAD_EPS, HAS_WEIGHT)
    _backward_lane(h_ptr, eps_ptr, w_ptr, gb_ptr, gh_ptr, geps_ptr, first + 3 * LANE + j, n_elem, row_stride, n3, g,
                   B, SAMPLE, HAS_EPS, HAS_GRAD_B, HAS_GRAD_PART, NEED_GRAD_EPS, HAS_WEIGHT)


def reparam_kl_forward(h: torch.Tensor, seed: Optional[torch.Tensor], stream: int,
                       eps: Optional[torch.Tensor] = None, sample: bool = True,
                       row_weight: Optional[torch.Tensor] = None):
    """``(b, partials)``: ``b = mu + eps*exp(logvar/2)`` (``mu`` when ``sample=False``), KL partials.

    ``eps`` injects the noise; otherwise it is drawn from ``(seed, stream, element index of mu)``.
    ``row_weight`` ([N]): the KL is ``sum_r w_r * kl_r`` instead of the mean over rows.
    """
    h = h if h.stride(-1) == 1 else h.contiguous()
    n, width = h.shape[0], h.shape[1] // 2
    generate = sample and eps is None
    if generate:
        check_seed(seed, h.device)
    b = torch.empty((n, width), dtype=h.dtype, device=h.device)
    parts = torch.empty(num_partials(n, width), dtype=torch.float32, device=h.device)
    weighted = row_weight is not None
    wrap_triton(_reparam_kl_forward_kernel)[(parts.numel(),)](
        h, eps.contiguous() if eps is not None else h, seed if generate else h,
        row_weight.contiguous() if weighted else h, b, parts, n * width, h.stride(0),
        mean_scale(n * width, width, weighted), STREAM=int(stream), B=width, SAMPLE=bool(sample),
        HAS_EPS=eps is not None, GENERATE=generate, HAS_WEIGHT=weighted, LANE=LANE)
    return b, parts


def reparam_kl_backward(grad_b: Optional[torch.Tensor], grad_partials: Optional[torch.Tensor], h: torch.Tensor,
                        seed: Optional[torch.Tensor], stream: int, eps: Optional[torch.Tensor] = None,
                        sample: bool = True, row_weight: Optional[torch.Tensor] = None, need_grad_eps: bool = False):
    """``(grad_h, grad_eps)`` from the gradients of ``b`` and of the partials (``None`` = zero)."""
    h = h if h.stride(-1) == 1 else h.contiguous()
    n, width = h.shape[0], h.shape[1] // 2
    generate = sample and eps is None and grad_b is not None
    if generate:
        check_seed(seed, h.device)
    if grad_b is not None:
        grad_b = grad_b.reshape(n, width).contiguous()
    if grad_partials is not None:
        grad_partials = grad_partials.reshape(-1)
        if grad_partials.numel() != num_partials(n, width):
            raise ValueError(f"grad_partials: expected {num_partials(n, width)} values, got {grad_partials.numel()}")
    need_grad_eps = bool(need_grad_eps and sample and grad_b is not None)
    grad_h = torch.empty((n, 2 * width), dtype=h.dtype, device=h.device)
    grad_eps = torch.empty((n, width), dtype=eps.dtype if eps is not None else h.dtype, device=h.device) \
        if need_grad_eps else None
    weighted = row_weight is not None
    wrap_triton(_reparam_kl_backward_kernel)[(num_partials(n, width),)](
        h, eps.contiguous() if eps is not None else h, seed if generate else h,
        row_weight.contiguous() if weighted else h, grad_b if grad_b is not None else h,
        grad_partials if grad_partials is not None else h,
        grad_partials.stride(0) if grad_partials is not None else 0, grad_h,
        grad_eps if grad_eps is not None else h, n * width, h.stride(0), mean_scale(n * width, width, weighted),
        STREAM=int(stream), B=width, SAMPLE=bool(sample), HAS_EPS=eps is not None, GENERATE=generate,
        HAS_GRAD_B=grad_b is not None, HAS_GRAD_PART=grad_partials is not None, NEED_GRAD_EPS=need_grad_eps,
        HAS_WEIGHT=weighted, LANE=LANE)
    return grad_h, grad_eps


# The launchers as custom ops: while torch.compile or torch.export traces, the autograd Function calls
# these, so the Triton kernels stay in the graph as themselves (eager calls skip the dispatcher).


@triton_op("ithp_fast::reparam_kl_forward", mutates_args=())
def reparam_kl_forward_op(h: torch.Tensor, seed: Optional[torch.Tensor], stream: int, eps: Optional[torch.Tensor],
                          sample: bool, row_weight: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return reparam_kl_forward(h, seed, stream, eps, sample, row_weight)


@triton_op("ithp_fast::reparam_kl_backward", mutates_args=())
def reparam_kl_backward_op(grad_b: Optional[torch.Tensor], grad_partials: Optional[torch.Tensor], h: torch.Tensor,
                           seed: Optional[torch.Tensor], stream: int, eps: Optional[torch.Tensor], sample: bool,
                           row_weight: Optional[torch.Tensor],
                           need_grad_eps: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(grad_h, grad_eps)``; ``grad_eps`` is empty when not wanted (an op returns no None)."""
    grad_h, grad_eps = reparam_kl_backward(grad_b, grad_partials, h, seed, stream, eps, sample, row_weight,
                                           need_grad_eps)
    return grad_h, grad_eps if grad_eps is not None else h.new_empty(0)
