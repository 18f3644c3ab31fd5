"""Loaders for both pickle layouts (fixture files written here), tokenisation, the synthetic set."""

import pickle
import re

import numpy as np
import pytest
import torch

from ithp_fast.data import (
    DataFormatError,
    PretrainedWordTokenizer,
    SyntheticSpec,
    WordVocabulary,
    align_words,
    check_feature_widths,
    load_sentiment_data,
    make_synthetic,
    minmax_normalise,
)
from ithp_fast.training.evaluate import synthetic_ceiling

D_V, D_A = 5, 4  # fixture widths (visual, acoustic)


# --------------------------------------------------------------------------- fixtures


def word_data(seed=0):
    """The word-level layout: train/dev/test lists of ((words, visual, acoustic), label [1, 1], segment)."""
    rng = np.random.default_rng(seed)

    def example(i, n, split):
        words = [f"Word{j}" for j in range(n)]
        return (
            (words, rng.random((n, D_V)).astype(np.float32), rng.random((n, D_A)).astype(np.float32)),
            np.array([[0.5 * i - 1.0]]),
            f"{split}_{i}",
        )

    return {name: [example(i, 3 + i, name) for i in range(k)] for name, k in (("train", 4), ("dev", 2), ("test", 3))}


def array_data(seed=0, tokens=6):
    """The array (MMSA) layout: train/valid/test dicts of arrays."""
    rng = np.random.default_rng(seed)

    def split(n, name):
        ids = rng.integers(5, 40, size=(n, tokens))
        mask = np.ones((n, tokens), dtype=np.int64)
        mask[:, -2:] = 0
        return {
            "text_bert": np.stack([ids, mask, np.zeros_like(ids)], axis=1).astype(np.float32),
            "audio": rng.random((n, tokens, D_A)).astype(np.float32),
            "vision": rng.random((n, tokens, D_V)).astype(np.float32),
            "regression_labels": np.linspace(-3, 3, n).astype(np.float32),
            "id": [f"{name}${i}" for i in range(n)],
            "raw_text": ["some words"] * n,
        }

    return {"train": split(4, "train"), "valid": split(3, "valid"), "test": split(3, "test")}


def dump(tmp_path, obj, name="data.pkl"):
    path = tmp_path / name
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    return str(path)


def expect_error(path, *parts):
    with pytest.raises(DataFormatError) as info:
        load_sentiment_data(path)
    msg = str(info.value)
    assert msg.startswith(path), msg
    for part in parts:
        assert part in msg, f"{part!r} not in {msg!r}"
    return info.value


# --------------------------------------------------------------------------- word-level layout


def test_word_level_layout_loads_and_aligns(tmp_path):
    data = load_sentiment_data(dump(tmp_path, word_data()), max_len=8)
    assert data.layout == "words" and set(data.splits) == {"train", "valid", "test"}  # dev -> valid
    assert data.synthetic_spec is None  # read, not generated: no text-only ceiling
    assert (data.visual_dim, data.acoustic_dim) == (D_V, D_A)
    train = data.splits["train"]
    assert train.input_ids.shape == (4, 8) and train.visual.shape == (4, 8, D_V) and train.acoustic.shape == (4, 8, D_A)
    assert train.labels.tolist() == [-1.0, -0.5, 0.0, 0.5]
    assert train.ids[2] == "train_2"
    raw = word_data()["train"][0]  # 3 words -> [CLS] w0 w1 w2 [SEP] pad pad pad
    vocab = data.tokenizer
    assert (
        train.input_ids[0].tolist()
        == [vocab.cls_id] + [vocab.ids[f"word{j}"] for j in range(3)] + [vocab.sep_id] + [vocab.pad_id] * 3
    )
    assert train.attention_mask[0].tolist() == [1] * 5 + [0] * 3
    np.testing.assert_array_equal(train.visual[0, 1:4].numpy(), raw[0][1])
    assert train.visual[0, [0, 4, 5, 6, 7]].abs().sum() == 0  # [CLS], [SEP] and padding rows are zero
    # example 3 has 6 words: cut to max_len - 2 = 6 tokens, [SEP] last, mask all ones
    assert train.input_ids[3, -1] == vocab.sep_id and train.attention_mask[3].sum() == 8


