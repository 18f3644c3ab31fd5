"""Reparameterisation + KL of one IB level, from the encoder output ``h = [mu | logvar]``.

    mu, logvar = h[:, :B], h[:, B:];   std = exp(logvar / 2)
    b   = mu + eps * std                (b = mu when not sampling; eps = noise(seed, stream, e))
    kl  = -0.5 * s * sum_r w_r * sum_j (1 + logvar - mu^2 - std^2)[r, j]
          s = mean_scale(N*B, B, weighted): 1/(N*B) with every w_r = 1 (no mask), 1/B with row
          weights (a masked mean: 1/count on the rows kept, 0 on the others: a row of weight 0
          adds nothing, whatever its values)
    backward, g = d loss / d kl,  c_r = -0.5 * g * s * w_r:
      grad_mu     = grad_b - 2 * c_r * mu
      grad_logvar = 0.5 * grad_b * eps * std + c_r * (1 - std^2)
      grad_eps    = grad_b * std

Both backends compute these lines as written (the Triton kernels in ``reparam_kl_triton.py``).
The KL comes out as *partials* whose sum is the KL (one per Triton program; one for the torch
backend), so the IB combination reduces every level in one place without a host sync. They are
float32 (float64 for a float64 input on the torch backend). Nothing but ``h`` (and an injected
``eps``, and the row weights) is saved: the backward regenerates the noise. The mean over no row
(an empty batch without a mask) is NaN, as torch's.

Every entry point takes the arguments in one order, ``(h, seed, stream, eps, sample, row_weight)``
(backward: the incoming gradients ``grad_b, grad_partials`` first, ``need_grad_eps`` last):
``reparam_kl_partials(...) -> (b, partials)`` and ``reparam_kl(...) -> (b, kl)`` (which check the
operands, once, and dispatch), :class:`ReparamKL`, :func:`reparam_kl_torch` /
:func:`reparam_kl_backward_torch`, and the launchers ``reparam_kl_forward`` /
``reparam_kl_backward`` of ``reparam_kl_triton.py``.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import check_backend, check_row_weight, mean_scale, tracked, widened
from .rng import normal


def _mu_logvar_std(h: torch.Tensor):
    width = h.shape[-1] // 2
    hf = widened(h)
    mu, logvar = hf[..., :width], hf[..., width:]
    return mu, logvar, torch.exp(logvar * 0.5)


def _noise(seed: int, stream: int, eps: Optional[torch.Tensor], mu: torch.Tensor) -> torch.Tensor:
    """The eps of the formula, in ``mu``'s dtype: injected, or drawn from ``(seed, stream)``."""
    if eps is not None:
        return widened(eps, mu.dtype)
    return widened(normal(seed, stream, mu.shape, mu.device), mu.dtype)


def _scale(mu: torch.Tensor, row_weight: Optional[torch.Tensor]) -> float:
    """``s`` of the formula."""
    return mean_scale(mu.numel(), mu.shape[-1], row_weight is not None)


def reparam_kl_torch(h: torch.Tensor, seed: int, stream: int, eps: Optional[torch.Tensor], sample: bool,
                     row_weight: Optional[torch.Tensor] = None):
    """The plain-PyTorch forward: ``(b, kl)`` with ``kl`` a 0-dim tensor (float32; float64 for float64 ``h``)."""
    mu, logvar, std = _mu_logvar_std(h)
    term = torch.addcmul(logvar, mu, mu, value=-1.0).addcmul_(std, std, value=-1.0)  # logvar - mu^2 - std^2
    s = _scale(mu, row_weight)
    if row_weight is None:  # s * sum(1 + term) = s * sum(term) + 1, as s = 1 / numel
        kl = term.sum().mul_(s).add_(1.0).mul_(-0.5)
    else:
        per_row = term.sum(-1).mul_(s).add_(1.0)  # s * sum_j (1 + term), s = 1 / B
        kl = torch.where(row_weight != 0, per_row, 0.0).dot(widened(row_weight, mu.dtype)).mul_(-0.5)
    if sample:
        b = torch.addcmul(mu, _noise(seed, stream, eps, mu), std)
    else:
        b = mu.clone()
    return b.to(h.dtype), kl


def _kl_coefficient(grad_kl: torch.Tensor, mu: torch.Tensor, row_weight: Optional[torch.Tensor]):
    """``c_r = -0.5 * g * s * w_r``: a 0-dim tensor without row weights, else a column."""
    c = grad_kl.to(mu.dtype).sum() * (-0.5 * _scale(mu, row_weight))
    if row_weight is None:
        return c
    return (widened(row_weight, mu.dtype) * c).unsqueeze(-1)


def reparam_kl_backward_torch(grad_b: Optional[torch.Tensor], grad_partials: Optional[torch.Tensor], h: torch.Tensor,
                              seed: int, stream: int, eps: Optional[torch.Tensor], sample: bool,
                              row_weight: Optional[torch.Tensor], need_grad_eps: bool):
    """``(grad_h, grad_eps)`` by the formulas above (``grad_b`` / ``grad_partials`` None mean zero)."""
    width = h.shape[-1] // 2
    mu, logvar, std = _mu_logvar_std(h)
    grad_h = torch.zeros(h.shape, dtype=mu.dtype, device=h.device)
    grad_mu, grad_logvar = grad_h[..., :width], grad_h[..., width:]
    if grad_partials is not None:  # else no KL term at all (0 * an infinite mu would be NaN)
        c = _kl_coefficient(grad_partials, mu, row_weight)
        torch.mul(mu, c * -2.0, out=grad_mu)
        torch.mul(std, std, out=grad_logvar)
        grad_logvar.sub_(1.0).mul_(-c)  # c * (1 - std^2)
    grad_eps = None
    if grad_b is not None:
        gb = widened(grad_b, mu.dtype)
        grad_mu.add_(gb)
        if sample:
            noise = _noise(seed, stream, eps, mu)
            if need_grad_eps:
                grad_eps = (gb * std).to(eps.dtype)
            grad_logvar.addcmul_(noise.mul_(std) if eps is None else noise * std, gb, value=0.5)
    return grad_h.to(h.dtype), grad_eps


