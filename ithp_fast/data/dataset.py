"""Token-aligned tensors for training and evaluation, from either pickle layout or the synthetic set."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .formats import DataFormatError, detect_layout, parse_arrays, parse_word_level, read_pickle
from .synthetic import SyntheticSpec, make_synthetic
from .tokenize import WordTokenizer, WordVocabulary, align_words

DETECTOR_NAMES = ("acoustic", "visual")
"""The detectors every loader reads, by name (whatever level a model gives them)."""


class SentimentSplit(Dataset):
    """One split as tensors; items are dicts with ``index``, ``input_ids`` ``[T]``,
    ``attention_mask`` ``[T]``, ``visual`` ``[T, d_v]``, ``acoustic`` ``[T, d_a]``, ``label``."""

    def __init__(self, input_ids, attention_mask, visual, acoustic, labels, ids: list[str]) -> None:
        self.input_ids = torch.as_tensor(input_ids, dtype=torch.long)
        self.attention_mask = torch.as_tensor(attention_mask, dtype=torch.long)
        self.visual = torch.as_tensor(visual, dtype=torch.float32)
        self.acoustic = torch.as_tensor(acoustic, dtype=torch.float32)
        self.labels = torch.as_tensor(labels, dtype=torch.float32).reshape(-1)
        self.ids = list(ids)
        n = self.labels.shape[0]
        for name in ("input_ids", "attention_mask", "visual", "acoustic"):
            if getattr(self, name).shape[0] != n:
                raise ValueError(f"SentimentSplit: {name} has {getattr(self, name).shape[0]} examples, labels has {n}")

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, i: int) -> dict:
        return {
            "index": i,
            "input_ids": self.input_ids[i],
            "attention_mask": self.attention_mask[i],
            "visual": self.visual[i],
            "acoustic": self.acoustic[i],
            "label": self.labels[i],
        }


@dataclass
class SentimentData:
    """The three splits plus what the model needs to know about them."""

    splits: dict[str, SentimentSplit]
    layout: str  # "words" (word-level pickle), "arrays" (MMSA pickle) or "synthetic"
    source: str
    tokenizer: Optional[WordTokenizer] = None  # None for the array layout (ids come with the data)
    info: dict = field(default_factory=dict)

    @property
    def visual_dim(self) -> int:
        return int(self.splits["train"].visual.shape[-1])

    @property
    def acoustic_dim(self) -> int:
        return int(self.splits["train"].acoustic.shape[-1])

    @property
    def detector_dims(self) -> dict[str, int]:
        """The width of each detector, by name."""
        return {name: int(getattr(self.splits["train"], name).shape[-1]) for name in DETECTOR_NAMES}

    @property
    def vocab_size(self) -> int:
        """Token ids the backbone must accept (the tokenizer's size, or max id + 1 for the array layout)."""
        if self.tokenizer is not None:
            return int(self.tokenizer.vocab_size)
        return int(max(int(s.input_ids.max()) for s in self.splits.values()) + 1)

    @property
    def synthetic_spec(self) -> Optional[SyntheticSpec]:
        """The spec the synthetic set was generated from (None for data that was not generated)."""
        if self.layout != "synthetic" or "synthetic" not in self.info:
            return None
        made = self.info["synthetic"]
        return SyntheticSpec(made["seed"], tuple(made["sizes"]), self.visual_dim, self.acoustic_dim)

    def describe(self) -> dict:
        return {
            "layout": self.layout,
            "source": self.source,
            "sizes": {k: len(v) for k, v in self.splits.items()},
            "tokens": int(self.splits["train"].input_ids.shape[1]),
            "visual_dim": self.visual_dim,
            "acoustic_dim": self.acoustic_dim,
            "vocab_size": self.vocab_size,
            **self.info,
        }


def _from_words(raw: dict, path: str, tokenizer: Optional[WordTokenizer], max_len: int) -> tuple[dict, WordTokenizer]:
    parsed = parse_word_level(raw, path)
    if tokenizer is None:
        tokenizer = WordVocabulary.build(ex.words for ex in parsed["train"])
    splits = {}
    for name, examples in parsed.items():
        cols = [align_words(ex.words, ex.visual, ex.acoustic, tokenizer, max_len) for ex in examples]
        ids, mask, visual, acoustic = (np.stack(c) for c in zip(*cols))
        splits[name] = SentimentSplit(
            ids, mask, visual, acoustic, [ex.label for ex in examples], [ex.segment for ex in examples]
        )
    return splits, tokenizer


def _from_arrays(raw: dict, path: str, max_len: int) -> dict:
    splits = {}
    for name, s in parse_arrays(raw, path).items():
        t = min(max_len, s.input_ids.shape[1])
        splits[name] = SentimentSplit(
            s.input_ids[:, :t], s.attention_mask[:, :t], s.visual[:, :t], s.acoustic[:, :t], s.labels, s.ids
        )
    return splits


def load_sentiment_data(
    path: Union[str, os.PathLike, Mapping, None] = None,
    *,
    tokenizer: Optional[WordTokenizer] = None,
    max_len: int = 50,
    synthetic: SyntheticSpec = SyntheticSpec(),
) -> SentimentData:
    """Load a pickle in either layout (``path``), or generate the synthetic set when ``path`` is None.

    ``path`` is unpickled, which runs code stored in the file: pass only a file you trust. The
    object a pickle holds (a dict in either layout) may be given instead of a path.
    ``tokenizer`` turns words into ids for the word-level layout (and the synthetic set); without
    one, a ``WordVocabulary`` is built from the training split. The array layout carries its
    own token ids and ignores it.
    """
    if max_len < 2:
        raise ValueError(f"max_len: expected at least 2 tokens, got {max_len}")
    if path is None:
        source = f"synthetic(seed={synthetic.seed}, sizes={list(synthetic.sizes)})"
        splits, tokenizer = _from_words(make_synthetic(synthetic), source, tokenizer, max_len)
        return SentimentData(
            splits,
            "synthetic",
            source,
            tokenizer,
            {"synthetic": {"seed": synthetic.seed, "sizes": list(synthetic.sizes)}},
        )
    if isinstance(path, Mapping):
        raw, path = dict(path), "in-memory data"
    else:
        path = os.fspath(path)
        raw = read_pickle(path)
    layout = detect_layout(raw, path)
    if layout == "words":
        splits, tokenizer = _from_words(raw, path, tokenizer, max_len)
        return SentimentData(splits, layout, path, tokenizer)
    return SentimentData(_from_arrays(raw, path, max_len), layout, path, None)


def check_feature_widths(data: SentimentData, detector_dims: Mapping[str, int], what: str = "the model") -> None:
    """A clear error when a detector of the data is missing or its width differs from the model's.

    ``detector_dims``: the model's width of each detector, by name, in its level order.
    """
    problems = []
    have = data.detector_dims
    for level, (name, width) in enumerate(detector_dims.items()):
        if name not in have:
            problems.append(
                f"no detector named {name!r} ({what} has one at level {level + 1}; the data have {', '.join(have)})"
            )
        elif have[name] != width:
            problems.append(
                f"{name} width {have[name]} but {what} has {width} for {name} "
                f"(detector_dims[{level}], level {level + 1})"
            )
    if problems:
        raise DataFormatError(data.source, "; ".join(problems))


def minmax_normalise(t: torch.Tensor, bounds: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> torch.Tensor:
    """``(t - min) / (max - min)`` with the global min and max of the batch (or the given ``bounds``).

    A constant batch (max == min) gives zeros instead of the 0/0 of the plain formula.
    """
    lo, hi = bounds if bounds is not None else (t.min(), t.max())
    span = hi - lo
    return torch.where(span > 0, (t - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(t))
