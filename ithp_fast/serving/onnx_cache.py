"""A checkpoint's ONNX bundle, exported once and kept beside it, keyed by the checksum of its files.

``ithp-fast serve`` on the CPU runs the checkpoint as an ONNX bundle (:mod:`ithp_fast.serving.bundle`).
Exporting takes seconds for a small model and a minute or more for a deberta-v3-base backbone, so the
bundle is written once to ``CHECKPOINT.onnx-cache/KEY/`` (beside the checkpoint, never inside it,
where the next save of a training run would delete it) and read from there at every later start:

* ``KEY`` is the SHA-256 of the files the model is made of (weights, ``config.json``, the tokenizer's
  files: everything but the training state listed in :data:`NOT_MODEL`), shortened, and the
  ithp_fast version that exported it. New weights give a new key, so a stale bundle is never served;
  the old folder stays until removed (``rm -r CHECKPOINT.onnx-cache`` is always safe).
* ``model.onnx`` (+ ``model.onnx.data``, the tokenizer): float32; ``model.int8.onnx``: its dynamic int8
  quantisation, made from it the first time it is asked for.
* A folder appears whole (written under a temporary name, then renamed), so replicas started at once
  never read half a bundle; where the checkpoint's folder cannot be written the bundle goes to
  ``~/.cache/ithp_fast/onnx/``.

Finding a cached bundle reads the checkpoint's files but imports neither torch nor transformers.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from typing import Callable, Optional

from ..files import current_umask
from .quantize import check_quantize, quantize_int8

NOT_MODEL = frozenset({"optimizer.safetensors", "trainer_state.json", "manifest.json", "README.md", "training.json"})
"""A checkpoint's files that do not change what the model computes (training state, the model card)."""
CACHE_SUFFIX = ".onnx-cache"
FLOAT_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
CHUNK = 1 << 22


def model_files(checkpoint: str) -> list[str]:
    """The names of the files of ``checkpoint`` that make the model, sorted."""
    names = sorted(n for n in os.listdir(checkpoint)
                   if n not in NOT_MODEL and not n.startswith(".") and os.path.isfile(os.path.join(checkpoint, n)))
    if "config.json" not in names:
        raise FileNotFoundError(f"checkpoint: {checkpoint} holds no config.json; expected a checkpoint directory "
                                f"(ithp-fast train, ithp-fast package or save_pretrained)")
    return names


def checkpoint_checksum(checkpoint: str) -> str:
    """SHA-256 (hex) over the names and bytes of the checkpoint's model files."""
    digest = hashlib.sha256()
    for name in model_files(checkpoint):
        digest.update(name.encode() + b"\0")
        with open(os.path.join(checkpoint, name), "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def cache_key(checkpoint: str) -> str:
    from ..version import __version__

    return f"{checkpoint_checksum(checkpoint)[:20]}-ithp_fast-{__version__}"


def cache_roots(checkpoint: str) -> list[str]:
    """Where bundles of ``checkpoint`` are looked for, in order: beside it, then the user's cache."""
    path = os.path.abspath(checkpoint).rstrip(os.sep)
    user = os.path.join(os.path.expanduser("~"), ".cache", "ithp_fast", "onnx", os.path.basename(path))
    return [path + CACHE_SUFFIX, user]


def cached_program(checkpoint: str, quantize: str = "none", *, say: Callable[[str], None] = print) -> str:
    """The ONNX file serving ``checkpoint`` (``quantize``: ``"none"`` or ``"int8"``), exported (and quantised)
    the first time, read from the cache after. ``say`` gets one line before each slow step."""
    check_quantize(quantize)
    if not os.path.isdir(checkpoint):
        raise NotADirectoryError(f"checkpoint: {checkpoint} is not a directory")
    key = cache_key(checkpoint)
    folder = next((os.path.join(r, key) for r in cache_roots(checkpoint) if os.path.isdir(os.path.join(r, key))),
                  None)
    if folder is None:
        say(f"exporting {checkpoint} to ONNX (once; kept in {cache_roots(checkpoint)[0]})")
        folder = _export_bundle(checkpoint, key)
    if quantize == "none":
        return os.path.join(folder, FLOAT_FILE)
    target = os.path.join(folder, INT8_FILE)
    if not os.path.isfile(target):
        say(f"quantising to int8 (once): {target}")
        quantize_int8(os.path.join(folder, FLOAT_FILE), target)
    return target


def _export_bundle(checkpoint: str, key: str) -> str:
    """Export the checkpoint into the first cache root that can be written; the bundle's folder."""
    from ..training.load import load_checkpoint
    from .export import export

    model = load_checkpoint(checkpoint, device="cpu")
    problem: Optional[OSError] = None
    for root in cache_roots(checkpoint):
        try:
            os.makedirs(root, exist_ok=True)
            staging = tempfile.mkdtemp(prefix=f".{key}.", dir=root)
        except OSError as err:
            problem = err
            continue
        try:
            export(model, os.path.join(staging, FLOAT_FILE), format="onnx")
            os.chmod(staging, 0o755 & ~current_umask())
            try:
                os.rename(staging, os.path.join(root, key))
            except OSError:  # another process put the same bundle there first
                pass
            return os.path.join(root, key)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    raise PermissionError(f"checkpoint: no folder to keep its ONNX export in ({problem})")
