"""Fused ops, one op per file pair (installed as ``ithp_fast.kernels``).

``<op>.py`` holds the formula as a short comment, the plain-PyTorch implementation (the ``torch``
backend, the CPU default), one autograd Function and the dispatch between backends;
``<op>_triton.py`` holds the Triton kernels and their launchers, imported only when a kernel is
launched, so that everything here except the ``triton`` backend works where Triton is missing.
``rng.py`` is the noise contract (no Triton); ``triton_helpers.py`` what the Triton kernels share.
"""

import functools
import os

import torch

from ..checks import FUSED_BACKENDS, check_choice


def triton_interpreter_on() -> bool:
    """Whether Triton runs its kernels in its CPU interpreter (``TRITON_INTERPRET=1``, for tests)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


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


def tracked(*tensors) -> bool:
    """Whether autograd records an op on ``tensors`` now (else the ops run as plain functions)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """What the torch backend computes a ``dtype`` input in: float64 stays float64, the rest float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def widened(t: torch.Tensor, dtype: "torch.dtype | None" = None) -> torch.Tensor:
    """``t`` in ``dtype`` (default: :func:`compute_dtype` of its own), no copy when it already is."""
    dtype = compute_dtype(t.dtype) if dtype is None else dtype
    return t if t.dtype == dtype else t.to(dtype)


def inverse(n: int) -> float:
    """``1 / n``, NaN for ``n == 0`` (a mean over nothing, as torch's ``mean`` of an empty tensor)."""
    return 1.0 / n if n else float("nan")


def mean_scale(numel: int, width: int, weighted: bool) -> float:
    """The factor of a mean over ``numel`` elements in rows of ``width``: ``1/numel`` (NaN for no
    element, as torch's mean), or ``1/width`` when each row carries its own weight
    (:func:`mean_weights`) and the mean over rows is the weighted sum. Both backends of
    ``reparam_kl`` and ``detector_loss`` scale their sums, and their gradients, by it."""
    return 1.0 / width if weighted else inverse(numel)


def check_p(p: float) -> float:
    """A dropout probability in [0, 1), as a float."""
    p = float(p)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p: dropout probability must lie in [0, 1), got {p}")
    return p


def check_row_weight(row_weight: "torch.Tensor | None", rows: int, device: torch.device,
                     of: str) -> "torch.Tensor | None":
    """One weight per row of the op's input ``of`` (shape ``(rows,)``, on its device), or None."""
    if row_weight is None:
        return None
    if tuple(row_weight.shape) != (rows,):
        raise ValueError(f"row_weight: expected shape {(rows,)} (one weight per row of {of}), got "
                         f"{tuple(row_weight.shape)}")
    if row_weight.device != device:
        raise ValueError(f"row_weight: is on {row_weight.device} but {of} is on {device}")
    return row_weight


def mean_weights(rows: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Row weights of a masked mean: ``1 / count`` on the rows where ``rows`` (bool) is True, 0 elsewhere
    (all 0 when no row is: the mean over no row is 0). Flattened to one weight per row."""
    rows = rows.reshape(-1)
    return rows.to(dtype) / rows.sum().clamp_min(1).to(dtype)


def check_backend(backend: str) -> str:
    """The backend of a fused op: one of :data:`ithp_fast.checks.FUSED_BACKENDS`."""
    return check_choice(backend, FUSED_BACKENDS, "backend")
