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
from typing import Any, Literal, Optional, get_args, get_origin, get_type_hints

IMPLS = ("fast", "reference")
TERMS = ("loss", "task_mse", "IB_total", "kl0", "mse0", "kl1", "mse1")
# Settings that may differ when resuming (they do not change what is computed). --epochs may also grow.
RESUME_FREE = (
    "resume",
    "overwrite_output_dir",
    "skip_nonfinite_steps",
    "progress",
    "plots",
    "seeds",
    "num_workers",
    "log",
    "log_every",
    "checkpoint_every",
    "stop_after_steps",
    "device",
    "threads",
    "output_dir",
)


def setting(default: Any, help: str) -> Any:
    """A TrainConfig field: its default and the help line of its flag (the default is added to it)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), shared among a torchrun job's processes on this machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


@dataclass
class TrainConfig:
    """Everything a training run depends on; each field is a flag of ``ithp-fast train`` (``lr`` is ``--lr``,
    ``max_seq_length`` is ``--max-seq-length``) and a key of a ``--config`` file."""

    # data
    data: Optional[str] = setting(
        None,
        "pickle in either layout (word-level train/dev/test or MMSA train/valid/test); "
        "unpickling runs code stored in the file: pass only files you trust. "
        "Default: the built-in synthetic set",
    )
    synthetic_seed: int = setting(0, "seed of the synthetic set (used without --data)")
    synthetic_sizes: list[int] = setting([512, 128, 128], "train, valid and test sizes of the synthetic set")
    max_seq_length: int = setting(50, "tokens per example (word-level layout: cut after tokenisation)")
    # backbone
    backbone: Optional[str] = setting(
        None,
        "local directory of a pretrained DeBERTa-v2/v3 (config, weights, tokenizer); "
        "never downloaded. Default: a small randomly initialised DeBERTa-v2",
    )
    hidden_size: int = setting(64, "hidden size of the random backbone (= X0_dim)")
    num_layers: int = setting(2, "layers of the random backbone")
    num_heads: int = setting(2, "attention heads of the random backbone")
    intermediate_size: int = setting(128, "feed-forward width of the random backbone")
    backbone_dropout: Optional[float] = setting(
        None, "hidden and attention dropout of the backbone. Default: its config's (0.1 for the random one)"
    )
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
    attention_mask: bool = setting(True, "pass the attention mask to the backbone (the authors' script passes none)")
    impl: Literal["fast", "reference"] = setting("fast", "ITHP implementation")
    eval_sampling: Literal["sample", "mean"] = setting(
        "sample", "latent in eval mode: sample b = mu + eps * sigma (the released behaviour) or mean b = mu"
    )
    noise: Literal["generator", "per-example"] = setting(
        "generator",
        "ITHP noise: from torch's generator, or drawn "
        "from each example's index (the same whatever "
        "the number of processes or the batch order)",
    )
    normalise: Literal["batch", "none"] = setting("batch", "detector normalisation: per-batch global min-max, or none")
    # optimisation
    lr: float = setting(1e-5, "AdamW learning rate")
    weight_decay: float = setting(0.01, "AdamW weight decay (never on biases and LayerNorm weights)")
    adam_eps: float = setting(1e-8, "AdamW epsilon")
    warmup_ratio: float = setting(0.1, "fraction of the steps with linear warm-up (then linear decay to 0)")
    batch_size: int = setting(8, "global training batch (split over the processes)")
    eval_batch_size: Optional[int] = setting(None, "evaluation batch per process. Default: --batch-size")
    epochs: int = setting(30, "training epochs")
    max_steps: Optional[int] = setting(None, "cap on the optimiser steps (the schedule is sized to it)")
    max_grad_norm: Optional[float] = setting(None, "clip the gradient norm to this. Default: no clipping")
    skip_nonfinite_steps: bool = setting(
        False,
        "skip an optimiser step whose loss or gradient is not finite (counted "
        "in the results) instead of stopping with an error",
    )
    amp: bool = setting(False, "bfloat16 autocast")
    # protocol
    protocol: Literal["authors", "mmsa"] = setting(
        "authors",
        "metric convention of the headline numbers: authors "
        "(zero labels dropped for every metric, last epoch) or "
        "mmsa (Has0/Non0, zeros kept for MAE/Corr, best on valid)",
    )
    select: Optional[Literal["last", "best"]] = setting(
        None,
        "which epoch's model is scored: last, or best on the "
        "validation split. Default: last for authors, best for mmsa",
    )
    select_metric: str = setting(
        "MAE", "validation metric for --select best and --early-stop (MAE: lower is better; the others: higher)"
    )
    early_stop: Optional[int] = setting(
        None,
        "stop a seed after this many epochs without improvement of "
        "--select-metric on valid. Default: off, as in the published recipe",
    )
    # run
    seeds: list[int] = setting([1], "one run per seed; with two or more the summary gives mean and std")
    output_dir: str = setting(
        "runs/ithp",
        "where the run is written (one seed-N directory per seed); results.csv, one row per run, goes in its parent",
    )
    resume: bool = setting(
        False, "continue each seed from its checkpoint-last in --output-dir (a larger --epochs extends a finished run)"
    )
    overwrite_output_dir: bool = setting(
        False, "replace the seeds already trained in --output-dir (without it, a directory that holds one is refused)"
    )
    stop_after_steps: Optional[int] = setting(
        None, "stop after this many steps in this invocation, keeping the full schedule (continue later with --resume)"
    )
    device: str = setting("auto", "auto, cpu, cuda or cuda:N")
    threads: Optional[int] = setting(
        None,
        "torch intra-op threads. Default: the cores this process may use "
        "(shared among the processes of a torchrun job)",
    )
    num_workers: int = setting(0, "DataLoader workers")
    progress: bool = setting(True, "tqdm progress bars")
    plots: bool = setting(True, "write the PNG figures")
    log: Literal["csv", "tensorboard"] = setting(
        "csv",
        "per-epoch log: metrics.csv in each seed directory, or that and "
        "TensorBoard event files (needs the tensorboard package)",
    )
    log_every: int = setting(10, "steps per logged record (running loss, information plane)")
    checkpoint_every: int = setting(1, "epochs between resumable checkpoints (the last epoch is always saved)")

    @property
    def selection(self) -> str:
        return self.select or ("last" if self.protocol == "authors" else "best")

    def to_dict(self) -> dict:
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in dataclasses.fields(self)
        }

    def resolved(self) -> "TrainConfig":
        """A copy with the defaults that depend on the machine or on other settings filled in."""
        return dataclasses.replace(
            self,
            select=self.selection,
            eval_batch_size=self.eval_batch_size or self.batch_size,
            threads=self.threads or usable_cores(),
            seeds=list(self.seeds),
            synthetic_sizes=list(self.synthetic_sizes),
        )

    def validate(self, world_size: int = 1) -> None:
        """One clear error naming the flag for any setting out of range."""
        check_types(self)
        for name in (
            "max_seq_length",
            "hidden_size",
            "num_layers",
            "num_heads",
            "intermediate_size",
            "inter_dim",
            "b0_dim",
            "b1_dim",
            "batch_size",
            "epochs",
            "log_every",
            "checkpoint_every",
        ):
            at_least(name, getattr(self, name), 1)
        for name in ("max_steps", "eval_batch_size", "stop_after_steps", "threads", "early_stop"):
            if getattr(self, name) is not None:
                at_least(name, getattr(self, name), 1)
        for name in ("lr", "adam_eps", "p_beta", "p_gamma"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{flag(name)}: expected a positive number, got {getattr(self, name)}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"--max-grad-norm: expected a positive number, got {self.max_grad_norm}")
        if not self.weight_decay >= 0:
            raise ValueError(f"--weight-decay: expected 0 or more, got {self.weight_decay}")
        for name in ("ithp_dropout", "fusion_dropout", "backbone_dropout"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                raise ValueError(f"{flag(name)}: expected a probability in [0, 1), got {value}")
        if not 0 <= self.warmup_ratio <= 1:
            raise ValueError(f"--warmup-ratio: expected a fraction in [0, 1], got {self.warmup_ratio}")
        if len(self.synthetic_sizes) != 3:
            raise ValueError(
                f"--synthetic-sizes: expected three sizes (train, valid, test), got {list(self.synthetic_sizes)}"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(f"--hidden-size {self.hidden_size} must be a multiple of --num-heads {self.num_heads}")
        if self.batch_size % world_size:
            raise ValueError(
                f"--batch-size {self.batch_size} (global) must be divisible by the number of processes ({world_size})"
            )
        if not self.seeds:
            raise ValueError("--seeds: give at least one seed")
        if self.backbone and not os.path.isdir(self.backbone):
            raise FileNotFoundError(
                f"--backbone: {self.backbone!r} is not a local directory. Nothing is downloaded: save the model "
                f"(config, weights and tokenizer) to a directory first and pass that directory"
            )


def flag(name: str) -> str:
    """The command-line flag of a TrainConfig field: ``max_seq_length`` -> ``--max-seq-length``."""
    return "--" + name.replace("_", "-")


def at_least(name: str, value: int, low: int) -> None:
    if value < low:
        raise ValueError(f"{flag(name)}: expected {low} or more, got {value}")


def check_types(cfg: TrainConfig) -> None:
    """A clear error for a setting of the wrong type (a config file or the Python API can give any value)."""
    hints = get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        value, kind = getattr(cfg, f.name), hints[f.name]
        if value is None and type(None) in get_args(kind):
            continue
        if get_origin(kind) is not list and type(None) in get_args(kind):
            kind = next(a for a in get_args(kind) if a is not type(None))
        if not fits(value, kind):
            raise ValueError(f"{flag(f.name)}: expected {describe_type(kind)}, got {value!r}")


def fits(value: Any, kind: Any) -> bool:
    if get_origin(kind) is Literal:
        return value in get_args(kind)
    if get_origin(kind) is list:
        return isinstance(value, (list, tuple)) and all(fits(v, get_args(kind)[0]) for v in value)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def describe_type(kind: Any) -> str:
    if get_origin(kind) is Literal:
        return "one of " + ", ".join(map(str, get_args(kind)))
    if get_origin(kind) is list:
        return "a list of integers" if get_args(kind)[0] is int else f"a list of {get_args(kind)[0]}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(kind, str(kind))
