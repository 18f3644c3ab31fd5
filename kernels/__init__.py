"""Fused Triton kernels, one op per file (installed as ``ithp_fast.kernels``)."""

import functools

import torch

INTERPRETER_SM_COUNT = 4
"""Stand-in multiprocessor count under Triton's interpreter: small, so CPU tests exercise splits."""


@functools.lru_cache(maxsize=None)
def _cuda_sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(device: torch.device) -> int:
    """Multiprocessors of ``device``, for sizing launch grids (:data:`INTERPRETER_SM_COUNT` off CUDA)."""
    if device.type == "cuda":
        return _cuda_sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return INTERPRETER_SM_COUNT
