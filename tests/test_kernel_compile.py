"""The fused kernels compile for a real GPU target (sm_90), checked without a GPU."""

import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch


def _ptxas_available() -> bool:
    try:
        from triton.backends.nvidia import compiler  # noqa: F401
    except Exception:
        return False
    return any((pathlib.Path(compiler.__file__).parent / "bin" / name).exists() for name in ("ptxas",)) or bool(
        shutil.which("ptxas"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the other tests compile the kernels for real")
@pytest.mark.skipif(not _ptxas_available(), reason="needs Triton's NVIDIA backend (ptxas)")
def test_kernels_compile_for_sm90(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    here = pathlib.Path(__file__).parent
    run = subprocess.run([sys.executable, str(here / "kernel_targets.py")], env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
