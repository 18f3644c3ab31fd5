"""Train ITHP-DeBERTa on the built-in synthetic sentiment set, on the CPU, then reload the
checkpoint and score it again.

    python examples/train_synthetic.py            # about 20 s of training on 2 CPU cores

The synthetic set is not CMU-MOSI/MOSEI (see ithp_fast/data/synthetic.py): it shows that the
pipeline learns, not how well ITHP does on real data. A randomly initialised backbone needs a
larger learning rate than the published 1e-5 (which assumes pretrained DeBERTa weights).
"""

import json
import os

from ithp_fast.training.config import TrainConfig
from ithp_fast.training.evaluate import evaluate_checkpoint
from ithp_fast.training.loop import train

out = "runs/synthetic-example"
summary = train(TrainConfig(output_dir=out, epochs=10, lr=1e-3, progress=True))

results = json.load(open(os.path.join(out, "seed-1", "results.json")))
ceiling = results["synthetic_text_only_ceiling"]["authors"]
print(f"text-only ceiling on this test split: Corr {ceiling['Corr']:.3f}, Non0_acc_2 {ceiling['Non0_acc_2']:.3f}")
print("figures:", ", ".join(results["plots"].values()))

report = evaluate_checkpoint(os.path.join(out, "seed-1", "checkpoint-last"), split="test", device="cpu")
assert report["metrics"] == results["test"], "the reloaded checkpoint scores differently"
