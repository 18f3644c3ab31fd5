"""ONNX Runtime's dynamic int8 quantisation of an exported ITHP-DeBERTa (no torch).

Weights are stored as int8 (one scale per tensor), activations are quantised to uint8 per call from
their range, and the MatMuls and the embedding lookups run as integer products (VNNI where the CPU has
it): ``onnxruntime.quantization.quantize_dynamic``. The program's inputs, outputs and metadata stay
those of the float32 file, so a bundle's tokenizer serves both. What it costs in accuracy and gains in
speed is measured by ``bench/serve_load.py`` and stated in docs/deployment.md (Serving over HTTP).
"""

from __future__ import annotations

import logging
import os

QUANTIZE = ("none", "int8")


def check_quantize(value: str, name: str = "quantize") -> str:
    if value not in QUANTIZE:
        raise ValueError(f"{name}: expected one of {', '.join(QUANTIZE)}, got {value!r}")
    return value


def quantize_int8(source: str, target: str) -> str:
    """Write ``source`` (an ONNX file) quantised to int8 as ``target`` (one file, the weights inside);
    ``target`` appears whole or not at all."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as err:
        raise ImportError("quantize='int8': needs onnxruntime (pip install 'ithp_fast[export]')") from err
    staged = f"{target}.part"
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # it advises, on the root logger, a pre-processing step for image models
    try:
        quantize_dynamic(source, staged, weight_type=QuantType.QInt8)
        os.replace(staged, target)
    finally:
        root.setLevel(level)
        if os.path.exists(staged):
            os.remove(staged)
    return target
