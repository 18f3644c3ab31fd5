"""Training and evaluation of ITHP-DeBERTa for sentiment regression: ``ithp-fast train`` / ``evaluate``.

The defaults are the published recipe: AdamW, learning rate 1e-5, weight decay 0.01 except on
biases and LayerNorm weights, linear warm-up over 10 % of the steps then linear decay, batch 8,
30 epochs, 50 tokens, loss ``MSE + 2 / (p_beta + p_gamma) * IB_total`` and per-batch global min-max
normalisation of the acoustic and visual features. Every one of them is an option.

Without ``--data`` the synthetic set of :mod:`ithp_fast.data.synthetic` is used; without
``--backbone`` a small randomly initialised DeBERTa-v2 is built (nothing is downloaded).

Multi-process: ``torchrun --nproc_per_node N -m ithp_fast train ...`` (or the ``ithp-fast``
script). ``--batch-size`` is the global batch, split evenly over the ranks; the min-max bounds are
reduced over the ranks so a sharded batch is normalised like the whole batch; evaluation
predictions are gathered so metrics are those of the whole split; rank 0 alone writes files.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset

from . import checkpoints as ckpt
from .config import ITHPConfig
from .data import (
    DataFormatError,
    PretrainedWordTokenizer,
    SentimentData,
    SentimentSplit,
    SyntheticSpec,
    WordVocabulary,
    check_feature_widths,
    load_sentiment_data,
    minmax_normalise,
    synthetic_ceiling,
)
from .data.tokenize import VOCAB_FILE
from .distributed import DistContext, gather_objects, global_min_max, init_distributed, mean_across_ranks, shutdown
from .metrics import CONVENTIONS, all_conventions, better, mean_std

IMPLS = ("fast", "reference")
TERMS = ("loss", "task_mse", "IB_total", "kl0", "mse0", "kl1", "mse1")
# Options that may differ when resuming (they do not change what is computed).
RESUME_FREE = ("resume", "progress", "plots", "seeds", "num_workers", "log_every", "checkpoint_every", "stop_after_steps", "device", "output_dir")


def _opt(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Everything a training run depends on; each field is a ``--flag`` of ``ithp-fast train``."""

    # data
    data: Optional[str] = _opt(None, "pickle in either layout (word-level train/dev/test or MMSA train/valid/test). "
                               "Unpickling runs code stored in the file: pass only files you trust. Default: the synthetic set", type=str)
    synthetic_seed: int = _opt(0, "seed of the synthetic set (used without --data)")
    synthetic_sizes: tuple = _opt((512, 128, 128), "train, valid and test sizes of the synthetic set", nargs=3, type=int)
    max_seq_length: int = _opt(50, "tokens per example (word-level layout: cut after tokenisation)")
    # backbone
    backbone: Optional[str] = _opt(None, "local directory of a pretrained DeBERTa-v2/v3 (config, weights, tokenizer); "
                                   "never downloaded. Default: a small randomly initialised DeBERTa-v2", type=str)
    hidden_size: int = _opt(64, "hidden size of the random backbone (= X0_dim)")
    num_layers: int = _opt(2, "layers of the random backbone")
    num_heads: int = _opt(2, "attention heads of the random backbone")
    intermediate_size: int = _opt(128, "feed-forward width of the random backbone")
    backbone_dropout: Optional[float] = _opt(None, "hidden and attention dropout of the backbone (default: its config's, 0.1)", type=float)
    # ITHP and the fusion head
    inter_dim: int = _opt(256, "ITHP inter_dim")
    b0_dim: int = _opt(128, "ITHP B0_dim")
    b1_dim: int = _opt(64, "ITHP B1_dim")
    ithp_dropout: float = _opt(0.3, "ITHP drop_prob")
    p_beta: float = _opt(8.0, "ITHP p_beta")
    p_gamma: float = _opt(32.0, "ITHP p_gamma")
    p_lambda: float = _opt(0.3, "ITHP p_lambda")
    beta_shift: float = _opt(1.0, "scale of expand(b1) added to the token states")
    fusion_dropout: float = _opt(0.5, "dropout after the fusion LayerNorm")
    attention_mask: bool = _opt(True, "pass the attention mask to the backbone (--no-attention-mask: the authors' script)")
    impl: str = _opt("fast", "ITHP implementation", choices=IMPLS)
    eval_sampling: str = _opt("sample", "eval-mode latent: 'sample' b = mu + eps*sigma (released behaviour) or 'mean' b = mu",
                              choices=("sample", "mean"))
    noise: str = _opt("generator", "ITHP noise: torch's generator, or 'per-example' (drawn from the example index: "
                      "the same whatever the number of processes or the batch order)", choices=("generator", "per-example"))
    normalise: str = _opt("batch", "detector normalisation: per-batch global min-max, or none", choices=("batch", "none"))
    # optimisation
    lr: float = _opt(1e-5, "AdamW learning rate")
    weight_decay: float = _opt(0.01, "AdamW weight decay (never on biases and LayerNorm weights)")
    adam_eps: float = _opt(1e-8, "AdamW epsilon")
    warmup_ratio: float = _opt(0.1, "fraction of the steps with linear warm-up")
    batch_size: int = _opt(8, "global training batch (split over the ranks)")
    eval_batch_size: Optional[int] = _opt(None, "evaluation batch per rank (default: --batch-size)", type=int)
    epochs: int = _opt(30, "training epochs")
    max_steps: Optional[int] = _opt(None, "cap on the optimiser steps (the schedule is sized to it)", type=int)
    max_grad_norm: Optional[float] = _opt(None, "clip the gradient norm (default: no clipping)", type=float)
    amp: bool = _opt(False, "bfloat16 autocast")
    # protocol
    protocol: str = _opt("authors", "metric convention of the headline numbers: 'authors' (zero labels dropped for every "
                         "metric, last epoch) or 'mmsa' (Has0/Non0, zeros kept for MAE/Corr, best on valid)", choices=CONVENTIONS)
    select: Optional[str] = _opt(None, "which epoch's model is scored: 'last', or 'best' on the validation split "
                                 "(default: last for authors, best for mmsa)", choices=("last", "best"), type=str)
    select_metric: str = _opt("MAE", "validation metric for --select best (MAE: lower is better; others higher)")
    # run
    seeds: tuple = _opt((1,), "one run per seed; more than one reports mean +- std", nargs="+", type=int)
    output_dir: str = _opt("runs/ithp", "where runs are written (one seed-N/ directory per seed)")
    resume: bool = _opt(False, "continue each seed from its checkpoint-last/ in --output-dir")
    stop_after_steps: Optional[int] = _opt(None, "stop after this many steps in this invocation, keeping the full "
                                           "schedule (continue later with --resume)", type=int)
    device: str = _opt("auto", "auto, cpu, cuda or cuda:N")
    num_workers: int = _opt(0, "DataLoader workers")
    progress: bool = _opt(True, "tqdm progress bars")
    plots: bool = _opt(True, "write the PNG figures")
    log_every: int = _opt(10, "steps per logged record (running loss, information plane)")
    checkpoint_every: int = _opt(1, "epochs between resumable checkpoints (the last epoch is always saved)")

    @property
    def selection(self) -> str:
        return self.select or ("last" if self.protocol == "authors" else "best")

    def to_dict(self) -> dict:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in dataclasses.fields(self)}

    def validate(self, world_size: int = 1) -> None:
        positive = ("max_seq_length", "hidden_size", "num_layers", "num_heads", "intermediate_size", "batch_size", "epochs",
                    "log_every", "checkpoint_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')}: expected a positive value, got {getattr(self, name)}")
        for name in ("max_steps", "eval_batch_size", "stop_after_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')}: expected a positive value, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"--hidden-size {self.hidden_size} must be a multiple of --num-heads {self.num_heads}")
        if not 0 <= self.warmup_ratio <= 1:
            raise ValueError(f"--warmup-ratio: expected a fraction in [0, 1], got {self.warmup_ratio}")
        if self.batch_size % world_size:
            raise ValueError(f"--batch-size {self.batch_size} (global) must be divisible by the number of processes ({world_size})")
        if not self.seeds:
            raise ValueError("--seeds: give at least one seed")


# ----------------------------------------------------------------------------------------- model


def small_backbone_config(vocab_size: int, cfg: TrainConfig):
    """A small DeBERTa-v2 configuration with DeBERTa-v3's attention layout, randomly initialised."""
    from transformers import DebertaV2Config

    dropout = 0.1 if cfg.backbone_dropout is None else cfg.backbone_dropout
    return DebertaV2Config(
        vocab_size=vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
        max_position_embeddings=512, relative_attention=True, position_buckets=64, pos_att_type=["p2c", "c2p"],
        norm_rel_ebd="layer_norm", share_att_key=True, position_biased_input=False, type_vocab_size=0, pad_token_id=0,
    )


def check_backbone_dir(path: str) -> None:
    """A clear error when ``--backbone`` is not a local directory (a hub name is never downloaded)."""
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"--backbone: {path!r} is not a local directory. Nothing is downloaded: save the model "
            f"(config, weights and tokenizer) to a directory first and pass that directory"
        )


