"""Detector loss of one level (sigmoid -> dropout -> MSE): both fused backends vs the reference's
detector head (the last two modules of its MLP, the dropout mask given) and its MSE."""

import pytest
import torch
import torch.nn.functional as F
from fused_helpers import (  # noqa: F401 (the fixture is used by name)
    FUSED_BACKENDS,
    ROW_MASKS,
    FixedMaskDropout,
    assert_close_dtype,
    keep_mask,
    op,
    op_seed,
    skip_triton_on_cpu_without_interpreter,
)
from helpers import small_config

from ithp_fast.kernels.detector_loss_triton import detector_loss_backward, detector_loss_forward
from ithp_fast.kernels.rng import Stream
from ithp_fast.reference import ITHP as ReferenceITHP
from ithp_fast.reference.ithp import detector_mse

DEFAULT_BACKEND = "triton"  # the ops tested without a backend parameter
SHAPES = [(1, 1), (7, 35), (50, 47), (1000, 74), (7, 257), (3, 5, 74)]


def inputs(shape, device, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(*shape, generator=g) * 2
    t = torch.rand(*shape, generator=g)
    return z.to(device=device, dtype=dtype), t.to(device=device, dtype=dtype)


def reference(z, t, mask, p, rows=None):
    """The reference's level loss from the detector's last pre-activation ``z`` (over ``rows`` if given)."""
    head = ReferenceITHP(small_config(drop_prob=p)).MLP1[4:]  # Sigmoid, Dropout
    head[1] = FixedMaskDropout(mask, p)
    return F.mse_loss(head(z), t) if rows is None else detector_mse(head(z), t, rows)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("p", [0.0, 0.3])
def test_matches_fixed_mask_reference(device, backend, shape, p):
    z, t = inputs(shape, device)
    seed = op_seed(backend, device)
    mask = keep_mask(backend, seed, Stream.MLP1_OUTPUT, shape, p, device)
    zs = [z.clone().requires_grad_(True) for _ in range(2)]
    ts = [t.clone().requires_grad_(True) for _ in range(2)]
    got = op(backend, "detector_loss")(zs[0], ts[0], seed, Stream.MLP1_OUTPUT, p)
    want = reference(zs[1], ts[1], mask, p)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    (got * 1.3).backward()
    (want * 1.3).backward()
    torch.testing.assert_close(zs[0].grad, zs[1].grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ts[0].grad, ts[1].grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_target_without_grad(device, backend):
    z, t = inputs((50, 47), device)
    z.requires_grad_(True)
    seed = op_seed(backend, device)
    op(backend, "detector_loss")(z, t, seed, Stream.MLP2_OUTPUT, 0.3).backward()
    z_ref = z.detach().clone().requires_grad_(True)
    reference(z_ref, t, keep_mask(backend, seed, Stream.MLP2_OUTPUT, (50, 47), 0.3, device), 0.3).backward()
    torch.testing.assert_close(z.grad, z_ref.grad)
    assert t.grad is None


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_non_contiguous(device, backend):
    z, t = inputs((74, 50), device)
    z, t = z.t(), t.t()
    seed = op_seed(backend, device)
    got = op(backend, "detector_loss")(z, t, seed, Stream.MLP1_OUTPUT, 0.3)
    torch.testing.assert_close(got, reference(z, t, keep_mask(backend, seed, Stream.MLP1_OUTPUT, (50, 74), 0.3, device),
                                              0.3))


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_bfloat16(device, backend):
    z, t = inputs((50, 74), device, torch.bfloat16)
    z.requires_grad_(True)
    seed = op_seed(backend, device)
    mse = op(backend, "detector_loss")(z, t, seed, Stream.MLP1_OUTPUT, 0.3)
    assert mse.dtype == torch.float32  # reduced in float32
    z_ref = z.detach().float().requires_grad_(True)
    want = reference(z_ref, t.float(), keep_mask(backend, seed, Stream.MLP1_OUTPUT, (50, 74), 0.3, device), 0.3)
    torch.testing.assert_close(mse, want, rtol=1e-5, atol=1e-6)  # same bf16 inputs, float32 math
    mse.backward()
    want.backward()
    assert z.grad.dtype == torch.bfloat16
    assert_close_dtype(z.grad, z_ref.grad, torch.bfloat16, atol=1e-4)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_dropout_distribution(device, backend):
    """Kept fraction 1-p and kept values scaled by 1/(1-p): the loss against 0 shows both."""
    z = torch.full((400, 257), 50.0, device=device)  # sigmoid = 1 exactly
    t = torch.zeros_like(z)
    mse = op(backend, "detector_loss")(z, t, op_seed(backend, device), Stream.MLP2_OUTPUT, 0.3)
    # each kept element contributes (1/0.7)^2: mse = kept_fraction / 0.49
    assert abs(mse.item() * 0.49 - 0.7) < 0.01


def test_mask_regenerated_in_backward(device):
    z, t = inputs((1000, 74), device)
    seed = op_seed("triton", device)
    parts = detector_loss_forward(z, t, seed, Stream.MLP1_OUTPUT, 0.3)
    grad_z, _ = detector_loss_backward(torch.ones_like(parts), z, t, seed, Stream.MLP1_OUTPUT, 0.3)
    z_ref = z.clone().requires_grad_(True)
    reference(z_ref, t, keep_mask("triton", seed, Stream.MLP1_OUTPUT, (1000, 74), 0.3, device), 0.3).backward()
    torch.testing.assert_close(grad_z, z_ref.grad)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_bad_inputs(device, backend):
    """Checked once, before either backend runs: no silent broadcast of a target or a row weight."""
    seed, loss = op_seed(backend, device), op(backend, "detector_loss")
    with pytest.raises(ValueError, match="target: expected the shape of z"):
        loss(torch.ones(4, 3, device=device), torch.ones(4, 2, device=device), seed, 1, 0.3)
    with pytest.raises(ValueError, match="target: expected the shape of z"):
        loss(torch.ones(4, 3, device=device), torch.ones(1, 3, device=device), seed, 1, 0.3)
    with pytest.raises(ValueError, match="p: dropout probability"):
        loss(torch.ones(4, 3, device=device), torch.ones(4, 3, device=device), seed, 1, -0.1)
    with pytest.raises(ValueError, match=r"row_weight: expected shape \(4,\) \(one weight per row of z\)"):
        loss(torch.ones(4, 3, device=device), torch.ones(4, 3, device=device), seed, 1, 0.3,
             row_weight=torch.ones(1, device=device))



@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("mask", list(ROW_MASKS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("p", [0.0, 0.3])
def test_row_weights_are_the_masked_mean(device, backend, mask, dtype, p):
    """``row_weight = mean_weights(rows)``: the reference's MSE over the kept rows (0 over none),
    values and gradients of z and t; masked rows get zero gradient."""
    from ithp_fast.kernels import mean_weights

    rows = torch.tensor(ROW_MASKS[mask], device=device)
    z, t = inputs((12, 47), device, dtype)
    seed = op_seed(backend, device)
    keep = keep_mask(backend, seed, Stream.MLP2_OUTPUT, (12, 47), p, device)
    z, t = z.requires_grad_(True), t.requires_grad_(True)
    z_ref, t_ref = (u.detach().float().requires_grad_(True) for u in (z, t))
    got = op(backend, "detector_loss")(z, t, seed, Stream.MLP2_OUTPUT, p, row_weight=mean_weights(rows))
    want = reference(z_ref, t_ref, keep, p, rows)
    assert got.dtype == torch.float32 and torch.isfinite(got)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    (got * 1.3).backward()
    (want * 1.3).backward()
    assert_close_dtype(z.grad, z_ref.grad, dtype, atol=1e-4)
    assert_close_dtype(t.grad, t_ref.grad, dtype, atol=1e-4)
    assert (z.grad[~rows] == 0).all() and (t.grad[~rows] == 0).all()


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_row_weights_of_three_dimensional_inputs(device, backend):
    """``[B, T, D]`` inputs: one weight per row of the last dimension."""
    from ithp_fast.kernels import mean_weights

    rows = torch.tensor([[True, True, False, False, False], [True, False, False, False, False],
                         [True] * 5], device=device)
    z, t = inputs((3, 5, 74), device)
    seed = op_seed(backend, device)
    got = op(backend, "detector_loss")(z, t, seed, Stream.MLP1_OUTPUT, 0.0, row_weight=mean_weights(rows))
    torch.testing.assert_close(got, reference(z, t, torch.ones(3, 5, 74, device=device), 0.0, rows))
    with pytest.raises(ValueError, match=r"row_weight: expected shape \(15,\)"):
        op(backend, "detector_loss")(z, t, seed, Stream.MLP1_OUTPUT, 0.0, row_weight=mean_weights(rows[:2]))


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_masked_rows_values_do_not_reach_the_mse(device, backend):
    from ithp_fast.kernels import mean_weights

    rows = torch.tensor(ROW_MASKS["ragged"], device=device)
    z, t = inputs((12, 47), device)
    clean = op(backend, "detector_loss")(z, t, op_seed(backend, device), Stream.MLP1_OUTPUT, 0.3,
                                         row_weight=mean_weights(rows))
    t[~rows] = float("nan")
    z[~rows] = float("inf")
    got = op(backend, "detector_loss")(z, t, op_seed(backend, device), Stream.MLP1_OUTPUT, 0.3,
                                       row_weight=mean_weights(rows))
    torch.testing.assert_close(got, clean)


@pytest.mark.parametrize("backend", ["torch"])
def test_float64_computes_in_float64(device, backend):
    """The torch backend keeps float64 inputs in float64 (the Triton kernels accumulate in float32;
    ithp_fast.ITHP sends float64 models to the torch backend)."""
    z, t = inputs((50, 47), device, torch.float64)
    z.requires_grad_(True)
    z_ref = z.detach().clone().requires_grad_(True)
    seed = op_seed(backend, device)
    got = op(backend, "detector_loss")(z, t, seed, Stream.MLP1_OUTPUT, 0.3)
    want = reference(z_ref, t, keep_mask(backend, seed, Stream.MLP1_OUTPUT, (50, 47), 0.3, device).double(), 0.3)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    got.backward()
    want.backward()
    torch.testing.assert_close(z.grad, z_ref.grad, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_no_element_gives_nan_like_the_reference(device, backend):
    z, t = inputs((0, 47), device)
    z.requires_grad_(True)
    got = op(backend, "detector_loss")(z, t, op_seed(backend, device), Stream.MLP1_OUTPUT, 0.3)
    assert torch.isnan(got) and torch.isnan(F.mse_loss(z.detach(), t))
    got.backward()
    assert z.grad.shape == (0, 47)
