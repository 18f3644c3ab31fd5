"""Serving wrappers for low latency: shape buckets, CUDA graphs and torch.compile.

:class:`ServingEncoder` serves ``ITHP.encode`` (text features -> ``b1``);
:class:`ServingDeberta` serves the logits of a whole :class:`ithp_fast.ITHPDeberta`;
:func:`deberta_logits` is the eager fast path of the latter.

A wrapper prepares one *bucket* per configured shape at construction (the warm-up): static
input and output buffers and, on CUDA, a CUDA graph captured over the eager fast path or over a
``torch.compile``-d version of it. A request is copied into the smallest bucket that holds it
(padded; rows of ``x`` are independent, so padding never changes the answer), the graph is
replayed and the result sliced back. A request larger than every bucket runs the eager fast
path. Nothing compiles or captures after the warm-up.

The graphs read the model's parameters where they live: in-place updates (``load_state_dict``,
optimiser steps) are seen by the next call; moving the model or replacing parameter tensors
needs a new wrapper. One wrapper serves one stream at a time (its buffers are shared).
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from typing import Callable, Optional, Sequence, Union

import torch
from torch import nn

from .checks import Noise, check_encode_inputs, check_token_inputs
from .encode import choose_path, encode, float32_precision
from .encode import chain as chain_path
from .encode import fused as fused_path
from .reference.ithp import ITHP as ReferenceITHP

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


def _median_seconds(run: Callable[[], object], device: torch.device, calls: int = AUTO_TIMING_CALLS) -> float:
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


class _Bucket:
    """Static inputs and output of one shape, and how to run it (graph replay or call)."""

    def __init__(self, inputs: tuple[torch.Tensor, ...], output: Optional[torch.Tensor], run: Callable[[], torch.Tensor],
                 mode: Optional[str], graph: Optional["torch.cuda.CUDAGraph"] = None) -> None:
        self.inputs, self.output, self.run, self.mode, self.graph = inputs, output, run, mode, graph


class _BucketRunner:
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

    def _prepare(self, call: Callable, inputs: tuple, mode: Optional[str]) -> _Bucket:
        graphed = self.cuda_graphs and mode != "reduce-overhead"  # reduce-overhead brings its own graphs
        if not graphed:
            # No warm-up output is kept: under "reduce-overhead" it lives in torch.compile's own
            # graph pool, which refuses live tensors it does not track.
            for _ in range(WARMUP_CALLS):
                call(*inputs)
            return _Bucket(inputs, None, lambda: call(*inputs), mode)
        from .kernels.encode_chain import prepare_stream

        stream = self._stream
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            prepare_stream(self.device)  # the fused kernel's counters for this stream, before capture
            for _ in range(WARMUP_CALLS):
                call(*inputs)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            output = call(*inputs)
        torch.cuda.current_stream(self.device).wait_stream(stream)

        def replay() -> torch.Tensor:
            graph.replay()
            return output

        return _Bucket(inputs, output, replay, mode, graph)

    def build(self, key, fn: Callable, inputs: tuple) -> _Bucket:
        """Prepare the bucket ``key`` for ``fn(*inputs)``; with ``"auto"``, time the candidates, keep the fastest."""
        if self.compile_mode != "auto":
            return self._prepare(self._callable(fn, self.compile_mode), inputs, self.compile_mode)
        best, best_time = None, math.inf
        for mode in AUTO_CANDIDATES["cuda" if self.device.type == "cuda" else "cpu"]:
            bucket = self._prepare(self._callable(fn, mode), inputs, mode)
            seconds = _median_seconds(bucket.run, self.device)
            self.candidate_seconds.setdefault(str(key), {})[str(mode)] = seconds
            if seconds < best_time:
                best, best_time = bucket, seconds
        self.chosen_modes[key] = best.mode
        return best

    def finish(self, output: torch.Tensor) -> torch.Tensor:
        return output.clone() if self.clone_output else output


def _check_batch_sizes(batch_sizes: Sequence[int], tokens: Union[int, Sequence[int]]) -> tuple[tuple, tuple]:
    sizes = tuple(sorted(set(int(b) for b in batch_sizes)))
    toks = (tokens,) if isinstance(tokens, int) else tuple(sorted(set(int(t) for t in tokens)))
    if not sizes or sizes[0] < 1:
        raise ValueError(f"batch_sizes: expected positive batch sizes, got {tuple(batch_sizes)}")
    if not toks or toks[0] < 1:
        raise ValueError(f"tokens: expected a positive token count (or several), got {tokens!r}")
    return sizes, toks


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    param = next(model.parameters(), None)
    if param is None:
        raise ValueError("model: has no parameters")
    return param.device, param.dtype


def _pads(pad_to_buckets: Optional[bool], device: torch.device, compile_mode: Optional[str]) -> bool:
    if pad_to_buckets is None:
        return device.type == "cuda" or compile_mode is not None
    return bool(pad_to_buckets)


def _require_eval(model: nn.Module, what: str) -> None:
    if model.training:
        raise ValueError(f"{what}: the model is in training mode; serve it in eval mode (model.eval())")


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
            buffer, which the next call overwrites.
        pad_to_buckets: route requests through the buckets. Default: on CUDA, or when compiling;
            on the CPU without ``compile_mode`` there is nothing to capture or to keep from
            recompiling, so calls go straight to :func:`ithp_fast.encode.encode` (no padding).
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
    ) -> None:
        _require_eval(model, "ServingEncoder")
        sizes, toks = _check_batch_sizes(batch_sizes, tokens)
        self.model = model
        self.sample = bool(sample)
        self.precision = float32_precision(precision)
        self.device, self.dtype = _model_device_dtype(model)
        self._runner = _BucketRunner(self.device, compile_mode, cuda_graphs, clone_output)
        self.bucket_rows = tuple(sorted({b * t for b in sizes for t in toks}))
        self._buckets: dict[int, _Bucket] = {}
        if not _pads(pad_to_buckets, self.device, compile_mode):
            self.bucket_rows = ()
        cfg = model.config
        with torch.no_grad():
            for rows in self.bucket_rows:
                path = choose_path(model, rows, self.dtype, self.device, self.precision)
                fn = functools.partial(_encode_rows, model, path, self.sample, self.precision)
                x = torch.zeros(rows, cfg.X0_dim, dtype=self.dtype, device=self.device)
                self._buckets[rows] = self._runner.build(rows, fn, (x,))

    @property
    def chosen_modes(self) -> dict:
        """Rows of each bucket -> the compile mode ``compile_mode="auto"`` kept (None: eager)."""
        return self._runner.chosen_modes

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``b1`` ``[..., B1_dim]`` for ``x`` ``[..., X0_dim]`` (same checks as ``encode``)."""
        cfg = self.model.config
        check_encode_inputs(cfg, x, None, next(self.model.parameters()))
        lead = tuple(x.shape[:-1])
        rows = math.prod(lead)
        bucket_rows = next((r for r in self.bucket_rows if r >= rows), None)
        with torch.no_grad():
            if bucket_rows is None or rows == 0:
                return encode(self.model, x, sample=self.sample, precision=self.precision)
            bucket = self._buckets[bucket_rows]
            bucket.inputs[0][:rows].copy_(x.reshape(rows, cfg.X0_dim))
            out = bucket.run()[:rows]
            return self._runner.finish(out).reshape(*lead, cfg.B1_dim)


