"""Triton kernels of the factorised TCMax (``tcmax.py`` holds the math, the PyTorch form and the dispatch).

Passes over memory: the forward reads each ``L_m`` once (one launch per modality, a grid of
class blocks x row splits), then one program per class block merges its splits and modalities,
and one single program reduces the class-block partials to logZ and the losses; the backward
reads each ``L_m`` once and writes its gradient once (one launch per modality).

Launchers, in the op's argument order: ``tcmax_forward(logits, labels, block_b, block_c, splits) ->
(out, saved)`` and ``tcmax_backward(grad_out, logits, labels, saved, needs_grad) -> grads``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from . import INTERPRETER_SM_COUNT, sm_count
from .triton_helpers import offsets_2d, rounded_to


@triton.jit
def _column_lse_partial_kernel(
    logits_ptr, labels_ptr, pmax_ptr, psum_ptr, ppick_ptr, pcount_ptr,
    B, C, stride_b, stride_c, rows_per_split, n_split, n_cblocks, modality,
    BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, WRITE_COUNT: tl.constexpr, ACC: tl.constexpr,
):
    """One (class block, row split): running column max / sum of exp, label picks, label counts."""
    pid_c = tl.program_id(0)
    pid_s = tl.program_id(1)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cols < C
    # every offset below is int64: rows * stride_b + cols * stride_c, and the [M, splits, C]
    # partials, pass 2^31 with transposed logits or B * C (or M * splits * C) >= 2^31
    split = (modality * n_split + pid_s).to(tl.int64)
    run_max = tl.full([BLOCK_C], float("-inf"), ACC)
    run_sum = tl.zeros([BLOCK_C], ACC)
    pick = tl.zeros([BLOCK_B], tl.float64)
    count = tl.zeros([BLOCK_C], tl.int32)
    row0 = pid_s * rows_per_split
    for i in range(0, rows_per_split, BLOCK_B):
        rows = row0 + i + tl.arange(0, BLOCK_B)
        r_ok = rows < B
        ok = r_ok[:, None] & c_ok[None, :]
        x = tl.load(logits_ptr + offsets_2d(rows, cols, stride_b, stride_c), mask=ok, other=float("-inf")).to(ACC)
        y = tl.load(labels_ptr + rows, mask=r_ok, other=-1)
        hit = (y[:, None] == cols[None, :]) & ok
        # at most one hit per row, so the row sum is exact; rows then add up in float64
        pick += tl.sum(tl.where(hit, x, 0.0), axis=1).to(tl.float64)
        if WRITE_COUNT:
            count += tl.sum(hit.to(tl.int32), axis=0)
        new_max = tl.maximum(run_max, tl.max(x, axis=0))
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)
        run_sum = run_sum * tl.exp(run_max - shift) + tl.sum(tl.exp(x - shift[None, :]), axis=0)
        run_max = new_max
    ws = split * C + cols
    tl.store(pmax_ptr + ws, run_max, mask=c_ok)
    tl.store(psum_ptr + ws, run_sum, mask=c_ok)
    tl.store(ppick_ptr + split * n_cblocks + pid_c, tl.sum(pick, axis=0))
    if WRITE_COUNT:
        tl.store(pcount_ptr + pid_s.to(tl.int64) * C + cols, count, mask=c_ok)


@triton.jit
def _class_block_merge_kernel(
    pmax_ptr, psum_ptr, ppick_ptr, pcount_ptr, mx_ptr, ls_ptr, count_ptr,
    bmax_ptr, bsum_ptr, bcross_ptr, bpick_ptr, bcount_ptr,
    C, n_split, n_cblocks,
    M: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr,
):
    """One class block (the partial kernel's): merge its row splits into mx, ls and the label
    counts; reduce its classes to one partial of logZ (max and sum of exp of T), of each
    modality's cross and pick sums, and of the label count (labels in this block's classes)."""
    pid = tl.program_id(0)
    cols = pid * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cols < C
    m_idx = tl.arange(0, BLOCK_M)
    m_ok = m_idx < M
    m3 = m_idx[:, None, None]
    run_max = tl.full([BLOCK_M, BLOCK_C], float("-inf"), pmax_ptr.dtype.element_ty)
    run_sum = tl.zeros([BLOCK_M, BLOCK_C], psum_ptr.dtype.element_ty)
    cnt = tl.zeros([BLOCK_C], tl.int32)
    pick = tl.zeros([BLOCK_M], tl.float64)
    for s0 in range(0, n_split, BLOCK_S):
        s_idx = s0 + tl.arange(0, BLOCK_S)
        s_ok = s_idx < n_split
        ok3 = (m3 < M) & s_ok[None, :, None] & c_ok[None, None, :]
        offs3 = (m3 * n_split + s_idx[None, :, None]).to(tl.int64) * C + cols[None, None, :]
        pmax = tl.load(pmax_ptr + offs3, mask=ok3, other=float("-inf"))
        psum = tl.load(psum_ptr + offs3, mask=ok3, other=0.0)
        new_max = tl.maximum(run_max, tl.max(pmax, axis=1))
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)
        run_sum = run_sum * tl.exp(run_max - shift) + tl.sum(psum * tl.exp(pmax - shift[:, None, :]), axis=1)
        run_max = new_max
        cnt_ok = s_ok[:, None] & c_ok[None, :]
        cnt += tl.sum(tl.load(pcount_ptr + offsets_2d(s_idx, cols, C, 1), mask=cnt_ok, other=0), axis=0)
        pick_ok = m_ok[:, None] & s_ok[None, :]
        pick_offs = (m_idx[:, None] * n_split + s_idx[None, :]).to(tl.int64) * n_cblocks + pid
        pick += tl.sum(tl.load(ppick_ptr + pick_offs, mask=pick_ok, other=0.0), axis=1)
    ok2 = m_ok[:, None] & c_ok[None, :]
    ls = tl.log(tl.where(ok2, run_sum, 1.0))
    offs2 = offsets_2d(m_idx, cols, C, 1)
    tl.store(mx_ptr + offs2, run_max, mask=ok2)
    tl.store(ls_ptr + offs2, ls, mask=ok2)
    tl.store(count_ptr + cols, cnt.to(count_ptr.dtype.element_ty), mask=c_ok)
    s = tl.where(ok2, run_max.to(tl.float64) + ls.to(tl.float64), 0.0)
    t = tl.where(c_ok, tl.sum(s, axis=0), float("-inf"))
    t_max = tl.max(t, axis=0)
    t_shift = tl.where(t_max == float("-inf"), 0.0, t_max)
    tl.store(bmax_ptr + pid, t_max)
    tl.store(bsum_ptr + pid, tl.sum(tl.exp(t - t_shift), axis=0))
    # n_c * s_m[c] is 0 for a class no label picks, also when the class is impossible (s = -inf)
    cross = tl.where(cnt[None, :] > 0, cnt.to(tl.float64)[None, :] * s, 0.0)
    tl.store(bcross_ptr + m_idx * n_cblocks + pid, tl.sum(cross, axis=1), mask=m_ok)
    tl.store(bpick_ptr + m_idx * n_cblocks + pid, pick, mask=m_ok)
    tl.store(bcount_ptr + pid, tl.sum(cnt, axis=0).to(tl.float64))


@triton.jit
def _tcmax_losses_kernel(
    bmax_ptr, bsum_ptr, bcross_ptr, bpick_ptr, bcount_ptr, logz_ptr, out_ptr, B, n_cblocks,
    M: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Single program over the class-block partials: logZ and the M + 1 losses. Labels outside
    [0, C) fall in no class block: then fewer than B labels are counted, and logZ is NaN."""
    m_idx = tl.arange(0, BLOCK_M)
    m_ok = m_idx < M
    lane_max = tl.full([BLOCK_N], float("-inf"), tl.float64)
    lane_sum = tl.zeros([BLOCK_N], tl.float64)
    cross = tl.zeros([BLOCK_M], tl.float64)
    pick = tl.zeros([BLOCK_M], tl.float64)
    labelled = tl.zeros([BLOCK_N], tl.float64)
    for n0 in range(0, n_cblocks, BLOCK_N):
        n_idx = n0 + tl.arange(0, BLOCK_N)
        n_ok = n_idx < n_cblocks
        bmax = tl.load(bmax_ptr + n_idx, mask=n_ok, other=float("-inf"))
        bsum = tl.load(bsum_ptr + n_idx, mask=n_ok, other=0.0)
        new_max = tl.maximum(lane_max, bmax)
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)
        lane_sum = lane_sum * tl.exp(lane_max - shift) + bsum * tl.exp(bmax - shift)
        lane_max = new_max
        offs = m_idx[:, None] * n_cblocks + n_idx[None, :]
        ok = m_ok[:, None] & n_ok[None, :]
        cross += tl.sum(tl.load(bcross_ptr + offs, mask=ok, other=0.0), axis=1)
        pick += tl.sum(tl.load(bpick_ptr + offs, mask=ok, other=0.0), axis=1)
        labelled += tl.load(bcount_ptr + n_idx, mask=n_ok, other=0.0)
    g_max = tl.max(lane_max, axis=0)
    logz = g_max + tl.log(tl.sum(lane_sum * tl.exp(lane_max - g_max), axis=0))
    b = tl.zeros([], tl.float64) + B  # B may arrive as a specialised constant
    logz = tl.where(tl.sum(labelled, axis=0) == b, logz, float("nan"))
    const = logz - tl.log(b)
    loss = -tl.sum(pick, axis=0) / b + const
    # the other modalities' cross sums, added up directly (sum - cross would make -inf - -inf = NaN)
    others = tl.sum(tl.where(m_idx[:, None] == m_idx[None, :], 0.0, cross[None, :]), axis=1)
    loss_m = -(pick + others) / b + const
    tl.store(logz_ptr, logz)
    tl.store(out_ptr, loss.to(out_ptr.dtype.element_ty))
    tl.store(out_ptr + 1 + m_idx, loss_m.to(out_ptr.dtype.element_ty), mask=m_ok)


