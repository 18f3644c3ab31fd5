"""Random seeds of a run, noise drawn per example, and one batch through the model."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import nn

from ..data import minmax_normalise
from .config import TrainConfig
from .distributed import DistContext, global_min_max


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (run seed, purpose, step, rank, ...), stable across platforms."""
    a, b = np.random.SeedSequence([int(p) for p in parts]).generate_state(2)
    return int(a) << 31 | int(b) >> 1


TRAIN_TAG, EVAL_TAG, NOISE_TAG = 1, 2, 3


def example_noise(indices: torch.Tensor, tokens: int, model_config: dict, key: tuple, device) -> tuple:
    """ITHP noise ``(eps0, eps1)`` drawn per example from ``(*key, example index)``."""
    b0, b1 = model_config["ithp"]["B0_dim"], model_config["ithp"]["B1_dim"]
    eps0, eps1 = [], []
    for i in indices.tolist():
        g = torch.Generator().manual_seed(derive_seed(*key, NOISE_TAG, i))
        eps0.append(torch.randn(tokens, b0, generator=g))
        eps1.append(torch.randn(tokens, b1, generator=g))
    return torch.stack(eps0).to(device), torch.stack(eps1).to(device)


def run_batch(
    model: nn.Module,
    batch: dict,
    cfg: TrainConfig,
    model_config: dict,
    ctx: DistContext,
    noise_key: Optional[tuple],
    reduce_bounds: bool,
):
    """Move a batch to the device, normalise the detectors, run the model; returns (output, labels)."""
    dev = ctx.device
    ids = batch["input_ids"].to(dev, non_blocking=True)
    mask = batch["attention_mask"].to(dev, non_blocking=True)
    visual = batch["visual"].to(dev, non_blocking=True)
    acoustic = batch["acoustic"].to(dev, non_blocking=True)
    labels = batch["label"].to(dev, non_blocking=True)
    if cfg.normalise == "batch":
        visual = minmax_normalise(visual, global_min_max(visual, ctx) if reduce_bounds else None)
        acoustic = minmax_normalise(acoustic, global_min_max(acoustic, ctx) if reduce_bounds else None)
    noise = None
    if noise_key is not None:
        noise = example_noise(batch["index"], ids.shape[1], model_config, noise_key, dev)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.amp):
        out = model(ids, visual, acoustic, mask, noise=noise)
    return out, labels
