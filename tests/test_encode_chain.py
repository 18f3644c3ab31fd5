"""The fused encode kernel (ithp_fast/kernels/encode_chain.py) against the reference ``encode``.

On the CPU it runs in Triton's interpreter (conftest sets TRITON_INTERPRET=1), small shapes;
with CUDA the same tests run on the GPU, plus the paper sizes.
"""

import pytest
import torch
from helpers import TOLERANCES, small_config

from ithp_fast import ITHPConfig
from ithp_fast.backends import triton_interpreter_on
from ithp_fast.encode import layers
from ithp_fast.kernels import encode_chain_triton as ect
from ithp_fast.kernels.encode_chain import encode_chain
from ithp_fast.reference import ITHP as ReferenceITHP

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture(autouse=True)
def _triton_can_run_on(request):
    """Kernel launches on the CPU need Triton's interpreter (set by conftest only without CUDA)."""
    device = request.getfixturevalue("device") if "device" in request.fixturenames else None
    if device == "cpu" and not triton_interpreter_on():
        pytest.skip("Triton on the CPU runs only under TRITON_INTERPRET=1")

WIDE = dict(X0_dim=70, inter_dim=40, B0_dim=20, B1_dim=18)  # several hidden chunks, padded B0 / B1
CONFIGS = {
    "auto": None,
    "one-split": ect.EncodeChainConfig(block_m=16, block_h=16, splits=1),
    "two-splits": ect.EncodeChainConfig(block_m=16, block_h=16, splits=2),
    "four-splits-bk16": ect.EncodeChainConfig(block_m=32, block_h=16, splits=4, block_k=16, tail_block_h=16),
}


def model_and_input(rows, device, dtype=torch.float32, seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = small_config(**overrides)
    model = ReferenceITHP(cfg).eval().to(device=device, dtype=dtype)
    x = torch.randn(rows, cfg.X0_dim, device=device).to(dtype)
    return model, x


def eps_for(model, rows, device, dtype=torch.float32, seed=1):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    return tuple(torch.randn(rows, d, generator=g).to(device=device, dtype=dtype) for d in (cfg.B0_dim, cfg.B1_dim))


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("rows", [1, 7, 50])
@pytest.mark.parametrize("widths", ["small", "wide"])
def test_posterior_mean_equals_reference(device, config, rows, widths):
    if device == "cuda" and config in ("one-split", "two-splits"):
        pytest.skip("covered on the GPU by the default and four-split launches (fewer compilations)")
    model, x = model_and_input(rows, device, **(WIDE if widths == "wide" else {}))
    with torch.no_grad():
        out = encode_chain(x, *layers(model), config=CONFIGS[config])
        torch.testing.assert_close(out, model.encode(x), **TOLERANCES[torch.float32])


@pytest.mark.parametrize("config", ["one-split", "two-splits"])
@pytest.mark.parametrize("rows", [1, 19])
def test_sampling_with_given_noise_equals_reference(device, config, rows):
    model, x = model_and_input(rows, device, **WIDE)
    eps = eps_for(model, rows, device)
    with torch.no_grad():
        out = encode_chain(x, *layers(model), eps0=eps[0], eps1=eps[1], config=CONFIGS[config])
        torch.testing.assert_close(out, model.encode(x, sample=True, noise=eps), **TOLERANCES[torch.float32])


def test_noise_with_a_row_stride_is_read_in_place(device):
    model, x = model_and_input(9, device)
    cfg = model.config
    both = torch.randn(9, cfg.B0_dim + cfg.B1_dim, device=device)
    eps = (both[:, : cfg.B0_dim], both[:, cfg.B0_dim :])
    with torch.no_grad():
        out = encode_chain(x, *layers(model), eps0=eps[0], eps1=eps[1])
        torch.testing.assert_close(out, model.encode(x, sample=True, noise=eps), **TOLERANCES[torch.float32])


def test_split_is_deterministic(device):
    model, x = model_and_input(40, device, **WIDE)
    cfg = CONFIGS["four-splits-bk16"]
    with torch.no_grad():
        first = encode_chain(x, *layers(model), config=cfg)
        second = encode_chain(x, *layers(model), config=cfg)
    assert torch.equal(first, second)  # partial sums are added in a fixed order


class _FirstSplitOnly:
    """Stands in for the kernel: launches only the programs of split 0, which write their
    partial sums, count themselves in and leave (a launch cut short before the others ran)."""

    def __init__(self, kernel):
        self.kernel = kernel

    def __getitem__(self, grid):
        return self.kernel[(grid[0], 1)]


def test_a_launch_cut_short_leaves_later_calls_exact(device, monkeypatch):
    model, x = model_and_input(40, device, **WIDE)
    cfg = CONFIGS["four-splits-bk16"]
    with torch.no_grad():
        want = model.encode(x)
        with monkeypatch.context() as patch:
            patch.setattr(ect, "_encode_chain_kernel", _FirstSplitOnly(ect._encode_chain_kernel))
            patch.setattr(ect, "wrap_triton", lambda kernel: kernel)  # the stand-in is no triton.jit function
            encode_chain(x, *layers(model), config=cfg)  # counted in, never finished
        for _ in range(2):
            torch.testing.assert_close(encode_chain(x, *layers(model), config=cfg), want,
                                       **TOLERANCES[torch.float32])


def test_bfloat16_within_documented_tolerance(device):
    model, x = model_and_input(23, device, dtype=torch.bfloat16)
    with torch.no_grad():
        out = encode_chain(x, *layers(model), config=CONFIGS["two-splits"])
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out, model.encode(x), **TOLERANCES[torch.bfloat16])