# ---------------------------------------------------------------------------------------------
# ITHP-DeBERTa


def deberta_logits(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: Optional[torch.Tensor] = None,
    *,
    noise: Noise = None,
    precision: Optional[str] = None,
) -> torch.Tensor:
    """The logits of :class:`ithp_fast.ITHPDeberta` ``[batch, num_labels]``, for inference.

    Equal to ``model(input_ids, visual, acoustic, attention_mask, noise=noise).logits`` in eval
    mode, whatever the detector inputs: the head reads the fused states of the first token only,
    and at inference ``b1`` of a token depends on its text features alone, so ITHP runs on the
    first token through :func:`ithp_fast.encode.encode` (sampling as the model's
    ``eval_sampling`` says; ``noise=(eps0, eps1)`` shaped as for the forward, ``[B, T, B*_dim]``).
    """
    return _logits(model, input_ids, attention_mask, noise, precision, None)


def _backbone_states(backbone: nn.Module, input_ids: torch.Tensor, mask: torch.Tensor,
                     relative_pos: Optional[torch.Tensor]) -> torch.Tensor:
    """The backbone's last hidden states. With ``relative_pos`` given (built ahead of a CUDA-graph
    capture: building it copies a host scalar to the device), embeddings and encoder are called
    as ``DebertaV2Model.forward`` calls them, with that tensor passed in."""
    if relative_pos is None:
        return backbone(input_ids, attention_mask=mask).last_hidden_state
    states = backbone.embeddings(input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids), mask=mask)
    return backbone.encoder(states, mask, output_hidden_states=False, relative_pos=relative_pos).last_hidden_state


