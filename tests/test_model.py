"""ithp_fast.ITHP against the reference: same weights, same noise, same dropout masks.

Dropout is compared through fixed masks: the reference runs with its Dropout modules replaced by
:class:`FixedMaskDropout` holding the masks the fast path drew from its seed (recomputed from
the seed with the backend's stream functions), so values and gradients must agree exactly up to
float rounding. bfloat16 is compared against the float32 reference: the fast path's error must
stay within twice the bfloat16 reference's own error (see test_bfloat16_within_reference_error).
"""

import pytest
import torch
from fused_helpers import (  # noqa: F401 (the fixture is used by name)
    FUSED_BACKENDS,
    FixedMaskDropout,
    keep_mask,
    normals,
    skip_triton_on_cpu_without_interpreter,
)
from helpers import TOLERANCES, make_inputs, make_noise, small_config

import ithp_fast
from ithp_fast.kernels import rng
from ithp_fast.kernels.rng import Stream
from ithp_fast.reference import ITHP as ReferenceITHP

ODD = dict(X0_dim=35, X1_dim=74, X2_dim=47, inter_dim=257, B0_dim=35, B1_dim=1)
DROPOUTS = [  # (module path, index, stream, width key)
    ("encoder1", 2, Stream.ENCODER1_HIDDEN, "inter_dim"),
    ("MLP1", 2, Stream.MLP1_HIDDEN, "inter_dim"),
    ("MLP1", 5, Stream.MLP1_OUTPUT, "X1_dim"),
    ("encoder2", 2, Stream.ENCODER2_HIDDEN, "inter_dim"),
    ("MLP2", 2, Stream.MLP2_HIDDEN, "inter_dim"),
    ("MLP2", 5, Stream.MLP2_OUTPUT, "X2_dim"),
]


def pair(cfg, device, backend, dtype=torch.float32, train=True, eval_sampling="sample"):
    torch.manual_seed(0)
    ref = ReferenceITHP(cfg, eval_sampling=eval_sampling)
    fast = ithp_fast.ITHP(cfg, eval_sampling=eval_sampling, backend=backend)
    fast.load_state_dict(ref.state_dict(), strict=True)
    for m in (ref, fast):
        m.to(device=device, dtype=dtype).train(train)
    return ref, fast


def forward_seed(backend, device, torch_seed):
    """The seed the fast forward draws right after ``torch.manual_seed(torch_seed)``."""
    torch.manual_seed(torch_seed)
    return rng.draw_seed(device) if backend == "triton" else rng.new_seed()


def fix_masks(ref, cfg, backend, seed, lead, device):
    """Give the reference the fast path's dropout masks (training mode, p > 0)."""
    for name, index, stream, key in DROPOUTS:
        width = getattr(cfg, key)
        n = 1
        for s in lead:
            n *= s
        mask = keep_mask(backend, seed, stream, (n, width), cfg.drop_prob, device).view(*lead, width)
        getattr(ref, name)[index] = FixedMaskDropout(mask, cfg.drop_prob)


def loss_of(outputs):
    """Touches all six outputs, so every output's gradient path is exercised."""
    b1, ib, kl0, mse0, kl1, mse1 = outputs
    weights = torch.linspace(-1, 1, b1.numel(), device=b1.device).view_as(b1)
    return ib + (b1.float() * weights).sum() + 0.5 * kl0 + 2 * mse0 - kl1 + 3 * mse1


def run(model, inputs, noise, torch_seed=123):
    x, visual, acoustic = (t.detach().clone().requires_grad_(True) for t in inputs)
    torch.manual_seed(torch_seed)
    out = model(x, visual, acoustic, noise=noise)
    loss_of(out).backward()
    grads = {"x": x.grad, "visual": visual.grad, "acoustic": acoustic.grad}
    grads.update({n: p.grad for n, p in model.named_parameters()})
    return [o.detach() for o in out], grads


