"""NaN and +-Inf stay non-finite exactly where the reference's computation makes them non-finite.

Every fused op (both backends, forward and backward) and every public entry point is run on
inputs with one NaN, +Inf or -Inf at several positions -- the first element, a middle one, the
last one of a Philox lane, the first of the next group of lanes, the last element, and inside a
weight -- and compared with the reference computed by plain PyTorch on the same inputs, noise
and dropout masks. The comparison is of the *pattern*: an entry must be non-finite exactly where
the reference's is (a finite number where the reference has NaN hides a fault; a NaN where the
reference is finite invents one). Finite entries are compared by the ops' own test files.
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from fused_helpers import (  # noqa: F401 (the fixture is used by name)
    FUSED_BACKENDS,
    keep_mask,
    normals,
    op,
    op_seed,
    skip_triton_on_cpu_without_interpreter,
)
from helpers import make_inputs, make_noise, small_config
from test_model import fix_masks, forward_seed, pair

from ithp_fast.kernels.ib_combine import ib_combine
from ithp_fast.kernels.reparam_kl import reparam_kl_partials
from ithp_fast.kernels.rng import GROUP, LANE, Stream
from ithp_fast.reference.ithp import combine_ib, kl_to_standard_normal, reparameterize

DEFAULT_BACKEND = "triton"
VALUES = {"nan": math.nan, "+inf": math.inf, "-inf": -math.inf}


def positions(numel: int) -> dict[str, int]:
    """Flat indices worth poisoning in a tensor of ``numel`` elements (> GROUP)."""
    assert numel > GROUP + 1
    return {"first": 0, "middle": numel // 2 + 3, "lane_end": LANE - 1, "group_start": GROUP, "last": numel - 1}


def poisoned(t: torch.Tensor, index: int, value: float) -> torch.Tensor:
    """A copy of ``t`` with flat element ``index`` set to ``value``."""
    out = t.detach().clone()
    out.view(-1)[index] = value
    return out


def assert_same_pattern(got, want, what: str) -> None:
    """``got`` is non-finite exactly where ``want`` is (None, no gradient, counts as zeros)."""
    if want is None or got is None:
        if want is None and got is None:
            return
        got, want = (t if t is not None else torch.zeros_like(got if want is None else want) for t in (got, want))
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} vs {tuple(want.shape)}"
    differ = torch.isfinite(got) != torch.isfinite(want)
    if differ.any():
        i = int(differ.reshape(-1).nonzero()[0])
        raise AssertionError(f"{what}: {int(differ.sum())} of {differ.numel()} entries differ in finiteness; "
                             f"first at flat index {i}: got {got.reshape(-1)[i].item()}, "
                             f"reference {want.reshape(-1)[i].item()}")


def grads_of(outputs, upstream, inputs):
    """Gradients of ``sum(upstream[k] * outputs[k])`` w.r.t. ``inputs`` (None where unused)."""
    pairs = [(o, g) for o, g in zip(outputs, upstream) if g is not None]
    return torch.autograd.grad([o for o, _ in pairs], inputs, [g for _, g in pairs], allow_unused=True)


def leaves(*tensors):
    return [t.detach().clone().requires_grad_(True) for t in tensors]


# ---------------------------------------------------------------------------------------------
# relu_dropout: relu(a) * mask / (1 - p)

RELU_SHAPE = (9, 257)


def relu_dropout_case(device, backend, p, a, grad_d):
    seed = op_seed(backend, device)
    mask = keep_mask(backend, seed, Stream.ENCODER1_HIDDEN, RELU_SHAPE, p, device)
    (a_fast, a_ref) = leaves(a, a)
    d = op(backend, "relu_dropout")(a_fast, seed, Stream.ENCODER1_HIDDEN, p)
    d_ref = F.relu(a_ref) * mask / (1 - p)
    assert_same_pattern(d, d_ref, "d")
    assert_same_pattern(*(grads_of([out], [grad_d], [x])[0] for out, x in ((d, a_fast), (d_ref, a_ref))), "grad a")


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("p", [0.0, 0.3])
@pytest.mark.parametrize("where", list(positions(math.prod(RELU_SHAPE))))
@pytest.mark.parametrize("value", list(VALUES))
def test_relu_dropout_input(device, backend, p, where, value):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(RELU_SHAPE, generator=g)
    a = poisoned(a, positions(a.numel())[where], VALUES[value]).to(device)
    relu_dropout_case(device, backend, p, a, torch.randn(RELU_SHAPE, generator=g).to(device))


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("where", list(positions(math.prod(RELU_SHAPE))))
@pytest.mark.parametrize("value", list(VALUES))
def test_relu_dropout_upstream_gradient(device, backend, where, value):
    """A non-finite gradient arriving at a dropped element whose ReLU passed stays non-finite
    (dropout's backward multiplies by the mask: NaN * 0), at a ReLU that blocked it is 0."""
    g = torch.Generator().manual_seed(1)
    a = torch.randn(RELU_SHAPE, generator=g).to(device)
    grad_d = torch.randn(RELU_SHAPE, generator=g)
    for index in (positions(a.numel())[where], *range(64)):  # several dropped-and-passed entries among these
        grad_d.view(-1)[index] = VALUES[value]
    relu_dropout_case(device, backend, 0.3, a, grad_d.to(device))


# ---------------------------------------------------------------------------------------------
# reparam_kl: b = mu + eps * exp(logvar / 2), kl = kl_to_standard_normal(mu, logvar)

ROWS, WIDTH = 40, 37  # 1480 elements of mu: more than one group of lanes


def reparam_reference(h, eps, sample):
    mu, logvar = h.chunk(2, dim=-1)
    b = reparameterize(mu, logvar, eps) if sample else mu
    return b, kl_to_standard_normal(mu, logvar)


def reparam_case(device, backend, h, eps_given, sample, upstream):
    seed = op_seed(backend, device)
    eps = eps_given if eps_given is not None else normals(backend, seed, Stream.EPS0, (ROWS, WIDTH), device)
    h_fast, h_ref = leaves(h, h)
    b, parts = reparam_kl_partials(h_fast, seed, Stream.EPS0, eps=eps_given, sample=sample, backend=backend)
    kl = parts.sum()
    b_ref, kl_ref = reparam_reference(h_ref, eps, sample)
    assert_same_pattern(b, b_ref, "b")
    assert_same_pattern(kl, kl_ref, "kl")
    got = grads_of([b, kl], upstream, [h_fast])[0]
    want = grads_of([b_ref, kl_ref], upstream, [h_ref])[0]
    assert_same_pattern(got, want, "grad h")


def mu_logvar_positions():
    """Flat indices into h [ROWS, 2*WIDTH] of mu / logvar elements at the positions of mu's layout."""
    out = {}
    for name, e in positions(ROWS * WIDTH).items():
        row, col = divmod(e, WIDTH)
        out[f"mu_{name}"] = row * 2 * WIDTH + col
        out[f"logvar_{name}"] = row * 2 * WIDTH + WIDTH + col
    return out


UPSTREAM = {"both": (True, True), "b_only": (True, False), "kl_only": (False, True)}


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("where", list(mu_logvar_positions()))
@pytest.mark.parametrize("value", list(VALUES))
@pytest.mark.parametrize("mode", ["generated", "injected", "mean"])
@pytest.mark.parametrize("upstream", list(UPSTREAM))
def test_reparam_kl_input(device, backend, where, value, mode, upstream):
    g = torch.Generator().manual_seed(2)
    h = torch.randn(ROWS, 2 * WIDTH, generator=g)
    h = poisoned(h, mu_logvar_positions()[where], VALUES[value]).to(device)
    eps = torch.randn(ROWS, WIDTH, generator=g).to(device) if mode == "injected" else None
    want_b, want_kl = UPSTREAM[upstream]
    grads = (torch.randn(ROWS, WIDTH, generator=g).to(device) if want_b else None,
             torch.tensor(1.3, device=device) if want_kl else None)
    reparam_case(device, backend, h, eps, mode != "mean", grads)


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("where", list(positions(ROWS * WIDTH)))
@pytest.mark.parametrize("value", list(VALUES))
def test_reparam_kl_injected_noise_and_upstream(device, backend, where, value):
    g = torch.Generator().manual_seed(3)
    h = torch.randn(ROWS, 2 * WIDTH, generator=g).to(device)
    index = positions(ROWS * WIDTH)[where]
    eps = poisoned(torch.randn(ROWS, WIDTH, generator=g), index, VALUES[value]).to(device)
    reparam_case(device, backend, h, eps, True, (torch.randn(ROWS, WIDTH, generator=g).to(device),
                                                 torch.tensor(0.7, device=device)))
    grad_b = poisoned(torch.randn(ROWS, WIDTH, generator=g), index, VALUES[value]).to(device)
    reparam_case(device, backend, h, None, True, (grad_b, torch.tensor(0.7, device=device)))
    reparam_case(device, backend, h, None, True, (None, torch.tensor(VALUES[value], device=device)))


# ---------------------------------------------------------------------------------------------
# detector_loss: mse_loss(sigmoid(z) * mask / (1 - p), t)

DET_SHAPE = (31, 74)


def detector_case(device, backend, p, z, t, upstream):
    seed = op_seed(backend, device)
    mask = keep_mask(backend, seed, Stream.MLP1_OUTPUT, DET_SHAPE, p, device)
    z_fast, t_fast, z_ref, t_ref = leaves(z, t, z, t)
    mse = op(backend, "detector_loss")(z_fast, t_fast, seed, Stream.MLP1_OUTPUT, p)
    mse_ref = F.mse_loss(torch.sigmoid(z_ref) * mask / (1 - p), t_ref)
    assert_same_pattern(mse, mse_ref, "mse")
    got = grads_of([mse], [upstream], [z_fast, t_fast])
    want = grads_of([mse_ref], [upstream], [z_ref, t_ref])
    assert_same_pattern(got[0], want[0], "grad z")
    assert_same_pattern(got[1], want[1], "grad t")


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("p", [0.0, 0.3])
@pytest.mark.parametrize("tensor", ["z", "t"])
@pytest.mark.parametrize("where", list(positions(math.prod(DET_SHAPE))))
@pytest.mark.parametrize("value", list(VALUES))
def test_detector_loss_input(device, backend, p, tensor, where, value):
    g = torch.Generator().manual_seed(4)
    z, t = torch.randn(DET_SHAPE, generator=g) * 2, torch.rand(DET_SHAPE, generator=g)
    index = positions(z.numel())[where]
    if tensor == "z":
        z = poisoned(z, index, VALUES[value])
    else:
        t = poisoned(t, index, VALUES[value])
    detector_case(device, backend, p, z.to(device), t.to(device), torch.tensor(1.7, device=device))


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("value", list(VALUES))
def test_detector_loss_upstream(device, backend, value):
    g = torch.Generator().manual_seed(5)
    z, t = torch.randn(DET_SHAPE, generator=g) * 2, torch.rand(DET_SHAPE, generator=g)
    detector_case(device, backend, 0.3, z.to(device), t.to(device), torch.tensor(VALUES[value], device=device))


# ---------------------------------------------------------------------------------------------
# ib_combine: IB_total = combine_ib(kl terms, mse terms, detector weights, level weights)

WEIGHTS = dict(detector_weights=(8.0, 32.0), level_weights=(1.0, 0.3))


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("term", range(4))
@pytest.mark.parametrize("value", list(VALUES))
@pytest.mark.parametrize("upstream", ["IB_total", "own", "other"])
def test_ib_combine(device, backend, term, value, upstream):
    """Terms in order (kl_1, mse_1, kl_2, mse_2); a non-finite partial in one, the gradient of
    IB_total, of that term alone, or of another term alone."""
    g = torch.Generator().manual_seed(6)
    parts = [torch.rand(n, generator=g).to(device) for n in (3, 1, 4, 2)]
    parts[term] = poisoned(parts[term], parts[term].numel() - 1, VALUES[value])
    fast, ref = leaves(*parts), leaves(*parts)
    total, kl_terms, mse_terms = ib_combine(fast[0::2], fast[1::2], **WEIGHTS, backend=backend)
    outs = (total, kl_terms[0], mse_terms[0], kl_terms[1], mse_terms[1])
    sums = [t.sum() for t in ref]
    outs_ref = (combine_ib(sums[0::2], sums[1::2], *WEIGHTS.values()), *sums)
    for name, a, b in zip(("IB_total", "kl_1", "mse_1", "kl_2", "mse_2"), outs, outs_ref):
        assert_same_pattern(a, b, name)
    pick = {"IB_total": 0, "own": 1 + term, "other": 1 + (term + 1) % 4}[upstream]
    upstream_grads = [torch.tensor(1.5, device=device) if k == pick else None for k in range(5)]
    for k, (a, b) in enumerate(zip(grads_of(outs, upstream_grads, fast), grads_of(outs_ref, upstream_grads, ref))):
        assert_same_pattern(a, b, f"grad of partials {k}")


# ---------------------------------------------------------------------------------------------
# The whole model: ithp_fast.ITHP forward and backward against the reference

LEAD = (4, 16)  # 64 rows: the hidden layers hold 64 * 16 = 1024 elements, the first group of lanes
# (mode, tensor): training mode (dropout, the fused ReLU + dropout) on every input and a weight of
# each kind; eval mode (a plain ReLU, no dropout) on fewer
MODEL_CASES = [("train", t) for t in ("x", "visual", "acoustic", "encoder1.0.weight", "MLP1.3.weight",
                                      "encoder2.3.weight", "MLP2.0.weight")]
MODEL_CASES += [("eval", t) for t in ("x", "acoustic", "encoder2.3.weight")]


def poisoned_everywhere(t: torch.Tensor, value: float) -> torch.Tensor:
    """``t`` with its first, a middle and its last element set to ``value`` (rows of the inputs
    are independent, so one run checks all three)."""
    for index in (0, t.numel() // 2 + 1, t.numel() - 1):
        t = poisoned(t, index, value)
    return t


def run_model(model, inputs, noise, loss, **masks):
    x, visual, acoustic = leaves(*inputs)
    torch.manual_seed(123)
    out = model(x, visual, acoustic, noise=noise, **masks)
    params = dict(model.named_parameters())
    upstream = {  # "all": every output, IB_total among them; "mse0": one level loss alone
        "all": [torch.linspace(-1, 1, out[0].numel()).view_as(out[0]), *(torch.tensor(w) for w in (1, .5, 2, -1, 3))],
        "mse0": [None, None, None, torch.tensor(1.0), None, None],
    }[loss]
    grads = grads_of(out, [None if u is None else u.to(out[0].device) for u in upstream],
                     [x, visual, acoustic, *params.values()])
    return [o.detach() for o in out], dict(zip(["x", "visual", "acoustic", *params], grads))


def with_poisoned_parameter(model, name, value):
    model = copy.deepcopy(model)
    param = dict(model.named_parameters())[name]
    with torch.no_grad():
        param.copy_(poisoned_everywhere(param, value))
    return model


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("mode, tensor", MODEL_CASES)
@pytest.mark.parametrize("value", list(VALUES))
def test_model_forward_and_backward(device, backend, mode, tensor, value):
    train = mode == "train"
    cfg = small_config(drop_prob=0.3)
    ref, fast = pair(cfg, device, backend, train=train)
    inputs = list(make_inputs(cfg, LEAD, device=device))
    noise = make_noise(cfg, LEAD, device=device)
    if train:
        fix_masks(ref, cfg, backend, forward_seed(backend, device, 123), LEAD, device)
    models = (fast, ref)
    if tensor in ("x", "visual", "acoustic"):
        k = ("x", "visual", "acoustic").index(tensor)
        inputs[k] = poisoned_everywhere(inputs[k], VALUES[value])
    else:
        models = tuple(with_poisoned_parameter(m, tensor, VALUES[value]) for m in models)
    for loss in ("all", "mse0"):
        got, want = (run_model(m, inputs, noise, loss) for m in models)
        for i, (a, b) in enumerate(zip(got[0], want[0])):
            assert_same_pattern(a, b, f"{loss}: output {i}")
        for name in want[1]:
            assert_same_pattern(got[1][name], want[1][name], f"{loss}: grad {name}")


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("tensor", ["x", "visual", "acoustic"])
@pytest.mark.parametrize("value", list(VALUES))
def test_model_rows_left_out_by_masks(device, backend, tensor, value):
    """Non-finite values only in rows the masks leave out of the losses (padding tokens, a missing
    detector): the losses stay finite; gradients follow the reference, whose masked means
    (``torch.where``) send 0 * NaN = NaN back through a left-out row that holds NaN."""
    cfg = small_config(drop_prob=0.3)
    ref, fast = pair(cfg, device, backend, train=True)
    inputs = list(make_inputs(cfg, LEAD, device=device))
    noise = make_noise(cfg, LEAD, device=device)
    fix_masks(ref, cfg, backend, forward_seed(backend, device, 123), LEAD, device)
    token_mask = torch.ones(LEAD, dtype=torch.bool, device=device)
    token_mask[0, 0] = token_mask[2, 7] = token_mask[3, 15] = False
    detector_mask = torch.ones(LEAD[0], 2, dtype=torch.bool, device=device)
    detector_mask[1, 0] = detector_mask[3, 1] = False  # example 1 has no acoustic, example 3 no visual
    k = ("x", "visual", "acoustic").index(tensor)
    rows = {"x": [(0, 0), (2, 7), (3, 15)], "visual": [(3, 0), (3, 9)], "acoustic": [(1, 4), (1, 15)]}[tensor]
    for row in rows:
        inputs[k][row] = VALUES[value]
    masks = dict(token_mask=token_mask, detector_mask=detector_mask)
    for loss in ("all", "mse0"):
        got, want = (run_model(m, inputs, noise, loss, **masks) for m in (fast, ref))
        assert all(torch.isfinite(o) for o in want[0][1:])  # the case is what it says: finite losses
        for i, (a, b) in enumerate(zip(got[0], want[0])):
            assert_same_pattern(a, b, f"{loss}: output {i}")
        for name in want[1]:
            assert_same_pattern(got[1][name], want[1][name], f"{loss}: grad {name}")


# ---------------------------------------------------------------------------------------------
# encode: the fused kernel and every path of ITHP.encode against the reference's encode

ENCODE_ROWS = 20  # two row blocks of 16, the second ragged
ENCODE_DIMS = dict(X0_dim=24, inter_dim=40, B0_dim=10, B1_dim=6)  # a ragged hidden chunk, padded B0 / B1
ENCODE_CONFIGS = {
    "one-split": dict(block_m=16, block_h=16, splits=1),
    "four-splits": dict(block_m=16, block_h=16, splits=4, block_k=16, tail_block_h=16),
}
# (parameter, flat index): the mu and logvar halves of the last layers are poisoned separately
ENCODE_WEIGHTS = {
    "w0": ("encoder1.0.weight", 0), "c0": ("encoder1.0.bias", 39),
    "w1_mu": ("encoder1.3.weight", 5), "w1_logvar": ("encoder1.3.weight", 10 * 40 + 7),
    "c1_mu": ("encoder1.3.bias", 9), "c1_logvar": ("encoder1.3.bias", 10),
    "w2": ("encoder2.0.weight", 40 * 10 - 1), "c2": ("encoder2.0.bias", 20),
    "w3_mu": ("encoder2.3.weight", 0), "w3_logvar": ("encoder2.3.weight", 12 * 40 - 1),
    "c3_mu": ("encoder2.3.bias", 5), "c3_logvar": ("encoder2.3.bias", 6),
}


# Infinities that a ReLU blocks: the reference's b1 stays finite, so a padded column that turns
# 0 * inf into NaN inside a fused kernel shows. Each sets up the weights that make it so.
BLOCKED = {
    "x_blocked": "x = -inf at an input whose encoder1.0 weights are all positive: h0 = relu(-inf) = 0",
    "eps0_blocked": "eps0 = -inf at a latent whose encoder2.0 weights are all positive: h1 = relu(-inf) = 0",
    "b0_infinite": "x = +inf reaching one hidden unit: b0 = +-inf in every column, all blocked by encoder2's ReLU",
}


def block_infinities(model, kind, x, eps0, value):
    """Weights and inputs for the ``BLOCKED`` case ``kind`` (``value`` unused: the signs are fixed)."""
    w0, w1, w2 = model.encoder1[0].weight, model.encoder1[3].weight, model.encoder2[0].weight
    with torch.no_grad():
        if kind == "x_blocked":
            w0[:, 5] = w0[:, 5].abs() + 0.1
            x[[2, 11, 19], 5] = -math.inf
        elif kind == "eps0_blocked":
            w2[:, 3] = w2[:, 3].abs() + 0.1
            eps0[[0, 12, 19], 3] = -math.inf
        else:  # x[:, 7] = +inf reaches hidden unit 4 only; every b0 column is +-inf; encoder2 blocks all
            w0[:, 7] = -w0[:, 7].abs() - 0.1
            w0[4, 7] = 1.0
            b0_dim = w2.shape[1]
            sign = torch.where(w1[:b0_dim, 4] < 0, -1.0, 1.0)
            w1[:b0_dim, 4] = sign * (w1[:b0_dim, 4].abs() + 0.1)
            w1[b0_dim:, 4] = -w1[b0_dim:, 4].abs() - 0.1  # logvar0 = -inf: sampling adds eps0 * 0
            w2.copy_(-w2.abs().clamp_min(0.05) * sign[None, :])
            x[[1, 16], 7] = math.inf


def encode_setup(device, tensor, value):
    """A reference model, ``x``, noise, with ``tensor`` poisoned: the input rows 0, 9 and 19, one
    element of a weight, rows of a noise tensor, or a ``BLOCKED`` case."""
    from ithp_fast.reference import ITHP as ReferenceITHP

    torch.manual_seed(0)
    cfg = small_config(**ENCODE_DIMS)
    model = ReferenceITHP(cfg).eval().to(device)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(ENCODE_ROWS, cfg.X0_dim, generator=g)
    eps = [torch.randn(ENCODE_ROWS, w, generator=g) for w in (cfg.B0_dim, cfg.B1_dim)]
    rows_of = {"x": (x, cfg.X0_dim), "eps0": (eps[0], cfg.B0_dim), "eps1": (eps[1], cfg.B1_dim)}
    if tensor in BLOCKED:
        block_infinities(model, tensor, x, eps[0], value)
    elif tensor in rows_of:
        t, width = rows_of[tensor]
        for index in (3, 9 * width + width // 2, t.numel() - 1):
            t.view(-1)[index] = value
    else:
        name, index = ENCODE_WEIGHTS[tensor]
        with torch.no_grad():
            dict(model.named_parameters())[name].view(-1)[index] = value
    return model, x.to(device), tuple(e.to(device) for e in eps)


def reference_encode(model, x, eps, sample):
    from ithp_fast.reference import ITHP as ReferenceITHP

    with torch.no_grad():
        return ReferenceITHP.encode(model, x, sample=sample, noise=eps if sample else None)


@pytest.mark.parametrize("sample", [False, True], ids=["mean", "sample"])
@pytest.mark.parametrize("tensor", ["x", "eps0", "eps1", *ENCODE_WEIGHTS])
@pytest.mark.parametrize("value", list(VALUES))
def test_encode_chain_kernel(device, sample, tensor, value):
    encode_chain_case(device, sample, tensor, VALUES[value])


@pytest.mark.parametrize("sample", [False, True], ids=["mean", "sample"])
@pytest.mark.parametrize("kind", list(BLOCKED))
def test_encode_chain_kernel_blocked_infinity(device, sample, kind):
    if kind == "eps0_blocked" and not sample:
        pytest.skip("the posterior mean reads no noise")
    model, x, eps = encode_setup(device, kind, None)
    assert torch.isfinite(reference_encode(model, x, eps, sample)).all()  # the case is what it says
    encode_chain_case(device, sample, kind, None)


def encode_chain_case(device, sample, tensor, value):
    from ithp_fast.encode import layers
    from ithp_fast.kernels.encode_chain import encode_chain
    from ithp_fast.kernels.encode_chain_triton import EncodeChainConfig

    if tensor.startswith("eps") and not sample:
        pytest.skip("the posterior mean reads no noise")
    model, x, eps = encode_setup(device, tensor, value)
    want = reference_encode(model, x, eps, sample)
    # inputs and noise go through both work splits; a weight through one (each split once)
    names = list(ENCODE_CONFIGS) if tensor not in ENCODE_WEIGHTS else [list(ENCODE_CONFIGS)[sample]]
    for name in names:
        noise = dict(eps0=eps[0], eps1=eps[1]) if sample else {}
        with torch.no_grad():
            got = encode_chain(x, *layers(model), config=EncodeChainConfig(**ENCODE_CONFIGS[name]), **noise)
        assert_same_pattern(got, want, f"b1 ({name})")


@pytest.mark.parametrize("backend", ["triton", "torch", "reference"])
@pytest.mark.parametrize("sample", [False, True], ids=["mean", "sample"])
@pytest.mark.parametrize("tensor", ["x", "w0", "w1_logvar"])
@pytest.mark.parametrize("value", list(VALUES))
def test_model_encode(device, backend, sample, tensor, value):
    """``ithp_fast.ITHP.encode`` on each path: fused kernel (triton), addmm chain (torch), reference."""
    import ithp_fast
    from ithp_fast.encode import choose_path

    ref, x, eps = encode_setup(device, tensor, VALUES[value])
    fast = ithp_fast.ITHP(ref.config, backend=backend).eval().to(device)
    fast.load_state_dict(ref.state_dict())
    expected_path = {"triton": "fused", "torch": "chain", "reference": "reference"}[backend]
    assert choose_path(fast, ENCODE_ROWS, x.dtype, x.device) == expected_path
    with torch.no_grad():
        got = fast.encode(x, sample=sample, noise=eps if sample else None)
    assert_same_pattern(got, reference_encode(ref, x, eps, sample), f"b1 ({expected_path})")


def logvar_rows(model):
    """``{parameter name: rows}`` of each encoder's last Linear that compute logvar."""
    out = {}
    for k, width in enumerate(model.config.bottleneck_dims):
        out[f"encoder{k + 1}.3.weight"] = out[f"encoder{k + 1}.3.bias"] = slice(width, 2 * width)
    return out


def encode_grads(model, x, eps, sample):
    """``b1`` and the gradients of ``sum(b1 * upstream)`` w.r.t. ``x`` and every encoder parameter."""
    x = x.detach().clone().requires_grad_(True)
    params = {n: p for n, p in model.named_parameters() if n.startswith("encoder")}
    b1 = model.encode(x, sample=sample, noise=eps if sample else None)
    upstream = torch.linspace(-1.0, 2.0, b1.numel()).view_as(b1)
    grads = torch.autograd.grad(b1, [x, *params.values()], upstream, allow_unused=True)
    return b1, dict(zip(["x", *params], grads))


@pytest.mark.parametrize("backend", ["triton", "torch", "reference"])
@pytest.mark.parametrize("sample", [False, True], ids=["mean", "sample"])
@pytest.mark.parametrize("tensor", ["x", "w0", "c0", "w1_mu", "w1_logvar", "c1_logvar", "w3_logvar", "x_blocked"])
@pytest.mark.parametrize("value", list(VALUES))
def test_model_encode_backward(backend, sample, tensor, value):
    """``ITHP.encode`` backward (the addmm chain on the triton and torch backends, whatever the
    device: gradients go through the chain). Sampling, and the reference backend: the reference's
    non-finite pattern. The posterior mean (``sample=False``) on the fast backends reads only the mu
    rows of each encoder's last Linear, so its gradients are the derivative of what it computes:
    exactly 0 at the logvar rows, and nothing from 0 x a non-finite logvar weight or activation,
    where the reference's full Linear sends NaN back (0 * NaN): docs/guarantees.md says so."""
    import ithp_fast

    if tensor == "x_blocked" and value != "nan":
        pytest.skip("the blocked case fixes its own infinities")
    ref, x, eps = encode_setup("cpu", tensor, VALUES[value] if tensor in ENCODE_WEIGHTS or tensor == "x" else None)
    fast = ithp_fast.ITHP(ref.config, backend=backend).eval()
    fast.load_state_dict(ref.state_dict())
    b1, got = encode_grads(fast, x, eps, sample)
    mean_only = not sample and backend != "reference"
    if mean_only:  # the derivative of the posterior-mean chain: the reference with no logvar rows to read
        with torch.no_grad():
            for name, rows in logvar_rows(ref).items():
                dict(ref.named_parameters())[name][rows] = 0.0
    want_b1, want = encode_grads(ref, x, eps, sample)
    assert_same_pattern(b1, want_b1, "b1")
    for name in want:
        if mean_only and name in logvar_rows(ref):
            rows = logvar_rows(ref)[name]
            assert torch.equal(got[name][rows], torch.zeros_like(got[name][rows])), f"grad {name}: logvar rows"
            want[name][rows] = 0.0  # where the reference has 0 * (its hidden activations)
        assert_same_pattern(got[name], want[name], f"grad {name}")


# ---------------------------------------------------------------------------------------------
# TCMax: every entry point against the direct definition over all B * B * C pairings

TC_B, TC_C = 6, 9
TC_LAUNCH = dict(block_b=4, block_c=4, splits=2)  # several class blocks and row splits
TC_POSITIONS = {"first": 0, "middle": 2 * TC_C + 5, "block_edge": 3 * TC_C + 4, "last": TC_B * TC_C - 1}


def tcmax_entry_points(backend):
    """name -> function of (la, lv, labels) returning (loss, loss_a, loss_v) (the sampled form: (loss,))."""
    from ithp_fast import TCMaxLoss, losses, tcmax_loss, tcmax_loss_multi, tcmax_loss_pairwise
    from ithp_fast.kernels.tcmax import tcmax_factorised

    every_pair = (torch.arange(TC_B).repeat_interleave(TC_B), torch.arange(TC_B).repeat(TC_B))
    return {
        "tcmax_loss": lambda la, lv, y: tcmax_loss(la, lv, y, backend=backend),
        "tcmax_loss_multi": lambda la, lv, y: (lambda out: (out[0], *out[1]))(
            tcmax_loss_multi([la, lv], y, backend=backend)),
        "TCMaxLoss": lambda la, lv, y: TCMaxLoss(backend=backend)(la, lv, y),
        "kernel_launch": lambda la, lv, y: tuple(tcmax_factorised(
            [la, lv], y, backend=backend, **(TC_LAUNCH if backend == "triton" else {}))),
        "tcmax_loss_pairwise": lambda la, lv, y: tcmax_loss_pairwise(torch.add, la, lv, y, chunk_size=4),
        "sampled_every_pair": lambda la, lv, y: (losses._sampled_loss(torch.add, la, lv, y, *every_pair),),
    }


@pytest.mark.parametrize("backend", FUSED_BACKENDS)
@pytest.mark.parametrize("entry", ["tcmax_loss", "tcmax_loss_multi", "TCMaxLoss", "kernel_launch",
                                   "tcmax_loss_pairwise", "sampled_every_pair"])
@pytest.mark.parametrize("modality", ["a", "v"])
@pytest.mark.parametrize("where", list(TC_POSITIONS))
@pytest.mark.parametrize("value", list(VALUES))
def test_tcmax(backend, entry, modality, where, value):
    """Values of every loss and the gradient of a weighted sum of them (every weight non-zero)."""
    from test_tcmax import direct_tcmax

    if entry in ("tcmax_loss_pairwise", "sampled_every_pair") and backend == "triton":
        pytest.skip("plain PyTorch whatever the backend")
    device = "cuda" if torch.cuda.is_available() and backend == "triton" else "cpu"
    g = torch.Generator().manual_seed(9)
    logits = [torch.randn(TC_B, TC_C, generator=g, dtype=torch.float64) * 2 for _ in range(2)]
    k = "av".index(modality)
    logits[k] = poisoned(logits[k], TC_POSITIONS[where], VALUES[value])
    labels = (torch.arange(TC_B) % 4).to(device)
    fast, ref = leaves(*(t.to(device) for t in logits)), leaves(*(t.to(device) for t in logits))
    got, want = tcmax_entry_points(backend)[entry](*fast, labels), direct_tcmax(ref, labels)
    weights = (1.0, 0.5, -2.0)[:len(got)]
    for i, (a, b) in enumerate(zip(got, want)):
        assert_same_pattern(a, b, f"loss {i}")
    upstream = [torch.tensor(w, dtype=torch.float64, device=device) for w in weights]
    for m, (a, b) in enumerate(zip(grads_of(got, upstream, fast), grads_of(want[:len(got)], upstream, ref))):
        assert_same_pattern(a, b, f"grad of modality {'av'[m]}")
