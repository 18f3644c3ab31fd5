"""The IB combination: level losses from their partials and IB_total through combine_ib, both backends."""

import pytest
import torch
from fused_helpers import FUSED_BACKENDS, skip_triton_on_cpu_without_interpreter  # noqa: F401
from ithp_fast.kernels.ib_combine import combine_weights, ib_combine
from ithp_fast.reference.ithp import combine_ib

BETA, GAMMA, LAMBDA = 8.0, 32.0, 0.3


def partials(device, sizes=(3, 1, 130, 1025)):
    g = torch.Generator().manual_seed(0)
    return [torch.rand(n, generator=g).to(device).requires_grad_(True) for n in sizes]


def combined(parts, backend, dtype=torch.float32):
    return ib_combine(*parts, p_beta=BETA, p_gamma=GAMMA, p_lambda=LAMBDA, dtype=dtype, backend=backend)


def grad_or_zeros(t):
    return t.grad if t.grad is not None else torch.zeros_like(t)


def reference(parts):
    losses = [p.sum() for p in parts]
    return (combine_ib(*losses, BETA, GAMMA, LAMBDA), *losses)


def test_weights_are_read_off_combine_ib():
    w = combine_weights(BETA, GAMMA, LAMBDA)
    assert w == pytest.approx((1.0, BETA, LAMBDA, LAMBDA * GAMMA))


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_values_and_gradients(device, backend):
    parts = partials(device)
    got = combined(parts, backend)
    ref_parts = [p.detach().clone().requires_grad_(True) for p in parts]
    want = reference(ref_parts)
    for a, b in zip(got, want):
        assert a.shape == () and a.dtype == torch.float32
        torch.testing.assert_close(a, b)
    coeffs = (1.0, -2.0, 0.5, 3.0, 0.25)
    sum(c * o for c, o in zip(coeffs, got)).backward()
    sum(c * o for c, o in zip(coeffs, want)).backward()
    for a, b in zip(parts, ref_parts):
        torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("used", [0, 1, 4])
def test_one_output_used(device, backend, used):
    parts = partials(device)
    combined(parts, backend)[used].backward()
    ref_parts = [p.detach().clone().requires_grad_(True) for p in parts]
    reference(ref_parts)[used].backward()
    for a, b in zip(parts, ref_parts):  # a part no output depends on: no gradient, or zeros
        torch.testing.assert_close(grad_or_zeros(a), grad_or_zeros(b))


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_bfloat16_outputs_and_determinism(device, backend):
    parts = [p.detach() for p in partials(device)]
    a = combined(parts, backend, torch.bfloat16)
    b = combined(parts, backend, torch.bfloat16)
    want = reference(parts)
    for x, y, w in zip(a, b, want):
        assert x.dtype == torch.bfloat16 and torch.equal(x, y)
        assert x.item() == w.to(torch.bfloat16).item()  # float32 sum, rounded once