def clear_of_relu_kinks(ref, inputs, noise, tau=1e-4, tries=50):
    """Redraw the rows whose pre-ReLU values after the first layer lie within ``tau`` of zero.

    Behind the first Linear the two paths see ``b0`` / ``b1`` that differ by float rounding
    (the fused kernel's exp and fused multiply-add against torch's separate ops): at a ReLU kink
    such an ulp flips the derivative and the math is no longer the same. Rows are independent
    (and the fixed masks depend on position only), so redrawing a row moves only that row.
    """
    inputs, noise = [t.clone() for t in inputs], [t.clone() for t in noise]
    flat = [t.view(-1, t.shape[-1]) for t in inputs + noise]
    layers = [ref.MLP1[0], ref.encoder2[0], ref.MLP2[0]]
    gen = torch.Generator().manual_seed(99)
    for _ in range(tries):
        near = []
        hooks = [m.register_forward_hook(lambda m, i, out: near.append((out.abs() < tau).flatten(0, -2).any(-1)))
                 for m in layers]
        with torch.no_grad():
            ref(*inputs, noise=tuple(noise))
        for h in hooks:
            h.remove()
        rows = torch.stack(near).any(0).nonzero().flatten()
        if rows.numel() == 0:
            return tuple(inputs), tuple(noise)
        for t, draw in zip(flat, (torch.randn, torch.rand, torch.rand, torch.randn, torch.randn)):
            t[rows] = draw(rows.numel(), t.shape[-1], generator=gen).to(t)
    raise AssertionError(f"rows near a ReLU kink after {tries} redraws")


