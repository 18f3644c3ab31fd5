"""TCMax, the total-correlation maximisation loss for multimodal classifiers (spec: TCMax.md).

Every pairing of the batch is scored, ``S[j, k, c] = f(za_j, zv_k)[c]``, and ``P = softmax(S)``
is taken over all ``B * B * C`` entries at once. With labels ``y``::

    loss   = -mean_i log P[i, i, y_i]        - log B      (minimised)
    loss_a = -mean_i log sum_k P[i, k, y_i]  - log B      (unimodal parts, for monitoring)
    loss_v = -mean_i log sum_j P[j, i, y_i]  - log B

``- log B`` is the released code's constant; with it every term is >= 0, and 0 exactly when each
``P[i, ..., i, y_i]`` holds mass ``1/B``. There are no hyper-parameters.

Which function to use:

- :func:`tcmax_loss` / :class:`TCMaxLoss` / :func:`tcmax_loss_multi`: fusions whose logits are a
  sum of per-modality logits (sum fusion, concatenation + one linear layer split in per-modality
  halves, a shared head). Exact, O(B·C) time and memory, M >= 2 modalities. On CUDA a fused
  Triton kernel (``ithp_fast.kernels.tcmax``), elsewhere the pure-PyTorch form below.
- :func:`tcmax_loss_pairwise`: any fusion head ``fusion(za, zv) -> logits``; evaluates all B²
  pairings in chunks, memory bounded by the chunk size.
- :func:`tcmax_loss_sampled`: the released code's sampled estimate (random negative pairings),
  for batches too large for B² fusion evaluations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Optional

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .backends import resolve_backend
from .kernels.tcmax import gradient_undefined, tcmax_factorised, work_dtype

__all__ = ["tcmax_loss", "tcmax_loss_multi", "tcmax_loss_pairwise", "tcmax_loss_sampled", "TCMaxLoss"]

Fusion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------------------------------
# Validation


def _check_batch_tensor(name: str, t: object, *, floating: bool = True) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if floating and not t.dtype.is_floating_point:
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {t.dtype}")
    if t.dim() < 1 or t.shape[0] == 0:
        raise ValueError(f"{name}: empty batch (shape {tuple(t.shape)}); TCMax needs at least one example")
    return t


def _check_labels(labels: object, batch: int, num_classes: Optional[int], device: torch.device, check_range: bool):
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels: expected an integer torch.Tensor of shape [B], got {type(labels).__name__}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"labels: expected an integer tensor (e.g. torch.long) of class indices, "
                        f"got dtype {labels.dtype}")
    if tuple(labels.shape) != (batch,):
        raise ValueError(f"labels: expected shape [B] = ({batch},), got {tuple(labels.shape)}")
    if labels.device != device:
        raise ValueError(f"labels: is on {labels.device} but the logits are on {device}")
    if num_classes is not None and check_range and not _capturing(device):
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high >= num_classes:
            raise ValueError(f"labels: class indices must lie in [0, C) = [0, {num_classes}), "
                             f"got values in [{low}, {high}]")
    return labels


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _check_logits(logits: object, labels: object, names: Sequence[str], check_range: bool) -> list[torch.Tensor]:
    """Validate M >= 2 per-modality logits ``[B, C]`` and labels ``[B]``."""
    if isinstance(logits, torch.Tensor) or not isinstance(logits, Sequence):
        raise TypeError(f"logits: expected a list of M >= 2 tensors [B, C], got {type(logits).__name__}")
    if len(logits) < 2:
        raise ValueError(f"logits: TCMax needs at least two modalities, got {len(logits)}")
    checked = []
    for name, t in zip(names, logits):
        t = _check_batch_tensor(name, t)
        if t.dim() != 2:
            raise ValueError(f"{name}: expected per-modality class logits of shape [B, C], got {tuple(t.shape)}")
        checked.append(t)
    first, ref = checked[0], names[0]
    for name, t in zip(names[1:], checked[1:]):
        if t.shape[0] != first.shape[0]:
            raise ValueError(f"{name}: batch size {t.shape[0]} differs from {ref}'s {first.shape[0]}")
        if t.shape[1] != first.shape[1]:
            raise ValueError(f"{name}: {t.shape[1]} classes differ from {ref}'s {first.shape[1]}")
        if t.dtype != first.dtype:
            raise TypeError(f"{name}: dtype {t.dtype} differs from {ref}'s {first.dtype}")
        if t.device != first.device:
            raise ValueError(f"{name}: is on {t.device} but {ref} is on {first.device}")
    _check_labels(labels, first.shape[0], first.shape[1], first.device, check_range)
    return checked


# ---------------------------------------------------------------------------------------------
# Factorised form (linear fusions)


def _factorised(logits: Sequence[torch.Tensor], labels: torch.Tensor, backend: Optional[str]) -> torch.Tensor:
    name = resolve_backend(backend, logits[0].device)
    return tcmax_factorised(logits, labels, backend="triton" if name == "triton" else "torch")


def tcmax_loss_multi(
    logits: Sequence[torch.Tensor],
    labels: torch.Tensor,
    *,
    backend: Optional[str] = None,
    check_labels: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """TCMax for M >= 2 modalities whose fused logits are the sum of per-modality logits.

    ``S[j_1, ..., j_M, c] = sum_m logits[m][j_m, c]``, ``P = softmax`` over all ``B^M · C``
    entries; ``loss = -mean_i log P[i, ..., i, y_i] - log B`` and, per modality ``m``,
    ``loss_m = -mean_i log sum_{all indices but m} P[..., i at m, ..., y_i] - log B``. Computed
    exactly in O(M·B·C) time and memory (never the ``B^M · C`` tensor), in log space.

    Args:
        logits: M tensors ``[B, C]`` (one dtype, one device): each modality's class logits.
        labels: integer class indices ``[B]`` in ``[0, C)``.
        backend: ``"triton"`` (fused kernel; the CUDA default), ``"torch"`` (the CPU default) or
            ``"reference"`` (same as ``"torch"``); ``None`` chooses per device, see
            ``ithp_fast.backends.resolve_backend``.
        check_labels: check that labels lie in ``[0, C)`` (a ``ValueError`` naming the range
            found). On CUDA this costs one device-to-host sync; it is skipped while a CUDA graph
            is being captured. Without the check (``False``, or during capture) a label outside
            ``[0, C)`` makes every loss and every gradient NaN, found on the device without a
            sync; nothing is read out of bounds.

    Returns:
        ``(loss, unimodal)``: the scalar joint loss and a ``[M]`` tensor of unimodal losses,
        float32 (float64 for float64 logits), differentiable.
    """
    names = [f"logits[{m}]" for m in range(len(logits))] if isinstance(logits, Sequence) else []
    logits = _check_logits(logits, labels, names, check_labels)
    out = _factorised(logits, labels, backend)
    return out[0], out[1:]


def tcmax_loss(
    logits_a: torch.Tensor,
    logits_v: torch.Tensor,
    labels: torch.Tensor,
    *,
    backend: Optional[str] = None,
    check_labels: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TCMax for two modalities with a linear fusion: ``f(za, zv) = ga(za) + gv(zv)``.

    Args:
        logits_a: ``ga(za)``, modality a's class logits ``[B, C]``.
        logits_v: ``gv(zv)``, modality v's class logits ``[B, C]``.
        labels: integer class indices ``[B]`` in ``[0, C)``.
        backend: as in [`tcmax_loss_multi`][ithp_fast.tcmax_loss_multi].
        check_labels: as in ``tcmax_loss_multi``.

    Returns:
        ``(loss, loss_a, loss_v)``: scalars, exactly the direct definition over all ``B·B·C``
        pairings (released code's ``- log B`` included), computed in O(B·C). ``loss`` is the
        one to minimise. A concatenation head ``W [za; zv] + b`` fits by splitting ``W`` in its
        two column blocks and giving each half of ``b``.
    """
    logits = _check_logits([logits_a, logits_v], labels, ["logits_a", "logits_v"], check_labels)
    out = _factorised(logits, labels, backend)
    return out[0], out[1], out[2]


