"""Reparameterisation + KL of one IB level, from the encoder output ``h = [mu | logvar]``.

    mu, logvar = h[:, :B], h[:, B:];   std = exp(logvar / 2)
    b   = mu + eps * std                (b = mu when not sampling; eps = noise(seed, stream, e))
    kl  = -0.5 * sum_r w_r * (1 + mean_j(logvar - mu^2 - std^2)[r])
          w_r = 1/N for every row (no mask), or a row weight (masked mean: 1/count on the rows
          kept, 0 on the others: a row of weight 0 adds nothing, whatever its values)
    backward, g = d loss / d kl:
      grad_mu = grad_b + g * w_r * mu / B
      grad_logvar = 0.5 * grad_b * eps * std + 0.5 * g * w_r * (std^2 - 1) / B
      grad_eps = grad_b * std

The KL comes out as *partials* whose sum is the KL (one per Triton program; one for the torch
backend), so the IB combination reduces every level in one place without a host sync. They are
float32 (float64 for a float64 input on the torch backend). Nothing but ``h`` (and an injected
``eps``, and the row weights) is saved: the backward regenerates the noise. The mean over no row
(an empty batch without a mask) is NaN, as torch's.

``reparam_kl_partials(h, seed, stream, *, eps=None, sample=True, row_weight=None, backend)
-> (b, partials)``; ``reparam_kl(...) -> (b, kl)`` sums them. Kernels: ``reparam_kl_triton.py``.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import check_backend, inverse, tracked, widened
from .rng import normal


def _mu_logvar_std(h: torch.Tensor):
    width = h.shape[-1] // 2
    hf = widened(h)
    mu, logvar = hf[..., :width], hf[..., width:]
    return mu, logvar, torch.exp(logvar * 0.5)


def _noise(eps: Optional[torch.Tensor], seed: int, stream: int, mu: torch.Tensor) -> torch.Tensor:
    """The eps of the formula, in ``mu``'s dtype: injected, or drawn from ``(seed, stream)``."""
    if eps is not None:
        return widened(eps, mu.dtype)
    return widened(normal(seed, stream, mu.shape, mu.device), mu.dtype)


def _check_row_weight(row_weight: Optional[torch.Tensor], rows: int) -> Optional[torch.Tensor]:
    if row_weight is None:
        return None
    if row_weight.dim() != 1 or row_weight.shape[0] != rows:
        raise ValueError(f"row_weight: expected one weight per row of h, shape ({rows},), got "
                         f"{tuple(row_weight.shape)}")
    return row_weight


def reparam_kl_torch(h: torch.Tensor, eps: Optional[torch.Tensor], seed: int, stream: int, sample: bool,
                     row_weight: Optional[torch.Tensor] = None):
    """The plain-PyTorch forward: ``(b, kl)`` with ``kl`` a 0-dim tensor (float32; float64 for float64 ``h``)."""
    mu, logvar, std = _mu_logvar_std(h)
    term = torch.addcmul(logvar, mu, mu, value=-1.0).addcmul_(std, std, value=-1.0)  # logvar - mu^2 - std^2
    if row_weight is None:
        kl = term.sum().mul_(inverse(mu.numel())).add_(1.0).mul_(-0.5)
    else:
        per_row = term.sum(-1).mul_(1.0 / mu.shape[-1]).add_(1.0)
        kl = torch.where(row_weight != 0, per_row, 0.0).dot(widened(row_weight, mu.dtype)).mul_(-0.5)
    if sample:
        b = torch.addcmul(mu, _noise(eps, seed, stream, mu), std)
    else:
        b = mu.clone()
    return b.to(h.dtype), kl


def _kl_gradient_scale(grad_kl: Optional[torch.Tensor], mu: torch.Tensor, row_weight: Optional[torch.Tensor]):
    """``d kl / d(sum over a row's mu^2 ...)`` scale per row: ``g / (N*B)`` (a 0-dim tensor) or ``g * w_r / B``
    (a column)."""
    g = grad_kl.to(mu.dtype).sum() if grad_kl is not None else torch.zeros((), dtype=mu.dtype, device=mu.device)
    if row_weight is None:
        return g * inverse(mu.numel())
    return (widened(row_weight, mu.dtype) * (g / mu.shape[-1])).unsqueeze(-1)


