"""TrainState, the progress in a checkpoint's trainer_state.json: it round-trips through JSON, reads files
written before it existed (one whole file committed, and the oldest key set) unchanged, resumes from them
exactly, and refuses a key it does not know with one line."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from helpers import TINY_TRAINING
from safetensors.torch import load_file

from ithp_fast.training import checkpoints as ckpt
from ithp_fast.training.api import train
from ithp_fast.training.loop import SeedRun
from ithp_fast.training.state import TrainState

FIXTURES = Path(__file__).parent / "fixtures"
# trainer_state.json of a run stopped inside its second epoch (--stop-after-steps 4), written by the version
# that kept progress in a dict (checkpoint format 2).
WRITTEN_BEFORE = FIXTURES / "trainer_state-format-2-mid-epoch.json"
# The keys the first version that wrote trainer_state.json gave it (besides optimizer and scheduler).
FIRST_VERSION_KEYS = ("epoch", "step_in_epoch", "global_step", "history", "best", "best_epoch", "train_seconds")


def progress(saved: dict) -> dict:
    """trainer_state.json without what checkpoints.py reads itself."""
    return {k: v for k, v in saved.items() if k not in ("optimizer", "scheduler")}


def test_round_trip_through_json():
    state = TrainState(
        epoch=3,
        step_in_epoch=2,
        global_step=20,
        history={"steps": [{"step": 20, "loss": 0.5}], "epochs": [{"epoch": 3, "lr": 1e-3}]},
        best=0.75,
        best_epoch=2,
        epochs_without_improvement=1,
        stopped={"epoch": 3, "reason": "a callback asked to stop"},
        train_seconds=1.5,
        skipped_steps=4,
        partial={"sum": [1.0, 2.0], "steps": 2, "window": [[0.5, 1.0]]},
        finished=True,
    )
    assert TrainState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
    assert list(state.to_dict()) == [f.name for f in dataclasses.fields(TrainState)]
    assert "partial" not in TrainState().to_dict()  # written only while an epoch is cut short, as before
    assert TrainState.from_dict(TrainState().to_dict()) == TrainState()


@pytest.mark.parametrize(
    "path, where",
    [
        (WRITTEN_BEFORE, (1, 1, 4, False)),
        (FIXTURES / "checkpoint-format-2" / ckpt.STATE_FILE, (2, 0, 4, True)),  # a finished run's, same version
    ],
)
def test_a_file_written_before_reads_back_unchanged(path, where):
    saved = progress(json.loads(path.read_text()))
    state = TrainState.from_dict(saved)
    assert (state.epoch, state.step_in_epoch, state.global_step, state.finished) == where
    assert state.to_dict() == saved and list(state.to_dict()) == list(saved)  # same keys, order and values


def test_the_first_versions_keys_take_the_defaults_for_the_rest():
    saved = {k: v for k, v in progress(json.loads(WRITTEN_BEFORE.read_text())).items() if k in FIRST_VERSION_KEYS}
    state = TrainState.from_dict(saved)
    assert (state.epochs_without_improvement, state.stopped, state.skipped_steps) == (0, None, 0)
    assert (state.partial, state.finished) == (None, False)
    assert state.history == saved["history"] and state.best == saved["best"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"learning_rate": 0.1}, r"unknown keys 'learning_rate' \(written by another version"),
        ({"global_step": -1}, "global_step is -1, expected a whole number >= 0"),
        ({"epoch": "2"}, "epoch is '2', expected a whole number >= 0"),
        ({"history": []}, "history is not"),
    ],
)
def test_a_state_this_version_cannot_read_is_refused_in_one_line(change, message):
    saved = {**progress(json.loads(WRITTEN_BEFORE.read_text())), **change}
    with pytest.raises(ckpt.CheckpointError, match=message) as caught:
        TrainState.from_dict(saved, "run/checkpoint-last/trainer_state.json")
    assert str(caught.value).startswith("run/checkpoint-last/trainer_state.json: ")
    assert "\n" not in str(caught.value)
    with pytest.raises(ckpt.CheckpointError, match="expected a JSON object"):
        TrainState.from_dict([1, 2])


def test_seed_run_takes_keywords_only():
    with pytest.raises(TypeError, match="positional"):
        SeedRun(*range(13))


def rewrite_state(checkpoint: Path, edit) -> None:
    """Change a checkpoint's trainer_state.json as ``edit`` says, and record the new file in its manifest."""
    path = checkpoint / ckpt.STATE_FILE
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    ckpt.write_manifest(str(checkpoint))


def test_a_run_resumes_exactly_from_the_first_versions_state(tmp_path):
    base = dict(TINY_TRAINING, synthetic_sizes=(24, 8, 8), epochs=2, batch_size=8, lr=1e-3)  # 3 steps per epoch
    train(output_dir=str(tmp_path / "a"), **base)
    train(output_dir=str(tmp_path / "b"), stop_after_steps=4, **base)
    last = tmp_path / "b/seed-1/checkpoint-last"
    rewrite_state(last, lambda s: {k: v for k, v in s.items() if k in ("optimizer", "scheduler", *FIRST_VERSION_KEYS)})
    train(output_dir=str(tmp_path / "b"), resume=True, **base)  # the epoch's running sums start again from 0
    a = load_file(str(tmp_path / "a/seed-1/checkpoint-last/model.safetensors"))
    b = load_file(str(last / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    resumed = json.loads((last / ckpt.STATE_FILE).read_text())
    assert (resumed["global_step"], resumed["epoch"], resumed["finished"]) == (6, 2, True)


def test_resume_refuses_a_state_with_an_unknown_key(tmp_path):
    base = dict(TINY_TRAINING, synthetic_sizes=(16, 8, 8), epochs=2, batch_size=8)
    train(output_dir=str(tmp_path), stop_after_steps=1, **base)
    last = tmp_path / "seed-1/checkpoint-last"
    rewrite_state(last, lambda s: {**s, "total_flos": 0})
    with pytest.raises(ckpt.CheckpointError, match=f"{last / ckpt.STATE_FILE}: unknown keys 'total_flos'"):
        train(output_dir=str(tmp_path), resume=True, **base)