class ReparamKL(torch.autograd.Function):
    """``(h, seed, stream, eps, sample, row_weight, backend) -> (b, partials)``; saves ``h`` (and an
    injected ``eps``, and the row weights), never a drawn ``eps``."""

    @staticmethod
    def forward(ctx, h, seed, stream: int, eps, sample: bool, row_weight, backend: str):
        ctx.stream, ctx.sample, ctx.backend = stream, sample, backend
        ctx.set_materialize_grads(False)
        if backend == "triton":
            from .reparam_kl_triton import reparam_kl_forward

            ctx.save_for_backward(h, seed, eps, row_weight)
            if torch.compiler.is_compiling():  # the registered op: the kernel stays in the traced graph
                return torch.ops.ithp_fast.reparam_kl_forward(h, seed, stream, eps, sample, row_weight)
            return reparam_kl_forward(h, seed, stream, eps, sample, row_weight)
        ctx.seed = seed
        ctx.save_for_backward(h, eps, row_weight)
        b, kl = reparam_kl_torch(h, seed, stream, eps, sample, row_weight)
        return b, kl.reshape(1)

    @staticmethod
    def backward(ctx, grad_b, grad_partials):
        if grad_b is None and grad_partials is None:
            return (None,) * 7
        need_grad_eps = ctx.needs_input_grad[3]
        if ctx.backend == "triton":
            from .reparam_kl_triton import reparam_kl_backward

            h, seed, eps, row_weight = ctx.saved_tensors
            args = (grad_b, grad_partials, h, seed, ctx.stream, eps, ctx.sample, row_weight, need_grad_eps)
            if torch.compiler.is_compiling():
                grad_h, grad_eps = torch.ops.ithp_fast.reparam_kl_backward(*args)
                grad_eps = grad_eps if grad_eps.numel() else None
            else:
                grad_h, grad_eps = reparam_kl_backward(*args)
        else:
            h, eps, row_weight = ctx.saved_tensors
            grad_h, grad_eps = reparam_kl_backward_torch(grad_b, grad_partials, h, ctx.seed, ctx.stream, eps,
                                                         ctx.sample, row_weight, need_grad_eps)
        return grad_h, None, None, grad_eps, None, None, None


def _checked(h: torch.Tensor, eps: Optional[torch.Tensor], row_weight: Optional[torch.Tensor]) -> None:
    """The operands of every entry point, checked once here."""
    if h.dim() != 2 or h.shape[-1] % 2:
        raise ValueError(f"h: expected [N, 2*B] (mu | logvar), got shape {tuple(h.shape)}")
    n, width = h.shape[0], h.shape[1] // 2
    if eps is not None:
        if tuple(eps.shape) != (n, width):
            raise ValueError(f"eps: expected shape {(n, width)} (the shape of mu), got {tuple(eps.shape)}")
        if eps.device != h.device:
            raise ValueError(f"eps: is on {eps.device} but h is on {h.device}")
    check_row_weight(row_weight, n, h.device, "h")


def reparam_kl_partials(h: torch.Tensor, seed, stream: int, *, eps: Optional[torch.Tensor] = None,
                        sample: bool = True, row_weight: Optional[torch.Tensor] = None, backend: str = "torch"):
    """Differentiable ``(b, partials)`` for ``h`` ``[N, 2*B]``: ``b`` ``[N, B]`` like ``mu``; the KL
    is ``partials.sum()``.

    ``seed``: the backend's (:func:`ithp_fast.kernels.rng.draw_seed` for Triton,
    :func:`~ithp_fast.kernels.rng.new_seed` for torch); ``eps`` (``[N, B]``) injects the noise.
    ``row_weight`` (``[N]``, e.g. :func:`ithp_fast.kernels.mean_weights` of a row mask): the KL's
    mean over rows becomes ``sum_r w_r * kl_r`` (rows of weight 0 left out).
    """
    check_backend(backend)
    _checked(h, eps, row_weight)
    sample = bool(sample)
    if backend == "torch" and not tracked(h, eps):
        b, kl = reparam_kl_torch(h, seed, stream, eps, sample, row_weight)
        return b, kl.reshape(1)
    return ReparamKL.apply(h, seed, stream, eps, sample, row_weight, backend)


def reparam_kl(h: torch.Tensor, seed, stream: int, *, eps: Optional[torch.Tensor] = None, sample: bool = True,
               row_weight: Optional[torch.Tensor] = None, backend: str = "torch"):
    """Differentiable ``(b, kl)`` with ``kl`` a 0-dim tensor (mean over features, then rows); as
    :func:`reparam_kl_partials`."""
    b, parts = reparam_kl_partials(h, seed, stream, eps=eps, sample=sample, row_weight=row_weight, backend=backend)
    return b, parts.sum()
