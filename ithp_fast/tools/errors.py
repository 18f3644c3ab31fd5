"""User errors on the command line: one line on standard error naming the problem, exit code 2."""

from __future__ import annotations

import functools
import sys
from typing import Callable


class CommandError(ValueError):
    """A mistake in what the user gave (an option, a file, a text)."""


USER_ERRORS = (ValueError, TypeError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
"""What a command reports in one line (no traceback) with exit code 2."""


def user_error(command: str, message: str, *, kind: str = "error") -> None:
    """``ithp-fast COMMAND: KIND: MESSAGE`` on standard error, on one line."""
    print(f"ithp-fast {command}: {kind}: {' '.join(str(message).split())}", file=sys.stderr)


def one_line_errors(command: str) -> Callable:
    """A command function whose user errors become one line and exit code 2."""

    def wrap(run: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(run)
        def guarded(*args, **kwargs) -> int:
            try:
                return run(*args, **kwargs)
            except USER_ERRORS as err:
                user_error(command, err)
                return 2

        return guarded

    return wrap
