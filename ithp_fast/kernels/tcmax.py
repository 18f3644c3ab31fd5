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

Non-finite logits, as the direct definition treats them:

* ``-inf`` is an impossible class (or pairing): probability exactly 0. A class that is ``-inf`` in
  every row of a modality has ``s_m[c] = -inf``, ``q[c] = 0`` and no gradient; it adds nothing to
  ``cross_m`` unless a label points at it (``n_c * s_m[c]`` is taken as 0 when ``n_c = 0``). A label
  on an impossible class makes the losses that pick it ``+inf``, as the definition does.
* A label outside ``[0, C)`` (possible with ``check_labels=False``) makes ``logZ``, every loss
  and every gradient NaN: found on the device, no host sync, nothing read out of bounds.
* Where no derivative exists, every gradient is NaN: when a unimodal loss that receives a
  non-zero gradient is not finite (its log-sum-exp runs over nothing possible), and when ``logZ``
  is not finite (a NaN or ``+inf`` logit, or every class impossible). A joint loss made ``+inf``
  by an impossible label keeps its finite gradient, as the definition's does. The one difference
  from the direct definition's autograd: with a ``+inf`` logit and only the joint loss
  differentiated, the direct form leaves some gradient entries finite; here all are NaN.

The O(B*C) sweeps accumulate in float32 (float64 for float64 logits); everything of size C or
less, and the label picks, is summed in float64, so logits of magnitude 1e4 keep the small loss
that is their difference accurate. Keeping mx and ls apart keeps exp(L - s) accurate too.

Backends: ``torch`` (:func:`tcmax_factorised_torch`, plain autograd) and ``triton`` (the fused
kernels of ``tcmax_triton.py`` behind :class:`TCMaxFactorised`); :func:`tcmax_factorised`
dispatches. Every entry point takes the arguments in one order, ``(logits, labels)`` then the
launch settings (the Function flattened: ``*logits, labels, launch``; backward: ``grad_out`` first).
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
    B, C = logits[0].shape
    work = work_dtype(logits[0].dtype)
    index = labels.long()
    in_range = (index >= 0) & (index < C)
    index = torch.where(in_range, index, 0)  # read in bounds; an out-of-range label makes logZ NaN below
    s_rows, picks = [], []
    for L in logits:
        L = L.to(work)
        col_max = L.detach().amax(dim=0)  # gradient-free shift: d s / d L is softmax either way
        impossible = col_max == -math.inf  # a class -inf in every row: s = -inf, and no gradient
        shift = torch.where(impossible, 0.0, col_max)
        sums = (L - shift).exp().sum(dim=0)
        log_sum = torch.where(impossible, 1.0, sums).log()
        s_rows.append(torch.where(impossible, -math.inf, shift.double() + log_sum.double()))
        picks.append(L.gather(1, index[:, None]).squeeze(1).double().mean())
    s = torch.stack(s_rows)  # [M, C]
    log_z = torch.logsumexp(s.sum(dim=0), dim=0) + torch.where(in_range.all(), 0.0, math.nan)
    const = log_z - math.log(B)
    pick = torch.stack(picks)  # [M]
    cross = s[:, index].mean(dim=1)  # [M]
    loss = -pick.sum() + const
    others = torch.where(torch.eye(len(logits), dtype=torch.bool, device=cross.device), 0.0, cross).sum(dim=1)
    loss_m = -(pick + others) + const  # others[m] = sum of cross over m' != m (not sum - cross: -inf - -inf)
    out = torch.cat([loss[None], loss_m]).to(work)
    return _NaNWhereUndefined.apply(out, log_z.detach(), *logits)


def gradient_undefined(out: torch.Tensor, log_z: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    """0-dim bool (on the device, no sync): whether the losses ``out`` have no derivative for the
    upstream gradients ``grad_out`` -- a unimodal loss with a non-zero gradient is not finite, or
    ``logZ`` is not finite (see the module docstring)."""
    unimodal = (~torch.isfinite(out[1:]) & (grad_out[1:] != 0)).any()
    return unimodal | ~torch.isfinite(log_z)


class _NaNWhereUndefined(torch.autograd.Function):
    """``out`` unchanged; its backward adds NaN to every logit's gradient where
    :func:`gradient_undefined` (0 otherwise, as a stride-0 tensor: no memory)."""

    @staticmethod
    def forward(ctx, out, log_z, *logits):
        ctx.save_for_backward(out, log_z)
        ctx.shapes = [(L.shape, L.dtype) for L in logits]
        return out.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        out, log_z = ctx.saved_tensors
        extra = torch.where(gradient_undefined(out, log_z, grad_out), math.nan, 0.0)
        return (grad_out, None, *(extra.to(dtype).expand(shape) for shape, dtype in ctx.shapes))


class TCMaxFactorised(torch.autograd.Function):
    """``(L_1, ..., L_M, labels, launch) -> [loss, loss_1, ..., loss_M]`` with the Triton kernels, forward
    and backward (``launch``: the dict of launch settings of :func:`tcmax_factorised`)."""

    @staticmethod
    def forward(ctx, *args) -> torch.Tensor:
        from .tcmax_triton import tcmax_forward

        *logits, labels, launch = args
        out, (mx, ls, count, logz, ctx.launch) = tcmax_forward(logits, labels, **launch)
        ctx.save_for_backward(labels, mx, ls, count, logz, out, *logits)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        from .tcmax_triton import tcmax_backward

        labels, mx, ls, count, logz, out, *logits = ctx.saved_tensors
        # no derivative: a NaN upstream gradient makes every entry NaN in the kernel
        grad_out = torch.where(gradient_undefined(out, logz, grad_out), math.nan, grad_out)
        grads = tcmax_backward(grad_out, logits, labels, (mx, ls, count, logz, ctx.launch),
                               ctx.needs_input_grad[:len(logits)])
        return (*grads, None, None)


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
    return TCMaxFactorised.apply(*logits, labels.contiguous(), launch)
