"""Training on the synthetic default (CPU): the loss falls, checkpoints reload to the same
predictions, metrics and plots are written, resuming is exact, seeds are summarised."""

import json
import os
import re

import numpy as np
import pytest
import torch
from helpers import TINY_TRAINING, as_flags
from safetensors.torch import load_file

from ithp_fast.data import SyntheticSpec, load_sentiment_data
from ithp_fast.training.api import train
from ithp_fast.training.build import new_model, optimizer_groups
from ithp_fast.training.config import TrainConfig
from ithp_fast.training.distributed import DistContext
from ithp_fast.training.evaluate import evaluate_checkpoint, predict
from ithp_fast.training.load import load_checkpoint_model
from ithp_fast.training.metrics import mean_std

TINY = TINY_TRAINING


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """80 steps on 64 synthetic examples with the default small backbone; seconds on a quiet CPU. (The layers
    around the backbone start from transformers' normal(0, 0.02), as the authors' did: the loss stays near
    its start for about 30 steps, then falls.)"""
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(
        output_dir=str(out),
        synthetic_sizes=(64, 16, 16),
        epochs=10,
        lr=5e-3,
        batch_size=8,
        backbone_dropout=0.0,
        fusion_dropout=0.1,
        ithp_dropout=0.1,
        log_every=4,
        progress=False,
        device="cpu",
        threads=1,
    )
    summary = train(cfg)
    run_dir = out / "seed-1"
    return cfg, summary, run_dir, json.loads((run_dir / "results.json").read_text())


def test_loss_falls_well_below_its_start(short_run):
    _, _, _, results = short_run
    epochs = results["history"]["epochs"]
    first, last = epochs[0]["train"]["loss"], epochs[-1]["train"]["loss"]
    assert last < 0.75 * first, f"loss {first:.3f} -> {last:.3f}"
    assert results["timing"]["steps"] == 80 and len(epochs) == 10


def test_run_writes_metrics_plots_predictions_and_checkpoint(short_run):
    cfg, summary, run_dir, results = short_run
    for name in ("results.json", "predictions_test.csv", "training_curves.png", "information_plane.png"):
        assert (run_dir / name).stat().st_size > 0, name
    for name in ("model.safetensors", "config.json", "training.json", "tokenizer.json", "optimizer.safetensors",
                 "trainer_state.json"):
        assert (run_dir / "checkpoint-last" / name).is_file(), name
    assert not (run_dir / "checkpoint-best").exists()  # authors protocol: last epoch
    for conv, keys in (
        ("authors", {"Non0_acc_2", "Non0_F1_score"}),
        ("mmsa", {"Has0_acc_2", "Has0_F1_score", "Non0_acc_2"}),
    ):
        assert keys | {"Mult_acc_5", "Mult_acc_7", "MAE", "Corr"} <= set(results["test"][conv])
    labels = load_sentiment_data(synthetic=SyntheticSpec(sizes=(64, 16, 16))).splits["test"].labels
    assert results["test"]["mmsa"]["count"] == 16 and results["test"]["authors"]["count"] == int((labels != 0).sum())
    assert results["headline"] == results["test"]["authors"] and results["selection"] == {
        "rule": "last",
        "metric": None,
        "epoch": 10,
    }
    assert results["synthetic_text_only_ceiling"]["authors"]["Corr"] > 0
    rec = results["history"]["steps"][0]
    assert {"step", "loss", "task_mse", "IB_total", "kl0", "mse0", "kl1", "mse1"} <= set(rec)
    config = json.loads((run_dir / "checkpoint-last" / "config.json").read_text())  # Hugging Face's
    training = json.loads((run_dir / "checkpoint-last" / "training.json").read_text())
    assert training["run"]["lr"] == 5e-3 and training["run"]["seed"] == 1
    assert config["model_type"] == "ithp_deberta" and config["eval_sampling"] == "mean"
    assert config["ithp"]["X1_dim"] == 74 and config["ithp"]["X2_dim"] == 47
    assert config["backbone"]["hidden_size"] == 64
    assert json.loads((run_dir.parent / "summary.json").read_text())["seeds"] == [1]


