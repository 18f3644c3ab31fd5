"""Export a model for serving without this package: an ONNX bundle or an AOTInductor package.

Two programs can be exported, both computing the posterior mean (``b = mu`` at both levels,
whatever the model's ``eval_sampling``) in eval mode:

* a whole :class:`ithp_fast.ITHPDeberta`: ``input_ids``, ``attention_mask`` (int64
  ``[batch, sequence]``) -> ``logits`` ``[batch, num_labels]``;
* an ITHP alone (:class:`ithp_fast.ITHP` or the reference): ``x`` (text features
  ``[batch, tokens, X0_dim]``) -> ``b1`` (the last level's ``b``) ``[batch, tokens, bottleneck_dims[-1]]``.

Formats:

``onnx``  ``torch.onnx.export(dynamo=True)``: ``FILE`` and, beside it, ``FILE.data`` with the
          weights (ONNX's external data). Checked by running it in ONNX Runtime. For an
          ``ITHPDeberta`` the file is a bundle: the model's tokenizer is written beside it
          (``tokenizer.json``, which the ``tokenizers`` package alone reads: it adds ``[CLS]`` and
          ``[SEP]``, cuts a text to the model's ``max_seq_length`` tokens and pads a batch to its
          longest text; ``tokenizer_config.json`` for ``transformers.AutoTokenizer``), the batch and
          sequence axes are dynamic and named ``batch`` and ``sequence`` (1 to ``tokens`` tokens),
          and the file's ``metadata_props`` say what it computes (:func:`bundle_metadata`).
``aoti``  an AOTInductor package (``FILE`` ending in ``.pt2``) from
          ``torch._inductor.aoti_compile_and_package``, compiled for the model's device (the CPU,
          or CUDA when the model is there), ``tokens`` fixed; load it with
          ``torch._inductor.aoti_load_package``. Checked by loading and running it.

The traced program is the plain-PyTorch reference formula. Under ``torch.export`` and
``torch.onnx.export(dynamo=True)`` ``torch.compiler.is_compiling()`` is True (torch 2.13, strict
and non-strict export alike), which already sends ``ithp_fast.ITHP.forward`` to the reference
formula; the exported programs do not depend on that: they call the reference ``encode``
(posterior mean) directly, so no Triton kernel is ever traced (ONNX has none).

The batch dimension is dynamic unless ``batch`` fixes it. Nothing is left at the output path unless
the whole export and its check succeeded: files are written in a temporary folder beside it and
moved into place at the end. A server that caches exports (keyed by the weights' checksum) calls
:func:`export` with the destination it chose.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from typing import Any, Optional, Union

import torch
from torch import nn

from ..reference.ithp import ITHP as ReferenceITHP
from .bundle import TOKENIZER_FILE
from .logits import first_token_logits
from .tokens import is_word_level

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
        if batch > 1:
            mask[-1, tokens // 2 + 1 :] = 0  # a shorter text, padded
        return DebertaLogits(model).eval(), (ids, mask), ("input_ids", "attention_mask"), "logits"
    x = torch.randn(batch, tokens, model.config.X0_dim, generator=g).to(param.device, param.dtype)
    return EncoderB1(model).eval(), (x,), ("x",), "b1"


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


def export(model: nn.Module, output: Union[str, os.PathLike], *, format: str, tokens: Optional[int] = None,
           batch: Optional[int] = None, tokenizer: Any = None, quantize: str = "none") -> list[str]:
    """Write ``model`` (an ``ITHPDeberta``, or an ITHP alone) as ``format`` to ``output``.

    Args:
        model: an [`ithp_fast.ITHPDeberta`][] (exported as ``input_ids, attention_mask ->
            logits``) or an ITHP (``x -> b1``), on the device to compile for (``aoti``). It is
            exported in eval mode (its mode is restored afterwards), with the posterior mean.
        output: the file to write (``.onnx`` for ONNX by convention; ``.pt2`` for ``aoti``). Its
            folder must exist.
        format: ``"onnx"`` or ``"aoti"``.
        tokens: tokens per example: the most an ONNX ``ITHPDeberta`` takes (its sequence axis is
            dynamic), the fixed count of the other programs. Default: the model's ``max_seq_length``
            (50 for an ITHP alone).
        batch: a fixed batch size; None (default) exports a dynamic batch dimension (1 to
            ``MAX_DYNAMIC_BATCH``).
        tokenizer: what the ONNX bundle of an ``ITHPDeberta`` carries (default: ``model.tokenizer``;
            none is written when neither is there).
        quantize: ``"none"`` (default) or ``"int8"``: ONNX Runtime's dynamic int8 quantisation of the ONNX
            program (:mod:`ithp_fast.serving.quantize`; one file, the weights inside), run and checked
            for finite outputs; its scores differ from float32's by up to a few hundredths
            (docs/deployment.md, Serving over HTTP).

    Returns the paths written (``output``, and for ONNX its ``.data`` file and the tokenizer's files
    beside it).
    Raises ``ValueError`` / ``TypeError`` / ``FileNotFoundError`` naming a bad argument, and
    ``RuntimeError`` when the written program does not reproduce the model (nothing is left at
    ``output`` then).
    """
    path = _check_arguments(model, output, format, tokens, batch)
    from .quantize import check_quantize

    if check_quantize(quantize) != "none" and format != "onnx":
        raise ValueError(f"quantize: int8 quantises an ONNX program; got format={format!r}")
    tokens = tokens or getattr(model, "max_seq_length", None) or DEFAULT_TOKENS
    if tokenizer is None:
        tokenizer = getattr(model, "tokenizer", None)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if quantize == "int8":
                return _export_int8(model, path, tokens, batch, tokenizer)
            return _export(model, path, format, tokens, batch, tokenizer)
    finally:
        model.train(was_training)


def _export_int8(model: nn.Module, path: str, tokens: int, batch: Optional[int], tokenizer: Any) -> list[str]:
    """The float32 ONNX export in a temporary folder, quantised to ``path``; the tokenizer's files beside it."""
    from .quantize import quantize_int8

    parent, name = os.path.split(path)
    floats = tempfile.mkdtemp(prefix=f".{name}.float32.", dir=parent)
    try:
        written = _export(model, os.path.join(floats, name), "onnx", tokens, batch, tokenizer)
        staged = quantize_int8(written[0], os.path.join(floats, "int8.onnx"))
        _, inputs, input_names, _ = _program_and_inputs(model, batch or 2, tokens)
        got = _onnx_runner(staged, input_names)(*inputs)
        if not bool(torch.isfinite(got).all()):
            raise RuntimeError("export: the int8 program gives non-finite outputs; nothing was written")
        extras = [f for f in written[1:] if not f.endswith(".data")]
        for f in extras:
            os.replace(f, os.path.join(parent, os.path.basename(f)))
        os.replace(staged, path)
        return [path] + [os.path.join(parent, os.path.basename(f)) for f in extras]
    finally:
        shutil.rmtree(floats, ignore_errors=True)


