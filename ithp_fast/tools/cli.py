"""The ``ithp-fast`` command line: one sub-command per module, each registering its own arguments."""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import warnings
from typing import Optional, Sequence

# sub-command -> module exposing ``register(subparsers)``; each module adds its parser(s) and
# sets ``func`` (called with the parsed arguments, returns an exit code).
_COMMAND_MODULES = (
    "ithp_fast.tools.train_commands",  # train, evaluate
    "ithp_fast.tools.predict_command",  # predict
    "ithp_fast.tools.export_command",  # export
    "ithp_fast.tools.package_command",  # package
    "ithp_fast.tools.serve_command",  # serve
    "ithp_fast.tools.benchmarks",  # bench
    "ithp_fast.tools.profile",  # profile
)

MARKUP = re.compile(r":[a-z]+:`~?([^`]+)`|``([^`]+)``")
"""Sphinx roles (:func:`x`, :class:`~a.B`) and literals (``x``), as docstrings write them."""


def plain(text: Optional[str]) -> Optional[str]:
    """``text`` without Sphinx markup: ``:func:`ithp_fast.export``` and ````x```` read as the names."""
    if not text:
        return text
    return MARKUP.sub(lambda m: m.group(1) or m.group(2), text)


def plain_help(parser: argparse.ArgumentParser) -> None:
    """Strip the markup from a parser's description, epilog and argument help (modules reuse docstrings)."""
    parser.description, parser.epilog = plain(parser.description), plain(parser.epilog)
    for action in parser._actions:
        if action.help not in (None, argparse.SUPPRESS):
            action.help = plain(action.help)


LIGHT_COMMANDS = {"serve": "ithp_fast.tools.serve_command"}
"""Commands whose start matters (a server's restart) and that may not need torch: run without registering
the others, whose modules import torch (seconds) at import."""


def build_parser(modules: Sequence[str] = _COMMAND_MODULES) -> argparse.ArgumentParser:
    from ..version import __version__

    parser = argparse.ArgumentParser(
        prog="ithp-fast",
        description="ITHP-DeBERTa: train and evaluate, score texts, export, package and serve models, benchmarks and "
        "profiling. Each command's --help says more.",
    )
    parser.add_argument("--version", action="version", version=f"ithp-fast {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in modules:
        importlib.import_module(name).register(sub)
    for command in sub.choices.values():
        plain_help(command)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    given = sys.argv[1:] if argv is None else list(argv)
    light = LIGHT_COMMANDS.get(given[0]) if given else None
    args = build_parser((light,) if light else _COMMAND_MODULES).parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = one_line_warning(args.command)
        return int(args.func(args) or 0)


def one_line_warning(command: str):
    """ithp_fast's own warnings as one line on stderr, ``ithp-fast COMMAND: warning: ...`` (not Python's file and
    source line); other packages' warnings as Python shows them."""
    package, python_show = os.path.dirname(os.path.dirname(os.path.abspath(__file__))), warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if not os.path.abspath(filename).startswith(package + os.sep):
            return python_show(message, category, filename, lineno, file, line)
        print(f"ithp-fast {command}: warning: {message}", file=file or sys.stderr)

    return show


if __name__ == "__main__":
    sys.exit(main())
