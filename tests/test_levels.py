"""N levels and masks: ithp_fast.ITHP.forward_levels against the reference, values and gradients.

Same weights, same injected noise, and the fast path's dropout masks given to the reference
(:class:`FixedMaskDropout`, recomputed from the forward's seed with each level's streams), for
N = 1, 2, 3, 4 levels, with and without a token mask and a detector mask, on both fused backends
(Triton under its interpreter on the CPU).
"""

import pytest
import torch
from fused_helpers import (  # noqa: F401 (the fixture is used by name)
    FUSED_BACKENDS,
    FixedMaskDropout,
    keep_mask,
    skip_triton_on_cpu_without_interpreter,
)
from helpers import TOKEN_MASKS, TOLERANCES, level_config, make_level_inputs, make_level_noise, token_mask

import ithp_fast
from ithp_fast.kernels import rng
from ithp_fast.kernels.rng import level_streams
from ithp_fast.reference import ITHP as ReferenceITHP

LEAD = (3, 5)
# [3 examples, 4 levels]: level 2 has no example with its detector (its MSE must be 0, not NaN)
DETECTOR_MASK = torch.tensor([[True, False, True, False], [False, False, True, True], [True, False, True, False]])
MASKS = ["none", "token", "detector", "both"]


def pair(cfg, device, backend, dtype=torch.float32, train=True):
    torch.manual_seed(0)
    ref = ReferenceITHP(cfg)
    fast = ithp_fast.ITHP(cfg, backend=backend)
    fast.load_state_dict(ref.state_dict(), strict=True)
    for m in (ref, fast):
        m.to(device=device, dtype=dtype).train(train)
    return ref, fast


def forward_seed(backend, device, torch_seed=123):
    """The seed the fast forward draws right after ``torch.manual_seed(torch_seed)``."""
    torch.manual_seed(torch_seed)
    return rng.draw_seed(device) if backend == "triton" else rng.new_seed()


def fix_masks(ref, backend, seed, lead, device):
    """Give the reference the fast path's dropout masks, level by level."""
    cfg, rows = ref.config, lead[0] * lead[1]
    for k in range(cfg.levels):
        encoder, detector = ref.level_modules(k)
        streams = level_streams(k)
        for module, index, stream, width in ((encoder, 2, streams.encoder_hidden, cfg.inter_dim),
                                             (detector, 2, streams.detector_hidden, cfg.inter_dim),
                                             (detector, 5, streams.detector_output, cfg.detector_dims[k])):
            mask = keep_mask(backend, seed, stream, (rows, width), cfg.drop_prob, device).view(*lead, width)
            module[index] = FixedMaskDropout(mask, cfg.drop_prob)


def masks(kind, levels, device):
    tokens = token_mask(TOKEN_MASKS["ragged"], LEAD[1], device) if kind in ("token", "both") else None
    detectors = DETECTOR_MASK[:, :levels].to(device) if kind in ("detector", "both") else None
    return tokens, detectors


def run(model, x, detectors, noise, token_mask=None, detector_mask=None, *, with_b=True):
    """Outputs and gradients of a loss touching every output (``b`` too unless ``with_b=False``)."""
    x, detectors = x.clone().requires_grad_(True), [d.clone().requires_grad_(True) for d in detectors]
    torch.manual_seed(123)
    b, ib, kls, mses = model.forward_levels(x, detectors, noise=noise, token_mask=token_mask,
                                            detector_mask=detector_mask)
    loss = ib + sum((k + 1) * (kl - 0.5 * mse) for k, (kl, mse) in enumerate(zip(kls, mses)))
    if with_b:
        loss = loss + (b.float() * torch.linspace(-1, 1, b.numel(), device=b.device).view_as(b)).sum()
    loss.backward()
    grads = {"x": x.grad, **{f"detectors[{k}]": d.grad for k, d in enumerate(detectors)}}
    grads.update({n: p.grad for n, p in model.named_parameters()})
    return [b.detach(), ib.detach(), *[t.detach() for t in kls + mses]], grads


