"""Texts as ITHP-DeBERTa reads them, with ``tokenizers`` and numpy alone (no torch).

The one tokenisation path of every scorer: :class:`ithp_fast.serving.text.TextScorer` (the model in
torch) and the ONNX bundle that ``ithp-fast serve`` runs on the CPU (:mod:`ithp_fast.serving.bundle`)
both encode through :class:`TextTokenizer`: ``[CLS]`` and ``[SEP]`` added, each text cut to
``max_tokens`` tokens (its last token stays ``[SEP]``), a batch padded to its longest text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np


@dataclass
class ScoredTexts:
    """What a scorer returns for a list of texts."""

    scores: list
    """One float per text (a list of ``num_labels`` floats per text when the model has several outputs)."""
    cut: list[bool]
    """True where the text had more than ``max_tokens`` tokens and was cut to them."""
    unknown: int
    """Tokens read as the tokenizer's unknown token: for a word-level vocabulary, words it does not hold."""
    tokens: int
    """Tokens read (``[CLS]``, ``[SEP]`` and padding not counted); words, for a word-level vocabulary."""
    word_level: bool
    """Whether the tokenizer is a word-level vocabulary (one token per word)."""

    def unknown_message(self) -> Optional[str]:
        """One line counting the unknown words (tokens), or None when there are none."""
        if not self.unknown:
            return None
        if self.word_level:
            return f"{self.unknown} of {self.tokens} words are not in the model's vocabulary and were read as unknown"
        return f"{self.unknown} of {self.tokens} tokens are the tokenizer's unknown token"

    @classmethod
    def join(cls, parts: Sequence[ScoredTexts]) -> ScoredTexts:
        """The texts of ``parts`` (at least one, all read by one tokenizer) in order, as one result."""
        return cls([s for p in parts for s in p.scores], [c for p in parts for c in p.cut],
                   sum(p.unknown for p in parts), sum(p.tokens for p in parts), parts[0].word_level)


def score_rows(values: Any) -> list:
    """``[texts, num_labels]`` logits (a NumPy array or a tensor) as :attr:`ScoredTexts.scores`: one float per
    text, or a list of ``num_labels`` floats per text when the model has several outputs."""
    return values[:, 0].tolist() if values.shape[1] == 1 else values.tolist()


@dataclass
class TokenBatch:
    """A batch of texts as the model reads them."""

    input_ids: np.ndarray  # [batch, longest] int64
    attention_mask: np.ndarray  # [batch, longest] int64, 1 on the text's tokens
    cut: list[bool]
    unknown: int
    tokens: int


def check_texts(texts: Any, name: str = "texts") -> list[str]:
    """``texts`` as a list of non-empty strings; a clear error naming the first one that is not."""
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence):
        raise TypeError(f"{name}: expected a list of strings, got {type(texts).__name__} (pass [text] for one text)")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{i}]: expected a string, got {type(text).__name__}")
        if not text.strip():
            raise ValueError(f"{name}[{i}]: empty text; there are no words to score")
    return list(texts)


def backend_tokenizer(tokenizer: Any):
    """A copy of the ``tokenizers.Tokenizer`` behind ``tokenizer`` (a transformers fast tokenizer, or a
    ``tokenizers.Tokenizer``), for this module to set its truncation and padding."""
    from tokenizers import Tokenizer

    backend = tokenizer if isinstance(tokenizer, Tokenizer) else getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TypeError(f"tokenizer: expected a Hugging Face fast tokenizer, got {type(tokenizer).__name__}")
    return Tokenizer.from_str(backend.to_str())


def is_word_level(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` (a transformers fast tokenizer or a ``tokenizers.Tokenizer``) is a word-level
    vocabulary (one token per word)."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    return type(getattr(backend, "model", None)).__name__ == "WordLevel"


class TextTokenizer:
    """Encodes texts for ITHP-DeBERTa.

    Args:
        tokenizer: a transformers fast tokenizer or a ``tokenizers.Tokenizer`` (copied, not changed).
        max_tokens: tokens per text at most, ``[CLS]`` and ``[SEP]`` included.
        pad_id: the id of the padding token.
        unk_id: the id of the unknown token (default: the tokenizer's, when it names one).
    """

    def __init__(self, tokenizer: Any, max_tokens: int, pad_id: int, unk_id: Optional[int] = None) -> None:
        self.backend = backend_tokenizer(tokenizer)
        self.backend.no_padding()
        self.backend.enable_truncation(max_tokens)
        self.max_tokens, self.pad_id = max_tokens, pad_id
        self.unk_id = _unknown_id(tokenizer, self.backend) if unk_id is None else unk_id
        self.word_level = is_word_level(self.backend)

    def encode(self, texts: Sequence[str]) -> TokenBatch:
        """Token ids of ``texts`` (checked), cut to ``max_tokens`` and padded to the longest of them."""
        encodings = self.backend.encode_batch(check_texts(texts))
        longest = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), longest), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), longest), dtype=np.int64)
        unknown = tokens = 0
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
            words = [i for i, special in zip(e.ids, e.special_tokens_mask) if not special]
            tokens += len(words)
            unknown += sum(i == self.unk_id for i in words)
        return TokenBatch(ids, mask, [bool(e.overflowing) for e in encodings], unknown, tokens)


def _unknown_id(tokenizer: Any, backend) -> Optional[int]:
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        token = getattr(backend.model, "unk_token", None)
        unk = backend.token_to_id(token) if token else None
    return unk


def length_groups(lengths: np.ndarray, per_call: float, per_token: float) -> list[np.ndarray]:
    """The rows of a batch split into groups of similar length, each to run padded to its longest: the
    split of the rows sorted by length that costs least when a run costs ``per_call`` plus ``per_token``
    per token it reads, padding included. With ``per_token`` 0 (or no cost known) one group."""
    order = np.argsort(lengths, kind="stable")
    if per_token <= 0 or len(order) < 2:
        return [order]
    sorted_lengths = lengths[order].tolist()
    n = len(order)
    best, start = [0.0] + [float("inf")] * n, [0] * (n + 1)
    for end in range(1, n + 1):
        longest = sorted_lengths[end - 1]
        for first in range(end):
            cost = best[first] + per_call + (end - first) * longest * per_token
            if cost < best[end]:
                best[end], start[end] = cost, first
    groups, end = [], n
    while end:
        groups.append(order[start[end]:end])
        end = start[end]
    return groups[::-1]
