"""Training beyond the released model: ``--modality-order``, ``--mask-padding``, ``--missing-rate`` and
evaluation with detectors removed, through the command line, the Python API and one batch at a time."""

import json

import numpy as np
import pytest
import torch
from helpers import TINY_TRAINING
from safetensors.torch import load_file
from test_cli import TINY as TINY_FLAGS
from test_cli import one_error_line
from test_data import D_A, D_V, array_data, dump, word_data
from torch.utils.data import default_collate

import ithp_fast
from ithp_fast.data import SyntheticSpec, load_sentiment_data, minmax_normalise
from ithp_fast.tools.cli import main
from ithp_fast.training.api import train
from ithp_fast.training.batches import present_detectors, run_batch
from ithp_fast.training.build import new_model
from ithp_fast.training.config import TrainConfig
from ithp_fast.training.distributed import DistContext
from ithp_fast.training.evaluate import evaluate_checkpoint

TINY = TINY_TRAINING
OPTIONS = ["--modality-order", "text,visual,acoustic", "--mask-padding", "--missing-rate", "0.25"]


@pytest.fixture(scope="module")
def options_run(tmp_path_factory):
    """Two epochs on 16 synthetic examples with every option on, from the command line."""
    out = tmp_path_factory.mktemp("levels") / "run"
    argv = ["train", "--output-dir", str(out), "--synthetic-sizes", "16", "8", "8", *TINY_FLAGS]
    argv[argv.index("--max-steps") + 1] = "4"
    argv[argv.index("--epochs") + 1] = "2"
    assert main([*argv, "--lr", "1e-3", *OPTIONS]) == 0
    return out


def read_json(path):
    return json.loads(path.read_text())


def test_options_round_trip_through_train_config_json_and_the_checkpoint(options_run, tmp_path):
    saved = read_json(options_run / "train_config.json")
    assert saved["modality_order"] == ["text", "visual", "acoustic"]
    assert saved["mask_padding"] is True and saved["missing_rate"] == 0.25
    ckpt = options_run / "seed-1" / "checkpoint-last"
    config, run = read_json(ckpt / "config.json"), read_json(ckpt / "training.json")["run"]
    assert {k: run[k] for k in ("modality_order", "mask_padding", "missing_rate")} == {
        k: saved[k] for k in ("modality_order", "mask_padding", "missing_rate")
    }
    assert config["modality_order"] == ["visual", "acoustic"] and config["mask_ithp_padding"]
    assert (config["ithp"]["X1_dim"], config["ithp"]["X2_dim"]) == (47, 74)  # level 1 is visual

    model = ithp_fast.load_checkpoint(ckpt)
    assert model.modality_order == ("visual", "acoustic") and model.mask_ithp_padding
    assert model.ithp.config.detector_dims == (47, 74)
    results = read_json(options_run / "seed-1" / "results.json")
    assert results["missing_detectors"]["rate"] == 0.25
    report = evaluate_checkpoint(str(ckpt), device="cpu", output_dir=str(tmp_path / "eval"))
    assert report["metrics"] == results["test"]  # the reloaded options score as training did

    again = tmp_path / "again"
    assert main(["train", "--config", str(options_run / "train_config.json"), "--output-dir", str(again)]) == 0
    rerun = read_json(again / "seed-1" / "results.json")
    assert (
        rerun["test"] == results["test"]
        and rerun["history"]["epochs"][-1]["train"] == (results["history"]["epochs"][-1]["train"])
    )


def test_a_detector_removed_at_evaluation_changes_its_reconstruction_term_and_no_prediction(options_run, tmp_path):
    ckpt = str(options_run / "seed-1" / "checkpoint-last")
    out = tmp_path / "eval"
    reports = {
        drop: evaluate_checkpoint(ckpt, device="cpu", eval_sampling="mean", output_dir=str(out), drop_detectors=drop)
        for drop in ((), ("acoustic",), ("visual", "acoustic"))
    }
    full, no_acoustic, none = reports.values()
    predictions = (out / "test-mean-predictions.csv").read_text()
    assert (out / "test-mean-without-acoustic-predictions.csv").read_text() == predictions
    assert (out / "test-mean-without-visual-acoustic-predictions.csv").read_text() == predictions
    assert full["metrics"] == no_acoustic["metrics"] == none["metrics"]
    assert read_json(out / "test-mean.json")["dropped_detectors"] == []  # the full evaluation is kept beside the others

    terms, cfg = full["ib_terms"], ithp_fast.load_checkpoint(ckpt).ithp.config
    assert terms["mse0"] > 0 and terms["mse1"] > 0
    # acoustic is level 2 in this run's order: its MSE is 0 without it, everything else is as it was
    assert no_acoustic["ib_terms"]["mse1"] == 0 and none["ib_terms"]["mse0"] == none["ib_terms"]["mse1"] == 0
    for key in ("kl0", "kl1", "mse0"):
        assert no_acoustic["ib_terms"][key] == pytest.approx(terms[key], rel=1e-6)
    removed = cfg.level_weights[1] * cfg.detector_weights[1] * terms["mse1"]
    assert no_acoustic["ib_terms"]["IB_total"] == pytest.approx(terms["IB_total"] - removed, rel=1e-5)


