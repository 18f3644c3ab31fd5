"""NVTX ranges around the model's stages: off by default and free when off.

``stage(name)`` is what the model wraps each stage in. It returns one shared null context unless
the ranges are switched on, by the environment variable ``ITHP_FAST_NVTX=1`` or by
:func:`enable_nvtx`; then it opens an NVTX range (CUDA builds), which Nsight Systems shows on its
timeline and Nsight Compute filters on (``--nvtx-include``). While ``ithp-fast profile`` records
with ``torch.profiler`` (:func:`profiler_spans`), the same names become ``record_function`` spans.

A leaf module: it imports nothing of this package, so the model may import it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

_NULL = contextlib.nullcontext()
_nvtx_on = os.environ.get("ITHP_FAST_NVTX", "0") not in ("", "0")
_spans_on = False


def enable_nvtx(flag: bool = True) -> None:
    """Turn the NVTX ranges on or off for this process."""
    global _nvtx_on
    _nvtx_on = bool(flag)


def nvtx_enabled() -> bool:
    """Whether :func:`stage` opens NVTX ranges now."""
    return _nvtx_on


@contextlib.contextmanager
def profiler_spans() -> Iterator[None]:
    """Inside this block :func:`stage` records ``torch.profiler`` spans (when NVTX is off)."""
    global _spans_on
    _spans_on = True
    try:
        yield
    finally:
        _spans_on = False


def stage(name: str):
    """A context manager: an NVTX range named ``name`` when enabled on a CUDA build, a
    ``torch.profiler`` span inside ``profiler_spans``, else a shared null context."""
    if _nvtx_on and torch.cuda.is_available():
        return torch.cuda.nvtx.range(name)
    if _spans_on:
        return torch.profiler.record_function(name)
    return _NULL


def under_nsight() -> bool:
    """Whether an Nsight tool injected itself into this process (both ncu and nsys set this)."""
    return bool(os.environ.get("CUDA_INJECTION64_PATH") or os.environ.get("NSYS_PROFILING_SESSION_ID"))