def test_tf32_runs_and_stays_close(device):
    model, x = model_and_input(5, device)
    with torch.no_grad():
        out = encode_chain(x, *layers(model), precision="tf32")
        torch.testing.assert_close(out, model.encode(x), rtol=1e-2, atol=1e-2)


def test_no_rows(device):
    model, x = model_and_input(1, device)
    out = encode_chain(x[:0], *layers(model))
    assert out.shape == (0, model.config.B1_dim)


def test_custom_op_matches_and_passes_opcheck(device):
    model, x = model_and_input(7, device)
    with torch.no_grad():
        args = (x, *(t.detach() for t in layers(model)))
        out = torch.ops.ithp_fast.encode_chain(*args, None, None, "ieee")
        torch.testing.assert_close(out, encode_chain(*args), rtol=0, atol=0)
    torch.library.opcheck(torch.ops.ithp_fast.encode_chain.default, (*args, None, None, "ieee"),
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("rows,sms", [(1, 132), (50, 132), (400, 132), (3000, 132), (50_000, 132), (50, 4)])
def test_chosen_split_covers_the_hidden_width_once(rows, sms):
    hidden = 256
    cfg = ect.choose_config(rows, hidden, sms)
    chunks = -(-hidden // cfg.block_h)
    per_split = -(-chunks // cfg.splits)
    assert per_split * cfg.splits >= chunks and (per_split - 1) * cfg.splits < chunks
    assert cfg.block_h >= ect.MIN_DOT and cfg.block_m >= ect.MIN_DOT
    if rows >= ect.LARGE_ROWS_MIN:
        assert cfg.splits == 1


def test_bad_operands_name_the_argument():
    model, x = model_and_input(3, "cpu")
    w = layers(model)
    with pytest.raises(ValueError, match="x: expected a 2-D"):
        encode_chain(x[None], *w)
    with pytest.raises(TypeError, match="w0: expected torch.float64"):
        encode_chain(x.double(), *w)
    with pytest.raises(ValueError, match="precision"):
        encode_chain(x, *w, precision="fp8")
    eps = eps_for(model, 3, "cpu")
    with pytest.raises(ValueError, match="eps0 / eps1"):
        encode_chain(x, *w, eps0=eps[0])
    with pytest.raises(ValueError, match="eps1: expected shape"):
        encode_chain(x, *w, eps0=eps[0], eps1=eps[0])


# --- CUDA only: paper sizes, exact float32, graphs -------------------------------------------


def paper_model(device="cuda", dtype=torch.float32):
    torch.manual_seed(0)
    return ReferenceITHP(ITHPConfig()).eval().to(device=device, dtype=dtype)


@cuda
@pytest.mark.parametrize("rows", [1, 50, 400, 1600, 8192])
def test_cuda_paper_sizes_exact_float32(rows):
    model = paper_model()
    x = torch.randn(rows, 768, device="cuda")
    with torch.no_grad():
        want = model.encode(x)  # cuBLAS float32 (TF32 off: torch's default)
        got = encode_chain(x, *layers(model), precision="ieee")
        torch.testing.assert_close(got, want, **TOLERANCES[torch.float32])


@cuda
@pytest.mark.parametrize("rows", [50, 51200])
def test_cuda_paper_sizes_bfloat16_and_tf32(rows):
    model = paper_model()
    x = torch.randn(rows, 768, device="cuda")
    with torch.no_grad():
        want = model.encode(x)
        # three TF32 products per float32 product: float32's tolerance, not TF32's
        torch.testing.assert_close(encode_chain(x, *layers(model), precision="tf32x3"), want,
                                   **TOLERANCES[torch.float32])
        torch.testing.assert_close(encode_chain(x, *layers(model), precision="tf32"), want, rtol=1e-2, atol=1e-2)
        model.bfloat16()
        got = encode_chain(x.bfloat16(), *layers(model))
        torch.testing.assert_close(got.float(), want, rtol=5e-2, atol=5e-2)


@cuda
def test_cuda_graph_replay_of_the_split_kernel_equals_eager():
    model = paper_model()
    x = torch.randn(50, 768, device="cuda")
    w = layers(model)
    with torch.no_grad():
        eager = encode_chain(x, *w)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            encode_chain(x, *w)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            out = encode_chain(x, *w)
        graph.replay()
        torch.testing.assert_close(out, eager, rtol=0, atol=0)
        for _ in range(3):  # new inputs in the static buffer: each replay equals an eager launch on them
            x.copy_(torch.randn_like(x))
            graph.replay()
            torch.testing.assert_close(out, encode_chain(x, *w), rtol=0, atol=0)
