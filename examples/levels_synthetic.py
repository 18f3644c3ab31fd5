"""The training options beyond the released model, side by side on the built-in synthetic set: the released
modality order against the other one, padding masked or not, no detector missing or 30 % missing, and the
released script's recipe (no attention mask to the backbone) against the default; three seeds each, then
every released-order checkpoint evaluated with each detector removed. Writes the results file
docs/training.md quotes.

    python examples/levels_synthetic.py     # fifteen training runs of examples/synthetic.yaml's size, on the CPU

Each variant is examples/synthetic.yaml (10 epochs at lr 1e-3, seeds 1, 2, 3, one thread) with one setting
changed. The synthetic set is not CMU-MOSI/MOSEI (see ithp_fast/data/synthetic.py): its numbers say how the
options behave on this set, not on real data. Results go to
bench/results/levels-synthetic-<device>-<date>.json (a new name if that file exists: results are never
overwritten); the runs to runs/levels-synthetic/<variant> (replaced).
"""

import argparse
import datetime
import json
import os
import platform
from pathlib import Path

import torch

import ithp_fast
from ithp_fast.tools.benchmarks import device_slug, new_results_path
from ithp_fast.training.evaluate import report_stem
from ithp_fast.training.metrics import mean_std

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "synthetic.yaml"
BASELINE = "released"
VARIANTS = {
    BASELINE: {},
    "visual_first": {"modality_order": "text,visual,acoustic"},
    "mask_padding": {"mask_padding": True},
    "missing_0.3": {"missing_rate": 0.3},
    "recipe_released": {"recipe": "released"},  # the authors' script: no attention mask to the backbone
}
REMOVALS = ((), ("acoustic",), ("visual",), ("acoustic", "visual"))
METRICS = ("Non0_acc_2", "MAE", "Corr")


def spread(values: list[float]) -> dict:
    mean, std = mean_std(values)
    return {"mean": mean, "std": std, "values": values}


def run_variant(name: str, settings: dict, runs: Path) -> list[dict]:
    """Train one variant (every seed); returns each seed's results.json."""
    out = runs / name
    summary = ithp_fast.train(CONFIG, output_dir=str(out), overwrite_output_dir=True, **settings)
    return [json.loads((out / f"seed-{s}" / "results.json").read_text()) for s in summary["seeds"]]


def describe(seeds: list[dict], baseline: list[dict]) -> dict:
    """Test metrics (authors convention), the paired difference from the baseline seed by seed, and the
    training terms of the last epoch, each as mean, sample std and values over the seeds."""
    last = [r["history"]["epochs"][-1]["train"] for r in seeds]
    return {
        "test": {m: spread([r["test"]["authors"][m] for r in seeds]) for m in METRICS},
        "minus_released": {
            m: spread([r["test"]["authors"][m] - b["test"]["authors"][m] for r, b in zip(seeds, baseline)])
            for m in METRICS
        },
        "train_last_epoch": {term: spread([t[term] for t in last]) for term in last[0]},
        "test_ib_terms": {
            term: spread([r["ib_terms"]["test"][term] for r in seeds])
            for term in last[0]
            if term in seeds[0]["ib_terms"]["test"]
        },
        "detectors_dropped": [r["missing_detectors"]["dropped"] for r in seeds],
        "train_examples": seeds[0]["missing_detectors"]["train_examples"],
    }


def removal(checkpoint: Path, drop: tuple, out: Path) -> dict:
    """One evaluation of a checkpoint without the ``drop`` detectors."""
    report = ithp_fast.evaluate(checkpoint, device="cpu", output_dir=str(out), drop_detectors=drop)
    predictions = (out / f"{report_stem(report)}-predictions.csv").read_text()
    return {
        "metrics": {m: report["metrics"]["authors"][m] for m in METRICS},
        "ib_terms": report["ib_terms"],
        "predictions": predictions,
    }


def removals(seeds: list[dict], runs: Path) -> dict:
    """Each released-order checkpoint evaluated with each detector removed: metrics, IB terms, and whether a
    single prediction changed."""
    per_seed = []
    for r in seeds:
        checkpoint = Path(r["checkpoint"])
        out = runs / BASELINE / f"seed-{r['seed']}" / "eval-without"
        evaluated = {"-".join(drop) or "none": removal(checkpoint, drop, out) for drop in REMOVALS}
        full = evaluated["none"]["predictions"]
        for entry in evaluated.values():
            entry["predictions_identical"] = entry.pop("predictions") == full
        per_seed.append(evaluated)
    return {
        removed: {
            "predictions_identical": all(s[removed]["predictions_identical"] for s in per_seed),
            "metrics": {m: spread([s[removed]["metrics"][m] for s in per_seed]) for m in METRICS},
            "ib_terms": {
                t: spread([s[removed]["ib_terms"][t] for s in per_seed]) for t in per_seed[0][removed]["ib_terms"]
            },
        }
        for removed in per_seed[0]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", default="runs/levels-synthetic", help="where the runs go (replaced)")
    parser.add_argument(
        "--results-dir", default=str(HERE.parent / "bench" / "results"), help="where the results file goes"
    )
    args = parser.parse_args()
    runs = Path(args.runs_dir)

    seeds = {name: run_variant(name, settings, runs) for name, settings in VARIANTS.items()}
    config = json.loads((runs / BASELINE / "train_config.json").read_text())
    results = {
        "what": "ithp-fast train on the synthetic set, examples/synthetic.yaml with one setting changed per variant; "
        "test metrics, authors convention; minus_released: the variant's metric minus the released order's, "
        "seed by seed; std is the sample standard deviation (ddof=1) over the seeds; removed_detectors: the "
        "released-order checkpoints evaluated with detectors removed",
        "command": "python examples/levels_synthetic.py",
        "date": datetime.date.today().isoformat(),
        "device": f"{device_slug()} ({os.cpu_count()} cores, {platform.machine()}), threads {config['threads']}",
        "torch": torch.__version__,
        "config": config,
        "seeds": config["seeds"],
        "variants": {name: {"settings": VARIANTS[name], **describe(seeds[name], seeds[BASELINE])} for name in VARIANTS},
        "removed_detectors": removals(seeds[BASELINE], runs),
        "text_only_ceiling": seeds[BASELINE][0]["synthetic_text_only_ceiling"]["authors"],
    }
    path = new_results_path(Path(args.results_dir), f"levels-synthetic-{device_slug()}", tiny=False)
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
