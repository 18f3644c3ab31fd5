"""TrainConfig: everything a training run depends on, with the published recipe as defaults.

The defaults are the published recipe: AdamW, learning rate 1e-5, weight decay 0.01 except on
biases and LayerNorm weights, linear warm-up over 10 % of the steps then linear decay, batch 8,
30 epochs, 50 tokens, loss MSE + 2 / (p_beta + p_gamma) * IB_total and per-batch global min-max
normalisation of the acoustic and visual features. Every one of them is an option.

One default differs from the authors' released script: the attention mask goes to the backbone, so
that padding is not attended to and a text's score does not depend on how much padding it has
(scoring pads each batch to its longest text). ``--recipe released`` is the released script:
``RECIPES["released"]``, beneath a --config file and the flags given.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, get_args, get_origin, get_type_hints

from ..checks import renamed_settings
from ..data import DETECTOR_NAMES
from .metrics import metric_names

PRIME = "text"
RELEASED_MODALITY_ORDER = (PRIME, "acoustic", "visual")


RECIPES = {
    "released": {  # the authors' train.py, as published
        "attention_mask": False,  # it passes no attention mask to DeBERTa: padding is attended to
        "eval_sampling": "sample",  # its evaluation draws the latent
        "mask_padding": False,
        "missing_rate": 0.0,
        "modality_order": list(RELEASED_MODALITY_ORDER),
        "normalise": "batch",
        "protocol": "authors",
        "select": "last",
        "lr": 1e-5,
        "weight_decay": 0.01,
        "warmup_ratio": 0.1,
        "batch_size": 8,
        "epochs": 30,
        "max_seq_length": 50,
        "max_grad_norm": None,
    },
}
"""Presets of settings (``--recipe``); the settings a --config file or a flag gives replace a preset's."""


def recipe_settings(name: object) -> dict:
    """The settings of ``--recipe NAME`` (none without one)."""
    if name is None:
        return {}
    if name not in RECIPES:
        raise ValueError(f"--recipe: expected one of {', '.join(RECIPES)}, got {name!r}")
    return dict(RECIPES[name])


def train_terms(levels: int) -> tuple[str, ...]:
    """The training terms a run logs for a model of ``levels`` ITHP levels: loss, task MSE, IB_total,
    then ``kl<k>``, ``mse<k>`` of each level (k from 0, in level order)."""
    per_level = (f"{term}{k}" for k in range(levels) for term in ("kl", "mse"))
    return ("loss", "task_mse", "IB_total", *per_level)


# Settings that may differ when resuming (they do not change what is computed). --epochs may also grow.
RESUME_FREE = (
    "resume",
    "resume_unverified",
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


def known_settings(values: Mapping, fields_of: type, where: str, command: str) -> dict:
    """``values`` with an old name (such as ``impl``) as today's; one line naming ``where`` that lists the settings
    the dataclass ``fields_of`` (the settings of ``ithp-fast <command>``) does not have."""
    out = renamed_settings(values, where)
    known = {f.name for f in dataclasses.fields(fields_of)}
    unknown = sorted(k for k in out if k not in known)
    if unknown:
        raise ValueError(f"{where}: unknown settings {', '.join(unknown)} (see ithp-fast {command} --help)")
    return out


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), shared among a torchrun job's processes on this machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


