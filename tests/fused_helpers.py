"""Helpers for the fused-op tests: each backend's ops, seeds and noise, fixed-mask dropout."""

import functools
import math

import pytest
import torch
from torch import nn

from ithp_fast.backends import triton_interpreter_on
from ithp_fast.kernels import rng
from ithp_fast.kernels.detector_loss import detector_loss
from ithp_fast.kernels.relu_dropout import relu_dropout
from ithp_fast.kernels.reparam_kl import reparam_kl

ROW_MASKS = {  # rows of a [12, width] input: none masked, all masked, ragged
    "none-masked": [True] * 12,
    "all-masked": [False] * 12,
    "ragged": [True, True, False, True, False, False, True, False, True, True, False, False],
}

# The fused backends every device runs in the tests (Triton on the CPU through the interpreter).
FUSED_BACKENDS = ("torch", "triton")

OPS = {"relu_dropout": relu_dropout, "reparam_kl": reparam_kl, "detector_loss": detector_loss}


@pytest.fixture(autouse=True)
def skip_triton_on_cpu_without_interpreter(request):
    """Triton runs on the CPU only in its interpreter (on by default without CUDA, see conftest).

    A test module imports this fixture; a test parametrised with ``device == "cpu"`` is skipped
    when it runs Triton (its ``backend`` parameter, or the module's ``DEFAULT_BACKEND``) and the
    interpreter is off -- on a CUDA machine, where the same tests run on the GPU.
    """
    callspec = getattr(request.node, "callspec", None)
    params = callspec.params if callspec is not None else {}
    backend = params.get("backend", getattr(request.module, "DEFAULT_BACKEND", None))
    if params.get("device") == "cpu" and backend == "triton" and not triton_interpreter_on():
        pytest.skip("Triton on the CPU needs TRITON_INTERPRET=1 (the interpreter is off: CUDA present)")


def op(backend: str, name: str):
    """The fused op ``name`` with ``backend`` bound."""
    return functools.partial(OPS[name], backend=backend)


def op_seed(backend: str, device, value: int = 20240531):
    """A seed as the backend's ops take it: an int64 device tensor (Triton) or an int (torch)."""
    if backend == "triton":
        return torch.tensor([value], dtype=torch.int64, device=device)
    return value


def normals(backend: str, seed, stream: int, shape, device) -> torch.Tensor:
    """The N(0, 1) draws the backend uses for ``(seed, stream)`` and a tensor of ``shape``."""
    if backend == "triton":
        n = math.prod(shape)
        from ithp_fast.kernels.triton_helpers import normal_stream

        return normal_stream(seed, stream, n).view(shape)
    return rng.normal(seed, stream, shape, device)


def keep_mask(backend: str, seed, stream: int, shape, p: float, device) -> torch.Tensor:
    """float 0/1: where the backend's dropout of probability ``p`` keeps the element."""
    if backend == "triton":
        n = math.prod(shape)
        from ithp_fast.kernels.triton_helpers import uniform_stream

        return (uniform_stream(seed, stream, n).view(shape) >= p).float()
    return (rng.dropout_scale(seed, stream, shape, device, p) > 0).float()


class FixedMaskDropout(nn.Module):
    """A dropout whose mask is given (to run the reference with the fast path's masks)."""

    def __init__(self, mask: torch.Tensor, p: float) -> None:
        super().__init__()
        self.mask, self.p = mask, p

    def forward(self, x):
        return x * self.mask.to(x.dtype) / (1 - self.p)


def assert_close_dtype(actual, expected, dtype, **overrides):
    from helpers import TOLERANCES

    tol = dict(TOLERANCES[dtype])
    tol.update(overrides)
    torch.testing.assert_close(actual.float(), expected.float(), **tol)
