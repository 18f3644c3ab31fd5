"""ONNX Runtime as the CPU backend of the serving wrappers (``backend="onnxruntime"``).

On the CPU ONNX Runtime runs the exported programs faster than torch does (``bench/results/``;
the README's "Deployment" section gives the ratios): for ITHP-DeBERTa the backbone is almost all
of a call and torch's eager backbone is several times slower; for ``b1`` the four GEMMs of the
chain are close between the two, and ONNX Runtime's thread pool copes better with a busy
machine. This backend exports the model once (:func:`ithp_fast.export`, posterior mean, dynamic
batch) into a temporary folder, or reads an ONNX file exported before, and runs it in an
``onnxruntime.InferenceSession`` with torch's intra-op thread count, its idle threads sleeping
rather than spinning (they would take the cores from the rest of the process). Needs the
``export`` extra (``pip install 'ithp_fast[export]'``).

Weight updates made in place are seen: every call compares each parameter's version counter and
storage with those exported (replacing parameter tensors needs a new wrapper), and a change
exports the model again (seconds for ITHP, up to a minute for a deberta-v3-base backbone) before
answering. ``InferenceSession.run`` may be called from several
threads; a re-export happens once, under a lock.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import threading
from typing import Optional, Sequence

import torch
from torch import nn

REQUIRED = ("onnxruntime", "onnxscript", "onnx")


def available() -> bool:
    """Whether ONNX Runtime and the ONNX exporter's packages are installed."""
    return all(importlib.util.find_spec(name) is not None for name in REQUIRED)


def _session(path: str, threads: int):
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError("backend='onnxruntime': needs onnxruntime (pip install 'ithp_fast[export]')") from err
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle workers sleep instead of spinning: in a server process other work shares the cores, and
    # on a busy machine spinning cost ONNX Runtime itself 1.5x here (bench/serving_vs_onnxruntime.py).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _signature(params: tuple) -> tuple:
    return tuple((p._version, p.data_ptr()) for p in params)


class OnnxRuntimeProgram:
    """``model`` exported to ONNX (``tokens`` tokens, dynamic batch) and run in ONNX Runtime.

    Args:
        model: an ``ITHPDeberta`` (inputs ``input_ids``, ``attention_mask``) or an ITHP (``x``).
        tokens: the token count of the program.
        onnx_file: an ONNX file written by :func:`ithp_fast.export` for this model and ``tokens``
            (dynamic batch); None exports one now. A given file is never re-exported.
        threads: ONNX Runtime's intra-op threads (default: ``torch.get_num_threads()``).
        watched: the parameters whose updates trigger a new export (default: all the model's).
    """

    def __init__(self, model: nn.Module, tokens: int, onnx_file: Optional[str] = None,
                 threads: Optional[int] = None, watched: Optional[Sequence[torch.Tensor]] = None) -> None:
        self.model, self.tokens = model, tokens
        self.threads = threads or torch.get_num_threads()
        self._lock = threading.Lock()
        self._follows_weights = onnx_file is None
        # Listed once: walking the modules on every call would cost 0.1 ms.
        self._params = tuple(model.parameters() if watched is None else watched)
        self._seen = _signature(self._params)
        self._session = self._export() if onnx_file is None else _session(os.fspath(onnx_file), self.threads)
        self.input_names = tuple(i.name for i in self._session.get_inputs())
        first = self._session.get_inputs()[0].shape
        if len(first) < 2 or first[1] != tokens:
            raise ValueError(f"onnx_file: its program takes {self.input_names[0]} of shape {first}, "
                             f"expected [batch, {tokens}, ...]")

    def _export(self):
        from .export import export

        with tempfile.TemporaryDirectory(prefix="ithp_fast-onnx-") as folder:
            path = export(self.model, os.path.join(folder, "model.onnx"), format="onnx", tokens=self.tokens)[0]
            return _session(path, self.threads)  # reads the weights into memory

    def _current_session(self):
        if self._follows_weights:
            seen = _signature(self._params)
            if seen != self._seen:
                with self._lock:
                    if seen != self._seen:
                        self._session, self._seen = self._export(), seen
        return self._session

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        session = self._current_session()
        feeds = {name: t.detach().cpu().numpy() for name, t in zip(self.input_names, tensors)}
        return torch.from_numpy(session.run(None, feeds)[0])
