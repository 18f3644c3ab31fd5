"""Which backend computes ITHP and TCMax: chosen per device, overridable.

``"triton"``    fused Triton kernels (CUDA; on the CPU only under ``TRITON_INTERPRET=1``, for tests)
``"torch"``     fused pure-PyTorch autograd Functions (the CPU default)
``"reference"`` the plain-PyTorch spec (:mod:`ithp_fast.reference`)
``"auto"``      (or None) the device default

Order of precedence: the ``backend=`` argument, then the ``ITHP_FAST_BACKEND`` environment
variable, then the device default (CUDA with Triton installed -> triton, anything else -> torch).
The names are :data:`ithp_fast.checks.BACKENDS`, checked by :func:`ithp_fast.checks.check_choice`.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Optional, Union

import torch

from .checks import AUTO, BACKEND_CHOICES, FUSED_BACKENDS, check_choice
from .kernels import rng, triton_interpreter_on
from .kernels.detector_loss import detector_loss_partials
from .kernels.ib_combine import ib_combine
from .kernels.relu_dropout import relu_dropout
from .kernels.reparam_kl import reparam_kl_partials

ENV_VAR = "ITHP_FAST_BACKEND"


@functools.lru_cache(maxsize=None)
def triton_installed() -> bool:
    """Whether the ``triton`` package can be found (without importing it)."""
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):
        return False


def validate_backend(name: Optional[str], source: str = "backend") -> Optional[str]:
    """A backend name, checked; None for None, ``""`` or ``"auto"`` (choose per device)."""
    if name is None or name == "":
        return None
    name = check_choice(name, BACKEND_CHOICES, source)
    return None if name == AUTO else name


def resolve_backend(requested: Optional[str], device: Union[torch.device, str]) -> str:
    """The backend to run on ``device``; a clear error when it cannot run there."""
    device = torch.device(device)
    name = validate_backend(requested, "backend")
    if name is None:
        name = validate_backend(os.environ.get(ENV_VAR), f"environment variable {ENV_VAR}")
    if name is None:
        return "triton" if device.type == "cuda" and triton_installed() else "torch"
    if name == "triton" and not triton_installed():
        raise RuntimeError(
            "backend 'triton' needs the triton package, which cannot be imported here "
            "(pip install triton, on Linux); use backend='torch'"
        )
    if name == "triton" and device.type != "cuda" and not triton_interpreter_on():
        raise RuntimeError(
            f"backend 'triton' cannot run on {device.type}: the Triton kernels need a CUDA device "
            f"(or TRITON_INTERPRET=1, Triton's interpreter, for testing); use backend='torch'"
        )
    return name


class FusedOps:
    """The elementwise tails of one backend (``"triton"`` or ``"torch"``), as ``ITHP.forward`` calls them.

    Each method is one fused op of :mod:`ithp_fast.kernels` with this backend bound. The level
    losses travel as float32 partials (one per Triton program, one for the torch backend) until
    :meth:`combine` reduces them; the seed is an int64 device tensor (Triton) or a Python int (torch).
    """

    def __init__(self, name: str) -> None:
        self.name = check_choice(name, FUSED_BACKENDS, "backend (of the fused ops)")

    def new_seed(self, device: torch.device):
        """The forward's seed, from torch's generator."""
        return rng.draw_seed(device) if self.name == "triton" else rng.new_seed()

    def relu_dropout(self, a: torch.Tensor, seed, stream: int, p: float) -> torch.Tensor:
        """``dropout(relu(a), p)``; may overwrite ``a`` (the model hands it its own Linear output)."""
        return relu_dropout(a, seed, stream, p, backend=self.name, inplace=True)

    def reparam_kl(self, h: torch.Tensor, seed, stream: int, eps, sample: bool, row_weight=None):
        """``(b, kl partials)`` from ``h = [mu | logvar]`` (``row_weight``: a masked mean over rows)."""
        return reparam_kl_partials(h, seed, stream, eps=eps, sample=sample, row_weight=row_weight, backend=self.name)

    def detector_loss(self, z: torch.Tensor, t: torch.Tensor, seed, stream: int, p: float,
                      row_weight=None) -> torch.Tensor:
        """MSE partials of ``dropout(sigmoid(z), p)`` against ``t`` (``row_weight``: a masked mean over rows)."""
        return detector_loss_partials(z, t, seed, stream, p, row_weight=row_weight, backend=self.name)

    def combine(self, kl_parts, mse_parts, cfg, dtype: torch.dtype):
        """``(IB_total, kl_terms, mse_terms)`` in ``dtype`` from each level's partial vectors."""
        return ib_combine(kl_parts, mse_parts, detector_weights=cfg.detector_weights,
                          level_weights=cfg.level_weights, dtype=dtype, backend=self.name)


_OPS: dict = {}


def fused_ops(name: str) -> FusedOps:
    """The (cached) :class:`FusedOps` of backend ``name`` ('triton' or 'torch')."""
    if name not in _OPS:
        _OPS[name] = FusedOps(name)
    return _OPS[name]
