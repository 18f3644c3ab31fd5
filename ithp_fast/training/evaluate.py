"""Predictions of a whole split, the text-only ceiling of a synthetic set, the predictions CSV, and scoring a
saved checkpoint."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from ..checks import renamed_settings
from ..config import ITHPConfig
from ..data import (
    DataFormatError,
    SentimentData,
    SentimentSplit,
    SyntheticSpec,
    check_feature_widths,
    load_sentiment_data,
    text_only_oracle,
)
from . import checkpoints as ckpt
from .batches import EVAL_TAG, derive_seed, detector_mask_without, run_batch
from .build import load_tokenizer, model_modalities
from .config import TrainConfig, train_terms
from .distributed import DistContext, gather_objects, init_distributed, shutdown
from .eval_config import EvalConfig, make_eval_config
from .load import load_checkpoint_model
from .metrics import all_conventions, format_metrics


@torch.no_grad()
def predict(
    model: nn.Module,
    split: SentimentSplit,
    cfg: TrainConfig,
    model_config: dict,
    ctx: DistContext,
    seed: int,
    drop: Sequence[str] = (),
) -> dict:
    """Predictions for a whole split: each rank scores every world_size-th example; gathered, in order.

    The random draws of evaluation come from a generator seeded from the run seed (forked, so
    training's stream is untouched): the same weights give the same predictions every time.
    Detector bounds are per local batch here (predictions do not depend on the detectors).

    ``drop``: detectors removed from every example (through the detector mask: their features are not
    used and their levels' reconstruction terms are 0). Returns the predictions, the labels, the
    metrics under both conventions and ``ib_terms``: ``IB_total`` and each level's KL and MSE, the
    batches' means averaged with the batch sizes as weights.
    """
    shard = Subset(split, list(range(ctx.rank, len(split), ctx.world_size)))
    loader = DataLoader(
        shard, batch_size=cfg.eval_batch_size or cfg.batch_size, shuffle=False, num_workers=cfg.num_workers
    )
    was_training = model.training
    model.eval()
    idx, preds = [], []
    modalities = model_modalities(model_config)
    names = train_terms(len(modalities))[2:]
    term_sums = torch.zeros(len(names), dtype=torch.float64)
    devices = [ctx.device] if ctx.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(derive_seed(seed, EVAL_TAG, ctx.rank))
        noise_key = (seed, EVAL_TAG) if cfg.noise == "per-example" and cfg.eval_sampling == "sample" else None
        for batch in loader:
            mask = detector_mask_without(drop, modalities, len(batch["index"])) if drop else None
            out, _ = run_batch(model, batch, cfg, model_config, ctx, noise_key, reduce_bounds=False, detector_mask=mask)
            idx.append(batch["index"])
            preds.append(out.logits.reshape(-1).float().cpu())
            per_level = [term for pair in zip(out.kl_terms, out.mse_terms) for term in pair]
            term_sums += len(batch["index"]) * torch.stack([out.IB_total, *per_level]).double().cpu()
    model.train(was_training)
    local = (
        torch.cat(idx).numpy() if idx else np.zeros(0, np.int64),
        torch.cat(preds).numpy() if preds else np.zeros(0, np.float32),
        term_sums.numpy(),
    )
    parts = gather_objects(local, ctx)
    order = np.concatenate([p[0] for p in parts])
    values = np.concatenate([p[1] for p in parts])
    predictions = np.empty(len(split), dtype=np.float64)
    predictions[order] = values
    labels = split.labels.numpy().astype(np.float64)
    terms = sum(p[2] for p in parts) / max(len(split), 1)
    return {
        "predictions": predictions,
        "labels": labels,
        "metrics": all_conventions(predictions, labels),
        "ib_terms": dict(zip(names, terms.tolist())),
    }


def synthetic_ceiling(spec: Optional[SyntheticSpec]) -> Optional[dict]:
    """The text-only oracle's metrics, under both conventions, on the test split of the synthetic set ``spec``
    generates: what no text-only model can expect to beat (None without a spec: data that was not generated)."""
    if spec is None:
        return None
    predictions, labels = text_only_oracle(spec)
    return all_conventions(predictions, labels)


def write_predictions(path: str, split: SentimentSplit, result: dict) -> None:
    """One row per example: ``index,id,label,prediction``."""
    with open(path, "w") as f:
        f.write("index,id,label,prediction\n")
        for i, (label, pred) in enumerate(zip(result["labels"], result["predictions"])):
            f.write(f"{i},{split.ids[i]},{label:.6g},{pred:.9g}\n")


def default_output_dir(checkpoint: str) -> str:
    """``<run>/eval-<checkpoint name>``: beside the checkpoint, never inside it (its next save replaces it)."""
    checkpoint = os.path.abspath(checkpoint)
    return os.path.join(os.path.dirname(checkpoint), f"eval-{os.path.basename(checkpoint)}")


def check_output_dir(output_dir: str, checkpoint: str) -> None:
    """Refuse an output directory inside a checkpoint: the next save of that checkpoint would delete it."""
    ancestors = [os.path.abspath(output_dir)]
    while os.path.dirname(ancestors[-1]) != ancestors[-1]:
        ancestors.append(os.path.dirname(ancestors[-1]))
    inside_a_checkpoint = any(os.path.isfile(os.path.join(a, ckpt.MODEL_FILE)) for a in ancestors)
    if os.path.abspath(checkpoint) in ancestors or inside_a_checkpoint:
        raise ValueError(
            f"--output-dir: {output_dir} is inside a checkpoint directory, whose next save would delete it; "
            f"name a directory outside it"
        )


def evaluate_checkpoint(
    settings: Union[EvalConfig, str],
    data: Union[str, SentimentData, Mapping, None] = None,
    **options: Any,
) -> dict:
    """Score a checkpoint on one split; writes ``<split>-<eval_sampling>.json`` and
    ``<split>-<eval_sampling>-predictions.csv`` to ``output_dir``.

    ``output_dir`` defaults to ``eval-<checkpoint name>`` beside the checkpoint; ``eval_sampling``
    to the training run's (to reproduce its protocol; the files are named by it, so a report of one
    mode never replaces one of the other). ``drop_detectors`` names detectors to remove from every
    example (the files are then ``<split>-<eval_sampling>-without-<names>.json`` / ``.csv``): the
    predictions, which ITHP computes from the text alone, stay the same; the reconstruction terms of
    the removed detectors' levels become 0 (``ib_terms`` in the report).

    ``settings``: an :class:`~ithp_fast.training.eval_config.EvalConfig`, or the checkpoint directory with
    EvalConfig's other fields as keywords; ``data``, when given, replaces ``settings.data`` (a pickle path,
    loaded data or a pickle's object).
    """
    settings = settings_of(settings, options)
    settings.validate()
    directory, split, protocol = settings.checkpoint, settings.split, settings.protocol
    backend, eval_sampling, drop_detectors = settings.backend, settings.eval_sampling, settings.drop_detectors
    output_dir = settings.output_dir or default_output_dir(directory)
    check_output_dir(output_dir, directory)
    ctx = init_distributed(settings.device)
    try:
        model, config = load_checkpoint_model(directory, backend=backend, device=ctx.device,
                                              eval_sampling=eval_sampling)
        if "run" not in config:
            raise ckpt.CheckpointError(f"checkpoint: {directory} has no {ckpt.RUN_FILE} (the settings of the run "
                                       f"that trained it), which evaluate needs; it scores texts with predict")
        drop = check_drop_detectors(drop_detectors, model_modalities(config["model"]))
        cfg = run_config(config, settings.batch_size)
        data = checkpoint_data(directory, config, settings.data if data is None else data)
        result = predict(model, data.splits[split], cfg, config["model"], ctx, config["run"]["seed"], drop)
        report = {
            "checkpoint": directory,
            "data": data.describe(),
            "split": split,
            "protocol": protocol,
            "eval_sampling": cfg.eval_sampling,
            "modality_order": list(model_modalities(config["model"])),
            "dropped_detectors": list(drop),
            "headline": result["metrics"][protocol],
            "metrics": result["metrics"],
            "ib_terms": result["ib_terms"],
        }
        if ctx.is_main:
            write_report(output_dir, report, data.splits[split], result)
        return report
    finally:
        shutdown(ctx)


def settings_of(settings: Union[EvalConfig, str], options: dict) -> EvalConfig:
    """``settings`` as an EvalConfig: one given, or built from a checkpoint directory and ``options``."""
    if isinstance(settings, EvalConfig):
        if options:
            given = ", ".join(options)
            raise TypeError(f"evaluate_checkpoint: {given} given beside an EvalConfig; set them in the EvalConfig")
        return settings
    return make_eval_config(settings, **options)


def check_drop_detectors(names: Sequence[str], modalities: Sequence[str]) -> tuple[str, ...]:
    """The detectors to remove, each a detector of the checkpoint, each once."""
    if isinstance(names, str):
        names = [names]
    names = tuple(name.strip() for n in names for name in str(n).split(",") if name.strip())
    for name in names:
        if name not in modalities:
            raise ValueError(
                f"--drop-detectors: {name!r} is not a detector of this checkpoint (its detectors: "
                f"{', '.join(modalities)})"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"--drop-detectors: a detector is named more than once in {list(names)}")
    return names


def report_stem(report: dict) -> str:
    """The name an evaluation's files share: ``<split>-<eval_sampling>[-without-<names>]`` (``.json`` the report,
    ``-predictions.csv`` its predictions)."""
    return f"{report['split']}-{report['eval_sampling']}" + (
        "-without-" + "-".join(report["dropped_detectors"]) if report["dropped_detectors"] else ""
    )


def write_report(output_dir: str, report: dict, split: SentimentSplit, result: dict) -> None:
    """``<split>-<eval_sampling>[-without-<names>].json`` (:func:`report_stem`) and its predictions CSV; prints
    the headline and the IB terms."""
    stem = report_stem(report)
    os.makedirs(output_dir, exist_ok=True)
    output = os.path.join(output_dir, f"{stem}.json")
    ckpt.write_json(output, report)
    write_predictions(os.path.join(output_dir, f"{stem}-predictions.csv"), split, result)
    removed = f", without {', '.join(report['dropped_detectors'])}" if report["dropped_detectors"] else ""
    print(
        f"{report['split']} ({report['protocol']} convention, eval_sampling={report['eval_sampling']}{removed}): "
        f"{format_metrics(report['headline'], tuple(report['headline']))}"
    )
    print("ITHP terms: " + " ".join(f"{k} {v:.4g}" for k, v in report["ib_terms"].items()))
    print(f"written: {output}")


def run_config(config: dict, batch_size: Optional[int]) -> TrainConfig:
    """The training run's settings from a checkpoint's config, with the evaluation's batch and sampling."""
    run = renamed_settings(config["run"], "config.json")
    cfg = TrainConfig(**{f.name: run[f.name] for f in dataclasses.fields(TrainConfig) if f.name in run})
    cfg.eval_sampling = config["model"]["eval_sampling"]
    if batch_size is not None:
        cfg.eval_batch_size = batch_size
    return cfg


