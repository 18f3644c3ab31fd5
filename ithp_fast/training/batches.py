"""Random seeds of a run, noise drawn per example, detectors dropped per example, and one batch through the model."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch
from torch import nn

from ..config import ITHPConfig
from ..data import minmax_normalise
from .build import model_modalities
from .config import TrainConfig
from .distributed import DistContext, reduce_min_max


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (run seed, purpose, step, rank, ...), stable across platforms."""
    a, b = np.random.SeedSequence([int(p) for p in parts]).generate_state(2)
    return int(a) << 31 | int(b) >> 1


TRAIN_TAG, EVAL_TAG, NOISE_TAG, MISSING_TAG = 1, 2, 3, 4


def example_noise(indices: torch.Tensor, tokens: int, model_config: dict, key: tuple, device) -> tuple:
    """ITHP noise, one eps per level, drawn per example from ``(*key, example index)``."""
    widths = ITHPConfig.from_dict(model_config["ithp"]).bottleneck_dims
    eps = [[] for _ in widths]
    for i in indices.tolist():
        g = torch.Generator().manual_seed(derive_seed(*key, NOISE_TAG, i))
        for level, width in enumerate(widths):
            eps[level].append(torch.randn(tokens, width, generator=g))
    return tuple(torch.stack(level).to(device) for level in eps)


def present_detectors(seed: int, examples: int, levels: int, rate: float) -> Optional[torch.Tensor]:
    """Which detectors each training example keeps under ``--missing-rate``: ``[examples, levels]`` bool
    (True = present), each entry False with probability ``rate``; None when ``rate`` is 0.

    Drawn once from the run seed, so an example misses the same detectors every epoch, whatever the
    batching, the batch order or the number of processes.
    """
    if rate == 0:
        return None
    g = torch.Generator().manual_seed(derive_seed(seed, MISSING_TAG))
    return torch.rand(examples, levels, generator=g) >= rate


def detector_mask_without(names: Sequence[str], modalities: Sequence[str], batch: int) -> torch.Tensor:
    """``[batch, levels]`` bool: every detector present except the ``names`` given (absent for every example)."""
    mask = torch.ones(batch, len(modalities), dtype=torch.bool)
    for name in names:
        mask[:, modalities.index(name)] = False
    return mask


def normalised_detector(
    t: torch.Tensor, present: Optional[torch.Tensor], ctx: DistContext, reduce_bounds: bool
) -> torch.Tensor:
    """Per-batch global min-max normalisation over the examples that have this detector (``present`` ``[B]``,
    None = all); the features of the others are replaced by zeros, so they are never used."""
    if present is None:
        lo, hi = t.min(), t.max()
    else:
        keep = present.view(-1, *[1] * (t.dim() - 1))
        lo = torch.where(keep, t, math.inf).amin()
        hi = torch.where(keep, t, -math.inf).amax()
    if reduce_bounds:
        lo, hi = reduce_min_max(lo, hi, ctx)
    out = minmax_normalise(t, (lo, hi))
    return out if present is None else torch.where(keep, out, 0)


def run_batch(
    model: nn.Module,
    batch: dict,
    cfg: TrainConfig,
    model_config: dict,
    ctx: DistContext,
    noise_key: Optional[tuple],
    reduce_bounds: bool,
    detector_mask: Optional[torch.Tensor] = None,
):
    """Move a batch to the device, normalise the detectors, run the model; returns (output, labels).

    The detectors go to the model by name, in its modality order. ``detector_mask`` ``[B, levels]`` (bool, level
    order): the detectors each example has; a missing one is left out of its normalisation and of its level's
    reconstruction term.
    """
    dev = ctx.device
    ids = batch["input_ids"].to(dev, non_blocking=True)
    mask = batch["attention_mask"].to(dev, non_blocking=True)
    labels = batch["label"].to(dev, non_blocking=True)
    if detector_mask is not None:
        detector_mask = detector_mask.to(dev, non_blocking=True)
    detectors = {}
    for level, name in enumerate(model_modalities(model_config)):
        t = batch[name].to(dev, non_blocking=True)
        present = None if detector_mask is None else detector_mask[:, level]
        if cfg.normalise == "batch":
            t = normalised_detector(t, present, ctx, reduce_bounds)
        elif present is not None:
            t = torch.where(present.view(-1, *[1] * (t.dim() - 1)), t, 0)
        detectors[name] = t
    noise = None
    if noise_key is not None:
        noise = example_noise(batch["index"], ids.shape[1], model_config, noise_key, dev)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.amp):
        out = model(ids, attention_mask=mask, detectors=detectors, detector_mask=detector_mask, noise=noise)
    return out, labels
