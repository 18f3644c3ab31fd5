"""``ithp_fast.ITHP.encode`` (ithp_fast/encode.py) against the reference ``encode``."""

import pytest
import torch
from helpers import TOLERANCES, small_config

import ithp_fast
from ithp_fast import ITHPConfig
from ithp_fast.backends import triton_interpreter_on
from ithp_fast.encode import FUSED_KERNEL_MAX_ROWS, choose_path, encode, float32_precision
from ithp_fast.reference import ITHP as ReferenceITHP

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
BACKENDS = ["torch", "triton", "reference"]


def skip_unless_triton_runs(device, backend):
    if backend == "triton" and torch.device(device).type == "cpu" and not triton_interpreter_on():
        pytest.skip("Triton on the CPU runs only under TRITON_INTERPRET=1")


def pair(device, dtype=torch.float32, backend=None, seed=0, cfg=None, **overrides):
    """A fast and a reference ITHP with the same weights."""
    skip_unless_triton_runs(device, backend)
    torch.manual_seed(seed)
    cfg = cfg or small_config(**overrides)
    fast = ithp_fast.ITHP(cfg, backend=backend).to(device=device, dtype=dtype).eval()
    ref = ReferenceITHP(cfg).to(device=device, dtype=dtype).eval()
    ref.load_state_dict(fast.state_dict())
    return fast, ref


def noise_like(cfg, lead, device, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*lead, d, generator=g).to(device=device, dtype=dtype) for d in (cfg.B0_dim, cfg.B1_dim))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lead", [(), (1,), (7,), (3, 5), (2, 3, 3)])
def test_posterior_mean_equals_reference(device, backend, lead):
    fast, ref = pair(device, backend=backend)
    x = torch.randn(*lead, fast.config.X0_dim, device=device)
    with torch.no_grad():
        got = fast.encode(x)
        assert got.shape == lead + (fast.config.B1_dim,)
        torch.testing.assert_close(got, ref.encode(x), **TOLERANCES[torch.float32])


@pytest.mark.parametrize("backend", BACKENDS)
def test_sampling_with_given_noise_equals_reference(device, backend):
    fast, ref = pair(device, backend=backend)
    x = torch.randn(3, 5, fast.config.X0_dim, device=device)
    eps = noise_like(fast.config, (3, 5), device)
    with torch.no_grad():
        torch.testing.assert_close(fast.encode(x, sample=True, noise=eps), ref.encode(x, sample=True, noise=eps),
                                   **TOLERANCES[torch.float32])


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_bfloat16_within_documented_tolerance(device, backend):
    fast, ref = pair(device, dtype=torch.bfloat16, backend=backend)
    x = torch.randn(4, 9, fast.config.X0_dim, device=device, dtype=torch.bfloat16)
    with torch.no_grad():
        got = fast.encode(x)
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got, ref.encode(x), **TOLERANCES[torch.bfloat16])


@pytest.mark.parametrize("precision", ["ieee", "tf32", "tf32x3"])
def test_path_choice_at_the_row_threshold(precision):
    fast, _ = pair("cpu", backend="triton")
    limit, cpu = FUSED_KERNEL_MAX_ROWS[precision], torch.device("cpu")
    assert choose_path(fast, limit, torch.float32, cpu, precision) == "fused"
    assert choose_path(fast, limit + 1, torch.float32, cpu, precision) == "chain"
    bf16_path = "fused" if FUSED_KERNEL_MAX_ROWS["bf16"] else "chain"
    assert choose_path(fast, 1, torch.bfloat16, cpu, precision) == bf16_path


def test_path_choice():
    fast, _ = pair("cpu", backend="triton")
    rows = 10
    with torch.no_grad():
        assert choose_path(fast, rows, torch.float32, torch.device("cpu")) == "fused"
        assert choose_path(fast, rows, torch.float32, torch.device("cpu"), requires_grad=True) == "chain"
        assert choose_path(fast, rows, torch.float64, torch.device("cpu")) == "chain"
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert choose_path(fast, rows, torch.float32, torch.device("cpu")) == "chain"
        fast.train()
        assert choose_path(fast, rows, torch.float32, torch.device("cpu")) == "chain"
    fast.backend = "torch"
    assert choose_path(fast, rows, torch.float32, torch.device("cpu")) == "chain"
    fast.backend = "reference"
    assert choose_path(fast, rows, torch.float32, torch.device("cpu")) == "reference"


@pytest.mark.parametrize("levels", [1, 3])
def test_other_than_two_levels_take_the_chain(levels):
    """The fused kernel computes the two-level chain; other models take the chain on every backend."""
    from helpers import level_config

    fast, ref = pair("cpu", backend="triton", cfg=level_config(levels))
    assert choose_path(fast, 10, torch.float32, torch.device("cpu")) == "chain"
    x = torch.randn(3, 5, fast.config.X0_dim)
    with torch.no_grad():
        torch.testing.assert_close(fast.encode(x), ref.encode(x))