@triton.jit
def _tcmax_grad_kernel(
    logits_ptr, labels_ptr, grad_ptr, mx_ptr, ls_ptr, count_ptr, logz_ptr, gout_ptr,
    B, C, stride_b, stride_c, gstride_b, gstride_c, rows_per_split, modality,
    M: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr,
):
    """One (class block, row split) of dL_modality: an elementwise pass over the logits."""
    pid_c = tl.program_id(0)
    pid_s = tl.program_id(1)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = cols < C
    m_idx = tl.arange(0, BLOCK_M)
    ok2 = (m_idx[:, None] < M) & c_ok[None, :]
    offs2 = offsets_2d(m_idx, cols, C, 1)
    s_all = tl.load(mx_ptr + offs2, mask=ok2, other=0.0).to(tl.float64) + tl.load(
        ls_ptr + offs2, mask=ok2, other=0.0
    ).to(tl.float64)
    logz = tl.load(logz_ptr)
    q = tl.exp(tl.sum(s_all, axis=0) - logz)
    g = tl.load(gout_ptr).to(tl.float64)
    g_uni = tl.sum(tl.load(gout_ptr + 1 + m_idx, mask=m_idx < M, other=0.0).to(tl.float64), axis=0)
    g_n = tl.load(gout_ptr + 1 + modality).to(tl.float64)
    b = tl.zeros([], tl.float64) + B
    cnt = tl.load(count_ptr + cols, mask=c_ok, other=0.0).to(tl.float64)
    w = (q * (g + g_uni) - cnt / b * (g_uni - g_n)).to(ACC)
    coef = ((g + g_n) / b).to(ACC)
    row_n = (tl.zeros([], tl.int64) + modality) * C + cols  # modality may arrive as a specialised constant
    mx_n = tl.load(mx_ptr + row_n, mask=c_ok, other=0.0)
    ls_n = tl.load(ls_ptr + row_n, mask=c_ok, other=0.0)
    row0 = pid_s * rows_per_split
    for i in range(0, rows_per_split, BLOCK_B):
        rows = row0 + i + tl.arange(0, BLOCK_B)
        r_ok = rows < B
        ok = r_ok[:, None] & c_ok[None, :]
        x = tl.load(logits_ptr + offsets_2d(rows, cols, stride_b, stride_c), mask=ok, other=0.0).to(ACC)
        y = tl.load(labels_ptr + rows, mask=r_ok, other=-1)
        # a -inf logit has probability 0 (also in a column of -inf, where mx = ls = -inf)
        soft = tl.where(x == float("-inf"), 0.0, tl.exp((x - mx_n[None, :]) - ls_n[None, :]))
        grad = soft * w[None, :] - tl.where(y[:, None] == cols[None, :], coef, 0.0)
        tl.store(grad_ptr + offsets_2d(rows, cols, gstride_b, gstride_c), rounded_to(grad, grad_ptr.dtype.element_ty),
                 mask=ok)


