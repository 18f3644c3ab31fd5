"""Counter-based noise: every random number is a pure function of (seed, stream, element index).

One forward draws ONE seed (an int64 tensor on the input's device, from torch's generator, so
``torch.manual_seed`` reproduces it and a CUDA-graph replay draws a fresh one); every random
draw of that forward is then addressed by a :class:`Stream` (which tensor it is for) and the
int64 index of the element in that tensor's row-major order. The backward regenerates the
same numbers from the same address instead of storing them.

Triton mapping (Philox4x32-10 keyed by the 64-bit seed)::

    element e  ->  group g = e // (4Q),  lane k = (e % 4Q) // Q,  column j = e % Q
    counter    =   g*Q + j   (int64, split into two 32-bit words), stream in the third word
    word       =   word k of philox(seed, (counter_lo, counter_hi, stream, 0))
    uniform    =   (word >> 8) * 2^-24                     in [0, 1);  dropout keeps u >= p
    normal     =   Box-Muller on the word pairs (0, 1) and (2, 3)

so one Philox call feeds four elements, and a kernel that owns an aligned group of ``4Q``
consecutive elements loads them as four contiguous quarters. ``Q`` is :data:`QUARTER`.

The CPU ``torch`` backend draws from a ``torch.Generator`` per (seed, stream) instead
(:func:`torch_generator`): the same contract (pure function of seed and stream, regenerated in
the backward), other numbers.
"""

from __future__ import annotations

import enum
from typing import Union

import torch
import triton
import triton.language as tl

QUARTER = 256
"""Q: elements per lane of a Philox group; a group is ``4*Q`` consecutive elements."""
GROUP = 4 * QUARTER

_TWO_POW_M24 = 1.0 / 16777216.0
_MASK64 = (1 << 64) - 1


class Stream(enum.IntEnum):
    """What a random number is for: the third Philox counter word."""

    ENCODER1_HIDDEN = 1
    EPS0 = 2
    MLP1_HIDDEN = 3
    MLP1_OUTPUT = 4
    ENCODER2_HIDDEN = 5
    EPS1 = 6
    MLP2_HIDDEN = 7
    MLP2_OUTPUT = 8


def draw_seed(device: Union[torch.device, str]) -> torch.Tensor:
    """One int64 seed (shape ``[1]``) on ``device`` from torch's generator for that device."""
    return torch.randint(0, 2**62, (1,), dtype=torch.int64, device=device)


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def torch_generator(seed: int, stream: int, device: Union[torch.device, str]) -> torch.Generator:
    """A ``torch.Generator`` for the torch backend's stream ``stream`` of forward seed ``seed``."""
    g = torch.Generator(device=device)
    g.manual_seed(_splitmix64(_splitmix64(int(seed)) ^ int(stream)) >> 1)
    return g


# ---------------------------------------------------------------------------------------------
# Triton side
# ---------------------------------------------------------------------------------------------


@triton.jit
def philox_words(seed, stream: tl.constexpr, counter):
    """Four blocks of uint32 words for an int64 block of Philox counters."""
    lo = (counter & 0xFFFFFFFF).to(tl.uint32)
    hi = (counter >> 32).to(tl.uint32)
    zero = lo * 0
    return tl.philox(seed, lo, hi, zero + stream, zero)


@triton.jit
def word_to_uniform(word):
    """uint32 -> float32 in [0, 1) with 24 random bits."""
    return (word >> 8).to(tl.int32).to(tl.float32) * 5.9604644775390625e-08


@triton.jit
def words_to_normal(w0, w1):
    """Two uint32 words -> two independent N(0, 1) (Box-Muller; the radius word never hits 0)."""
    u0 = ((w0 >> 8).to(tl.int32).to(tl.float32) + 0.5) * 5.9604644775390625e-08
    u1 = (w1 >> 8).to(tl.int32).to(tl.float32) * 5.9604644775390625e-08
    radius = tl.sqrt(-2.0 * tl.log(u0))
    angle = 6.283185307179586 * u1
    return radius * tl.cos(angle), radius * tl.sin(angle)