class PiecesTokenizer:
    """Splits each word into its characters (several tokens per word)."""

    pad_id, cls_id, sep_id, vocab_size = 0, 1, 2, 300

    def encode_word(self, word):
        return [3 + ord(c) % 200 for c in word]


def test_word_features_repeat_for_every_sub_word_token():
    visual = np.arange(2 * 3, dtype=np.float32).reshape(2, 3)
    acoustic = -np.arange(2 * 2, dtype=np.float32).reshape(2, 2) - 1
    ids, mask, v, a = align_words(["ab", "xyz"], visual, acoustic, PiecesTokenizer(), max_len=7)
    assert ids.tolist() == [1, 3 + ord("a"), 3 + ord("b"), 3 + ord("x"), 3 + ord("y"), 3 + ord("z") % 200, 2]
    assert mask.tolist() == [1] * 7
    np.testing.assert_array_equal(
        v, np.stack([np.zeros(3), visual[0], visual[0], visual[1], visual[1], visual[1], np.zeros(3)])
    )
    np.testing.assert_array_equal(a[1:3], acoustic[[0, 0]])
    with pytest.raises(ValueError, match="max_len"):
        align_words(["a"], visual[:1], acoustic[:1], PiecesTokenizer(), max_len=1)


def test_word_vocabulary_is_deterministic_lowercased_and_saved(tmp_path):
    sentences = [["The", "good", "movie"], ["the", "bad", "the"], ["good"]]
    vocab = WordVocabulary.build(sentences)
    assert vocab.tokens == ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "the", "good", "bad", "movie"]  # count, then alphabet
    assert vocab.encode_word("GOOD") == [5] and vocab.encode_word("unseen") == [vocab.unk_id]
    assert WordVocabulary.build(list(reversed(sentences))).tokens == vocab.tokens
    assert WordVocabulary.build(sentences, max_size=6).tokens[-1] == "good"
    vocab.save(tmp_path)
    assert WordVocabulary.load(tmp_path).tokens == vocab.tokens


def test_vocabulary_comes_from_the_training_split_only(tmp_path):
    raw = word_data()
    raw["test"][0][0][0][0] = "onlyintest"
    data = load_sentiment_data(dump(tmp_path, raw), max_len=8)
    assert "onlyintest" not in data.tokenizer.ids
    assert data.splits["test"].input_ids[0, 1] == data.tokenizer.unk_id


def test_pretrained_tokenizer_from_a_local_directory(tmp_path):
    from transformers import BertTokenizer

    vocab = tmp_path / "vocab.txt"
    vocab.write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "word", "##0", "##1", "##2", "##3", "##4", "##5"])
    )
    BertTokenizer(str(vocab)).save_pretrained(tmp_path / "tok")  # positional vocabulary file: transformers 4 and 5
    tok = PretrainedWordTokenizer.from_directory(tmp_path / "tok")
    assert tok.encode_word("Word1") == [5, 7]  # lower-cased word piece + "##1"
    data = load_sentiment_data(dump(tmp_path, word_data()), tokenizer=tok, max_len=10)
    # "Word0" "Word1" "Word2" -> 6 tokens, each word's features on both of its tokens
    ids = data.splits["train"].input_ids[0].tolist()
    assert ids[:8] == [2, 5, 6, 5, 7, 5, 8, 3]
    v = data.splits["train"].visual[0]
    assert torch.equal(v[1], v[2]) and torch.equal(v[3], v[4]) and not torch.equal(v[2], v[3])
    with pytest.raises(FileNotFoundError, match="not a local directory"):
        PretrainedWordTokenizer.from_directory(tmp_path / "missing")


