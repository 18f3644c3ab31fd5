"""``ithp-fast profile``: a short, fixed ITHP workload to profile with Nsight or torch.profiler.

It runs a few warm-up steps at the paper's sizes, then ``--steps`` steps each inside an NVTX
range named after the workload (``train_step``, ``eval_forward`` or ``encode``; a training step
holds ``forward`` and ``backward``), with the model's own stage ranges (:mod:`ithp_fast.nvtx`)
nested inside. Under Nsight (``ncu`` / ``nsys``, detected through the CUDA injection they use, or
``--profiler nsight``) only the measured steps lie between ``cudaProfilerStart`` and
``cudaProfilerStop``. Elsewhere (``--profiler torch``, the default without Nsight, also on a CPU)
``torch.profiler`` records the steps, prints the busiest kernels / ops with their launch counts
and writes a Chrome trace (open it in ``chrome://tracing`` or https://ui.perfetto.dev).

:func:`saved_for_backward` counts the bytes autograd keeps for a backward (the benchmarks'
memory column and the saved-memory tests use it).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable, Optional, Sequence

import torch

from ..nvtx import enable_nvtx, profiler_spans, stage, under_nsight

WORKLOAD_RANGES = {"train": "train_step", "forward": "eval_forward", "encode": "encode"}
"""The NVTX range around each measured step, per workload (what ``ncu --nvtx-include`` selects)."""


def build_workload(
    workload: str, *, batch: int, tokens: int, device: str, dtype: torch.dtype, backend: Optional[str]
) -> Callable[[], object]:
    """One step of ``workload`` on ``ithp_fast.ITHP`` at the paper's MOSI sizes."""
    from ..config import ITHPConfig
    from ..model import ITHP

    cfg = ITHPConfig.for_dataset("mosi")
    torch.manual_seed(0)
    model = ITHP(cfg, backend=backend).to(device=device, dtype=dtype)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, tokens, cfg.X0_dim, generator=g).to(device=device, dtype=dtype)
    visual = torch.rand(batch, tokens, cfg.X2_dim, generator=g).to(device=device, dtype=dtype)
    acoustic = torch.rand(batch, tokens, cfg.X1_dim, generator=g).to(device=device, dtype=dtype)
    name = WORKLOAD_RANGES[workload]
    model.train(workload == "train")

    if workload == "train":

        def step():
            # The backward's kernels are launched from autograd's device thread: Nsight sees them
            # inside these ranges with a process-wide NVTX stack (ncu --nvtx-push-pop-scope process).
            with stage(name):
                with stage("forward"):
                    loss = model(x, visual, acoustic)[1]
                with stage("backward"):
                    loss.backward()

    elif workload == "forward":

        @torch.no_grad()
        def step():
            with stage(name):
                return model(x, visual, acoustic)

    else:

        @torch.no_grad()
        def step():
            with stage(name):
                return model.encode(x)

    return step


def saved_for_backward(fn: Callable[[], object], params: Sequence[torch.Tensor] = ()) -> tuple[int, int]:
    """Bytes autograd keeps for the backward while ``fn()`` runs: ``(all, all but params)``.

    Counted with ``torch.autograd.graph.saved_tensors_hooks`` over unique storages (a tensor that
    two nodes save counts once); ``params`` (e.g. ``model.parameters()``) are what the second
    number leaves out.
    """
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    kept = {p.untyped_storage().data_ptr() for p in params}
    total = sum(storages.values())
    return total, total - sum(n for ptr, n in storages.items() if ptr in kept)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _launch_counts(prof, steps: int, device: str) -> str:
    """Kernels (CUDA) or operators (CPU) per step, from the profiler's events."""
    events = prof.events()
    if device == "cuda":
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        launch_calls = ("cudaLaunchKernel", "cuLaunchKernel", "cuLaunchKernelEx", "cudaLaunchKernelExC")
        launches = [e for e in events if e.name in launch_calls]
        graphs = [e for e in events if e.name == "cudaGraphLaunch"]
        return (
            f"per step: {len(kernels) / steps:.1f} GPU kernels executed, {len(launches) / steps:.1f} kernel launches "
            f"and {len(graphs) / steps:.1f} CUDA-graph launches from the host"
        )
    def outermost(e) -> bool:
        return e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")

    ops = [e for e in events if e.name.startswith("aten::") and outermost(e)]
    return f"per step: {len(ops) / steps:.1f} aten operators called (outermost, not counting the ones they call)"


