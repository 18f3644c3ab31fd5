"""``ServingEncoder``: ``ITHP.encode`` (text features -> ``b1``) behind shape buckets and CUDA graphs.

A request of ``n`` rows goes to the smallest bucket with at least ``n`` rows, padded (rows of
``x`` are independent, so padding never changes the answer); a request larger than every bucket
runs the eager fast path. The graphs read the model's parameters where they live: in-place
updates (``load_state_dict``, optimiser steps) are seen by the next call; moving the model or
replacing parameter tensors needs a new wrapper.

On the CPU (float32, posterior mean, no ``compile_mode``) the default is no bucket at all: the
chain runs on oneDNN with weights packed once (:mod:`ithp_fast.serving.onednn`), or in ONNX
Runtime with ``backend="onnxruntime"`` (:mod:`ithp_fast.serving.ort_backend`);
``bench/results/`` and the README's "Deployment" section say how they compare.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from ..checks import check_encode_inputs
from ..encode import chain as chain_path
from ..encode import choose_path, encode, float32_precision
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
)
from .onednn import PrepackedChain, encoder_linears
from .onednn import available as onednn_available


def _encode_rows(model: nn.Module, path: str, sample: bool, precision: str, x2d: torch.Tensor) -> torch.Tensor:
    """``b1`` of ``[rows, X0]`` by a path fixed in advance (what a bucket captures or compiles)."""
    if path == "fused":
        return fused_path(model, x2d, sample=sample, precision=precision)
    if path == "chain":
        return chain_path(model, x2d, sample=sample)
    return ReferenceITHP.encode(model, x2d, sample=sample)


BACKENDS = ("auto", "torch", "onnxruntime")


class ServingEncoder:
    """``ITHP.encode`` behind shape buckets and CUDA graphs.

    Args:
        model: an ITHP module (``ithp_fast.ITHP`` or the reference class) in eval mode, on its
            serving device and dtype (``model.to("cuda", torch.bfloat16)`` for bfloat16).
        batch_sizes, tokens: the buckets hold ``batch * tokens`` rows each; a request of ``n``
            rows (any leading shape) goes to the smallest bucket with ``>= n`` rows.
        sample: False (default) serves the posterior mean ``b1 = mu1``; True draws as the
            released model does, with fresh noise on every call and every graph replay.
        precision: float32 matmul precision, ``"ieee"`` (exact) or ``"tf32"``; None follows
            torch's setting (``torch.backends.cuda.matmul.allow_tf32``) at construction.
        compile_mode: None (the eager fast path: the fused Triton kernel or the addmm chain),
            a ``torch.compile`` mode, or ``"auto"``: time the candidates of
            :data:`AUTO_CANDIDATES` per bucket and keep the fastest (see ``chosen_modes``).
        cuda_graphs: capture each bucket in a CUDA graph (default: on CUDA).
        clone_output: return a fresh tensor (default) rather than a view of the bucket's output
            buffer, which the next call on that bucket overwrites (from one thread only, then).
        pad_to_buckets: route requests through the buckets. Default: on CUDA, or when compiling;
            on the CPU without ``compile_mode`` there is nothing to capture or to keep from
            recompiling, so calls go straight to one of the unpadded CPU paths below.
        backend: the CPU path without buckets, float32 posterior mean (``path`` says which runs):
            ``"onnxruntime"`` the chain exported once (:func:`ithp_fast.export`) and run in ONNX
            Runtime (:mod:`ithp_fast.serving.ort_backend`; re-exported after a weight update);
            ``"torch"`` the chain on oneDNN with prepacked weights
            (:mod:`ithp_fast.serving.onednn`), or :func:`ithp_fast.encode.encode` for other dtypes
            and for sampling; ``"auto"`` (default): ``"torch"``, which measured faster than ONNX
            Runtime's own session and than this wrapper's ONNX Runtime path at batch 32, about even
            with the latter at batch 1 (the README's "Deployment" section gives the ratios).

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
        backend: str = "auto",
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
        self._buckets: dict[int, Bucket] = {}
        self._unpadded, self.path = self._unpadded_path(backend, pad_to_buckets, compile_mode)
        if self.path != "buckets":
            self.bucket_rows = ()
        cfg = model.config
        with torch.no_grad():
            for rows in self.bucket_rows:
                path = choose_path(model, rows, self.dtype, self.device, self.precision)
                fn = functools.partial(_encode_rows, model, path, self.sample, self.precision)
                x = torch.zeros(rows, cfg.X0_dim, dtype=self.dtype, device=self.device)
                self._buckets[rows] = self._runner.build(rows, fn, (x,))

    def _unpadded_path(self, backend: str, pad_to_buckets, compile_mode) -> tuple[Optional[Callable], str]:
        """``(b1 of [rows, X0_dim], path name)``; path ``"buckets"`` or ``"encode"`` take no callable."""
        if backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
        padded = bucketed(pad_to_buckets, self.device, compile_mode)
        plain_cpu = not padded and self.device.type == "cpu" and self.dtype == torch.float32 and not self.sample
        if backend == "onnxruntime" and not plain_cpu:
            raise ValueError("backend: 'onnxruntime' serves the float32 posterior mean on the CPU, without "
                             "compile_mode or pad_to_buckets (and sample=False)")
        if backend == "onnxruntime":
            from .ort_backend import SPIN_MAX_BATCH, OnnxRuntimeProgram

            # Rows as a batch of one-token examples; b1 reads only the encoders' weights.
            watched = [t for w, b, _ in encoder_linears(self.model) for t in (w, b)]
            program = OnnxRuntimeProgram(self.model, tokens=1, watched=watched, spin_max_batch=SPIN_MAX_BATCH)
            return (lambda x2d: program(x2d.unsqueeze(1)).squeeze(1)), "onnxruntime"
        if padded:
            return None, "buckets"
        if not self.sample and onednn_available(self.model, self.dtype, self.device):
            return PrepackedChain(self.model), "onednn"
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
