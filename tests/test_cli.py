"""The ``ithp-fast train`` / ``evaluate`` command line on both pickle layouts, a local backbone
directory and the synthetic default; user errors come back as one clear line."""

import json
import os
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
        "--backend",
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
    assert main(["evaluate", "--checkpoint", str(ckpt), "--backend", "reference"]) == 0
    assert main(["evaluate", "--checkpoint", str(ckpt), "--impl", "reference"]) == 0  # the old name of --backend


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


class Payload:
    """A pickle whose loading creates a file: proof that it was unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_named_only_in_a_config_file_is_not_read(tmp_path, capsys):
    import pickle

    import ithp_fast

    marker = tmp_path / "unpickled"
    payload = tmp_path / "payload.pkl"
    payload.write_bytes(pickle.dumps(Payload(str(marker))))
    (tmp_path / "cfg.yaml").write_text(f"data: {payload}\nepochs: 1\n")
    (tmp_path / "cfg.json").write_text(json.dumps({"data": str(payload), "epochs": 1}))
    for config in ("cfg.yaml", "cfg.json"):
        argv = ["train", "--config", str(tmp_path / config), "--output-dir", str(tmp_path / "r"), *TINY]
        line = one_error_line(capsys, argv)
        assert line == (
            f"ithp-fast train: error: --config: {tmp_path / config} names the data pickle '{payload}', and unpickling "
            f"runs code stored in the file, so a pickle is read only from a path given on the command line or in the "
            f"call: add --data {payload} (ithp_fast.train(..., data='{payload}')) if you trust it"
        )
        with pytest.raises(ValueError, match="add --data"):
            ithp_fast.train(str(tmp_path / config), output_dir=str(tmp_path / "r"))
    assert not marker.exists() and not (tmp_path / "r").exists()
    # named on the command line, the same file is read (here it is no data set: one line says so)
    line = one_error_line(capsys, ["train", "--config", str(tmp_path / "cfg.json"), "--data", str(payload), *TINY])
    assert marker.exists() and "expected a dict of splits" in line


def test_a_rerun_from_the_train_config_json_of_a_pickle_run_names_the_pickle_again(tmp_path, capsys):
    data = dump(tmp_path, word_data())
    assert main(["train", "--data", data, "--output-dir", str(tmp_path / "a"), "--batch-size", "2", *TINY]) == 0
    again = ["train", "--config", str(tmp_path / "a/train_config.json"), "--output-dir", str(tmp_path / "b")]
    assert f"add --data {data}" in one_error_line(capsys, again)
    assert main([*again, "--data", data]) == 0


def immutable_directory(path):
    """A directory no file can be created in, even by the super-user (chattr +i), or None where that cannot be made."""
    path.mkdir()
    path.chmod(0o555)
    subprocess.run(["chattr", "+i", str(path)], capture_output=True)
    try:
        (path / "probe").touch()
    except OSError:
        return path
    (path / "probe").unlink()
    path.chmod(0o755)
    return None


def release(path):
    subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    path.chmod(0o755)


BAD_SETTINGS = {
    "--seeds 1 1": (["--seeds", "1", "1"], "--seeds: 1 is given 2 times; give each seed once"),
    "--seeds 2**64": (["--seeds", str(2**64)], "--seeds: expected seeds from 0 to 2**63 - 1"),
    "--output-dir a file": (["--output-dir", "{tmp}/file"], "--output-dir: {tmp}/file is a file; expected a directory"),
    "--output-dir under a file": (
        ["--output-dir", "{tmp}/file/run"],
        "--output-dir: {tmp}/file/run lies under {tmp}/file, which is a file; expected a directory",
    ),
    "seed-1 a file": (["--output-dir", "{tmp}/seeded"], "--output-dir: {tmp}/seeded/seed-1 is a file"),
    "results.csv a directory": (["--output-dir", "{tmp}/tables/run"], "results.csv, where the run's row goes, is not"),
    "a pickle of a missing module": (["--data", "{tmp}/module.pkl"], "needs the module 'no_such_module'"),
    "a directory for --data": (["--data", "{tmp}"], "{tmp}: a directory; expected a pickle file"),
    "--beta-shift nan": (["--beta-shift", "nan"], "--beta-shift: expected a finite number, got nan"),
    "--lr inf": (["--lr", "inf"], "--lr: expected a finite number, got inf"),
    "--p-lambda -1": (["--p-lambda", "-1"], "--p-lambda: expected 0 or more, got -1.0"),
    "--num-workers -1": (["--num-workers", "-1"], "--num-workers: expected 0 or more, got -1"),
    "--select-metric bogus": (["--select-metric", "bogus"], "--select-metric: expected one of Non0_acc_2, "),
    "--select-metric Has0_acc_2 (authors)": (["--select-metric", "Has0_acc_2"], "(the --protocol authors metrics)"),
    "--synthetic-sizes 8 0 4": (["--synthetic-sizes", "8", "0", "4"], "--synthetic-sizes: expected three positive"),
    "--synthetic-seed -1": (["--synthetic-seed", "-1"], "--synthetic-seed: expected 0 or more, got -1"),
    "--max-seq-length 1": (["--max-seq-length", "1"], "--max-seq-length: expected 2 or more"),
    "--config a directory": (["--config", "{tmp}"], "--config: {tmp} is a directory; expected a JSON or YAML file"),
}


@pytest.mark.parametrize("case", list(BAD_SETTINGS))
def test_a_bad_run_setting_is_one_line_before_anything_is_written(tmp_path, capsys, case):
    flags, message = BAD_SETTINGS[case]
    (tmp_path / "file").write_text("x")
    (tmp_path / "seeded").mkdir()
    (tmp_path / "seeded" / "seed-1").write_text("x")
    (tmp_path / "tables" / "results.csv").mkdir(parents=True)
    (tmp_path / "module.pkl").write_bytes(b"cno_such_module\nSplits\n.")  # a class of a module not installed
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    flags = [flag.format(tmp=tmp_path) for flag in flags]
    output = [] if "--output-dir" in flags else ["--output-dir", str(tmp_path / "run")]
    line = one_error_line(capsys, ["train", *TINY, "--synthetic-sizes", "8", "4", "4", *output, *flags])
    assert message.format(tmp=tmp_path) in line
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written, no config


def test_a_read_only_output_dir_is_one_line_before_anything_is_written(tmp_path, capsys):
    locked = immutable_directory(tmp_path / "locked")
    if locked is None:
        pytest.skip("no directory here refuses new files")
    try:
        for output in (locked, locked / "run"):
            line = one_error_line(capsys, ["train", *TINY, "--output-dir", str(output)])
            assert line.startswith(f"ithp-fast train: error: --output-dir: no file can be created in {locked} (")
        assert list(locked.iterdir()) == []
    finally:
        release(locked)


def test_a_run_that_fails_before_any_seed_wrote_a_file_leaves_nothing_behind(tmp_path, capsys, monkeypatch):
    from ithp_fast.training import loop

    def no_model(cfg, data):
        raise ValueError("--backbone: the weights could not be read")

    monkeypatch.setattr(loop, "new_model", no_model)
    line = one_error_line(capsys, ["train", *TINY, "--output-dir", str(tmp_path / "runs" / "new")])
    assert line.endswith("the weights could not be read")
    assert list(tmp_path.iterdir()) == []  # no train_config.json, no seed directory, no --output-dir


def append_rows(path, count, barrier):
    import csv
    import time
    import types

    from ithp_fast.training import logs

    def slow_open(*args, **kwargs):
        time.sleep(0.2)
        return open(*args, **kwargs)

    def slow_reader(f):
        rows = list(csv.reader(f))
        time.sleep(0.2)
        return iter(rows)

    # a slow file system (0.2 s to open results.csv, 0.2 s after reading it): unguarded appends overlap for certain
    logs.open = slow_open
    logs.csv = types.SimpleNamespace(reader=slow_reader, writer=csv.writer)
    summary = {"protocol": "authors", "seeds": [1, 2], "metrics": {"authors": {"MAE": {"mean": 1.5, "std": 0.25}}}}
    barrier.wait()
    for i in range(count):
        logs.append_results_row(path, summary, name=f"run-{os.getpid()}-{i}", dataset="d", model="m", output_dir="o")


def test_results_csv_appends_at_the_same_moment_write_one_header_and_every_row_whole(tmp_path):
    import csv
    import multiprocessing

    from ithp_fast.training.logs import RESULTS_COLUMNS

    context = multiprocessing.get_context("fork")
    for trial in range(2):
        path = str(tmp_path / f"results-{trial}.csv")
        barrier = context.Barrier(4)
        workers = [context.Process(target=append_rows, args=(path, 2, barrier)) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        rows = list(csv.reader(open(path)))
        assert rows[0] == list(RESULTS_COLUMNS) and len(rows) == 9, rows[:3]
        assert all(len(row) == len(RESULTS_COLUMNS) and row[0].startswith("run-") for row in rows[1:])


def test_resuming_a_finished_run_writes_its_missing_summary_and_row_once(tmp_path, capsys):
    import csv

    runs = tmp_path / "runs"
    argv = ["train", "--output-dir", str(runs / "one"), "--synthetic-sizes", "8", "4", "4", *TINY]
    assert main(argv) == 0
    capsys.readouterr()
    table = runs / "results.csv"
    header, row = table.read_text().splitlines()
    # killed after the last seed's results.json, before summary.json and the row
    (runs / "one" / "summary.json").unlink()
    table.write_text(header + "\n")
    for _ in range(2):  # the second resume finds both and adds nothing
        assert main([*argv, "--resume"]) == 0
        assert "train loss" not in capsys.readouterr().err
        rows = list(csv.reader(table.read_text().splitlines()))
        assert len(rows) == 2 and rows[1][0] == "one" and rows[1][2:] == next(csv.reader([row]))[2:]
        assert (runs / "one" / "summary.json").is_file()
