"""Export a model for serving without this package: an ONNX file or an AOTInductor package.

Two programs can be exported, both computing the posterior mean (``b = mu`` at both levels,
whatever the model's ``eval_sampling``) in eval mode:

* a whole :class:`ithp_fast.ITHPDeberta`: ``input_ids``, ``attention_mask`` (int64
  ``[batch, tokens]``) -> ``logits`` ``[batch, num_labels]``;
* an ITHP alone (:class:`ithp_fast.ITHP` or the reference): ``x`` (text features
  ``[batch, tokens, X0_dim]``) -> ``b1`` (the last level's ``b``) ``[batch, tokens, bottleneck_dims[-1]]``.

Formats:

``onnx``  ``torch.onnx.export(dynamo=True)``: ``FILE`` and, beside it, ``FILE.data`` with the
          weights (ONNX's external data). Checked by running it in ONNX Runtime.
``aoti``  an AOTInductor package (``FILE`` ending in ``.pt2``) from
          ``torch._inductor.aoti_compile_and_package``, compiled for the model's device (the CPU,
          or CUDA when the model is there); load it with ``torch._inductor.aoti_load_package``.
          Checked by loading and running it.

The traced program is the plain-PyTorch reference formula. Under ``torch.export`` and
``torch.onnx.export(dynamo=True)`` ``torch.compiler.is_compiling()`` is True (torch 2.13, strict
and non-strict export alike), which already sends ``ithp_fast.ITHP.forward`` to the reference
formula; the exported programs do not depend on that: they call the reference ``encode``
(posterior mean) directly, so no Triton kernel is ever traced (ONNX has none).

The batch dimension is dynamic unless ``batch`` fixes it; the token count is fixed
(``tokens``). Nothing is left at the output path unless the whole export and its check
succeeded: files are written in a temporary folder beside it and moved into place at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Optional, Union

import torch
from torch import nn

from ..reference.ithp import ITHP as ReferenceITHP
from .logits import first_token_logits

FORMATS = ("onnx", "aoti")
DEFAULT_TOKENS = 50
MAX_DYNAMIC_BATCH = 4096
"""Largest batch a dynamic-batch export accepts."""
CHECK_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-8}
"""Largest difference (relative to the output's size, at least 1) the export's check allows."""


class DebertaLogits(nn.Module):
    """``(input_ids, attention_mask) -> logits`` of an ``ITHPDeberta``, posterior mean."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        ithp = self.model.ithp
        return first_token_logits(self.model, input_ids, attention_mask, lambda x: ReferenceITHP.encode(ithp, x))


class EncoderB1(nn.Module):
    """``x -> b1`` of an ITHP, posterior mean (the reference ``encode``)."""

    def __init__(self, ithp: nn.Module) -> None:
        super().__init__()
        self.ithp = ithp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ReferenceITHP.encode(self.ithp, x)


def _is_deberta(model: nn.Module) -> bool:
    return hasattr(model, "dberta") and hasattr(model, "classifier")


def _is_ithp(model: nn.Module) -> bool:
    return isinstance(model, ReferenceITHP)


def _program_and_inputs(model: nn.Module, batch: int, tokens: int):
    """``(module, example inputs, input names, output name)`` of what ``model`` exports as."""
    param = next(model.parameters())
    g = torch.Generator().manual_seed(0)
    if _is_deberta(model):
        vocab = model.dberta.model.config.vocab_size
        ids = torch.randint(0, vocab, (batch, tokens), generator=g).to(param.device)
        mask = torch.ones(batch, tokens, dtype=torch.int64, device=param.device)
        return DebertaLogits(model), (ids, mask), ("input_ids", "attention_mask"), "logits"
    x = torch.randn(batch, tokens, model.config.X0_dim, generator=g).to(param.device, param.dtype)
    return EncoderB1(model), (x,), ("x",), "b1"


def _check_arguments(model, output, format, tokens, batch) -> str:
    if not isinstance(model, nn.Module) or not (_is_deberta(model) or _is_ithp(model)):
        raise TypeError(f"model: expected an ithp_fast.ITHPDeberta or an ITHP, got {type(model).__name__}")
    if format not in FORMATS:
        raise ValueError(f"format: expected one of {FORMATS}, got {format!r}")
    for name, value in (("tokens", tokens), ("batch", batch)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    path = os.path.abspath(os.fspath(output))
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"output: the directory {parent} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"output: {path} is a directory; name the file to write")
    if format == "aoti" and not path.endswith(".pt2"):
        raise ValueError(f"output: an AOTInductor package's name must end in .pt2, got {os.path.basename(path)!r}")
    return path


def export(model: nn.Module, output: Union[str, os.PathLike], *, format: str, tokens: int = DEFAULT_TOKENS,
           batch: Optional[int] = None) -> list[str]:
    """Write ``model`` (an ``ITHPDeberta``, or an ITHP alone) as ``format`` to ``output``.

    Args:
        model: an :class:`ithp_fast.ITHPDeberta` (exported as ``input_ids, attention_mask ->
            logits``) or an ITHP (``x -> b1``), on the device to compile for (``aoti``). It is
            exported in eval mode (its mode is restored afterwards), with the posterior mean.
        output: the file to write (``.onnx`` for ONNX by convention; ``.pt2`` for ``aoti``). Its
            folder must exist.
        format: ``"onnx"`` or ``"aoti"``.
        tokens: tokens per example (fixed in the program).
        batch: a fixed batch size; None (default) exports a dynamic batch dimension (1 to
            :data:`MAX_DYNAMIC_BATCH`).

    Returns the paths written (``output``, and for ONNX its ``.data`` file beside it).
    Raises ``ValueError`` / ``TypeError`` / ``FileNotFoundError`` naming a bad argument, and
    ``RuntimeError`` when the written program does not reproduce the model (nothing is left at
    ``output`` then).
    """
    path = _check_arguments(model, output, format, tokens, batch)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return _export(model, path, format, tokens, batch)
    finally:
        model.train(was_training)


def _export(model: nn.Module, path: str, format: str, tokens: int, batch: Optional[int]) -> list[str]:
    # A dynamic batch is traced at 2: torch.export specialises a dimension traced at size 1.
    module, inputs, input_names, output_name = _program_and_inputs(model, batch or 2, tokens)
    dynamic = None
    if batch is None:
        dim = torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)
        dynamic = tuple({0: dim} for _ in inputs)
    program = torch.export.export(module, inputs, dynamic_shapes=dynamic)
    parent, name = os.path.split(path)
    staging = tempfile.mkdtemp(prefix=f".{name}.", dir=parent)
    try:
        staged = os.path.join(staging, name)
        if format == "onnx":
            torch.onnx.export(program, inputs, staged, dynamo=True, input_names=list(input_names),
                              output_names=[output_name], verbose=False)
            run = _onnx_runner(staged, input_names)
        else:
            torch._inductor.aoti_compile_and_package(program, package_path=staged)
            run = torch._inductor.aoti_load_package(staged)
        _check_outputs(module, run, model, tokens, batch)
        written = sorted(os.listdir(staging), key=lambda f: f == name)  # the program file last
        for f in written:
            os.replace(os.path.join(staging, f), os.path.join(parent, f))
        return [os.path.join(parent, f) for f in reversed(written)]
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _onnx_runner(path: str, input_names):
    """A callable running the ONNX file in ONNX Runtime on the CPU (torch tensors in and out)."""
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError("format='onnx': checking the export needs onnxruntime (pip install 'ithp_fast[export]')") \
            from err
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])

    def run(*tensors: torch.Tensor) -> torch.Tensor:
        feeds = {n: t.detach().cpu().numpy() for n, t in zip(input_names, tensors)}
        return torch.from_numpy(session.run(None, feeds)[0])

    return run


