"""Triton kernels of ``ib_combine`` (see ``ib_combine.py`` for the formula and the autograd Function).

Launchers:

* ``ib_combine_forward(kl0_parts, mse0_parts, kl1_parts, mse1_parts, weights, dtype)
  -> (IB_total, kl0, mse0, kl1, mse1)`` (0-dim tensors of ``dtype``), one launch
* ``ib_combine_backward(grads, weights, device) -> float32 [4]``: the gradient of each level loss
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import triton
import triton.language as tl

from .triton_helpers import rounded_to

_BLOCK = 1024


@triton.jit
def _sum_partials(ptr, n, BLOCK: tl.constexpr):
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, n, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        acc += tl.load(ptr + offs, mask=offs < n, other=0.0).to(tl.float32)
    return tl.sum(acc, axis=0)


@triton.jit
def _ib_combine_forward_kernel(kl0_parts_ptr, n_kl0, mse0_parts_ptr, n_mse0, kl1_parts_ptr, n_kl1, mse1_parts_ptr,
                               n_mse1, ib_ptr, kl0_ptr, mse0_ptr, kl1_ptr, mse1_ptr, w_kl0, w_mse0, w_kl1, w_mse1,
                               BLOCK: tl.constexpr):
    # *_parts_ptr: float32 [n_*] partial sums of one level loss;  ib_ptr, kl0_ptr, ..: 0-dim outputs
    kl0 = _sum_partials(kl0_parts_ptr, n_kl0, BLOCK)
    mse0 = _sum_partials(mse0_parts_ptr, n_mse0, BLOCK)
    kl1 = _sum_partials(kl1_parts_ptr, n_kl1, BLOCK)
    mse1 = _sum_partials(mse1_parts_ptr, n_mse1, BLOCK)
    total = w_kl0 * kl0 + w_mse0 * mse0 + w_kl1 * kl1 + w_mse1 * mse1
    tl.store(ib_ptr, rounded_to(total, ib_ptr.dtype.element_ty))
    tl.store(kl0_ptr, rounded_to(kl0, kl0_ptr.dtype.element_ty))
    tl.store(mse0_ptr, rounded_to(mse0, mse0_ptr.dtype.element_ty))
    tl.store(kl1_ptr, rounded_to(kl1, kl1_ptr.dtype.element_ty))
    tl.store(mse1_ptr, rounded_to(mse1, mse1_ptr.dtype.element_ty))


@triton.jit
def _grad_of(total_grad, w, g_ptr, HAS: tl.constexpr):
    g = total_grad * w
    if HAS:
        g += tl.load(g_ptr).to(tl.float32)
    return g


@triton.jit
def _ib_combine_backward_kernel(g_ib_ptr, g_kl0_ptr, g_mse0_ptr, g_kl1_ptr, g_mse1_ptr, out_ptr,
                                w_kl0, w_mse0, w_kl1, w_mse1, HAS_IB: tl.constexpr, HAS_KL0: tl.constexpr,
                                HAS_MSE0: tl.constexpr, HAS_KL1: tl.constexpr, HAS_MSE1: tl.constexpr):
    # g_*_ptr: 0-dim gradients of the five outputs (read when HAS_*);  out_ptr: float32 [4]
    if HAS_IB:
        total_grad = tl.load(g_ib_ptr).to(tl.float32)
    else:
        total_grad = 0.0
    tl.store(out_ptr + 0, _grad_of(total_grad, w_kl0, g_kl0_ptr, HAS_KL0))
    tl.store(out_ptr + 1, _grad_of(total_grad, w_mse0, g_mse0_ptr, HAS_MSE0))
    tl.store(out_ptr + 2, _grad_of(total_grad, w_kl1, g_kl1_ptr, HAS_KL1))
    tl.store(out_ptr + 3, _grad_of(total_grad, w_mse1, g_mse1_ptr, HAS_MSE1))


def ib_combine_forward(kl0_parts: torch.Tensor, mse0_parts: torch.Tensor, kl1_parts: torch.Tensor,
                       mse1_parts: torch.Tensor, weights: Sequence[float], dtype: torch.dtype):
    """``(IB_total, kl0, mse0, kl1, mse1)`` as 0-dim tensors of ``dtype``."""
    parts = [t.reshape(-1).contiguous() for t in (kl0_parts, mse0_parts, kl1_parts, mse1_parts)]
    device = parts[0].device
    outs = [torch.empty((), dtype=dtype, device=device) for _ in range(5)]
    _ib_combine_forward_kernel[(1,)](parts[0], parts[0].numel(), parts[1], parts[1].numel(), parts[2],
                                     parts[2].numel(), parts[3], parts[3].numel(), *outs, *map(float, weights),
                                     BLOCK=_BLOCK)
    return tuple(outs)


def ib_combine_backward(grads: Sequence[Optional[torch.Tensor]], weights: Sequence[float],
                        device: torch.device) -> torch.Tensor:
    """float32 ``[4]``: the gradient of each level loss from the five outputs' gradients (None = 0)."""
    out = torch.empty(4, dtype=torch.float32, device=device)
    present = [g is not None for g in grads]
    ptrs = [g if g is not None else out for g in grads]
    _ib_combine_backward_kernel[(1,)](*ptrs, out, *map(float, weights), HAS_IB=present[0], HAS_KL0=present[1],
                                      HAS_MSE0=present[2], HAS_KL1=present[3], HAS_MSE1=present[4])
    return out
