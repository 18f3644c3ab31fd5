"""NVTX ranges around the model's stages, for Nsight Systems / Nsight Compute.

Off by default and free when off (``stage`` returns one shared null context). Switch on with
the environment variable ``ITHP_FAST_NVTX=1`` or :func:`enable_nvtx`.
"""

from __future__ import annotations

import contextlib
import os

import torch

_NULL = contextlib.nullcontext()
_enabled = os.environ.get("ITHP_FAST_NVTX", "0") not in ("", "0")


def enable_nvtx(flag: bool = True) -> None:
    """Turn the NVTX ranges on or off for this process."""
    global _enabled
    _enabled = bool(flag)


def nvtx_enabled() -> bool:
    return _enabled


def stage(name: str):
    """Context manager: an NVTX range named ``name`` when enabled on a CUDA build, else nothing."""
    if _enabled and torch.cuda.is_available():
        return torch.cuda.nvtx.range(name)
    return _NULL


def register(sub) -> None:
    """``ithp-fast profile`` (placeholder until the profiling workload lands)."""
    p = sub.add_parser("profile", help="run a short workload for Nsight / torch.profiler")
    p.set_defaults(func=lambda args: print("ithp-fast profile: not available yet") or 1)