def _set(split, index, slot, value):
    def mutate(raw):
        (words, visual, acoustic), label, segment = raw[split][index]
        parts = {"words": words, "visual": visual, "acoustic": acoustic, "label": label}
        parts[slot] = value(parts[slot]) if callable(value) else value
        raw[split][index] = ((parts["words"], parts["visual"], parts["acoustic"]), parts["label"], segment)

    return mutate


def _nan(a):
    a = a.copy()
    a[1, 2] = np.nan
    return a


WORD_CASES = {
    "missing split": (lambda raw: raw.pop("dev"), ["split 'dev' missing"]),
    "not a list": (lambda raw: raw.__setitem__("test", {"a": 1}), ["split 'test'", "expected a list of examples"]),
    "bad entry": (
        lambda raw: raw["train"].__setitem__(1, ("words", 0.5)),
        ["split 'train', example 1", "((words, visual, acoustic), label, segment)"],
    ),
    "words not strings": (
        _set("dev", 1, "words", [1, 2, 3, 4]),
        ["split 'dev', example 1", "words: expected a list of strings"],
    ),
    "no words": (_set("train", 0, "words", []), ["split 'train', example 0", "no words"]),
    "ragged visual": (
        _set("train", 2, "visual", lambda a: [list(r) for r in a[:-1]] + [list(a[-1][:2])]),
        ["split 'train', example 2", "visual: ragged"],
    ),
    "visual rows vs words": (
        _set("test", 2, "visual", lambda a: a[:-1]),
        ["split 'test', example 2", "visual: 4 rows for 5 words"],
    ),
    "wrong width": (
        _set("dev", 0, "acoustic", lambda a: np.ones((a.shape[0], D_A + 1))),
        ["split 'dev', example 0", f"acoustic: width {D_A + 1} differs from {D_A}", "split 'train', example 0"],
    ),
    "nan": (_set("train", 3, "acoustic", _nan), ["split 'train', example 3", "acoustic: holds NaN"]),
    "inf": (
        _set("train", 1, "visual", lambda a: a * np.inf),
        ["split 'train', example 1", "visual: holds infinite values"],
    ),
    "1-d features": (
        _set("train", 0, "visual", lambda a: a[:, 0]),
        ["split 'train', example 0", "visual: expected an array [rows, width]"],
    ),
    "label out of range": (
        _set("test", 1, "label", np.array([[3.5]])),
        ["split 'test', example 1", "label: 3.5 is outside [-3, 3]"],
    ),
    "label not one value": (
        _set("test", 0, "label", np.array([1.0, 2.0])),
        ["split 'test', example 0", "label: expected one value"],
    ),
    "label nan": (
        _set("dev", 0, "label", np.array([[np.nan]])),
        ["split 'dev', example 0", "label: nan is not finite"],
    ),
}


@pytest.mark.parametrize("case", sorted(WORD_CASES))
def test_malformed_word_level_file(tmp_path, case):
    mutate, parts = WORD_CASES[case]
    raw = word_data()
    mutate(raw)
    expect_error(dump(tmp_path, raw), *parts)


# --------------------------------------------------------------------------- array layout


def test_array_layout_loads_and_reads_minus_inf_as_zero(tmp_path):
    raw = array_data()
    raw["train"]["audio"][1, 2, 3] = -np.inf
    data = load_sentiment_data(dump(tmp_path, raw))
    assert data.layout == "arrays" and data.tokenizer is None
    train = data.splits["train"]
    assert train.input_ids.dtype == torch.long and train.input_ids.shape == (4, 6)
    assert train.acoustic[1, 2, 3] == 0 and torch.isfinite(train.acoustic).all()
    np.testing.assert_array_equal(train.input_ids.numpy(), raw["train"]["text_bert"][:, 0])
    np.testing.assert_array_equal(train.attention_mask.numpy(), raw["train"]["text_bert"][:, 1])
    assert train.labels.tolist() == pytest.approx([-3, -1, 1, 3])
    assert data.splits["valid"].ids[0] == "valid$0"
    assert (data.visual_dim, data.acoustic_dim) == (D_V, D_A)
    assert data.vocab_size == int(max(raw[s]["text_bert"][:, 0].max() for s in raw)) + 1
    assert load_sentiment_data(dump(tmp_path, raw), max_len=4).splits["test"].visual.shape == (3, 4, D_V)


