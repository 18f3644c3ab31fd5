"""EvalConfig: the settings of scoring a checkpoint.

Each field is a flag of ``ithp-fast evaluate`` (made by ``transformers.HfArgumentParser``, as TrainConfig's
fields are the flags of ``ithp-fast train``) and a keyword of ``ithp_fast.evaluate``: a new evaluate option
is one field here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from .config import known_settings, setting
from .metrics import CONVENTIONS

SPLITS = ("train", "valid", "test")


@dataclass
class EvalConfig:
    """How to score a checkpoint; each field is a flag of ``ithp-fast evaluate`` (``batch_size`` is
    ``--batch-size``) and a keyword of ``ithp_fast.evaluate``."""

    checkpoint: str = field(
        metadata={"help": "a checkpoint directory written by ithp-fast train (runs/NAME/seed-N/checkpoint-last)"}
    )
    data: Optional[str] = setting(
        None,
        "the pickle to score on (needed when the checkpoint was not trained on the synthetic set; unpickling runs "
        "code stored in the file: pass only files you trust). Default: the checkpoint's synthetic set",
    )
    split: Literal["train", "valid", "test"] = setting("test", "the split to score")
    protocol: Literal["authors", "mmsa"] = setting("authors", "convention of the printed headline (both are written)")
    batch_size: Optional[int] = setting(None, "evaluation batch. Default: the training run's")
    backend: Optional[Literal["auto", "triton", "torch", "reference"]] = setting(
        None,
        "what computes ITHP: auto, triton, torch or reference (the plain-PyTorch spec); --impl fast|reference is "
        "its old name. Default: the training run's",
    )
    eval_sampling: Optional[Literal["mean", "sample"]] = setting(
        None,
        "latent in evaluation: mean (b = mu, the same answer every time) or sample (drawn, as the released "
        "evaluation). Default: the training run's",
    )
    drop_detectors: list[str] = field(
        default_factory=list,
        metadata={
            "help": "remove these detectors (acoustic, visual; comma- or space-separated) from every example: their "
            "levels' reconstruction terms become 0 and <split>-<eval_sampling>-without-NAME.json is written. The "
            "predictions do not change: ITHP predicts from the text alone. Default: none",
            "metavar": "NAME",
        },
    )
    device: str = setting("auto", "auto, cpu, cuda or cuda:N")
    output_dir: Optional[str] = setting(
        None,
        "where <split>-<eval_sampling>.json and its predictions CSV are written. Default: eval-<checkpoint name> "
        "beside the checkpoint",
    )

    def validate(self) -> None:
        """One line naming the flag for a split, protocol or batch size out of range (the checkpoint, the data,
        the implementation and the detectors are checked when they are read)."""
        if self.split not in SPLITS:
            raise ValueError(f"--split: expected train, valid or test, got {self.split!r}")
        if self.protocol not in CONVENTIONS:
            raise ValueError(f"--protocol: expected one of {CONVENTIONS}, got {self.protocol!r}")
        size = self.batch_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"--batch-size: expected a positive number of examples, got {size}")


def make_eval_config(checkpoint: str, **settings: Any) -> EvalConfig:
    """The EvalConfig of ``checkpoint`` with ``settings`` (EvalConfig's fields as keywords), through
    HfArgumentParser; a setting it does not know is one line naming it."""
    from transformers import HfArgumentParser

    settings = known_settings(settings, EvalConfig, "evaluate", "evaluate")  # impl: the old name of backend
    (cfg,) = HfArgumentParser(EvalConfig).parse_dict({"checkpoint": checkpoint, **settings})
    return cfg