def assert_same(got, want, dtype=torch.float32):
    (out_g, grads_g), (out_w, grads_w) = got, want
    tol = TOLERANCES[dtype]
    for i, (a, b) in enumerate(zip(out_g, out_w)):
        assert a.shape == b.shape and a.dtype == b.dtype, f"output {i}"
        torch.testing.assert_close(a, b, **tol, msg=lambda m: f"output {i}: {m}")
    for name in grads_w:
        a, b = grads_g[name], grads_w[name]
        scale = b.abs().max().item()
        torch.testing.assert_close(a, b, rtol=tol["rtol"], atol=tol["atol"] * max(1.0, scale),
                                   msg=lambda m: f"grad {name}: {m}")


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("p", [0.0, 0.3])
@pytest.mark.parametrize("lead", [(3, 5), (7,), (1,)], ids=str)
def test_matches_reference(device, backend, train, p, lead):
    cfg = small_config(drop_prob=p)
    ref, fast = pair(cfg, device, backend, train=train)
    inputs = make_inputs(cfg, lead, device=device)
    noise = make_noise(cfg, lead, device=device)
    if train and p > 0:
        fix_masks(ref, cfg, backend, forward_seed(backend, device, 123), lead, device)
    inputs, noise = clear_of_relu_kinks(ref, inputs, noise)
    assert_same(run(fast, inputs, noise), run(ref, inputs, noise))


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("lead", [(1000,), (2, 25)], ids=str)
def test_odd_widths(device, backend, lead):
    """Widths 1, 35, 47, 74, 257 and rows 1000 / 50: none a multiple of a block size."""
    cfg = small_config(drop_prob=0.3, **ODD)
    ref, fast = pair(cfg, device, backend)
    inputs = make_inputs(cfg, lead, device=device)
    noise = make_noise(cfg, lead, device=device)
    fix_masks(ref, cfg, backend, forward_seed(backend, device, 123), lead, device)
    inputs, noise = clear_of_relu_kinks(ref, inputs, noise)
    assert_same(run(fast, inputs, noise), run(ref, inputs, noise))


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_generated_noise_is_the_streams_noise(device, backend):
    """Without injected noise, eps comes from the seed's streams; the backward uses the same eps."""
    cfg = small_config(drop_prob=0.3)
    lead = (4, 6)
    ref, fast = pair(cfg, device, backend)
    inputs = make_inputs(cfg, lead, device=device)
    seed = forward_seed(backend, device, 123)
    fix_masks(ref, cfg, backend, seed, lead, device)
    noise = tuple(normals(backend, seed, s, (24, w), device).view(*lead, w)
                  for s, w in ((Stream.EPS0, cfg.B0_dim), (Stream.EPS1, cfg.B1_dim)))
    assert_same(run(fast, inputs, None), run(ref, inputs, noise))


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_non_contiguous_inputs(device, backend):
    cfg = small_config(drop_prob=0.3)
    ref, fast = pair(cfg, device, backend)
    x, visual, acoustic = make_inputs(cfg, (5, 3), device=device)
    inputs = (x.transpose(0, 1), visual.transpose(0, 1), acoustic.transpose(0, 1))
    assert not any(t.is_contiguous() for t in inputs)
    noise = make_noise(cfg, (3, 5), device=device)
    fix_masks(ref, cfg, backend, forward_seed(backend, device, 123), (3, 5), device)
    assert_same(run(fast, inputs, noise), run(ref, inputs, noise))


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_one_dimensional_input(device, backend):
    cfg = small_config(drop_prob=0.0)
    ref, fast = pair(cfg, device, backend)
    inputs = make_inputs(cfg, (), device=device)
    noise = make_noise(cfg, (), device=device)
    got, want = run(fast, inputs, noise), run(ref, inputs, noise)
    assert got[0][0].shape == (cfg.B1_dim,)
    assert_same(got, want)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_eval_posterior_mean(device, backend):
    cfg = small_config()
    ref, fast = pair(cfg, device, backend, train=False, eval_sampling="mean")
    inputs = make_inputs(cfg, (3, 5), device=device)
    assert_same(run(fast, inputs, None), run(ref, inputs, None))
    with torch.no_grad():
        assert torch.equal(fast(*inputs)[0], fast(*inputs)[0])  # no noise at all


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("p", [0.0, 0.3])
def test_bfloat16_within_reference_error(device, backend, p):
    """bfloat16: error (relative L2) against float32 math on the same bfloat16 weights and inputs.

    Each output, and all gradients taken together, must stay within twice the bfloat16
    reference's own error plus 0.01; a single gradient tensor within twice plus 0.02, or 0.15:
    the few ReLUs whose sign a bfloat16 rounding flips move whole rows of one layer's gradient,
    differently for every rounding order (800 rows average that out enough).
    """
    cfg = small_config(drop_prob=p)
    lead = (16, 50)
    ref32, _ = pair(cfg, device, backend)
    ref16, fast16 = pair(cfg, device, backend, dtype=torch.bfloat16)
    ref32.load_state_dict({k: v.float() for k, v in ref16.state_dict().items()})
    inputs = make_inputs(cfg, lead, device=device, dtype=torch.bfloat16)
    noise = make_noise(cfg, lead, device=device, dtype=torch.bfloat16)
    if p > 0:
        seed = forward_seed(backend, device, 123)
        for ref in (ref32, ref16):
            fix_masks(ref, cfg, backend, seed, lead, device)
    truth = run(ref32, [t.float() for t in inputs], tuple(n.float() for n in noise))
    bf16_ref = run(ref16, inputs, noise)
    fast = run(fast16, inputs, noise)
    assert all(o.dtype == torch.bfloat16 for o in fast[0])
    assert all(g.dtype == torch.bfloat16 for g in fast[1].values())

    def err(got, want):
        return ((got.float() - want).norm() / want.norm().clamp_min(1e-6)).item()

    for i, want in enumerate(truth[0]):
        assert err(fast[0][i], want) <= 2 * err(bf16_ref[0][i], want) + 1e-2, f"output {i}"
    for name, want in truth[1].items():
        assert err(fast[1][name], want) <= max(2 * err(bf16_ref[1][name], want) + 0.02, 0.15), f"grad {name}"

    def all_grads(grads):
        return torch.cat([grads[name].float().flatten() for name in truth[1]])

    assert err(all_grads(fast[1]), all_grads(truth[1])) <= 2 * err(all_grads(bf16_ref[1]), all_grads(truth[1])) + 1e-2


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_manual_seed_reproduces_and_calls_differ(device, backend):
    cfg = small_config(drop_prob=0.3)
    _, fast = pair(cfg, device, backend)
    inputs = make_inputs(cfg, (3, 5), device=device)
    torch.manual_seed(5)
    a = fast(*inputs)
    b = fast(*inputs)
    torch.manual_seed(5)
    c = fast(*inputs)
    for u, w in zip(a, c):
        assert torch.equal(u, w)
    assert not torch.equal(a[0], b[0]) and not torch.equal(a[3], b[3])