def test_model_encode_takes_precision():
    """``ITHP.encode(x, precision=...)`` reaches :func:`encode` (checked whatever the path)."""
    fast, ref = pair("cpu", backend="torch")
    x = torch.randn(3, 5, fast.config.X0_dim)
    torch.testing.assert_close(fast.encode(x, precision="ieee"), ref.encode(x))
    with pytest.raises(ValueError, match="precision: expected one of"):
        fast.encode(x, precision="half")


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_gradients_flow_like_the_reference(backend):
    fast, ref = pair("cpu", backend=backend, dtype=torch.float64)
    x = torch.randn(6, fast.config.X0_dim, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    fast.encode(x).square().sum().backward()
    ref.encode(x_ref).square().sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, **TOLERANCES[torch.float64])
    for (name, p), q in zip(fast.named_parameters(), ref.parameters()):
        if q.grad is None:
            assert p.grad is None or not p.grad.any(), name
        else:
            torch.testing.assert_close(p.grad, q.grad, **TOLERANCES[torch.float64], msg=name)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_training_mode_applies_dropout_like_the_module(backend):
    fast, ref = pair("cpu", backend=backend)
    fast.train(), ref.train()
    x = torch.randn(40, fast.config.X0_dim)
    with torch.no_grad():
        torch.manual_seed(5)
        got = fast.encode(x)
        torch.manual_seed(5)
        want = ref.encode(x)
        torch.testing.assert_close(got, want, **TOLERANCES[torch.float32])
        assert not torch.allclose(got, fast.encode(x))  # a fresh dropout mask per call


def test_autocast_follows_the_reference():
    fast, ref = pair("cpu", backend="triton")
    x = torch.randn(5, fast.config.X0_dim)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = fast.encode(x), ref.encode(x)
    assert got.dtype == want.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, **TOLERANCES[torch.bfloat16])


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_nothing_stale_after_load_state_dict_or_an_optimiser_step(backend):
    fast, _ = pair("cpu", backend=backend)
    other, ref = pair("cpu", seed=3)
    x = torch.randn(4, fast.config.X0_dim)
    with torch.no_grad():
        before = fast.encode(x)
        fast.load_state_dict(other.state_dict())
        torch.testing.assert_close(fast.encode(x), ref.encode(x), **TOLERANCES[torch.float32])
    opt = torch.optim.SGD(fast.parameters(), lr=0.1)
    fast.encode(x).sum().backward()
    opt.step()
    ref.load_state_dict(fast.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fast.encode(x), ref.encode(x), **TOLERANCES[torch.float32])
        assert not torch.allclose(fast.encode(x), before)


def identity_second_level_model(backend, device="cpu"):
    """encoder2 maps b0 to itself with negligible noise, so ``b1`` has b0's distribution; the
    level-0 noise is exercised through it. Weights set by hand: h1 = [relu(b0), relu(-b0)]."""
    cfg = small_config(B0_dim=8, B1_dim=8, inter_dim=16)
    fast, _ = pair(device, backend=backend, cfg=cfg)
    eye = torch.eye(8)
    with torch.no_grad():
        fast.encoder2[0].weight.copy_(torch.cat([eye, -eye]))
        fast.encoder2[0].bias.zero_()
        fast.encoder2[3].weight.zero_()
        fast.encoder2[3].weight[:8].copy_(torch.cat([eye, -eye], dim=1))
        fast.encoder2[3].bias.zero_()
        fast.encoder2[3].bias[8:].fill_(-40.0)  # sigma1 = exp(-20)
    return fast


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_sampling_draws_match_the_posterior(backend):
    fast = identity_second_level_model(backend)
    cfg = fast.config
    rows = 2000
    x = torch.randn(1, cfg.X0_dim).expand(rows, cfg.X0_dim).contiguous()
    with torch.no_grad():
        mu0, logvar0 = fast.encoder1(x[:1]).chunk(2, dim=-1)
        sigma0 = torch.exp(logvar0 / 2)
        draws = fast.encode(x, sample=True)
        z = (draws - mu0) / sigma0
    assert abs(float(z.mean())) < 4 / (rows * cfg.B0_dim) ** 0.5
    assert abs(float(z.std()) - 1) < 0.03
    inside = float((z.abs() < 1).float().mean())
    assert abs(inside - 0.6827) < 0.02
    per_feature_corr = torch.corrcoef(z.T)
    assert float((per_feature_corr - torch.eye(cfg.B0_dim)).abs().max()) < 0.1  # independent features
    with torch.no_grad():
        assert not torch.equal(fast.encode(x, sample=True), draws)  # fresh noise per call