def _reparam_kl_backward_torch(h, eps, seed: int, stream: int, sample: bool, grad_b, grad_kl, need_grad_eps: bool,
                               row_weight: Optional[torch.Tensor] = None):
    """``(grad_h, grad_eps)`` by the formulas above (``grad_b`` / ``grad_kl`` None mean zero)."""
    width = h.shape[-1] // 2
    mu, logvar, std = _mu_logvar_std(h)
    grad_h = torch.zeros(h.shape, dtype=mu.dtype, device=h.device)
    grad_mu, grad_logvar = grad_h[..., :width], grad_h[..., width:]
    if grad_kl is not None:  # else no KL term at all (0 * an infinite mu would be NaN)
        g = _kl_gradient_scale(grad_kl, mu, row_weight)
        torch.mul(mu, g, out=grad_mu)
        torch.mul(std, std, out=grad_logvar)
        grad_logvar.sub_(1.0).mul_(g)
    grad_eps = None
    if grad_b is not None:
        gb = widened(grad_b, mu.dtype)
        grad_mu.add_(gb)
        if sample:
            noise = _noise(eps, seed, stream, mu)
            if need_grad_eps:
                grad_eps = (gb * std).to(eps.dtype)
            grad_logvar.addcmul_(noise.mul_(std) if eps is None else noise * std, gb)
    grad_logvar.mul_(0.5)
    return grad_h.to(h.dtype), grad_eps


class ReparamKL(torch.autograd.Function):
    """``(h, eps, seed, row_weight) -> (b, partials)``; saves ``h`` (and an injected ``eps``, and the row
    weights), never a drawn ``eps``."""

    @staticmethod
    def forward(ctx, h, eps, seed, row_weight, stream: int, sample: bool, backend: str):
        ctx.stream, ctx.sample, ctx.backend = stream, sample, backend
        ctx.set_materialize_grads(False)
        if backend == "triton":
            from .reparam_kl_triton import reparam_kl_forward

            ctx.save_for_backward(h, eps, seed, row_weight)
            if torch.compiler.is_compiling():  # the registered op: the kernel stays in the traced graph
                return torch.ops.ithp_fast.reparam_kl_forward(h, seed, eps, row_weight, stream, sample)
            return reparam_kl_forward(h, seed, stream, eps=eps, sample=sample, row_weight=row_weight)
        ctx.seed = seed
        ctx.save_for_backward(h, eps, row_weight)
        b, kl = reparam_kl_torch(h, eps, seed, stream, sample, row_weight)
        return b, kl.reshape(1)

    @staticmethod
    def backward(ctx, grad_b, grad_parts):
        if grad_b is None and grad_parts is None:
            return (None,) * 7
        need_grad_eps = ctx.needs_input_grad[1]
        if ctx.backend == "triton":
            from .reparam_kl_triton import reparam_kl_backward

            h, eps, seed, row_weight = ctx.saved_tensors
            if torch.compiler.is_compiling():
                grad_h, grad_eps = torch.ops.ithp_fast.reparam_kl_backward(
                    h, grad_b, grad_parts, seed, eps, row_weight, ctx.stream, ctx.sample, need_grad_eps)
                grad_eps = grad_eps if grad_eps.numel() else None
            else:
                grad_h, grad_eps = reparam_kl_backward(h, grad_b, grad_parts, seed, ctx.stream, eps=eps,
                                                       sample=ctx.sample, need_grad_eps=need_grad_eps,
                                                       row_weight=row_weight)
        else:
            h, eps, row_weight = ctx.saved_tensors
            grad_h, grad_eps = _reparam_kl_backward_torch(h, eps, ctx.seed, ctx.stream, ctx.sample, grad_b, grad_parts,
                                                          need_grad_eps, row_weight)
        return grad_h, grad_eps, None, None, None, None, None


def reparam_kl_partials(h: torch.Tensor, seed, stream: int, *, eps: Optional[torch.Tensor] = None,
                        sample: bool = True, row_weight: Optional[torch.Tensor] = None, backend: str = "torch"):
    """Differentiable ``(b, partials)``: ``b`` like ``mu``; the KL is ``partials.sum()``.

    ``row_weight`` (one per row of ``h``, e.g. :func:`ithp_fast.kernels.mean_weights` of a row
    mask): the KL's mean over rows becomes ``sum_r w_r * kl_r`` (rows of weight 0 left out).
    """
    check_backend(backend)
    row_weight = _check_row_weight(row_weight, h.shape[0] if h.dim() > 1 else 1)
    if backend == "torch" and not tracked(h, eps):
        b, kl = reparam_kl_torch(h, eps, seed, stream, bool(sample), row_weight)
        return b, kl.reshape(1)
    return ReparamKL.apply(h, eps, seed, row_weight, stream, bool(sample), backend)


def reparam_kl(h: torch.Tensor, seed, stream: int, *, eps: Optional[torch.Tensor] = None, sample: bool = True,
               row_weight: Optional[torch.Tensor] = None, backend: str = "torch"):
    """Differentiable ``(b, kl)`` with ``kl`` a 0-dim tensor (mean over features, then rows)."""
    b, parts = reparam_kl_partials(h, seed, stream, eps=eps, sample=sample, row_weight=row_weight, backend=backend)
    return b, parts.sum()
