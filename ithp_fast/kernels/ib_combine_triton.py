"""Triton kernels of ``ib_combine`` (see ``ib_combine.py`` for the formula and the autograd Function).

The level losses arrive as ``2N`` partial vectors (``kl_1, mse_1, kl_2, mse_2, ...``), passed to
one kernel as a tuple of pointers (a tuple's length is a compile-time constant: one kernel
variant per number of levels).

Launchers:

* ``ib_combine_forward(parts, weights, dtype) -> (IB_total, kl_1, mse_1, ...)`` (0-dim tensors of
  ``dtype``), one launch
* ``ib_combine_backward(grads, weights, device) -> [2N]``: the gradient of each level loss
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
    acc = tl.zeros((BLOCK,), dtype=ptr.dtype.element_ty)
    for start in range(0, n, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        acc += tl.load(ptr + offs, mask=offs < n, other=0.0)
    return tl.sum(acc, axis=0)


@triton.jit
def _ib_combine_forward_kernel(parts_ptrs, sizes, weights, ib_ptr, term_ptrs, TERMS: tl.constexpr,
                               BLOCK: tl.constexpr):
    # parts_ptrs: TERMS pointers to float32 partial sums, sizes[i] of them each;
    # weights: TERMS floats; ib_ptr, term_ptrs[i]: 0-dim outputs. Summed in term order.
    total = _sum_partials(parts_ptrs[0], sizes[0], BLOCK)
    tl.store(term_ptrs[0], rounded_to(total, term_ptrs[0].dtype.element_ty))
    total = total * weights[0]
    for i in tl.static_range(1, TERMS):
        term = _sum_partials(parts_ptrs[i], sizes[i], BLOCK)
        tl.store(term_ptrs[i], rounded_to(term, term_ptrs[i].dtype.element_ty))
        total += weights[i] * term
    tl.store(ib_ptr, rounded_to(total, ib_ptr.dtype.element_ty))


@triton.jit
def _ib_combine_backward_kernel(g_ib_ptr, g_term_ptrs, out_ptr, weights, TERMS: tl.constexpr,
                                HAS_IB: tl.constexpr, HAS_TERM: tl.constexpr):
    # g_ib_ptr, g_term_ptrs[i]: 0-dim gradients of the outputs (read when HAS_IB / bit i of HAS_TERM);
    # out_ptr: float32 [TERMS]
    if HAS_IB:
        total_grad = tl.load(g_ib_ptr).to(out_ptr.dtype.element_ty)
    else:
        total_grad = tl.zeros((), dtype=out_ptr.dtype.element_ty)
    for i in tl.static_range(TERMS):
        g = total_grad * weights[i]
        if (HAS_TERM >> i) & 1:
            g += tl.load(g_term_ptrs[i]).to(out_ptr.dtype.element_ty)
        tl.store(out_ptr + i, g)


def ib_combine_forward(parts: Sequence[torch.Tensor], weights: Sequence[float], dtype: torch.dtype):
    """``(IB_total, term_1, ..., term_2N)`` as 0-dim tensors of ``dtype``."""
    parts = tuple(t.reshape(-1).contiguous() for t in parts)
    if len(parts) != len(weights):
        raise ValueError(f"parts: expected {len(weights)} partial vectors (one per weight), got {len(parts)}")
    device = parts[0].device
    outs = tuple(torch.empty((), dtype=dtype, device=device) for _ in range(len(parts) + 1))
    _ib_combine_forward_kernel[(1,)](parts, tuple(t.numel() for t in parts), tuple(map(float, weights)), outs[0],
                                     outs[1:], TERMS=len(parts), BLOCK=_BLOCK)
    return outs


def ib_combine_backward(grads: Sequence[Optional[torch.Tensor]], weights: Sequence[float],
                        device: torch.device) -> torch.Tensor:
    """float32 ``[2N]``: the gradient of each level loss from the outputs' gradients
    (``grads[0]`` of IB_total, then one per level loss; None = 0)."""
    out = torch.empty(len(weights), dtype=torch.float32, device=device)
    g_ib, g_terms = grads[0], grads[1:]
    present = sum(1 << i for i, g in enumerate(g_terms) if g is not None)
    _ib_combine_backward_kernel[(1,)](g_ib if g_ib is not None else out,
                                      tuple(g if g is not None else out for g in g_terms), out,
                                      tuple(map(float, weights)), TERMS=len(weights), HAS_IB=g_ib is not None,
                                      HAS_TERM=present)
    return out
