"""Each fused op alone, forward and backward, with achieved GB/s against the memory bandwidth.

``reparam_kl``     level 0: ``h = [mu | logvar]`` ``[N, 2*128]`` -> ``b`` ``[N, 128]`` and the KL term
                   (the reference draws eps with ``randn_like``; the fused op generates it in-kernel).
``detector_loss``  level 0: ``z`` ``[N, 74]`` and the target -> sigmoid, dropout(0.3), MSE.

``nbytes`` counts what the op must move at least: inputs read once, outputs written once (no eps,
no dropout mask: both are regenerated from the seed). Forward: reparam_kl reads ``h`` and writes
``b``; detector_loss reads ``z`` and the target. Backward: reparam_kl reads ``h`` and ``d b`` and
writes ``d h``; detector_loss reads ``z`` and the target and writes ``d z``. ``N = 1600`` is a
batch of 32 x 50 tokens; the large ``N`` is where bandwidth, not launch latency, decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from scale import COMPILE, CUDA, DEVICE, compiled, pick
from workloads import dtype_bytes, ithp_config

from ithp_fast.kernels import rng
from ithp_fast.kernels.detector_loss import detector_loss
from ithp_fast.kernels.reparam_kl import reparam_kl
from ithp_fast.kernels.rng import Stream
from ithp_fast.reference.ithp import ITHP as ReferenceITHP
from ithp_fast.reference.ithp import kl_to_standard_normal, reparameterize

ROWS = pick(cuda=[1600, 1 << 20], cpu=[1600, 1 << 16], tiny=[7])
COMPILED_ROWS = pick(cuda=[1 << 20], cpu=[], tiny=[7])
PROVIDERS = ["reference", "reference+torch.compile", "ithp_fast"]


@dataclass
class Op:
    """One fused op: its inputs, reference formula, fast version and minimum traffic."""

    inputs: Callable[[int], tuple]  # rows -> input tensors (the first one differentiated)
    reference: Callable[[], Callable]  # () -> the reference's (*inputs) -> outputs
    fast: Callable[[], Callable]  # () -> the fast path's (*inputs) -> outputs
    forward_bytes: Callable[[int], int]
    backward_bytes: Callable[[int], int]


def _reparam_kl_inputs(rows: int):
    width = ithp_config().B0_dim
    g = torch.Generator().manual_seed(rows)
    h = torch.randn(rows, 2 * width, generator=g).to(DEVICE)
    return (h,)


def _reparam_kl_reference():
    def reparam_kl(h):
        mu, logvar = h.chunk(2, dim=-1)
        return reparameterize(mu, logvar, torch.randn_like(mu)), kl_to_standard_normal(mu, logvar)

    return reparam_kl


def _backend_and_seed():
    """The fused ops' backend here (Triton on CUDA, torch on the CPU) and a seed for it."""
    if CUDA:
        return "triton", rng.draw_seed(DEVICE)
    return "torch", rng.new_seed()


def _reparam_kl_fast():
    backend, seed = _backend_and_seed()
    return lambda h: reparam_kl(h, seed, Stream.EPS0, backend=backend)


def _detector_loss_inputs(rows: int):
    width = ithp_config().X1_dim
    g = torch.Generator().manual_seed(rows)
    z = torch.randn(rows, width, generator=g).to(DEVICE)
    target = torch.rand(rows, width, generator=g).to(DEVICE)
    return z, target


def _detector_loss_reference():
    """The reference's detector head (the Sigmoid and Dropout that end its MLP) and its MSE."""
    head = ReferenceITHP(ithp_config()).MLP1[4:].to(DEVICE).train()
    return lambda z, target: (F.mse_loss(head(z), target),)


def _detector_loss_fast():
    p = ithp_config().drop_prob
    backend, seed = _backend_and_seed()
    return lambda z, target: (detector_loss(z, target, seed, Stream.MLP1_OUTPUT, p, backend=backend),)


_B0 = lambda: ithp_config().B0_dim  # noqa: E731
_X1 = lambda: ithp_config().X1_dim  # noqa: E731
F32 = dtype_bytes(torch.float32)

OPS = {
    "reparam_kl": Op(
        _reparam_kl_inputs,
        _reparam_kl_reference,
        _reparam_kl_fast,
        forward_bytes=lambda n: (2 + 1) * n * _B0() * F32,  # h in, b out
        backward_bytes=lambda n: (2 + 1 + 2) * n * _B0() * F32,  # h, db in; dh out
    ),
    "detector_loss": Op(
        _detector_loss_inputs,
        _detector_loss_reference,
        _detector_loss_fast,
        forward_bytes=lambda n: 2 * n * _X1() * F32,  # z, target in
        backward_bytes=lambda n: 3 * n * _X1() * F32,  # z, target in; dz out
    ),
}


def _cases():
    cases = []
    for op in OPS:
        for direction in ("forward", "backward"):
            for rows in ROWS:
                for provider in PROVIDERS:
                    if provider.endswith("torch.compile") and (not COMPILE or rows not in COMPILED_ROWS):
                        continue
                    cases.append(pytest.param(op, direction, rows, provider, id=f"{op}-{direction}-N{rows}-{provider}"))
    return cases


def kernel_fn(op: Op, direction: str, rows: int, provider: str) -> Callable[[], object]:
    if provider == "reference":
        compute = op.reference()
    elif provider == "reference+torch.compile":
        compute = compiled(op.reference())
    elif provider == "ithp_fast":
        compute = op.fast()
    else:
        raise ValueError(f"provider: unknown {provider!r}")
    inputs = op.inputs(rows)
    if direction == "forward":
        return torch.no_grad()(lambda: compute(*inputs))
    first = inputs[0].requires_grad_(True)
    outputs = [o for o in compute(*inputs) if o.requires_grad]
    grads = [torch.ones_like(o) if o.dim() == 0 else torch.randn_like(o) for o in outputs]
    return lambda: torch.autograd.grad(outputs, first, grads, retain_graph=True)


@pytest.mark.parametrize("name, direction, rows, provider", _cases())
def test_fused_op(measure, name, direction, rows, provider):
    op = OPS[name]
    fn = kernel_fn(op, direction, rows, provider)
    nbytes = (op.forward_bytes if direction == "forward" else op.backward_bytes)(rows)
    measure(
        fn,
        group=f"{name} {direction} N={rows}",
        provider=provider,
        nbytes=nbytes,
        extra={"dtype": "float32", "rows": rows},
        compare=False,  # each provider draws its own noise and dropout mask (the unit tests fix them)
    )
