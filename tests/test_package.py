"""What a run writes to hand on: checkpoints whose files follow the umask, and ``ithp-fast package``, a slim
copy (no optimizer state) with a generated model card that the Hugging Face routes read."""

import os
import stat

import pytest
import torch
from helpers import TINY_TRAINING, as_flags
from torch import nn

import ithp_fast
from ithp_fast.tools.cli import main
from ithp_fast.training import checkpoints as ckpt


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    argv = ["train", "--output-dir", str(out), "--synthetic-sizes", "16", "8", "8", "--epochs", "1",
            "--seeds", "1", "2", *as_flags(TINY_TRAINING)]
    assert main(argv) == 0
    return out / "seed-1" / "checkpoint-last"


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_every_checkpoint_file_follows_the_umask(tmp_path):
    model = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    previous = os.umask(0o022)
    try:
        ckpt.save_checkpoint(str(tmp_path / "checkpoint"), model, {"run": {}}, optimizer=optimizer, state={})
    finally:
        os.umask(previous)
    modes = {name: stat.S_IMODE(os.stat(tmp_path / "checkpoint" / name).st_mode)
             for name in os.listdir(tmp_path / "checkpoint")}
    assert {ckpt.MODEL_FILE, ckpt.OPTIMIZER_FILE, ckpt.MANIFEST_FILE} <= set(modes)
    assert set(modes.values()) == {0o644}, modes


def test_package_writes_a_slim_copy_with_a_model_card(trained, tmp_path, capsys):
    out = tmp_path / "ithp-synthetic"
    assert main(["package", "--checkpoint", str(trained), "--output-dir", str(out)]) == 0
    files = set(os.listdir(out))
    assert files == {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "training.json",
                     "README.md", "manifest.json"}, files
    assert ckpt.checkpoint_problem(str(out)) is None  # every file listed with its SHA-256
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o777 & ~current_umask()  # a colleague may read it
    card = (out / "README.md").read_text()
    for part in ("pipeline_tag: text-classification", "## Data", "synthetic", "## Metrics",
                 "| metric | authors | mmsa |", "zero labels dropped for every metric", "Over the run's seeds [1, 2]",
                 "examples scored: authors ",
                 "## Settings", "recipe default",
                 "## Load and score", 'ITHPDeberta.from_pretrained("ithp-synthetic")', "ithp-fast predict"):
        assert part in card, part
    text = ["the movie was great"]
    want = ithp_fast.load_checkpoint(trained).predict(text)
    from transformers import pipeline

    assert pipeline("text-classification", model=str(out))(text)[0]["score"] == pytest.approx(want[0], abs=1e-6)
    assert ithp_fast.load_checkpoint(out).predict(text) == pytest.approx(want, abs=1e-6)


def test_package_never_writes_over_a_directory_that_holds_something(trained, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(["package", "--checkpoint", str(trained), "--output-dir", str(taken)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"ithp-fast package: error: --output-dir: {taken} already exists and is not empty; "
                   f"name a new directory")
    assert os.listdir(taken) == ["notes.txt"] and sorted(os.listdir(tmp_path)) == ["taken"]
