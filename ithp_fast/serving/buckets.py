"""Shape buckets for the serving wrappers: static buffers, warm-up, torch.compile, CUDA graphs.

A wrapper prepares one *bucket* per configured shape at construction (the warm-up): static
input and output buffers and, on CUDA, a CUDA graph captured over the eager fast path or over a
``torch.compile``-d version of it. A request is copied into the smallest bucket that holds it
(padded), the bucket runs (a graph replay, or a call) and the result is sliced back. Nothing
compiles or captures after the warm-up.

Shared by ``ServingEncoder`` and ``ServingDeberta`` (and the serving measurements): the
:class:`Bucket` and its :class:`BucketRunner`, the argument checks :func:`check_batch_sizes`,
:func:`require_eval`, :func:`model_device_dtype`, :func:`runtime_choice`, the routing rule :func:`bucketed`,
:func:`weights_version` and :func:`median_seconds`.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from typing import Callable, Optional, Sequence, Union

import torch
from torch import nn

from ..checks import AUTO, RUNTIME_CHOICES, check_choice
from .graphs import capture_graph

DEFAULT_BATCH_SIZES = (1, 8, 32, 128)
"""Batch sizes of the default buckets (each times ``tokens`` rows for the encoder)."""
DEFAULT_TOKENS = 50
"""Tokens per example in the default buckets (the paper's ``max_sen_len``)."""
WARMUP_CALLS = 3
"""Eager calls per bucket before a capture (lazy initialisation, compilation, library handles)."""
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
AUTO_CANDIDATES = {"cuda": (None, "max-autotune-no-cudagraphs", "reduce-overhead"), "cpu": (None, "default")}
"""What ``compile_mode="auto"`` times per bucket (None: the eager fast path, graph-captured on CUDA)."""
AUTO_TIMING_CALLS = 20


def median_seconds(run: Callable[[], object], device: torch.device, calls: int = AUTO_TIMING_CALLS) -> float:
    """Median wall time of ``run()``; on CUDA measured with events around each call."""
    times = []
    for _ in range(calls):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


class Bucket:
    """Static inputs and output of one shape, and how to run it (graph replay or call).

    ``lock``: held by a caller from filling the inputs to taking its result out, so that two
    threads never share the buffers.
    """

    def __init__(self, inputs: tuple[torch.Tensor, ...], output: Optional[torch.Tensor],
                 run: Callable[[], torch.Tensor], mode: Optional[str],
                 graph: Optional["torch.cuda.CUDAGraph"] = None) -> None:
        self.inputs, self.output, self.run, self.mode, self.graph = inputs, output, run, mode, graph
        self.lock = threading.Lock()


class BucketRunner:
    """Warm-up, optional torch.compile, CUDA-graph capture and replay for a set of shapes."""

    def __init__(self, device: torch.device, compile_mode: Optional[str], cuda_graphs: Optional[bool],
                 clone_output: bool) -> None:
        if compile_mode is not None and compile_mode != "auto" and compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode: expected None, 'auto' or one of {COMPILE_MODES}, got {compile_mode!r}")
        if cuda_graphs and device.type != "cuda":
            raise ValueError(f"cuda_graphs: True needs a CUDA model, this one is on {device}")
        self.device = device
        self.compile_mode = compile_mode
        self.cuda_graphs = device.type == "cuda" if cuda_graphs is None else bool(cuda_graphs)
        self.clone_output = clone_output
        self.chosen_modes: dict = {}
        """Bucket key -> compile mode kept (None: eager), after ``compile_mode="auto"`` timed them."""
        self.candidate_seconds: dict = {}
        """Bucket key -> {compile mode: seconds per call}, as ``compile_mode="auto"`` measured."""
        self._stream = torch.cuda.Stream(device) if self.cuda_graphs else None

    @staticmethod
    def _callable(fn: Callable, mode: Optional[str]) -> Callable:
        # One compiled callable per bucket, static shapes: every bucket compiles once, at warm-up.
        return fn if mode is None else torch.compile(fn, mode=mode, dynamic=False)

    def _prepare(self, call: Callable, inputs: tuple, mode: Optional[str]) -> Bucket:
        graphed = self.cuda_graphs and mode != "reduce-overhead"  # reduce-overhead brings its own graphs
        if not graphed:
            # No warm-up output is kept: under "reduce-overhead" it lives in torch.compile's own
            # graph pool, which refuses live tensors it does not track.
            for _ in range(WARMUP_CALLS):
                call(*inputs)
            return Bucket(inputs, None, lambda: call(*inputs), mode)
        graph, output = capture_graph(lambda: call(*inputs), warmup=WARMUP_CALLS, stream=self._stream)

        def replay() -> torch.Tensor:
            graph.replay()
            return output

        return Bucket(inputs, output, replay, mode, graph)

    def build(self, key, fn: Callable, inputs: tuple) -> Bucket:
        """Prepare the bucket ``key`` for ``fn(*inputs)``; with ``"auto"``, time the candidates, keep the fastest."""
        if self.compile_mode != "auto":
            return self._prepare(self._callable(fn, self.compile_mode), inputs, self.compile_mode)
        best, best_time = None, math.inf
        for mode in AUTO_CANDIDATES["cuda" if self.device.type == "cuda" else "cpu"]:
            bucket = self._prepare(self._callable(fn, mode), inputs, mode)
            seconds = median_seconds(bucket.run, self.device)
            self.candidate_seconds.setdefault(str(key), {})[str(mode)] = seconds
            if seconds < best_time:
                best, best_time = bucket, seconds
        self.chosen_modes[key] = best.mode
        return best

    def finish(self, output: torch.Tensor) -> torch.Tensor:
        return output.clone() if self.clone_output else output


def weights_version(tensors: Sequence[torch.Tensor]) -> tuple:
    """What changes when any of ``tensors`` is updated through autograd's version counter
    (``load_state_dict``, an optimiser step, an in-place op on the tensor or on a ``detach()`` of it)
    or gets new data (``p.data = t``): the CPU paths that keep a derived copy of the weights
    (packed, exported) compare it before every call. A write through ``p.data`` or a NumPy / DLPack
    view leaves it unchanged (such writes bump no counter): the wrappers' ``refresh()`` covers them."""
    return tuple((t._version, t.data_ptr()) for t in tensors)


def check_batch_sizes(batch_sizes: Sequence[int], tokens: Union[int, Sequence[int]]) -> tuple[tuple, tuple]:
    """``(batch sizes, token counts)``, each sorted without repeats; one error naming a bad argument."""
    sizes = tuple(sorted(set(int(b) for b in batch_sizes)))
    toks = (tokens,) if isinstance(tokens, int) else tuple(sorted(set(int(t) for t in tokens)))
    if not sizes or sizes[0] < 1:
        raise ValueError(f"batch_sizes: expected positive batch sizes, got {tuple(batch_sizes)}")
    if not toks or toks[0] < 1:
        raise ValueError(f"tokens: expected a positive token count (or several), got {tokens!r}")
    return sizes, toks


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and dtype of ``model``'s (first) parameter: where and in what it is served."""
    param = next(model.parameters(), None)
    if param is None:
        raise ValueError("model: has no parameters")
    return param.device, param.dtype


def bucketed(pad_to_buckets: Optional[bool], device: torch.device, compile_mode: Optional[str]) -> bool:
    """Whether requests go through the buckets: as asked, else on CUDA (graphs) or when compiling."""
    if pad_to_buckets is None:
        return device.type == "cuda" or compile_mode is not None
    return bool(pad_to_buckets)


def runtime_choice(runtime: str, backend: Optional[str] = None) -> str:
    """The runtime asked for (:data:`ithp_fast.checks.RUNTIMES` or ``"auto"``): ``runtime=``, or
    ``backend=``, its old name, which keeps working."""
    if backend is None:
        return check_choice(runtime, RUNTIME_CHOICES, "runtime")
    if runtime not in (AUTO, backend):
        raise ValueError(f"runtime: backend= is its old name; give one of the two, got runtime={runtime!r} and "
                         f"backend={backend!r}")
    return check_choice(backend, RUNTIME_CHOICES, "backend")


def require_eval(model: nn.Module, what: str) -> None:
    """One error naming ``what`` when ``model`` is in training mode."""
    if model.training:
        raise ValueError(f"{what}: the model is in training mode; serve it in eval mode (model.eval())")
