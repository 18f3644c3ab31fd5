"""Fast ``encode``: the last level's ``b`` from the text features alone, by the cheapest path for the call.

Two paths, both computing only what ``b`` needs (the mu rows of each encoder's last Linear,
unless sampling needs the logvar rows too; no detectors, no losses):

``fused``  one Triton launch for the whole two-level chain (:mod:`ithp_fast.kernels.encode_chain`,
           Triton imported at the first launch). Used on the ``"triton"`` backend for inference
           calls (no gradient wanted, no active dropout, no autocast) of a two-level model up to
           :data:`FUSED_KERNEL_MAX_ROWS` rows.
``chain``  two ``addmm`` calls per level (cuBLAS on CUDA, then an in-place ReLU; MKL / oneDNN on the
           CPU), the mu halves as views of the weights. Every other call: the CPU default, large
           batches on CUDA, models of other than two levels, and anything that needs autograd,
           dropout (training mode) or autocast.

Nothing derived from the weights is cached, so ``load_state_dict`` and optimiser steps are seen
by the next call. In training mode dropout is active, as in the module's own ``encode``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

import torch

from .backends import resolve_backend
from .checks import Noise, check_encode_inputs
from .kernels.encode_chain import PRECISIONS, encode_chain
from .reference.ithp import ITHP as ReferenceITHP
from .reference.ithp import reparameterize

FUSED_KERNEL_MAX_ROWS = {"ieee": 64, "tf32": 8192, "tf32x3": 8192, "bf16": 0}
"""Row counts (tokens) up to which CUDA uses the fused kernel; above, the cuBLAS chain.
Keyed by matmul precision: float32 exact (``"ieee"``), TF32, 3xTF32, and 16-bit inputs.
Set from ``scripts/encode_probe.py`` on an H100 (GPU time under graph replay,
bench/results/encode-probe-nvidia-h100-2026-11-26.jsonl): exact float32, the fused kernel
wins only at 50 rows (57 vs 62 us), the cuBLAS chain from 100 rows on; TF32 the fused
kernel wins up to 6400 rows (42 vs 127 us); bfloat16 the chain wins (12 vs 19 us at 50 rows).
``"tf32x3"`` follows TF32 until measured."""

FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
"""Input dtypes the fused kernel takes (float64 and others go through the chain)."""


def float32_precision(precision: Optional[str] = None) -> str:
    """The float32 matmul precision to use: ``precision`` if given, else torch's own setting
    (``torch.set_float32_matmul_precision("high")`` or ``allow_tf32`` mean TF32)."""
    if precision is None:
        return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS} or None (follow torch's setting), got {precision!r}")
    return precision


def _precision_key(dtype: torch.dtype, precision: str) -> str:
    return precision if dtype == torch.float32 else "bf16"


def layers(model: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    """``(w0, c0, w1, c1, w2, c2, w3, c3)``: the two encoders' Linear weights and biases, as stored
    (the fused kernel's arguments; two-level models only)."""
    return tuple(t for encoder in (model.encoder1, model.encoder2) for layer in (encoder.first, encoder.last)
                 for t in (layer.weight, layer.bias))


def choose_path(model: torch.nn.Module, rows: int, dtype: torch.dtype, device: torch.device,
                precision: Optional[str] = None, *, requires_grad: bool = False) -> str:
    """``"fused"``, ``"chain"`` or ``"reference"``: the path :func:`encode` takes for such a call."""
    backend = resolve_backend(getattr(model, "backend", None), device)
    if backend != "triton":
        return "reference" if backend == "reference" else "chain"
    if model.config.levels != 2:  # the fused kernel computes the released two-level chain
        return "chain"
    dropout_active = model.training and model.config.drop_prob > 0
    if dropout_active or requires_grad or torch.is_autocast_enabled(device.type) or dtype not in FUSED_DTYPES:
        return "chain"
    limit = FUSED_KERNEL_MAX_ROWS[_precision_key(dtype, float32_precision(precision))]
    return "fused" if rows <= limit else "chain"



def _needs_grad(model: torch.nn.Module, x: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in encoder_parameters(model)))


def encoder_parameters(model: torch.nn.Module) -> list[torch.Tensor]:
    """Every encoder's parameters, level by level."""
    return [p for k in range(model.config.levels) for p in model.level_modules(k).encoder.parameters()]


