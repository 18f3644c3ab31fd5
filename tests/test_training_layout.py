"""The training package's imports point one way: no circle, and the results of a run are assembled from the
scores the loop hands over (results.py runs no model and scores nothing itself)."""

import ast
from pathlib import Path

import ithp_fast.training

PACKAGE = Path(ithp_fast.training.__file__).parent


def sibling_imports(path: Path) -> set[str]:
    """The modules of the training package that ``path`` imports (``from .x import ...``, ``from . import x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found.update([node.module] if node.module else [alias.name for alias in node.names])
    return {name.split(".")[0] for name in found}


def test_no_module_of_training_imports_one_that_imports_it():
    graph = {p.stem: sibling_imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}

    def reaches(start: str, goal: str, seen: set) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph.get(start, ()))

    assert [m for m in graph if reaches(m, m, set())] == []


def test_results_take_scores_from_the_loop():
    assert sibling_imports(PACKAGE / "results.py").isdisjoint({"evaluate", "batches", "build", "load", "loop"})
    assert "results" not in sibling_imports(PACKAGE / "evaluate.py")
