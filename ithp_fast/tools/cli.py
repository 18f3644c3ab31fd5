"""The ``ithp-fast`` command line: one sub-command per module, each registering its own arguments."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

# sub-command -> module exposing ``register(subparsers)``; each module adds its parser(s) and
# sets ``func`` (called with the parsed arguments, returns an exit code).
_COMMAND_MODULES = (
    "ithp_fast.tools.train_commands",  # train, evaluate
    "ithp_fast.tools.predict_command",  # predict
    "ithp_fast.tools.package_command",  # package
    "ithp_fast.tools.benchmarks",      # bench
    "ithp_fast.tools.profile",         # profile
    "ithp_fast.tools.export_command",  # export
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ithp-fast", description="ITHP-DeBERTa training and evaluation, export, benchmarks and profiling."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
