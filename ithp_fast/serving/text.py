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
from typing import Any, Callable, Optional

import torch
from torch import nn

from ..encode import encode
from .logits import first_token_logits
from .tokens import ScoredTexts, TextTokenizer, TokenBatch, check_texts, score_rows

__all__ = ["TextScorer", "posterior_mean_logits"]

Logits = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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
        self.tokenizer = TextTokenizer(tokenizer, self.max_tokens, model.dberta.model.config.pad_token_id or 0)
        self.device = next(model.parameters()).device
        self.logits = posterior_mean_logits(model) if logits is None else logits

    def encode(self, texts: Sequence[str]) -> TokenBatch:
        """Token ids of ``texts`` (checked), cut to ``max_tokens`` and padded to the longest of them (NumPy
        arrays ``[batch, longest]``)."""
        return self.tokenizer.encode(texts)

    def score(self, texts: Sequence[str], *, progress: bool = False, warn: bool = True) -> ScoredTexts:
        """Score ``texts`` ``batch_size`` at a time (a tqdm bar with ``progress``). With ``warn``, one
        warning counts the words (tokens) outside the vocabulary, if any."""
        from tqdm import tqdm

        texts = check_texts(texts)
        parts = [ScoredTexts([], [], 0, 0, self.tokenizer.word_level)]  # no texts: an empty result
        starts = range(0, len(texts), self.batch_size)
        was_training = self.model.training
        self.model.eval()
        try:
            for start in tqdm(starts, desc="scoring", unit="batch", disable=not progress, leave=False):
                batch = self.encode(texts[start : start + self.batch_size])
                input_ids, attention_mask = (torch.from_numpy(a).to(self.device)
                                             for a in (batch.input_ids, batch.attention_mask))
                values = self.logits(input_ids, attention_mask).float().cpu()
                parts.append(ScoredTexts(score_rows(values), batch.cut, batch.unknown, batch.tokens,
                                         self.tokenizer.word_level))
        finally:
            self.model.train(was_training)
        result = ScoredTexts.join(parts)
        if warn and result.unknown_message():
            warnings.warn(result.unknown_message(), stacklevel=2)
        return result

