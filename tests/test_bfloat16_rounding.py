"""bfloat16 outputs are float32 math rounded once to nearest-even, on every Triton kernel.

Triton's CPU interpreter truncates float32 -> bfloat16 where a GPU rounds to nearest-even, so the
kernels round the float32 bits themselves (``triton_helpers.rounded_to``). Each test holds a
kernel's bfloat16 output against the same math in float32 (or float64), rounded once by torch:
equal where the math is the same, and otherwise a mean signed error near zero. A truncating
conversion fails both (about half the outputs one ulp low, a mean error near -0.5 ulp).
"""

import pytest
import torch
from fused_helpers import FUSED_BACKENDS, keep_mask, op, op_seed, skip_triton_on_cpu_without_interpreter  # noqa: F401
from helpers import small_config

import ithp_fast
from ithp_fast.encode import chain, layers
from ithp_fast.kernels.encode_chain import encode_chain
from ithp_fast.kernels.rng import Stream
from ithp_fast.kernels.tcmax import tcmax_factorised, tcmax_factorised_torch

BF16 = torch.bfloat16


def signed_ulps(out: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """``(out - exact)`` in units of bfloat16's ulp at ``exact``, positive away from zero."""
    exact = exact.double()
    keep = exact != 0
    exact, out = exact[keep], out.double()[keep]
    ulp = torch.exp2(torch.floor(torch.log2(exact.abs())) - 7)
    return (out - exact) * exact.sign() / ulp


def assert_rounded_once(out: torch.Tensor, exact: torch.Tensor, *, equal_fraction: float = 1.0):
    assert out.dtype == BF16
    same = (out == exact.to(BF16)).double().mean().item()
    bias = signed_ulps(out, exact).mean().item()
    assert same >= equal_fraction, f"only {same:.3f} of the outputs equal the once-rounded value"
    assert abs(bias) < 0.05, f"mean signed error {bias:.3f} ulp (truncation gives about -0.5)"


def values(shape, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_relu_dropout(backend):
    a = values((64, 300)).to(BF16).requires_grad_(True)
    seed = op_seed(backend, "cpu")
    d = op(backend, "relu_dropout")(a, seed, Stream.MLP1_HIDDEN, 0.3)
    scale = keep_mask(backend, seed, Stream.MLP1_HIDDEN, a.shape, 0.3, "cpu") / 0.7
    assert_rounded_once(d, torch.relu(a.float()) * scale)
    grad = values((64, 300), seed=1).to(BF16)
    d.backward(grad)
    assert_rounded_once(a.grad, grad.float() * (d.float() > 0) / 0.7)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_reparam_kl(backend):
    h = values((64, 2 * 40), scale=0.5).to(BF16).requires_grad_(True)
    eps = values((64, 40), seed=2)
    b, kl = op(backend, "reparam_kl")(h, op_seed(backend, "cpu"), Stream.EPS0, eps=eps)
    mu, logvar = h.detach().float().chunk(2, dim=-1)
    std = torch.exp(0.5 * logvar)
    assert_rounded_once(b, mu + eps * std, equal_fraction=0.98)
    grad_b = values((64, 40), seed=3).to(BF16)
    torch.autograd.backward([b, kl], [grad_b, torch.tensor(0.0)])
    grad_logvar = 0.5 * grad_b.float() * eps * std
    assert_rounded_once(h.grad, torch.cat([grad_b.float(), grad_logvar], dim=-1), equal_fraction=0.98)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_detector_loss(backend):
    z = values((64, 74), scale=2.0).to(BF16).requires_grad_(True)
    t = torch.rand(64, 74, generator=torch.Generator().manual_seed(4)).to(BF16).requires_grad_(True)
    op(backend, "detector_loss")(z, t, op_seed(backend, "cpu"), Stream.MLP1_OUTPUT, 0.0).mul(1e3).backward()
    s = torch.sigmoid(z.detach().float())
    residual = (s - t.detach().float()) * (2e3 / z.numel())
    assert_rounded_once(z.grad, residual * s * (1 - s), equal_fraction=0.98)
    assert_rounded_once(t.grad, -residual, equal_fraction=0.98)


def test_fused_encode_chain():
    """Each Linear's output rounded once to bfloat16, at the same places as torch's bfloat16 chain
    (``addmm`` accumulates in float32 and rounds once): the two agree (up to float32 sum order)."""
    torch.manual_seed(0)
    model = ithp_fast.ITHP(small_config(X0_dim=96, inter_dim=64, B0_dim=32, B1_dim=32), backend="triton")
    model = model.to(BF16).eval()
    x = values((64, 96)).to(BF16)
    with torch.no_grad():
        got = encode_chain(x, *layers(model))  # the kernel itself (encode sends bfloat16 to the chain)
        want = chain(model, x)
    assert got.dtype == BF16
    assert (got == want).double().mean().item() >= 0.95


def test_tcmax_gradients():
    logits = [values((256, 40), seed=s, scale=3.0).to(BF16).requires_grad_(True) for s in (5, 6)]
    labels = torch.randint(0, 40, (256,), generator=torch.Generator().manual_seed(7))
    out = tcmax_factorised(logits, labels, backend="triton", block_b=64, block_c=16, splits=2)
    grads = torch.autograd.grad(out.sum(), logits)
    exact_logits = [t.detach().double().requires_grad_(True) for t in logits]
    exact = torch.autograd.grad(tcmax_factorised_torch(exact_logits, labels).sum(), exact_logits)
    for got, want in zip(grads, exact):
        assert_rounded_once(got, want, equal_fraction=0.97)