# ---------------------------------------------------------------------------------------------
# Host side


def _launch_config(B: int, C: int, device: torch.device, block_b=None, block_c=None, splits=None):
    """Tile sizes and the row split: enough programs to fill the GPU, few partials to merge."""
    block_c = block_c or min(64, max(16, triton.next_power_of_2(C)))
    block_b = block_b or max(16, min(256, 4096 // block_c))
    n_cblocks = triton.cdiv(C, block_c)
    n_row_tiles = triton.cdiv(B, block_b)
    if splits is None:
        # under Triton's interpreter every program costs Python time: few programs there
        target = 2 * sm_count(device) if device.type == "cuda" else INTERPRETER_SM_COUNT
        splits = min(triton.cdiv(target, n_cblocks), 64)
    n_split = max(1, min(n_row_tiles, splits))
    tiles_per_split = triton.cdiv(n_row_tiles, n_split)
    n_split = triton.cdiv(n_row_tiles, tiles_per_split)
    return block_b, block_c, n_cblocks, n_split, tiles_per_split * block_b


def _acc_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def tcmax_forward(logits: Sequence[torch.Tensor], labels: torch.Tensor, block_b=None, block_c=None, splits=None):
    """``(out, saved)``: ``out = [loss, loss_1, ..., loss_M]`` and what :func:`tcmax_backward` needs."""
    M = len(logits)
    B, C = logits[0].shape
    device = logits[0].device
    work = torch.float64 if logits[0].dtype == torch.float64 else torch.float32
    block_b, block_c, n_cblocks, n_split, rows_per_split = _launch_config(B, C, device, block_b, block_c, splits)
    pmax = torch.empty((M, n_split, C), device=device, dtype=work)
    psum = torch.empty_like(pmax)
    ppick = torch.empty((M, n_split, n_cblocks), device=device, dtype=torch.float64)
    pcount = torch.empty((n_split, C), device=device, dtype=torch.int32)
    acc = _acc_dtype(logits[0].dtype)
    grid = (n_cblocks, n_split)
    for m, L in enumerate(logits):
        _column_lse_partial_kernel[grid](
            L, labels, pmax, psum, ppick, pcount,
            B, C, L.stride(0), L.stride(1), rows_per_split, n_split, n_cblocks, m,
            BLOCK_B=block_b, BLOCK_C=block_c, WRITE_COUNT=(m == 0), ACC=acc,
        )
    mx = torch.empty((M, C), device=device, dtype=work)
    ls = torch.empty_like(mx)
    count = torch.empty((C,), device=device, dtype=work)
    blocks = torch.empty((3 + 2 * M, n_cblocks), device=device, dtype=torch.float64)
    bmax, bsum, bcount, bcross, bpick = blocks[0], blocks[1], blocks[2], blocks[3 : 3 + M], blocks[3 + M :]
    block_m = triton.next_power_of_2(M)
    _class_block_merge_kernel[(n_cblocks,)](
        pmax, psum, ppick, pcount, mx, ls, count, bmax, bsum, bcross, bpick, bcount,
        C, n_split, n_cblocks,
        M=M, BLOCK_M=block_m, BLOCK_S=min(16, max(2, triton.next_power_of_2(n_split))), BLOCK_C=block_c,
    )
    logz = torch.empty((), device=device, dtype=torch.float64)
    out = torch.empty((M + 1,), device=device, dtype=work)
    _tcmax_losses_kernel[(1,)](
        bmax, bsum, bcross, bpick, bcount, logz, out, B, n_cblocks,
        M=M, BLOCK_M=block_m, BLOCK_N=max(2, min(256, triton.next_power_of_2(n_cblocks))),
    )
    launch = (block_b, block_c, n_cblocks, n_split, rows_per_split)
    return out, (mx, ls, count, logz, launch)


def tcmax_backward(grad_out: torch.Tensor, logits: Sequence[torch.Tensor], labels: torch.Tensor, saved,
                   needs_grad: Sequence[bool]) -> list:
    """The gradient of each ``L_m`` (None where ``needs_grad[m]`` is False)."""
    mx, ls, count, logz, launch = saved
    block_b, block_c, n_cblocks, n_split, rows_per_split = launch
    M = len(logits)
    B, C = logits[0].shape
    grad_out = grad_out.contiguous()
    acc = _acc_dtype(logits[0].dtype)
    grads = []
    for m, L in enumerate(logits):
        if not needs_grad[m]:
            grads.append(None)
            continue
        grad = torch.empty_like(L)
        _tcmax_grad_kernel[(n_cblocks, n_split)](
            L, labels, grad, mx, ls, count, logz, grad_out,
            B, C, L.stride(0), L.stride(1), grad.stride(0), grad.stride(1), rows_per_split, m,
            M=M, BLOCK_M=triton.next_power_of_2(M), BLOCK_B=block_b, BLOCK_C=block_c, ACC=acc,
        )
        grads.append(grad)
    return grads
