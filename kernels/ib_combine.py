"""The IB combination: the four level losses from their partials, and IB_total, in one launch.

``combine_ib`` (reference/ithp.py) is linear in ``(kl0, mse0, kl1, mse1)``, so its weights are
read off by evaluating it on unit vectors (:func:`combine_weights`) and the kernel forms the dot
product; the formula itself lives only in the reference. Sums run in float32 in a fixed order
(deterministic); nothing is read back to the host.

Standalone launchers:

* ``ib_combine_forward(kl0_parts, mse0_parts, kl1_parts, mse1_parts, weights, dtype)
  -> (IB_total, kl0, mse0, kl1, mse1)`` (0-dim tensors of ``dtype``)
* ``ib_combine(...)`` the same, differentiable; its backward writes one float32 scalar per level
  loss and hands each level a stride-0 view of it.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import triton
import triton.language as tl

from ..reference.ithp import combine_ib

from .rounding import rounded_to

_BLOCK = 1024


def combine_weights(p_beta: float, p_gamma: float, p_lambda: float) -> tuple[float, float, float, float]:
    """Weights of ``(kl0, mse0, kl1, mse1)`` in ``IB_total``, read off :func:`combine_ib`."""
    unit = ((1.0, 0.0, 0.0, 0.0), (0.0, 1.0, 0.0, 0.0), (0.0, 0.0, 1.0, 0.0), (0.0, 0.0, 0.0, 1.0))
    return tuple(float(combine_ib(*u, p_beta, p_gamma, p_lambda)) for u in unit)


@triton.jit
def _sum_partials(ptr, n, BLOCK: tl.constexpr):
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, n, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        acc += tl.load(ptr + offs, mask=offs < n, other=0.0).to(tl.float32)
    return tl.sum(acc, axis=0)


# losses = per-level sums of partials;  IB_total = w0*kl0 + w1*mse0 + w2*kl1 + w3*mse1
# backward: grad of each level loss = grad_IB * w_i + grad of that loss output
@triton.jit
def _ib_combine_forward_kernel(p0, n0, p1, n1, p2, n2, p3, n3, out_ib, out0, out1, out2, out3, w0, w1, w2, w3,
                               BLOCK: tl.constexpr):
    kl0 = _sum_partials(p0, n0, BLOCK)
    mse0 = _sum_partials(p1, n1, BLOCK)
    kl1 = _sum_partials(p2, n2, BLOCK)
    mse1 = _sum_partials(p3, n3, BLOCK)
    total = w0 * kl0 + w1 * mse0 + w2 * kl1 + w3 * mse1
    tl.store(out_ib, rounded_to(total, out_ib.dtype.element_ty))
    tl.store(out0, rounded_to(kl0, out0.dtype.element_ty))
    tl.store(out1, rounded_to(mse0, out1.dtype.element_ty))
    tl.store(out2, rounded_to(kl1, out2.dtype.element_ty))
    tl.store(out3, rounded_to(mse1, out3.dtype.element_ty))


@triton.jit
def _grad_of(total_grad, w, g_ptr, HAS: tl.constexpr):
    g = total_grad * w
    if HAS:
        g += tl.load(g_ptr).to(tl.float32)
    return g


@triton.jit
def _ib_combine_backward_kernel(g_ib, g0, g1, g2, g3, out_ptr, w0, w1, w2, w3, HAS_IB: tl.constexpr,
                                HAS0: tl.constexpr, HAS1: tl.constexpr, HAS2: tl.constexpr, HAS3: tl.constexpr):
    if HAS_IB:
        total_grad = tl.load(g_ib).to(tl.float32)
    else:
        total_grad = 0.0
    tl.store(out_ptr + 0, _grad_of(total_grad, w0, g0, HAS0))
    tl.store(out_ptr + 1, _grad_of(total_grad, w1, g1, HAS1))
    tl.store(out_ptr + 2, _grad_of(total_grad, w2, g2, HAS2))
    tl.store(out_ptr + 3, _grad_of(total_grad, w3, g3, HAS3))


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
    _ib_combine_backward_kernel[(1,)](*ptrs, out, *map(float, weights), HAS_IB=present[0], HAS0=present[1],
                                      HAS1=present[2], HAS2=present[3], HAS3=present[4])
    return out


class IBCombine(torch.autograd.Function):
    """Four partial vectors -> ``(IB_total, kl0, mse0, kl1, mse1)``."""

    @staticmethod
    def forward(ctx, kl0_parts, mse0_parts, kl1_parts, mse1_parts, weights, dtype):
        ctx.weights = weights
        ctx.sizes = [t.numel() for t in (kl0_parts, mse0_parts, kl1_parts, mse1_parts)]
        ctx.set_materialize_grads(False)
        return ib_combine_forward(kl0_parts, mse0_parts, kl1_parts, mse1_parts, weights, dtype)

    @staticmethod
    def backward(ctx, *grads):
        device = next((g.device for g in grads if g is not None), None)
        if device is None:
            return None, None, None, None, None, None
        level = ib_combine_backward(grads, ctx.weights, device)
        return tuple(level[i:i + 1].expand(n) for i, n in enumerate(ctx.sizes)) + (None, None)


def ib_combine(kl0_parts: torch.Tensor, mse0_parts: torch.Tensor, kl1_parts: torch.Tensor, mse1_parts: torch.Tensor,
               weights: Sequence[float], dtype: torch.dtype = torch.float32):
    """Differentiable ``(IB_total, kl0, mse0, kl1, mse1)`` from the level partials."""
    return IBCombine.apply(kl0_parts, mse0_parts, kl1_parts, mse1_parts, tuple(weights), dtype)