def _arr(split, key, fn):
    def mutate(raw):
        raw[split][key] = fn(raw[split][key])

    return mutate


def _put(value, *index):
    def fn(a):
        a = a.copy()
        a[index] = value
        return a

    return fn


ARRAY_CASES = {
    "missing split": (lambda raw: raw.pop("valid"), ["split 'valid' missing"]),
    "split not a dict": (lambda raw: raw.__setitem__("test", [1, 2]), ["split 'test'", "expected a dict of arrays"]),
    "missing array": (lambda raw: raw["valid"].pop("audio"), ["split 'valid'", "missing arrays ['audio']"]),
    "ragged audio": (
        _arr("train", "audio", lambda a: [a[0], a[1], a[2][:-1], a[3]]),
        ["split 'train', example 2", "audio: ragged"],
    ),
    "count mismatch": (
        _arr("test", "vision", lambda a: a[:-1]),
        ["split 'test'", "vision: 2 examples but text_bert has 3"],
    ),
    "tokens mismatch": (
        _arr("test", "audio", lambda a: a[:, :-1]),
        ["split 'test'", "audio: 5 tokens per example but text_bert has 6"],
    ),
    "wrong width": (
        _arr("test", "vision", lambda a: np.ones(a.shape[:2] + (D_V + 2,), np.float32)),
        ["split 'test'", f"vision: width {D_V + 2} differs from {D_V}"],
    ),
    "nan": (_arr("train", "vision", _put(np.nan, 1, 0, 0)), ["split 'train', example 1", "vision: holds NaN"]),
    "plus inf": (_arr("valid", "audio", _put(np.inf, 2, 0, 0)), ["split 'valid', example 2", "audio: holds +inf"]),
    "label out of range": (
        _arr("train", "regression_labels", _put(-4.0, 2)),
        ["split 'train', example 2", "label: -4.0 is outside [-3, 3]"],
    ),
    "label count": (
        _arr("valid", "regression_labels", lambda a: a[:2]),
        ["split 'valid'", "regression_labels: expected 3 values"],
    ),
    "text shape": (
        _arr("train", "text_bert", lambda a: a[:, :2]),
        ["split 'train'", "text_bert: expected shape [N, 3, tokens]"],
    ),
    "token ids": (
        _arr("valid", "text_bert", _put(1.5, 1, 0, 0)),
        ["split 'valid', example 1", "non-negative integers"],
    ),
}


@pytest.mark.parametrize("case", sorted(ARRAY_CASES))
def test_malformed_array_file(tmp_path, case):
    mutate, parts = ARRAY_CASES[case]
    raw = array_data()
    mutate(raw)
    expect_error(dump(tmp_path, raw), *parts)


# --------------------------------------------------------------------------- files that are not data


def test_not_a_pickle(tmp_path):
    path = tmp_path / "notes.pkl"
    path.write_bytes(b"these are not pickled bytes")
    expect_error(str(path), "not a readable pickle")


def test_not_a_dict_and_unknown_layout(tmp_path):
    expect_error(dump(tmp_path, [1, 2, 3], "list.pkl"), "expected a dict of splits", "got list")
    expect_error(dump(tmp_path, {"a": 1}, "dict.pkl"), "cannot tell the layout", "found keys ['a']")


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="no such data file"):
        load_sentiment_data("/nonexistent/data.pkl")


