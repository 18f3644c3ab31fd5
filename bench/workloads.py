"""The ITHP workloads the benchmarks share: config, inputs, models with the same weights.

Paper sizes: text 768 -> 256 -> B0 128 -> B1 64, acoustic 74 and visual 47 detectors, 50 tokens
(``ITHPConfig.for_dataset("mosi")``); tiny mode (``ITHP_BENCH_TINY=1``) uses narrow widths.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from scale import CHECK, DEVICE, TINY, TOKENS

from ithp_fast import ITHPConfig
from ithp_fast.reference import ITHP as ReferenceITHP

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def ithp_config() -> ITHPConfig:
    """The paper's MOSI config, or small odd widths in tiny mode; no dropout in check mode."""
    no_dropout = {"drop_prob": 0.0} if CHECK else {}
    if TINY:
        return ITHPConfig(X0_dim=24, X1_dim=7, X2_dim=5, inter_dim=16, B0_dim=8, B1_dim=6, **no_dropout)
    return ITHPConfig.for_dataset("mosi", **no_dropout)


def check_noise(cfg: ITHPConfig, batch: int, dtype: torch.dtype = torch.float32):
    """Check mode: the ``noise=(eps0, eps1)`` every provider's training step is given (so their
    results can be compared); None otherwise (each provider draws its own)."""
    if not CHECK:
        return None
    g = torch.Generator().manual_seed(batch + 1)
    return tuple(torch.randn(batch, TOKENS, width, generator=g).to(device=DEVICE, dtype=dtype)
                 for width in (cfg.B0_dim, cfg.B1_dim))


def ithp_inputs(cfg: ITHPConfig, batch: int, dtype: torch.dtype = torch.float32, *, grad: bool = False):
    """``(x, visual, acoustic)`` of ``[batch, TOKENS, width]`` on the bench device; detectors in [0, 1]."""
    g = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, TOKENS, cfg.X0_dim, generator=g)
    visual = torch.rand(batch, TOKENS, cfg.X2_dim, generator=g)
    acoustic = torch.rand(batch, TOKENS, cfg.X1_dim, generator=g)
    x, visual, acoustic = (t.to(device=DEVICE, dtype=dtype) for t in (x, visual, acoustic))
    return x.requires_grad_(grad), visual, acoustic


def eval_sampling() -> str:
    """The released ``"sample"``, or the posterior ``"mean"`` in check mode (comparable results)."""
    return "mean" if CHECK else "sample"


def ithp_pair(cfg: ITHPConfig, dtype: torch.dtype = torch.float32, *, train: bool = False):
    """A reference ITHP and an ``ithp_fast.ITHP`` holding the same weights, on the bench device."""
    import ithp_fast

    torch.manual_seed(0)
    reference = ReferenceITHP(cfg, eval_sampling=eval_sampling()).to(device=DEVICE, dtype=dtype)
    fast = ithp_fast.ITHP(cfg, eval_sampling=eval_sampling()).to(device=DEVICE, dtype=dtype)
    fast.load_state_dict(reference.state_dict(), strict=True)
    for m in (reference, fast):
        m.train(train)
    return reference, fast


def require(package: str) -> None:
    """Skip the benchmark, naming the package, where an optional package is not installed."""
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed (pip install 'ithp_fast[export]')")


def exported_file(model: torch.nn.Module, fmt: str, tokens: int) -> str:
    """``model`` written by ``ithp_fast.export`` (dynamic batch) for the provider ``fmt``
    (``"onnxruntime"``: an ONNX file; ``"aoti"``: an AOTInductor package) in a temporary folder.
    Skips the benchmark when the package is missing; the AOTInductor compile (tens of seconds)
    is left out of the tiny smoke run."""
    import os
    import tempfile

    if fmt == "onnxruntime":
        require("onnxruntime")
        require("onnxscript")
    elif TINY:
        pytest.skip("aoti: AOTInductor compiles C++ for tens of seconds; not in the tiny smoke run")
    import ithp_fast

    folder = tempfile.mkdtemp(prefix="ithp_fast-bench-")
    name = "model.onnx" if fmt == "onnxruntime" else "model.pt2"
    return ithp_fast.export(model, os.path.join(folder, name), format="onnx" if fmt == "onnxruntime" else "aoti",
                            tokens=tokens)[0]


def load_exported(path: str, fmt: str):
    """An exported program, loaded: an ONNX Runtime session's ``run`` (numpy feeds; ONNX Runtime's
    default options, torch's thread count) or the AOTInductor package's callable."""
    if fmt == "aoti":
        return torch._inductor.aoti_load_package(path)
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"]).run


def dtype_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()
