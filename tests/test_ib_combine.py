"""The IB combination: level losses from their partials and IB_total through combine_ib, both backends, N levels."""

import pytest
import torch
from fused_helpers import FUSED_BACKENDS, skip_triton_on_cpu_without_interpreter  # noqa: F401

from ithp_fast.kernels.ib_combine import combine_weights, ib_combine
from ithp_fast.reference.ithp import combine_ib

BETA, GAMMA, LAMBDA = 8.0, 32.0, 0.3
# (detector weights, level weights) per number of levels; two levels = the released model
WEIGHTS = {
    1: ((8.0,), (1.0,)),
    2: ((BETA, GAMMA), (1.0, LAMBDA)),
    3: ((8.0, 32.0, 4.0), (1.0, 0.3, 0.09)),
    4: ((1.0, 2.0, 0.0, 5.0), (2.0, 0.5, 0.25, 0.0)),
}
SIZES = (3, 1, 130, 1025, 7, 2, 1, 4)


def partials(device, levels):
    g = torch.Generator().manual_seed(levels)
    return [torch.rand(n, generator=g).to(device).requires_grad_(True) for n in SIZES[: 2 * levels]]


def combined(parts, backend, levels, dtype=torch.float32):
    detector_weights, level_weights = WEIGHTS[levels]
    total, kls, mses = ib_combine(parts[0::2], parts[1::2], detector_weights=detector_weights,
                                  level_weights=level_weights, dtype=dtype, backend=backend)
    return (total,) + tuple(t for pair in zip(kls, mses) for t in pair)


def grad_or_zeros(t):
    return t.grad if t.grad is not None else torch.zeros_like(t)


def reference(parts, levels):
    losses = [p.sum() for p in parts]
    return (combine_ib(losses[0::2], losses[1::2], *WEIGHTS[levels]), *losses)


def test_weights_are_read_off_combine_ib():
    kl, mse = combine_weights((BETA, GAMMA), (1.0, LAMBDA))
    assert kl == pytest.approx((1.0, LAMBDA)) and mse == pytest.approx((BETA, LAMBDA * GAMMA))
    kl, mse = combine_weights((8.0, 32.0, 4.0), (1.0, 0.3, 0.09))
    assert kl == pytest.approx((1, 0.3, 0.09)) and mse == pytest.approx((8, 9.6, 0.36))


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("levels", [1, 2, 3, 4])
def test_values_and_gradients(device, backend, levels):
    parts = partials(device, levels)
    got = combined(parts, backend, levels)
    ref_parts = [p.detach().clone().requires_grad_(True) for p in parts]
    want = reference(ref_parts, levels)
    assert len(got) == len(want) == 2 * levels + 1
    for a, b in zip(got, want):
        assert a.shape == () and a.dtype == torch.float32
        torch.testing.assert_close(a, b)
    coeffs = (1.0, -2.0, 0.5, 3.0, 0.25, -1.5, 2.5, 0.75, -0.5)
    sum(c * o for c, o in zip(coeffs, got)).backward()
    sum(c * o for c, o in zip(coeffs, want)).backward()
    for a, b in zip(parts, ref_parts):
        torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("used", [0, 1, 4])
def test_one_output_used(device, backend, used):
    parts = partials(device, 2)
    combined(parts, backend, 2)[used].backward()
    ref_parts = [p.detach().clone().requires_grad_(True) for p in parts]
    reference(ref_parts, 2)[used].backward()
    for a, b in zip(parts, ref_parts):  # a part no output depends on: no gradient, or zeros
        torch.testing.assert_close(grad_or_zeros(a), grad_or_zeros(b))


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_bfloat16_outputs_and_determinism(device, backend):
    parts = [p.detach() for p in partials(device, 2)]
    a = combined(parts, backend, 2, torch.bfloat16)
    b = combined(parts, backend, 2, torch.bfloat16)
    want = reference(parts, 2)
    for x, y, w in zip(a, b, want):
        assert x.dtype == torch.bfloat16 and torch.equal(x, y)
        assert x.item() == w.to(torch.bfloat16).item()  # float32 sum, rounded once


def test_one_weight_and_loss_per_level():
    with pytest.raises(ValueError, match="one KL, one MSE and two weights per level"):
        ib_combine([torch.ones(1)], [torch.ones(1), torch.ones(1)], detector_weights=(1.0,), level_weights=(1.0,))
