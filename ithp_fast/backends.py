"""Which implementation computes the fast path: chosen per device, overridable.

``"triton"``    fused Triton kernels (CUDA; on the CPU only under ``TRITON_INTERPRET=1``, for tests)
``"torch"``     fused pure-PyTorch path (the CPU default)
``"reference"`` the reference module's own computation

Order of precedence: the ``backend=`` argument, then the ``ITHP_FAST_BACKEND`` environment
variable, then the device default (CUDA -> triton, anything else -> torch).
"""

from __future__ import annotations

import os
from typing import Optional, Union

import torch

BACKENDS = ("triton", "torch", "reference")
ENV_VAR = "ITHP_FAST_BACKEND"


def triton_interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def validate_backend(name: Optional[str], source: str = "backend") -> Optional[str]:
    """Check a backend name (None means "choose per device")."""
    if name is None or name == "" or name == "auto":
        return None
    if name not in BACKENDS:
        raise ValueError(f"{source}: unknown backend {name!r}; expected one of {BACKENDS} (or 'auto')")
    return name


def resolve_backend(requested: Optional[str], device: Union[torch.device, str]) -> str:
    """The backend to run on ``device``; a clear error when it cannot run there."""
    device = torch.device(device)
    name = validate_backend(requested, "backend")
    if name is None:
        name = validate_backend(os.environ.get(ENV_VAR), f"environment variable {ENV_VAR}")
    if name is None:
        return "triton" if device.type == "cuda" else "torch"
    if name == "triton" and device.type != "cuda" and not triton_interpreter_on():
        raise RuntimeError(
            f"backend 'triton' cannot run on {device.type}: the Triton kernels need a CUDA device "
            f"(or TRITON_INTERPRET=1, Triton's interpreter, for testing); use backend='torch'"
        )
    return name


class FusedOps:
    """The elementwise tails of one backend, behind one interface (what ``ITHP.forward`` calls).

    ``new_seed(device)`` the forward's seed; ``relu_dropout(a, seed, stream, p)`` (may overwrite
    ``a``: the model hands it its own Linear output);
    ``reparam_kl(h, eps, seed, stream, sample) -> (b, kl_term)``;
    ``detector_loss(z, t, seed, stream, p) -> mse_term``;
    ``combine(kl0, mse0, kl1, mse1, cfg, dtype) -> (IB_total, kl0, mse0, kl1, mse1)``.
    The ``*_term`` values are whatever ``combine`` of the same backend takes (float32 partial sums
    for Triton, float32 scalars for torch).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        if name == "triton":
            from .kernels import ib_combine, rng
            from .kernels.detector_loss import detector_loss_partials
            from .kernels.relu_dropout import relu_dropout
            from .kernels.reparam_kl import reparam_kl_partials

            self.new_seed = rng.draw_seed
            self.relu_dropout = relu_dropout
            self.reparam_kl = lambda h, eps, seed, stream, sample: reparam_kl_partials(
                h, seed, stream, eps=eps, sample=sample
            )
            self.detector_loss = detector_loss_partials
            self.combine = lambda kl0, mse0, kl1, mse1, cfg, dtype: ib_combine.ib_combine(
                kl0, mse0, kl1, mse1, ib_combine.combine_weights(cfg.p_beta, cfg.p_gamma, cfg.p_lambda), dtype
            )
        elif name == "torch":
            from . import torch_path

            self.new_seed = lambda device: torch_path.new_seed()
            self.relu_dropout = lambda a, seed, stream, p: torch_path.relu_dropout(a, seed, stream, p, inplace=True)
            self.reparam_kl = lambda h, eps, seed, stream, sample: torch_path.reparam_kl(
                h, seed, stream, eps=eps, sample=sample
            )
            self.detector_loss = torch_path.detector_loss
            self.combine = torch_path.combine
        else:
            raise ValueError(f"backend: {name!r} has no fused ops; expected 'triton' or 'torch'")


_OPS: dict = {}


def fused_ops(name: str) -> FusedOps:
    """The (cached) :class:`FusedOps` of backend ``name`` ('triton' or 'torch')."""
    if name not in _OPS:
        _OPS[name] = FusedOps(name)
    return _OPS[name]
