"""TCMax: every form against the direct O(B^M · C) definition written out below.

The direct form builds the full score tensor ``S`` over all pairings and applies the spec's
formulas literally; it is the only place the definition is spelt out in the tests.
"""

import math

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ithp_fast import losses
from ithp_fast.backends import triton_interpreter_on
from ithp_fast.kernels.tcmax import tcmax_factorised, tcmax_factorised_torch
from ithp_fast.losses import TCMaxLoss, tcmax_loss, tcmax_loss_multi, tcmax_loss_pairwise, tcmax_loss_sampled

F64 = dict(rtol=0.0, atol=1e-10)


def direct_from_scores(scores: torch.Tensor, labels: torch.Tensor):
    """``scores [B]*M + [C]``: ``P = softmax`` over every entry; the joint term and one per axis."""
    M = scores.dim() - 1
    B = labels.shape[0]
    log_p = scores - torch.logsumexp(scores.reshape(-1), dim=0)
    i = torch.arange(B)
    loss = -log_p[(i,) * M + (labels,)].mean() - math.log(B)
    unimodal = []
    for m in range(M):
        at_i = log_p.movedim(m, 0)[i, ..., labels]  # [B (i), B, ..., B]: axis m fixed at i, class y_i
        unimodal.append(-torch.logsumexp(at_i.reshape(B, -1), dim=1).mean() - math.log(B))
    return loss, *unimodal


def direct_tcmax(logits, labels):
    """Linear fusion: ``S[j_1, ..., j_M, c] = sum_m logits[m][j_m, c]``."""
    M = len(logits)
    B, C = logits[0].shape
    scores = sum(L.reshape([B if a == m else 1 for a in range(M)] + [C]) for m, L in enumerate(logits))
    return direct_from_scores(scores, labels)


def direct_pairwise(fusion, feats_a, feats_v, labels):
    """Non-linear fusion: every pair evaluated at once, ``S[j, k] = fusion(a_j, v_k)``."""
    B = feats_a.shape[0]
    za = feats_a.repeat_interleave(B, dim=0)
    zv = feats_v.repeat(B, 1)
    return direct_from_scores(fusion(za, zv).view(B, B, -1), labels)


def values_and_grads(fn, inputs, weights):
    """Outputs of ``fn()`` and the gradient of ``sum_k weights[k] * out[k]`` w.r.t. ``inputs``
    (a term of weight 0 is left out, as by a user who differentiates only some of the losses)."""
    out = fn()
    total = sum(w * o for w, o in zip(weights, out) if w != 0)
    grads = torch.autograd.grad(total, inputs)
    return [o.detach() for o in out], grads


