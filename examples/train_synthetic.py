"""Train ITHP-DeBERTa on the built-in synthetic sentiment set (three seeds, on the CPU) through the
Python API, score a checkpoint again, and write the results file the README and docs/training.md quote.

    python examples/train_synthetic.py     # about 4 minutes on 2 CPU cores

The settings are those of examples/synthetic.yaml. The synthetic set is not CMU-MOSI/MOSEI (see
ithp_fast/data/synthetic.py): it shows that the pipeline learns, not how well ITHP does on real
data. The results go to bench/results/train-synthetic-<device>-<date>.json (a new name if that
file exists: results are never overwritten).
"""

import argparse
import datetime
import json
import os
import platform
import statistics
from pathlib import Path

import torch

import ithp_fast
from ithp_fast.tools.benchmarks import device_slug, new_results_path

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "synthetic.yaml"


def summary_threads(output_dir: str) -> int:
    return json.loads(Path(output_dir, "train_config.json").read_text())["threads"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="runs/synthetic-example", help="the run directory (replaced)")
    parser.add_argument(
        "--results-dir", default=str(HERE.parent / "bench" / "results"), help="where the results file goes"
    )
    args = parser.parse_args()

    summary = ithp_fast.train(CONFIG, output_dir=args.output_dir, overwrite_output_dir=True)
    seeds = [json.loads(Path(args.output_dir, f"seed-{s}", "results.json").read_text()) for s in summary["seeds"]]

    checkpoint = os.path.join(args.output_dir, f"seed-{summary['seeds'][0]}", "checkpoint-last")
    report = ithp_fast.evaluate(checkpoint, device="cpu")
    assert report["metrics"] == seeds[0]["test"], "the reloaded checkpoint scores differently"

    epoch_seconds = [s for r in seeds for s in r["timing"]["epoch_seconds"]]
    losses = [(r["history"]["epochs"][0]["train"]["loss"], r["history"]["epochs"][-1]["train"]["loss"]) for r in seeds]
    results = {
        "what": "ithp-fast train on the synthetic set, examples/synthetic.yaml; test metrics, authors convention; "
        "std is the sample standard deviation (ddof=1) over the seeds",
        "command": "python examples/train_synthetic.py",
        "date": datetime.date.today().isoformat(),
        "device": f"{device_slug()} ({os.cpu_count()} cores, {platform.machine()}), "
        f"threads {summary_threads(args.output_dir)}",
        "torch": torch.__version__,
        "config": json.loads(Path(args.output_dir, "train_config.json").read_text()),
        "seeds": summary["seeds"],
        "test": {
            k: {key: v[key] for key in ("mean", "std", "values")} for k, v in summary["metrics"]["authors"].items()
        },
        "text_only_ceiling": seeds[0]["synthetic_text_only_ceiling"]["authors"],
        "train_loss_first_epoch": [first for first, _ in losses],
        "train_loss_last_epoch": [last for _, last in losses],
        "epoch_seconds": {
            "min": min(epoch_seconds),
            "median": statistics.median(epoch_seconds),
            "max": max(epoch_seconds),
        },
    }
    path = new_results_path(Path(args.results_dir), f"train-synthetic-{device_slug()}", tiny=False)
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
