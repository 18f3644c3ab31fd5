"""The Python API (``ithp_fast.train`` / ``ithp_fast.evaluate``) on paths and in-memory data, per-epoch
callbacks, metrics.csv and TensorBoard logs, --threads, --early-stop and extending a finished run."""

import csv
import itertools
import json
import sys

import pytest
import torch
from helpers import TINY_TRAINING
from test_data import array_data, dump

import ithp_fast
from ithp_fast.data import SyntheticSpec, load_sentiment_data

TINY = dict(TINY_TRAINING, lr=1e-3)


def test_train_on_a_path_arrays_or_splits_in_memory_then_evaluate(tmp_path):
    raw = array_data()
    by_path = ithp_fast.train(TINY, data=dump(tmp_path, raw), output_dir=str(tmp_path / "path"), epochs=1, batch_size=2)
    in_memory = ithp_fast.train(TINY, data=raw, output_dir=str(tmp_path / "memory"), epochs=1, batch_size=2)
    assert by_path["metrics"] == in_memory["metrics"] and by_path["seeds"] == [1]
    assert by_path == json.loads((tmp_path / "path/summary.json").read_text())  # the object summary.json holds
    splits = load_sentiment_data(synthetic=SyntheticSpec(sizes=(8, 4, 4))).splits
    summary = ithp_fast.train(TINY, data=dict(splits), output_dir=str(tmp_path / "splits"), epochs=1)
    assert summary["seeds"] == [1]
    checkpoint = tmp_path / "memory/seed-1/checkpoint-last"
    with pytest.raises(ValueError, match="--data: this checkpoint was trained on 'in-memory data'"):
        ithp_fast.evaluate(checkpoint, device="cpu")  # never falls back to another data set
    report = ithp_fast.evaluate(checkpoint, raw, device="cpu")
    run = json.loads((tmp_path / "memory/seed-1/results.json").read_text())
    assert report["metrics"] == run["test"]


def test_callbacks_see_every_epoch_and_can_stop_a_seed(tmp_path):
    seen = []

    def stop_after_two(end):
        seen.append((end.seed, end.epoch, torch.get_num_threads(), sorted(end.record)))
        return end.epoch == 2

    summary = ithp_fast.train(
        TINY, output_dir=str(tmp_path), synthetic_sizes=[8, 4, 4], epochs=5, seeds=[3], callbacks=[stop_after_two]
    )
    assert [(s, e) for s, e, _, _ in seen] == [(3, 1), (3, 2)]
    assert seen[0][2] == 1  # --threads 1 holds during the run
    assert seen[0][3] == ["epoch", "lr", "seconds", "step", "test", "train", "valid"]
    results = json.loads((tmp_path / "seed-3/results.json").read_text())
    assert results["stopped"] == {"epoch": 2, "reason": "a callback asked to stop"} and summary["seeds"] == [3]
    assert results["selection"]["epoch"] == 2


def test_metrics_csv_has_one_row_per_epoch(tmp_path):
    ithp_fast.train(TINY, output_dir=str(tmp_path), synthetic_sizes=[8, 4, 4], epochs=3, batch_size=4)
    with open(tmp_path / "seed-1/metrics.csv") as f:
        rows = list(csv.DictReader(f))
    history = json.loads((tmp_path / "seed-1/results.json").read_text())["history"]["epochs"]
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3] and [int(r["step"]) for r in rows] == [2, 4, 6]
    for row, record in zip(rows, history):
        assert float(row["train_loss"]) == pytest.approx(record["train"]["loss"])
        assert float(row["valid_MAE"]) == pytest.approx(record["valid"]["authors"]["MAE"])
        assert float(row["lr"]) == pytest.approx(record["lr"]) and {"train_kl0", "test_Corr", "seconds"} <= set(row)


