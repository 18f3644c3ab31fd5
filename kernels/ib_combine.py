"""The IB combination: the four level losses from their partials, and IB_total.

    kl0, mse0, kl1, mse1 = the sums of their float32 partials
    IB_total = w_kl0*kl0 + w_mse0*mse0 + w_kl1*kl1 + w_mse1*mse1
    backward: grad of each level loss = grad_IB * w + grad of that loss output

The weights are read off ``combine_ib`` of the reference (it is linear in the four losses) by
evaluating it on unit vectors (:func:`combine_weights`): the formula itself lives only in the
reference. The ``triton`` backend sums and combines in one launch, in a fixed order
(deterministic), and hands each level a stride-0 view of its gradient in the backward; the
``torch`` backend is plain autograd over ``combine_ib``. Nothing is read back to the host.
Kernels: ``ib_combine_triton.py``.
"""

from __future__ import annotations

import torch

from ..reference.ithp import combine_ib
from . import check_backend


def combine_weights(p_beta: float, p_gamma: float, p_lambda: float) -> tuple[float, float, float, float]:
    """Weights of ``(kl0, mse0, kl1, mse1)`` in ``IB_total``, read off :func:`combine_ib`."""
    unit = ((1.0, 0.0, 0.0, 0.0), (0.0, 1.0, 0.0, 0.0), (0.0, 0.0, 1.0, 0.0), (0.0, 0.0, 0.0, 1.0))
    return tuple(float(combine_ib(*u, p_beta, p_gamma, p_lambda)) for u in unit)


class IBCombine(torch.autograd.Function):
    """Four partial vectors -> ``(IB_total, kl0, mse0, kl1, mse1)`` with the Triton kernels."""

    @staticmethod
    def forward(ctx, kl0_parts, mse0_parts, kl1_parts, mse1_parts, weights, dtype):
        from .ib_combine_triton import ib_combine_forward

        ctx.weights = weights
        ctx.sizes = [t.numel() for t in (kl0_parts, mse0_parts, kl1_parts, mse1_parts)]
        ctx.set_materialize_grads(False)
        return ib_combine_forward(kl0_parts, mse0_parts, kl1_parts, mse1_parts, weights, dtype)

    @staticmethod
    def backward(ctx, *grads):
        from .ib_combine_triton import ib_combine_backward

        device = next((g.device for g in grads if g is not None), None)
        if device is None:
            return None, None, None, None, None, None
        level = ib_combine_backward(grads, ctx.weights, device)
        return tuple(level[i:i + 1].expand(n) for i, n in enumerate(ctx.sizes)) + (None, None)


def ib_combine(kl0_parts: torch.Tensor, mse0_parts: torch.Tensor, kl1_parts: torch.Tensor, mse1_parts: torch.Tensor,
               *, p_beta: float, p_gamma: float, p_lambda: float, dtype: torch.dtype = torch.float32,
               backend: str = "torch"):
    """Differentiable ``(IB_total, kl0, mse0, kl1, mse1)`` (0-dim, ``dtype``) from the level partials."""
    check_backend(backend)
    if backend == "triton":
        weights = combine_weights(p_beta, p_gamma, p_lambda)
        return IBCombine.apply(kl0_parts, mse0_parts, kl1_parts, mse1_parts, weights, dtype)
    kl0, mse0, kl1, mse1 = (parts.sum().to(dtype) for parts in (kl0_parts, mse0_parts, kl1_parts, mse1_parts))
    return combine_ib(kl0, mse0, kl1, mse1, p_beta, p_gamma, p_lambda), kl0, mse0, kl1, mse1