def random_logits(M, B, C, dtype=torch.float64, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = [(scale * torch.randn(B, C, generator=g, dtype=torch.float64)).to(dtype).requires_grad_()
              for _ in range(M)]
    labels = torch.randint(0, C, (B,), generator=g)
    return logits, labels


class Largest(TorchDispatchMode):
    """Records the largest tensor any operator returns (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


# --------------------------------------------------------------------------------------------
# Factorised form == direct definition


@pytest.mark.parametrize("B,C", [(1, 2), (1, 300), (2, 2), (7, 3), (33, 17), (64, 300), (256, 2), (256, 300)])
def test_factorised_equals_direct_two_modalities(B, C):
    (la, lv), labels = random_logits(2, B, C, seed=B * 1000 + C)
    weights = torch.randn(3, dtype=torch.float64)
    want_v, want_g = values_and_grads(lambda: direct_tcmax([la, lv], labels), (la, lv), weights)
    got_v, got_g = values_and_grads(lambda: tcmax_loss(la, lv, labels, backend="torch"), (la, lv), weights)
    for got, want in zip(got_v + list(got_g), want_v + list(want_g)):
        torch.testing.assert_close(got, want, **F64)


@pytest.mark.parametrize("B,C", [(1, 2), (5, 7), (12, 3)])
def test_factorised_equals_direct_three_modalities(B, C):
    logits, labels = random_logits(3, B, C, seed=B + C)
    weights = torch.randn(4, dtype=torch.float64)

    def multi():
        loss, unimodal = tcmax_loss_multi(logits, labels, backend="torch")
        return (loss, *unimodal)

    want_v, want_g = values_and_grads(lambda: direct_tcmax(logits, labels), logits, weights)
    got_v, got_g = values_and_grads(multi, logits, weights)
    for got, want in zip(got_v + list(got_g), want_v + list(want_g)):
        torch.testing.assert_close(got, want, **F64)


def test_losses_are_non_negative_and_module_matches_function():
    (la, lv), labels = random_logits(2, 50, 6, scale=5.0)
    out = tcmax_loss(la, lv, labels)
    assert all(float(o.detach()) >= 0 for o in out)
    for a, b in zip(TCMaxLoss()(la, lv, labels), out):
        torch.testing.assert_close(a, b, **F64)


@pytest.mark.parametrize("kind", ["wide", "offset", "mixed"])
def test_float32_large_logits_finite_and_match_float64(kind):
    B, C = 2048, 300
    g = torch.Generator().manual_seed(1)
    base = torch.randn(2, B, C, generator=g)
    if kind == "wide":  # logits spread over +-1e4
        x = 1e4 * base
    elif kind == "offset":  # all near 1e4 or -1e4: a small loss that is a difference of large numbers
        x = base + torch.tensor([1e4, -1e4])[:, None, None]
    else:  # both signs mixed in every column
        x = 1e4 * torch.sign(base) + 3 * torch.randn(2, B, C, generator=g)
    x = x.float()
    labels = torch.randint(0, C, (B,), generator=g)
    weights = torch.randn(3, dtype=torch.float64)
    results = {}
    for dtype in (torch.float32, torch.float64):
        la, lv = (t.to(dtype).requires_grad_() for t in x)
        results[dtype] = values_and_grads(lambda: tcmax_loss(la, lv, labels, backend="torch"), (la, lv), weights)
    (v32, g32), (v64, g64) = results[torch.float32], results[torch.float64]
    for got, want in zip(v32, v64):
        assert torch.isfinite(got)
        assert abs(float(got) - float(want)) <= 1e-4 * max(1.0, abs(float(want))), (float(got), float(want))
    for got, want in zip(g32, g64):
        assert torch.isfinite(got).all()
        assert (got.double() - want).abs().max() <= 1e-4 * want.abs().max()


def test_factorised_never_builds_b_b_c():
    """B = 2048, C = 300: no operator (forward or backward) returns anything near B·B·C."""
    B, C = 2048, 300
    (la, lv), labels = random_logits(2, B, C, dtype=torch.float32)
    with Largest() as seen:
        loss, loss_a, loss_v = tcmax_loss(la, lv, labels, backend="torch")
        (loss + loss_a + loss_v).backward()
    assert seen.numel <= 2 * B * C
    # the probe does see a B·B·C tensor when one is built
    (sa, sv), small = random_logits(2, 64, 30)
    with Largest() as control:
        direct_tcmax([sa, sv], small)[0].backward()
    assert control.numel >= 64 * 64 * 30


# --------------------------------------------------------------------------------------------
# Triton kernel (CUDA, or Triton's interpreter on the CPU) == the PyTorch form


TRITON_SHAPES = [
    # (M, B, C, launch overrides): several class blocks, row splits and ragged tiles
    (2, 1, 2, dict()),
    (2, 37, 11, dict(block_b=8, block_c=4, splits=3)),
    (2, 20, 33, dict(block_b=16, block_c=16, splits=1)),
    (3, 9, 5, dict(block_b=4, block_c=4, splits=4)),
    (3, 150, 9, dict(block_b=2, block_c=4, splits=40)),  # more splits than the merge takes at once
    (2, 300, 70, dict()),  # the default launch configuration
]


@pytest.mark.parametrize("M,B,C,launch", TRITON_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_triton_kernel_equals_torch_form(M, B, C, launch, dtype):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    logits, labels = random_logits(M, B, C, dtype=dtype, scale=3.0, seed=M * B * C)
    logits = [L.detach().to(device).requires_grad_() for L in logits]
    labels = labels.to(device=device, dtype=torch.int32)
    weights = torch.randn(M + 1, dtype=torch.float64)
    want_v, want_g = values_and_grads(lambda: tuple(tcmax_factorised_torch(logits, labels)), logits, weights)
    got_v, got_g = values_and_grads(lambda: tuple(tcmax_factorised(logits, labels, backend="triton", **launch)),
                                    logits, weights)
    tol = F64 if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    for got, want in zip(got_v, want_v):
        torch.testing.assert_close(got, want, **tol)
    gtol = F64 if dtype == torch.float64 else dict(rtol=2e-2, atol=1e-3) if dtype == torch.bfloat16 else tol
    for got, want in zip(got_g, want_g):
        assert got.dtype == dtype
        torch.testing.assert_close(got, want, **gtol)


def test_triton_kernel_float32_large_logits_match_float64():
    device = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator().manual_seed(4)
    x = (torch.randn(2, 64, 16, generator=g) + torch.tensor([1e4, -1e4])[:, None, None]).float().to(device)
    labels = torch.randint(0, 16, (64,), generator=g).to(device)
    weights = torch.randn(3, dtype=torch.float64)
    results = []
    for dtype in (torch.float32, torch.float64):
        logits = [t.to(dtype).requires_grad_() for t in x]
        launch = dict(block_b=16, block_c=8, splits=2)
        results.append(values_and_grads(lambda: tuple(tcmax_factorised(logits, labels, backend="triton", **launch)),
                                        logits, weights))
    (v32, g32), (v64, g64) = results
    for got, want in zip(v32, v64):
        assert abs(float(got) - float(want)) <= 1e-5, (float(got), float(want))
    for got, want in zip(g32, g64):
        assert (got.double() - want).abs().max() <= 1e-5 * want.abs().max()


def test_triton_kernel_reads_strided_logits_and_skips_unneeded_grads():
    device = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator().manual_seed(3)
    la = torch.randn(7, 13, generator=g, dtype=torch.float64).to(device).t().requires_grad_()  # [13, 7], strided
    lv = torch.randn(13, 7, generator=g, dtype=torch.float64).to(device)  # no gradient wanted
    labels = torch.randint(0, 7, (13,), generator=g).to(device)
    want = tcmax_factorised_torch([la, lv], labels)
    got = tcmax_factorised([la, lv], labels, backend="triton", block_b=4, block_c=4, splits=2)
    torch.testing.assert_close(got, want, **F64)
    (g_want,) = torch.autograd.grad(want.sum(), la)
    (g_got,) = torch.autograd.grad(got.sum(), la)
    torch.testing.assert_close(g_got, g_want, **F64)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("bad", [-1, 6, 2**31 - 1], ids=["negative", "C", "huge"])
def test_unchecked_out_of_range_labels_give_nan(backend, bad):
    """check_labels=False skips the host-side range check; a label outside [0, C) then makes
    every loss and every gradient NaN, found on the device (no sync, no out-of-bounds read)."""
    if backend == "triton" and not (torch.cuda.is_available() or triton_interpreter_on()):
        pytest.skip("Triton needs CUDA or its interpreter")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    (la, lv), labels = random_logits(2, 9, 6, seed=12)
    la, lv = (t.detach().to(device).requires_grad_() for t in (la, lv))
    labels = labels.to(device)
    labels[4] = bad
    out = tcmax_loss(la, lv, labels, backend=backend, check_labels=False)
    assert all(torch.isnan(o) for o in out)
    grads = torch.autograd.grad(out[0], (la, lv))
    assert all(torch.isnan(g).all() for g in grads)
    with pytest.raises(ValueError, match=r"labels: class indices must lie in \[0, C\)"):
        tcmax_loss(la, lv, labels, backend=backend)


# --------------------------------------------------------------------------------------------
# Classes masked with -inf logits: probability 0, exactly as in the direct definition


def masked_logits(case, B=9, C=6, seed=11):
    """Two modalities' float64 logits with -inf entries, and labels, for one masking ``case``."""
    (la, lv), labels = random_logits(2, B, C, seed=seed)
    la, lv = la.detach(), lv.detach()
    labels = torch.arange(B) % 3  # classes 0, 1, 2 carry labels; 3, 4, 5 none
    if case == "class_in_one_modality":
        la[:, 4] = -math.inf
    elif case == "class_in_every_modality":
        la[:, 4] = lv[:, 4] = -math.inf
        la[:, 5] = -math.inf
    elif case == "scattered":  # entries masked here and there, never a row's own label
        g = torch.Generator().manual_seed(seed)
        for L in (la, lv):
            hide = torch.rand(B, C, generator=g) < 0.3
            hide[torch.arange(B), labels] = False
            L[hide] = -math.inf
    elif case == "own_label_entry":  # example 4's own class is impossible for modality a: loss = +inf
        la[4, labels[4]] = -math.inf
    elif case == "impossible_label":  # class 1 is impossible for modality a, and three examples carry it
        la[:, 1] = -math.inf
    elif case == "all_of_modality_a":  # every logit of one modality -inf: nothing possible, logZ = -inf
        la[:] = -math.inf
    elif case == "all_of_modality_v":
        lv[:] = -math.inf
    return [la.requires_grad_(), lv.requires_grad_()], labels


MASKED_CASES = ["class_in_one_modality", "class_in_every_modality", "scattered", "own_label_entry",
                "impossible_label", "all_of_modality_a", "all_of_modality_v"]


@pytest.mark.parametrize("case", MASKED_CASES)
@pytest.mark.parametrize("weights", [(1.0, 0.5, -2.0), (1.0, 0.0, 0.0)], ids=["all", "joint_only"])
@pytest.mark.parametrize("backend", ["torch", "triton", "pairwise"])
def test_masked_classes_equal_direct(case, weights, backend):
    """-inf logits are impossible classes (or pairings): values and gradients are the direct
    definition's, infinities and NaNs included -- +inf where a label is impossible; a NaN
    gradient where a differentiated unimodal loss is infinite (its log-sum-exp runs over nothing
    possible), a finite one where only the joint loss is differentiated."""
    if backend == "triton" and not (torch.cuda.is_available() or triton_interpreter_on()):
        pytest.skip("Triton needs CUDA or its interpreter")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    logits, labels = masked_logits(case)
    logits = [L.detach().to(device).requires_grad_() for L in logits]
    labels = labels.to(device)
    launch = dict(block_b=4, block_c=4, splits=2) if backend == "triton" else {}
    want_v, want_g = values_and_grads(lambda: direct_tcmax(logits, labels), logits, weights)
    if backend == "pairwise":  # the chunked form for any fusion, here the sum
        got_v, got_g = values_and_grads(lambda: tcmax_loss_pairwise(torch.add, *logits, labels, chunk_size=4),
                                        logits, weights)
    else:
        got_v, got_g = values_and_grads(lambda: tuple(tcmax_factorised(logits, labels, backend=backend, **launch)),
                                        logits, weights)
    for got, want in zip(got_v + list(got_g), want_v + list(want_g)):
        torch.testing.assert_close(got, want, equal_nan=True, **F64)
    if case in ("class_in_one_modality", "class_in_every_modality", "scattered"):
        assert all(torch.isfinite(v) for v in got_v) and all(torch.isfinite(g).all() for g in got_g)


@pytest.mark.skipif(not triton_interpreter_on(), reason="reads a sparse file through Triton's CPU interpreter")
def test_triton_kernel_element_offsets_past_2_to_the_31(tmp_path):
    """Transposed logits whose element offsets (column * column stride) pass 2^31, as with a
    [C, N] buffer read as its transpose: the kernels must compute them in 64 bits. The logits
    live in a sparse file (17 GB of address space, a few pages written), and the views start
    2^31 elements in, so an offset that wrapped to 32 bits would read zeros, not crash."""
    B, C, stride_c, start = 3, 130, 2**24, 2**31
    assert (C - 1) * stride_c > 2**31
    numel = start + (C - 1) * stride_c + 2 * B
    path = tmp_path / "logits.f32"
    with open(path, "wb") as f:
        f.truncate(numel * 4)
    storage = torch.from_file(str(path), shared=True, size=numel, dtype=torch.float32)
    g = torch.Generator().manual_seed(8)
    logits = []
    for m in range(2):
        view = storage.as_strided((B, C), (1, stride_c), start + m * B)
        view.copy_(3 * torch.randn(B, C, generator=g))
        logits.append(view.detach().requires_grad_())
    labels = torch.tensor([0, 129, 64])
    want = tcmax_factorised_torch(logits, labels)
    got = tcmax_factorised(logits, labels, backend="triton")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    weights = torch.tensor([1.0, 0.5, -2.0])
    for g_got, g_want in zip(torch.autograd.grad((got * weights).sum(), logits),
                             torch.autograd.grad((want * weights).sum(), logits)):
        torch.testing.assert_close(g_got, g_want, rtol=1e-5, atol=1e-6)


def test_backend_choice_reaches_the_kernel(monkeypatch):
    import ithp_fast.kernels.tcmax as kernel

    calls = []
    real = kernel.TCMaxFactorised.apply
    monkeypatch.setattr(kernel.TCMaxFactorised, "apply", lambda *a: calls.append(1) or real(*a))
    (la, lv), labels = random_logits(2, 6, 4)
    if not triton_interpreter_on():  # a CUDA machine: the kernel runs on the GPU, not in the interpreter
        la, lv, labels = la.cuda(), lv.cuda(), labels.cuda()
    tcmax_loss(la, lv, labels, backend="torch")
    assert calls == []
    monkeypatch.setenv("ITHP_FAST_BACKEND", "triton")
    via_env = tcmax_loss(la, lv, labels)
    assert calls == [1]
    for a, b in zip(via_env, tcmax_loss(la, lv, labels, backend="reference")):
        torch.testing.assert_close(a, b, **F64)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("B,C", [(256, 10), (1024, 100), (4096, 1000), (2048, 300), (3, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_cuda_default_backend_matches_torch_form(B, C, dtype):
    logits, labels = random_logits(2, B, C, dtype=dtype, scale=4.0, seed=B + C)
    logits = [L.detach().cuda().requires_grad_() for L in logits]
    labels = labels.cuda()
    weights = torch.randn(3, dtype=torch.float64)
    want_v, want_g = values_and_grads(lambda: tcmax_loss(*logits, labels, backend="torch"), logits, weights)
    got_v, got_g = values_and_grads(lambda: tcmax_loss(*logits, labels), logits, weights)
    tol = F64 if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    for got, want in zip(got_v, want_v):
        torch.testing.assert_close(got, want, **tol)
    gtol = dict(rtol=2e-2, atol=1e-3) if dtype == torch.bfloat16 else tol
    for got, want in zip(got_g, want_g):
        torch.testing.assert_close(got, want, **gtol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_memory_is_order_b_c():
    B, C = 2048, 300
    logits, labels = random_logits(2, B, C, dtype=torch.float32)
    la, lv = (L.detach().cuda().requires_grad_() for L in logits)
    labels = labels.cuda()
    for backend in ("triton", "torch"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        loss, loss_a, loss_v = tcmax_loss(la, lv, labels, backend=backend)
        (loss + loss_a + loss_v).backward()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        assert peak < 8 * B * C * 4, (backend, peak)  # the direct form needs B·B·C·4 bytes = 5 GB
        la.grad = lv.grad = None


# --------------------------------------------------------------------------------------------
# Non-linear fusions: chunked pairwise, sampled


class MLPFusion(nn.Module):
    """A non-linear fusion head: MLP on the concatenated pair."""

    def __init__(self, d_a=5, d_v=3, hidden=8, classes=4):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_a + d_v, hidden), nn.Tanh(), nn.Linear(hidden, classes))

    def forward(self, za, zv):
        return self.net(torch.cat([za, zv], dim=-1))


def pair_inputs(B, C=4, seed=0):
    torch.manual_seed(seed)
    fusion = MLPFusion(classes=C).double()
    feats_a = torch.randn(B, 5, dtype=torch.float64, requires_grad=True)
    feats_v = torch.randn(B, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, C, (B,))
    return fusion, feats_a, feats_v, labels


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 9, 50, None])
def test_pairwise_equals_direct_for_any_chunk(chunk_size):
    fusion, feats_a, feats_v, labels = pair_inputs(9)
    inputs = (feats_a, feats_v, *fusion.parameters())
    weights = torch.randn(3, dtype=torch.float64)
    want_v, want_g = values_and_grads(lambda: direct_pairwise(fusion, feats_a, feats_v, labels), inputs, weights)
    got_v, got_g = values_and_grads(
        lambda: tcmax_loss_pairwise(fusion, feats_a, feats_v, labels, chunk_size=chunk_size), inputs, weights
    )
    for got, want in zip(got_v + list(got_g), want_v + list(want_g)):
        torch.testing.assert_close(got, want, **F64)


def test_pairwise_with_linear_fusion_equals_factorised():
    (la, lv), labels = random_logits(2, 11, 6)
    want = tcmax_loss(la, lv, labels)
    got = tcmax_loss_pairwise(torch.add, la, lv, labels, chunk_size=4)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **F64)


def test_pairwise_memory_is_bounded_by_the_chunk():
    B, C, chunk = 256, 40, 4
    fusion = MLPFusion(classes=C)
    feats_a = torch.randn(B, 5, requires_grad=True)
    feats_v = torch.randn(B, 3, requires_grad=True)
    labels = torch.randint(0, C, (B,))
    with Largest() as seen:
        sum(tcmax_loss_pairwise(fusion, feats_a, feats_v, labels, chunk_size=chunk)).backward()
    assert seen.numel <= chunk * B * C
    assert feats_a.grad is not None and fusion.net[0].weight.grad is not None


def test_pairwise_without_grad():
    fusion, feats_a, feats_v, labels = pair_inputs(6)
    with torch.no_grad():
        got = tcmax_loss_pairwise(fusion, feats_a, feats_v, labels, chunk_size=4)
        want = direct_pairwise(fusion, feats_a, feats_v, labels)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **F64)