def linear_relu(layer: torch.nn.Linear, b: torch.Tensor) -> torch.Tensor:
    """``relu(b @ W.T + c)`` for 2-D ``b``, NaN passing the ReLU as in PyTorch's ``relu``.

    Not cuBLASLt's ReLU epilogue (``torch._addmm_activation``): whether it keeps NaN is not
    documented, and a NaN turned into 0 would be a finite answer to a non-finite input.
    """
    return torch.addmm(layer.bias, b, layer.weight.t()).relu_()


def chain(model: torch.nn.Module, x2d: torch.Tensor, noise: Optional[Sequence[torch.Tensor]] = None, *,
          sample: bool = False) -> torch.Tensor:
    """The PyTorch path on ``[rows, X0]``: ``addmm`` per layer, the modules' dropout in between;
    ``noise``: one ``[rows, width]`` eps per level (sampling only)."""
    b = x2d
    for k in range(model.config.levels):
        encoder = model.level_modules(k).encoder
        h = encoder.dropout(linear_relu(encoder.first, b))
        if sample:
            eps = noise[k] if noise is not None else None
            mu, logvar = torch.addmm(encoder.last.bias, h, encoder.last.weight.t()).chunk(2, dim=-1)
            b = reparameterize(mu, logvar, torch.randn_like(mu) if eps is None else eps)
        else:
            weight, bias = encoder.mean_layer()
            b = torch.addmm(bias, h, weight.t())
    return b


def fused(model: torch.nn.Module, x2d: torch.Tensor, noise: Optional[Sequence[torch.Tensor]] = None, *,
          sample: bool = False, precision: Optional[str] = None) -> torch.Tensor:
    """The one-launch Triton path on ``[rows, X0]`` (inference only; two-level models); ``noise`` as
    for :func:`chain`. Sampling without injected noise draws it with ``torch.randn`` (one launch,
    fresh on every CUDA-graph replay)."""
    cfg = model.config
    eps0 = eps1 = None
    if sample and noise is None:
        drawn = torch.randn(x2d.shape[0], cfg.B0_dim + cfg.B1_dim, dtype=x2d.dtype, device=x2d.device)
        eps0, eps1 = drawn[:, : cfg.B0_dim], drawn[:, cfg.B0_dim :]
    elif sample:
        eps0, eps1 = (e.to(x2d.dtype).contiguous() for e in noise)
    return encode_chain(x2d, *layers(model), eps0=eps0, eps1=eps1, precision=float32_precision(precision))


def encode(model: torch.nn.Module, x: torch.Tensor, *, sample: bool = False, noise: Noise = None,
           precision: Optional[str] = None) -> torch.Tensor:
    """The last level's ``b`` (``[..., bottleneck_dims[-1]]``, ``b1`` of the released model) of the
    text features ``x`` (``[..., X0_dim]``); see [`ithp_fast.reference.ITHP.encode`][] for
    ``sample`` and ``noise`` (one eps per level).

    ``precision`` (float32 on the Triton path only): ``"ieee"`` exact float32, ``"tf32"``,
    ``"tf32x3"`` (three TF32 tensor-core products per float32 product: near-float32 accuracy), or
    None to follow ``torch.backends.cuda.matmul.allow_tf32``. bfloat16 comes from the model's dtype
    (``model.to(torch.bfloat16)``) or autocast.
    """
    noise = check_encode_inputs(model.config, x, noise, next(model.parameters(), None))
    float32_precision(precision)  # validates the argument whatever the path
    if noise is not None and not sample:
        raise ValueError("noise: given, but sample=False computes the posterior mean and uses no noise")
    lead = tuple(x.shape[:-1])
    rows = math.prod(lead)
    path = choose_path(model, rows, x.dtype, x.device, precision, requires_grad=_needs_grad(model, x))
    if path == "reference":
        return ReferenceITHP.encode(model, x, sample=sample, noise=noise)
    cfg = model.config
    x2d = x.reshape(rows, cfg.X0_dim)
    eps = None if noise is None else [n.reshape(rows, w) for n, w in zip(noise, cfg.bottleneck_dims)]
    if path == "fused":
        b = fused(model, x2d, eps, sample=sample, precision=precision)
    else:
        b = chain(model, x2d, eps, sample=sample)
    return b.reshape(*lead, cfg.bottleneck_dims[-1])
