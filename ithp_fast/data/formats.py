"""Reading the two pickle layouts of the aligned CMU-MOSI / CMU-MOSEI data, with validation.

Word-level layout (MAG-BERT's, used by the ITHP authors): a dict with splits ``train``, ``dev``,
``test``; each split a list of ``((words, visual, acoustic), label, segment)`` with ``words`` a
list of strings, ``visual`` ``[n_words, d_v]``, ``acoustic`` ``[n_words, d_a]``, ``label`` a score
in [-3, 3] (shape ``[1, 1]``) and ``segment`` an id.

Array layout (MMSA's ``aligned_50.pkl``): a dict with splits ``train``, ``valid``, ``test``; each a
dict of arrays ``text_bert`` ``[N, 3, T]`` (token ids, attention mask, segment ids), ``audio``
``[N, T, d_a]``, ``vision`` ``[N, T, d_v]``, ``regression_labels`` ``[N]`` and optionally ``id``;
``-inf`` in the features is read as 0.

Both are read with :mod:`pickle`, which runs code stored in the file: only pass a path you chose
and trust. Every problem found raises :class:`DataFormatError` naming the file, the split, the
example index and what is wrong.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

LABEL_RANGE = (-3.0, 3.0)
SPLITS = ("train", "valid", "test")
# Split names of each layout, in the order of SPLITS.
WORD_SPLITS = ("train", "dev", "test")
ARRAY_SPLITS = ("train", "valid", "test")
ARRAY_KEYS = ("text_bert", "audio", "vision", "regression_labels")


class DataFormatError(ValueError):
    """A data file does not have the expected layout; the message says where and what."""

    def __init__(self, path: str, problem: str, split: Optional[str] = None, index: Optional[int] = None) -> None:
        where = [str(path)]
        if split is not None:
            where.append(f"split {split!r}")
        if index is not None:
            where.append(f"example {index}")
        super().__init__(f"{', '.join(where)}: {problem}")
        self.path, self.split, self.index, self.problem = str(path), split, index, problem


@dataclass
class WordExample:
    """One utterance of the word-level layout."""

    words: list[str]
    visual: np.ndarray  # [n_words, d_v] float32
    acoustic: np.ndarray  # [n_words, d_a] float32
    label: float
    segment: str


@dataclass
class ArraySplit:
    """One split of the array layout, checked and converted."""

    input_ids: np.ndarray  # [N, T] int64
    attention_mask: np.ndarray  # [N, T] int64
    visual: np.ndarray  # [N, T, d_v] float32
    acoustic: np.ndarray  # [N, T, d_a] float32
    labels: np.ndarray  # [N] float32
    ids: list[str]


def read_pickle(path: str | os.PathLike) -> Any:
    """Unpickle ``path``. Unpickling runs code stored in the file: pass only files you trust."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise DataFormatError(path, "a directory; expected a pickle file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such data file")
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except ModuleNotFoundError as exc:
        raise DataFormatError(
            path, f"not a readable pickle: it needs the module {exc.name!r}, which is not installed here"
        ) from None
    except Exception as exc:  # unpickling runs the file's code: anything may fail, it is the file's fault
        problem = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else type(exc).__name__
        raise DataFormatError(path, f"not a readable pickle ({problem})") from None


def detect_layout(obj: Any, path: str) -> str:
    """``"words"`` (train/dev/test lists) or ``"arrays"`` (train/valid/test dicts of arrays)."""
    if not isinstance(obj, dict):
        raise DataFormatError(
            path,
            f"expected a dict of splits ({', '.join(WORD_SPLITS)} for the word-level layout or "
            f"{', '.join(ARRAY_SPLITS)} for the array layout), got {type(obj).__name__}",
        )
    if "dev" in obj:
        layout = "words"
    elif "valid" in obj:
        layout = "arrays"
    elif isinstance(obj.get("train"), dict):
        layout = "arrays"
    elif isinstance(obj.get("train"), (list, tuple)):
        layout = "words"
    else:
        raise DataFormatError(
            path,
            f"cannot tell the layout: expected splits {list(WORD_SPLITS)} (word-level) or "
            f"{list(ARRAY_SPLITS)} (array layout), found keys {sorted(map(str, obj))}",
        )
    names = WORD_SPLITS if layout == "words" else ARRAY_SPLITS
    for name in names:
        if name not in obj:
            kind = "word-level" if layout == "words" else "array"
            raise DataFormatError(
                path,
                f"split {name!r} missing ({kind} layout expects {list(names)}; found keys {sorted(map(str, obj))})",
            )
    return layout


