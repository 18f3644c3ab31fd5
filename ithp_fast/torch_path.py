"""The ``torch`` backend: the fused ops of ``kernels/`` as plain PyTorch (the CPU default).

Same contract as the Triton ops (noise from ``(seed, stream)``, regenerated rather than stored,
float32 reductions), written as custom autograd Functions that save less than autograd would and
work in place where a buffer is their own:

* ``relu_dropout`` saves only its output (the next Linear saves it anyway);
* ``reparam_kl`` saves ``h`` and regenerates ``eps`` in the backward;
* ``detector_loss`` is the last op of its level, so its gradient is known up to the incoming
  scalar: the forward keeps ``dMSE/dz`` (and ``dMSE/dt`` when the target needs a gradient) and the
  backward scales it -- no sigmoid, mask or target is kept.

The seed is a Python int drawn from torch's CPU generator (:func:`new_seed`), so nothing here
reads a device tensor back to the host, on any device.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from .kernels.rng import torch_generator
from .reference.ithp import combine_ib


def new_seed() -> int:
    """The forward's seed, drawn from torch's (CPU) generator: ``torch.manual_seed`` reproduces it."""
    return int(torch.randint(0, 2**62, (), dtype=torch.int64))


def _float32(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype == torch.float32 else t.float()


def dropout_scale(seed: int, stream: int, shape, device, p: float) -> torch.Tensor:
    """The dropout multiplier for ``(seed, stream)``: ``1/(1-p)`` where kept, 0 where dropped (float32).

    One uniform 32-bit word per element (random 64-bit words split in two: the fastest draw on a
    CPU), read as a signed int ``w``; the element is kept when ``float(w) >= float(ceil(p * 2^32) - 2^31)``
    (probability ``1 - p`` up to float rounding at the threshold).
    """
    numel = 1
    for n in shape:
        numel *= n
    words = torch.empty((numel + 1) // 2, dtype=torch.int64, device=device)
    words.random_(-(2**63), None, generator=torch_generator(seed, stream, device))
    threshold = float(math.ceil(p * 2**32) - 2**31)
    scale = words.view(torch.int32)[:numel].view(shape).to(torch.float32)
    return scale.ge_(threshold).mul_(1.0 / (1.0 - p))


def normal(seed: int, stream: int, shape, device) -> torch.Tensor:
    """The torch backend's N(0, 1) draws for ``(seed, stream)`` (float32, ``shape``)."""
    return torch.empty(shape, dtype=torch.float32, device=device).normal_(generator=torch_generator(seed, stream, device))


