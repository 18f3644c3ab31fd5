"""``ServingDeberta`` and ``deberta_logits``: the logits of a whole ``ITHPDeberta`` for inference.

At inference the head reads the fused states of the first token only, and ``b1`` of a token
depends on its text features alone, so ITHP runs on the first token through
:func:`ithp_fast.encode.encode`. ``ServingDeberta`` puts that behind ``(batch, tokens)`` buckets
with the attention mask a static input of every graph.
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence, Union

import torch
from torch import nn

from ..checks import AUTO, Noise, check_token_inputs
from ..encode import encode, float32_precision
from ..reference.deberta import backbone_tokens
from .buckets import (
    DEFAULT_TOKENS,
    Bucket,
    BucketRunner,
    bucketed,
    check_batch_sizes,
    model_device_dtype,
    require_eval,
    runtime_choice,
)
from .logits import first_token_logits, prebuilt_relative_positions
from .ort_backend import available as ort_available


def deberta_logits(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: Optional[torch.Tensor] = None,
    *,
    noise: Noise = None,
    precision: Optional[str] = None,
) -> torch.Tensor:
    """The logits of [`ithp_fast.ITHPDeberta`][] ``[batch, num_labels]``, for inference.

    Equal to ``model(input_ids, visual, acoustic, attention_mask, noise=noise).logits`` in eval
    mode, whatever the detector inputs: the head reads the fused states of the first token only,
    and at inference ``b1`` of a token depends on its text features alone, so ITHP runs on the
    first token through [`ithp_fast.encode.encode`][] (sampling as the model's
    ``eval_sampling`` says; ``noise=(eps0, eps1)`` shaped as for the forward, ``[B, T, B*_dim]``).
    """
    return _logits(model, input_ids, attention_mask, noise, precision, None)


def _logits(model, input_ids, attention_mask, noise, precision, relative_pos):
    ithp = model.ithp
    sample = ithp.samples_now
    noise = tuple(eps[:, :1] for eps in noise) if noise is not None and sample else None

    def encode_first(first: torch.Tensor) -> torch.Tensor:
        return encode(ithp, first, sample=sample, noise=noise, precision=precision)

    return first_token_logits(model, input_ids, attention_mask, encode_first, relative_pos)


class ServingDeberta:
    """``ITHPDeberta`` logits behind (batch, tokens) buckets and CUDA graphs.

    Args:
        model: an [`ithp_fast.ITHPDeberta`][] in eval mode on its serving device and dtype.
        batch_sizes: the bucket batches; the buckets are the shapes ``(batch, tokens)``. A request
            ``[b, t]`` goes to the smallest batch ``>= b`` and the smallest token count ``>= t``;
            padded tokens are masked out (``attention_mask`` 0), which is exact only when the model
            passes the mask to its backbone (``pass_attention_mask=True``, the default) -- otherwise
            only requests of exactly a bucket's token count use the buckets. Anything else runs
            [`deberta_logits`][ithp_fast.deberta_logits] eagerly.
        tokens: the bucket token counts, an int or several.
        precision: as for [`ServingEncoder`][ithp_fast.ServingEncoder].
        compile_mode: as for ``ServingEncoder``.
        cuda_graphs: as for ``ServingEncoder``.
        clone_output: as for ``ServingEncoder``.
        pad_to_buckets: as for ``ServingEncoder``.
        runtime: ``"torch"`` (the model itself, in buckets and graphs as above),
            ``"onnxruntime"`` (float32 on the CPU, posterior mean: the model exported to ONNX once
            per token count and run in ONNX Runtime, the fastest CPU path measured; see
            ``ithp_fast.serving.ort_backend``), or ``"auto"`` (default): ``"onnxruntime"``
            where it applies (a float32 CPU model with ``eval_sampling="mean"``, no
            ``compile_mode``, ``cuda_graphs`` or ``pad_to_buckets``) and ONNX Runtime is
            installed, else ``"torch"``; ``self.runtime`` says which. With ONNX Runtime a request
            ``[b, t]`` of any batch goes to the smallest token count ``>= t`` (padded, masked
            out) and ``batch_sizes`` is not used; the export costs seconds (a minute for
            deberta-v3-base) at construction and again after a weight update.
        onnx_file: with ``runtime="onnxruntime"``, an ONNX file from [`ithp_fast.export`][]
            of this model (dynamic batch, ``tokens`` a single count) instead of exporting now.
        backend: the old name of ``runtime`` (still accepted).

    Weight updates: the next call answers with the model's new weights after ``load_state_dict``
    (copying into the parameters), an optimiser step, or an in-place op on a parameter or on
    ``p.detach()`` (under ``torch.no_grad()``), on every path; after ``p.data = t`` everywhere but
    under CUDA graphs; after a write through ``p.data`` (``p.data.mul_(2)``) or a NumPy / DLPack
    view everywhere but where the wrapper holds a copy of the weights (the ONNX Runtime path).
    After any other update (those, parameters replaced by ``load_state_dict(assign=True)`` or new
    modules), call [`refresh`][ithp_fast.ServingDeberta.refresh]. Moving the model to another
    device needs a new wrapper.

    The attention mask is a static input of every graph; sampling (``eval_sampling="sample"``)
    draws fresh noise on every replay.

    Threads: a wrapper may be called from several threads at once. Calls that use one bucket
    run one at a time (a lock per bucket: its buffers and graph are shared); calls on different
    buckets, calls beyond the buckets and ONNX Runtime calls run in parallel.
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
        runtime: str = AUTO,
        onnx_file: Optional[str] = None,
        backend: Optional[str] = None,
    ) -> None:
        require_eval(model, "ServingDeberta")
        self.batch_sizes, self.tokens = check_batch_sizes(batch_sizes, tokens)
        self.model = model
        self.precision = float32_precision(precision)
        self.device, self.dtype = model_device_dtype(model)
        self._runner = BucketRunner(self.device, compile_mode, cuda_graphs, clone_output)
        self._onnx = self._onnx_programs(runtime_choice(runtime, backend), onnx_file, compile_mode, cuda_graphs,
                                         pad_to_buckets)
        if self._onnx or not bucketed(pad_to_buckets, self.device, compile_mode):
            self.batch_sizes = ()
        self._buckets = self._build_buckets()

    def _build_buckets(self) -> dict[tuple[int, int], Bucket]:
        """One bucket per (batch, tokens): warmed up, compiled and graph-captured."""
        buckets = {}
        with torch.no_grad():
            for t in self.tokens if self.batch_sizes else ():
                relative_pos = prebuilt_relative_positions(self.model.dberta.model, backbone_tokens(self.model, t),
                                                           self.device)
                fn = functools.partial(_bucket_logits, self.model, self.precision, relative_pos)
                for b in self.batch_sizes:
                    ids = torch.zeros(b, t, dtype=torch.long, device=self.device)
                    mask = torch.ones(b, t, dtype=torch.long, device=self.device)
                    buckets[(b, t)] = self._runner.build((b, t), fn, (ids, mask))
        return buckets

    def refresh(self) -> None:
        """Rebuild what the wrapper derived from the model's weights -- the ONNX Runtime exports, the
        buckets' CUDA graphs -- from the parameters the model holds now (see
        [`ServingEncoder.refresh`][ithp_fast.ServingEncoder.refresh] for when this is needed). Calls in
        flight finish on what they started with."""
        for program in self._onnx.values():
            program.refresh()
        if self._buckets:
            self._buckets = self._build_buckets()

    def _onnx_programs(self, runtime: str, onnx_file: Optional[str], compile_mode, cuda_graphs,
                       pad_to_buckets) -> dict:
        """Token count -> ONNX Runtime program when the runtime is (or ``"auto"`` picks) ONNX Runtime."""
        fits = (self.device.type == "cpu" and self.dtype == torch.float32 and compile_mode is None
                and not cuda_graphs and not self.model.ithp.samples_now)
        if runtime == AUTO:
            wanted = onnx_file is not None or ort_available()
            runtime = "onnxruntime" if fits and not pad_to_buckets and wanted else "torch"
        self.runtime = runtime
        if runtime == "torch":
            if onnx_file is not None:
                raise ValueError("onnx_file: only used with runtime='onnxruntime'")
            return {}
        if self.model.ithp.samples_now:
            raise ValueError("runtime: 'onnxruntime' serves the posterior mean, but this model samples in eval mode "
                             "(set eval_sampling='mean')")
        if not fits:
            raise ValueError("runtime: 'onnxruntime' serves a float32 CPU model without compile_mode or cuda_graphs")
        if onnx_file is not None and len(self.tokens) != 1:
            raise ValueError(f"onnx_file: one file serves one token count, got tokens={self.tokens}")
        from .ort_backend import OnnxRuntimeProgram

        return {t: OnnxRuntimeProgram(self.model, t, onnx_file, spin_max_batch=None) for t in self.tokens}

    @property
    def backend(self) -> str:
        """The old name of ``runtime``."""
        return self.runtime

    @property
    def chosen_modes(self) -> dict:
        """``(batch, tokens)`` -> the compile mode ``compile_mode="auto"`` kept (None: eager)."""
        return self._runner.chosen_modes

    def _token_count(self, tokens: int) -> Optional[int]:
        if self.model.pass_attention_mask:
            return next((s for s in self.tokens if s >= tokens), None)
        return tokens if tokens in self.tokens else None

    def _run_onnx(self, t: int, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """The ONNX Runtime program for ``t`` tokens on a request padded to it (fresh buffers)."""
        batch, tokens = input_ids.shape
        ids = torch.zeros(batch, t, dtype=torch.int64)
        mask = torch.zeros(batch, t, dtype=torch.int64)
        ids[:, :tokens] = input_ids
        mask[:, :tokens] = 1 if attention_mask is None else attention_mask
        return self._onnx[t](ids, mask)

    def _bucket_for(self, batch: int, tokens: int) -> Optional[tuple[int, int]]:
        b = next((s for s in self.batch_sizes if s >= batch), None)
        t = self._token_count(tokens)
        return None if b is None or t is None else (b, t)

    def __call__(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits ``[batch, num_labels]`` for ``input_ids`` ``[batch, tokens]``."""
        check_token_inputs(input_ids, attention_mask)
        batch, tokens = input_ids.shape
        key = self._bucket_for(batch, tokens) if batch > 0 else None
        if self._onnx and batch > 0 and self._token_count(tokens) is not None:
            return self._run_onnx(self._token_count(tokens), input_ids, attention_mask)
        with torch.no_grad():
            if key is None:
                mask = None if attention_mask is None else attention_mask.to(self.device)
                return deberta_logits(self.model, input_ids.to(self.device), mask, precision=self.precision)
            bucket = self._buckets[key]
            with bucket.lock:
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