def run_profile(args: argparse.Namespace) -> int:
    """``ithp-fast profile``: warm up, then profile ``--steps`` steps of the workload."""
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("ithp-fast profile: --device cuda, but no CUDA device is available")
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    profiler = args.profiler
    if profiler == "auto":
        profiler = "nsight" if device == "cuda" and under_nsight() else "torch"
    if profiler == "nsight" and device != "cuda":
        raise SystemExit("ithp-fast profile: --profiler nsight needs a CUDA device")
    if not args.no_nvtx:
        enable_nvtx(True)
    step = build_workload(
        args.workload, batch=args.batch_size, tokens=args.tokens, device=device, dtype=dtype, backend=args.backend
    )
    for _ in range(args.warmup):
        step()
    _sync(device)
    label = f"{args.workload} B={args.batch_size}x{args.tokens} {args.dtype} on {device}"

    if profiler == "nsight":
        torch.cuda.profiler.start()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        torch.cuda.profiler.stop()
        print(f"profiled {args.steps} steps of {label} under Nsight: {elapsed / args.steps * 1e6:.1f} us/step wall")
        print(f"NVTX range of each step: {WORKLOAD_RANGES[args.workload]!r}")
        return 0

    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profiler_spans(), profile(activities=activities) as prof:
        for _ in range(args.steps):
            step()
        _sync(device)
    trace = args.trace or f"ithp-profile-{args.workload}-{device}.json"
    prof.export_chrome_trace(trace)
    sort_by = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort_by, row_limit=args.rows))
    print(f"profiled {args.steps} steps of {label} with torch.profiler")
    print(_launch_counts(prof, args.steps, device))
    print(f"Chrome trace: {trace} (chrome://tracing or ui.perfetto.dev)")
    return 0


NSIGHT_HELP = """\
Nsight (CUDA): only the measured steps lie between cudaProfilerStart and cudaProfilerStop, e.g.
  ncu --profile-from-start off --set full -o ithp-train \\
      ithp-fast profile --profiler nsight --workload train --steps 1
  ncu --profile-from-start off --nvtx --nvtx-push-pop-scope process --nvtx-include "train_step/backward/" \\
      --set full -o ithp-backward ithp-fast profile --profiler nsight --workload train --steps 1
  nsys profile --trace=cuda,nvtx --capture-range=cudaProfilerApi --capture-range-end=stop \\
      -o ithp-train ithp-fast profile --profiler nsight --workload train --steps 20
"""


def register(sub) -> None:
    """Add ``profile`` to the ``ithp-fast`` command line."""
    p = sub.add_parser(
        "profile",
        help="run a short ITHP workload for Nsight (ncu / nsys) or torch.profiler",
        description=__doc__,
        epilog=NSIGHT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=run_profile)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workload", choices=sorted(WORKLOAD_RANGES), default="train",
                   help="what one step does (default: train)")
    p.add_argument("--batch-size", "--batch", type=int, default=32, help="examples per step (default: 32)")
    p.add_argument("--tokens", type=int, default=50, help="tokens per example (default: 50)")
    p.add_argument("--steps", type=int, default=5, help="profiled steps (default: 5)")
    p.add_argument("--warmup", type=int, default=3, help="unprofiled warm-up steps first (default: 3)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--backend", choices=("triton", "torch", "reference"), default=None,
                   help="fast-path backend (default: per device)")
    p.add_argument(
        "--profiler",
        choices=("auto", "nsight", "torch"),
        default="auto",
        help="nsight: only mark the steps (cudaProfilerStart/Stop + NVTX) for ncu / nsys; torch: torch.profiler "
        "and a Chrome trace; auto: nsight when running under ncu / nsys, else torch",
    )
    p.add_argument("--trace", help="Chrome trace path (torch profiler; default ithp-profile-<workload>-<device>.json)")
    p.add_argument("--rows", type=int, default=15, help="rows of the torch.profiler table (default: 15)")
    p.add_argument("--no-nvtx", action="store_true", help="leave the NVTX ranges off")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m ithp_fast.tools.profile`` / ``python bench/profile_workload.py``: as ``ithp-fast profile``."""
    parser = argparse.ArgumentParser(
        prog="profile", description=__doc__, epilog=NSIGHT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser)
    return run_profile(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
