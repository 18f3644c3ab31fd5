"""The IB combination: each level's KL and MSE from their partials, and IB_total, for N levels.

    kl_k, mse_k = the sums of their partials (float32; float64 for a float64 model)
    IB_total = sum_k (w_kl_k * kl_k + w_mse_k * mse_k)
    backward: grad of each level loss = grad_IB * w + grad of that loss output

The weights are read off ``combine_ib`` of the reference (it is linear in the level losses) by
evaluating it on unit vectors (:func:`combine_weights`): the formula itself lives only in the
reference. The ``triton`` backend sums and combines in one launch, in a fixed order
(deterministic), and hands each level a stride-0 view of its gradient in the backward; the
``torch`` backend (:func:`ib_combine_torch`) is plain autograd over ``combine_ib``. Nothing is
read back to the host.

Every entry point takes the arguments in one order, ``(kl_parts, mse_parts, detector_weights,
level_weights, dtype)``: :func:`ib_combine` (which checks them, once, and dispatches),
:func:`ib_combine_torch`, :class:`IBCombine` (the same, flattened: ``*kl_parts, *mse_parts,
detector_weights, level_weights, dtype``) and the launchers of ``ib_combine_triton.py``, which
take the weights of each term that :func:`combine_weights` reads off the last two.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..reference.ithp import combine_ib
from . import check_backend


def combine_weights(detector_weights: Sequence[float],
                    level_weights: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(kl_weights, mse_weights)``: the weight of each level's KL and MSE in ``IB_total``, read off
    :func:`combine_ib`."""
    n = len(level_weights)
    weights = []
    for i in range(2 * n):
        unit = [1.0 if j == i else 0.0 for j in range(2 * n)]
        weights.append(float(combine_ib(unit[:n], unit[n:], detector_weights, level_weights)))
    return tuple(weights[:n]), tuple(weights[n:])


def ib_combine_torch(kl_parts: Sequence[torch.Tensor], mse_parts: Sequence[torch.Tensor],
                     detector_weights: Sequence[float], level_weights: Sequence[float], dtype: torch.dtype):
    """``(IB_total, kl_terms, mse_terms)`` by plain autograd over :func:`combine_ib`."""
    kl_terms = tuple(parts.sum().to(dtype) for parts in kl_parts)
    mse_terms = tuple(parts.sum().to(dtype) for parts in mse_parts)
    return combine_ib(kl_terms, mse_terms, detector_weights, level_weights), kl_terms, mse_terms


class IBCombine(torch.autograd.Function):
    """``(*kl_parts, *mse_parts, detector_weights, level_weights, dtype) -> (IB_total, *kl_terms, *mse_terms)``
    with the Triton kernels."""

    @staticmethod
    def forward(ctx, *args):
        from .ib_combine_triton import ib_combine_forward

        *parts, detector_weights, level_weights, dtype = args
        n = len(level_weights)
        ctx.weights = combine_weights(detector_weights, level_weights)
        ctx.sizes = [t.numel() for t in parts]
        ctx.set_materialize_grads(False)
        total, kl_terms, mse_terms = ib_combine_forward(parts[:n], parts[n:], *ctx.weights, dtype)
        return (total, *kl_terms, *mse_terms)

    @staticmethod
    def backward(ctx, grad_total, *grad_terms):
        from .ib_combine_triton import ib_combine_backward

        none = (None,) * (len(ctx.sizes) + 3)
        device = next((g.device for g in (grad_total, *grad_terms) if g is not None), None)
        if device is None:
            return none
        n = len(ctx.sizes) // 2
        grad_kl, grad_mse = ib_combine_backward(grad_total, grad_terms[:n], grad_terms[n:], *ctx.weights, device)
        level = (*grad_kl, *grad_mse)
        # a level loss that reaches no differentiated output gets no gradient (None, not zeros:
        # its own backward then adds no term, as autograd would, and 0 * Inf makes no NaN)
        return tuple(g.expand(size) if grad_total is not None or grad_terms[i] is not None else None
                     for i, (g, size) in enumerate(zip(level, ctx.sizes))) + none[-3:]


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
        n = len(level_weights)
        total, *terms = IBCombine.apply(*kl_parts, *mse_parts, detector_weights, level_weights, dtype)
        return total, tuple(terms[:n]), tuple(terms[n:])
    return ib_combine_torch(kl_parts, mse_parts, detector_weights, level_weights, dtype)