def assert_same(got, want, dtype=torch.float32):
    tol = TOLERANCES[dtype]
    for i, (a, b) in enumerate(zip(got[0], want[0])):
        assert a.shape == b.shape and a.dtype == b.dtype, f"output {i}"
        torch.testing.assert_close(a, b, **tol, msg=lambda m: f"output {i}: {m}")
    for name, b in want[1].items():
        a, scale = got[1][name], b.abs().max().item() if b.numel() else 0.0
        torch.testing.assert_close(a, b, rtol=tol["rtol"], atol=tol["atol"] * max(1.0, scale),
                                   msg=lambda m: f"grad {name}: {m}")


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("levels", [1, 2, 3, 4])
@pytest.mark.parametrize("mask", MASKS)
def test_matches_reference(device, backend, levels, mask):
    cfg = level_config(levels)
    ref, fast = pair(cfg, device, backend)
    x, detectors = make_level_inputs(cfg, LEAD, device=device)
    noise = make_level_noise(cfg, LEAD, device=device)
    fix_masks(ref, backend, forward_seed(backend, device), LEAD, device)
    tokens, present = masks(mask, levels, device)
    got = run(fast, x, detectors, noise, tokens, present)
    want = run(ref, x, detectors, noise, tokens, present)
    assert_same(got, want)
    assert all(torch.isfinite(t).all() for t in got[0][1:])
    for name, grad in got[1].items():
        assert torch.isfinite(grad).all(), name
    if tokens is not None:  # the losses give padded tokens no gradient (b's own gradient does)
        pad = ~tokens
        for k in range(levels):
            assert (got[1][f"detectors[{k}]"][pad] == 0).all()
    if present is not None:
        for k in range(levels):
            assert (got[1][f"detectors[{k}]"][~present[:, k]] == 0).all()
            if not present[:, k].any():
                assert got[0][2 + levels + k] == 0  # mse_k of a level with no detector present


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_generated_noise_follows_the_level_streams(device, backend):
    """Without injected noise, level k's eps comes from its stream (levels 3 and 4 included)."""
    from fused_helpers import normals

    cfg = level_config(4)
    ref, fast = pair(cfg, device, backend)
    x, detectors = make_level_inputs(cfg, LEAD, device=device)
    seed = forward_seed(backend, device)
    fix_masks(ref, backend, seed, LEAD, device)
    noise = tuple(normals(backend, seed, level_streams(k).eps, (15, w), device).view(*LEAD, w)
                  for k, w in enumerate(cfg.bottleneck_dims))
    assert_same(run(fast, x, detectors, None), run(ref, x, detectors, noise))


@pytest.mark.parametrize("backend", FUSED_BACKENDS + ("reference",))
def test_masks_that_mask_nothing_change_nothing(device, backend):
    """The released config, two levels: all-True masks give the unmasked forward's values and gradients."""
    cfg = level_config(2)
    _, fast = pair(cfg, device, backend)
    x, detectors = make_level_inputs(cfg, LEAD, device=device)
    noise = make_level_noise(cfg, LEAD, device=device)
    everything = token_mask(TOKEN_MASKS["none-masked"], LEAD[1], device), torch.ones(3, 2, dtype=torch.bool,
                                                                                     device=device)
    assert_same(run(fast, x, detectors, noise, *everything), run(fast, x, detectors, noise))


@pytest.mark.parametrize("backend", FUSED_BACKENDS + ("reference",))
def test_masked_last_tokens_equal_the_batch_cut_short(device, backend):
    """Masking the last two tokens of every example = cutting them off (eval mode: no dropout)."""
    cfg = level_config(3)
    _, fast = pair(cfg, device, backend, train=False)
    x, detectors = make_level_inputs(cfg, LEAD, device=device)
    noise = make_level_noise(cfg, LEAD, device=device)
    present = DETECTOR_MASK[:, :3].to(device)
    masked = run(fast, x, detectors, noise, token_mask([3, 3, 3], LEAD[1], device), present, with_b=False)
    cut = run(fast, x[:, :3], [d[:, :3] for d in detectors], tuple(n[:, :3] for n in noise), None, present,
              with_b=False)
    for a, b in zip(masked[0][1:], cut[0][1:]):  # the losses (b keeps every token)
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(masked[0][0][:, :3], cut[0][0])
    for name, want in cut[1].items():
        got = masked[1][name]
        if name.startswith(("x", "detectors")):  # per token: the cut-off tokens get none
            assert (got[:, 3:] == 0).all(), name
            got = got[:, :3]
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=lambda m: f"grad {name}: {m}")