def test_missing_detectors_are_drawn_from_the_run_seed():
    present = present_detectors(5, 2000, 2, 0.3)
    assert present.shape == (2000, 2) and present.dtype == torch.bool
    assert torch.equal(present, present_detectors(5, 2000, 2, 0.3))
    assert not torch.equal(present, present_detectors(6, 2000, 2, 0.3))
    assert abs((~present).float().mean().item() - 0.3) < 0.03
    assert present_detectors(5, 2000, 2, 0.0) is None


def final_weights(tmp_path, name, missing_rate):
    cfg = TrainConfig(output_dir=str(tmp_path / name), synthetic_sizes=(16, 8, 8), max_steps=2, lr=1e-3, **TINY)
    train(cfg, seeds=[3], missing_rate=missing_rate)
    return load_file(str(tmp_path / name / "seed-3" / "checkpoint-last" / "model.safetensors"))


def test_a_run_with_missing_detectors_is_reproducible(tmp_path):
    first = final_weights(tmp_path, "a", missing_rate=0.5)
    again = final_weights(tmp_path, "b", missing_rate=0.5)
    complete = final_weights(tmp_path, "c", missing_rate=0.0)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], complete[k]) for k in first)  # the mask reaches training


def one_batch(max_len, size=6):
    data = load_sentiment_data(synthetic=SyntheticSpec(sizes=(size, 2, 2)), max_len=max_len)
    return data, default_collate([data.splits["train"][i] for i in range(size)])


def batch_outputs(data, batch, detector_mask=None, backend="auto", train=True, **settings):
    """A forward of one batch (same weights and draws every call; in eval mode the posterior mean) and the
    loss's gradients."""
    cfg = TrainConfig(backend=backend, eval_sampling="mean", **{**TINY, **settings})
    torch.manual_seed(0)
    model, model_config = new_model(cfg, data)
    model.train(train)
    torch.manual_seed(1)
    out, labels = run_batch(model, batch, cfg, model_config, DistContext(), None, True, detector_mask)
    loss = model.training_loss(out, labels)
    grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad], allow_unused=True)
    values = [out.logits, out.IB_total, *out.kl_terms, *out.mse_terms, loss]
    return [v.detach() for v in values], [g for g in grads if g is not None]


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_mask_padding_changes_the_ib_terms_of_padded_batches_only(backend):
    data, padded = one_batch(max_len=50)  # 6-20 words: every example is padded
    assert (padded["attention_mask"] == 0).any(1).all()
    (plain, _), (masked, _) = (batch_outputs(data, padded, backend=backend, mask_padding=m) for m in (False, True))
    torch.testing.assert_close(masked[0], plain[0], rtol=0, atol=0)  # the prediction does not use the mask
    for k in range(1, len(plain) - 1):  # IB_total, each KL and each MSE
        assert not torch.allclose(masked[k], plain[k]), k

    data, full = one_batch(max_len=8)  # at least 6 words + [CLS] + [SEP]: no padding at all
    assert bool((full["attention_mask"] == 1).all())
    (plain, plain_grads), (masked, masked_grads) = (
        batch_outputs(data, full, backend=backend, mask_padding=m) for m in (False, True)
    )
    for got, want in zip(masked + masked_grads, plain + plain_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_a_dropped_detector_contributes_nothing_to_its_example(backend):
    data, batch = one_batch(max_len=12)
    mask = torch.ones(6, 2, dtype=torch.bool)
    mask[0, 0] = mask[3, 1] = False  # example 0 without acoustic (level 1), example 3 without visual (level 2)
    changed = {**batch, "acoustic": batch["acoustic"].clone(), "visual": batch["visual"].clone()}
    changed["acoustic"][0] = 50 + 100 * torch.randn_like(changed["acoustic"][0])
    changed["visual"][3] = -50 + 100 * torch.randn_like(changed["visual"][3])

    values, grads = batch_outputs(data, batch, mask, backend=backend)
    values_changed, grads_changed = batch_outputs(data, changed, mask, backend=backend)
    for got, want in zip(values_changed + grads_changed, values + grads):
        assert torch.equal(got, want)  # neither the features nor their min-max bounds are used
    unmasked, _ = batch_outputs(data, batch, backend=backend)
    unmasked_changed, _ = batch_outputs(data, changed, backend=backend)
    assert not torch.allclose(unmasked_changed[1], unmasked[1])  # without the mask the change shows

    # Example 0 without either detector: each level's MSE is that of the batch without example 0 (eval mode,
    # so that each example's latent does not depend on the batch), not an average that counts its zeros.
    mask = torch.ones(6, 2, dtype=torch.bool)
    mask[0] = False
    others = {k: v[1:] for k, v in batch.items()}
    (_, _, *kl_mse_without, _), _ = batch_outputs(data, batch, mask, backend=backend, train=False)
    (_, _, *kl_mse_others, _), _ = batch_outputs(data, others, backend=backend, train=False)
    for got, want in zip(kl_mse_without[2:], kl_mse_others[2:]):  # mse0, mse1
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("layout", ["words", "arrays"])
def test_detectors_reach_their_levels_by_name_in_any_order(tmp_path, layout):
    data = load_sentiment_data(dump(tmp_path, word_data() if layout == "words" else array_data()))
    cfg = TrainConfig(modality_order=["text", "visual", "acoustic"], **TINY)
    model, model_config = new_model(cfg, data)
    assert model.ithp.config.detector_dims == (D_V, D_A)
    seen = []
    forward_levels = model.ithp.forward_levels
    model.ithp.forward_levels = lambda x, detectors, **kw: seen.append(detectors) or forward_levels(x, detectors, **kw)
    batch = default_collate([data.splits["train"][i] for i in range(3)])
    run_batch(model, batch, cfg, model_config, DistContext(), None, False, torch.ones(3, 2, dtype=torch.bool))
    level1, level2 = seen[0]
    torch.testing.assert_close(level1, minmax_normalise(batch["visual"]), rtol=0, atol=0)
    torch.testing.assert_close(level2, minmax_normalise(batch["acoustic"]), rtol=0, atol=0)


def test_a_model_of_one_level_trains_logs_plots_and_evaluates(tmp_path):
    out = tmp_path / "run"
    cfg = TrainConfig(output_dir=str(out), synthetic_sizes=(16, 8, 8), max_steps=2, **{**TINY, "plots": True})
    train(cfg, modality_order="text,acoustic")
    seed = out / "seed-1"
    header = (seed / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "train_kl0" in header and "train_mse0" in header and "train_kl1" not in header
    assert (seed / "information_plane.png").is_file()
    model = ithp_fast.load_checkpoint(seed / "checkpoint-last")
    assert model.modality_order == ("acoustic",) and model.ithp.config.detector_dims == (74,)
    report = evaluate_checkpoint(str(seed / "checkpoint-last"), device="cpu", output_dir=str(tmp_path / "eval"))
    assert set(report["ib_terms"]) == {"IB_total", "kl0", "mse0"}
    assert np.isfinite(report["metrics"]["authors"]["MAE"])


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--modality-order", "text,acoustic,pose"], "--modality-order: unknown modality 'pose' in"),
        (["--modality-order", "text", "visual", "visual"], "--modality-order: 'visual' appears more than once"),
        (["--modality-order", "acoustic,text,visual"], "--modality-order: the first modality must be text"),
        (["--modality-order", "text"], "--modality-order: name at least one detector after text"),
        (["--missing-rate", "1"], "--missing-rate: expected a probability in [0, 1), got 1.0"),
        (["--missing-rate", "-0.1"], "--missing-rate: expected a probability in [0, 1), got -0.1"),
    ],
)
def test_bad_options_are_one_line_naming_the_option(tmp_path, capsys, flags, message):
    line = one_error_line(capsys, ["train", "--output-dir", str(tmp_path), *TINY_FLAGS, *flags])
    assert line.startswith(f"ithp-fast train: error: {message}"), line
    assert not (tmp_path / "seed-1").exists()


