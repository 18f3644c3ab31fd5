"""Scoring text: ``model.predict`` (``TextScorer``), ``ithp-fast predict``, and one score for one text from
every route: the command line, ``model.predict``, ``pipeline``, ``AutoModelForSequenceClassification`` and the
ONNX bundle in ONNX Runtime with the ``tokenizers`` package alone (the Deployment page's snippet, run where
torch cannot be imported)."""

import csv
import io
import json
import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from helpers import LONG, TEXTS, onnx_scores, refuse_imports, tiny_text_model

import ithp_fast
from ithp_fast.serving.text import TextScorer
from ithp_fast.tools.cli import main

ROOT = Path(__file__).resolve().parents[1]
TEXT = TEXTS[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``ithp-fast train --config examples/synthetic.yaml``, cut to one seed, one epoch and a small set."""
    out = tmp_path_factory.mktemp("synthetic")
    argv = ["train", "--config", str(ROOT / "examples" / "synthetic.yaml"), "--output-dir", str(out), "--seeds", "1",
            "--epochs", "1", "--synthetic-sizes", "64", "16", "16"]
    assert main(argv) == 0
    return out / "seed-1" / "checkpoint-last"


def one_line_error(capsys, argv):
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"ithp-fast {argv[0]}: error: "), err
    return lines[0]


def page_snippet(page: str, marker: str) -> str:
    """The first Python block after ``marker`` on a documentation page."""
    text = (ROOT / page).read_text()
    after = text[text.index(marker) + len(marker):]
    code = after[after.index("```python\n") + len("```python\n"):]
    return code[: code.index("```")]


# -- the done-when route: one text, one score everywhere


def test_one_text_gets_one_score_from_every_route(trained, tmp_path, capsys):
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(trained), TEXT]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["score", "text"] and row.endswith(TEXT)
    (score,) = ithp_fast.load_checkpoint(trained).predict([TEXT])
    assert float(row.split()[0]) == pytest.approx(score, abs=5e-5)  # the console shows four decimals

    assert main(["predict", "--checkpoint", str(trained), TEXT, "--output", str(tmp_path / "scores.jsonl")]) == 0
    routes = {"command line": json.loads((tmp_path / "scores.jsonl").read_text())["score"]}
    routes["from_pretrained"] = ithp_fast.ITHPDeberta.from_pretrained(trained).predict([TEXT])[0]
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    routes["pipeline"] = pipeline("text-classification", model=str(trained))([TEXT])[0]["score"]
    auto = AutoModelForSequenceClassification.from_pretrained(trained)
    tokenizer = AutoTokenizer.from_pretrained(trained)
    with torch.no_grad():
        routes["AutoModelForSequenceClassification"] = auto(**tokenizer([TEXT], return_tensors="pt")).logits.item()
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    argv = ["export", "--checkpoint", str(trained), "--format", "onnx", "--output", str(bundle / "model.onnx")]
    assert main(argv) == 0
    routes["onnxruntime + tokenizers"] = onnx_scores(bundle, [TEXT])[0]
    for route, value in routes.items():
        assert value == pytest.approx(score, abs=1e-5), route


def test_the_documented_onnx_snippet_scores_text_where_torch_cannot_be_imported(trained, tmp_path):
    model = ithp_fast.load_checkpoint(trained)
    (tmp_path / "model").mkdir()
    ithp_fast.export(model, tmp_path / "model" / "model.onnx", format="onnx")
    snippet = page_snippet("docs/deployment.md",
                           "<!-- onnx-snippet: tests/test_predict.py runs it where torch cannot be imported -->")
    probe = refuse_imports("torch", "ithp_fast", "transformers")
    probe += "\ntry:\n    import torch\nexcept ModuleNotFoundError:\n    print('no torch')\n"
    proc = subprocess.run([sys.executable, "-c", probe + textwrap.dedent(snippet)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == "no torch"
    printed = eval(lines[-1], {})  # the snippet prints {text: score}
    for text, score in printed.items():
        assert score == pytest.approx(model.predict([text])[0], abs=1e-5), text


# -- model.predict and TextScorer


def test_a_text_scores_the_same_alone_or_padded_in_a_batch():
    for pass_mask in (True, False):
        model = tiny_text_model(pass_attention_mask=pass_mask)
        alone = [model.predict([t])[0] for t in TEXTS]
        together = model.predict(TEXTS, batch_size=3)
        torch.testing.assert_close(torch.tensor(together), torch.tensor(alone), rtol=1e-6, atol=1e-6)
        ids = model.tokenizer([TEXTS[0]], return_tensors="pt")["input_ids"]  # unpadded: the forward pads what
        with torch.no_grad():  # a model without the mask needs (max_seq_length, as it was trained)
            forward = model(ids, attention_mask=torch.ones_like(ids)).logits.item()
        assert forward == pytest.approx(alone[0], abs=1e-6), pass_mask
    assert model.predict(TEXTS) != tiny_text_model().predict(TEXTS)  # the two settings do differ


def test_long_texts_are_cut_to_max_seq_length_and_said_to_be():
    model = tiny_text_model(max_seq_length=8)
    scored = TextScorer(model).score([LONG, TEXT], warn=False)
    assert scored.cut == [True, False]
    assert scored.scores[0] == pytest.approx(model.predict(["the plot was dull this movie"])[0], abs=1e-6)
    batch = TextScorer(model).encode([LONG, TEXT])
    assert batch.input_ids.shape == (2, 8) and batch.input_ids[0, -1].item() == 2  # ends with [SEP]


def test_words_outside_the_vocabulary_are_counted_in_one_warning():
    model = tiny_text_model()
    with pytest.warns(UserWarning) as caught:
        model.predict(["I truly love this film", "the plot was dull", "a film"], batch_size=1)
    assert len(caught) == 1
    assert str(caught[0].message) == "4 of 11 words are not in the model's vocabulary and were read as unknown"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.predict(TEXTS)  # none unknown: no warning


@pytest.mark.parametrize("texts, error, message", [
    (["a text", "  "], ValueError, r"texts\[1\]: empty text; there are no words to score"),
    (["a text", 3], TypeError, r"texts\[1\]: expected a string, got int"),
    ("a text", TypeError, r"texts: expected a list of strings, got str \(pass \[text\] for one text\)"),
])
def test_bad_texts_are_named(texts, error, message):
    with pytest.raises(error, match=message):
        tiny_text_model().predict(texts)


def test_predict_keeps_the_model_mode_and_needs_a_tokenizer():
    model = tiny_text_model().train()
    model.predict([TEXT])
    assert model.training
    model.tokenizer = None
    with pytest.raises(ValueError, match="tokenizer: the model carries none"):
        model.predict([TEXT])


# -- ithp-fast predict


def test_files_in_and_out_keep_ids_and_say_which_texts_were_cut(trained, tmp_path, capsys, monkeypatch):
    long = " ".join(["movie"] * 60)
    source = tmp_path / "in.csv"
    with open(source, "w", newline="") as f:
        csv.writer(f).writerows([["id", "text", "other"], ["a1", TEXT, "x"], ["b2", long, "y"]])
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(trained), "--input", str(source), "--output",
                 str(tmp_path / "out.csv"), "--batch", "1"]) == 0
    assert "1 of 2 texts had more than 50 tokens and were cut" in capsys.readouterr().err
    rows = list(csv.DictReader(open(tmp_path / "out.csv")))
    assert [(r["id"], r["text"], r["cut"]) for r in rows] == [("a1", TEXT, "False"), ("b2", long, "True")]
    want = ithp_fast.load_checkpoint(trained).predict([TEXT, long])
    assert [float(r["score"]) for r in rows] == pytest.approx(want, abs=1e-6)

    (tmp_path / "in.jsonl").write_text(json.dumps({"review": TEXT, "id": 7}) + "\n\n")
    assert main(["predict", "--checkpoint", str(trained), "--input", str(tmp_path / "in.jsonl"), "--text-column",
                 "review", "--output", str(tmp_path / "out.jsonl")]) == 0
    assert json.loads((tmp_path / "out.jsonl").read_text()) == {"id": 7, "text": TEXT, "score": want[0], "cut": False}

    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{TEXT}\nthe plot was dull\n"))
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(trained)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 3 and table[1].endswith(TEXT)


@pytest.mark.parametrize("case, content, extra, message", [
    ("not utf-8", b"caf\xe9 was great\n", [], r"--input: .*in\.txt is not UTF-8 text \(byte 0xe9 at offset 3\)"),
    ("no column", b"id,review\n1,great\n", [], r"--input: .*in\.csv has no column 'text' \(columns: id, review\); "
                                                  r"name the text column with --text-column"),
    ("empty file", b"", [], r"--input: .*in\.txt holds no texts"),
    ("empty text", b"great movie\n\nbad plot\n", [], r"in\.txt, line 2: empty text; there are no words to score"),
    ("bad json", b'{"text": "good"}\n{oops\n', [], r"in\.jsonl, line 2: not JSON"),
    ("output suffix", b"great\n", ["--output", "{tmp}/out.tsv"], r"--output: expected a \.csv, \.jsonl file"),
])
def test_bad_input_is_one_line_and_writes_nothing(trained, tmp_path, capsys, case, content, extra, message):
    suffix = {"no column": ".csv", "bad json": ".jsonl"}.get(case, ".txt")
    source = tmp_path / f"in{suffix}"
    source.write_bytes(content)
    argv = ["predict", "--checkpoint", str(trained), "--input", str(source)]
    argv += [a.format(tmp=tmp_path) for a in extra] or ["--output", str(tmp_path / "out.csv")]
    assert re.search(message, one_line_error(capsys, argv))
    assert sorted(os.listdir(tmp_path)) == [source.name]


def test_a_directory_that_is_not_a_checkpoint_is_one_line(trained, tmp_path, capsys):
    line = one_line_error(capsys, ["predict", "--checkpoint", str(trained.parent), TEXT])
    assert "has no config.json, so it is not a checkpoint; checkpoints inside it: checkpoint-last" in line
    line = one_line_error(capsys, ["predict", "--checkpoint", str(trained), TEXT, "--input", "x.txt"])
    assert line.endswith("give texts as arguments or with --input FILE, not both")


def test_a_checkpoint_with_a_pretrained_backbone_scores_text_with_that_backbone_s_tokenizer(tmp_path, capsys):
    from transformers import BertTokenizer, DebertaV2Config, DebertaV2Model

    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "was", "good", "bad", "##s"]
    (tmp_path / "vocab.txt").write_text("\n".join(pieces))
    backbone = tmp_path / "backbone"
    BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(backbone)
    DebertaV2Model(DebertaV2Config(vocab_size=len(pieces), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=16, relative_attention=True, position_buckets=8,
                                   pos_att_type=["p2c", "c2p"], position_biased_input=False,
                                   type_vocab_size=0)).save_pretrained(backbone)
    out = tmp_path / "run"
    argv = ["train", "--backbone", str(backbone), "--output-dir", str(out), "--synthetic-sizes", "8", "4", "4",
            "--max-steps", "1", "--epochs", "1", "--no-progress", "--no-plots", "--device", "cpu", "--threads", "1",
            "--max-seq-length", "12"]
    assert main(argv) == 0
    checkpoint = out / "seed-1" / "checkpoint-last"
    text = "the movies was good"
    model = ithp_fast.load_checkpoint(checkpoint)
    scored = TextScorer(model).score([text, "the movie was great"], warn=False)
    assert scored.word_level is False and scored.unknown == 1  # "great" is no piece of this vocabulary
    assert ithp_fast.ITHPDeberta.from_pretrained(checkpoint).predict([text]) == pytest.approx(scored.scores[:1],
                                                                                             abs=1e-6)
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(checkpoint), text]) == 0
    assert "1 of" not in capsys.readouterr().err