def _tracked(*tensors) -> bool:
    """Whether autograd records an op on ``tensors`` (else the ops run as plain functions)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _relu_dropout_values(a, seed: int, stream: int, p: float, inplace: bool) -> torch.Tensor:
    d = a.clamp_min_(0.0) if inplace else torch.relu(a)
    if p > 0.0:
        d.mul_(dropout_scale(seed, stream, a.shape, a.device, p))
    return d


class _ReluDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, seed: int, stream: int, p: float, inplace: bool):
        if inplace:
            ctx.mark_dirty(a)
        d = _relu_dropout_values(a, seed, stream, p, inplace)
        ctx.p = p
        ctx.save_for_backward(d)
        return d

    @staticmethod
    def backward(ctx, grad_d):
        (d,) = ctx.saved_tensors
        grad_a = torch.ops.aten.threshold_backward(grad_d, d, 0)
        return grad_a.mul_(1.0 / (1.0 - ctx.p)), None, None, None, None


def relu_dropout(a: torch.Tensor, seed: int, stream: int, p: float, *, inplace: bool = False) -> torch.Tensor:
    """``dropout(relu(a), p)``, mask from ``(seed, stream)``; the backward reads only the output.

    ``inplace=True`` overwrites ``a`` (the model passes its own Linear output, which nothing else
    keeps: no new buffer).
    """
    p = float(p)
    if p == 0.0 or not _tracked(a):
        if p == 0.0:  # a plain ReLU: autograd's own (it saves only the output too)
            return torch.relu_(a) if inplace else torch.relu(a)
        return _relu_dropout_values(a, seed, stream, p, inplace)
    return _ReluDropout.apply(a, seed, stream, p, bool(inplace))


def _reparam_kl_values(h, eps, seed: int, stream: int, sample: bool):
    width = h.shape[-1] // 2
    hf = _float32(h)
    mu, logvar = hf[..., :width], hf[..., width:]
    std = torch.exp(logvar * 0.5)
    # kl = -0.5 * mean(1 + logvar - mu^2 - std^2)
    term = torch.addcmul(logvar, mu, mu, value=-1.0).addcmul_(std, std, value=-1.0)
    kl = term.sum().div_(mu.numel()).add_(1.0).mul_(-0.5)
    if sample:
        noise = _float32(eps) if eps is not None else normal(seed, stream, mu.shape, h.device)
        b = torch.addcmul(mu, noise, std)
    else:
        b = mu.clone()
    return b.to(h.dtype), kl


class _ReparamKL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, eps, seed: int, stream: int, sample: bool):
        ctx.stream, ctx.sample, ctx.seed = stream, sample, seed
        ctx.save_for_backward(h, eps)
        return _reparam_kl_values(h, eps, seed, stream, sample)

    @staticmethod
    def backward(ctx, grad_b, grad_kl):
        h, eps = ctx.saved_tensors
        width = h.shape[-1] // 2
        hf = _float32(h)
        mu, logvar = hf[..., :width], hf[..., width:]
        std = torch.exp(logvar * 0.5)
        g = grad_kl.float() * (1.0 / mu.numel())
        grad_h = torch.empty_like(hf)
        grad_mu, grad_logvar = grad_h[..., :width], grad_h[..., width:]
        # grad_mu = grad_b + g*mu;  grad_logvar = 0.5*(grad_b*eps*std + g*(std^2 - 1));  grad_eps = grad_b*std
        torch.mul(mu, g, out=grad_mu)
        torch.mul(std, std, out=grad_logvar)
        grad_logvar.sub_(1.0).mul_(g)
        grad_eps = None
        if grad_b is not None:
            gb = _float32(grad_b)
            grad_mu.add_(gb)
            if ctx.sample:
                noise = _float32(eps) if eps is not None else normal(ctx.seed, ctx.stream, mu.shape, h.device)
                if ctx.needs_input_grad[1]:
                    grad_eps = (gb * std).to(eps.dtype)
                grad_logvar.addcmul_(noise.mul_(std) if eps is None else noise * std, gb)
        grad_logvar.mul_(0.5)
        return grad_h.to(h.dtype), grad_eps, None, None, None


def reparam_kl(h: torch.Tensor, seed: int, stream: int, *, eps: Optional[torch.Tensor] = None, sample: bool = True):
    """``(b, kl)`` from ``h = [mu | logvar]``; ``kl`` float32 0-dim. ``eps`` injects the noise."""
    if not _tracked(h, eps):
        return _reparam_kl_values(h, eps, seed, stream, bool(sample))
    return _ReparamKL.apply(h, eps, seed, stream, bool(sample))


def _detector_loss_values(z, t, seed: int, stream: int, p: float, grad_z: bool, grad_t: bool):
    """``(mse, dmse/dz or None, dmse/dt or None)``."""
    s = torch.sigmoid(_float32(z))
    if p > 0.0:
        keep = dropout_scale(seed, stream, z.shape, z.device, p)
        residual = torch.mul(s, keep).sub_(_float32(t))
    else:
        keep = None
        residual = torch.sub(s, _float32(t))
    flat = residual.view(-1)
    numel = flat.numel()
    mse = torch.dot(flat, flat) / numel
    two = 2.0 / numel
    d_t = residual * -two if grad_t else None
    d_z = None
    if grad_z:  # 2/numel * residual * keep * s * (1 - s)
        d_z = torch.addcmul(s, s, s, value=-1.0).mul_(residual).mul_(two)
        if keep is not None:
            d_z.mul_(keep)
    return mse, d_z, d_t


class _DetectorLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, t, seed: int, stream: int, p: float):
        mse, grad_z, grad_t = _detector_loss_values(z, t, seed, stream, p, ctx.needs_input_grad[0],
                                                    ctx.needs_input_grad[1])
        ctx.save_for_backward(grad_z, grad_t)
        ctx.dtypes = (z.dtype, t.dtype)
        return mse

    @staticmethod
    def backward(ctx, grad_mse):
        grad_z, grad_t = ctx.saved_tensors
        g = grad_mse.float()
        return ((grad_z * g).to(ctx.dtypes[0]) if grad_z is not None else None,
                (grad_t * g).to(ctx.dtypes[1]) if grad_t is not None else None, None, None, None)


def detector_loss(z: torch.Tensor, t: torch.Tensor, seed: int, stream: int, p: float) -> torch.Tensor:
    """``mean((dropout(sigmoid(z), p) - t)^2)`` as float32 0-dim; mask from ``(seed, stream)``.

    The forward keeps ``dMSE/dz`` (and ``dMSE/dt`` if the target needs a gradient) instead of
    the sigmoid, the mask and the target: the backward only scales it.
    """
    z, t = z.contiguous(), t.contiguous()
    if not _tracked(z, t):
        return _detector_loss_values(z, t, seed, stream, float(p), False, False)[0]
    return _DetectorLoss.apply(z, t, seed, stream, float(p))


def combine(kl0, mse0, kl1, mse1, cfg, dtype: torch.dtype):
    """``(IB_total, kl0, mse0, kl1, mse1)`` in ``dtype`` through :func:`combine_ib`."""
    kl0, mse0, kl1, mse1 = (v.to(dtype) for v in (kl0, mse0, kl1, mse1))
    return (combine_ib(kl0, mse0, kl1, mse1, cfg.p_beta, cfg.p_gamma, cfg.p_lambda), kl0, mse0, kl1, mse1)
