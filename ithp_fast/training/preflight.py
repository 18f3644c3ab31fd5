"""What a training run checks before it writes anything (that ``--output-dir`` can hold the run and
``results.csv`` its row), and what it removes when it fails before any seed wrote a file: a run
that never started leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import tempfile

from .logs import results_table


def check_output_dir(output_dir: str) -> None:
    """One line naming ``--output-dir`` when the run could not be written there: a file in its place or
    above it, a directory where no file can be created (read-only), or something other than a file where
    ``results.csv`` goes."""
    if not output_dir:
        raise ValueError("--output-dir: expected a directory, got ''")
    path = os.path.abspath(output_dir)
    existing = path
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        where = "is a file" if existing == path else f"lies under {existing}, which is a file"
        raise ValueError(f"--output-dir: {output_dir} {where}; expected a directory")
    check_writable(existing, "")
    table = results_table(output_dir)
    if existing == path:
        check_writable(os.path.dirname(path), f"{os.path.basename(table)} goes in its parent: ")
    if os.path.lexists(table) and not os.path.isfile(table):
        raise ValueError(f"--output-dir: {table}, where the run's row goes, is not a file")


def check_writable(directory: str, why: str) -> None:
    """Create (and at once remove) a file in ``directory``: the one test of writability that also holds
    for read-only file systems, access control lists and the super-user."""
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise ValueError(
            f"--output-dir: {why}no file can be created in {directory} ({exc.strerror or type(exc).__name__})"
        ) from None


def undo_unstarted(seed_dirs: list[str], created: list[str]) -> None:
    """After a failure: when no seed directory holds a file, remove the (empty) seed directories and what the run
    created before them (``created``, outermost first: the directories of --output-dir that were new, its
    train_config.json; a directory only if it is empty). A seed that wrote anything keeps everything."""
    if any(files for d in seed_dirs for _, _, files in os.walk(d)):
        return
    for d in seed_dirs:
        if os.path.isdir(d):
            shutil.rmtree(d)
    for path in reversed(created):
        if os.path.isfile(path):
            os.remove(path)
        elif os.path.isdir(path) and not os.listdir(path):
            os.rmdir(path)


def new_paths(path: str) -> list[str]:
    """``path`` and those of its parents that do not exist yet, outermost first (what ``os.makedirs`` would create)."""
    missing = []
    while not os.path.lexists(path):
        missing.insert(0, path)
        path = os.path.dirname(path)
    return missing
