"""Every package the tests install states its lowest working release in pyproject.toml.

The floors command (docs/development.md) resolves each direct requirement to its lower bound: a requirement without
one would resolve to the package's first release ever instead of one the tests passed with.
"""

import pathlib

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = pathlib.Path(__file__).resolve().parents[1]
INSTALLED_BY_THE_FLOORS_COMMAND = ("export", "docs", "dev")


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in INSTALLED_BY_THE_FLOORS_COMMAND:
        lines += project["optional-dependencies"][extra]
    return [Requirement(line) for line in lines]


def _floor(requirement: Requirement) -> str | None:
    return next((s.version for s in requirement.specifier if s.operator == ">="), None)


def test_every_requirement_has_a_lower_bound():
    requirements = _requirements()
    # a requirement may lean on another line naming the same package (transformers[kernels] in dev)
    floored = {r.name for r in requirements if _floor(r) is not None}
    missing = sorted({r.name for r in requirements} - floored)
    assert not missing, f"pyproject.toml: no lower bound (>=) for {missing}"


def test_the_same_package_has_one_floor():
    floors: dict[str, set[str]] = {}
    for r in _requirements():
        if _floor(r) is not None:
            floors.setdefault(r.name, set()).add(_floor(r))
    assert {name: f for name, f in floors.items() if len(f) > 1} == {}