def test_dropping_a_detector_the_checkpoint_does_not_have_is_one_line(options_run, tmp_path, capsys):
    ckpt = str(options_run / "seed-1" / "checkpoint-last")
    argv = ["evaluate", "--checkpoint", ckpt, "--output-dir", str(tmp_path), "--drop-detectors"]
    line = one_error_line(capsys, [*argv, "pose"])
    assert line == (
        "ithp-fast evaluate: error: --drop-detectors: 'pose' is not a detector of this checkpoint "
        "(its detectors: visual, acoustic)"
    )
    assert "named more than once" in one_error_line(capsys, [*argv, "visual", "visual"])


def test_a_checkpoint_written_before_these_options_resumes_and_loads_as_the_released_model(tmp_path):
    from ithp_fast.training import checkpoints as ckpt

    cfg = TrainConfig(output_dir=str(tmp_path / "run"), synthetic_sizes=(16, 8, 8), epochs=1, **TINY)
    train(cfg, stop_after_steps=1)
    last = tmp_path / "run" / "seed-1" / "checkpoint-last"
    # as the version before these options wrote it: everything in config.json (format 2), no option keys
    config = ckpt.load_config(str(last))
    model = {k: config["model"][k] for k in ("backbone", "backbone_path", "ithp", "beta_shift", "dropout_prob",
                                             "pass_attention_mask")}
    model["eval_sampling"] = config["run"]["eval_sampling"]
    for key in ("modality_order", "mask_padding", "missing_rate"):
        del config["run"][key]
    ckpt.write_json(str(last / "config.json"), {**config, "model": model, "format": ckpt.EARLIER_FORMAT})
    (last / ckpt.RUN_FILE).unlink()
    ckpt.write_manifest(str(last))

    model = ithp_fast.load_checkpoint(last)
    assert model.modality_order == ("acoustic", "visual") and not model.mask_ithp_padding
    summary = train(cfg, resume=True)  # the settings it does not list count as their defaults
    assert summary["seeds"] == [1]
