"""ONNX Runtime as the CPU runtime of the serving wrappers (``runtime="onnxruntime"``).

On the CPU ONNX Runtime runs the exported ITHP-DeBERTa several times faster than torch's eager
model (the backbone is almost all of a call; ``bench/results/`` and the Deployment page
(``docs/deployment.md``) give the ratios): it is ``ServingDeberta``'s CPU default. For ``b1`` the
four GEMMs of the chain are close between the two, and ``ServingEncoder`` keeps this backend on
request. It exports
the model once (:func:`ithp_fast.export`, posterior mean, dynamic batch) into a temporary folder,
or reads an ONNX file exported before, and runs it in an ``onnxruntime.InferenceSession`` with
torch's intra-op thread count: ``ServingDeberta`` with ONNX Runtime's default options (idle
threads spin: the fastest on cores the process has to itself), ``ServingEncoder`` with a
spinning session for small requests and a sleeping one for large (:data:`SPIN_MAX_BATCH`).
Needs the ``export`` extra (``pip install 'ithp_fast[export]'``).

Weight updates are followed: every call compares each parameter's version counter and storage
with those exported (:func:`~ithp_fast.serving.buckets.weights_version`: ``load_state_dict``, an
optimiser step, an in-place op on a parameter or on ``p.detach()``, ``p.data = t``), and a change
exports the model again (seconds for ITHP, up to a minute for a deberta-v3-base backbone) before
answering; an ONNX file given at construction stands for the weights of that moment. A write
that bypasses the version counter (through ``p.data`` or a NumPy / DLPack view), or parameters
replaced, are seen after :meth:`OnnxRuntimeProgram.refresh`. ``InferenceSession.run`` may be
called from several threads; a re-export happens once, under a lock.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import threading
from typing import Callable, Iterable, Optional

import torch
from torch import nn

from .buckets import weights_version
from .bundle import ort_session

REQUIRED = ("onnxruntime", "onnxscript", "onnx")


def available() -> bool:
    """Whether ONNX Runtime and the ONNX exporter's packages are installed."""
    return all(importlib.util.find_spec(name) is not None for name in REQUIRED)


def _session(path: str, threads: int, spinning: bool = False):
    try:
        import onnxruntime  # noqa: F401
    except ImportError as err:
        raise ImportError("runtime='onnxruntime': needs onnxruntime (pip install 'ithp_fast[export]')") from err
    return ort_session(path, threads, spinning)  # not spinning: idle workers sleep (see SPIN_MAX_BATCH)


SPIN_MAX_BATCH = 400
"""``ServingEncoder``'s requests of up to this many rows (8 examples of 50 tokens) run on a
session whose idle threads spin (ONNX Runtime's default), larger ones on a session whose threads
sleep. A short call (``b1`` of one 50-token
example: 0.1-0.2 ms) waits on its workers' wake-up several times, and spinning workers answer at
once; a long call on a machine whose cores are busy loses more to workers spinning away the
cores' time than it gains (``bench/serving_vs_onnxruntime.py``: ``b1`` at batch 1 and 32)."""


class OnnxRuntimeProgram:
    """``model`` exported to ONNX (dynamic batch; an ``ITHPDeberta`` up to ``tokens`` tokens, an ITHP
    ``tokens`` tokens) and run in ONNX Runtime.

    Args:
        model: an ``ITHPDeberta`` (inputs ``input_ids``, ``attention_mask``) or an ITHP (``x``).
        tokens: the token count of the program.
        onnx_file: an ONNX file written by :func:`ithp_fast.export` for this model's current
            weights and ``tokens`` (dynamic batch); None exports one now. After a weight update
            the model is exported anew (into a temporary folder), as without a file.
        threads: ONNX Runtime's intra-op threads (default: ``torch.get_num_threads()``).
        watched: returns the parameters whose updates trigger a new export (default: all the
            model's); called at construction and by :meth:`refresh`.
        spin_max_batch: requests of up to this many examples (first dimension) run on a session
            whose idle threads spin, larger ones on one whose threads sleep (see
            :data:`SPIN_MAX_BATCH`); 0: threads always sleep; None: one session with ONNX
            Runtime's default options (threads spin), for every request.
    """

    def __init__(self, model: nn.Module, tokens: int, onnx_file: Optional[str] = None,
                 threads: Optional[int] = None, watched: Optional[Callable[[], Iterable[torch.Tensor]]] = None,
                 spin_max_batch: Optional[int] = 0) -> None:
        self.model, self.tokens = model, tokens
        self.threads = threads or torch.get_num_threads()
        self.spin_max_batch = spin_max_batch
        self._lock = threading.Lock()
        self._watched = watched or model.parameters
        # Listed here and by refresh(): walking the modules on every call would cost 0.1 ms.
        self._params = tuple(self._watched())
        self._seen = weights_version(self._params)
        self._sessions = self._export() if onnx_file is None else self._load(os.fspath(onnx_file))
        self.input_names = tuple(i.name for i in self._sessions[0].get_inputs())
        first = self._sessions[0].get_inputs()[0].shape
        if len(first) < 2 or not (first[1] == tokens or isinstance(first[1], str)):  # fixed, or a named axis
            raise ValueError(f"onnx_file: its program takes {self.input_names[0]} of shape {first}, "
                             f"expected [batch, {tokens}, ...]")

    def _load(self, path: str) -> tuple:
        """``(session for large requests, spinning session for small ones or None)``."""
        if self.spin_max_batch is None:
            return _session(path, self.threads, spinning=True), None
        spinning = _session(path, self.threads, spinning=True) if self.spin_max_batch else None
        return _session(path, self.threads), spinning

    def _export(self) -> tuple:
        from .export import export

        with tempfile.TemporaryDirectory(prefix="ithp_fast-onnx-") as folder:
            path = export(self.model, os.path.join(folder, "model.onnx"), format="onnx", tokens=self.tokens)[0]
            return self._load(path)  # the sessions read the weights into memory

    def refresh(self) -> None:
        """List the watched parameters again and export the model now, whatever their versions say."""
        with self._lock:
            self._params = tuple(self._watched())
            self._seen = weights_version(self._params)
            self._sessions = self._export()

    def _current_sessions(self) -> tuple:
        seen = weights_version(self._params)
        if seen != self._seen:
            with self._lock:
                if seen != self._seen:
                    self._sessions, self._seen = self._export(), seen
        return self._sessions

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        sleeping, spinning = self._current_sessions()
        session = spinning if spinning is not None and tensors[0].shape[0] <= self.spin_max_batch else sleeping
        feeds = {name: _as_fed(t) for name, t in zip(self.input_names, tensors)}
        return torch.from_numpy(session.run(None, feeds)[0])


def _as_fed(tensor: torch.Tensor):
    """A tensor as the exported program takes it: integer ids as int64 (int32 ids work too)."""
    tensor = tensor.detach().cpu()
    return (tensor if tensor.is_floating_point() else tensor.to(torch.int64)).numpy()
