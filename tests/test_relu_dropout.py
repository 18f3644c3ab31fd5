"""ReLU + in-kernel dropout between an MLP's Linear layers, both fused backends vs plain torch."""

import pytest
import torch
import torch.nn.functional as F
from fused_helpers import (  # noqa: F401 (the fixture is used by name)
    FUSED_BACKENDS,
    assert_close_dtype,
    keep_mask,
    op,
    op_seed,
    skip_triton_on_cpu_without_interpreter,
)

from ithp_fast.kernels.rng import Stream

DEFAULT_BACKEND = "triton"  # the ops tested without a backend parameter
SHAPES = [(1, 1), (7, 35), (50, 47), (3, 5, 74), (1000, 257)]


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("p", [0.0, 0.3])
def test_values_and_grad_match_fixed_mask(device, backend, shape, p):
    g = torch.Generator().manual_seed(1)
    a = torch.randn(*shape, generator=g).to(device).requires_grad_(True)
    seed = op_seed(backend, device)
    d = op(backend, "relu_dropout")(a, seed, Stream.ENCODER1_HIDDEN, p)
    mask = keep_mask(backend, seed, Stream.ENCODER1_HIDDEN, shape, p, device)
    a_ref = a.detach().clone().requires_grad_(True)
    expected = F.relu(a_ref) * mask / (1 - p)
    torch.testing.assert_close(d, expected)
    grad = torch.randn(*shape, generator=g).to(device)
    d.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(a.grad, a_ref.grad)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_bfloat16(device, backend):
    a32 = torch.randn(50, 47, device=device)
    a = a32.to(torch.bfloat16).requires_grad_(True)
    seed = op_seed(backend, device)
    d = op(backend, "relu_dropout")(a, seed, Stream.MLP1_HIDDEN, 0.3)
    assert d.dtype == torch.bfloat16
    mask = keep_mask(backend, seed, Stream.MLP1_HIDDEN, (50, 47), 0.3, device)
    assert_close_dtype(d, F.relu(a.float()) * mask / 0.7, torch.bfloat16)
    d.sum().backward()
    assert_close_dtype(a.grad, (a.float() > 0) * mask / 0.7, torch.bfloat16)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_dropout_statistics(device, backend):
    a = torch.ones(256, 257, device=device)
    d = op(backend, "relu_dropout")(a, op_seed(backend, device), Stream.MLP2_HIDDEN, 0.3)
    kept = d != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.01
    torch.testing.assert_close(d[kept], torch.full_like(d[kept], 1 / 0.7))


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_non_contiguous_input(device, backend):
    base = torch.randn(35, 14, device=device)
    a = base.t()  # [14, 35], column-major
    seed = op_seed(backend, device)
    d = op(backend, "relu_dropout")(a, seed, Stream.ENCODER2_HIDDEN, 0.3)
    mask = keep_mask(backend, seed, Stream.ENCODER2_HIDDEN, (14, 35), 0.3, device)
    torch.testing.assert_close(d, F.relu(a) * mask / 0.7)


def test_bad_probability(device):
    with pytest.raises(ValueError, match="p: dropout probability"):
        op("triton", "relu_dropout")(torch.ones(3, device=device), op_seed("triton", device), 1, 1.0)
