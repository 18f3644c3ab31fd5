"""Predictions of a whole split, the predictions CSV, and scoring a saved checkpoint."""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from ..data import DataFormatError, SentimentSplit, SyntheticSpec, check_feature_widths, load_sentiment_data
from . import checkpoints as ckpt
from .batches import EVAL_TAG, derive_seed, run_batch
from .build import build_model, load_tokenizer
from .config import TrainConfig
from .distributed import DistContext, gather_objects, init_distributed, shutdown
from .metrics import all_conventions, format_metrics


@torch.no_grad()
def predict(model: nn.Module, split: SentimentSplit, cfg: TrainConfig, model_config: dict, ctx: DistContext, seed: int) -> dict:
    """Predictions for a whole split: each rank scores every world_size-th example; gathered, in order.

    The random draws of evaluation come from a generator seeded from the run seed (forked, so
    training's stream is untouched): the same weights give the same predictions every time.
    Detector bounds are per local batch here (predictions do not depend on the detectors).
    """
    shard = Subset(split, list(range(ctx.rank, len(split), ctx.world_size)))
    loader = DataLoader(shard, batch_size=cfg.eval_batch_size or cfg.batch_size, shuffle=False, num_workers=cfg.num_workers)
    was_training = model.training
    model.eval()
    idx, preds = [], []
    devices = [ctx.device] if ctx.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(derive_seed(seed, EVAL_TAG, ctx.rank))
        noise_key = (seed, EVAL_TAG) if cfg.noise == "per-example" and cfg.eval_sampling == "sample" else None
        for batch in loader:
            out, _ = run_batch(model, batch, cfg, model_config, ctx, noise_key, reduce_bounds=False)
            idx.append(batch["index"])
            preds.append(out.logits.reshape(-1).float().cpu())
    model.train(was_training)
    local = (torch.cat(idx).numpy() if idx else np.zeros(0, np.int64),
             torch.cat(preds).numpy() if preds else np.zeros(0, np.float32))
    parts = gather_objects(local, ctx)
    order = np.concatenate([p[0] for p in parts])
    values = np.concatenate([p[1] for p in parts])
    predictions = np.empty(len(split), dtype=np.float64)
    predictions[order] = values
    labels = split.labels.numpy().astype(np.float64)
    return {"predictions": predictions, "labels": labels, "metrics": all_conventions(predictions, labels)}


def write_predictions(path: str, split: SentimentSplit, result: dict) -> None:
    """One row per example: ``index,id,label,prediction``."""
    with open(path, "w") as f:
        f.write("index,id,label,prediction\n")
        for i, (label, pred) in enumerate(zip(result["labels"], result["predictions"])):
            f.write(f"{i},{split.ids[i]},{label:.6g},{pred:.9g}\n")


def load_checkpoint_model(directory: str, impl: Optional[str] = None, device: str = "cpu") -> tuple[nn.Module, dict]:
    """The model saved in a checkpoint directory (and its config), in eval mode on ``device``."""
    config = ckpt.load_config(directory)
    model = build_model(config["model"], impl or config.get("impl", "fast"))
    ckpt.load_weights(model, directory)
    return model.to(device).eval(), config


def evaluate_checkpoint(
    directory: str,
    data_path: Optional[str] = None,
    *,
    split: str = "test",
    protocol: str = "authors",
    batch_size: Optional[int] = None,
    impl: Optional[str] = None,
    device: str = "auto",
    output: Optional[str] = None,
) -> dict:
    """Score a checkpoint on one split; writes ``output`` (JSON) and a predictions CSV beside it."""
    if split not in ("train", "valid", "test"):
        raise ValueError(f"split: expected train, valid or test, got {split!r}")
    ctx = init_distributed(device)
    try:
        model, config = load_checkpoint_model(directory, impl, str(ctx.device))
        run = config["run"]
        cfg = TrainConfig(**{f.name: run[f.name] for f in dataclasses.fields(TrainConfig) if f.name in run})
        if batch_size is not None:
            cfg.eval_batch_size = batch_size
        tokenizer = load_tokenizer(config["tokenizer"], directory)
        if data_path is None and run.get("data"):
            raise ValueError(
                f"--data: this checkpoint was trained on {run['data']!r}; name the file to evaluate on "
                f"(pickles run code when loaded, so only a path given on the command line is read)"
            )
        synthetic = SyntheticSpec(seed=run["synthetic_seed"], sizes=tuple(run["synthetic_sizes"]))
        data = load_sentiment_data(data_path, tokenizer=tokenizer, max_len=run["max_seq_length"], synthetic=synthetic)
        ithp = config["model"]["ithp"]
        check_feature_widths(data, ithp["X2_dim"], ithp["X1_dim"], f"the checkpoint {directory}")
        if data.vocab_size > config["model"]["backbone"]["vocab_size"]:
            raise DataFormatError(data.source, f"token ids reach {data.vocab_size - 1} but the checkpoint's vocab_size is "
                                               f"{config['model']['backbone']['vocab_size']}")
        result = predict(model, data.splits[split], cfg, config["model"], ctx, run["seed"])
        report = {
            "checkpoint": directory,
            "data": data.describe(),
            "split": split,
            "protocol": protocol,
            "headline": result["metrics"][protocol],
            "metrics": result["metrics"],
        }
        output = output or os.path.join(directory, f"eval-{split}.json")
        if ctx.is_main:
            ckpt.write_json(output, report)
            write_predictions(os.path.splitext(output)[0] + "-predictions.csv", data.splits[split], result)
            print(f"{split} ({protocol} convention): {format_metrics(report['headline'], tuple(report['headline']))}")
            print(f"written: {output}")
        return report
    finally:
        shutdown(ctx)
