"""Bytes saved for backward in a training step: the fast path keeps at least 2x fewer.

Counted by :func:`ithp_fast.tools.profile.saved_for_backward` (``torch.autograd.graph.saved_tensors_hooks``,
unique storages: a tensor saved by two nodes counts once), in training mode with dropout, at the
paper's widths.
"""

import pytest
import torch
from fused_helpers import FUSED_BACKENDS, skip_triton_on_cpu_without_interpreter  # noqa: F401

import ithp_fast
from ithp_fast import ITHPConfig
from ithp_fast.reference import ITHP as ReferenceITHP
from ithp_fast.tools.profile import saved_for_backward


def saved_bytes(model, inputs):
    """(all saved bytes, saved bytes that are not parameters) of one forward."""
    return saved_for_backward(lambda: model(*inputs), list(model.parameters()))


def models(device, backend):
    cfg = ITHPConfig.for_dataset("mosi")
    torch.manual_seed(0)
    ref = ReferenceITHP(cfg).to(device).train()
    fast = ithp_fast.ITHP(cfg, backend=backend).to(device).train()
    fast.load_state_dict(ref.state_dict())
    return cfg, ref, fast


def inputs(cfg, batch, device):
    return (torch.randn(batch, 50, cfg.X0_dim, device=device), torch.rand(batch, 50, cfg.X2_dim, device=device),
            torch.rand(batch, 50, cfg.X1_dim, device=device))


def test_torch_backend_training_step_32x50():
    cfg, ref, fast = models("cpu", "torch")
    batch = inputs(cfg, 32, "cpu")
    ref_total, ref_acts = saved_bytes(ref, batch)
    fast_total, fast_acts = saved_bytes(fast, batch)
    assert ref_total >= 2 * fast_total, (ref_total, fast_total)
    assert ref_acts >= 2 * fast_acts, (ref_acts, fast_acts)


MIN_RATIO = {"cpu": 2.0, "cuda": 1.7}
"""How many times fewer bytes the fast path keeps, at least. On CUDA the reference's dropout keeps
1-byte masks (the CPU's are 4-byte), so the same fast path saves less against it: measured 1.73x
(triton, 32x50) and 1.85x / 1.77x (2x50) on an H100, 2026-11-26."""


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_activations_saved(device, backend):
    """Without the parameters (which both keep), on a smaller batch (the interpreter is slow)."""
    cfg, ref, fast = models(device, backend)
    batch = inputs(cfg, 2, device)
    _, ref_acts = saved_bytes(ref, batch)
    _, fast_acts = saved_bytes(fast, batch)
    assert ref_acts >= MIN_RATIO[torch.device(device).type] * fast_acts, (ref_acts, fast_acts)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_triton_training_step_32x50_cuda():
    cfg, ref, fast = models("cuda", "triton")
    batch = inputs(cfg, 32, "cuda")
    ref_total, _ = saved_bytes(ref, batch)
    fast_total, _ = saved_bytes(fast, batch)
    assert ref_total >= MIN_RATIO["cuda"] * fast_total, (ref_total, fast_total)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_masks_keep_only_a_weight_per_row(device, backend):
    """With a token mask and a detector mask the fast path keeps one weight per row per mean more
    (nothing per element), so it stays as far below the reference as without masks."""
    cfg, ref, fast = models(device, backend)
    x, visual, acoustic = inputs(cfg, 2, device)
    masks = dict(token_mask=torch.tensor([[True] * 50, [True] * 20 + [False] * 30], device=device),
                 detector_mask=torch.tensor([[True, False], [True, True]], device=device))
    _, ref_acts = saved_bytes(ref, (x, visual, acoustic))
    _, fast_acts = saved_bytes(fast, (x, visual, acoustic))
    _, masked_acts = saved_for_backward(lambda: fast(x, visual, acoustic, **masks), list(fast.parameters()))
    rows, means = 2 * 50, 1 + cfg.levels  # the token mask's weights, and one per level's MSE
    assert fast_acts < masked_acts <= fast_acts + 4 * rows * means, (fast_acts, masked_acts)
    assert ref_acts >= MIN_RATIO[torch.device(device).type] * masked_acts, (ref_acts, masked_acts)