def _export(model: nn.Module, path: str, format: str, tokens: int, batch: Optional[int], tokenizer: Any) -> list[str]:
    parent, name = os.path.split(path)
    staging = tempfile.mkdtemp(prefix=f".{name}.", dir=parent)
    try:
        staged = os.path.join(staging, name)
        dynamic_sequence = format == "onnx" and _is_deberta(model) and tokens > 2
        module, inputs, dynamic, input_names, output_name = _traced(model, tokens, batch, dynamic_sequence)
        if format == "onnx":
            with warnings.catch_warnings():  # both inputs share each axis: torch says each name is used once
                warnings.filterwarnings("ignore", message=r"# The axis name: \w+ will not be used")
                program = torch.onnx.export(module, inputs, dynamo=True, dynamic_shapes=dynamic, verbose=False,
                                            input_names=list(input_names), output_names=[output_name])
            if _is_deberta(model):
                program.model.metadata_props.update(bundle_metadata(model, tokens, tokenizer))
                if tokenizer is not None:
                    write_tokenizer(tokenizer, staging, tokens, model.dberta.model.config.pad_token_id or 0)
            program.save(staged, external_data=True)
            run = _onnx_runner(staged, input_names)
        else:
            torch._inductor.aoti_compile_and_package(torch.export.export(module, inputs, dynamic_shapes=dynamic),
                                                     package_path=staged)
            run = torch._inductor.aoti_load_package(staged)
        _check_outputs(module, run, model, tokens, batch, dynamic_sequence)
        written = sorted(os.listdir(staging), key=lambda f: f == name)  # the program file last
        for f in written:
            os.replace(os.path.join(staging, f), os.path.join(parent, f))
        return [os.path.join(parent, f) for f in reversed(written)]
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _traced(model: nn.Module, tokens: int, batch: Optional[int], dynamic_sequence: bool):
    """``(module, example inputs, dynamic shapes, input names, output name)``: a dynamic batch unless
    ``batch`` fixes it, and with ``dynamic_sequence`` a dynamic sequence (1 to ``tokens``)."""
    # Traced at 2 examples (and a token fewer than the most): torch.export specialises a dimension traced at 1.
    traced_tokens = tokens - 1 if dynamic_sequence else tokens
    module, inputs, input_names, output_name = _program_and_inputs(model, batch or 2, traced_tokens)
    axes = {}
    if batch is None:
        axes[0] = torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)
    if dynamic_sequence:
        axes[1] = torch.export.Dim("sequence", min=1, max=tokens)
    return module, inputs, tuple(dict(axes) for _ in inputs) if axes else None, input_names, output_name


