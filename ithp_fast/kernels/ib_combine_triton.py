"""Triton kernels of ``ib_combine`` (see ``ib_combine.py`` for the formula and the autograd Function).

The level losses are passed to one kernel as a tuple of ``2N`` pointers to their partial vectors,
level by level (``kl_1, mse_1, kl_2, mse_2, ...``: the order of the sum); a tuple's length is a
compile-time constant: one kernel variant per number of levels.

Launchers, in the op's argument order (the weights of each KL and each MSE term, from
``ib_combine.combine_weights``):

* ``ib_combine_forward(kl_parts, mse_parts, kl_weights, mse_weights, dtype) -> (IB_total, kl_terms, mse_terms)``
  (0-dim tensors of ``dtype``), one launch
* ``ib_combine_backward(grad_total, grad_kl, grad_mse, kl_weights, mse_weights, device) -> (kl_grads, mse_grads)``:
  the gradient of each level loss (float32 ``[N]`` each)
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


def _by_level(kl: Sequence, mse: Sequence) -> tuple:
    """``kl_1, mse_1, kl_2, mse_2, ...``: the kernels' term order."""
    return tuple(x for pair in zip(kl, mse) for x in pair)


def ib_combine_forward(kl_parts: Sequence[torch.Tensor], mse_parts: Sequence[torch.Tensor],
                       kl_weights: Sequence[float], mse_weights: Sequence[float], dtype: torch.dtype):
    """``(IB_total, kl_terms, mse_terms)`` as 0-dim tensors of ``dtype``."""
    parts = tuple(t.reshape(-1).contiguous() for t in _by_level(kl_parts, mse_parts))
    weights = tuple(map(float, _by_level(kl_weights, mse_weights)))
    if len(parts) != len(weights):
        raise ValueError(f"parts: expected {len(weights)} partial vectors (one per weight), got {len(parts)}")
    device = parts[0].device
    outs = tuple(torch.empty((), dtype=dtype, device=device) for _ in range(len(parts) + 1))
    _ib_combine_forward_kernel[(1,)](parts, tuple(t.numel() for t in parts), weights, outs[0], outs[1:],
                                     TERMS=len(parts), BLOCK=_BLOCK)
    return outs[0], outs[1::2], outs[2::2]


def ib_combine_backward(grad_total: Optional[torch.Tensor], grad_kl: Sequence[Optional[torch.Tensor]],
                        grad_mse: Sequence[Optional[torch.Tensor]], kl_weights: Sequence[float],
                        mse_weights: Sequence[float], device: torch.device):
    """``(kl_grads, mse_grads)``, float32 ``[N]`` each: the gradient of each level loss from the
    outputs' gradients (None = 0)."""
    weights = tuple(map(float, _by_level(kl_weights, mse_weights)))
    out = torch.empty(len(weights), dtype=torch.float32, device=device)
    g_terms = _by_level(grad_kl, grad_mse)
    present = sum(1 << i for i, g in enumerate(g_terms) if g is not None)
    _ib_combine_backward_kernel[(1,)](grad_total if grad_total is not None else out,
                                      tuple(g if g is not None else out for g in g_terms), out, weights,
                                      TERMS=len(weights), HAS_IB=grad_total is not None, HAS_TERM=present)
    return out[0::2], out[1::2]