class TCMaxLoss(nn.Module):
    """Module form of [`tcmax_loss`][ithp_fast.tcmax_loss]: ``TCMaxLoss()(logits_a, logits_v, labels)``.

    Returns ``(loss, loss_a, loss_v)``. ``backend`` as in [`tcmax_loss_multi`][ithp_fast.tcmax_loss_multi].
    """

    def __init__(self, *, backend: Optional[str] = None, check_labels: bool = True) -> None:
        super().__init__()
        self.backend = backend
        self.check_labels = check_labels

    def forward(self, logits_a: torch.Tensor, logits_v: torch.Tensor, labels: torch.Tensor):
        return tcmax_loss(logits_a, logits_v, labels, backend=self.backend, check_labels=self.check_labels)

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}"


# ---------------------------------------------------------------------------------------------
# Non-linear fusions


def _check_pair_inputs(feats_a: object, feats_v: object, labels: object) -> int:
    feats_a = _check_batch_tensor("feats_a", feats_a, floating=False)
    feats_v = _check_batch_tensor("feats_v", feats_v, floating=False)
    if feats_v.shape[0] != feats_a.shape[0]:
        raise ValueError(f"feats_v: batch size {feats_v.shape[0]} differs from feats_a's {feats_a.shape[0]}")
    if feats_v.device != feats_a.device:
        raise ValueError(f"feats_v: is on {feats_v.device} but feats_a is on {feats_a.device}")
    _check_labels(labels, feats_a.shape[0], None, feats_a.device, False)
    return feats_a.shape[0]