def test_sampled_over_all_pairs_is_exact():
    fusion, feats_a, feats_v, labels = pair_inputs(7)
    B = 7
    idx_a = torch.arange(B).repeat_interleave(B)
    idx_v = torch.arange(B).repeat(B)
    got = losses._sampled_loss(fusion, feats_a, feats_v, labels, idx_a, idx_v)
    want = direct_pairwise(fusion, feats_a, feats_v, labels)[0]
    torch.testing.assert_close(got, want, **F64)
    (ga,) = torch.autograd.grad(got, feats_a)
    (wa,) = torch.autograd.grad(direct_pairwise(fusion, feats_a, feats_v, labels)[0], feats_a)
    torch.testing.assert_close(ga, wa, **F64)


@pytest.mark.parametrize("num_samples", [None, 5, 40])
def test_sampled_matches_released_expression_and_is_seeded(num_samples):
    fusion, feats_a, feats_v, labels = pair_inputs(10)
    B, C = 10, 4
    got = tcmax_loss_sampled(fusion, feats_a, feats_v, labels, num_samples=num_samples,
                             generator=torch.Generator().manual_seed(5))
    again = tcmax_loss_sampled(fusion, feats_a, feats_v, labels, num_samples=num_samples,
                               generator=torch.Generator().manual_seed(5))
    other = tcmax_loss_sampled(fusion, feats_a, feats_v, labels, num_samples=num_samples,
                               generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(got, again, rtol=0, atol=0)
    assert float(got.detach()) != float(other.detach())
    # the same draws, the released expression: mean-shifted log-mean-exp plus log B + log C
    g = torch.Generator().manual_seed(5)
    n = B if num_samples is None else num_samples
    if num_samples is None:
        ia, iv = torch.arange(B), torch.randint(0, B, (B,), generator=g)
    else:
        ia, iv = torch.randint(0, B, (n,), generator=g), torch.randint(0, B, (n,), generator=g)
    pos = fusion(feats_a, feats_v)[torch.arange(B), labels]
    neg = fusion(feats_a[ia], feats_v[iv])
    shift = neg.mean()
    released = -(pos.mean() - shift) + torch.log(torch.exp(neg - shift).mean()) + math.log(B) + math.log(C)
    torch.testing.assert_close(got, released, **F64)


# --------------------------------------------------------------------------------------------
# Validation: each bad input names the argument


def test_validation_messages():
    la, lv = torch.randn(4, 3), torch.randn(4, 3)
    y = torch.tensor([0, 1, 2, 0])
    cases = [
        (lambda: tcmax_loss(la, lv, torch.tensor([0, 1, 3, 0])), ValueError, r"labels: .*\[0, 3\).*\[0, 3\]"),
        (lambda: tcmax_loss(la, lv, torch.tensor([0, -1, 2, 0])), ValueError, r"labels: .*\[-1, 2\]"),
        (lambda: tcmax_loss(la, lv, y.float()), TypeError, r"labels: expected an integer tensor.*float32"),
        (lambda: tcmax_loss(la, lv, y.bool()), TypeError, r"labels: .*torch.bool"),
        (lambda: tcmax_loss(la, lv, y[:3]), ValueError, r"labels: expected shape \[B\] = \(4,\), got \(3,\)"),
        (lambda: tcmax_loss(la, lv, [0, 1, 2, 0]), TypeError, r"labels: expected an integer torch.Tensor"),
        (lambda: tcmax_loss(la, lv[:3], y), ValueError, r"logits_v: batch size 3 differs from logits_a's 4"),
        (lambda: tcmax_loss(la, lv[:, :2], y), ValueError, r"logits_v: 2 classes differ from logits_a's 3"),
        (lambda: tcmax_loss(la, lv.double(), y), TypeError, r"logits_v: dtype torch.float64 differs"),
        (lambda: tcmax_loss(la[:, 0], lv, y), ValueError, r"logits_a: expected .* \[B, C\], got \(4,\)"),
        (lambda: tcmax_loss(la.long(), lv, y), TypeError, r"logits_a: expected a floating-point tensor"),
        (lambda: tcmax_loss(la[:0], lv[:0], y[:0]), ValueError, r"logits_a: empty batch"),
        (lambda: tcmax_loss_multi([la], y), ValueError, r"logits: TCMax needs at least two modalities, got 1"),
        (lambda: tcmax_loss_multi(la, y), TypeError, r"logits: expected a list"),
        (lambda: tcmax_loss_multi([la, lv, lv[:, :1]], y), ValueError, r"logits\[2\]: 1 classes differ"),
        (lambda: tcmax_loss(la, lv, y, backend="cuda"), ValueError, r"backend: expected one of \(.*\), got 'cuda'"),
    ]
    fusion = MLPFusion(d_a=3, d_v=3, classes=3)
    cases += [
        (lambda: tcmax_loss_pairwise(fusion, la, lv, y, chunk_size=0), ValueError, r"chunk_size: expected a positive"),
        (lambda: tcmax_loss_pairwise(fusion, la, lv[:2], y), ValueError, r"feats_v: batch size 2 differs"),
        (lambda: tcmax_loss_pairwise("head", la, lv, y), TypeError, r"fusion: expected a callable"),
        (lambda: tcmax_loss_pairwise(lambda a, b: a.sum(-1), la, lv, y), ValueError,
         r"fusion: expected .*\[16, C\] for 16 pairs, got \(16,\)"),
        (lambda: tcmax_loss_pairwise(fusion, la, lv, torch.tensor([0, 1, 2, 3])), ValueError, r"labels: .*\[0, 3\)"),
        (lambda: tcmax_loss_pairwise(fusion, la[:0], lv[:0], y[:0]), ValueError, r"feats_a: empty batch"),
        (lambda: tcmax_loss_sampled(fusion, la, lv, y, num_samples=0), ValueError,
         r"num_samples: expected None or a positive int"),
        (lambda: tcmax_loss_sampled(fusion, la, lv, y, generator=3), TypeError,
         r"generator: expected a torch.Generator"),
        (lambda: tcmax_loss_sampled(fusion, la, lv, torch.tensor([0, 1, 2, 5])), ValueError, r"labels: .*\[0, 3\)"),
    ]
    for call, error, pattern in cases:
        with pytest.raises(error, match=pattern):
            call()
