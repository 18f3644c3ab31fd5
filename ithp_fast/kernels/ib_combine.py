"""The IB combination: each level's KL and MSE from their partials, and IB_total, for N levels.

    kl_k, mse_k = the sums of their partials (float32; float64 for a float64 model)
    IB_total = sum_k (w_kl_k * kl_k + w_mse_k * mse_k)
    backward: grad of each level loss = grad_IB * w + grad of that loss output

The weights are read off ``combine_ib`` of the reference (it is linear in the level losses) by
evaluating it on unit vectors (:func:`combine_weights`): the formula itself lives only in the
reference. The ``triton`` backend sums and combines in one launch, in a fixed order
(deterministic), and hands each level a stride-0 view of its gradient in the backward; the
``torch`` backend is plain autograd over ``combine_ib``. Nothing is read back to the host.
Kernels: ``ib_combine_triton.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..reference.ithp import combine_ib
from . import check_backend


def combine_weights(detector_weights: Sequence[float], level_weights: Sequence[float]) -> tuple[float, ...]:
    """Weights of ``(kl_1, mse_1, kl_2, mse_2, ...)`` in ``IB_total``, read off :func:`combine_ib`."""
    n = len(level_weights)
    weights = []
    for i in range(2 * n):
        unit = [1.0 if j == i else 0.0 for j in range(2 * n)]
        weights.append(float(combine_ib(unit[0::2], unit[1::2], detector_weights, level_weights)))
    return tuple(weights)


class IBCombine(torch.autograd.Function):
    """``2N`` partial vectors (kl_1, mse_1, ...) -> ``(IB_total, kl_1, mse_1, ...)`` with the Triton kernels."""

    @staticmethod
    def forward(ctx, weights, dtype, *parts):
        from .ib_combine_triton import ib_combine_forward

        ctx.weights = weights
        ctx.sizes = [t.numel() for t in parts]
        ctx.set_materialize_grads(False)
        return ib_combine_forward(parts, weights, dtype)

    @staticmethod
    def backward(ctx, *grads):
        from .ib_combine_triton import ib_combine_backward

        device = next((g.device for g in grads if g is not None), None)
        if device is None:
            return (None, None) + (None,) * len(ctx.sizes)
        level = ib_combine_backward(grads, ctx.weights, device)
        # a level loss that reaches no differentiated output gets no gradient (None, not zeros:
        # its own backward then adds no term, as autograd would, and 0 * Inf makes no NaN)
        return (None, None) + tuple(level[i:i + 1].expand(n) if grads[0] is not None or grads[1 + i] is not None
                                    else None for i, n in enumerate(ctx.sizes))


def ib_combine(kl_parts: Sequence[torch.Tensor], mse_parts: Sequence[torch.Tensor], *,
               detector_weights: Sequence[float], level_weights: Sequence[float],
               dtype: torch.dtype = torch.float32, backend: str = "torch"):
    """Differentiable ``(IB_total, kl_terms, mse_terms)`` (0-dim tensors of ``dtype``) from each
    level's KL and MSE partials, in level order."""
    check_backend(backend)
    if not len(kl_parts) == len(mse_parts) == len(detector_weights) == len(level_weights):
        raise ValueError(f"ib_combine: expected one KL, one MSE and two weights per level, got {len(kl_parts)} KL, "
                         f"{len(mse_parts)} MSE, {len(detector_weights)} detector and {len(level_weights)} level "
                         f"weights")
    if backend == "triton" and not torch.compiler.is_compiling():  # a traced graph: torch's ops, fused by the compiler
        parts = [p for pair in zip(kl_parts, mse_parts) for p in pair]
        total, *terms = IBCombine.apply(combine_weights(detector_weights, level_weights), dtype, *parts)
        return total, tuple(terms[0::2]), tuple(terms[1::2])
    kl_terms = tuple(parts.sum().to(dtype) for parts in kl_parts)
    mse_terms = tuple(parts.sum().to(dtype) for parts in mse_parts)
    return combine_ib(kl_terms, mse_terms, detector_weights, level_weights), kl_terms, mse_terms
