"""Factorised TCMax for linear fusions: ``[loss, loss_1, ..., loss_M]`` in O(M·B·C).

Inputs: M per-modality logit tensors ``L_m`` of shape ``[B, C]`` (a fusion whose logits are the
sum of per-modality logits) and integer labels ``y`` of shape ``[B]``, already validated by
``ithp_fast.losses``. The definitions (every pairing of the batch scored, one softmax over all
``B^M · C`` entries) are in ``ithp_fast.losses`` and the spec. Factorised (m indexes
modalities, j rows of the batch, c classes; n_c = #{i : y_i = c})::

    s_m[c] = logsumexp_j L_m[j, c]            kept as  mx_m[c] = max_j L_m[j, c],
                                                        ls_m[c] = log sum_j exp(L_m[j, c] - mx_m[c])
    T[c]   = sum_m s_m[c],   logZ = logsumexp_c T[c],   q[c] = exp(T[c] - logZ)
    pick_m = sum_i L_m[i, y_i],   cross_m = sum_c n_c * s_m[c]
    loss   = -(sum_m pick_m) / B + logZ - log B
    loss_m = -(pick_m + sum_{m' != m} cross_m') / B + logZ - log B

  backward, with upstream gradients g (loss) and g_m (loss_m), G = sum_m g_m:
    dL_n[j, c] = exp(L_n[j, c] - mx_n[c] - ls_n[c]) * w_n[c] - [y_j == c] * (g + g_n) / B
    w_n[c]     = q[c] * (g + G) - n_c / B * (G - g_n)

The O(B*C) sweeps accumulate in float32 (float64 for float64 logits); everything of size C or
less, and the label picks, is summed in float64, so logits of magnitude 1e4 keep the small loss
that is their difference accurate. Keeping mx and ls apart keeps exp(L - s) accurate too.

Backends: ``torch`` (:func:`tcmax_factorised_torch`, plain autograd) and ``triton`` (the fused
kernels of ``tcmax_triton.py`` behind :class:`TCMaxFactorised`); :func:`tcmax_factorised`
dispatches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.autograd.function import once_differentiable

from . import check_backend


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The O(B·C) sweeps run in float32 (float64 for float64 logits); losses come out in it."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def tcmax_factorised_torch(logits: Sequence[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """``[loss, loss_1, ..., loss_M]``, pure PyTorch, O(M·B·C) time and memory.

    With ``s_m[c] = logsumexp_j L_m[j, c]`` (a column log-sum-exp over the batch),
    ``logZ = logsumexp_c sum_m s_m[c]``, ``pick_m = mean_i L_m[i, y_i]`` and
    ``cross_m = mean_i s_m[y_i]``::

        loss   = -sum_m pick_m + logZ - log B
        loss_m = -pick_m - sum_{m' != m} cross_m' + logZ - log B

    The column sweeps run in float32 and keep the max apart from the log-sum; the size-C and
    size-B remainder runs in float64, so large logits (1e4) do not swamp a small loss.
    """
    B = labels.shape[0]
    work = work_dtype(logits[0].dtype)
    index = labels.long()
    s_rows, picks = [], []
    for L in logits:
        L = L.to(work)
        col_max = L.detach().amax(dim=0)  # gradient-free shift: d s / d L is softmax either way
        log_sum = (L - col_max).exp().sum(dim=0).log()
        s_rows.append(col_max.double() + log_sum.double())
        picks.append(L.gather(1, index[:, None]).squeeze(1).double().mean())
    s = torch.stack(s_rows)  # [M, C]
    log_z = torch.logsumexp(s.sum(dim=0), dim=0)
    const = log_z - math.log(B)
    pick = torch.stack(picks)  # [M]
    cross = s[:, index].mean(dim=1)  # [M]
    loss = -pick.sum() + const
    loss_m = -(pick + cross.sum() - cross) + const
    return torch.cat([loss[None], loss_m]).to(work)


class TCMaxFactorised(torch.autograd.Function):
    """``(labels, L_1, ..., L_M) -> [loss, loss_1, ..., loss_M]`` with the Triton kernels, forward and backward."""

    @staticmethod
    def forward(ctx, labels: torch.Tensor, launch: dict, *logits: torch.Tensor) -> torch.Tensor:
        from .tcmax_triton import tcmax_forward

        out, (mx, ls, count, logz, ctx.launch) = tcmax_forward(logits, labels, **launch)
        ctx.save_for_backward(labels, mx, ls, count, logz, *logits)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        from .tcmax_triton import tcmax_backward

        labels, mx, ls, count, logz, *logits = ctx.saved_tensors
        grads = tcmax_backward(grad_out, labels, logits, (mx, ls, count, logz, ctx.launch), ctx.needs_input_grad[2:])
        return (None, None, *grads)


def tcmax_factorised(logits: Sequence[torch.Tensor], labels: torch.Tensor, *, backend: str = "torch",
                     block_b=None, block_c=None, splits=None) -> torch.Tensor:
    """``[loss, loss_1, ..., loss_M]`` for already validated inputs (see ``ithp_fast.losses``).

    ``logits``: M tensors ``[B, C]`` of one floating dtype on one device; ``labels``: integer
    ``[B]`` in ``[0, C)``. On the ``triton`` backend ``block_b`` / ``block_c`` (tile sizes) and
    ``splits`` (row splits, at most one per row tile) override the launch configuration: the
    tests use them to exercise several class blocks and row splits on small shapes,
    ``scripts/tcmax_probe.py`` to tune it.
    """
    check_backend(backend)
    if backend == "torch":
        return tcmax_factorised_torch(logits, labels)
    launch = dict(block_b=block_b, block_c=block_c, splits=splits)
    return TCMaxFactorised.apply(labels.contiguous(), launch, *logits)
