"""The ``ithp-fast train`` and ``ithp-fast evaluate`` commands.

The flags of ``train`` are TrainConfig's fields, those of ``evaluate`` EvalConfig's, turned into arguments by
``transformers.HfArgumentParser``; ``--config FILE`` (JSON or YAML) gives any of train's, and flags on the
command line override the file.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses

from ..checks import OLD_IMPL
from ..data import DataFormatError
from ..training.config import TrainConfig
from ..training.eval_config import EvalConfig
from .errors import user_error

TRAIN_DESCRIPTION = """\
Train ITHP-DeBERTa for sentiment regression.

The defaults are the published recipe: AdamW, learning rate 1e-5, weight decay 0.01 except on
biases and LayerNorm weights, linear warm-up over 10 % of the steps then linear decay, batch 8,
30 epochs, 50 tokens, loss MSE + 2 / (p_beta + p_gamma) * IB_total and per-batch global min-max
normalisation of the acoustic and visual features. Every one of them is an option.

Settings come from --config FILE (JSON or YAML; keys are the flag names, with - or _), then from
the flags given here, which override the file. Every run writes train_config.json with every
setting resolved: --config runs/NAME/train_config.json --output-dir OTHER trains the same run again
(add --data PATH for a run on a pickle: a pickle named only in a config file is not read).

Without --data the built-in synthetic set is used (see ithp_fast/data/synthetic.py); without
--backbone a small randomly initialised DeBERTa-v2 is built (nothing is downloaded).

Multi-process: torchrun --nproc_per_node N -m ithp_fast train ... --batch-size is the global
batch, split evenly over the processes; the min-max bounds are reduced over them, so a sharded
batch is normalised like the whole batch; evaluation covers every example once; rank 0 alone
writes files.
"""

EVALUATE_DESCRIPTION = """\
Score a checkpoint on a split (test by default) under both metric conventions, as the training run did:
its data (the checkpoint's synthetic set, or --data), its tokenizer, and by default its eval_sampling (the
released evaluation draws the latent; --eval-sampling mean gives the posterior mean, what predict, export
and load_checkpoint use). Writes <split>-<eval_sampling>.json and <split>-<eval_sampling>-predictions.csv,
so a report of one mode never replaces one of the other. To score texts of your own, use predict.
"""

FIELD_DEFAULTS = {
    f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
    for f in dataclasses.fields(TrainConfig)
}

OLD_IMPL_HELP = "the old name of --backend: fast is auto, reference is reference"

# Errors that come from what the user gave (paths, files, options): one line, no traceback.
USER_ERRORS = (DataFormatError, FileNotFoundError, ValueError, KeyError)


def format_default(value) -> str:
    if isinstance(value, list):
        return " ".join(map(str, value))
    return str(value)


class PlainHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help in plain text: each flag once (``--max-seq-length``, not also ``--max_seq_length``), each default
    once (none for a default of None, which the help line explains)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        # train's settings default to "not given" (a --config file may give them): the help shows TrainConfig's
        default = FIELD_DEFAULTS.get(action.dest) if action.default is argparse.SUPPRESS else action.default
        if default in (None, argparse.SUPPRESS) or isinstance(action, argparse._StoreFalseAction) or "Default:" in text:
            return text
        return f"{text} (default: {format_default(default)})"

    def _format_action_invocation(self, action: argparse.Action) -> str:
        hyphenated = [o for o in action.option_strings if "_" not in o]
        if hyphenated and len(hyphenated) < len(action.option_strings):
            action = copy.copy(action)
            action.option_strings = hyphenated
        return super()._format_action_invocation(action)


def dataclass_arguments(settings: type) -> argparse.ArgumentParser:
    """The fields of the dataclass ``settings`` as arguments (HfArgumentParser), each flag's hyphenated spelling
    first (``--max-seq-length``; usage shows it, and the help only it)."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(settings, add_help=False)
    for action in parser._actions:
        action.option_strings.sort(key=lambda option: "_" in option)
    return parser


def config_arguments() -> argparse.ArgumentParser:
    """TrainConfig's fields as arguments, each defaulting to "not given" so that only flags on the command line
    override a --config file."""
    parser = dataclass_arguments(TrainConfig)
    for action in parser._actions:
        if isinstance(action, argparse._StoreFalseAction):
            action.help = argparse.SUPPRESS  # --no-NAME is named in the help of --NAME
        elif FIELD_DEFAULTS.get(action.dest) is True:
            action.help += f" (--no-{action.dest.replace('_', '-')} turns it off)"
        if isinstance(FIELD_DEFAULTS.get(action.dest), bool):
            action.metavar = "yes|no"
        if action.dest in FIELD_DEFAULTS:
            action.default = argparse.SUPPRESS
    return parser


def train_command(args: argparse.Namespace) -> int:
    from ..training import api, loop

    given = {k: v for k, v in vars(args).items() if k in FIELD_DEFAULTS or k == "impl"}  # impl: old --backend
    try:
        api.train(args.config, **given)
    except USER_ERRORS as exc:
        user_error("train", exc)
        return 2
    except loop.NonFiniteLossError as exc:
        user_error("train", exc)
        return 1
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    from ..training import api

    try:
        old_names = {"impl": args.impl} if "impl" in vars(args) else {}  # impl: the old --backend
        api.evaluate(**{f.name: getattr(args, f.name) for f in dataclasses.fields(EvalConfig)}, **old_names)
    except USER_ERRORS as exc:
        user_error("evaluate", exc)
        return 2
    return 0


def register(sub) -> None:
    """Add ``train`` and ``evaluate`` to the ``ithp-fast`` command line."""
    p = sub.add_parser(
        "train",
        help="train ITHP-DeBERTa (published recipe by default)",
        description=TRAIN_DESCRIPTION,
        parents=[config_arguments()],
        formatter_class=PlainHelpFormatter,
    )
    p.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="JSON or YAML file of settings (keys: flag names); flags given here override it",
    )
    p.add_argument("--impl", choices=tuple(OLD_IMPL), default=argparse.SUPPRESS, help=OLD_IMPL_HELP)
    p.set_defaults(func=train_command)

    e = sub.add_parser(
        "evaluate",
        help="score a checkpoint on a split under both metric conventions",
        description=EVALUATE_DESCRIPTION,
        parents=[dataclass_arguments(EvalConfig)],
        formatter_class=PlainHelpFormatter,
    )
    e.add_argument("--impl", choices=tuple(OLD_IMPL), default=argparse.SUPPRESS, help=OLD_IMPL_HELP)
    e.set_defaults(func=evaluate_command)
