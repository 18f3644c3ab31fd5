"""``ithp-fast export``: a checkpoint trained by the CLI, exported to both formats, answers the same
way in ONNX Runtime, in the AOTInductor package and in torch; bad arguments get one line."""

import os
import re

import pytest
import torch

import ithp_fast
from ithp_fast.tools.cli import main

onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TOKENS = 12
TINY_TRAIN = ["--hidden-size", "32", "--num-layers", "1", "--intermediate-size", "32", "--inter-dim", "32",
              "--b0-dim", "16", "--b1-dim", "8", "--max-seq-length", str(TOKENS), "--synthetic-sizes", "16", "8", "8",
              "--batch-size", "8", "--epochs", "1", "--no-progress", "--no-plots", "--device", "cpu"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny checkpoint written by ``ithp-fast train`` (synthetic data, one epoch)."""
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--output-dir", str(out), *TINY_TRAIN]) == 0
    found = sorted(os.path.dirname(os.path.join(d, f)) for d, _, files in os.walk(out) for f in files
                   if f == "config.json" and os.path.basename(d).startswith("checkpoint-"))
    assert found, f"no checkpoint under {out}"
    return found[0]


def test_trained_checkpoint_exports_to_both_formats_with_the_same_logits(checkpoint, tmp_path):
    model = ithp_fast.load_checkpoint(checkpoint)
    assert not model.training and model.ithp.eval_sampling == "mean"
    onnx_file, pt2_file = tmp_path / "model.onnx", tmp_path / "model.pt2"
    for fmt, path in (("onnx", onnx_file), ("aoti", pt2_file)):
        assert main(["export", "--checkpoint", checkpoint, "--format", fmt, "--output", str(path),
                     "--tokens", str(TOKENS)]) == 0
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    package = torch._inductor.aoti_load_package(str(pt2_file))
    vocab = model.dberta.model.config.vocab_size
    for batch in (1, 3):
        ids = torch.randint(0, vocab, (batch, TOKENS), generator=torch.Generator().manual_seed(batch))
        mask = torch.ones_like(ids)
        mask[0, TOKENS - 3:] = 0
        feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
        from_onnx = [torch.from_numpy(session.run(None, feeds)[0]) for _ in range(2)]
        from_aoti = [package(ids, mask) for _ in range(2)]
        with torch.no_grad():
            eager = [ithp_fast.deberta_logits(model, ids, mask) for _ in range(2)]
        for answers in (from_onnx, from_aoti, eager):
            assert torch.equal(answers[0], answers[1])  # deterministic
        torch.testing.assert_close(from_onnx[0], eager[0], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(from_aoti[0], eager[0], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(from_onnx[0], from_aoti[0], rtol=1e-4, atol=1e-4)


def run_failing(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("case, argv, message", [
    ("format", ["--format", "tflite", "--output", "{tmp}/m.onnx"],
     "--format: expected one of onnx, aoti, got 'tflite'"),
    ("missing output folder", ["--format", "onnx", "--output", "{tmp}/no/m.onnx"],
     "--output: the directory .*no does not exist"),
    ("aoti suffix", ["--format", "aoti", "--output", "{tmp}/m.onnx"],
     "--output: an AOTInductor package's name must end"),
    ("batch", ["--format", "onnx", "--output", "{tmp}/m.onnx", "--batch", "0"],
     "--batch-size: expected a positive number"),
])
def test_bad_arguments_give_one_line_and_write_nothing(tmp_path, capsys, case, argv, message):
    folder = tmp_path / "not-a-checkpoint"
    folder.mkdir()
    argv = ["export", "--checkpoint", str(folder)] + [a.format(tmp=tmp_path) for a in argv]
    assert re.search(message, run_failing(argv, capsys))
    assert sorted(os.listdir(tmp_path)) == ["not-a-checkpoint"]


def test_a_directory_that_is_not_a_checkpoint(tmp_path, capsys):
    folder = tmp_path / "not-a-checkpoint"
    folder.mkdir()
    output = str(tmp_path / "m.onnx")
    err = run_failing(["export", "--checkpoint", str(folder), "--format", "onnx", "--output", output], capsys)
    assert "not-a-checkpoint" in err
    assert sorted(os.listdir(tmp_path)) == ["not-a-checkpoint"]
    missing = tmp_path / "missing"
    err = run_failing(["export", "--checkpoint", str(missing), "--format", "onnx", "--output", output], capsys)
    assert "--checkpoint:" in err and "is not a directory" in err
