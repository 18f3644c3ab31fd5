"""ONNX Runtime as a CPU backend of ``ServingDeberta`` (``backend="onnxruntime"``).

On the CPU the DeBERTa backbone is almost all of an ITHP-DeBERTa call, and ONNX Runtime runs
the exported model several times faster than eager torch (``bench/results/``; the README's
"Deployment" section gives the ratios). This backend exports the model once
(:func:`ithp_fast.export`, posterior mean, dynamic batch, one program per token count) into a
temporary folder, or reads an ONNX file exported before, and runs it in an
``onnxruntime.InferenceSession`` with torch's intra-op thread count, its idle threads sleeping
rather than spinning (they would take the cores from the rest of the process). Needs the ``export`` extra
(``pip install 'ithp_fast[export]'``).

The session holds its own copy of the weights: updates to the model after the wrapper is built
are not seen (build a new wrapper). ``InferenceSession.run`` may be called from several threads.
"""

from __future__ import annotations

import os
import tempfile
from typing import Optional

import torch
from torch import nn


def _session(path: str, threads: int):
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError("backend='onnxruntime': needs onnxruntime (pip install 'ithp_fast[export]')") from err
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle workers sleep instead of spinning: in a server process other work shares the cores, and
    # on a busy machine spinning cost ONNX Runtime itself 1.6x here (bench/serving_vs_onnxruntime.py).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


class OnnxRuntimeLogits:
    """``(input_ids, attention_mask) -> logits`` of an ``ITHPDeberta`` exported to ONNX, for ``tokens`` tokens.

    Args:
        model: the ``ITHPDeberta`` (exported here unless ``onnx_file`` is given).
        tokens: the token count of the program.
        onnx_file: an ONNX file written by :func:`ithp_fast.export` for this model and ``tokens``
            (dynamic batch); None exports one now.
        threads: ONNX Runtime's intra-op threads (default: ``torch.get_num_threads()``).
    """

    def __init__(self, model: nn.Module, tokens: int, onnx_file: Optional[str] = None,
                 threads: Optional[int] = None) -> None:
        threads = threads or torch.get_num_threads()
        self.tokens = tokens
        if onnx_file is not None:
            self._session = _session(os.fspath(onnx_file), threads)
        else:
            from .export import export

            with tempfile.TemporaryDirectory(prefix="ithp_fast-onnx-") as folder:
                path = export(model, os.path.join(folder, "model.onnx"), format="onnx", tokens=tokens)[0]
                self._session = _session(path, threads)  # reads the weights into memory
        shapes = {i.name: i.shape for i in self._session.get_inputs()}
        if shapes.get("input_ids", [None, None])[1] != tokens:
            raise ValueError(f"onnx_file: its program takes {shapes.get('input_ids')} input_ids, expected "
                             f"[batch, {tokens}]")

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        feeds = {"input_ids": input_ids.to(torch.int64).numpy(),
                 "attention_mask": attention_mask.to(torch.int64).numpy()}
        return torch.from_numpy(self._session.run(None, feeds)[0])