def bundle_metadata(model: nn.Module, tokens: int, tokenizer: Any) -> dict[str, str]:
    """What an ONNX file of an ``ITHPDeberta`` says about itself (its ``metadata_props``)."""
    from ..version import __version__

    config = getattr(model, "config", None)
    low, high = getattr(config, "label_range", (-3.0, 3.0))
    kind = "none" if tokenizer is None else "word-level" if is_word_level(tokenizer) else "pretrained"
    return {
        "model": "ITHP-DeBERTa",
        "inputs": f"input_ids, attention_mask: int64 [batch, sequence], 1 to {tokens} tokens: [CLS] text [SEP], "
                  f"padded to the batch's longest text (attention_mask 0 on the padding)",
        "output": f"logits [batch, {model.num_labels}]: the sentiment score, a regression trained on labels from "
                  f"{low:g} (negative) to {high:g} (positive)",
        "output_range": f"{low:g},{high:g}",
        "tokens": str(tokens),
        "tokenizer": kind,
        "tokenizer_file": TOKENIZER_FILE if tokenizer is not None else "",
        "eval_sampling": "mean",
        "ithp_fast_version": __version__,
    }


def write_tokenizer(tokenizer: Any, directory: str, max_length: int, pad_id: int) -> None:
    """The tokenizer's files in ``directory``, its ``tokenizer.json`` set to read text as the model does with the
    ``tokenizers`` package alone: cut to ``max_length`` tokens, a batch padded to its longest text."""
    from tokenizers import Tokenizer

    tokenizer.save_pretrained(directory)
    path = os.path.join(directory, TOKENIZER_FILE)
    backend = Tokenizer.from_file(path) if os.path.isfile(path) else Tokenizer.from_str(
        tokenizer.backend_tokenizer.to_str())
    backend.enable_truncation(max_length)
    backend.enable_padding(pad_id=pad_id, pad_token=backend.id_to_token(pad_id) or "[PAD]")
    backend.save(path)


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


def _check_outputs(module: nn.Module, run, model: nn.Module, tokens: int, batch: Optional[int],
                   dynamic_sequence: bool) -> None:
    """The written program must give the module's output at batch ``batch`` (or 1 and 3), at the most tokens
    and, for a dynamic sequence, fewer."""
    shapes = [(b, tokens) for b in ((batch,) if batch is not None else (1, 3))]
    if dynamic_sequence:
        shapes.append((batch or 2, tokens // 2))
    for b, t in shapes:
        _, inputs, _, _ = _program_and_inputs(model, b, t)
        want = module(*inputs)
        try:
            got = run(*inputs).to(want.device)
        except Exception as err:  # ONNX Runtime and AOTInductor raise their own errors on a shape they refuse
            if t == tokens:
                raise
            raise RuntimeError(f"export: the written program refuses {t} tokens ({str(err).splitlines()[0]})") from None
        finite = torch.isfinite(want)
        scale = float(want[finite].abs().max()) if finite.any() else 0.0
        tol = CHECK_TOLERANCE.get(want.dtype, 2e-2) * max(1.0, scale)
        diff = _difference(got.to(want.dtype), want) if got.shape == want.shape else float("inf")
        if not diff <= tol:
            raise RuntimeError(f"export: the written program differs from the model by {diff:.3g} "
                               f"(allowed {tol:.3g}) at batch {b}, {t} tokens; nothing was written")
