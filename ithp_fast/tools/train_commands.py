"""The ``ithp-fast train`` and ``ithp-fast evaluate`` commands."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from ..data import DataFormatError
from ..training import loop
from ..training.config import IMPLS, TrainConfig
from ..training.evaluate import evaluate_checkpoint
from ..training.metrics import CONVENTIONS

TRAIN_DESCRIPTION = """\
Train ITHP-DeBERTa for sentiment regression.

The defaults are the published recipe: AdamW, learning rate 1e-5, weight decay 0.01 except on
biases and LayerNorm weights, linear warm-up over 10 % of the steps then linear decay, batch 8,
30 epochs, 50 tokens, loss MSE + 2 / (p_beta + p_gamma) * IB_total and per-batch global min-max
normalisation of the acoustic and visual features. Every one of them is an option.

Without --data the built-in synthetic set is used (see ithp_fast/data/synthetic.py); without
--backbone a small randomly initialised DeBERTa-v2 is built (nothing is downloaded).

Multi-process: torchrun --nproc_per_node N -m ithp_fast train ... (or the ithp-fast script).
--batch-size is the global batch, split evenly over the ranks; the min-max bounds are reduced
over the ranks so a sharded batch is normalised like the whole batch; evaluation predictions are
gathered so metrics are those of the whole split; rank 0 alone writes files.
"""

def add_config_arguments(p: argparse.ArgumentParser) -> None:
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


def train_command(args: argparse.Namespace) -> int:
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    cfg.synthetic_sizes, cfg.seeds = tuple(cfg.synthetic_sizes), tuple(cfg.seeds)
    try:
        loop.train(cfg)
    except USER_ERRORS as exc:
        print(f"ithp-fast train: error: {exc}", file=sys.stderr)
        return 2
    except loop.NonFiniteLossError as exc:
        print(f"ithp-fast train: error: {exc}", file=sys.stderr)
        return 1
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    try:
        evaluate_checkpoint(args.checkpoint, args.data, split=args.split, protocol=args.protocol, batch_size=args.batch_size,
                            impl=args.impl, device=args.device, output_dir=args.output_dir,
                            eval_sampling=args.eval_sampling)
    except USER_ERRORS as exc:
        print(f"ithp-fast evaluate: error: {exc}", file=sys.stderr)
        return 2
    return 0


def register(sub) -> None:
    """Add ``train`` and ``evaluate`` to the ``ithp-fast`` command line."""
    p = sub.add_parser(
        "train",
        help="train ITHP-DeBERTa (published recipe by default)",
        description=TRAIN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(p)
    p.set_defaults(func=train_command)

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
    e.add_argument("--eval-sampling", default=None, choices=("mean", "sample"),
                   help="latent in evaluation: mean (b = mu, the same answer every time) or sample (as the released "
                        "evaluation); default: the training run's")
    e.add_argument("--output-dir", default=None, help="where <split>.json and <split>-predictions.csv are written "
                                                      "(default: eval-<checkpoint name> beside the checkpoint)")
    e.set_defaults(func=evaluate_command)
