"""kernels/ and reference/ install as ithp_fast.kernels and ithp_fast.reference, editable or not."""

import pathlib
import subprocess
import sys
import zipfile

import ithp_fast.kernels
import ithp_fast.reference

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_mapped_subpackages_import_from_their_folders():
    assert pathlib.Path(ithp_fast.kernels.__file__).parent.name == "kernels"
    assert pathlib.Path(ithp_fast.reference.__file__).parent.name == "reference"


def test_wheel_holds_the_mapped_subpackages(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path)],
        check=True,
    )
    (wheel,) = tmp_path.glob("ithp_fast-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ["ithp_fast/__init__.py", "ithp_fast/kernels/__init__.py", "ithp_fast/reference/ithp.py",
                   "ithp_fast/reference/deberta.py"]:
        assert module in names, module
    assert not any(n.startswith(("kernels/", "reference/", "tests/", "bench/")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "ithp-fast = ithp_fast.tools.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