def _prebuilt_relative_positions(backbone: nn.Module, tokens: int, device: torch.device) -> Optional[torch.Tensor]:
    """DeBERTa's relative positions for ``tokens`` tokens, or None where the backbone has none
    (or is not laid out as ``DebertaV2Model``: then it runs whole)."""
    encoder = getattr(backbone, "encoder", None)
    if not getattr(encoder, "relative_attention", False) or getattr(backbone, "z_steps", 0) > 1 \
            or not hasattr(backbone, "embeddings"):
        return None
    hidden = backbone.config.hidden_size
    return encoder.get_rel_pos(torch.zeros(1, tokens, hidden, device=device))


def _logits(model, input_ids, attention_mask, noise, precision, relative_pos):
    ithp = model.ithp
    body = model.dberta
    # The backbone gets a mask tensor always: without one it checks the ids for padding on the
    # host (a device sync, impossible inside a CUDA graph); all ones is what it would assume.
    if attention_mask is None or not model.pass_attention_mask:
        attention_mask = torch.ones_like(input_ids)
    x = _backbone_states(body.model, input_ids, attention_mask, relative_pos)
    first = x[:, :1]
    sample = ithp.samples
    noise = tuple(eps[:, :1] for eps in noise) if noise is not None and sample else None
    b1 = encode(ithp, first, sample=sample, noise=noise, precision=precision)
    return model.classifier(model.dropout(body.fuse(first, b1)))


class ServingDeberta:
    """``ITHPDeberta`` logits behind (batch, tokens) buckets and CUDA graphs.

    Args:
        model: an :class:`ithp_fast.ITHPDeberta` in eval mode on its serving device and dtype.
        batch_sizes, tokens: bucket shapes ``(batch, tokens)``; ``tokens`` an int or several.
            A request ``[b, t]`` goes to the smallest batch ``>= b`` and the smallest token
            count ``>= t``; padded tokens are masked out (``attention_mask`` 0), which is exact
            only when the model passes the mask to its backbone (``pass_attention_mask=True``,
            the default) -- otherwise only requests of exactly a bucket's token count use the
            buckets. Anything else runs :func:`deberta_logits` eagerly.
        precision, compile_mode, cuda_graphs, clone_output, pad_to_buckets: as for
            :class:`ServingEncoder`.

    The attention mask is a static input of every graph; sampling (``eval_sampling="sample"``)
    draws fresh noise on every replay.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        batch_sizes: Sequence[int] = (1, 8, 32),
        tokens: Union[int, Sequence[int]] = DEFAULT_TOKENS,
        precision: Optional[str] = None,
        compile_mode: Optional[str] = None,
        cuda_graphs: Optional[bool] = None,
        clone_output: bool = True,
        pad_to_buckets: Optional[bool] = None,
    ) -> None:
        _require_eval(model, "ServingDeberta")
        self.batch_sizes, self.tokens = _check_batch_sizes(batch_sizes, tokens)
        self.model = model
        self.precision = float32_precision(precision)
        self.device, _ = _model_device_dtype(model)
        self._runner = _BucketRunner(self.device, compile_mode, cuda_graphs, clone_output)
        self._buckets: dict[tuple[int, int], _Bucket] = {}
        if not _pads(pad_to_buckets, self.device, compile_mode):
            self.batch_sizes = ()
        with torch.no_grad():
            for t in self.tokens:
                relative_pos = _prebuilt_relative_positions(model.dberta.model, t, self.device)
                fn = functools.partial(_bucket_logits, model, self.precision, relative_pos)
                for b in self.batch_sizes:
                    ids = torch.zeros(b, t, dtype=torch.long, device=self.device)
                    mask = torch.ones(b, t, dtype=torch.long, device=self.device)
                    self._buckets[(b, t)] = self._runner.build((b, t), fn, (ids, mask))

    @property
    def chosen_modes(self) -> dict:
        """``(batch, tokens)`` -> the compile mode ``compile_mode="auto"`` kept (None: eager)."""
        return self._runner.chosen_modes

    def _bucket_for(self, batch: int, tokens: int) -> Optional[tuple[int, int]]:
        b = next((s for s in self.batch_sizes if s >= batch), None)
        if self.model.pass_attention_mask:
            t = next((s for s in self.tokens if s >= tokens), None)
        else:
            t = tokens if tokens in self.tokens else None
        return None if b is None or t is None else (b, t)

    def __call__(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits ``[batch, num_labels]`` for ``input_ids`` ``[batch, tokens]``."""
        check_token_inputs(input_ids, attention_mask)
        batch, tokens = input_ids.shape
        key = self._bucket_for(batch, tokens) if batch > 0 else None
        with torch.no_grad():
            if key is None:
                mask = None if attention_mask is None else attention_mask.to(self.device)
                return deberta_logits(self.model, input_ids.to(self.device), mask, precision=self.precision)
            bucket = self._buckets[key]
            ids, mask = bucket.inputs
            ids[:batch, :tokens].copy_(input_ids)
            if attention_mask is None:
                mask[:batch, :tokens].fill_(1)
            else:
                mask[:batch, :tokens].copy_(attention_mask)
            if tokens < key[1]:
                mask[:batch, tokens:].zero_()
            return self._runner.finish(bucket.run()[:batch])


