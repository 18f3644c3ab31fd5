"""Serving: shape buckets, CUDA graphs and torch.compile around the model (imported on first use).

``ServingEncoder`` (``encoder.py``) serves ``ITHP.encode``; ``ServingDeberta`` and
``deberta_logits`` (``deberta.py``) the logits of a whole ITHP-DeBERTa; ``graphs.py`` holds the
CUDA-graph-captured training step and forward and the one graph-capture helper that every
wrapper uses; ``buckets.py`` the buckets both serving wrappers share; ``onednn.py`` and
``ort_backend.py`` the wrappers' CPU paths (oneDNN with prepacked weights, ONNX Runtime);
``export.py`` writes a model as an ONNX file or an AOTInductor package (:func:`ithp_fast.export`).
Texts in, scores out: ``tokens.py`` (tokenisation, no torch), ``text.py`` (``TextScorer``, the model
in torch), ``bundle.py`` (an ONNX bundle in ONNX Runtime, no torch); ``ithp-fast serve``'s HTTP
endpoint: ``onnx_cache.py`` (exports cached beside a checkpoint), ``batcher.py`` (dynamic batching)
and ``app.py`` (the FastAPI application).

The names below load on first use, so the torch-free modules import without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_PUBLIC = {
    "ServingEncoder": ".encoder",
    "ServingDeberta": ".deberta",
    "deberta_logits": ".deberta",
    "GraphedForward": ".graphs",
    "GraphedTrainStep": ".graphs",
    "graphed_autograd": ".graphs",
    "capture_graph": ".graphs",
}

__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'ithp_fast.serving' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))


if TYPE_CHECKING:
    from .deberta import ServingDeberta, deberta_logits  # noqa: F401
    from .encoder import ServingEncoder  # noqa: F401
    from .graphs import GraphedForward, GraphedTrainStep, capture_graph, graphed_autograd  # noqa: F401
