"""The import names: reference/ installs as ithp_fast.reference, the fused ops live in ithp_fast/kernels/ (a
top-level ``kernels`` would shadow Hugging Face's ``kernels``, which transformers imports), the sub-packages
are attributes of a bare ``import ithp_fast``, and a Python started in the checkout's root builds an
ITHP-DeBERTa with Hugging Face's ``kernels`` installed."""

import importlib.util
import os
import pathlib
import subprocess
import sys
import textwrap
import zipfile

import pytest

import ithp_fast

ROOT = pathlib.Path(__file__).resolve().parents[1]
SUBPACKAGES = ["data", "kernels", "reference", "serving", "tools", "training"]
HEAVY = ("triton", "torch._inductor", "onnx", "onnxruntime", "matplotlib", "tensorboard")


def python_in_root(code: str) -> str:
    """Run ``code`` with ``python -c`` in the checkout's root (the root first on sys.path, as for any user there)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_reference_imports_from_its_folder():
    assert pathlib.Path(ithp_fast.reference.__file__).parent == ROOT / "reference"
    assert pathlib.Path(ithp_fast.kernels.__file__).parent == ROOT / "ithp_fast" / "kernels"


def test_no_top_level_name_shadows_an_installed_package():
    """Every folder at the root that Python could import as a regular package is named for this project only."""
    for folder in ROOT.iterdir():
        if (folder / "__init__.py").exists() and folder.name not in ("ithp_fast", "reference"):
            pytest.fail(f"{folder.name}/ is a regular package at the root and shadows any installed {folder.name!r}")


@pytest.mark.skipif(importlib.util.find_spec("kernels") is None, reason="Hugging Face's kernels is not installed")
def test_deberta_builds_from_the_root_with_huggingface_kernels():
    out = python_in_root("""
        import kernels, torch
        from transformers import DebertaV2Config
        import ithp_fast
        backbone = DebertaV2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                                   vocab_size=50, max_position_embeddings=16)
        cfg = ithp_fast.ITHPConfig(X0_dim=32, X1_dim=7, X2_dim=5, inter_dim=16, B0_dim=8, B1_dim=6)
        model = ithp_fast.ITHPDeberta(backbone, cfg).eval()
        ids = torch.randint(1, 50, (2, 6))
        out = model(ids, torch.rand(2, 6, 5), torch.rand(2, 6, 7), torch.ones_like(ids))
        print(kernels.__file__)
        print(tuple(out.logits.shape))
    """)
    kernels_file, shape = out.splitlines()
    assert not pathlib.Path(kernels_file).is_relative_to(ROOT / "ithp_fast"), kernels_file
    assert shape == "(2, 1)"


def test_subpackages_are_lazy_attributes_listed_by_dir():
    out = python_in_root(f"""
        import sys, ithp_fast
        names = {SUBPACKAGES!r}
        assert set(names) <= set(dir(ithp_fast)), dir(ithp_fast)
        print(sorted(n for n in names if f"ithp_fast.{{n}}" in sys.modules))
        ithp_fast.reference.ITHP, ithp_fast.serving.ServingEncoder, ithp_fast.kernels.sm_count
        ithp_fast.training.__name__, ithp_fast.data.SentimentData, ithp_fast.tools.__name__
        print(sorted(m for m in {HEAVY!r} if m in sys.modules))
    """)
    loaded_at_import, heavy = out.splitlines()
    assert loaded_at_import == "[]"
    assert heavy == "[]"


def test_wheel_holds_the_subpackages(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path)],
        check=True,
    )
    (wheel,) = tmp_path.glob("ithp_fast-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ["ithp_fast/__init__.py", "ithp_fast/kernels/__init__.py", "ithp_fast/kernels/tcmax.py",
                   "ithp_fast/reference/ithp.py", "ithp_fast/reference/deberta.py"]:
        assert module in names, module
    assert not any(n.startswith(("kernels/", "reference/", "tests/", "bench/")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "ithp-fast = ithp_fast.tools.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
