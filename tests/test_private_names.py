"""A name with a leading underscore is private to its file: no other file of the package imports one
(a helper that two files share gets a public name in the file that owns it)."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE_FILES = sorted([*ROOT.glob("ithp_fast/**/*.py"), *ROOT.glob("reference/*.py")])


def private_imports(path: pathlib.Path) -> list[str]:
    """``module: name`` for each private name ``path`` imports from this package."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom):
            continue
        ours = node.level > 0 or (node.module or "").split(".")[0] == "ithp_fast"
        for alias in node.names:
            if ours and alias.name.startswith("_") and not alias.name.startswith("__"):
                found.append(f"{'.' * node.level}{node.module or ''}: {alias.name}")
    return found


def test_no_file_imports_another_files_private_name():
    assert PACKAGE_FILES
    offenders = {str(p.relative_to(ROOT)): names for p in PACKAGE_FILES if (names := private_imports(p))}
    assert not offenders, f"private names imported across files: {offenders}"
