"""The ``ithp-fast train`` / ``evaluate`` command line on both pickle layouts, a local backbone
directory and the synthetic default; user errors come back as one clear line."""

import json
import re
import shutil
import subprocess

import pytest
from helpers import TINY_TRAINING, as_flags
from test_data import D_A, D_V, array_data, dump, word_data

from ithp_fast.tools.cli import main

TINY = as_flags({**TINY_TRAINING, "max_steps": 1, "epochs": 1})


def test_console_script_help():
    exe = shutil.which("ithp-fast")
    assert exe, "the ithp-fast entry point is not installed"
    out = subprocess.run([exe, "train", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    for flag in (
        "--data",
        "--backbone",
        "--lr",
        "--weight-decay",
        "--warmup-ratio",
        "--batch-size",
        "--epochs",
        "--seeds",
        "--protocol",
        "--select",
        "--resume",
        "--impl",
        "--max-seq-length",
        "--p-beta",
        "--noise",
    ):
        assert flag in text, flag
    assert "runs code stored in the file" in text and "(default: 1e-05)" in text and "never downloaded" in text
    # plain text: no markup, each flag once, each default once
    assert "``" not in out.stdout and ":mod:" not in out.stdout and "--max_seq_length" not in out.stdout
    for entry in re.split(r"\n  (?=--)", out.stdout.split("options:")[1]):
        assert entry.lower().count("default") <= 1, entry
    assert "--config FILE" in text and "--threads" in text and "--early-stop" in text


@pytest.mark.parametrize("layout", ["words", "arrays"])
def test_train_then_evaluate_a_pickle(tmp_path, capsys, layout):
    data = dump(tmp_path, word_data() if layout == "words" else array_data())
    out = tmp_path / "run"
    assert main(["train", "--data", data, "--output-dir", str(out), "--batch-size", "2", *TINY]) == 0
    ckpt = out / "seed-1" / "checkpoint-last"
    config, training = (json.loads((ckpt / name).read_text()) for name in ("config.json", "training.json"))
    assert (config["ithp"]["X1_dim"], config["ithp"]["X2_dim"]) == (D_A, D_V)  # widths from the data
    assert training["data"]["layout"] == layout and training["tokenizer"]["kind"] == (
        "word-vocabulary" if layout == "words" else "ids-in-data"
    )
    capsys.readouterr()
    # A checkpoint never loads a pickle by itself: the file must be named.
    assert main(["evaluate", "--checkpoint", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ithp-fast evaluate: error: --data: this checkpoint was trained on") and data in err
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", data, "--split", "valid", "--protocol", "mmsa"]) == 0
    evaluated = out / "seed-1" / "eval-checkpoint-last"  # beside the checkpoint, never inside it
    report = json.loads((evaluated / "valid-sample.json").read_text())
    assert (
        report["split"] == "valid"
        and "Has0_acc_2" in report["headline"]
        and set(report["metrics"]) == {"authors", "mmsa"}
    )
    assert (evaluated / "valid-sample-predictions.csv").is_file() and sorted(p.name for p in ckpt.iterdir()) == sorted(
        ["config.json", "manifest.json", "model.safetensors", "optimizer.safetensors", "trainer_state.json",
         "training.json"] + (["tokenizer.json", "tokenizer_config.json"] if layout == "words" else [])
    )


def test_malformed_data_is_one_clear_line(tmp_path, capsys):
    raw = word_data()
    raw["dev"][1] = ((["a", "b"], [[0.0] * D_V], [[0.0] * D_A] * 2), [[0.0]], "x")
    path = dump(tmp_path, raw)
    assert main(["train", "--data", path, "--output-dir", str(tmp_path / "run"), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    expected = f"{path}, split 'dev', example 1: visual: 1 rows for 2 words (one row per word expected)"
    assert err == f"ithp-fast train: error: {expected}"


def test_evaluate_checks_widths_against_the_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--output-dir", str(out), "--synthetic-sizes", "8", "4", "4", *TINY]) == 0
    ckpt = out / "seed-1" / "checkpoint-last"
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", dump(tmp_path, word_data())]) == 2
    err = capsys.readouterr().err
    assert f"acoustic width {D_A} but the checkpoint" in err and "74 for acoustic (detector_dims[0], level 1)" in err
    assert f"visual width {D_V} but the checkpoint" in err and "has 47 for visual (detector_dims[1], level 2)" in err
    # the synthetic checkpoint evaluates on its own synthetic set without --data
    assert main(["evaluate", "--checkpoint", str(ckpt), "--impl", "reference"]) == 0


def test_missing_backbone_is_never_downloaded(tmp_path, capsys):
    assert main(["train", "--backbone", "microsoft/deberta-v3-base", "--output-dir", str(tmp_path), *TINY]) == 2
    assert "is not a local directory. Nothing is downloaded" in capsys.readouterr().err


def test_local_backbone_directory_with_its_tokenizer(tmp_path):
    from transformers import BertTokenizer, DebertaV2Config, DebertaV2Model

    backbone = tmp_path / "backbone"
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "word", "##0", "##1", "##2", "##3", "##4", "##5", "##6"]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(pieces))
    BertTokenizer(str(vocab)).save_pretrained(backbone)
    DebertaV2Model(
        DebertaV2Config(
            vocab_size=len(pieces),
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=16,
            relative_attention=True,
            position_buckets=8,
            pos_att_type=["p2c", "c2p"],
            position_biased_input=False,
            type_vocab_size=0,
        )
    ).save_pretrained(backbone)
    data = dump(tmp_path, word_data())
    out = tmp_path / "run"
    args = [
        "train",
        "--backbone",
        str(backbone),
        "--data",
        data,
        "--output-dir",
        str(out),
        "--backbone-dropout",
        "0",
        "--batch-size",
        "2",
    ]
    assert main(args + TINY) == 0
    ckpt = out / "seed-1" / "checkpoint-last"
    config, training = (json.loads((ckpt / name).read_text()) for name in ("config.json", "training.json"))
    assert config["backbone"]["hidden_size"] == 16 and config["ithp"]["X0_dim"] == 16
    assert config["backbone"]["hidden_dropout_prob"] == 0 and training["tokenizer"]["kind"] == "pretrained"
    assert (ckpt / "tokenizer_config.json").is_file()  # the checkpoint carries its tokenizer
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", data]) == 0


def one_error_line(capsys, argv, code=2):
    capsys.readouterr()
    assert main(argv) == code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("ithp-fast")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("lr", ["-0.001", "0"])
def test_a_learning_rate_that_is_not_positive_is_one_line_naming_lr(tmp_path, capsys, lr):
    line = one_error_line(capsys, ["train", "--lr", lr, "--output-dir", str(tmp_path), *TINY])
    assert line == f"ithp-fast train: error: --lr: expected a positive number, got {float(lr)}"
    assert not (tmp_path / "seed-1").exists()


@pytest.mark.parametrize("device", ["cuda", "gpu", "cuda:3"])
def test_a_device_that_is_not_here_lists_the_ones_that_are(tmp_path, capsys, device):
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() > 3:
        pytest.skip("this machine has that device")
    flags = [f for f in TINY if f not in ("--device", "cpu")]
    line = one_error_line(capsys, ["train", "--device", device, "--output-dir", str(tmp_path), *flags])
    assert line.startswith("ithp-fast train: error: --device") and device in line and "devices here: cpu" in line


def test_evaluate_rejects_batch_size_zero_and_a_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--output-dir", str(out), "--synthetic-sizes", "8", "4", "4", *TINY]) == 0
    ckpt = out / "seed-1" / "checkpoint-last"
    line = one_error_line(capsys, ["evaluate", "--checkpoint", str(ckpt), "--batch-size", "0"])
    assert "--batch-size: expected a positive number of examples, got 0" in line
    line = one_error_line(capsys, ["evaluate", "--checkpoint", str(out)])
    assert "is not a checkpoint; checkpoints inside it: seed-1/checkpoint-last" in line


def test_config_file_with_flags_overriding_it_and_a_rerun_from_train_config_json(tmp_path, capsys):
    settings = {
        "synthetic-sizes": [16, 8, 8],
        "epochs": 2,
        "lr": 1e-3,
        "seeds": [1, 2],
        "hidden_size": 32,
        "num-layers": 1,
        "intermediate_size": 32,
        "inter_dim": 32,
        "b0_dim": 16,
        "b1_dim": 8,
        "progress": False,
        "plots": False,
        "device": "cpu",
        "threads": 1,
        "batch_size": 4,
    }
    config = tmp_path / "mine.json"
    config.write_text(json.dumps(settings))
    first = tmp_path / "first"
    assert main(["train", "--config", str(config), "--output-dir", str(first), "--epochs", "1"]) == 0
    saved = json.loads((first / "train_config.json").read_text())
    assert saved["epochs"] == 1 and saved["lr"] == 1e-3 and saved["synthetic_sizes"] == [16, 8, 8]  # the flag won
    assert saved["eval_batch_size"] == 4 and saved["select"] == "last" and saved["threads"] == 1  # resolved
    import dataclasses

    from ithp_fast.training.config import TrainConfig

    assert set(saved) == {f.name for f in dataclasses.fields(TrainConfig)}
    again = tmp_path / "again"
    assert main(["train", "--config", str(first / "train_config.json"), "--output-dir", str(again)]) == 0
    a, b = (json.loads((d / "summary.json").read_text()) for d in (first, again))
    assert a == b and len(a["seeds"]) == 2  # the same metrics, every seed
    # YAML too, keys with - or _; an unknown key is named
    yaml_file = tmp_path / "mine.yaml"
    yaml_file.write_text("epochs: 1\nmax-steps: 1\nsynthetic_sizes: [8, 4, 4]\n")
    assert main(["train", "--config", str(yaml_file), "--output-dir", str(tmp_path / "y"), *TINY]) == 0
    assert json.loads((tmp_path / "y/train_config.json").read_text())["synthetic_sizes"] == [8, 4, 4]
    yaml_file.write_text("epochs: 1\nlearning_rate: 0.1\n")
    line = one_error_line(capsys, ["train", "--config", str(yaml_file), "--output-dir", str(tmp_path / "z"), *TINY])
    assert "unknown settings learning_rate" in line and str(yaml_file) in line


def test_results_table_is_appended_one_row_per_run(tmp_path, capsys):
    runs = tmp_path / "runs"
    common = ["--synthetic-sizes", "8", "4", "4", *TINY]
    assert main(["train", "--output-dir", str(runs / "one"), *common]) == 0
    out = capsys.readouterr().out
    assert "±" not in out and "one seed" in out
    before = (runs / "results.csv").read_text()
    assert main(["train", "--output-dir", str(runs / "two"), "--seeds", "1", "2", *common]) == 0
    assert "± " in capsys.readouterr().out
    after = (runs / "results.csv").read_text()
    assert after.startswith(before)  # appended, never rewritten
    import csv

    rows = list(csv.DictReader(after.splitlines()))
    assert [r["name"] for r in rows] == ["one", "two"] and rows[1]["seeds"] == "1 2"
    assert rows[0]["MAE_std"] == "" and float(rows[1]["MAE_std"]) >= 0 and float(rows[1]["MAE_mean"]) > 0
    # a seed that had finished adds no row when resumed
    assert main(["train", "--output-dir", str(runs / "one"), "--resume", *common]) == 0
    assert (runs / "results.csv").read_text() == after