@triton.jit
def group_uniform(seed, stream: tl.constexpr, first, QUARTER: tl.constexpr):
    """Uniforms of the aligned group whose first element index is ``first`` (int64, % 4Q == 0).

    Returns four ``[QUARTER]`` blocks: block k holds elements ``first + k*QUARTER + j``.
    """
    counter = first // 4 + tl.arange(0, QUARTER).to(tl.int64)
    w0, w1, w2, w3 = philox_words(seed, stream, counter)
    return word_to_uniform(w0), word_to_uniform(w1), word_to_uniform(w2), word_to_uniform(w3)


@triton.jit
def group_normal(seed, stream: tl.constexpr, first, QUARTER: tl.constexpr):
    """Standard normals of an aligned group, laid out as :func:`group_uniform`."""
    counter = first // 4 + tl.arange(0, QUARTER).to(tl.int64)
    w0, w1, w2, w3 = philox_words(seed, stream, counter)
    n0, n1 = words_to_normal(w0, w1)
    n2, n3 = words_to_normal(w2, w3)
    return n0, n1, n2, n3


@triton.jit
def group_uniform_or_keep(seed_ptr, stream: tl.constexpr, first, QUARTER: tl.constexpr, DRAW: tl.constexpr):
    """:func:`group_uniform` from the seed at ``seed_ptr`` when ``DRAW``, else four 1.0 (keep all)."""
    if DRAW:
        return group_uniform(tl.load(seed_ptr), stream, first, QUARTER)
    else:
        return 1.0, 1.0, 1.0, 1.0


@triton.jit
def group_normal_or_zero(seed_ptr, stream: tl.constexpr, first, QUARTER: tl.constexpr, DRAW: tl.constexpr):
    """:func:`group_normal` from the seed at ``seed_ptr`` when ``DRAW``, else four 0.0."""
    if DRAW:
        return group_normal(tl.load(seed_ptr), stream, first, QUARTER)
    else:
        return 0.0, 0.0, 0.0, 0.0


@triton.jit
def _stream_kernel(seed_ptr, out_ptr, numel, start, STREAM: tl.constexpr, NORMAL: tl.constexpr,
                   QUARTER: tl.constexpr, BLOCK: tl.constexpr):
    # Element-wise form of the mapping above, for any start: out[i] = noise(start + i).
    pid = tl.program_id(0).to(tl.int64)
    i = pid * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    e = start + i
    within = e % (4 * QUARTER)
    lane = within // QUARTER
    counter = (e // (4 * QUARTER)) * QUARTER + within % QUARTER
    seed = tl.load(seed_ptr)
    w0, w1, w2, w3 = philox_words(seed, STREAM, counter)
    if NORMAL:
        n0, n1 = words_to_normal(w0, w1)
        n2, n3 = words_to_normal(w2, w3)
        value = tl.where(lane == 0, n0, tl.where(lane == 1, n1, tl.where(lane == 2, n2, n3)))
    else:
        word = tl.where(lane == 0, w0, tl.where(lane == 1, w1, tl.where(lane == 2, w2, w3)))
        value = word_to_uniform(word)
    tl.store(out_ptr + i, value, mask=i < numel)


def _stream(seed: torch.Tensor, stream: int, numel: int, start: int, normal: bool) -> torch.Tensor:
    if not isinstance(seed, torch.Tensor) or seed.dtype != torch.int64 or seed.numel() != 1:
        raise TypeError(f"seed: expected a one-element int64 tensor (rng.draw_seed), got {seed!r}")
    if numel < 0 or start < 0:
        raise ValueError(f"numel and start must be >= 0, got numel={numel}, start={start}")
    out = torch.empty(numel, dtype=torch.float32, device=seed.device)
    block = 1024
    grid = (max(1, triton.cdiv(numel, block)),)
    _stream_kernel[grid](seed, out, numel, start, STREAM=int(stream), NORMAL=normal, QUARTER=QUARTER, BLOCK=block)
    return out


def uniform_stream(seed: torch.Tensor, stream: int, numel: int, start: int = 0) -> torch.Tensor:
    """The uniforms the Triton kernels draw for elements ``start .. start+numel-1`` of ``stream``.

    float32 ``[numel]`` on the seed's device; a dropout with probability p keeps ``u >= p``.
    """
    return _stream(seed, stream, numel, start, normal=False)


def normal_stream(seed: torch.Tensor, stream: int, numel: int, start: int = 0) -> torch.Tensor:
    """The N(0, 1) draws the Triton kernels use for elements ``start .. start+numel-1``."""
    return _stream(seed, stream, numel, start, normal=True)
