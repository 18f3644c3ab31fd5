"""A griffe extension for the API reference: ``reference/`` is documented as ``ithp_fast.reference``.

pyproject.toml installs the folder ``reference/`` as the sub-package ``ithp_fast.reference``
(``package-dir``); griffe reads source files without installing them, so it finds ``ithp_fast/`` alone.
This extension reads ``reference/`` into ``ithp_fast`` as its ``reference`` member when griffe loads the
package, so the reference classes render, and are cross-referenced, under the name users import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import griffe

REFERENCE = Path(__file__).resolve().parents[1] / "reference"


def read_module(name: str, path: Path, parent: griffe.Module, loader: griffe.GriffeLoader) -> griffe.Module:
    module = griffe.visit(name, path, path.read_text(encoding="utf-8"), parent=parent,
                          extensions=loader.extensions, docstring_parser=loader.docstring_parser,
                          docstring_options=loader.docstring_options, lines_collection=loader.lines_collection,
                          modules_collection=loader.modules_collection)
    parent.set_member(name, module)
    return module


class InstalledReference(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.name != "ithp_fast":
            return
        package = read_module("reference", REFERENCE / "__init__.py", pkg, loader)
        for path in sorted(REFERENCE.glob("*.py")):
            if path.name != "__init__.py":
                read_module(path.stem, path, package, loader)
