"""Turning the word-level layout into token ids and token-aligned features.

Each word is tokenised on its own; its visual and acoustic row is repeated for every token the
word becomes. The sequence is cut to ``max_len - 2`` tokens and framed by the classifier and
separator tokens; those two and the padding get all-zero feature rows and attention mask 0 on
the padding.

Two tokenisers:

* :class:`PretrainedWordTokenizer`: the tokenizer saved with a local backbone directory
  (``transformers.AutoTokenizer``, ``local_files_only=True``: nothing is downloaded).
* :class:`WordVocabulary`: for a randomly initialised backbone, which has no pretrained tokenizer.
  A word-level vocabulary built from the training split: words lower-cased, ordered by
  decreasing count then alphabetically (so the same data always gives the same ids), ids 0..3
  reserved for ``[PAD] [CLS] [SEP] [UNK]``; words absent from the training split map to ``[UNK]``.
  Each word is one token. Saved beside a checkpoint as a Hugging Face tokenizer (``tokenizer.json``,
  ``tokenizer_config.json``: a ``tokenizers`` WordLevel model with the ``[CLS] ... [SEP]`` template,
  which ``transformers.AutoTokenizer`` loads as a fast tokenizer); checkpoints of earlier versions hold
  it as ``vocab.json``, which still loads.

Raw text (``predict``) is read as the word lists were: lower-cased and split at whitespace, punctuation
split off words unless the vocabulary holds words with punctuation in them.
"""

from __future__ import annotations

import json
import os
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np

SPECIAL_TOKENS = ("[PAD]", "[CLS]", "[SEP]", "[UNK]")
VOCAB_FILE = "vocab.json"
"""The vocabulary file of checkpoints written before the Hugging Face tokenizer files."""
TOKENIZER_FILE = "tokenizer.json"


class WordTokenizer(Protocol):
    """What the aligner needs from a tokenizer."""

    pad_id: int
    cls_id: int
    sep_id: int
    vocab_size: int

    def encode_word(self, word: str) -> list[int]:
        """Token ids of one word (no special tokens)."""
        ...


class WordVocabulary:
    """A deterministic word-level vocabulary (one token per word), built from training words."""

    pad_id, cls_id, sep_id, unk_id = range(len(SPECIAL_TOKENS))

    def __init__(self, words: Sequence[str]) -> None:
        self.tokens = list(SPECIAL_TOKENS) + [w for w in words if w not in SPECIAL_TOKENS]
        self.ids = {w: i for i, w in enumerate(self.tokens)}
        if len(self.ids) != len(self.tokens):
            raise ValueError("WordVocabulary: duplicate words")

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], max_size: int | None = None) -> "WordVocabulary":
        """From the training split's word lists; ``max_size`` caps the vocabulary (specials included)."""
        counts = Counter(w.lower() for words in sentences for w in words)
        ordered = sorted(counts, key=lambda w: (-counts[w], w))
        if max_size is not None:
            ordered = ordered[: max(0, max_size - len(SPECIAL_TOKENS))]
        return cls(ordered)

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def encode_word(self, word: str) -> list[int]:
        return [self.ids.get(word.lower(), self.unk_id)]

    def to_tokenizer(self, max_length: int):
        """This vocabulary as a ``transformers`` fast tokenizer: text lower-cased, split at whitespace
        (and punctuation, see the module), ``[CLS] words [SEP]``, cut to ``max_length`` tokens, padded to
        the longest text of a batch. Its ``tokenizer.json`` carries the cut and the padding, so that the
        ``tokenizers`` package alone reads text as the model does."""
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
        from transformers import PreTrainedTokenizerFast

        pad, cls_token, sep, unk = SPECIAL_TOKENS
        backend = Tokenizer(models.WordLevel(dict(self.ids), unk_token=unk))
        backend.normalizer = normalizers.Lowercase()
        splits = [pre_tokenizers.WhitespaceSplit()]
        if not any(_has_punctuation(word) for word in self.tokens[len(SPECIAL_TOKENS) :]):
            splits.append(pre_tokenizers.Punctuation("isolated"))
        backend.pre_tokenizer = pre_tokenizers.Sequence(splits)
        backend.post_processor = processors.TemplateProcessing(
            single=f"{cls_token} $A {sep}", pair=f"{cls_token} $A {sep} $B {sep}",
            special_tokens=[(cls_token, self.cls_id), (sep, self.sep_id)],
        )
        backend.enable_truncation(max_length)
        backend.enable_padding(pad_id=self.pad_id, pad_token=pad)
        return PreTrainedTokenizerFast(
            tokenizer_object=backend, pad_token=pad, cls_token=cls_token, sep_token=sep, unk_token=unk,
            model_max_length=max_length, model_input_names=["input_ids", "attention_mask"],
        )

    def save(self, directory: str | os.PathLike, *, max_length: int = 50) -> None:
        """Write the vocabulary as a Hugging Face tokenizer (see :meth:`to_tokenizer`)."""
        self.to_tokenizer(max_length).save_pretrained(directory)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "WordVocabulary":
        """The vocabulary saved in ``directory`` (``tokenizer.json``, or an earlier version's ``vocab.json``)."""
        path = os.path.join(directory, TOKENIZER_FILE)
        if os.path.isfile(path):
            from tokenizers import Tokenizer

            vocab = Tokenizer.from_file(path).get_vocab()
            tokens = sorted(vocab, key=vocab.__getitem__)
        else:
            path = os.path.join(directory, VOCAB_FILE)
            with open(path) as f:
                tokens = json.load(f)["tokens"]
        if tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"{path}: expected the first tokens to be {list(SPECIAL_TOKENS)}")
        return cls(tokens[len(SPECIAL_TOKENS) :])


