"""Reparameterisation + KL of one level: both fused backends vs the reference formulas."""

import pytest
import torch
from fused_helpers import (  # noqa: F401 (the fixture is used by name)
    FUSED_BACKENDS,
    ROW_MASKS,
    assert_close_dtype,
    normals,
    op,
    op_seed,
    skip_triton_on_cpu_without_interpreter,
)

from ithp_fast.kernels.reparam_kl_triton import reparam_kl_backward, reparam_kl_forward
from ithp_fast.kernels.rng import Stream
from ithp_fast.reference.ithp import kl_to_standard_normal, reparameterize

DEFAULT_BACKEND = "triton"  # the ops tested without a backend parameter
SHAPES = [(1, 1), (7, 35), (50, 47), (7, 74), (1000, 257), (1000, 1)]


def make_h(rows, width, device, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(rows, 2 * width, generator=g)
    h[:, width:] *= 0.5  # moderate log-variances
    return h.to(device=device, dtype=dtype)


def reference(h, eps, sample=True):
    mu, logvar = h.chunk(2, dim=-1)
    b = reparameterize(mu, logvar, eps) if sample else mu
    return b, kl_to_standard_normal(mu, logvar)


def run_and_grad(fn, h, eps, grad_b, grad_kl):
    h = h.detach().clone().requires_grad_(True)
    b, kl = fn(h, eps)
    torch.autograd.backward([b, kl], [grad_b, grad_kl])
    return b.detach(), kl.detach(), h.grad


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("rows, width", SHAPES, ids=str)
@pytest.mark.parametrize("generated", [False, True], ids=["injected", "generated"])
def test_matches_reference(device, backend, rows, width, generated):
    h = make_h(rows, width, device)
    seed = op_seed(backend, device)
    eps = normals(backend, seed, Stream.EPS0, (rows, width), device)
    g = torch.Generator().manual_seed(5)
    grad_b = torch.randn(rows, width, generator=g).to(device)
    grad_kl = torch.tensor(1.7, device=device)
    fast = op(backend, "reparam_kl")
    got = run_and_grad(lambda h_, e: fast(h_, seed, Stream.EPS0, eps=None if generated else e), h, eps, grad_b, grad_kl)
    want = run_and_grad(reference, h, eps, grad_b, grad_kl)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_posterior_mean(device, backend):
    h = make_h(7, 35, device)
    grad_b = torch.randn(7, 35, device=device)
    grad_kl = torch.tensor(0.5, device=device)
    fast = op(backend, "reparam_kl")
    got = run_and_grad(lambda h_, e: fast(h_, op_seed(backend, device), Stream.EPS0, sample=False), h, None, grad_b,
                       grad_kl)
    want = run_and_grad(lambda h_, e: reference(h_, e, sample=False), h, None, grad_b, grad_kl)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_grad_of_injected_eps(device, backend):
    h = make_h(7, 35, device)
    eps = torch.randn(7, 35, device=device, requires_grad=True)
    eps_ref = eps.detach().clone().requires_grad_(True)
    b, kl = op(backend, "reparam_kl")(h, op_seed(backend, device), Stream.EPS1, eps=eps)
    b_ref, kl_ref = reference(h, eps_ref)
    grad_b = torch.randn_like(b)
    (b * grad_b).sum().backward()
    (b_ref * grad_b).sum().backward()
    torch.testing.assert_close(eps.grad, eps_ref.grad)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("only", ["b", "kl"])
def test_one_output_used(device, backend, only):
    h = make_h(50, 47, device).requires_grad_(True)
    h_ref = h.detach().clone().requires_grad_(True)
    eps = torch.randn(50, 47, device=device)
    b, kl = op(backend, "reparam_kl")(h, op_seed(backend, device), Stream.EPS0, eps=eps)
    b_ref, kl_ref = reference(h_ref, eps)
    (b.sum() if only == "b" else kl).backward()
    (b_ref.sum() if only == "b" else kl_ref).backward()
    torch.testing.assert_close(h.grad, h_ref.grad)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_strided_h(device, backend):
    """A row-strided view (a slice of a wider buffer) and a transposed one."""
    wide = make_h(50, 64, device)
    for h in (wide[:, :94], make_h(47, 50, device).t().contiguous().t()[:, :]):
        width = h.shape[1] // 2
        eps = torch.randn(h.shape[0], width, device=device)
        b, kl = op(backend, "reparam_kl")(h, op_seed(backend, device), Stream.EPS0, eps=eps)
        b_ref, kl_ref = reference(h, eps)
        torch.testing.assert_close(b, b_ref)
        torch.testing.assert_close(kl, kl_ref)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_bfloat16(device, backend):
    h32 = make_h(50, 47, device)
    h = h32.to(torch.bfloat16).requires_grad_(True)
    eps = torch.randn(50, 47, device=device)
    b, kl = op(backend, "reparam_kl")(h, op_seed(backend, device), Stream.EPS0, eps=eps)
    assert b.dtype == torch.bfloat16 and kl.dtype == torch.float32  # float32 accumulation
    h_ref = h.detach().float().requires_grad_(True)
    b_ref, kl_ref = reference(h_ref, eps)
    assert_close_dtype(b, b_ref, torch.bfloat16)
    torch.testing.assert_close(kl, kl_ref, rtol=1e-5, atol=1e-6)  # same bf16 inputs, float32 math
    grad_b = torch.randn(50, 47, device=device)
    torch.autograd.backward([b, kl], [grad_b.to(torch.bfloat16), torch.tensor(2.0, device=device)])
    torch.autograd.backward([b_ref, kl_ref], [grad_b, torch.tensor(2.0, device=device)])
    assert h.grad.dtype == torch.bfloat16
    assert_close_dtype(h.grad, h_ref.grad, torch.bfloat16)


def test_eps_regenerated_in_backward(device):
    """The Triton backward draws exactly the forward's eps (no eps is stored)."""
    h = make_h(50, 47, device)
    seed = op_seed("triton", device)
    b, parts = reparam_kl_forward(h, seed, Stream.EPS1)
    eps = normals("triton", seed, Stream.EPS1, (50, 47), device)
    grad_b = torch.randn(50, 47, device=device)
    grad_h, _ = reparam_kl_backward(grad_b, None, h, seed, Stream.EPS1)
    _, _, want = run_and_grad(reference, h, eps, grad_b, torch.tensor(0.0, device=device))
    torch.testing.assert_close(grad_h, want)
    other_seed = op_seed("triton", device, 1)
    grad_other, _ = reparam_kl_backward(grad_b, None, h, other_seed, Stream.EPS1)
    assert not torch.allclose(grad_other, want)


def test_partials_gradient_may_be_a_broadcast_scalar(device):
    h = make_h(1000, 47, device)
    seed = op_seed("triton", device)
    _, parts = reparam_kl_forward(h, seed, Stream.EPS0)
    scalar = torch.tensor([3.0], device=device)
    a, _ = reparam_kl_backward(None, scalar.expand(parts.numel()), h, seed, Stream.EPS0)
    b, _ = reparam_kl_backward(None, torch.full_like(parts, 3.0), h, seed, Stream.EPS0)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_bad_inputs(device, backend):
    """Checked once, before either backend runs: no silent broadcast of eps or a row weight."""
    seed, kl = op_seed(backend, device), op(backend, "reparam_kl")
    with pytest.raises(ValueError, match="h: expected"):
        kl(torch.ones(4, 3, device=device), seed, Stream.EPS0)
    with pytest.raises(ValueError, match="eps: expected shape"):
        kl(torch.ones(4, 6, device=device), seed, Stream.EPS0, eps=torch.ones(4, 2, device=device))
    with pytest.raises(ValueError, match="eps: expected shape"):
        kl(torch.ones(4, 6, device=device), seed, Stream.EPS0, eps=torch.ones(1, 3, device=device))
    with pytest.raises(ValueError, match=r"row_weight: expected shape \(4,\) \(one weight per row of h\)"):
        kl(torch.ones(4, 6, device=device), seed, Stream.EPS0, row_weight=torch.ones(1, device=device))


def test_triton_seed_is_checked(device):
    with pytest.raises(TypeError, match="seed"):
        reparam_kl_forward(torch.ones(4, 6, device=device), None, Stream.EPS0)



@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("mask", list(ROW_MASKS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_row_weights_are_the_masked_mean(device, backend, mask, dtype):
    """``row_weight = mean_weights(rows)``: the KL is the reference's mean over the kept rows (0 over
    none), values and gradients; a masked row's h gets no gradient from the KL."""
    from ithp_fast.kernels import mean_weights

    rows = torch.tensor(ROW_MASKS[mask], device=device)
    h = make_h(12, 35, device, dtype).requires_grad_(True)
    h_ref = h.detach().float().requires_grad_(True)
    eps = torch.randn(12, 35, device=device)
    b, kl = op(backend, "reparam_kl")(h, op_seed(backend, device), Stream.EPS0, eps=eps,
                                      row_weight=mean_weights(rows))
    mu, logvar = h_ref.chunk(2, dim=-1)
    b_ref, kl_ref = reparameterize(mu, logvar, eps), kl_to_standard_normal(mu, logvar, rows)
    assert kl.dtype == torch.float32 and torch.isfinite(kl)
    torch.testing.assert_close(kl, kl_ref, rtol=1e-5, atol=1e-6)
    assert_close_dtype(b, b_ref, dtype)
    grad_b = torch.randn(12, 35, device=device)
    torch.autograd.backward([b, kl], [grad_b.to(dtype), torch.tensor(1.7, device=device)])
    torch.autograd.backward([b_ref, kl_ref], [grad_b, torch.tensor(1.7, device=device)])
    assert_close_dtype(h.grad, h_ref.grad, dtype)
    h.grad = None
    op(backend, "reparam_kl")(h, op_seed(backend, device), Stream.EPS0, eps=eps, row_weight=mean_weights(rows))[1] \
        .backward()
    assert (h.grad[~rows] == 0).all()


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_masked_rows_values_do_not_reach_the_kl(device, backend):
    """Whatever a masked row holds (inf, NaN), the KL is that of the other rows."""
    from ithp_fast.kernels import mean_weights

    rows = torch.tensor(ROW_MASKS["ragged"], device=device)
    h = make_h(12, 35, device)
    kl_clean = op(backend, "reparam_kl")(h, op_seed(backend, device), Stream.EPS0, sample=False,
                                         row_weight=mean_weights(rows))[1]
    h[~rows] = torch.tensor([float("inf"), float("nan")], device=device).repeat(35)
    kl = op(backend, "reparam_kl")(h, op_seed(backend, device), Stream.EPS0, sample=False,
                                   row_weight=mean_weights(rows))[1]
    torch.testing.assert_close(kl, kl_clean)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_float64_computes_in_float64(device, backend):
    """A float64 h: the torch backend's KL, b and gradient agree with the float64 reference to ~1e-12
    (the Triton kernels accumulate in float32: the model sends float64 to the torch backend)."""
    if backend == "triton":
        pytest.skip("float64 runs the torch backend's ops (ithp_fast.ITHP sends it there)")
    h = make_h(50, 47, device, torch.float64).requires_grad_(True)
    h_ref = h.detach().clone().requires_grad_(True)
    eps = torch.randn(50, 47, device=device, dtype=torch.float64)
    b, kl = op(backend, "reparam_kl")(h, op_seed(backend, device), Stream.EPS0, eps=eps)
    b_ref, kl_ref = reference(h_ref, eps)
    assert kl.dtype == torch.float64
    torch.testing.assert_close(kl, kl_ref, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(b, b_ref, rtol=1e-12, atol=1e-13)
    (b.sum() + 3 * kl).backward()
    (b_ref.sum() + 3 * kl_ref).backward()
    torch.testing.assert_close(h.grad, h_ref.grad, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_no_rows_gives_nan_like_the_reference(device, backend):
    """An empty h: torch's mean over nothing is NaN; the fused op says the same (no ZeroDivisionError)."""
    h = make_h(0, 35, device).requires_grad_(True)
    b, kl = op(backend, "reparam_kl")(h, op_seed(backend, device), Stream.EPS0)
    assert b.shape == (0, 35) and torch.isnan(kl) and torch.isnan(reference(h, torch.zeros(0, 35))[1])
    (b.sum() + kl).backward()
    assert h.grad.shape == (0, 70)
