"""``ServingEncoder``: ``ITHP.encode`` (text features -> ``b1``) behind shape buckets and CUDA graphs.

A request of ``n`` rows goes to the smallest bucket with at least ``n`` rows, padded (rows of
``x`` are independent, so padding never changes the answer); a request larger than every bucket
runs the eager fast path. The graphs read the model's parameters where they live; the CPU paths
that keep a copy of the weights (oneDNN's packing, an ONNX Runtime export) rebuild it when a
parameter's version counter or storage changes. ``ServingEncoder``'s docstring lists the weight
updates each path sees; :meth:`ServingEncoder.refresh` brings in any other.

On the CPU (float32, posterior mean, no ``compile_mode``) the default is no bucket at all: the
chain runs on oneDNN with weights packed once (:mod:`ithp_fast.serving.onednn`), or in ONNX
Runtime with ``runtime="onnxruntime"`` (:mod:`ithp_fast.serving.ort_backend`);
``bench/results/`` and the Deployment page (``docs/deployment.md``) say how they compare.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from ..checks import AUTO, check_encode_inputs
from ..encode import chain as chain_path
from ..encode import choose_path, encode, encoder_parameters, float32_precision
from ..encode import fused as fused_path
from ..reference.ithp import ITHP as ReferenceITHP
from .buckets import (
    DEFAULT_BATCH_SIZES,
    DEFAULT_TOKENS,
    Bucket,
    BucketRunner,
    bucketed,
    check_batch_sizes,
    model_device_dtype,
    require_eval,
    runtime_choice,
)
from .onednn import PrepackedChain
from .onednn import available as onednn_available


def _encode_rows(model: nn.Module, path: str, sample: bool, precision: str, x2d: torch.Tensor) -> torch.Tensor:
    """``b1`` of ``[rows, X0]`` by a path fixed in advance (what a bucket captures or compiles)."""
    if path == "fused":
        return fused_path(model, x2d, sample=sample, precision=precision)
    if path == "chain":
        return chain_path(model, x2d, sample=sample)
    return ReferenceITHP.encode(model, x2d, sample=sample)


class ServingEncoder:
    """``ITHP.encode`` behind shape buckets and CUDA graphs.

    Args:
        model: an ITHP module (``ithp_fast.ITHP`` or the reference class) in eval mode, on its
            serving device and dtype (``model.to("cuda", torch.bfloat16)`` for bfloat16).
        batch_sizes: the bucket batches; each bucket holds ``batch * tokens`` rows, and a request
            of ``n`` rows (any leading shape) goes to the smallest bucket with ``>= n`` rows.
        tokens: the tokens per row of the buckets.
        sample: False (default) serves the posterior mean ``b1 = mu1``; True draws as the
            released model does, with fresh noise on every call and every graph replay.
        precision: float32 matmul precision, ``"ieee"`` (exact) or ``"tf32"``; None follows
            torch's setting (``torch.backends.cuda.matmul.allow_tf32``) at construction.
        compile_mode: None (the eager fast path: the fused Triton kernel or the addmm chain),
            a ``torch.compile`` mode, or ``"auto"``: time the candidates of
            ``AUTO_CANDIDATES`` per bucket and keep the fastest (see ``chosen_modes``).
        cuda_graphs: capture each bucket in a CUDA graph (default: on CUDA).
        clone_output: return a fresh tensor (default) rather than a view of the bucket's output
            buffer, which the next call on that bucket overwrites (from one thread only, then).
        pad_to_buckets: route requests through the buckets. Default: on CUDA, or when compiling;
            on the CPU without ``compile_mode`` there is nothing to capture or to keep from
            recompiling, so calls go straight to one of the unpadded CPU paths below.
        runtime: the CPU path without buckets, float32 posterior mean (``path`` says which runs):
            ``"onnxruntime"`` the chain exported once ([`ithp_fast.export`][]) and run in ONNX
            Runtime (``ithp_fast.serving.ort_backend``; re-exported after a weight update);
            ``"torch"`` the chain on oneDNN with prepacked weights
            (``ithp_fast.serving.onednn``), or [`ithp_fast.encode.encode`][] for other dtypes
            and for sampling; ``"auto"`` (default): ``"torch"``, which measured faster than ONNX
            Runtime's own session and than this wrapper's ONNX Runtime path at batch 32, about even
            with the latter at batch 1 (the Deployment page gives the ratios).
        backend: the old name of ``runtime`` (still accepted).

    Weight updates: the next call answers with the model's new weights after ``load_state_dict``
    (copying into the parameters), an optimiser step, or an in-place op on a parameter or on
    ``p.detach()`` (under ``torch.no_grad()``), on every path; after ``p.data = t`` everywhere but
    under CUDA graphs; after a write through ``p.data`` (``p.data.mul_(2)``) or a NumPy / DLPack
    view everywhere but where the wrapper holds a copy of the weights (the CPU's oneDNN and ONNX
    Runtime paths). After any other update (those, parameters replaced by
    ``load_state_dict(assign=True)`` or new modules), call
    [`refresh`][ithp_fast.ServingEncoder.refresh]. Moving the model to another device needs a new
    wrapper.

    Threads: a wrapper may be called from several threads at once. Calls that use one bucket
    run one at a time (a lock per bucket: its buffers and graph are shared); calls on different
    buckets, calls beyond the buckets and the unbucketed CPU paths run in parallel.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
        tokens: int = DEFAULT_TOKENS,
        sample: bool = False,
        precision: Optional[str] = None,
        compile_mode: Optional[str] = None,
        cuda_graphs: Optional[bool] = None,
        clone_output: bool = True,
        pad_to_buckets: Optional[bool] = None,
        runtime: str = AUTO,
        backend: Optional[str] = None,
    ) -> None:
        require_eval(model, "ServingEncoder")
        sizes, toks = check_batch_sizes(batch_sizes, tokens)
        self.model = model
        self.sample = bool(sample)
        self.precision = float32_precision(precision)
        self.device, self.dtype = model_device_dtype(model)
        self._first_param = next(model.parameters())
        self._runner = BucketRunner(self.device, compile_mode, cuda_graphs, clone_output)
        self.bucket_rows = tuple(sorted({b * t for b in sizes for t in toks}))
        self._program = None  # the CPU program derived from the weights (oneDNN packing, ONNX export)
        self._unpadded, self.path = self._unpadded_path(runtime_choice(runtime, backend), pad_to_buckets,
                                                        compile_mode)
        self.runtime = "onnxruntime" if self.path == "onnxruntime" else "torch"
        if self.path != "buckets":
            self.bucket_rows = ()
        self._buckets = self._build_buckets()

    def _build_buckets(self) -> dict[int, Bucket]:
        """One bucket per row count: warmed up, compiled and graph-captured (``chosen_modes`` anew)."""
        buckets = {}
        with torch.no_grad():
            for rows in self.bucket_rows:
                path = choose_path(self.model, rows, self.dtype, self.device, self.precision)
                fn = functools.partial(_encode_rows, self.model, path, self.sample, self.precision)
                x = torch.zeros(rows, self.model.config.X0_dim, dtype=self.dtype, device=self.device)
                buckets[rows] = self._runner.build(rows, fn, (x,))
        return buckets

    def refresh(self) -> None:
        """Rebuild what the wrapper derived from the model's weights -- oneDNN's packed weights, the
        ONNX Runtime export, the buckets' CUDA graphs -- from the parameters the model holds now.

        Needed only after an update the next call does not see by itself (the class docstring
        lists what is seen): a write through ``p.data`` or a NumPy / DLPack view on the CPU paths,
        parameters replaced (``load_state_dict(assign=True)``, new modules), or a parameter's data
        replaced under CUDA graphs. Calls in flight finish on what they started with.
        """
        self._first_param = next(self.model.parameters())
        if self._program is not None:
            self._program.refresh()
        if self._buckets:
            self._buckets = self._build_buckets()

    def _unpadded_path(self, runtime: str, pad_to_buckets, compile_mode) -> tuple[Optional[Callable], str]:
        """``(b1 of [rows, X0_dim], path name)``; path ``"buckets"`` or ``"encode"`` take no callable."""
        padded = bucketed(pad_to_buckets, self.device, compile_mode)
        plain_cpu = not padded and self.device.type == "cpu" and self.dtype == torch.float32 and not self.sample
        if runtime == "onnxruntime" and not plain_cpu:
            raise ValueError("runtime: 'onnxruntime' serves the float32 posterior mean on the CPU, without "
                             "compile_mode or pad_to_buckets (and sample=False)")
        if runtime == "onnxruntime":
            from .ort_backend import SPIN_MAX_BATCH, OnnxRuntimeProgram

            # Rows as a batch of one-token examples; b1 reads only the encoders' weights.
            watched = functools.partial(encoder_parameters, self.model)
            program = OnnxRuntimeProgram(self.model, tokens=1, watched=watched, spin_max_batch=SPIN_MAX_BATCH)
            self._program = program
            return (lambda x2d: program(x2d.unsqueeze(1)).squeeze(1)), "onnxruntime"
        if padded:
            return None, "buckets"
        if not self.sample and onednn_available(self.model, self.dtype, self.device):
            self._program = PrepackedChain(self.model)
            return self._program, "onednn"
        return None, "encode"

    @property
    def chosen_modes(self) -> dict:
        """Rows of each bucket -> the compile mode ``compile_mode="auto"`` kept (None: eager)."""
        return self._runner.chosen_modes

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``b1`` (the last level's ``b``) ``[..., bottleneck_dims[-1]]`` for ``x`` ``[..., X0_dim]``
        (same checks as ``encode``)."""
        cfg = self.model.config
        check_encode_inputs(cfg, x, None, self._first_param)
        lead = tuple(x.shape[:-1])
        rows = math.prod(lead)
        bucket_rows = next((r for r in self.bucket_rows if r >= rows), None)
        with torch.no_grad():
            if self._unpadded is not None and rows > 0:
                return self._unpadded(x.reshape(rows, cfg.X0_dim)).reshape(*lead, cfg.bottleneck_dims[-1])
            if bucket_rows is None or rows == 0:
                return encode(self.model, x, sample=self.sample, precision=self.precision)
            bucket = self._buckets[bucket_rows]
            with bucket.lock:
                bucket.inputs[0][:rows].copy_(x.reshape(rows, cfg.X0_dim))
                out = bucket.run()[:rows]
                return self._runner.finish(out).reshape(*lead, cfg.bottleneck_dims[-1])