def _fuse(fusion: Fusion, za: torch.Tensor, zv: torch.Tensor) -> torch.Tensor:
    out = fusion(za, zv)
    n = za.shape[0]
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != n or not out.dtype.is_floating_point:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"fusion: expected fusion(za, zv) to return floating logits [{n}, C] for {n} pairs, got {got}")
    return out


def _logsumexp(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``torch.logsumexp(x, dim)``, except where every entry along ``dim`` is ``-inf`` (nothing
    possible: a chunk or a row of masked pairings): ``-inf`` there, with gradient ``0 * upstream``
    (0 for a finite upstream gradient, NaN for a NaN one, as the direct definition's), where
    torch's gradient is NaN whatever arrives (``0 * exp(-inf - -inf)``)."""
    return _LogSumExp.apply(x, dim)


class _LogSumExp(torch.autograd.Function):
    """See :func:`_logsumexp`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, dim: int) -> torch.Tensor:
        top = x.amax(dim=dim, keepdim=True)
        empty = top == -math.inf
        shift = torch.where(torch.isfinite(top), top, 0.0)
        total = torch.where(empty, 1.0, (x - shift).exp().sum(dim=dim, keepdim=True))
        out = torch.where(empty, -math.inf, shift + total.log())
        ctx.save_for_backward(x, out, empty)
        ctx.dim = dim
        return out.squeeze(dim)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, out, empty = ctx.saved_tensors
        weight = torch.where(empty, 0.0, (x - torch.where(empty, 0.0, out)).exp())  # softmax; 0 where empty
        return grad_out.unsqueeze(ctx.dim) * weight, None


def _pair_chunk(fusion: Fusion, za: torch.Tensor, feats_v: torch.Tensor, y_all: torch.Tensor, first_row: int):
    """Rows ``first_row + j`` of ``feats_a`` (``za``) against every ``k``: the chunk's share of
    each log-sum-exp. The first chunk checks the labels' range against the fusion's class count."""
    n, B = za.shape[0], feats_v.shape[0]
    za_pairs = za[:, None].expand(n, B, *za.shape[1:]).reshape(n * B, *za.shape[1:])
    zv_pairs = feats_v[None].expand(n, *feats_v.shape).reshape(n * B, *feats_v.shape[1:])
    scores = _fuse(fusion, za_pairs, zv_pairs)
    if first_row == 0:
        _check_labels(y_all, B, scores.shape[1], za.device, True)
    y_rows = y_all[first_row:first_row + n]
    scores = scores.to(work_dtype(scores.dtype)).view(n, B, -1)  # S[j, k, c]
    at_row_label = scores.gather(2, y_rows[:, None, None].expand(n, B, 1)).squeeze(2)  # S[j, k, y_j]
    at_col_label = scores.gather(2, y_all[None, :, None].expand(n, B, 1)).squeeze(2)  # S[j, k, y_k]
    rows = torch.arange(n, device=za.device)
    return (
        _logsumexp(scores.reshape(-1), dim=0),  # share of logZ
        _logsumexp(at_row_label, dim=1),  # log sum_k exp S[j, k, y_j], complete for these j
        _logsumexp(at_col_label, dim=0),  # share of log sum_j exp S[j, k, y_k]
        at_row_label[rows, first_row + rows],  # S[j, j, y_j]
        scores.shape[2],
    )


def tcmax_loss_pairwise(
    fusion: Fusion,
    feats_a: torch.Tensor,
    feats_v: torch.Tensor,
    labels: torch.Tensor,
    *,
    chunk_size: Optional[int] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TCMax for any fusion head: all B² pairings ``fusion(za_j, zv_k)``, evaluated in chunks.

    Rows of ``feats_a`` are taken ``chunk_size`` at a time; each chunk scores its rows against
    the whole of ``feats_v`` (``chunk_size · B`` pairs) and contributes to log-sum-exps that are
    accumulated across chunks. Under autograd each chunk is checkpointed
    (``torch.utils.checkpoint.checkpoint``, RNG state preserved) and recomputed in backward,
    so peak memory is ``O(chunk_size · B · (C + fusion activations per pair))`` for one chunk plus
    ``O(B · ceil(B / chunk_size))`` for the per-chunk column sums, never the ``B · B · C`` scores.
    Time is B² fusion evaluations (twice with gradients).

    Args:
        fusion: ``fusion(za, zv) -> logits``: ``za``, ``zv`` hold N paired rows (shapes
            ``[N, ...]`` of ``feats_a`` / ``feats_v``); returns floating logits ``[N, C]``.
        feats_a: modality a's features ``[B, ...]``.
        feats_v: modality v's features ``[B, ...]``.
        labels: integer class indices ``[B]`` in ``[0, C)``.
        chunk_size: rows of ``feats_a`` per chunk, >= 1; default ``max(1, 16384 // B)``.

    Returns:
        ``(loss, loss_a, loss_v)`` as [`tcmax_loss`][ithp_fast.tcmax_loss], float32 (float64 for float64 logits).
    """
    if not callable(fusion):
        raise TypeError(f"fusion: expected a callable fusion(za, zv) -> logits [N, C], got {type(fusion).__name__}")
    B = _check_pair_inputs(feats_a, feats_v, labels)
    if chunk_size is None:
        chunk_size = max(1, 16384 // B)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive int (rows of feats_a per chunk), got {chunk_size!r}")
    index = labels.long()
    track = torch.is_grad_enabled()
    parts = []
    for j0 in range(0, B, chunk_size):
        args = (fusion, feats_a[j0:j0 + chunk_size], feats_v, index, j0)
        parts.append(checkpoint(_pair_chunk, *args, use_reentrant=False) if track else _pair_chunk(*args))
    if any(p[4] != parts[0][4] for p in parts):
        raise ValueError("fusion: returned a different number of classes for different chunks")
    log_z = _logsumexp(torch.stack([p[0] for p in parts]), dim=0)
    row_lse = torch.cat([p[1] for p in parts])
    col_lse = _logsumexp(torch.stack([p[2] for p in parts]), dim=0)
    diag = torch.cat([p[3] for p in parts])
    const = log_z - math.log(B)
    out = _NaNGradientWhereUndefined.apply(torch.stack([-diag.mean(), -row_lse.mean(), -col_lse.mean()]) + const,
                                           log_z.detach())
    return out[0], out[1], out[2]


class _NaNGradientWhereUndefined(torch.autograd.Function):
    """The losses unchanged; a NaN upstream gradient where they have no derivative (a
    differentiated unimodal loss or logZ not finite, as in the factorised form), which autograd
    then carries to every score through logZ's log-sum-exp."""

    @staticmethod
    def forward(ctx, out, log_z):
        ctx.save_for_backward(out, log_z)
        return out.clone()

    @staticmethod
    def backward(ctx, grad_out):
        out, log_z = ctx.saved_tensors
        return torch.where(gradient_undefined(out, log_z, grad_out), math.nan, grad_out), None


def tcmax_loss_sampled(
    fusion: Fusion,
    feats_a: torch.Tensor,
    feats_v: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_samples: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """The released code's sampled TCMax estimate: random negative pairings instead of all B².

    ``log Z`` is estimated from ``N`` random pairings ``(a_r, v_s)``:
    ``log Z ≈ logsumexp_{n, c} fusion(a_{r_n}, v_{s_n})[c] + log(B² / N)``, so:

        loss ≈ -mean_i fusion(a_i, v_i)[y_i] + logsumexp(negatives) + log B - log N

    which is the exact joint loss when the N pairings are all B² once. Costs ``B + N`` fusion
    evaluations. For a linear fusion prefer [`tcmax_loss`][ithp_fast.tcmax_loss] (exact, O(B·C)); to sample one
    anyway, pass the per-modality logits as features and ``fusion=torch.add``.

    Args:
        fusion: ``fusion(za, zv) -> logits [N, C]`` as in [`tcmax_loss_pairwise`][ithp_fast.tcmax_loss_pairwise].
        feats_a: modality a's features ``[B, ...]``.
        feats_v: modality v's features ``[B, ...]``.
        labels: integer class indices ``[B]`` in ``[0, C)``.
        num_samples: ``None`` (released default): ``N = B`` negatives ``(a_i, v_{s_i})`` with
            random ``s``; an int ``N >= 1``: ``N`` pairings with both indices random.
        generator: a ``torch.Generator`` for the draws (seeded runs); indices are drawn on
            its device. Default: torch's default generator on the features' device.

    Returns:
        The scalar joint loss estimate. The sampled form has no unimodal terms; the released
        code monitors plain cross-entropy of each modality's own head instead.
    """
    if not callable(fusion):
        raise TypeError(f"fusion: expected a callable fusion(za, zv) -> logits [N, C], "
                        f"got {type(fusion).__name__}")
    B = _check_pair_inputs(feats_a, feats_v, labels)
    if num_samples is not None and (isinstance(num_samples, bool) or not isinstance(num_samples, int)
                                    or num_samples < 1):
        raise ValueError(f"num_samples: expected None or a positive int, got {num_samples!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, got {type(generator).__name__}")
    device = feats_a.device
    draw_on = generator.device if generator is not None else device

    def draw(n: int) -> torch.Tensor:
        return torch.randint(0, B, (n,), generator=generator, device=draw_on).to(device)

    if num_samples is None:
        idx_a, idx_v = torch.arange(B, device=device), draw(B)
    else:
        idx_a, idx_v = draw(num_samples), draw(num_samples)
    return _sampled_loss(fusion, feats_a, feats_v, labels, idx_a, idx_v)


def _sampled_loss(fusion: Fusion, feats_a, feats_v, labels, idx_a: torch.Tensor, idx_v: torch.Tensor) -> torch.Tensor:
    """The sampled estimate for given negative pairings ``(idx_a[n], idx_v[n])``."""
    B = feats_a.shape[0]
    positives = _fuse(fusion, feats_a, feats_v)
    _check_labels(labels, B, positives.shape[1], feats_a.device, True)
    negatives = _fuse(fusion, feats_a[idx_a], feats_v[idx_v])
    work = work_dtype(positives.dtype)
    picked = positives.to(work).gather(1, labels.long()[:, None]).mean()
    log_z_share = torch.logsumexp(negatives.to(work).reshape(-1), dim=0)
    return -picked + log_z_share + math.log(B) - math.log(idx_a.shape[0])
