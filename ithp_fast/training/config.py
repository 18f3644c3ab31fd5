"""TrainConfig: everything a training run depends on, with the published recipe as defaults.

The defaults are the published recipe: AdamW, learning rate 1e-5, weight decay 0.01 except on
biases and LayerNorm weights, linear warm-up over 10 % of the steps then linear decay, batch 8,
30 epochs, 50 tokens, loss MSE + 2 / (p_beta + p_gamma) * IB_total and per-batch global min-max
normalisation of the acoustic and visual features. Every one of them is an option.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from .metrics import CONVENTIONS

IMPLS = ("fast", "reference")
TERMS = ("loss", "task_mse", "IB_total", "kl0", "mse0", "kl1", "mse1")
# Options that may differ when resuming (they do not change what is computed).
RESUME_FREE = ("resume", "overwrite_output_dir", "skip_nonfinite_steps", "progress", "plots", "seeds", "num_workers", "log_every", "checkpoint_every", "stop_after_steps", "device", "output_dir")


def setting(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    """Everything a training run depends on; each field is a ``--flag`` of ``ithp-fast train``."""

    # data
    data: Optional[str] = setting(None, "pickle in either layout (word-level train/dev/test or MMSA train/valid/test). "
                               "Unpickling runs code stored in the file: pass only files you trust. Default: the synthetic set", type=str)
    synthetic_seed: int = setting(0, "seed of the synthetic set (used without --data)")
    synthetic_sizes: tuple = setting((512, 128, 128), "train, valid and test sizes of the synthetic set", nargs=3, type=int)
    max_seq_length: int = setting(50, "tokens per example (word-level layout: cut after tokenisation)")
    # backbone
    backbone: Optional[str] = setting(None, "local directory of a pretrained DeBERTa-v2/v3 (config, weights, tokenizer); "
                                   "never downloaded. Default: a small randomly initialised DeBERTa-v2", type=str)
    hidden_size: int = setting(64, "hidden size of the random backbone (= X0_dim)")
    num_layers: int = setting(2, "layers of the random backbone")
    num_heads: int = setting(2, "attention heads of the random backbone")
    intermediate_size: int = setting(128, "feed-forward width of the random backbone")
    backbone_dropout: Optional[float] = setting(None, "hidden and attention dropout of the backbone (default: its config's, 0.1)", type=float)
    # ITHP and the fusion head
    inter_dim: int = setting(256, "ITHP inter_dim")
    b0_dim: int = setting(128, "ITHP B0_dim")
    b1_dim: int = setting(64, "ITHP B1_dim")
    ithp_dropout: float = setting(0.3, "ITHP drop_prob")
    p_beta: float = setting(8.0, "ITHP p_beta")
    p_gamma: float = setting(32.0, "ITHP p_gamma")
    p_lambda: float = setting(0.3, "ITHP p_lambda")
    beta_shift: float = setting(1.0, "scale of expand(b1) added to the token states")
    fusion_dropout: float = setting(0.5, "dropout after the fusion LayerNorm")
    attention_mask: bool = setting(True, "pass the attention mask to the backbone (--no-attention-mask: the authors' script)")
    impl: str = setting("fast", "ITHP implementation", choices=IMPLS)
    eval_sampling: str = setting("sample", "eval-mode latent: 'sample' b = mu + eps*sigma (released behaviour) or 'mean' b = mu",
                              choices=("sample", "mean"))
    noise: str = setting("generator", "ITHP noise: torch's generator, or 'per-example' (drawn from the example index: "
                      "the same whatever the number of processes or the batch order)", choices=("generator", "per-example"))
    normalise: str = setting("batch", "detector normalisation: per-batch global min-max, or none", choices=("batch", "none"))
    # optimisation
    lr: float = setting(1e-5, "AdamW learning rate")
    weight_decay: float = setting(0.01, "AdamW weight decay (never on biases and LayerNorm weights)")
    adam_eps: float = setting(1e-8, "AdamW epsilon")
    warmup_ratio: float = setting(0.1, "fraction of the steps with linear warm-up")
    batch_size: int = setting(8, "global training batch (split over the ranks)")
    eval_batch_size: Optional[int] = setting(None, "evaluation batch per rank (default: --batch-size)", type=int)
    epochs: int = setting(30, "training epochs")
    max_steps: Optional[int] = setting(None, "cap on the optimiser steps (the schedule is sized to it)", type=int)
    max_grad_norm: Optional[float] = setting(None, "clip the gradient norm (default: no clipping)", type=float)
    skip_nonfinite_steps: bool = setting(False, "skip an optimiser step whose loss or gradient is not finite (counted "
                                         "in the results) instead of stopping the run with an error")
    amp: bool = setting(False, "bfloat16 autocast")
    # protocol
    protocol: str = setting("authors", "metric convention of the headline numbers: 'authors' (zero labels dropped for every "
                         "metric, last epoch) or 'mmsa' (Has0/Non0, zeros kept for MAE/Corr, best on valid)", choices=CONVENTIONS)
    select: Optional[str] = setting(None, "which epoch's model is scored: 'last', or 'best' on the validation split "
                                 "(default: last for authors, best for mmsa)", choices=("last", "best"), type=str)
    select_metric: str = setting("MAE", "validation metric for --select best (MAE: lower is better; others higher)")
    # run
    seeds: tuple = setting((1,), "one run per seed; more than one reports mean +- std", nargs="+", type=int)
    output_dir: str = setting("runs/ithp", "where runs are written (one seed-N/ directory per seed)")
    resume: bool = setting(False, "continue each seed from its checkpoint-last/ in --output-dir")
    overwrite_output_dir: bool = setting(False, "replace the seeds already trained in --output-dir (without it, a "
                                         "directory that holds one is refused)")
    stop_after_steps: Optional[int] = setting(None, "stop after this many steps in this invocation, keeping the full "
                                           "schedule (continue later with --resume)", type=int)
    device: str = setting("auto", "auto, cpu, cuda or cuda:N")
    num_workers: int = setting(0, "DataLoader workers")
    progress: bool = setting(True, "tqdm progress bars")
    plots: bool = setting(True, "write the PNG figures")
    log_every: int = setting(10, "steps per logged record (running loss, information plane)")
    checkpoint_every: int = setting(1, "epochs between resumable checkpoints (the last epoch is always saved)")

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
        if self.backbone and not os.path.isdir(self.backbone):
            raise FileNotFoundError(
                f"--backbone: {self.backbone!r} is not a local directory. Nothing is downloaded: save the model "
                f"(config, weights and tokenizer) to a directory first and pass that directory"
            )

