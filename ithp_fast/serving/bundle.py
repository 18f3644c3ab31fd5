"""An ONNX bundle of ITHP-DeBERTa scoring text in ONNX Runtime, without torch.

A bundle is what :func:`ithp_fast.export` writes for an ``ITHPDeberta`` (``model.onnx``, its weights,
``tokenizer.json`` and the file's ``metadata_props``), float32 or quantised to int8
(:mod:`ithp_fast.serving.quantize`). :class:`BundleScorer` reads texts as ``model.predict`` does
(:class:`ithp_fast.serving.tokens.TextTokenizer`) and runs the program on the CPU: what
``ithp-fast serve`` runs there, starting in a second where loading torch and the model takes several.

Texts of different lengths in one batch would all be read padded to the longest, and on a CPU the padding
costs as much as text. Once :meth:`BundleScorer.calibrate` has timed a run's fixed cost and its cost per
token, a batch is split into groups of similar length where the padding saved outweighs the runs added
(:func:`ithp_fast.serving.tokens.length_groups`); the scores do not depend on the grouping.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import Optional

import numpy as np

from .tokens import ScoredTexts, TextTokenizer, length_groups, score_rows

# The name transformers saves a tokenizer under; ithp_fast.data.tokenize names it too, for checkpoints (data sits
# with training, which serving does not import).
TOKENIZER_FILE = "tokenizer.json"


def ort_session(path: str, threads: int, spinning: bool):
    """An ``onnxruntime.InferenceSession`` on the CPU with ``threads`` intra-op threads; ``spinning``: idle
    workers spin (ONNX Runtime's default) rather than sleep."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


class BundleScorer:
    """Scores texts with an ONNX bundle.

    Args:
        program: the bundle's ONNX file (``tokenizer.json`` beside it).
        threads: ONNX Runtime's intra-op threads.
        spinning: whether idle intra-op threads spin (see ``ithp-fast serve --spin``).
    """

    def __init__(self, program: str, *, threads: int = 1, spinning: bool = False) -> None:
        from tokenizers import Tokenizer

        folder = os.path.dirname(os.path.abspath(program))
        self.session = ort_session(program, threads, spinning)
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.max_tokens = int(self.metadata["tokens"])
        tokenizer = Tokenizer.from_file(os.path.join(folder, TOKENIZER_FILE))
        pad_id = (tokenizer.padding or {}).get("pad_id", 0)
        self.tokenizer = TextTokenizer(tokenizer, self.max_tokens, pad_id, _unknown_id(folder, tokenizer))
        self.per_call = self.per_token = 0.0

    def calibrate(self, rows: int = 8, repeats: int = 3) -> tuple[float, float]:
        """Time one short text and ``rows`` texts of ``max_tokens`` tokens (the fastest of ``repeats`` runs
        each): ``(seconds per run, seconds per token)``, from then on used to group texts by length."""
        shapes = ((1, min(4, self.max_tokens)), (rows, self.max_tokens))
        seconds = []
        for batch, tokens in shapes:
            ids = np.full((batch, tokens), self.tokenizer.pad_id, dtype=np.int64)
            mask = np.ones((batch, tokens), dtype=np.int64)
            runs = []
            for _ in range(repeats):
                start = time.perf_counter()
                self.logits(ids, mask)
                runs.append(time.perf_counter() - start)
            seconds.append(min(runs))
        (small, small_tokens), (large, large_tokens) = zip(seconds, (a * b for a, b in shapes))
        self.per_token = max(0.0, (large - small) / max(1, large_tokens - small_tokens))
        self.per_call = max(0.0, small - small_tokens * self.per_token)
        return self.per_call, self.per_token

    def logits(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """``[batch, num_labels]`` float32 logits of int64 ``[batch, tokens]`` ids and mask."""
        return self.session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]

    def score(self, texts: Sequence[str]) -> ScoredTexts:
        """The scores of ``texts`` (checked): one run of the program, or one per group of similar lengths
        once calibrated."""
        batch = self.tokenizer.encode(texts)
        lengths = batch.attention_mask.sum(axis=1)
        values = None
        for rows in length_groups(lengths, self.per_call, self.per_token):
            longest = int(lengths[rows].max())
            out = self.logits(batch.input_ids[rows, :longest], batch.attention_mask[rows, :longest])
            values = np.empty((len(texts), out.shape[1])) if values is None else values
            values[rows] = out
        return ScoredTexts(score_rows(values), batch.cut, batch.unknown, batch.tokens, self.tokenizer.word_level)


def _unknown_id(folder: str, tokenizer) -> Optional[int]:
    """The unknown token's id, as ``tokenizer_config.json`` names it (or the tokenizer's model)."""
    path = os.path.join(folder, "tokenizer_config.json")
    token = None
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            token = json.load(f).get("unk_token")
        token = token.get("content") if isinstance(token, dict) else token
    token = token or getattr(tokenizer.model, "unk_token", None)
    return tokenizer.token_to_id(token) if token else None