def test_feature_widths_checked_against_the_model(tmp_path):
    data = load_sentiment_data(dump(tmp_path, word_data()))
    check_feature_widths(data, {"acoustic": D_A, "visual": D_V})
    check_feature_widths(data, {"visual": D_V})  # a model of one level, whatever its detector
    with pytest.raises(DataFormatError, match=re.escape(f"visual width {D_V} but the model has 47 for visual")):
        check_feature_widths(data, {"visual": 47, "acoustic": D_A})
    with pytest.raises(DataFormatError, match=re.escape("(detector_dims[0], level 1)")):
        check_feature_widths(data, {"visual": 47, "acoustic": D_A})  # named in the model's level order
    with pytest.raises(DataFormatError, match="no detector named 'pose'"):
        check_feature_widths(data, {"acoustic": D_A, "pose": 3})


# --------------------------------------------------------------------------- synthetic set and normalisation


def test_synthetic_set_is_deterministic_and_in_the_word_level_layout():
    spec = SyntheticSpec(seed=3, sizes=(40, 10, 10))
    a, b = make_synthetic(spec), make_synthetic(spec)
    assert set(a) == {"train", "dev", "test"} and len(a["train"]) == 40
    for x, y in zip(a["train"], b["train"]):
        assert (
            x[0][0] == y[0][0]
            and np.array_equal(x[0][1], y[0][1])
            and np.array_equal(x[0][2], y[0][2])
            and x[1] == y[1]
        )
    assert a["train"][0][0][0] != make_synthetic(SyntheticSpec(seed=4, sizes=(40, 10, 10)))["train"][0][0][0]
    # a split does not change when another split's size does
    other = make_synthetic(SyntheticSpec(seed=3, sizes=(5, 10, 10)))
    assert np.array_equal(other["test"][0][0][1], a["test"][0][0][1])
    words, visual, acoustic = a["train"][0][0]
    assert visual.shape == (len(words), 47) and acoustic.shape == (len(words), 74)


def test_synthetic_labels_relate_to_text_and_to_each_detector():
    data = make_synthetic(SyntheticSpec(seed=0, sizes=(600, 1, 1)))["train"]
    labels = np.array([float(e[1].reshape(())) for e in data])
    assert labels.min() >= -3 and labels.max() <= 3 and (labels == 0).any()
    prosody = np.array([e[0][2][:, 0:8].mean() for e in data])  # utterance-level, acoustic only
    face = np.array([e[0][1][:, 0:6].mean() for e in data])  # utterance-level, visual only
    assert np.corrcoef(prosody, labels)[0, 1] > 0.15
    assert np.corrcoef(face, labels)[0, 1] > 0.1
    assert abs(np.corrcoef(prosody, face)[0, 1]) < 0.15  # independent sources
    ceiling = synthetic_ceiling(SyntheticSpec(seed=0, sizes=(1, 1, 300)))  # the text-only oracle's scores
    assert 0.5 < ceiling["authors"]["Corr"] < 0.99  # text explains much, not all


def test_synthetic_default_loads_with_a_vocabulary():
    data = load_sentiment_data(synthetic=SyntheticSpec(seed=1, sizes=(30, 8, 8)))
    assert data.layout == "synthetic" and isinstance(data.tokenizer, WordVocabulary)
    assert (data.visual_dim, data.acoustic_dim) == (47, 74)
    assert data.splits["train"].input_ids.shape == (30, 50)
    assert data.describe()["synthetic"] == {"seed": 1, "sizes": [30, 8, 8]}
    assert data.synthetic_spec == SyntheticSpec(seed=1, sizes=(30, 8, 8))  # what the text-only ceiling regenerates


def test_minmax_normalise():
    t = torch.tensor([[-2.0, 0.0], [2.0, 6.0]])
    assert torch.equal(minmax_normalise(t), torch.tensor([[0.0, 0.25], [0.5, 1.0]]))
    bounds = (torch.tensor(-6.0), torch.tensor(10.0))
    assert torch.equal(minmax_normalise(t, bounds), (t + 6) / 16)
    assert torch.equal(minmax_normalise(torch.full((2, 3), 4.0)), torch.zeros(2, 3))