def _difference(got: torch.Tensor, want: torch.Tensor) -> float:
    """The largest ``|got - want|`` over the finite entries of ``want``; infinite unless ``got`` is
    NaN, +Inf and -Inf exactly where ``want`` is (a model with non-finite weights exports too)."""
    finite = torch.isfinite(want)
    same_pattern = torch.equal(torch.isfinite(got), finite) and torch.equal(got.isnan(), want.isnan()) \
        and torch.equal(got.isposinf(), want.isposinf())
    if not same_pattern:
        return float("inf")
    return float((got - want)[finite].abs().max()) if finite.any() else 0.0


def _check_outputs(module: nn.Module, run, model: nn.Module, tokens: int, batch: Optional[int]) -> None:
    """The written program must give the module's output at batch ``batch`` (or 1 and 3)."""
    for b in (batch,) if batch is not None else (1, 3):
        _, inputs, _, _ = _program_and_inputs(model, b, tokens)
        want = module(*inputs)
        got = run(*inputs).to(want.device)
        finite = torch.isfinite(want)
        scale = float(want[finite].abs().max()) if finite.any() else 0.0
        tol = CHECK_TOLERANCE.get(want.dtype, 2e-2) * max(1.0, scale)
        diff = _difference(got.to(want.dtype), want) if got.shape == want.shape else float("inf")
        if not diff <= tol:
            raise RuntimeError(f"export: the written program differs from the model by {diff:.3g} "
                               f"(allowed {tol:.3g}) at batch {b}; nothing was written")
