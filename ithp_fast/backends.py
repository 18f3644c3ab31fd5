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