@dataclass
class TrainConfig:
    """Everything a training run depends on; each field is a flag of ``ithp-fast train`` (``lr`` is ``--lr``,
    ``max_seq_length`` is ``--max-seq-length``) and a key of a ``--config`` file."""

    recipe: Optional[Literal["released"]] = setting(
        None,
        "a preset of settings: released is the authors' script (no attention mask to the backbone, the latent drawn "
        "at evaluation, the published optimisation); settings given here and in --config override it. Default: none",
    )
    # data
    data: Optional[str] = setting(
        None,
        "pickle in either layout (word-level train/dev/test or MMSA train/valid/test); "
        "unpickling runs code stored in the file: pass only files you trust (a path found only in a --config "
        "file is not read). Default: the built-in synthetic set",
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
    b0_dim: int = setting(128, "latent width of ITHP level 1 (B0_dim)")
    b1_dim: int = setting(64, "latent width of ITHP level 2 (B1_dim)")
    ithp_dropout: float = setting(0.3, "ITHP drop_prob")
    p_beta: float = setting(8.0, "weight of level 1's reconstruction error (ITHP p_beta)")
    p_gamma: float = setting(32.0, "weight of level 2's reconstruction error (ITHP p_gamma)")
    p_lambda: float = setting(0.3, "weight of level 2's IB term in the total (ITHP p_lambda)")
    beta_shift: float = setting(1.0, "scale of expand(b1) added to the token states")
    fusion_dropout: float = setting(0.5, "dropout after the fusion LayerNorm")
    attention_mask: bool = setting(True, "pass the attention mask to the backbone (the authors' script passes none)")
    modality_order: list[str] = field(
        default_factory=lambda: list(RELEASED_MODALITY_ORDER),
        metadata={
            "help": "the modalities in ITHP's order, comma- or space-separated: text (the prime modality) first, "
            "then the detector each level predicts (acoustic, visual; one or both). text,visual,acoustic swaps "
            "the two levels; --p-beta / --b0-dim belong to level 1 whatever its detector",
            "metavar": "NAME",
        },
    )
    mask_padding: bool = setting(
        False,
        "pass the attention mask to ITHP as its token mask: padded tokens stay out of the KL and reconstruction "
        "means (off: the released model averages over them)",
    )
    missing_rate: float = setting(
        0.0,
        "drop each detector of each training example with this probability (drawn once per example from the run "
        "seed, the same every epoch): a dropped detector's features are not used, and its level's "
        "reconstruction term leaves that example out",
    )
    backend: Literal["auto", "triton", "torch", "reference"] = setting(
        "auto",
        "what computes ITHP: auto (triton on CUDA, torch elsewhere), triton (fused Triton kernels), torch "
        "(fused PyTorch), or reference (the plain-PyTorch spec). --impl fast|reference is its old name",
    )
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
    resume_unverified: bool = setting(
        False,
        "let --resume continue from a checkpoint without manifest.json, whose files cannot be checked against "
        "what was saved (written by an earlier version, or its manifest removed); without it such a checkpoint is "
        "refused",
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

    def __post_init__(self) -> None:
        self.modality_order = split_names(self.modality_order)

    @property
    def detector_names(self) -> tuple[str, ...]:
        """The detector of each ITHP level, in level order (the modality order after text)."""
        return tuple(self.modality_order[1:])

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
        check_backend_runs(self.backend, self.device)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{flag(f.name)}: expected a finite number, got {value}")
        for name in (
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
        for name in ("num_workers", "synthetic_seed"):
            at_least(name, getattr(self, name), 0)
        if self.max_seq_length < 2:
            raise ValueError(f"--max-seq-length: expected 2 or more ([CLS] and [SEP]), got {self.max_seq_length}")
        if not self.p_lambda >= 0:
            raise ValueError(f"--p-lambda: expected 0 or more, got {self.p_lambda}")
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
        if not 0 <= self.missing_rate < 1:
            raise ValueError(f"--missing-rate: expected a probability in [0, 1), got {self.missing_rate}")
        check_modality_order(self.modality_order)
        if not 0 <= self.warmup_ratio <= 1:
            raise ValueError(f"--warmup-ratio: expected a fraction in [0, 1], got {self.warmup_ratio}")
        if len(self.synthetic_sizes) != 3 or min(self.synthetic_sizes) < 1:
            raise ValueError(
                "--synthetic-sizes: expected three positive sizes (train, valid, test), "
                f"got {list(self.synthetic_sizes)}"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(f"--hidden-size {self.hidden_size} must be a multiple of --num-heads {self.num_heads}")
        if self.batch_size % world_size:
            raise ValueError(
                f"--batch-size {self.batch_size} (global) must be divisible by the number of processes ({world_size})"
            )
        check_seeds(self.seeds)
        names = metric_names(self.protocol)
        if self.select_metric not in names:
            raise ValueError(
                f"--select-metric: expected one of {', '.join(names)} (the --protocol {self.protocol} metrics), "
                f"got {self.select_metric!r}"
            )
        if self.backbone and not os.path.isdir(self.backbone):
            raise FileNotFoundError(
                f"--backbone: {self.backbone!r} is not a local directory. Nothing is downloaded: save the model "
                f"(config, weights and tokenizer) to a directory first and pass that directory"
            )


def check_backend_runs(backend: str, device: str) -> None:
    """One line naming --backend when the backend cannot run on the run's device (triton without CUDA)."""
    if backend != "triton":
        return
    import torch

    from ..backends import resolve_backend

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolve_backend(backend, device)
    except RuntimeError as err:
        raise ValueError(f"--backend: {err}") from None


def check_seeds(seeds: list[int]) -> None:
    """At least one seed, each once, each a seed torch and NumPy take (0 to 2**63 - 1)."""
    if not seeds:
        raise ValueError("--seeds: give at least one seed")
    for seed in seeds:
        if not 0 <= seed < 2**63:
            raise ValueError(f"--seeds: expected seeds from 0 to 2**63 - 1, got {seed}")
        if seeds.count(seed) > 1:
            raise ValueError(f"--seeds: {seed} is given {seeds.count(seed)} times; give each seed once")


def split_names(value: Any) -> Any:
    """``"text,visual,acoustic"`` or ``["text", "visual,acoustic"]`` as ``["text", "visual", "acoustic"]``;
    anything else is returned as it is (for the type check to name)."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return [name.strip() for v in value for name in v.split(",") if name.strip()]
    return value


def check_modality_order(order: list[str]) -> None:
    """One line naming --modality-order: text first, then known detectors, each once."""
    known = (PRIME, *DETECTOR_NAMES)
    given = ",".join(order)
    unknown = [name for name in order if name not in known]
    if unknown:
        raise ValueError(
            f"--modality-order: unknown modality {unknown[0]!r} in {given!r}; the modalities are {', '.join(known)}"
        )
    repeated = sorted({name for name in order if order.count(name) > 1})
    if repeated:
        raise ValueError(f"--modality-order: {repeated[0]!r} appears more than once in {given!r}; name each once")
    if not order or order[0] != PRIME:
        raise ValueError(
            f"--modality-order: the first modality must be {PRIME} (the prime modality ITHP starts from), got {given!r}"
        )
    if len(order) < 2:
        raise ValueError(
            f"--modality-order: name at least one detector after {PRIME} ({', '.join(DETECTOR_NAMES)}), got {given!r}"
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