def _features(value: Any, name: str, path: str, split: str, index: int, allow_neg_inf: bool = False) -> np.ndarray:
    """A finite float32 array ``[rows, width]``."""
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError) as exc:
        raise DataFormatError(path, f"{name}: ragged or non-numeric features ({exc})", split, index) from exc
    if arr.ndim != 2:
        raise DataFormatError(path, f"{name}: expected an array [rows, width], got shape {arr.shape}", split, index)
    return _finite(arr, name, path, split, index, allow_neg_inf)


def _finite(arr: np.ndarray, name: str, path: str, split: str, index: Optional[int], allow_neg_inf: bool) -> np.ndarray:
    if np.isnan(arr).any():
        raise DataFormatError(path, f"{name}: holds NaN", split, index)
    if allow_neg_inf:
        arr = np.where(np.isneginf(arr), np.float32(0), arr)
    if np.isinf(arr).any():
        raise DataFormatError(path, f"{name}: holds infinite values", split, index)
    return arr


def _label(value: Any, path: str, split: str, index: int) -> float:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise DataFormatError(path, f"label: not a number ({exc})", split, index) from exc
    if arr.size != 1:
        raise DataFormatError(path, f"label: expected one value (shape [1, 1]), got shape {arr.shape}", split, index)
    return _check_label(float(arr.reshape(())), path, split, index)


def _check_label(v: float, path: str, split: str, index: int) -> float:
    lo, hi = LABEL_RANGE
    if not np.isfinite(v):
        raise DataFormatError(path, f"label: {v} is not finite", split, index)
    if not lo - 1e-6 <= v <= hi + 1e-6:
        raise DataFormatError(path, f"label: {v} is outside [{lo:g}, {hi:g}]", split, index)
    return v


def parse_word_level(obj: dict, path: str) -> dict[str, list[WordExample]]:
    """Check and convert the word-level layout; keys of the result are ``train``/``valid``/``test``."""
    out: dict[str, list[WordExample]] = {}
    widths: dict[str, tuple[int, str]] = {}  # feature name -> (width, where it was first seen)
    for canonical, name in zip(SPLITS, WORD_SPLITS):
        entries = obj[name]
        if not isinstance(entries, (list, tuple)):
            raise DataFormatError(path, f"expected a list of examples, got {type(entries).__name__}", name)
        if len(entries) == 0:
            raise DataFormatError(path, "split is empty", name)
        examples = []
        for i, entry in enumerate(entries):
            if not (
                isinstance(entry, (list, tuple))
                and len(entry) == 3
                and isinstance(entry[0], (list, tuple))
                and len(entry[0]) == 3
            ):
                raise DataFormatError(
                    path,
                    f"expected ((words, visual, acoustic), label, segment), got {type(entry).__name__} {_short(entry)}",
                    name,
                    i,
                )
            (words, visual, acoustic), label, segment = entry
            if isinstance(words, np.ndarray):
                words = words.tolist()
            if not isinstance(words, (list, tuple)) or not all(isinstance(w, str) for w in words):
                raise DataFormatError(path, f"words: expected a list of strings, got {_short(words)}", name, i)
            if len(words) == 0:
                raise DataFormatError(path, "words: the example has no words", name, i)
            feats = {}
            for feat_name, value in (("visual", visual), ("acoustic", acoustic)):
                arr = _features(value, feat_name, path, name, i)
                if arr.shape[0] != len(words):
                    raise DataFormatError(
                        path,
                        f"{feat_name}: {arr.shape[0]} rows for {len(words)} words (one row per word expected)",
                        name,
                        i,
                    )
                seen = widths.setdefault(feat_name, (arr.shape[1], f"split {name!r}, example {i}"))
                if arr.shape[1] != seen[0]:
                    raise DataFormatError(
                        path,
                        f"{feat_name}: width {arr.shape[1]} differs from {seen[0]} (the width at {seen[1]})",
                        name,
                        i,
                    )
                feats[feat_name] = arr
            examples.append(
                WordExample(
                    list(words), feats["visual"], feats["acoustic"], _label(label, path, name, i), _segment(segment)
                )
            )
        out[canonical] = examples
    return out