def test_fused_sampling_draws_independent_noise_at_both_levels():
    """The fused kernel's own draws (no injected noise, at most FUSED_KERNEL_MAX_ROWS rows):
    with level 1 an identity mean and sigma1 = 1, ``b1 - mu0 = sigma0*eps0 + eps1`` has variance
    ``sigma0^2 + 1`` only if eps0 and eps1 are independent (equal draws would give (sigma0 + 1)^2)."""
    fast = identity_second_level_model("triton")
    with torch.no_grad():
        fast.encoder2[3].bias[8:].zero_()  # logvar1 = 0: sigma1 = 1
    cfg, rows, calls = fast.config, FUSED_KERNEL_MAX_ROWS["ieee"], 60
    x = torch.randn(1, cfg.X0_dim).expand(rows, cfg.X0_dim).contiguous()
    assert choose_path(fast, rows, x.dtype, x.device) == "fused"
    with torch.no_grad():
        mu0, logvar0 = fast.encoder1(x[:1]).chunk(2, dim=-1)
        draws = torch.cat([fast.encode(x, sample=True) for _ in range(calls)])
    z = (draws - mu0) / torch.sqrt(torch.exp(logvar0) + 1.0)
    n = z.numel()
    assert abs(float(z.mean())) < 4 / n**0.5
    assert abs(float(z.var()) - 1) < 6 * (2 / n) ** 0.5
    assert float((torch.corrcoef(z.T) - torch.eye(cfg.B1_dim)).abs().max()) < 0.12  # independent features
    assert not torch.equal(draws[:rows], draws[rows:2 * rows])  # fresh noise per call


@pytest.mark.parametrize("sample", [False, True])
def test_fused_path_traces_into_one_graph(device, sample):
    """The kernel is a registered op: torch.compile keeps the whole encode in one graph."""
    fast, ref = pair(device, backend="triton")
    x = torch.randn(2, 5, fast.config.X0_dim, device=device)
    eps = noise_like(fast.config, (2, 5), device) if sample else None
    compiled = torch.compile(lambda x: encode(fast, x, sample=sample, noise=eps), backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), ref.encode(x, sample=sample, noise=eps), **TOLERANCES[torch.float32])


def test_errors_name_the_argument():
    fast, _ = pair("cpu")
    x = torch.randn(3, fast.config.X0_dim)
    eps = noise_like(fast.config, (3,), "cpu")
    with pytest.raises(ValueError, match="noise: given, but sample=False"):
        encode(fast, x, noise=eps)
    with pytest.raises(ValueError, match="precision"):
        encode(fast, x, precision="half")
    with pytest.raises(ValueError, match="x: expected last dimension X0_dim"):
        fast.encode(torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"noise\[1\]"):
        fast.encode(x, sample=True, noise=(eps[0], eps[0]))


def test_precision_follows_torch_unless_given():
    saved = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert float32_precision() == "ieee"
        torch.set_float32_matmul_precision("high")
        assert float32_precision() == "tf32"
        assert float32_precision("ieee") == "ieee"
    finally:
        torch.set_float32_matmul_precision(saved)


# --- CUDA only: paper sizes through both paths ------------------------------------------------


@cuda
@pytest.mark.parametrize("lead", [(), (1, 50), (32, 50), (7, 13), (200, 50)])
def test_cuda_paper_sizes_float32_exact(lead):
    fast, ref = pair("cuda", cfg=ITHPConfig())
    x = torch.randn(*lead, 768, device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(fast.encode(x), ref.encode(x), **TOLERANCES[torch.float32])


@cuda
def test_cuda_bfloat16_both_paths():
    fast, ref = pair("cuda", dtype=torch.bfloat16, cfg=ITHPConfig())
    for rows in (50, FUSED_KERNEL_MAX_ROWS["bf16"] + 50):
        x = torch.randn(rows, 768, device="cuda", dtype=torch.bfloat16)
        with torch.no_grad():
            torch.testing.assert_close(fast.encode(x).float(), ref.encode(x).float(), rtol=5e-2, atol=5e-2)


@cuda
def test_cuda_sampling_statistics():
    fast = identity_second_level_model("triton", device="cuda")
    x = torch.randn(1, fast.config.X0_dim, device="cuda").expand(20000, -1).contiguous()
    with torch.no_grad():
        mu0, logvar0 = fast.encoder1(x[:1]).chunk(2, dim=-1)
        z = (fast.encode(x, sample=True) - mu0) / torch.exp(logvar0 / 2)
    assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1) < 0.02


@cuda
def test_cuda_compile_keeps_the_encode_kernel():
    """The fused encode is a registered Triton op: inductor keeps its kernel in the generated code."""
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    fast, ref = pair("cuda", cfg=ITHPConfig())
    x = torch.randn(1, 50, 768, device="cuda")
    compiled = torch.compile(lambda x: encode(fast, x), fullgraph=True)
    with torch.no_grad():
        got, code = run_and_get_code(compiled, x)
        torch.testing.assert_close(got, ref.encode(x), **TOLERANCES[torch.float32])
    assert "_encode_chain_kernel" in "\n".join(code)


@cuda
def test_cuda_autocast_and_gradients_take_the_chain():
    fast, ref = pair("cuda", cfg=ITHPConfig())
    x = torch.randn(3, 50, 768, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        got, want = fast.encode(x), ref.encode(x)
    assert got.dtype == want.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want.float(), rtol=5e-2, atol=5e-2)
    fast.encode(x).sum().backward()
    assert fast.encoder1[0].weight.grad is not None
