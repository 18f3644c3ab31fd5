"""Reparameterisation + KL of one IB level, from the encoder output ``h = [mu | logvar]``.

    mu, logvar = h[:, :B], h[:, B:];   std = exp(logvar / 2)
    b   = mu + eps * std                (b = mu when not sampling; eps = noise(seed, stream, e))
    kl  = -0.5 / (N*B) * sum(1 + logvar - mu^2 - std^2)
    backward, g = d loss / d kl:
      grad_mu = grad_b + g * mu / (N*B)
      grad_logvar = 0.5 * grad_b * eps * std + 0.5 * g * (std^2 - 1) / (N*B)
      grad_eps = grad_b * std

The KL comes out as float32 *partials* whose sum is the KL (one per Triton program; one for the
torch backend), so the IB combination reduces every level in one place without a host sync.
Nothing but ``h`` (and an injected ``eps``) is saved: the backward regenerates the noise.

``reparam_kl_partials(h, seed, stream, *, eps=None, sample=True, backend) -> (b, partials)``;
``reparam_kl(...) -> (b, kl)`` sums them. Kernels: ``reparam_kl_triton.py``.
"""

from __future__ import annotations

from typing import Optional

import torch

from . import check_backend, float32, tracked
from .rng import normal


def _mu_logvar_std(h: torch.Tensor):
    width = h.shape[-1] // 2
    hf = float32(h)
    mu, logvar = hf[..., :width], hf[..., width:]
    return mu, logvar, torch.exp(logvar * 0.5)


def reparam_kl_torch(h: torch.Tensor, eps: Optional[torch.Tensor], seed: int, stream: int, sample: bool):
    """The plain-PyTorch forward: ``(b, kl)`` with ``kl`` a float32 0-dim tensor."""
    mu, logvar, std = _mu_logvar_std(h)
    term = torch.addcmul(logvar, mu, mu, value=-1.0).addcmul_(std, std, value=-1.0)  # logvar - mu^2 - std^2
    kl = term.sum().div_(mu.numel()).add_(1.0).mul_(-0.5)
    if sample:
        noise = float32(eps) if eps is not None else normal(seed, stream, mu.shape, h.device)
        b = torch.addcmul(mu, noise, std)
    else:
        b = mu.clone()
    return b.to(h.dtype), kl


def _reparam_kl_backward_torch(h, eps, seed: int, stream: int, sample: bool, grad_b, grad_kl, need_grad_eps: bool):
    """``(grad_h, grad_eps)`` by the formulas above (``grad_b`` / ``grad_kl`` None mean zero)."""
    width = h.shape[-1] // 2
    mu, logvar, std = _mu_logvar_std(h)
    g = (grad_kl.float().sum() if grad_kl is not None else torch.zeros((), device=h.device)) * (1.0 / mu.numel())
    grad_h = torch.empty(h.shape, dtype=torch.float32, device=h.device)
    grad_mu, grad_logvar = grad_h[..., :width], grad_h[..., width:]
    torch.mul(mu, g, out=grad_mu)
    torch.mul(std, std, out=grad_logvar)
    grad_logvar.sub_(1.0).mul_(g)
    grad_eps = None
    if grad_b is not None:
        gb = float32(grad_b)
        grad_mu.add_(gb)
        if sample:
            noise = float32(eps) if eps is not None else normal(seed, stream, mu.shape, h.device)
            if need_grad_eps:
                grad_eps = (gb * std).to(eps.dtype)
            grad_logvar.addcmul_(noise.mul_(std) if eps is None else noise * std, gb)
    grad_logvar.mul_(0.5)
    return grad_h.to(h.dtype), grad_eps


class ReparamKL(torch.autograd.Function):
    """``(h, eps, seed) -> (b, partials)``; saves ``h`` (and an injected ``eps``), never a drawn ``eps``."""

    @staticmethod
    def forward(ctx, h, eps, seed, stream: int, sample: bool, backend: str):
        ctx.stream, ctx.sample, ctx.backend = stream, sample, backend
        ctx.set_materialize_grads(False)
        if backend == "triton":
            from .reparam_kl_triton import reparam_kl_forward

            ctx.save_for_backward(h, eps, seed)
            return reparam_kl_forward(h, seed, stream, eps=eps, sample=sample)
        ctx.seed = seed
        ctx.save_for_backward(h, eps)
        b, kl = reparam_kl_torch(h, eps, seed, stream, sample)
        return b, kl.reshape(1)

    @staticmethod
    def backward(ctx, grad_b, grad_parts):
        need_grad_eps = ctx.needs_input_grad[1]
        if ctx.backend == "triton":
            from .reparam_kl_triton import reparam_kl_backward

            h, eps, seed = ctx.saved_tensors
            grad_h, grad_eps = reparam_kl_backward(h, grad_b, grad_parts, seed, ctx.stream, eps=eps,
                                                   sample=ctx.sample, need_grad_eps=need_grad_eps)
        else:
            h, eps = ctx.saved_tensors
            grad_h, grad_eps = _reparam_kl_backward_torch(h, eps, ctx.seed, ctx.stream, ctx.sample, grad_b, grad_parts,
                                                          need_grad_eps)
        return grad_h, grad_eps, None, None, None, None


def reparam_kl_partials(h: torch.Tensor, seed, stream: int, *, eps: Optional[torch.Tensor] = None,
                        sample: bool = True, backend: str = "torch"):
    """Differentiable ``(b, partials)``: ``b`` like ``mu``; the KL is ``partials.sum()`` (float32)."""
    check_backend(backend)
    if backend == "torch" and not tracked(h, eps):
        b, kl = reparam_kl_torch(h, eps, seed, stream, bool(sample))
        return b, kl.reshape(1)
    return ReparamKL.apply(h, eps, seed, stream, bool(sample), backend)


def reparam_kl(h: torch.Tensor, seed, stream: int, *, eps: Optional[torch.Tensor] = None, sample: bool = True,
               backend: str = "torch"):
    """Differentiable ``(b, kl)`` with ``kl`` a float32 0-dim tensor (mean over features, then rows)."""
    b, parts = reparam_kl_partials(h, seed, stream, eps=eps, sample=sample, backend=backend)
    return b, parts.sum()
