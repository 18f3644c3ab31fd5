"""Texts in, scores out: the one path from raw text to ITHP-DeBERTa's scores.

``model.predict``, ``ithp-fast predict`` and servers built on them all go through
:class:`TextScorer`: each text is tokenised by the model's tokenizer (``[CLS]`` and ``[SEP]`` added),
cut to ``max_seq_length`` tokens as in training (its last token stays ``[SEP]``), the texts of a
batch are padded to the batch's longest one, and the logits come from the backbone and ITHP's
posterior mean on the first token (:func:`ithp_fast.serving.logits.first_token_logits`, the
computation ``deberta_logits`` and the exported programs run). A model that does not pass the
attention mask to its backbone reads every text padded to ``max_seq_length``, as it was trained.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn

from ..encode import encode
from .logits import first_token_logits

Logits = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class ScoredTexts:
    """What :meth:`TextScorer.score` returns."""

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


@dataclass
class EncodedBatch:
    """A batch of texts as the model reads them."""

    input_ids: torch.Tensor  # [batch, longest] int64
    attention_mask: torch.Tensor  # [batch, longest] int64, 1 on the text's tokens
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


def posterior_mean_logits(model: nn.Module) -> Logits:
    """``(input_ids, attention_mask) -> logits`` of ``model`` with ITHP's posterior mean, without gradients."""
    ithp = model.ithp

    def logits(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return first_token_logits(model, input_ids, attention_mask, lambda x: encode(ithp, x, sample=False))

    return logits


class TextScorer:
    """Scores texts with an ``ITHPDeberta``.

    Args:
        model: an [`ithp_fast.ITHPDeberta`][] on the device to score on (scored in eval mode, its mode
            restored after).
        tokenizer: the model's tokenizer (default: ``model.tokenizer``, which ``from_pretrained`` and
            ``load_checkpoint`` attach).
        batch_size: texts per forward.
        max_tokens: tokens per text at most, ``[CLS]`` and ``[SEP]`` included (default: the model's
            ``max_seq_length``).
        logits: ``(input_ids, attention_mask) -> logits`` to run instead of the model's eager posterior
            mean (for example a ``ServingDeberta`` or an ONNX Runtime session of the same model).
    """

    def __init__(self, model: nn.Module, tokenizer: Any = None, *, batch_size: int = 32,
                 max_tokens: Optional[int] = None, logits: Optional[Logits] = None) -> None:
        tokenizer = getattr(model, "tokenizer", None) if tokenizer is None else tokenizer
        if tokenizer is None:
            raise ValueError("tokenizer: the model carries none (it was trained on token ids, or built without "
                             "one); pass tokenizer=, or load the model from a directory that holds one")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
        self.model = model
        self.batch_size = batch_size
        self.max_tokens = max_tokens or model.max_seq_length
        self.backend = backend_tokenizer(tokenizer)
        self.backend.no_padding()
        self.backend.enable_truncation(self.max_tokens)
        self.unk_id = _unknown_id(tokenizer, self.backend)
        self.word_level = type(self.backend.model).__name__ == "WordLevel"
        self.pad_id = model.dberta.model.config.pad_token_id or 0
        self.device = next(model.parameters()).device
        self.logits = posterior_mean_logits(model) if logits is None else logits

    def encode(self, texts: Sequence[str]) -> EncodedBatch:
        """Token ids of ``texts`` (checked), cut to ``max_tokens`` and padded to the longest of them."""
        encodings = self.backend.encode_batch(check_texts(texts))
        longest = max(len(e.ids) for e in encodings)
        ids = torch.full((len(encodings), longest), self.pad_id, dtype=torch.int64)
        mask = torch.zeros((len(encodings), longest), dtype=torch.int64)
        unknown = tokens = 0
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = torch.tensor(e.ids, dtype=torch.int64)
            mask[row, : len(e.ids)] = 1
            words = [i for i, special in zip(e.ids, e.special_tokens_mask) if not special]
            tokens += len(words)
            unknown += sum(i == self.unk_id for i in words)
        return EncodedBatch(ids, mask, [bool(e.overflowing) for e in encodings], unknown, tokens)

    def score(self, texts: Sequence[str], *, progress: bool = False, warn: bool = True) -> ScoredTexts:
        """Score ``texts`` ``batch_size`` at a time (a tqdm bar with ``progress``). With ``warn``, one
        warning counts the words (tokens) outside the vocabulary, if any."""
        from tqdm import tqdm

        texts = check_texts(texts)
        scores, cut, unknown, tokens = [], [], 0, 0
        starts = range(0, len(texts), self.batch_size)
        was_training = self.model.training
        self.model.eval()
        try:
            for start in tqdm(starts, desc="scoring", unit="batch", disable=not progress, leave=False):
                batch = self.encode(texts[start : start + self.batch_size])
                logits = self.logits(batch.input_ids.to(self.device), batch.attention_mask.to(self.device))
                values = logits.float().cpu()
                scores.extend(values[:, 0].tolist() if values.shape[1] == 1 else values.tolist())
                cut.extend(batch.cut)
                unknown, tokens = unknown + batch.unknown, tokens + batch.tokens
        finally:
            self.model.train(was_training)
        result = ScoredTexts(scores, cut, unknown, tokens, self.word_level)
        if warn and result.unknown_message():
            warnings.warn(result.unknown_message(), stacklevel=2)
        return result


def _unknown_id(tokenizer: Any, backend) -> Optional[int]:
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        token = getattr(backend.model, "unk_token", None)
        unk = backend.token_to_id(token) if token else None
    return unk