def _bucket_logits(model: nn.Module, precision: str, relative_pos: Optional[torch.Tensor],
                   input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    return _logits(model, input_ids, attention_mask, None, precision, relative_pos)


# ---------------------------------------------------------------------------------------------
# Measurement (``python -m ithp_fast.inference``): what chooses the thresholds and defaults above.


def graphed_seconds(fn: Callable[[], object], device: torch.device, calls_per_graph: int = 20, replays: int = 10) -> float:
    """Seconds per call of ``fn()`` captured ``calls_per_graph`` times in one CUDA graph (median)."""
    from .kernels.encode_chain import prepare_stream

    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        prepare_stream(device)
        for _ in range(WARMUP_CALLS):
            fn()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        for _ in range(calls_per_graph):
            fn()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph.replay()
    return _median_seconds(graph.replay, device, replays) / calls_per_graph


def _sweep_configs(rows: int, hidden: int, sm_count: int):
    """A few launch configurations around the default, for the sweep."""
    from .kernels.encode_chain import EncodeChainConfig, choose_config

    seen = {choose_config(rows, hidden, sm_count)}
    if rows <= 4096:
        for block_m in (16, 32):
            for splits in (1, 4, 8, 16):
                seen.add(EncodeChainConfig(block_m=block_m, block_h=max(16, min(64, hidden // splits)), splits=splits))
    else:
        for block_m, block_h, num_warps, num_stages in [(32, 64, 4, 2), (64, 64, 4, 3), (64, 128, 8, 3), (64, 256, 8, 3),
                                                        (128, 64, 8, 3), (128, 128, 8, 3)]:
            seen.add(EncodeChainConfig(block_m=block_m, block_h=block_h, splits=1, num_warps=num_warps,
                                       num_stages=num_stages))
    return sorted(seen, key=str)


SWEEP_ROWS = (50, 1600, 51200)


def _emit(record: dict) -> None:
    import json

    print(json.dumps(record), flush=True)


def _deberta_v3_base_config():
    """DeBERTa-v3-base's architecture (random weights: nothing is downloaded)."""
    from transformers import DebertaV2Config

    return DebertaV2Config(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        vocab_size=128100, max_position_embeddings=512, relative_attention=True, position_buckets=256,
        norm_rel_ebd="layer_norm", share_att_key=True, pos_att_type=["p2c", "c2p"], max_relative_positions=-1,
        position_biased_input=False, type_vocab_size=0, layer_norm_eps=1e-7, hidden_act="gelu",
    )


def measure_cuda(rows_list: Sequence[int] = (50, 1600, 6400, 51200), *, sweep: bool = True,
                 compile_modes: bool = False, deberta: bool = True, deberta_compile: Optional[str] = None) -> None:
    """Print (JSON lines) the timings that choose ``FUSED_KERNEL_MAX_ROWS``, the kernel's split
    and the serving modes, with the reference baselines on the same card. A section that fails
    prints its error and the next one runs."""
    from . import ITHP, ITHPConfig

    device = torch.device("cuda", torch.cuda.current_device())
    card = torch.cuda.get_device_name(device)
    torch.manual_seed(0)
    base = ITHP(ITHPConfig(), backend="triton").to(device).eval()
    sections = [(f"encode {d} {p}", functools.partial(_measure_encode, base, d, p, rows_list, sweep, device, card))
                for d, p in [("float32", "ieee"), ("float32", "tf32"), ("bfloat16", "ieee")]]
    if compile_modes:
        sections.append(("encoder compile modes", functools.partial(_measure_modes, base, device, card)))
    if deberta:
        for dtype in (torch.float32, torch.bfloat16):
            sections.append((f"deberta {dtype}", functools.partial(_measure_deberta, dtype, deberta_compile, device, card)))
    for name, run in sections:
        try:
            with torch.no_grad():
                run()
        except Exception as err:
            _emit(dict(what="error", section=name, error=f"{type(err).__name__}: {err}"[:2000]))
        torch.cuda.empty_cache()


def _measure_encode(base, dtype_name, precision, rows_list, sweep, device, card):
    from .encode import layers
    from .kernels import sm_count
    from .kernels.encode_chain import encode_chain

    dtype = getattr(torch, dtype_name)
    model = base.to(dtype)
    for rows in rows_list:
        x = torch.randn(rows, 768, device=device, dtype=dtype)
        rec = dict(what="encode", card=card, dtype=dtype_name, precision=precision, rows=rows)
        saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        try:
            rec["reference_encode_us"] = 1e6 * graphed_seconds(lambda: ReferenceITHP.encode(model, x), device)
            rec["chain_us"] = 1e6 * graphed_seconds(lambda: chain_path(model, x), device)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = saved
        rec["fused_default_us"] = 1e6 * graphed_seconds(lambda: fused_path(model, x, precision=precision), device)
        if sweep and precision == "ieee" and rows in SWEEP_ROWS:
            timings = {}
            for cfg in _sweep_configs(rows, 256, sm_count(device)):
                try:
                    timings[str(cfg)] = 1e6 * graphed_seconds(
                        lambda: encode_chain(x, *layers(model), precision=precision, config=cfg), device)
                except Exception as err:  # e.g. a block too large for shared memory
                    rec.setdefault("failed_configs", {})[str(cfg)] = type(err).__name__
            best = min(timings, key=timings.get)
            rec["fused_best_us"], rec["fused_best_config"] = timings[best], best
            rec["fused_configs_us"] = timings
        _emit(rec)
    for batch in (1, 1024):
        server = ServingEncoder(model, batch_sizes=(batch,), precision=precision, clone_output=False)
        x = torch.randn(batch, DEFAULT_TOKENS, 768, device=device, dtype=dtype)
        bucket = server._buckets[batch * DEFAULT_TOKENS]
        _emit(dict(what="serving_encoder", card=card, dtype=dtype_name, precision=precision, batch=batch,
                   tokens=DEFAULT_TOKENS, replay_us=1e6 * _median_seconds(bucket.run, device, 50),
                   call_us=1e6 * _median_seconds(lambda: server(x), device, 50)))


def _measure_modes(base, device, card):
    server = ServingEncoder(base.float(), batch_sizes=(1, 32, 1024), compile_mode="auto")
    _emit(dict(what="serving_encoder_modes", card=card, seconds=server._runner.candidate_seconds,
               chosen={str(k): v for k, v in server.chosen_modes.items()}))


def _measure_deberta(dtype, compile_mode, device, card):
    from . import ITHP, ITHPDeberta

    torch.manual_seed(0)
    model = ITHPDeberta(_deberta_v3_base_config(), ithp_cls=ITHP).to(device, dtype).eval()
    ids = torch.randint(1, 1000, (1, DEFAULT_TOKENS), device=device)
    mask = torch.ones_like(ids)
    visual = torch.rand(1, DEFAULT_TOKENS, 47, device=device, dtype=dtype)
    acoustic = torch.rand(1, DEFAULT_TOKENS, 74, device=device, dtype=dtype)
    rec = dict(what="deberta", card=card, dtype=str(dtype).split(".")[-1], tokens=DEFAULT_TOKENS,
               compile_mode=compile_mode)
    rec["b1_forward_eager_us"] = 1e6 * _median_seconds(lambda: model(ids, visual, acoustic, mask), device)
    rec["b1_logits_eager_us"] = 1e6 * _median_seconds(lambda: deberta_logits(model, ids, mask), device)
    server = ServingDeberta(model, batch_sizes=(1, 8, 32), compile_mode=compile_mode)
    for batch in (1, 8, 32):
        ids_b = torch.randint(1, 1000, (batch, DEFAULT_TOKENS), device=device)
        mask_b = torch.ones_like(ids_b)
        rec[f"b{batch}_served_us"] = 1e6 * _median_seconds(lambda: server(ids_b, mask_b), device, 50)
        rec[f"b{batch}_replay_us"] = 1e6 * _median_seconds(server._buckets[(batch, DEFAULT_TOKENS)].run, device, 50)
    want = model(ids, visual, acoustic, mask).logits
    rec["b1_max_abs_diff_vs_forward"] = float((server(ids, mask).float() - want.float()).abs().max())
    _emit(rec)


def measure_cpu(batch: int = 32, tokens: int = DEFAULT_TOKENS, repeats: int = 5, calls: int = 20) -> None:
    """Print the CPU comparison: the reference eval forward against ``encode`` (interleaved)."""
    from . import ITHP, ITHPConfig

    torch.manual_seed(0)
    model = ITHP(ITHPConfig()).eval()
    ref = ReferenceITHP(ITHPConfig()).eval()
    ref.load_state_dict(model.state_dict())
    x = torch.randn(batch, tokens, 768)
    visual, acoustic = torch.rand(batch, tokens, 47), torch.rand(batch, tokens, 74)
    cpu = torch.device("cpu")
    compiled = torch.compile(functools.partial(chain_path, model), dynamic=False)
    x2d = x.reshape(-1, 768)
    runs = {
        "reference_forward_grad_ms": lambda: ref(x, visual, acoustic),
        "reference_forward_ms": lambda: _no_grad(ref, x, visual, acoustic),
        "reference_encode_ms": lambda: _no_grad(ref.encode, x),
        "encode_ms": lambda: _no_grad(model.encode, x),
        "encode_compiled_ms": lambda: _no_grad(compiled, x2d),
    }
    results = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            run()
            results[name].append(1e3 * _median_seconds(run, cpu, calls))
    rec = dict(what="cpu_encode", threads=torch.get_num_threads(), batch=batch, tokens=tokens)
    rec.update({name: statistics.median(v) for name, v in results.items()})
    rec["speedup_vs_reference_forward"] = rec["reference_forward_ms"] / rec["encode_ms"]
    _emit(rec)


def _no_grad(fn, *args):
    with torch.no_grad():
        return fn(*args)


def main() -> None:
    """``python -m ithp_fast.inference``: the CUDA timings (or, without CUDA, the CPU comparison)."""
    import argparse

    parser = argparse.ArgumentParser(description="Timings behind the serving defaults (JSON lines).")
    parser.add_argument("--no-sweep", action="store_true", help="skip the kernel configuration sweep")
    parser.add_argument("--compile-modes", action="store_true", help="time torch.compile modes for the encoder")
    parser.add_argument("--no-deberta", action="store_true")
    parser.add_argument("--deberta-compile", default=None, help="compile mode for the served ITHP-DeBERTa")
    parser.add_argument("--rows", type=int, nargs="*", default=[50, 1600, 6400, 51200])
    args = parser.parse_args()
    if torch.cuda.is_available():
        measure_cuda(args.rows, sweep=not args.no_sweep, compile_modes=args.compile_modes,
                     deberta=not args.no_deberta, deberta_compile=args.deberta_compile)
    else:
        measure_cpu()


if __name__ == "__main__":
    main()