def test_tensorboard_without_the_package_is_a_message_not_a_failure(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    with pytest.warns(UserWarning, match="tensorboard package is not installed"):
        ithp_fast.train(TINY, output_dir=str(tmp_path), synthetic_sizes=[8, 4, 4], epochs=1, log="tensorboard")
    assert (tmp_path / "seed-1/metrics.csv").is_file()


def test_tensorboard_event_files(tmp_path):
    pytest.importorskip("tensorboard")
    ithp_fast.train(TINY, output_dir=str(tmp_path), synthetic_sizes=[8, 4, 4], epochs=1, log="tensorboard")
    assert list((tmp_path / "seed-1/tensorboard").glob("events.out.tfevents.*"))


def test_early_stop_ends_a_seed_after_epochs_without_improvement(tmp_path):
    ithp_fast.train(TINY, output_dir=str(tmp_path), synthetic_sizes=[8, 4, 4], epochs=30, early_stop=1, lr=1e-6)
    results = json.loads((tmp_path / "seed-1/results.json").read_text())
    epochs = results["history"]["epochs"]
    assert len(epochs) < 30 and results["stopped"]["epoch"] == len(epochs)
    maes = [e["valid"]["authors"]["MAE"] for e in epochs]
    assert maes[-1] >= min(maes[:-1])  # the last epoch did not improve on the best before it


@pytest.mark.parametrize("patience, last_epoch", [(1, 3), (2, 4), (3, 8)])
def test_early_stop_ends_a_seed_at_the_nth_epoch_without_a_better_valid_metric(
    tmp_path, monkeypatch, patience, last_epoch
):
    """Valid MAE per epoch is scripted: best at epochs 2 and 5, worse in between and after. --early-stop N ends
    the seed at the N-th epoch in a row without improvement, not one later."""
    from ithp_fast.training import loop

    maes = iter([1.0, 0.9, 0.95, 0.97, 0.8, 0.85, 0.86, 0.87, 0.88, 0.89, 0.9, 0.91])
    splits = load_sentiment_data(synthetic=SyntheticSpec(sizes=(8, 4, 4))).splits
    predict = loop.predict

    def scripted(model, split, *args, **kwargs):
        out = predict(model, split, *args, **kwargs)
        if split is splits["valid"]:
            out["metrics"]["authors"]["MAE"] = next(maes)
        return out

    monkeypatch.setattr(loop, "predict", scripted)
    ithp_fast.train(TINY, data=dict(splits), output_dir=str(tmp_path), epochs=12, batch_size=4, early_stop=patience)
    results = json.loads((tmp_path / "seed-1/results.json").read_text())
    assert results["stopped"]["epoch"] == last_epoch and len(results["history"]["epochs"]) == last_epoch
    assert [e["valid"]["authors"]["MAE"] for e in results["history"]["epochs"]][:2] == [1.0, 0.9]


def test_skipped_steps_keep_the_learning_rate_on_the_schedule(tmp_path, monkeypatch):
    """Steps 2 and 3 of 8 get a NaN gradient norm and are skipped: every step taken after them runs at the
    schedule's rate for its own step number (no warm-up: 1e-3 * (8 - step) / 8), and so does the logged rate."""
    from ithp_fast.training import loop

    calls, norm = itertools.count(), loop.gradient_norm
    monkeypatch.setattr(
        loop, "gradient_norm", lambda *a: norm(*a) * (float("nan") if next(calls) in (1, 2) else 1.0)
    )
    rates, step = [], torch.optim.AdamW.step
    monkeypatch.setattr(
        torch.optim.AdamW,
        "step",
        lambda self, *a, **k: (rates.append(self.param_groups[0]["lr"]), step(self, *a, **k))[1],
    )
    ithp_fast.train(
        TINY, output_dir=str(tmp_path), synthetic_sizes=[16, 4, 4], batch_size=4, epochs=2, warmup_ratio=0.0,
        skip_nonfinite_steps=True,
    )
    assert rates == pytest.approx([1e-3 * (8 - s) / 8 for s in (0, 3, 4, 5, 6, 7)])
    results = json.loads((tmp_path / "seed-1/results.json").read_text())
    assert results["timing"]["skipped_steps"] == 2 and results["timing"]["steps"] == 8
    assert [e["lr"] for e in results["history"]["epochs"]] == pytest.approx([5e-4, 0.0])


def test_resume_with_more_epochs_extends_a_finished_run(tmp_path, monkeypatch):
    base = dict(TINY, synthetic_sizes=[8, 4, 4], batch_size=4, warmup_ratio=0.0)
    ithp_fast.train(base, output_dir=str(tmp_path), epochs=2)
    finished = json.loads((tmp_path / "seed-1/results.json").read_text())
    assert finished["history"]["epochs"][-1]["lr"] == 0.0  # the 2-epoch schedule ended at 0
    with pytest.raises(ValueError, match="epochs: saved 2, now 1"):
        ithp_fast.train(base, output_dir=str(tmp_path), epochs=1, resume=True)
    rates, step = [], torch.optim.AdamW.step
    monkeypatch.setattr(
        torch.optim.AdamW,
        "step",
        lambda self, *a, **k: (rates.append(self.param_groups[0]["lr"]), step(self, *a, **k))[1],
    )
    ithp_fast.train(base, output_dir=str(tmp_path), epochs=4, resume=True)
    # steps 5 to 8 at the rates of a schedule planned for 8 steps (no warm-up here): 1e-3 * (8 - step) / 8
    assert rates == pytest.approx([5e-4, 3.75e-4, 2.5e-4, 1.25e-4])
    extended = json.loads((tmp_path / "seed-1/results.json").read_text())
    epochs = extended["history"]["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4] and epochs[:2] == finished["history"]["epochs"]
    # the decay recomputed for 8 steps: after steps 6 and 8 the rate is 1e-3 * (8 - 6) / 8, then 0
    assert [e["lr"] for e in epochs[2:]] == pytest.approx([2.5e-4, 0.0])
    assert extended["timing"]["steps"] == 8
