"""The in-kernel noise: statistics, independence, reproducibility and int64 element addressing."""

import math

import pytest
import torch
from fused_helpers import skip_triton_on_cpu_without_interpreter  # noqa: F401

from ithp_fast.kernels import rng
from ithp_fast.kernels.relu_dropout_triton import relu_dropout_forward
from ithp_fast.kernels.rng import GROUP, Stream
from ithp_fast.kernels.triton_helpers import normal_stream, uniform_stream

DEFAULT_BACKEND = "triton"  # the ops tested without a backend parameter
N = 1 << 16  # samples per statistic: the standard error of a mean of N(0, 1) is 0.004


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.double().cpu(), b.double().cpu()]))[0, 1])


def seed_on(device, value=1234):
    return torch.tensor([value], dtype=torch.int64, device=device)


def test_draw_seed_follows_manual_seed(device):
    torch.manual_seed(7)
    a = rng.draw_seed(device)
    torch.manual_seed(7)
    b = rng.draw_seed(device)
    c = rng.draw_seed(device)
    assert a.dtype == torch.int64 and a.shape == (1,) and a.device.type == torch.device(device).type
    assert torch.equal(a, b) and not torch.equal(b, c)


def test_normal_statistics(device):
    eps = normal_stream(seed_on(device), Stream.EPS0, N).cpu().double()
    assert abs(eps.mean()) < 0.02
    assert abs(eps.var() - 1) < 0.03
    assert abs((eps**3).mean()) < 0.05  # symmetric
    assert abs((eps**4).mean() - 3) < 0.15  # Gaussian kurtosis
    assert eps.abs().max() < 6.0
    # the four lanes of one Philox call feed elements e, e+Q, e+2Q, e+3Q: uncorrelated
    lanes = eps[: (N // GROUP) * GROUP].view(-1, 4, GROUP // 4)
    for k in range(1, 4):
        assert abs(corr(lanes[:, 0].reshape(-1), lanes[:, k].reshape(-1))) < 0.03


def test_uniform_statistics(device):
    u = uniform_stream(seed_on(device), Stream.MLP1_OUTPUT, N).cpu().double()
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.01
    assert abs(u.var() - 1 / 12) < 0.005
    counts = torch.histc(u.float(), bins=10, min=0, max=1)
    assert (counts - N / 10).abs().max() < 5 * (N / 10) ** 0.5


def test_streams_and_seeds_are_independent(device):
    seed = seed_on(device)
    eps0 = normal_stream(seed, Stream.EPS0, N)
    eps1 = normal_stream(seed, Stream.EPS1, N)
    other = normal_stream(seed_on(device, 1235), Stream.EPS0, N)
    assert abs(corr(eps0, eps1)) < 0.03  # the two levels
    assert abs(corr(eps0, other)) < 0.03  # two forwards (two seeds)
    u0 = uniform_stream(seed, Stream.ENCODER1_HIDDEN, N)
    u1 = uniform_stream(seed, Stream.ENCODER2_HIDDEN, N)
    assert abs(corr(u0, u1)) < 0.03


def test_fixed_seed_reproduces(device):
    a = normal_stream(seed_on(device), Stream.EPS1, 5000)
    b = normal_stream(seed_on(device), Stream.EPS1, 5000)
    assert torch.equal(a, b)


@pytest.mark.parametrize("start", [2**31 - GROUP, 2**31, 2**32 + 3 * GROUP, 2**40])
def test_int64_element_offsets(device, start):
    """Element addresses beyond 2^31 (and 2^32) stay distinct and consistent, without big tensors."""
    seed = seed_on(device)
    window = normal_stream(seed, Stream.EPS0, 3 * GROUP, start=start - GROUP)
    inner = normal_stream(seed, Stream.EPS0, GROUP, start=start)
    assert torch.equal(window[GROUP : 2 * GROUP], inner)  # a pure function of the index
    for wrap in (2**31, 2**32, 2**34):  # indices that would alias if truncated to 31, 32 or 34 bits
        alias = start + wrap if start < wrap else start - wrap
        assert not torch.equal(inner, normal_stream(seed, Stream.EPS0, GROUP, start=alias))


def test_kernel_with_base_offset_beyond_int32(device):
    """A real kernel addressed past 2^31 elements draws the stream's values there."""
    seed = seed_on(device)
    start = 2**31 + 5 * GROUP
    a = torch.ones(2 * GROUP + 17, device=device)
    d = relu_dropout_forward(a, seed, Stream.MLP2_HIDDEN, 0.5, start=start)
    u = uniform_stream(seed, Stream.MLP2_HIDDEN, a.numel(), start=start)
    torch.testing.assert_close(d, (u >= 0.5).float() * 2.0)
    d0 = relu_dropout_forward(a, seed, Stream.MLP2_HIDDEN, 0.5, start=0)
    assert not torch.equal(d, d0)


def test_bad_seed_and_offset():
    with pytest.raises(TypeError, match="seed"):
        normal_stream(torch.tensor([1.0]), Stream.EPS0, 10)
    with pytest.raises(ValueError, match="start"):
        relu_dropout_forward(torch.ones(4), seed_on("cpu"), Stream.EPS0, 0.5, start=3)


def test_torch_backend_streams():
    a = rng.normal(99, Stream.EPS0, (N,), "cpu")
    assert torch.equal(a, rng.normal(99, Stream.EPS0, (N,), "cpu"))
    assert abs(corr(a, rng.normal(99, Stream.EPS1, (N,), "cpu"))) < 0.03
    assert abs(corr(a, rng.normal(100, Stream.EPS0, (N,), "cpu"))) < 0.03
    assert abs(a.mean()) < 0.02 and abs(a.var() - 1) < 0.03
    torch.manual_seed(3)
    s = rng.new_seed()
    torch.manual_seed(3)
    assert rng.new_seed() == s


# ---------------------------------------------------------------------------------------------
# An independent Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
# SC 2011), in plain Python, as the oracle for the kernels' words at chosen element indices.

_M0, _M1 = 0xD2511F53, 0xCD9E8D57  # round multipliers
_W0, _W1 = 0x9E3779B9, 0xBB67AE85  # key increments (golden ratio, sqrt(3) - 1)
_U32 = 0xFFFFFFFF


def philox4x32_10(counter, key):
    x0, x1, x2, x3 = counter
    k0, k1 = key
    for _ in range(10):
        p0, p1 = _M0 * x0, _M1 * x2
        x0, x1, x2, x3 = (p1 >> 32) ^ x1 ^ k0, p1 & _U32, (p0 >> 32) ^ x3 ^ k1, p0 & _U32
        k0, k1 = (k0 + _W0) & _U32, (k1 + _W1) & _U32
    return x0, x1, x2, x3


def oracle_word(seed: int, stream: int, element: int) -> int:
    """The 32-bit word of element ``element``, from the mapping documented in ``ithp_fast/kernels/rng.py``."""
    group, within = divmod(element, GROUP)
    lane, column = divmod(within, GROUP // 4)
    counter = group * (GROUP // 4) + column
    words = philox4x32_10((counter & _U32, counter >> 32, stream, 0), (seed & _U32, seed >> 32))
    return words[lane]


ORACLE_SEEDS = [1234, 2**62 - 1, (0x5DEECE66D << 28) | 1]  # the high key word zero and not
ORACLE_ELEMENTS = [0, 1, GROUP // 4 - 1, GROUP // 4, GROUP - 1, GROUP, 3 * GROUP + 777, 2**31 - 1, 2**31, 2**32 - 1,
                   2**32, 2**34 - 1, 2**34, 2**34 + GROUP + 5, 2**40 + 3]


@pytest.mark.parametrize("seed", ORACLE_SEEDS)
def test_uniforms_equal_an_independent_philox(seed):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for element in ORACLE_ELEMENTS:
        got = uniform_stream(seed_on(device, seed), Stream.EPS1, 1, start=element).item()
        want = (oracle_word(seed, int(Stream.EPS1), element) >> 8) * 2.0**-24
        assert got == want, f"element {element}: {got} != {want}"


@pytest.mark.parametrize("seed", ORACLE_SEEDS[:1])
def test_normals_equal_box_muller_of_an_independent_philox(seed):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for element in ORACLE_ELEMENTS:
        lane = (element % GROUP) // (GROUP // 4)  # Box-Muller pairs the words of lanes (0, 1) and (2, 3)
        radius_element = element - (lane % 2) * (GROUP // 4)
        w_radius = oracle_word(seed, int(Stream.EPS0), radius_element)
        w_angle = oracle_word(seed, int(Stream.EPS0), radius_element + GROUP // 4)
        u0 = ((w_radius >> 8) + 0.5) * 2.0**-24
        u1 = (w_angle >> 8) * 2.0**-24
        radius, angle = math.sqrt(-2.0 * math.log(u0)), 2.0 * math.pi * u1
        want = radius * (math.sin(angle) if lane % 2 else math.cos(angle))
        got = normal_stream(seed_on(device, seed), Stream.EPS0, 1, start=element).item()
        assert got == pytest.approx(want, rel=1e-5, abs=1e-5), f"element {element}"


@pytest.mark.parametrize("start", [0, 2**34 - 8 * GROUP])  # the second crosses the counter's high word
def test_groups_and_streams_draw_different_words(start):
    """No aliasing: a group (or a stream) repeats another's draws only by chance (24-bit values)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    seed = seed_on(device, 99)
    groups = uniform_stream(seed, Stream.MLP1_HIDDEN, 16 * GROUP, start=start).view(16, GROUP).cpu()
    for g in range(1, 16):
        assert int((groups[0] == groups[g]).sum()) <= 2
    lanes = groups.view(16, 4, GROUP // 4)
    for k in range(1, 4):
        assert int((lanes[:, 0] == lanes[:, k]).sum()) <= 2
    other = uniform_stream(seed, Stream.MLP2_HIDDEN, 16 * GROUP, start=start).view(16, GROUP).cpu()
    assert int((groups == other).sum()) <= 4


def test_level_streams_keep_the_released_levels_and_never_alias():
    from ithp_fast.kernels.rng import level_streams

    assert tuple(level_streams(0)) == (Stream.ENCODER1_HIDDEN, Stream.EPS0, Stream.MLP1_HIDDEN, Stream.MLP1_OUTPUT)
    assert tuple(level_streams(1)) == (Stream.ENCODER2_HIDDEN, Stream.EPS1, Stream.MLP2_HIDDEN, Stream.MLP2_OUTPUT)
    assert tuple(level_streams(2)) == (9, 10, 11, 12)
    every = [s for level in range(64) for s in level_streams(level)]
    assert len(set(every)) == len(every) and min(every) == 1
    with pytest.raises(ValueError, match="level: expected a non-negative level index"):
        level_streams(-1)
