"""Serving: shape buckets, CUDA graphs and torch.compile around the model (imported on first use).

``ServingEncoder`` (``encoder.py``) serves ``ITHP.encode``; ``ServingDeberta`` and
``deberta_logits`` (``deberta.py``) the logits of a whole ITHP-DeBERTa; ``graphs.py`` holds the
CUDA-graph-captured training step and forward and the one graph-capture helper that every
wrapper uses; ``buckets.py`` the buckets both serving wrappers share; ``onednn.py`` and
``ort_backend.py`` the wrappers' CPU paths (oneDNN with prepacked weights, ONNX Runtime);
``export.py`` writes a model as an ONNX file or an AOTInductor package (:func:`ithp_fast.export`).
"""

from .deberta import ServingDeberta, deberta_logits
from .encoder import ServingEncoder
from .graphs import GraphedForward, GraphedTrainStep, capture_graph, graphed_autograd

__all__ = ["ServingEncoder", "ServingDeberta", "deberta_logits", "GraphedForward", "GraphedTrainStep",
           "graphed_autograd", "capture_graph"]