def load_pretrained_backbone(path: str, dropout: Optional[float]) -> nn.Module:
    """A pretrained ``DebertaV2Model`` from a local directory; a clear error, never a download."""
    from transformers import DebertaV2Config, DebertaV2Model

    check_backbone_dir(path)
    overrides = {} if dropout is None else {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
    try:
        config = DebertaV2Config.from_pretrained(path, local_files_only=True, **overrides)
        return DebertaV2Model.from_pretrained(path, config=config, local_files_only=True)
    except OSError as exc:
        raise FileNotFoundError(f"--backbone: cannot load a DeBERTa-v2/v3 model from {path!r} offline ({exc})") from exc


def ithp_class(impl: str) -> type:
    if impl == "fast":
        from .model import ITHP
    elif impl == "reference":
        from .reference.ithp import ITHP
    else:
        raise ValueError(f"impl: expected one of {IMPLS}, got {impl!r}")
    return ITHP


def build_model(model_config: dict, impl: str, backbone: Optional[nn.Module] = None) -> nn.Module:
    """ITHP-DeBERTa from a checkpoint's ``model`` config (random backbone weights unless ``backbone`` is given)."""
    from transformers import DebertaV2Config, DebertaV2Model

    from .reference.deberta import ITHPDeberta

    if backbone is None:
        backbone = DebertaV2Model(DebertaV2Config.from_dict(model_config["backbone"]))
    return ITHPDeberta(
        backbone,
        ITHPConfig.from_dict(model_config["ithp"]),
        beta_shift=model_config["beta_shift"],
        dropout_prob=model_config["dropout_prob"],
        pass_attention_mask=model_config["pass_attention_mask"],
        ithp_cls=ithp_class(impl),
        eval_sampling=model_config["eval_sampling"],
    )


def new_model(cfg: TrainConfig, data: SentimentData) -> tuple[nn.Module, dict]:
    """A fresh model for ``data`` and its JSON config; detector widths come from the data."""
    if cfg.backbone:
        backbone = load_pretrained_backbone(cfg.backbone, cfg.backbone_dropout)
        if data.vocab_size > backbone.config.vocab_size:
            raise DataFormatError(data.source, f"token ids reach {data.vocab_size - 1} but the backbone's vocab_size is {backbone.config.vocab_size}")
    else:
        from transformers import DebertaV2Model

        backbone = DebertaV2Model(small_backbone_config(data.vocab_size, cfg))
    ithp = ITHPConfig(
        X0_dim=backbone.config.hidden_size, X1_dim=data.acoustic_dim, X2_dim=data.visual_dim, inter_dim=cfg.inter_dim,
        B0_dim=cfg.b0_dim, B1_dim=cfg.b1_dim, drop_prob=cfg.ithp_dropout, p_beta=cfg.p_beta, p_gamma=cfg.p_gamma,
        p_lambda=cfg.p_lambda, max_sen_len=cfg.max_seq_length,
    )
    model_config = {
        "backbone": backbone.config.to_dict(),
        "backbone_path": cfg.backbone,
        "ithp": ithp.to_dict(),
        "beta_shift": cfg.beta_shift,
        "dropout_prob": cfg.fusion_dropout,
        "pass_attention_mask": cfg.attention_mask,
        "eval_sampling": cfg.eval_sampling,
    }
    return build_model(model_config, cfg.impl, backbone), model_config


def optimizer_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on every parameter except biases and LayerNorm weights."""
    norm = {id(p) for m in model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters(recurse=False)}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if name.endswith("bias") or id(p) in norm else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ------------------------------------------------------------------------------------- batches


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


def run_batch(model: nn.Module, batch: dict, cfg: TrainConfig, model_config: dict, ctx: DistContext, noise_key: Optional[tuple], reduce_bounds: bool):
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
    local = (torch.cat(idx).numpy() if idx else np.zeros(0, np.int64), torch.cat(preds).numpy() if preds else np.zeros(0, np.float32))
    parts = gather_objects(local, ctx)
    order = np.concatenate([p[0] for p in parts])
    values = np.concatenate([p[1] for p in parts])
    predictions = np.empty(len(split), dtype=np.float64)
    predictions[order] = values
    labels = split.labels.numpy().astype(np.float64)
    return {"predictions": predictions, "labels": labels, "metrics": all_conventions(predictions, labels)}


def write_predictions(path: str, split: SentimentSplit, result: dict) -> None:
    with open(path, "w") as f:
        f.write("index,id,label,prediction\n")
        for i, (label, pred) in enumerate(zip(result["labels"], result["predictions"])):
            f.write(f"{i},{split.ids[i]},{label:.6g},{pred:.9g}\n")


# ------------------------------------------------------------------------------------- training


def _say(ctx: DistContext, msg: str) -> None:
    if ctx.is_main:
        from tqdm import tqdm

        tqdm.write(msg, file=sys.stderr)


def _fmt(metrics: dict, keys=("Non0_acc_2", "Non0_F1_score", "MAE", "Corr")) -> str:
    return " ".join(f"{k} {metrics[k]:.4f}" for k in keys if k in metrics and k != "count")


def _check_resume(saved: dict, cfg: TrainConfig, path: str) -> None:
    now = cfg.to_dict()
    diff = [k for k in now if k not in RESUME_FREE and saved.get(k) != now[k]]
    if diff:
        detail = ", ".join(f"{k}: saved {saved.get(k)!r}, now {now[k]!r}" for k in diff)
        raise ValueError(f"--resume: {path} was written with other settings ({detail})")


def train_seed(cfg: TrainConfig, seed: int, data: SentimentData, ctx: DistContext) -> dict:
    """One training run; returns its results (also written to ``<output_dir>/seed-<seed>/results.json``)."""
    from tqdm import tqdm
    from transformers import get_linear_schedule_with_warmup

    run_dir = os.path.join(cfg.output_dir, f"seed-{seed}")
    last_dir, best_dir = os.path.join(run_dir, "checkpoint-last"), os.path.join(run_dir, "checkpoint-best")
    results_path = os.path.join(run_dir, "results.json")
    if cfg.resume and os.path.isfile(results_path) and ckpt.has_training_state(last_dir):
        done = ckpt.read_json(results_path)
        if done.get("finished"):
            _check_resume(ckpt.load_config(last_dir)["run"], cfg, last_dir)
            _say(ctx, f"seed {seed}: finished earlier, results read from {results_path}")
            return done
    if ctx.is_main:
        os.makedirs(run_dir, exist_ok=True)

    torch.manual_seed(seed)
    model, model_config = new_model(cfg, data)
    model.to(ctx.device)
    optimizer = torch.optim.AdamW(optimizer_groups(model, cfg.weight_decay), lr=cfg.lr, eps=cfg.adam_eps)
    local_batch = cfg.batch_size // ctx.world_size
    train_split = data.splits["train"]
    sampler = DistributedSampler(train_split, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed, drop_last=False)
    loader = DataLoader(train_split, batch_size=local_batch, sampler=sampler, num_workers=cfg.num_workers,
                        pin_memory=ctx.device.type == "cuda")
    steps_per_epoch = len(loader)
    total_steps = cfg.epochs * steps_per_epoch if cfg.max_steps is None else min(cfg.max_steps, cfg.epochs * steps_per_epoch)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    config = {"model": model_config, "run": {**cfg.to_dict(), "seed": seed}, "data": data.describe(), "impl": cfg.impl,
              "world_size": ctx.world_size, "tokenizer": _tokenizer_entry(data)}

    state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "history": {"steps": [], "epochs": []},
             "best": None, "best_epoch": None, "train_seconds": 0.0}
    if cfg.resume and ckpt.has_training_state(last_dir):
        saved = ckpt.load_config(last_dir)
        _check_resume(saved["run"], cfg, last_dir)
        ckpt.load_weights(model, last_dir)
        state = ckpt.load_training_state(last_dir, optimizer, scheduler)
        _say(ctx, f"seed {seed}: resuming from {last_dir} at step {state['global_step']} (epoch {state['epoch'] + 1})")

    ddp = model
    if ctx.enabled:
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[ctx.device] if ctx.device.type == "cuda" else None)

    def save_last(finished: bool) -> None:
        if ctx.is_main:
            ckpt.save_checkpoint(last_dir, model, config, save_tokenizer=_tokenizer_saver(data), optimizer=optimizer,
                                 scheduler=scheduler, state={**state, "finished": finished})

    history = state["history"]
    stopped = False
    steps_this_call = 0
    while state["epoch"] < cfg.epochs and state["global_step"] < total_steps and not stopped:
        epoch = state["epoch"]
        sampler.set_epoch(epoch)
        ddp.train()
        # Sums of an epoch interrupted by --stop-after-steps carry over, so a resumed epoch logs as an uninterrupted one.
        partial = state.pop("partial", None) or {"sum": [0.0] * len(TERMS), "steps": 0, "window": []}
        epoch_sum = torch.tensor(partial["sum"], device=ctx.device)
        epoch_steps = partial["steps"]
        window = [torch.tensor(w, device=ctx.device) for w in partial["window"]]
        bar = tqdm(total=min(steps_per_epoch, total_steps - state["global_step"] + state["step_in_epoch"]),
                   initial=state["step_in_epoch"], desc=f"seed {seed} epoch {epoch + 1}/{cfg.epochs}",
                   disable=not (cfg.progress and ctx.is_main), leave=False, dynamic_ncols=True)
        t0 = time.perf_counter()
        for batch in itertools.islice(loader, state["step_in_epoch"], None):
            if state["global_step"] >= total_steps:
                break
            torch.manual_seed(derive_seed(seed, TRAIN_TAG, state["global_step"], ctx.rank))
            noise_key = (seed, TRAIN_TAG, epoch) if cfg.noise == "per-example" else None
            out, labels = run_batch(ddp, batch, cfg, model_config, ctx, noise_key, reduce_bounds=True)
            loss = model.training_loss(out, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            terms = torch.stack([loss, F.mse_loss(out.logits.reshape(-1).float(), labels.float()),
                                 out.IB_total, out.kl0, out.mse0, out.kl1, out.mse1]).detach().float()
            epoch_sum += terms
            epoch_steps += 1
            window.append(terms)
            state["global_step"] += 1
            state["step_in_epoch"] += 1
            steps_this_call += 1
            bar.update(1)
            if state["global_step"] % cfg.log_every == 0 or state["step_in_epoch"] == steps_per_epoch:
                means = torch.stack(window).mean(0).tolist()
                window.clear()
                history["steps"].append({"step": state["global_step"], "epoch": epoch + 1, **dict(zip(TERMS, means))})
                bar.set_postfix(loss=f"{(epoch_sum[0] / epoch_steps).item():.4f}")
            if cfg.stop_after_steps is not None and steps_this_call >= cfg.stop_after_steps:
                stopped = True
                break
        bar.close()
        state["train_seconds"] += time.perf_counter() - t0
        epoch_done = state["step_in_epoch"] >= steps_per_epoch or state["global_step"] >= total_steps
        if not epoch_done:
            state["partial"] = {"sum": epoch_sum.tolist(), "steps": epoch_steps, "window": [w.tolist() for w in window]}
            save_last(False)
            break
        if window:
            history["steps"].append({"step": state["global_step"], "epoch": epoch + 1,
                                     **dict(zip(TERMS, torch.stack(window).mean(0).tolist()))})
        seconds = time.perf_counter() - t0
        record = {"epoch": epoch + 1, "seconds": seconds, "lr": scheduler.get_last_lr()[0],
                  "train": dict(zip(TERMS, (mean_across_ranks(epoch_sum, ctx) / max(epoch_steps, 1)).tolist()))}
        for name in ("valid", "test"):
            record[name] = predict(model, data.splits[name], cfg, model_config, ctx, seed)["metrics"]
        history["epochs"].append(record)
        _say(ctx, f"seed {seed} epoch {epoch + 1}/{cfg.epochs} ({seconds:.1f} s): train loss {record['train']['loss']:.4f} | "
                  f"valid {_fmt(record['valid'][cfg.protocol])} | test {_fmt(record['test'][cfg.protocol])}")
        if cfg.selection == "best":
            value = record["valid"][cfg.protocol].get(cfg.select_metric)
            if value is None:
                raise ValueError(f"--select-metric: unknown metric {cfg.select_metric!r}; one of {sorted(record['valid'][cfg.protocol])}")
            if better(cfg.select_metric, value, state["best"]):
                state["best"], state["best_epoch"] = value, epoch + 1
                if ctx.is_main:
                    ckpt.save_checkpoint(best_dir, model, config, save_tokenizer=_tokenizer_saver(data))
        state["epoch"], state["step_in_epoch"] = epoch + 1, 0
        finished = state["epoch"] >= cfg.epochs or state["global_step"] >= total_steps
        if finished or (epoch + 1) % cfg.checkpoint_every == 0:
            save_last(finished)
        if stopped:
            break

    finished = state["epoch"] >= cfg.epochs or state["global_step"] >= total_steps
    if not finished:
        _say(ctx, f"seed {seed}: stopped at step {state['global_step']} of {total_steps}; continue with --resume")
        return {"seed": seed, "finished": False, "global_step": state["global_step"]}
    return _finish_seed(cfg, seed, data, ctx, model, model_config, state, run_dir, best_dir, results_path)


def _finish_seed(cfg, seed, data, ctx, model, model_config, state, run_dir, best_dir, results_path) -> dict:
    selected = state["epoch"] if cfg.selection == "last" else state["best_epoch"]
    if cfg.selection == "best" and state["best_epoch"] is not None:
        ckpt.load_weights(model, best_dir)
    scored = {name: predict(model, data.splits[name], cfg, model_config, ctx, seed) for name in ("valid", "test")}
    epochs = state["history"]["epochs"]
    results = {
        "seed": seed,
        "finished": True,
        "protocol": cfg.protocol,
        "selection": {"rule": cfg.selection, "metric": cfg.select_metric if cfg.selection == "best" else None, "epoch": selected},
        "headline": scored["test"]["metrics"][cfg.protocol],
        "test": scored["test"]["metrics"],
        "valid": scored["valid"]["metrics"],
        "data": data.describe(),
        "timing": {
            "device": str(ctx.device),
            "world_size": ctx.world_size,
            "steps": state["global_step"],
            "train_seconds": state["train_seconds"],
            "epoch_seconds": [r["seconds"] for r in epochs],
        },
        "history": state["history"],
        "checkpoint": os.path.join(run_dir, "checkpoint-best" if cfg.selection == "best" else "checkpoint-last"),
    }
    if data.layout == "synthetic":
        results["synthetic_text_only_ceiling"] = synthetic_ceiling(_synthetic_spec(data))
    if ctx.is_main:
        write_predictions(os.path.join(run_dir, "predictions_test.csv"), data.splits["test"], scored["test"])
        if cfg.plots:
            try:
                from .plots import plot_run
            except ImportError as exc:  # matplotlib is an optional dependency
                warnings.warn(f"no figures written ({exc}); install matplotlib or pass --no-plots", stacklevel=2)
            else:
                results["plots"] = plot_run(state["history"], run_dir, cfg.protocol)
        ckpt.write_json(results_path, results)
    _say(ctx, f"seed {seed}: test ({cfg.protocol} convention, {cfg.selection} epoch {selected}) {_fmt(results['headline'], tuple(results['headline']))}")
    return results


def _synthetic_spec(data: SentimentData) -> SyntheticSpec:
    info = data.info["synthetic"]
    return SyntheticSpec(seed=info["seed"], sizes=tuple(info["sizes"]), visual_dim=data.visual_dim, acoustic_dim=data.acoustic_dim)


def _tokenizer_entry(data: SentimentData) -> dict:
    if isinstance(data.tokenizer, WordVocabulary):
        return {"kind": "word-vocabulary", "file": VOCAB_FILE}
    if isinstance(data.tokenizer, PretrainedWordTokenizer):
        return {"kind": "pretrained"}
    return {"kind": "ids-in-data"}


def _tokenizer_saver(data: SentimentData):
    tok = data.tokenizer
    return tok.save if tok is not None else None


def summarise(results: list[dict], protocol: str) -> dict:
    """Mean and sample standard deviation of every headline metric over the seeds."""
    finished = [r for r in results if r.get("finished")]
    summary: dict[str, Any] = {"protocol": protocol, "seeds": [r["seed"] for r in finished], "metrics": {}}
    for conv in CONVENTIONS:
        keys = [k for k in finished[0]["test"][conv] if k != "count"] if finished else []
        summary["metrics"][conv] = {}
        for k in keys:
            values = [r["test"][conv][k] for r in finished]
            clean = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
            mean, std = mean_std(clean) if clean else (math.nan, math.nan)
            summary["metrics"][conv][k] = {"mean": mean, "std": std, "values": values}
    return summary


def train(cfg: TrainConfig) -> dict:
    """Run every seed of ``cfg``; returns (and writes, on rank 0) the summary over seeds."""
    ctx = init_distributed(cfg.device)
    try:
        cfg.validate(ctx.world_size)
        if cfg.backbone:
            check_backbone_dir(cfg.backbone)
        tokenizer = PretrainedWordTokenizer.from_directory(cfg.backbone) if cfg.backbone else None
        data = load_sentiment_data(cfg.data, tokenizer=tokenizer, max_len=cfg.max_seq_length,
                                   synthetic=SyntheticSpec(seed=cfg.synthetic_seed, sizes=tuple(cfg.synthetic_sizes)))
        if data.layout == "arrays" and cfg.backbone:
            warnings.warn("the array (MMSA) layout carries token ids from its own BERT tokenizer; they are used as they are, "
                          "which is only meaningful for a backbone that shares that vocabulary", stacklevel=2)
        _say(ctx, f"data: {data.describe()}")
        if not cfg.backbone and cfg.lr <= 1e-5:
            _say(ctx, f"note: --lr {cfg.lr:g} is the published rate for a pretrained backbone; the randomly initialised "
                      f"one learns little at it (try --lr 1e-3), or pass --backbone DIR")
        results = [train_seed(cfg, seed, data, ctx) for seed in cfg.seeds]
        summary = summarise(results, cfg.protocol)
        if ctx.is_main and summary["seeds"]:
            ckpt.write_json(os.path.join(cfg.output_dir, "summary.json"), summary)
            lines = [f"test metrics over seeds {summary['seeds']} ({cfg.protocol} convention, mean +- std):"]
            for k, v in summary["metrics"][cfg.protocol].items():
                lines.append(f"  {k:14s} {v['mean']:.4f} +- {v['std']:.4f}")
            print("\n".join(lines))
        return summary
    finally:
        shutdown(ctx)


# ------------------------------------------------------------------------------------- evaluate


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
        kind = config["tokenizer"]["kind"]
        tokenizer = (WordVocabulary.load(directory) if kind == "word-vocabulary"
                     else PretrainedWordTokenizer.from_directory(directory) if kind == "pretrained" else None)
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
            print(f"{split} ({protocol} convention): {_fmt(report['headline'], tuple(report['headline']))}")
            print(f"written: {output}")
        return report
    finally:
        shutdown(ctx)


# ------------------------------------------------------------------------------------------ CLI


def _add_config_arguments(p: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(TrainConfig):
        meta = dict(f.metadata)
        flag = "--" + f.name.replace("_", "-")
        help_text = meta.pop("help")
        if isinstance(f.default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
            continue
        kind = meta.pop("type", None) or type(f.default)
        p.add_argument(flag, type=kind, default=f.default, help=f"{help_text} (default: {f.default})", **meta)


# Errors that come from what the user gave (paths, files, options): one line, no traceback.
USER_ERRORS = (DataFormatError, FileNotFoundError, ValueError, KeyError)


def _train_command(args: argparse.Namespace) -> int:
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    cfg.synthetic_sizes, cfg.seeds = tuple(cfg.synthetic_sizes), tuple(cfg.seeds)
    try:
        train(cfg)
    except USER_ERRORS as exc:
        print(f"ithp-fast train: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _evaluate_command(args: argparse.Namespace) -> int:
    try:
        evaluate_checkpoint(args.checkpoint, args.data, split=args.split, protocol=args.protocol, batch_size=args.batch_size,
                            impl=args.impl, device=args.device, output=args.output)
    except USER_ERRORS as exc:
        print(f"ithp-fast evaluate: error: {exc}", file=sys.stderr)
        return 2
    return 0


def register(sub) -> None:
    """Add ``train`` and ``evaluate`` to the ``ithp-fast`` command line."""
    p = sub.add_parser(
        "train",
        help="train ITHP-DeBERTa (published recipe by default)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config_arguments(p)
    p.set_defaults(func=_train_command)

    e = sub.add_parser("evaluate", help="score a checkpoint on a split under both metric conventions")
    e.add_argument("--checkpoint", required=True, help="a checkpoint directory written by `ithp-fast train`")
    e.add_argument("--data", default=None, help="the pickle to score on (needed when the checkpoint was trained on one; "
                                                "unpickling runs code stored in the file: pass only files you trust). "
                                                "Default: the checkpoint's synthetic set")
    e.add_argument("--split", default="test", choices=("train", "valid", "test"))
    e.add_argument("--protocol", default="authors", choices=CONVENTIONS, help="convention of the printed headline (both are written)")
    e.add_argument("--batch-size", type=int, default=None, help="evaluation batch (default: the training run's)")
    e.add_argument("--impl", default=None, choices=IMPLS, help="ITHP implementation (default: the training run's)")
    e.add_argument("--device", default="auto")
    e.add_argument("--output", default=None, help="results JSON (default: <checkpoint>/eval-<split>.json)")
    e.set_defaults(func=_evaluate_command)
