"""What every Triton kernel of this package shares: Philox noise, rounding, launcher argument checks.

Imported only when a Triton kernel is launched (never by ``import ithp_fast``). The noise follows
the mapping of :mod:`ithp_fast.kernels.rng` (element index -> Philox group, lane and counter);
:func:`uniform_stream` / :func:`normal_stream` give the same numbers as a tensor, for tests.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .rng import LANE

# ---------------------------------------------------------------------------------------------
# Launcher argument checks


def check_seed(seed: object, device: torch.device) -> None:
    """The Triton kernels' seed: a one-element int64 tensor on the data's device."""
    if not isinstance(seed, torch.Tensor) or seed.dtype != torch.int64 or seed.numel() != 1:
        raise TypeError(f"seed: expected a one-element int64 tensor (rng.draw_seed), got {seed!r}")
    if seed.device != device:
        raise ValueError(f"seed: is on {seed.device} but the data is on {device}")


# ---------------------------------------------------------------------------------------------
# Rounding


# bfloat16 keeps the top 16 bits of a float32: add half an ulp (ties to even) and clear the rest.
# The GPU rounds float32 -> bfloat16 to nearest-even; Triton's CPU interpreter truncates, which
# would bias every bfloat16 output towards zero and make the CPU tests measure the interpreter.
# Rounding the bits first makes the final conversion exact on both.
@triton.jit
def rounded_to(value, dtype: tl.constexpr):
    """``value`` (float32) converted to ``dtype``, rounding to nearest-even."""
    if dtype == tl.bfloat16:
        bits = value.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        value = tl.where(value == value, bits.to(tl.float32, bitcast=True), value)
    return value.to(dtype)


# ---------------------------------------------------------------------------------------------
# Addressing


@triton.jit
def offsets_2d(rows, cols, stride_rows, stride_cols):
    """Element offsets ``rows[:, None] * stride_rows + cols[None, :] * stride_cols`` in int64.

    A product of two int32 values passes 2^31 as soon as a tensor holds 2^31 elements (a
    transposed [C, B] buffer read as [B, C] does at B*C >= 2^31): every factor is widened first.
    """
    return rows.to(tl.int64)[:, None] * stride_rows + cols.to(tl.int64)[None, :] * stride_cols


# ---------------------------------------------------------------------------------------------
# ReLU as PyTorch computes it


@triton.jit
def relu_nan(x):
    """``relu(x)`` that keeps NaN, as ``torch.relu`` (``tl.maximum(x, 0)`` turns NaN into 0)."""
    return tl.where(x < 0.0, 0.0, x)


@triton.jit
def relu_marked(x):
    """``relu(x)`` keeping NaN, with ``-0.0`` where the ReLU blocks (``x <= 0``): a fused backward
    that reads only the output can tell a blocked ReLU from a dropped element (``+0.0``)."""
    return tl.where(x <= 0.0, -0.0, x)


@triton.jit
def is_negative_zero(x):
    """Where float32 ``x`` is ``-0.0`` (its bits are the sign bit alone)."""
    return x.to(tl.int32, bitcast=True) == -2147483648


# ---------------------------------------------------------------------------------------------
# Philox noise


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
def group_uniform(seed, stream: tl.constexpr, first, LANE: tl.constexpr):
    """Uniforms of the aligned group whose first element index is ``first`` (int64, % GROUP == 0).

    Returns four ``[LANE]`` blocks: block k holds elements ``first + k*LANE + j``.
    """
    counter = first // 4 + tl.arange(0, LANE).to(tl.int64)
    w0, w1, w2, w3 = philox_words(seed, stream, counter)
    return word_to_uniform(w0), word_to_uniform(w1), word_to_uniform(w2), word_to_uniform(w3)


@triton.jit
def group_normal(seed, stream: tl.constexpr, first, LANE: tl.constexpr):
    """Standard normals of an aligned group, laid out as :func:`group_uniform`."""
    counter = first // 4 + tl.arange(0, LANE).to(tl.int64)
    w0, w1, w2, w3 = philox_words(seed, stream, counter)
    n0, n1 = words_to_normal(w0, w1)
    n2, n3 = words_to_normal(w2, w3)
    return n0, n1, n2, n3


@triton.jit
def group_uniform_or_keep(seed_ptr, stream: tl.constexpr, first, LANE: tl.constexpr, DRAW: tl.constexpr):
    """:func:`group_uniform` from the seed at ``seed_ptr`` when ``DRAW``, else four 1.0 (keep all)."""
    if DRAW:
        return group_uniform(tl.load(seed_ptr), stream, first, LANE)
    else:
        return 1.0, 1.0, 1.0, 1.0


@triton.jit
def group_normal_or_zero(seed_ptr, stream: tl.constexpr, first, LANE: tl.constexpr, DRAW: tl.constexpr):
    """:func:`group_normal` from the seed at ``seed_ptr`` when ``DRAW``, else four 0.0."""
    if DRAW:
        return group_normal(tl.load(seed_ptr), stream, first, LANE)
    else:
        return 0.0, 0.0, 0.0, 0.0


@triton.jit
def _stream_kernel(seed_ptr, out_ptr, numel, start, STREAM: tl.constexpr, NORMAL: tl.constexpr,
                   LANE: tl.constexpr, BLOCK: tl.constexpr):
    # Element-wise form of the mapping, for any start: out[i] = noise(start + i).
    # seed_ptr: int64 [1];  out_ptr: float32 [numel]
    pid = tl.program_id(0).to(tl.int64)
    i = pid * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    e = start + i
    within = e % (4 * LANE)
    lane = within // LANE
    counter = (e // (4 * LANE)) * LANE + within % LANE
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
    check_seed(seed, seed.device if isinstance(seed, torch.Tensor) else torch.device("cpu"))
    if numel < 0 or start < 0:
        raise ValueError(f"numel and start must be >= 0, got numel={numel}, start={start}")
    out = torch.empty(numel, dtype=torch.float32, device=seed.device)
    block = 1024
    grid = (max(1, triton.cdiv(numel, block)),)
    _stream_kernel[grid](seed, out, numel, start, STREAM=int(stream), NORMAL=normal, LANE=LANE, BLOCK=block)
    return out


def uniform_stream(seed: torch.Tensor, stream: int, numel: int, start: int = 0) -> torch.Tensor:
    """The uniforms the Triton kernels draw for elements ``start .. start+numel-1`` of ``stream``.

    float32 ``[numel]`` on the seed's device; a dropout with probability p keeps ``u >= p``.
    """
    return _stream(seed, stream, numel, start, normal=False)


def normal_stream(seed: torch.Tensor, stream: int, numel: int, start: int = 0) -> torch.Tensor:
    """The N(0, 1) draws the Triton kernels use for elements ``start .. start+numel-1``."""
    return _stream(seed, stream, numel, start, normal=True)

