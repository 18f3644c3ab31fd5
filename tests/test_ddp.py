"""Two processes under torchrun (gloo, CPU) train exactly like one process on the same global batch."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ithp_fast.data import SyntheticSpec, load_sentiment_data
from ithp_fast.training.api import train
from ithp_fast.training.build import new_model
from ithp_fast.training.config import TrainConfig

# Dropout off and noise drawn per example: the only differences left between one process and
# two are the order of floating-point sums (gradient all-reduce, sharded batches).
OPTIONS = dict(
    max_steps=2,
    epochs=1,
    synthetic_sizes=(32, 9, 11),
    batch_size=8,
    hidden_size=32,
    num_layers=1,
    intermediate_size=32,
    inter_dim=32,
    b0_dim=16,
    b1_dim=8,
    lr=1e-3,
    noise="per-example",
    backbone_dropout=0.0,
    ithp_dropout=0.0,
    fusion_dropout=0.0,
    plots=False,
    progress=False,
)


def _flags(options):
    out = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, tuple):
            out += [flag, *map(str, value)]
        else:
            out += [flag, str(value)]
    return out


def _predictions(run_dir):
    with open(os.path.join(run_dir, "predictions_test.csv")) as f:
        return np.array([float(r["prediction"]) for r in csv.DictReader(f)])


@pytest.mark.slow
def test_two_process_torchrun_matches_one_process(tmp_path):
    two = tmp_path / "two"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "ithp_fast",
        "train",
        "--output-dir",
        str(two),
        "--device",
        "cpu",
        *_flags(OPTIONS),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = tmp_path / "one"
    train(TrainConfig(output_dir=str(one), device="cpu", **OPTIONS))

    a = load_file(str(one / "seed-1/checkpoint-last/model.safetensors"))
    b = load_file(str(two / "seed-1/checkpoint-last/model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=2e-6, msg=lambda m: f"{k}: {m}")

    # The steps moved the weights far more than the tolerance (so the comparison means something).
    data = load_sentiment_data(synthetic=SyntheticSpec(sizes=OPTIONS["synthetic_sizes"]))
    torch.manual_seed(1)
    init = new_model(TrainConfig(**OPTIONS), data)[0].state_dict()
    assert max((a[k] - init[k]).abs().max().item() for k in a) > 1e-4

    # Evaluation is sharded over the ranks, then gathered: metrics cover every example once.
    r1 = json.loads((one / "seed-1/results.json").read_text())
    r2 = json.loads((two / "seed-1/results.json").read_text())
    assert r2["timing"]["world_size"] == 2 and r1["timing"]["world_size"] == 1
    assert r2["test"]["mmsa"]["count"] == 11 and r2["valid"]["mmsa"]["count"] == 9
    np.testing.assert_allclose(_predictions(two / "seed-1"), _predictions(one / "seed-1"), rtol=1e-5, atol=1e-6)
    for conv in ("authors", "mmsa"):
        for key, value in r1["test"][conv].items():
            assert r2["test"][conv][key] == pytest.approx(value, rel=1e-4, abs=1e-5), (conv, key)
    # Only rank 0 wrote: one checkpoint, no half-written leftovers.
    assert sorted(os.listdir(two / "seed-1")) == [
        "checkpoint-last",
        "metrics.csv",
        "predictions_test.csv",
        "results.json",
    ]