@pytest.mark.parametrize("backend", FUSED_BACKENDS + ("reference",))
def test_forward_is_forward_levels_in_the_released_order(device, backend):
    """``forward(x, visual, acoustic)`` = ``forward_levels(x, (acoustic, visual))``, masks included."""
    cfg = level_config(2)
    _, fast = pair(cfg, device, backend, train=False)
    x, (acoustic, visual) = make_level_inputs(cfg, LEAD, device=device)
    noise = make_level_noise(cfg, LEAD, device=device)
    tokens, present = masks("both", 2, device)
    b1, ib, kl0, mse0, kl1, mse1 = fast(x, visual, acoustic, noise=noise, token_mask=tokens, detector_mask=present)
    b, ib2, kls, mses = fast.forward_levels(x, (acoustic, visual), noise=noise, token_mask=tokens,
                                            detector_mask=present)
    for u, w in zip((b1, ib, kl0, kl1, mse0, mse1), (b, ib2, *kls, *mses)):
        assert torch.equal(u, w)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("p", [0.0, 0.3])
def test_float64_model_computes_in_float64(device, backend, p):
    """A float64 model's forward and gradients agree with the float64 reference to ~1e-12
    (p = 0.3: the dropout scale 1/(1-p) is not exact in float32, so it must be float64 too)."""
    cfg = level_config(2, drop_prob=p)
    ref, fast = pair(cfg, device, backend, dtype=torch.float64)
    x, detectors = make_level_inputs(cfg, LEAD, dtype=torch.float64, device=device)
    noise = make_level_noise(cfg, LEAD, dtype=torch.float64, device=device)
    if p > 0:
        fix_masks(ref, "torch", forward_seed("torch", device), LEAD, device)  # float64 runs the torch ops
    tokens, present = masks("both", 2, device)
    got, want = run(fast, x, detectors, noise, tokens, present), run(ref, x, detectors, noise, tokens, present)
    assert all(t.dtype == torch.float64 for t in got[0])
    assert_same(got, want, torch.float64)
    got, want = run(fast, x, detectors, noise), run(ref, x, detectors, noise)
    assert_same(got, want, torch.float64)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("lead", [(0, 5), (3, 0)], ids=str)
def test_empty_batch_gives_the_references_result(device, backend, lead):
    """B=0 or T=0: b empty, every loss NaN (torch's mean over nothing), as the reference; with a
    token mask every masked mean is over no row: 0."""
    cfg = level_config(2)
    ref, fast = pair(cfg, device, backend)
    x, (acoustic, visual) = make_level_inputs(cfg, lead, device=device)
    want = ref(x, visual, acoustic)
    got = fast(x, visual, acoustic)
    assert got[0].shape == want[0].shape == lead + (cfg.B1_dim,)
    assert all(torch.isnan(t) for t in got[1:]) and all(torch.isnan(t) for t in want[1:])
    fast(x.requires_grad_(True), visual, acoustic)[1].backward()
    assert x.grad.shape == x.shape
    empty = torch.zeros(lead, dtype=torch.bool, device=device)
    masked = fast(x, visual, acoustic, token_mask=empty)
    assert all(t == 0 for t in masked[1:]) and all(t == 0 for t in ref(x, visual, acoustic, token_mask=empty)[1:])


@pytest.mark.parametrize("levels", [1, 3])
def test_state_dict_keys_and_encode(device, levels):
    """Level k is encoder{k} / MLP{k}; encode chains every level's mean; the fast encode agrees."""
    cfg = level_config(levels)
    ref, fast = pair(cfg, device, "torch", train=False)
    keys = [f"{m}{k}.{i}.{p}" for k in range(1, levels + 1) for m in ("encoder", "MLP") for i in (0, 3)
            for p in ("weight", "bias")]
    assert list(ref.state_dict()) == list(fast.state_dict()) == keys
    x, _ = make_level_inputs(cfg, LEAD, device=device)
    with torch.no_grad():
        b = x
        for k in range(levels):
            b = ref.level_modules(k)[0](b)[..., : cfg.bottleneck_dims[k]]
        torch.testing.assert_close(ref.encode(x), b)
        torch.testing.assert_close(fast.encode(x), b)
        noise = make_level_noise(cfg, LEAD, device=device)
        torch.testing.assert_close(fast.encode(x, sample=True, noise=noise), ref.encode(x, sample=True, noise=noise))
        assert ref.encode(x).shape == LEAD + (cfg.bottleneck_dims[-1],)