def _has_punctuation(word: str) -> bool:
    return any(unicodedata.category(c).startswith("P") for c in word)


class PretrainedWordTokenizer:
    """A ``transformers`` tokenizer applied word by word (results cached per word)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        ids = {name: getattr(tokenizer, f"{name}_token_id", None) for name in ("cls", "sep", "pad")}
        missing = [k for k, v in ids.items() if v is None]
        if missing:
            raise ValueError(
                f"tokenizer: has no {', '.join(m + '_token' for m in missing)}; "
                f"a DeBERTa/BERT-style tokenizer is needed"
            )
        self.cls_id, self.sep_id, self.pad_id = ids["cls"], ids["sep"], ids["pad"]
        self.vocab_size = len(tokenizer)
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def from_directory(cls, path: str | os.PathLike) -> "PretrainedWordTokenizer":
        """Load the tokenizer saved in a local directory (never downloads)."""
        from transformers import AutoTokenizer

        path = os.fspath(path)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"tokenizer: {path!r} is not a local directory; nothing is downloaded")
        try:
            tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise FileNotFoundError(f"tokenizer: no usable tokenizer files in {path!r} ({first})") from exc
        return cls(tok)

    def encode_word(self, word: str) -> list[int]:
        ids = self._cache.get(word)
        if ids is None:
            ids = self._cache[word] = list(self.tokenizer.encode(word, add_special_tokens=False))
        return ids

    def save(self, directory: str | os.PathLike, *, max_length: int | None = None) -> None:
        """The tokenizer's own files; ``max_length`` becomes its ``model_max_length`` (the model's cut)."""
        if max_length is not None:
            self.tokenizer.model_max_length = max_length
        self.tokenizer.save_pretrained(directory)


def align_words(
    words: Sequence[str], visual: np.ndarray, acoustic: np.ndarray, tokenizer: WordTokenizer, max_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(input_ids [T], attention_mask [T], visual [T, d_v], acoustic [T, d_a])`` with ``T = max_len``."""
    if max_len < 2:
        raise ValueError(f"max_len: expected at least 2 (classifier and separator tokens), got {max_len}")
    ids: list[int] = []
    rows: list[int] = []
    for row, word in enumerate(words):
        pieces = tokenizer.encode_word(word)
        ids.extend(pieces)
        rows.extend([row] * len(pieces))
    ids, rows = ids[: max_len - 2], rows[: max_len - 2]
    n = len(ids)
    input_ids = np.full(max_len, tokenizer.pad_id, dtype=np.int64)
    input_ids[0], input_ids[1 : n + 1], input_ids[n + 1] = tokenizer.cls_id, ids, tokenizer.sep_id
    mask = np.zeros(max_len, dtype=np.int64)
    mask[: n + 2] = 1
    out_v = np.zeros((max_len, visual.shape[1]), dtype=np.float32)
    out_a = np.zeros((max_len, acoustic.shape[1]), dtype=np.float32)
    out_v[1 : n + 1] = visual[rows]
    out_a[1 : n + 1] = acoustic[rows]
    return input_ids, mask, out_v, out_a