def test_checkpoint_reloads_to_identical_predictions(short_run, tmp_path):
    _, _, run_dir, results = short_run
    report = evaluate_checkpoint(str(run_dir / "checkpoint-last"), split="test", device="cpu", output_dir=str(tmp_path))
    with open(run_dir / "predictions_test.csv") as a, open(tmp_path / "test-sample-predictions.csv") as b:
        assert a.read() == b.read()
    assert report["metrics"] == json.loads(json.dumps(results["test"]))
    # and the weights themselves round-trip exactly
    model, _ = load_checkpoint_model(str(run_dir / "checkpoint-last"))
    saved = load_file(str(run_dir / "checkpoint-last" / "model.safetensors"))
    for name, value in model.state_dict().items():
        assert torch.equal(value, saved[name]), name


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    base = dict(TINY, synthetic_sizes=(24, 8, 8), epochs=2, batch_size=8, lr=1e-3)  # 3 steps per epoch, dropout on
    train(TrainConfig(output_dir=str(tmp_path / "a"), **base))
    partial = train(TrainConfig(output_dir=str(tmp_path / "b"), stop_after_steps=4, **base))
    assert partial["seeds"] == []  # nothing finished yet
    state = json.loads((tmp_path / "b/seed-1/checkpoint-last/trainer_state.json").read_text())
    assert (state["global_step"], state["epoch"], state["step_in_epoch"], state["finished"]) == (4, 1, 1, False)
    with pytest.raises(ValueError, match="lr: saved 0.001, now 0.002"):
        train(TrainConfig(output_dir=str(tmp_path / "b"), resume=True, **{**base, "lr": 2e-3}))
    train(TrainConfig(output_dir=str(tmp_path / "b"), resume=True, **base))
    a = load_file(str(tmp_path / "a/seed-1/checkpoint-last/model.safetensors"))
    b = load_file(str(tmp_path / "b/seed-1/checkpoint-last/model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ra = json.loads((tmp_path / "a/seed-1/results.json").read_text())
    rb = json.loads((tmp_path / "b/seed-1/results.json").read_text())
    assert ra["test"] == rb["test"]
    assert [r["train"] for r in ra["history"]["epochs"]] == [r["train"] for r in rb["history"]["epochs"]]
    assert ra["history"]["steps"] == rb["history"]["steps"]
    # a finished seed is not trained again
    again = train(TrainConfig(output_dir=str(tmp_path / "b"), resume=True, **base))
    assert again["metrics"]["authors"]["MAE"]["values"] == [rb["test"]["authors"]["MAE"]]


def test_several_seeds_report_mean_and_std(tmp_path):
    summary = train(
        TrainConfig(output_dir=str(tmp_path), seeds=(1, 2), max_steps=2, synthetic_sizes=(16, 8, 8), **TINY)
    )
    assert summary["seeds"] == [1, 2]
    per_seed = [json.loads((tmp_path / f"seed-{s}/results.json").read_text()) for s in (1, 2)]
    values = [r["test"]["authors"]["MAE"] for r in per_seed]
    assert values[0] != values[1]
    assert summary["metrics"]["authors"]["MAE"]["values"] == values
    assert (summary["metrics"]["authors"]["MAE"]["mean"], summary["metrics"]["authors"]["MAE"]["std"]) == pytest.approx(
        mean_std(values)
    )


def test_mmsa_protocol_selects_the_best_validation_epoch(tmp_path):
    train(TrainConfig(output_dir=str(tmp_path), protocol="mmsa", epochs=3, synthetic_sizes=(16, 8, 8), lr=1e-3, **TINY))
    results = json.loads((tmp_path / "seed-1/results.json").read_text())
    epochs = results["history"]["epochs"]
    best = min(epochs, key=lambda r: r["valid"]["mmsa"]["MAE"])
    assert results["selection"] == {"rule": "best", "metric": "MAE", "epoch": best["epoch"]}
    assert results["test"] == best["test"]  # the best weights, reloaded, score as they did at that epoch
    assert results["headline"] == results["test"]["mmsa"]
    assert (tmp_path / "seed-1/checkpoint-best/model.safetensors").is_file()


def test_per_example_noise_makes_predictions_independent_of_batching():
    cfg = TrainConfig(noise="per-example", synthetic_sizes=(8, 4, 11), **TINY)
    data = load_sentiment_data(synthetic=SyntheticSpec(sizes=(8, 4, 11)))
    torch.manual_seed(0)
    model, model_config = new_model(cfg, data)
    ctx = DistContext()
    preds = []
    for batch in (11, 4, 1):
        cfg.eval_batch_size = batch
        preds.append(predict(model, data.splits["test"], cfg, model_config, ctx, seed=5)["predictions"])
    np.testing.assert_allclose(preds[1], preds[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(preds[2], preds[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(predict(model, data.splits["test"], cfg, model_config, ctx, seed=6)["predictions"], preds[0])


def test_weight_decay_skips_biases_and_layernorm():
    data = load_sentiment_data(synthetic=SyntheticSpec(sizes=(4, 2, 2)))
    model, _ = new_model(TrainConfig(**TINY), data)
    decay, no_decay = optimizer_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)] for p in no_decay["params"])
    assert any("LayerNorm.weight" in names[id(p)] for p in no_decay["params"])
    assert all(not names[id(p)].endswith("bias") and "LayerNorm" not in names[id(p)] for p in decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(names)


@pytest.mark.parametrize("backend", ["reference", "auto", "torch"])
def test_backend_picks_the_ithp_class(backend):
    import ithp_fast
    from ithp_fast.reference import ITHP as ReferenceITHP

    data = load_sentiment_data(synthetic=SyntheticSpec(sizes=(4, 2, 2)))
    model, _ = new_model(TrainConfig(backend=backend, **TINY), data)
    assert type(model.ithp) is (ReferenceITHP if backend == "reference" else ithp_fast.ITHP)
    assert getattr(model.ithp, "backend", None) == (None if backend in ("reference", "auto") else backend)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="--batch-size 8 .global. must be divisible by the number of processes .3."):
        TrainConfig().validate(world_size=3)
    with pytest.raises(ValueError, match="--hidden-size 30 must be a multiple of --num-heads 4"):
        TrainConfig(hidden_size=30, num_heads=4).validate()
    with pytest.raises(FileNotFoundError, match="not a local directory. Nothing is downloaded"):
        train(TrainConfig(backbone="microsoft/deberta-v3-base", output_dir=os.devnull))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("amp", [False, True])
@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_cuda_run_learns_and_reloads_to_identical_predictions(tmp_path, backend, amp):
    cfg = TrainConfig(
        output_dir=str(tmp_path),
        synthetic_sizes=(64, 16, 16),
        epochs=10,
        lr=5e-3,
        batch_size=8,
        backend=backend,
        amp=amp,
        backbone_dropout=0.0,
        fusion_dropout=0.1,
        ithp_dropout=0.1,
        progress=False,
        device="cuda",
    )
    train(cfg)
    results = json.loads((tmp_path / "seed-1/results.json").read_text())
    epochs = results["history"]["epochs"]
    assert epochs[-1]["train"]["loss"] < 0.75 * epochs[0]["train"]["loss"]
    assert results["timing"]["device"].startswith("cuda")
    evaluate_checkpoint(str(tmp_path / "seed-1/checkpoint-last"), device="cuda", output_dir=str(tmp_path / "eval"))
    with open(tmp_path / "seed-1/predictions_test.csv") as a, open(tmp_path / "eval/test-sample-predictions.csv") as b:
        assert a.read() == b.read()


def test_detector_inputs_reach_the_model_min_max_normalised(tmp_path, monkeypatch):
    import ithp_fast.training.loop as loop

    seen = []

    def model_with_probe(cfg, data):
        model, model_config = new_model(cfg, data)
        model.ithp.register_forward_pre_hook(lambda module, args: seen.append((args[1].clone(), args[2].clone())))
        return model, model_config

    monkeypatch.setattr(loop, "new_model", model_with_probe)
    train(TrainConfig(output_dir=str(tmp_path), synthetic_sizes=(16, 8, 8), max_steps=2, **TINY))
    assert len(seen) >= 2
    raw = load_sentiment_data(synthetic=SyntheticSpec(sizes=(16, 8, 8))).splits["train"]
    assert raw.visual.min() < -0.5 and raw.acoustic.max() > 1.5  # the raw features are not in [0, 1]
    for visual, acoustic in seen[:2]:  # the two training batches
        for t in (visual, acoustic):
            assert t.min().item() == 0.0 and t.max().item() == 1.0


def test_learning_rate_warms_up_then_decays_to_zero(tmp_path, monkeypatch):
    rates = []
    original = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    # 16 examples, batch 4: 4 steps per epoch, 5 epochs = 20 steps; warm-up 20 % = 4 steps
    summary = train(
        TrainConfig(
            output_dir=str(tmp_path),
            synthetic_sizes=(16, 8, 8),
            batch_size=4,
            epochs=5,
            lr=1e-3,
            warmup_ratio=0.2,
            **TINY,
        )
    )
    assert len(rates) == 20
    assert rates[0] == 0.0  # step 0: the start of the warm-up
    assert rates[4] == pytest.approx(1e-3) and max(rates) == rates[4]  # the end of the warm-up: the full rate
    assert rates[:5] == pytest.approx([0, 2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert rates[-1] == pytest.approx(1e-3 / 16)  # the last step; the schedule reaches 0 after it
    results = json.loads((tmp_path / "seed-1/results.json").read_text())
    assert results["history"]["epochs"][-1]["lr"] == 0.0 and summary["seeds"] == [1]


def test_synthetic_run_beats_a_metric_floor(tmp_path):
    """A short run on 256 synthetic examples learns the text's sentiment well above chance (Corr 0, accuracy 0.5)."""
    train(
        TrainConfig(
            output_dir=str(tmp_path),
            synthetic_sizes=(256, 64, 64),
            epochs=8,  # the head starts from transformers' normal(0, 0.02): learning starts after a few epochs
            lr=2e-3,
            **{**TINY, "intermediate_size": 64},
        )
    )
    test = json.loads((tmp_path / "seed-1/results.json").read_text())["test"]["authors"]
    assert test["Corr"] > 0.3 and test["Non0_acc_2"] > 0.58, test


def test_diverging_run_stops_naming_seed_epoch_and_step_and_keeps_what_was_saved(tmp_path, capsys):
    from ithp_fast.tools.cli import main
    from ithp_fast.training import checkpoints as ckpt

    flags = [
        "--synthetic-sizes",
        "8",
        "8",
        "8",
        "--epochs",
        "3",
        "--lr",
        "50",
        "--output-dir",
        str(tmp_path),
        *as_flags(TINY_TRAINING),
    ]
    assert main(["train", *flags]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ithp-fast")]
    assert len(err) == 1
    match = re.fullmatch(
        r"ithp-fast train: error: seed 1, epoch (\d+), step (\d+): the loss is (nan|inf|-inf) .*", err[0]
    )
    assert match, err
    epoch = int(match.group(1))
    last = tmp_path / "seed-1/checkpoint-last"
    if epoch > 1:  # the epochs before the failure stay saved and intact
        assert ckpt.checkpoint_problem(str(last)) is None
        assert json.loads((last / "trainer_state.json").read_text())["epoch"] == epoch - 1
    assert not (tmp_path / "seed-1/results.json").exists()
    # skipping such steps instead: the run ends, counts them, and its metrics are NaN, not numbers
    assert main(["train", *flags, "--resume", "--skip-nonfinite-steps"]) == 0
    results = json.loads((tmp_path / "seed-1/results.json").read_text())
    assert results["timing"]["skipped_steps"] >= 1
    assert all(v is None for k, v in results["test"]["authors"].items() if k != "count")


def test_resume_after_a_crash_between_the_renames_continues(tmp_path, monkeypatch):
    base = dict(TINY, synthetic_sizes=(16, 8, 8), epochs=3, batch_size=8, lr=1e-3)
    train(TrainConfig(output_dir=str(tmp_path / "a"), **base))
    replace, calls = os.replace, []

    def crash_on_the_second_checkpoint(src, dst):
        if str(src).endswith("checkpoint-last.tmp"):
            calls.append(src)
            if len(calls) == 2:
                raise KeyboardInterrupt  # the process dies after checkpoint-last -> .old
        return replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_the_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(output_dir=str(tmp_path / "b"), **base))
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path / "b/seed-1")) == ["checkpoint-last.old", "checkpoint-last.tmp", "metrics.csv"]
    train(TrainConfig(output_dir=str(tmp_path / "b"), resume=True, **base))
    state = json.loads((tmp_path / "b/seed-1/checkpoint-last/trainer_state.json").read_text())
    assert state["epoch"] == 3 and len(state["history"]["epochs"]) == 3  # continued from epoch 2, not from 1
    a = load_file(str(tmp_path / "a/seed-1/checkpoint-last/model.safetensors"))
    b = load_file(str(tmp_path / "b/seed-1/checkpoint-last/model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert sorted(os.listdir(tmp_path / "b/seed-1")) == [
        "checkpoint-last",
        "metrics.csv",
        "predictions_test.csv",
        "results.json",
    ]