def checkpoint_data(directory: str, config: dict, source: Union[str, SentimentData, Mapping, None]) -> SentimentData:
    """The data to score a checkpoint on (a pickle path, loaded data, a pickle's object, or the checkpoint's
    synthetic set), read with the checkpoint's own tokenizer and checked against its widths."""
    run = config["run"]
    trained_on = run.get("data") or config.get("data", {}).get("source")
    if source is None and config.get("data", {}).get("layout", "synthetic") != "synthetic":
        raise ValueError(
            f"--data: this checkpoint was trained on {trained_on!r}; name the file to evaluate on "
            f"(pickles run code when loaded, so only a path given on the command line is read)"
        )
    if isinstance(source, SentimentData):
        data = source
    else:
        tokenizer = load_tokenizer(config["tokenizer"], directory)
        synthetic = SyntheticSpec(seed=run["synthetic_seed"], sizes=tuple(run["synthetic_sizes"]))
        data = load_sentiment_data(source, tokenizer=tokenizer, max_len=run["max_seq_length"], synthetic=synthetic)
    widths = ITHPConfig.from_dict(config["model"]["ithp"]).detector_dims
    check_feature_widths(data, dict(zip(model_modalities(config["model"]), widths)), f"the checkpoint {directory}")
    vocab = config["model"]["backbone"]["vocab_size"]
    if data.vocab_size > vocab:
        raise DataFormatError(
            data.source, f"token ids reach {data.vocab_size - 1} but the checkpoint's vocab_size is {vocab}"
        )
    return data