def test_state_dict_both_ways(device):
    cfg = small_config()
    ref = ReferenceITHP(cfg).to(device)
    fast = ithp_fast.ITHP(cfg).to(device)
    assert list(ref.state_dict()) == list(fast.state_dict())
    fast.load_state_dict(ref.state_dict(), strict=True)
    ref2 = ReferenceITHP(cfg).to(device)
    ref2.load_state_dict(fast.state_dict(), strict=True)
    for (k, a), (_, b) in zip(ref.state_dict().items(), ref2.state_dict().items()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
def test_bad_inputs_fail_before_any_work(device, backend):
    cfg = small_config()
    _, fast = pair(cfg, device, backend)
    x, visual, acoustic = make_inputs(cfg, (3, 5), device=device)
    with pytest.raises(ValueError, match="swapped"):
        fast(x, acoustic, visual)
    with pytest.raises(ValueError, match="x: expected last dimension X0_dim"):
        fast(x[..., :-1], visual, acoustic)
    with pytest.raises(ValueError, match="noise\\[1\\]"):
        fast(x, visual, acoustic, noise=make_noise(cfg, (3, 5), device=device)[:1] * 2)
    with pytest.raises(TypeError, match="dtype"):
        fast(x.double(), visual, acoustic)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_torch_compile_traces_one_graph_equal_to_the_eager_fused_path(device, backend, train):
    """torch.compile(fullgraph=True) of the fast model: one graph, no break, and the eager fused
    path's numbers (the compiled graph traces the reference formula: two implementations agree)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    cfg = small_config(drop_prob=0.0)
    _, fast = pair(cfg, device, backend, train=train)
    inputs = make_inputs(cfg, (3, 5), device=device)
    noise = make_noise(cfg, (3, 5), device=device)
    compiled = torch.compile(fast, backend="aot_eager", fullgraph=True)
    got = run(compiled, inputs, noise)
    got[1].update({n: p.grad.clone() for n, p in fast.named_parameters()})
    fast.zero_grad(set_to_none=True)
    assert_same(got, run(fast, inputs, noise))
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]


def test_reference_backend_is_the_reference(device):
    cfg = small_config()
    ref, fast = pair(cfg, device, "reference")
    inputs = make_inputs(cfg, (3, 5), device=device)
    noise = make_noise(cfg, (3, 5), device=device)
    torch.manual_seed(9)
    a = ref(*inputs, noise=noise)
    torch.manual_seed(9)
    b = fast(*inputs, noise=noise)
    for u, w in zip(a, b):
        assert torch.equal(u, w)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host synchronisation is a CUDA matter")
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_no_host_sync_on_cuda(train):
    """Forward and backward never wait on the GPU (torch's sync debug mode turns a sync into an error)."""
    cfg = small_config(drop_prob=0.3)
    _, fast = pair(cfg, "cuda", "triton", train=train)
    inputs = make_inputs(cfg, (8, 50), device="cuda")
    fast(*inputs)[1].backward()  # compile the kernels first
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = fast(*inputs)
        loss_of(out).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fused kernels are compiled on CUDA only")
def test_cuda_compile_keeps_the_fused_kernels():
    """On CUDA, torch.compile (inductor) keeps the registered Triton ops in the graph (their kernels
    appear in the generated code by name) and computes the eager fused path's numbers."""
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    cfg = small_config(drop_prob=0.0)
    _, fast = pair(cfg, "cuda", "triton", train=True)
    inputs = make_inputs(cfg, (3, 5), device="cuda")
    noise = make_noise(cfg, (3, 5), device="cuda")
    compiled = torch.compile(fast, fullgraph=True)
    (got, code) = run_and_get_code(lambda: run(compiled, inputs, noise))
    got[1].update({n: p.grad.clone() for n, p in fast.named_parameters()})
    fast.zero_grad(set_to_none=True)
    assert_same(got, run(fast, inputs, noise))
    generated = "\n".join(code)
    for kernel in ("_reparam_kl_forward_kernel", "_detector_loss_forward_kernel"):
        assert kernel in generated, kernel