def parse_arrays(obj: dict, path: str) -> dict[str, ArraySplit]:
    """Check and convert the array layout; keys of the result are ``train``/``valid``/``test``."""
    out: dict[str, ArraySplit] = {}
    widths: dict[str, tuple[int, str]] = {}
    for canonical, name in zip(SPLITS, ARRAY_SPLITS):
        split = obj[name]
        if not isinstance(split, dict):
            raise DataFormatError(
                path, f"expected a dict of arrays {list(ARRAY_KEYS)}, got {type(split).__name__}", name
            )
        missing = [k for k in ARRAY_KEYS if k not in split]
        if missing:
            raise DataFormatError(path, f"missing arrays {missing} (found {sorted(map(str, split))})", name)
        text = _stack(split["text_bert"], "text_bert", path, name)
        if text.ndim != 3 or text.shape[1] != 3:
            raise DataFormatError(
                path, f"text_bert: expected shape [N, 3, tokens] (ids, mask, segment ids), got {text.shape}", name
            )
        n, tokens = text.shape[0], text.shape[2]
        if n == 0:
            raise DataFormatError(path, "split is empty", name)
        if not np.all(np.isfinite(text)) or not np.all(text == np.round(text)) or (text < 0).any():
            bad = int(np.argwhere(~np.isfinite(text) | (text != np.round(text)) | (text < 0))[0][0])
            raise DataFormatError(path, "text_bert: token ids and mask must be non-negative integers", name, bad)
        feats = {}
        for key, feat_name in (("vision", "visual"), ("audio", "acoustic")):
            arr = _stack(split[key], key, path, name)
            if arr.ndim != 3:
                raise DataFormatError(path, f"{key}: expected shape [N, tokens, width], got {arr.shape}", name)
            if arr.shape[0] != n:
                raise DataFormatError(path, f"{key}: {arr.shape[0]} examples but text_bert has {n}", name)
            if arr.shape[1] != tokens:
                raise DataFormatError(
                    path, f"{key}: {arr.shape[1]} tokens per example but text_bert has {tokens}", name
                )
            for i in np.flatnonzero(np.isnan(arr).any(axis=(1, 2)))[:1]:
                raise DataFormatError(path, f"{key}: holds NaN", name, int(i))
            arr = np.where(np.isneginf(arr), np.float32(0), arr)
            for i in np.flatnonzero(np.isinf(arr).any(axis=(1, 2)))[:1]:
                raise DataFormatError(path, f"{key}: holds +inf", name, int(i))
            seen = widths.setdefault(key, (arr.shape[2], f"split {name!r}"))
            if arr.shape[2] != seen[0]:
                raise DataFormatError(
                    path, f"{key}: width {arr.shape[2]} differs from {seen[0]} (the width in {seen[1]})", name
                )
            feats[feat_name] = arr
        labels = _stack(split["regression_labels"], "regression_labels", path, name)
        if labels.size != n:
            raise DataFormatError(
                path, f"regression_labels: expected {n} values (one per example), got shape {labels.shape}", name
            )
        labels = labels.reshape(-1)
        for i, v in enumerate(labels.tolist()):
            _check_label(v, path, name, i)
        ids = (
            [_segment(s) for s in split["id"]]
            if "id" in split and len(split["id"]) == n
            else [f"{name}-{i}" for i in range(n)]
        )
        out[canonical] = ArraySplit(
            input_ids=text[:, 0].astype(np.int64),
            attention_mask=text[:, 1].astype(np.int64),
            visual=feats["visual"],
            acoustic=feats["acoustic"],
            labels=labels.astype(np.float32),
            ids=ids,
        )
    return out


def _stack(value: Any, key: str, path: str, split: str) -> np.ndarray:
    """A float array from an array or a list of per-example arrays; names the first ragged example."""
    try:
        return np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError) as exc:
        if isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.dtype == object):
            first = np.shape(value[0]) if len(value) else None
            for i, item in enumerate(value):
                try:
                    shape = np.asarray(item, dtype=np.float32).shape
                except (ValueError, TypeError):
                    raise DataFormatError(path, f"{key}: ragged or non-numeric values", split, i) from exc
                if shape != first:
                    raise DataFormatError(
                        path, f"{key}: ragged: shape {shape} differs from {first} (example 0)", split, i
                    ) from exc
        raise DataFormatError(path, f"{key}: ragged or non-numeric ({exc})", split) from exc


def _segment(segment: Any) -> str:
    if isinstance(segment, bytes):
        return segment.decode("utf-8", "replace")
    if isinstance(segment, (tuple, list)):
        return "_".join(map(str, segment))
    return str(segment)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
