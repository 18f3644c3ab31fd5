"""The Triton launchers registered as custom ops (``torch.ops.ithp_fast.*``, what torch.compile and
torch.export trace on CUDA) compute what the launchers compute (here run eagerly)."""

import torch
from fused_helpers import skip_triton_on_cpu_without_interpreter  # noqa: F401

from ithp_fast.kernels.detector_loss_triton import detector_loss_backward, detector_loss_forward
from ithp_fast.kernels.relu_dropout_triton import relu_dropout_backward, relu_dropout_forward
from ithp_fast.kernels.reparam_kl_triton import reparam_kl_backward, reparam_kl_forward

DEFAULT_BACKEND = "triton"
ops = torch.ops.ithp_fast


def seed(device):
    return torch.tensor([7], dtype=torch.int64, device=device)


def values(*shape, device, scale=1.0, seed_=0):
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(seed_)) * scale).to(device)


def test_relu_dropout_ops(device):
    a, grad = values(9, 70, device=device), values(9, 70, device=device, seed_=1)
    d = ops.relu_dropout_forward(a, seed(device), 1, 0.3)
    assert torch.equal(d, relu_dropout_forward(a, seed(device), 1, 0.3))
    assert torch.equal(ops.relu_dropout_backward(grad, d, 0.3), relu_dropout_backward(grad, d, 0.3))
    assert torch.equal(ops.relu_dropout_forward(a, None, 1, 0.0), torch.relu(a))  # no seed without dropout


def test_reparam_kl_ops(device):
    h, grad_b = values(9, 20, device=device, scale=0.5), values(9, 10, device=device, seed_=1)
    weight = torch.full((9,), 1 / 9, device=device)
    b, parts = ops.reparam_kl_forward(h, seed(device), 2, None, True, weight)
    want_b, want_parts = reparam_kl_forward(h, seed(device), 2, None, True, weight)
    assert torch.equal(b, want_b) and torch.equal(parts, want_parts)
    grad_parts = torch.ones_like(parts)
    grad_h, grad_eps = ops.reparam_kl_backward(grad_b, grad_parts, h, seed(device), 2, None, True, weight, False)
    assert torch.equal(grad_h, reparam_kl_backward(grad_b, grad_parts, h, seed(device), 2, None, True, weight)[0])
    assert grad_eps.numel() == 0  # not wanted: empty (an op returns no None)
    eps = values(9, 10, device=device, seed_=2)
    _, grad_eps = ops.reparam_kl_backward(grad_b, grad_parts, h, None, 2, eps, True, None, True)
    assert torch.equal(grad_eps, reparam_kl_backward(grad_b, grad_parts, h, None, 2, eps, True, None, True)[1])


def test_detector_loss_ops(device):
    z, t = values(9, 7, device=device, scale=2.0), torch.rand(9, 7).to(device)
    parts = ops.detector_loss_forward(z, t, seed(device), 4, 0.3, None)
    assert torch.equal(parts, detector_loss_forward(z, t, seed(device), 4, 0.3, None))
    grad_parts = torch.ones_like(parts)
    grad_z, grad_t = ops.detector_loss_backward(grad_parts, z, t, seed(device), 4, 0.3, None, True)
    want_z, want_t = detector_loss_backward(grad_parts, z, t, seed(device), 4, 0.3, None, True)
    assert torch.equal(grad_z, want_z) and torch.equal(grad_t, want_t)
    assert ops.detector_loss_backward(grad_parts, z, t, seed(device), 4, 0.3, None, False)[1].numel() == 0
