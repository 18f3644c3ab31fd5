"""Checkpoints written before the Hugging Face layout keep working: ``load_checkpoint``, ``evaluate``,
``--resume``, ``ithp-fast package`` and ``predict``, on ``tests/fixtures/checkpoint-format-2`` (written by the
version before: everything in ``config.json``, the vocabulary in ``vocab.json``) and on its format-1 form
(no manifest, the bare ``dberta.expand`` keys), with the logits and metrics that version computed."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import ithp_fast
from ithp_fast.tools.cli import main
from ithp_fast.training import checkpoints as ckpt

FIXTURE = Path(__file__).parent / "fixtures" / "checkpoint-format-2"
EXPECTED = json.loads((FIXTURE.parent / "checkpoint-format-2-expected.json").read_text())


@pytest.fixture
def old(tmp_path):
    """A copy of the format-2 checkpoint where a run keeps it: ``run/seed-1/checkpoint-last``."""
    checkpoint = tmp_path / "run" / "seed-1" / "checkpoint-last"
    shutil.copytree(FIXTURE, checkpoint)
    return checkpoint


def as_format_1(checkpoint: Path) -> Path:
    """The checkpoint as the first version wrote it: no manifest, format 1, ``dberta.expand.weight`` / ``.bias``."""
    os.remove(checkpoint / ckpt.MANIFEST_FILE)
    config = json.loads((checkpoint / ckpt.CONFIG_FILE).read_text())
    (checkpoint / ckpt.CONFIG_FILE).write_text(json.dumps({**config, "format": ckpt.LEGACY_FORMAT}))
    tensors = load_file(checkpoint / ckpt.MODEL_FILE)
    save_file({k.replace("dberta.expand.0.", "dberta.expand."): v for k, v in tensors.items()},
              checkpoint / ckpt.MODEL_FILE)
    return checkpoint


def expected_inputs():
    return torch.tensor(EXPECTED["input_ids"]), torch.tensor(EXPECTED["attention_mask"])


@pytest.mark.parametrize("form", ["format 2", "format 1"])
def test_old_checkpoints_load_and_give_the_logits_they_gave(old, form):
    checkpoint = as_format_1(old) if form == "format 1" else old
    model = ithp_fast.load_checkpoint(checkpoint)
    assert isinstance(model, ithp_fast.ITHPDeberta) and model.ithp.eval_sampling == "mean"
    ids, mask = expected_inputs()
    with torch.no_grad():
        fast = ithp_fast.deberta_logits(model, ids, mask)
        text_only = model(ids, attention_mask=mask).logits
    want = torch.tensor(EXPECTED["logits_mean"]).reshape(-1, 1)
    torch.testing.assert_close(fast, want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(text_only, want, rtol=1e-6, atol=1e-6)
    assert model.tokenizer is not None and model.config.max_seq_length == 16  # the run's, from vocab.json
    long_text = " ".join(["great"] * 40)
    assert model.tokenizer.model_max_length == 16
    assert len(model.tokenizer(long_text, truncation=True)["input_ids"]) == 16
    assert len(model.predict(["the movie was great"])) == 1


def test_old_checkpoints_evaluate_to_the_metrics_they_had_and_each_mode_keeps_its_report(old, tmp_path):
    out = tmp_path / "eval"
    sampled = ithp_fast.evaluate(old, device="cpu", output_dir=str(out))  # the run's mode: sample
    assert sampled["eval_sampling"] == "sample"
    for convention, metrics in EXPECTED["test_metrics_sample"].items():
        assert sampled["metrics"][convention] == pytest.approx(metrics, nan_ok=True)
    before = (out / "test-sample.json").read_text()
    mean = ithp_fast.evaluate(old, device="cpu", output_dir=str(out), eval_sampling="mean")
    for convention, metrics in EXPECTED["test_metrics_mean"].items():
        assert mean["metrics"][convention] == pytest.approx(metrics, nan_ok=True)
    assert (out / "test-sample.json").read_text() == before  # not overwritten by the other mode
    assert json.loads((out / "test-mean.json").read_text())["eval_sampling"] == "mean"
    assert (out / "test-mean-predictions.csv").is_file() and (out / "test-sample-predictions.csv").is_file()


def test_an_old_checkpoint_resumes_and_is_saved_in_this_version_s_layout(old):
    run = json.loads((old / ckpt.CONFIG_FILE).read_text())["run"]
    settings = {k: v for k, v in run.items() if k not in ("seed", "output_dir")}
    summary = ithp_fast.train({**settings, "epochs": 3}, output_dir=str(old.parent.parent), resume=True)
    assert summary["seeds"] == [1]
    results = json.loads((old.parent / "results.json").read_text())
    assert results["finished"] and results["timing"]["steps"] == 6  # two epochs saved, one more trained
    assert json.loads((old / ckpt.CONFIG_FILE).read_text())["model_type"] == "ithp_deberta"
    assert json.loads((old / ckpt.RUN_FILE).read_text())["run"]["epochs"] == 3
    assert (old / "tokenizer.json").is_file() and ckpt.checkpoint_problem(str(old)) is None


def test_an_old_checkpoint_packages_into_this_version_s_layout(old, tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["package", "--checkpoint", str(old), "--output-dir", str(out)]) == 0
    files = set(os.listdir(out))
    assert {"config.json", "model.safetensors", "tokenizer.json", "training.json", "README.md"} <= files
    assert not files & {"optimizer.safetensors", "trainer_state.json", "vocab.json"}
    text = "the movie was great"
    packaged = ithp_fast.ITHPDeberta.from_pretrained(out).predict([text])
    assert packaged == pytest.approx(ithp_fast.load_checkpoint(old).predict([text]), abs=1e-6)
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(old), text]) == 0  # predict reads the old layout as it is
