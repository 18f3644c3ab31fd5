"""Triton kernel of ``encode_chain`` (``encode_chain.py`` says what it computes and checks the operands).

Work split. The first layer (``X0 x H``, 768 x 256 in the paper) holds most of the bytes and
flops, so its output columns are cut into ``splits`` groups of hidden chunks: program
``(m, s)`` takes row block ``m`` and chunk group ``s``, computes its slice of ``h0`` and at once
that slice's contribution to ``mu0`` (layer 2 is linear in ``h0``, so its sum splits along
``H``). With one group (large row counts) the program goes straight on to the second encoder.
With several (small row counts: more programs to read the weights in parallel) each program
writes its partial sums of ``mu0`` and counts itself in on an arrival counter per row block;
the last to arrive adds the partials in a fixed order (deterministic) and runs the second
encoder for the block. No program ever waits on another, so the kernel cannot deadlock (and
runs under Triton's interpreter).

The counters belong to one launch: the launcher allocates them zeroed for it (one small memset
on the stream before the kernel). Nothing a launch leaves in them is read again, so a launch cut
short after some programs counted in, or two launches at once (CUDA graphs replayed from several
threads), cannot make another call finish a row block early or never.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Optional

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from . import sm_count, triton_interpreter_on
from .triton_helpers import offsets_2d, relu_nan, rounded_to

MIN_DOT = 16
"""Smallest block side ``tl.dot`` accepts."""

# Triton >= 3.0 names the float32 matmul mode ``input_precision``; older releases only know
# ``allow_tf32``. The kernel calls whichever this Triton has.
_HAS_INPUT_PRECISION = "input_precision" in inspect.signature(tl.dot).parameters


@triton.jit
def _dot_input_precision(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def _dot_allow_tf32(a, b, PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), allow_tf32=False)
    else:
        return tl.dot(a, b, allow_tf32=PRECISION == "tf32")


_dot = _dot_input_precision if _HAS_INPUT_PRECISION else _dot_allow_tf32
# UPCAST: Triton's interpreter mis-handles 16-bit float operands of tl.dot and tl.maximum, so
# there the dots take float32 copies (exact: a product of two bfloat16 values fits in float32).


# Per row (H = inter_dim; W*, c* the weights and biases of encoder1.0, encoder1.3, encoder2.0, encoder2.3):
#   h0 = relu(W0 x + c0);   mu0 = W1[:B0] h0 + c1[:B0];   lv0 = W1[B0:] h0 + c1[B0:]
#   b0 = mu0                            (posterior mean)
#   b0 = mu0 + eps0 * exp(lv0 / 2)      (SAMPLE)
#   h1 = relu(W2 b0 + c2);   mu1 = W3[:B1] h1 + c3[:B1];   lv1 = W3[B1:] h1 + c3[B1:]
#   b1 = mu1  or  mu1 + eps1 * exp(lv1 / 2)
# The logvar halves are read only when SAMPLE. Each Linear's output is rounded to the input dtype
# (as PyTorch's Linear does) before the next layer; every dot accumulates in float32.
@triton.jit
def _encode_chain_kernel(
    x_ptr, w0_ptr, c0_ptr, w1_ptr, c1_ptr, w2_ptr, c2_ptr, w3_ptr, c3_ptr,
    eps0_ptr, eps1_ptr, out_ptr, part_ptr, count_ptr,
    N, X0, H, B0, B1,
    stride_x, stride_eps0, stride_eps1, stride_out,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_H: tl.constexpr, TAIL_BLOCK_H: tl.constexpr,
    B0_P: tl.constexpr, B1_P: tl.constexpr,
    CHUNKS_PER_SPLIT: tl.constexpr, SPLITS: tl.constexpr,
    SAMPLE: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_s = tl.program_id(1)
    dt = x_ptr.dtype.element_ty
    rows = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < N
    offs_k = tl.arange(0, BLOCK_K)
    offs_h = tl.arange(0, BLOCK_H)
    offs_b0 = tl.arange(0, B0_P)
    b0_ok = offs_b0 < B0

    # Encoder 1, this program's hidden chunks: partial sums of mu0 (and lv0).
    part_mu = tl.zeros((BLOCK_M, B0_P), dtype=tl.float32)
    part_lv = tl.zeros((BLOCK_M, B0_P), dtype=tl.float32)
    for chunk in range(pid_s * CHUNKS_PER_SPLIT, (pid_s + 1) * CHUNKS_PER_SPLIT):
        cols = chunk * BLOCK_H + offs_h
        col_ok = cols < H
        acc = tl.zeros((BLOCK_M, BLOCK_H), dtype=tl.float32)
        for k0 in range(0, X0, BLOCK_K):
            ks = k0 + offs_k
            k_ok = ks < X0
            xt = tl.load(x_ptr + offsets_2d(rows, ks, stride_x, 1), mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            w0t = tl.load(w0_ptr + offsets_2d(ks, cols, 1, X0), mask=k_ok[:, None] & col_ok[None, :], other=0.0)
            acc += _dot(xt, w0t, PRECISION, UPCAST)
        bias0 = tl.load(c0_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        # ReLU (keeping NaN, as torch.relu; it commutes with rounding); padded columns exactly 0,
        # or an infinite x would make them 0 * inf = NaN and leak into mu0 through the next dot
        h0 = rounded_to(tl.where(col_ok[None, :], relu_nan(acc + bias0[None, :]), 0.0), dt)
        w_mask = col_ok[:, None] & b0_ok[None, :]
        w1t = tl.load(w1_ptr + offsets_2d(cols, offs_b0, 1, H), mask=w_mask, other=0.0)
        part_mu += _dot(h0, w1t, PRECISION, UPCAST)
        if SAMPLE:
            w1t_lv = tl.load(w1_ptr + offsets_2d(cols, B0 + offs_b0, 1, H), mask=w_mask, other=0.0)
            part_lv += _dot(h0, w1t_lv, PRECISION, UPCAST)

    if SPLITS == 1:
        _second_encoder(part_mu, part_lv, rows, row_ok, offs_b0, b0_ok,
                        c1_ptr, w2_ptr, c2_ptr, w3_ptr, c3_ptr, eps0_ptr, eps1_ptr, out_ptr,
                        H, B0, B1, stride_eps0, stride_eps1, stride_out,
                        BLOCK_M, TAIL_BLOCK_H, B0_P, B1_P, SAMPLE, PRECISION, UPCAST)
    else:
        width = B0 * (2 if SAMPLE else 1)
        split_elems = (tl.zeros([], tl.int64) + N) * width  # one split's [N, width] partials; int64 throughout
        part_mask = row_ok[:, None] & b0_ok[None, :]
        part_rows = part_ptr + pid_s * split_elems + rows[:, None] * width
        tl.store(part_rows + offs_b0[None, :], part_mu, mask=part_mask)
        if SAMPLE:
            tl.store(part_rows + B0 + offs_b0[None, :], part_lv, mask=part_mask)
        # Every thread's partials are written before this program counts itself in (release);
        # the last to arrive reads them after its acquire, past L1 (".cg").
        tl.debug_barrier()
        arrived = tl.atomic_add(count_ptr + pid_m, 1, sem="acq_rel")
        if arrived == SPLITS - 1:
            mu0 = tl.zeros((BLOCK_M, B0_P), dtype=tl.float32)
            lv0 = tl.zeros((BLOCK_M, B0_P), dtype=tl.float32)
            for s in range(SPLITS):
                src = part_ptr + s * split_elems + rows[:, None] * width
                mu0 += tl.load(src + offs_b0[None, :], mask=part_mask, other=0.0, cache_modifier=".cg")
                if SAMPLE:
                    lv0 += tl.load(src + B0 + offs_b0[None, :], mask=part_mask, other=0.0, cache_modifier=".cg")
            _second_encoder(mu0, lv0, rows, row_ok, offs_b0, b0_ok,
                            c1_ptr, w2_ptr, c2_ptr, w3_ptr, c3_ptr, eps0_ptr, eps1_ptr, out_ptr,
                            H, B0, B1, stride_eps0, stride_eps1, stride_out,
                            BLOCK_M, TAIL_BLOCK_H, B0_P, B1_P, SAMPLE, PRECISION, UPCAST)


@triton.jit
def _second_encoder(
    sum_mu0, sum_lv0, rows, row_ok, offs_b0, b0_ok,
    c1_ptr, w2_ptr, c2_ptr, w3_ptr, c3_ptr, eps0_ptr, eps1_ptr, out_ptr,
    H, B0, B1, stride_eps0, stride_eps1, stride_out,
    BLOCK_M: tl.constexpr, BLOCK_H: tl.constexpr, B0_P: tl.constexpr, B1_P: tl.constexpr,
    SAMPLE: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    """From the float32 sums of layer 2 (bias not yet added) to ``b1`` stored in ``out``."""
    dt = out_ptr.dtype.element_ty
    mu0 = rounded_to(sum_mu0 + tl.load(c1_ptr + offs_b0, mask=b0_ok, other=0.0).to(tl.float32)[None, :], dt)
    b0 = mu0
    if SAMPLE:
        lv0 = rounded_to(sum_lv0 + tl.load(c1_ptr + B0 + offs_b0, mask=b0_ok, other=0.0).to(tl.float32)[None, :], dt)
        eps0 = tl.load(eps0_ptr + offsets_2d(rows, offs_b0, stride_eps0, 1),
                       mask=row_ok[:, None] & b0_ok[None, :], other=0.0).to(tl.float32)
        b0 = rounded_to(mu0.to(tl.float32) + eps0 * tl.exp(lv0.to(tl.float32) * 0.5), dt)
    b0 = tl.where(b0_ok[None, :], b0, 0.0).to(dt)  # padded columns exactly 0 (non-finite sums leave NaN there)

    offs_h = tl.arange(0, BLOCK_H)
    offs_b1 = tl.arange(0, B1_P)
    b1_ok = offs_b1 < B1
    acc_mu = tl.zeros((BLOCK_M, B1_P), dtype=tl.float32)
    acc_lv = tl.zeros((BLOCK_M, B1_P), dtype=tl.float32)
    for h_start in range(0, H, BLOCK_H):
        cols = h_start + offs_h
        col_ok = cols < H
        w2t = tl.load(w2_ptr + offsets_2d(offs_b0, cols, 1, B0), mask=b0_ok[:, None] & col_ok[None, :], other=0.0)
        bias2 = tl.load(c2_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        h1 = rounded_to(tl.where(col_ok[None, :], relu_nan(_dot(b0, w2t, PRECISION, UPCAST) + bias2[None, :]), 0.0),
                        dt)
        w_mask = col_ok[:, None] & b1_ok[None, :]
        w3t = tl.load(w3_ptr + offsets_2d(cols, offs_b1, 1, H), mask=w_mask, other=0.0)
        acc_mu += _dot(h1, w3t, PRECISION, UPCAST)
        if SAMPLE:
            w3t_lv = tl.load(w3_ptr + offsets_2d(cols, B1 + offs_b1, 1, H), mask=w_mask, other=0.0)
            acc_lv += _dot(h1, w3t_lv, PRECISION, UPCAST)

    out_mask = row_ok[:, None] & b1_ok[None, :]
    b1 = rounded_to(acc_mu + tl.load(c3_ptr + offs_b1, mask=b1_ok, other=0.0).to(tl.float32)[None, :], dt)
    if SAMPLE:
        lv1 = rounded_to(acc_lv + tl.load(c3_ptr + B1 + offs_b1, mask=b1_ok, other=0.0).to(tl.float32)[None, :], dt)
        eps1 = tl.load(eps1_ptr + offsets_2d(rows, offs_b1, stride_eps1, 1), mask=out_mask, other=0.0).to(tl.float32)
        b1 = rounded_to(b1.to(tl.float32) + eps1 * tl.exp(lv1.to(tl.float32) * 0.5), dt)
    tl.store(out_ptr + offsets_2d(rows, offs_b1, stride_out, 1), b1, mask=out_mask)


# ---------------------------------------------------------------------------------------------
# Launch configuration


@dataclasses.dataclass(frozen=True)
class EncodeChainConfig:
    """Block sizes and work split of one launch (see the module docstring)."""

    block_m: int
    block_h: int
    splits: int
    block_k: int = 64
    tail_block_h: int = 64
    num_warps: int = 4
    num_stages: int = 2


# Provisional launch heuristics (the sweep of ``python -m ithp_fast.tools.measure_serving`` on the GPU
# reports the fastest configuration per row count; these follow it once measured).
SMALL_ROWS_BLOCK_M = 16
"""Row block while the rows fit in a few blocks (latency: every program is short)."""
LARGE_ROWS_BLOCK_M = 64
"""Row block for many rows (throughput: fewer re-reads of the weights)."""
LARGE_ROWS_MIN = 4096
"""From this many rows on, ``LARGE_ROWS_BLOCK_M`` and no split (enough row blocks to fill the GPU)."""
PROGRAMS_PER_SM = 1
"""The split aims at about this many programs per multiprocessor."""
MAX_BLOCK_H = 64
"""Widest hidden chunk."""


def _pow2_at_least(n: int, floor: int = MIN_DOT) -> int:
    return max(floor, triton.next_power_of_2(int(n)))


def choose_config(rows: int, hidden: int, sm_count: int) -> EncodeChainConfig:
    """The launch configuration for ``rows`` rows and hidden width ``hidden`` on ``sm_count`` SMs."""
    if rows >= LARGE_ROWS_MIN:
        return EncodeChainConfig(block_m=LARGE_ROWS_BLOCK_M, block_h=min(MAX_BLOCK_H, _pow2_at_least(hidden)), splits=1)
    block_m = SMALL_ROWS_BLOCK_M
    row_blocks = triton.cdiv(rows, block_m)
    max_splits = max(1, triton.cdiv(hidden, MIN_DOT))
    wanted = max(1, (PROGRAMS_PER_SM * sm_count) // row_blocks)
    splits = 1
    while splits * 2 <= min(wanted, max_splits):
        splits *= 2
    block_h = min(MAX_BLOCK_H, _pow2_at_least(triton.cdiv(hidden, splits)))
    return EncodeChainConfig(block_m=block_m, block_h=block_h, splits=splits)


# ---------------------------------------------------------------------------------------------
# Host launcher


def encode_chain_forward(x: torch.Tensor, w0: torch.Tensor, c0: torch.Tensor, w1: torch.Tensor, c1: torch.Tensor,
                         w2: torch.Tensor, c2: torch.Tensor, w3: torch.Tensor, c3: torch.Tensor,
                         eps0: Optional[torch.Tensor] = None, eps1: Optional[torch.Tensor] = None,
                         precision: str = "ieee", config: Optional[EncodeChainConfig] = None) -> torch.Tensor:
    """The launch behind ``encode_chain.encode_chain``, in its argument order (operands checked there)."""
    rows, x0 = x.shape
    hidden = w0.shape[0]
    b0_dim, b1_dim = w1.shape[0] // 2, w3.shape[0] // 2
    sample = eps0 is not None
    if x.stride(-1) != 1:
        x = x.contiguous()
    # no copies for nn.Linear's own
    w0, c0, w1, c1, w2, c2, w3, c3 = (t.contiguous() for t in (w0, c0, w1, c1, w2, c2, w3, c3))
    out = torch.empty(rows, b1_dim, dtype=x.dtype, device=x.device)
    if rows == 0:
        return out
    cfg = config or choose_config(rows, hidden, sm_count(x.device))
    row_blocks = triton.cdiv(rows, cfg.block_m)
    chunks = triton.cdiv(hidden, cfg.block_h)
    chunks_per_split = triton.cdiv(chunks, cfg.splits)
    if cfg.splits > 1:
        part = torch.empty(cfg.splits, rows, b0_dim * (2 if sample else 1), dtype=torch.float32, device=x.device)
        counters = torch.zeros(row_blocks, dtype=torch.int32, device=x.device)  # this launch's alone
    else:
        part = counters = out  # unused by the kernel when there is no split
    dot_precision = precision if x.dtype == torch.float32 else "ieee"  # 16-bit inputs: plain tensor-core dots
    wrap_triton(_encode_chain_kernel)[(row_blocks, cfg.splits)](
        x, w0, c0, w1, c1, w2, c2, w3, c3,
        eps0 if sample else x, eps1 if sample else x, out, part, counters,
        rows, x0, hidden, b0_dim, b1_dim,
        x.stride(0), eps0.stride(0) if sample else 0, eps1.stride(0) if sample else 0, out.stride(0),
        BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k, BLOCK_H=cfg.block_h,
        TAIL_BLOCK_H=min(cfg.tail_block_h, _pow2_at_least(hidden)),
        B0_P=_pow2_at_least(b0_dim), B1_P=_pow2_at_least(b1_dim),
        CHUNKS_PER_SPLIT=chunks_per_split, SPLITS=cfg.splits,
        SAMPLE=sample, PRECISION=dot_precision, UPCAST=x.device.type != "cuda",
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return out


# ---------------------------------------------------------------------------------------------
# The launcher as a custom op of Triton kernels (torch.library.triton_op): torch.compile and
# torch.export keep the kernel in the graph as itself. Under Triton's interpreter, whose kernels
# cannot run on the fake tensors of a trace, it is an opaque custom op with its output's shape.


def _register_op(fn):
    name = "ithp_fast::encode_chain"
    if not triton_interpreter_on():
        return torch.library.triton_op(name, mutates_args=())(fn)
    op = torch.library.custom_op(name, mutates_args=())(fn)
    op.register_fake(lambda x, w0, c0, w1, c1, w2, c2, w3, c3, *rest: x.new_empty(x.shape[0], w3.shape[0] // 2))
    return op


@_register_op
def encode_chain_op(
    x: torch.Tensor,
    w0: torch.Tensor, c0: torch.Tensor, w1: torch.Tensor, c1: torch.Tensor,
    w2: torch.Tensor, c2: torch.Tensor, w3: torch.Tensor, c3: torch.Tensor,
    eps0: Optional[torch.Tensor], eps1: Optional[torch.Tensor], precision: str,
) -> torch.Tensor:
    """``torch.ops.ithp_fast.encode_chain``: the launch, for graphs traced by torch.compile / torch.export."""
    return encode_chain_forward(x, w0, c0, w1, c1, w2, c2, w3, c3, eps0, eps1, precision)
