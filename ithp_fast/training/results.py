"""What a run reports: a seed's results (selected epoch, both conventions, history, timing) and
the summary over seeds."""

from __future__ import annotations

import math
import os
import warnings
from typing import Any, Optional

from ..data import SentimentData, SyntheticSpec, text_only_oracle
from . import checkpoints as ckpt
from .batches import present_detectors
from .config import TrainConfig
from .console import wrote_line
from .distributed import DistContext, print_on_main
from .evaluate import predict, write_predictions
from .metrics import CONVENTIONS, all_conventions, format_metrics, mean_std


def synthetic_ceiling(spec: SyntheticSpec) -> dict:
    """The text-only oracle's metrics on the synthetic test split, under both conventions."""
    predictions, labels = text_only_oracle(spec)
    return all_conventions(predictions, labels)


def synthetic_spec(data: SentimentData) -> SyntheticSpec:
    """The spec the synthetic ``data`` was generated from."""
    info = data.info["synthetic"]
    return SyntheticSpec(
        seed=info["seed"], sizes=tuple(info["sizes"]), visual_dim=data.visual_dim, acoustic_dim=data.acoustic_dim
    )


def seed_results(
    cfg: TrainConfig, seed: int, data: SentimentData, ctx: DistContext, model, model_config: dict, state: dict, paths
) -> dict:
    """Score the selected epoch's weights on valid and test; write results.json, predictions and figures."""
    selected = state["epoch"] if cfg.selection == "last" else state["best_epoch"]
    if cfg.selection == "best" and state["best_epoch"] is not None:
        ckpt.load_weights(model, paths.best)
    scored = {name: predict(model, data.splits[name], cfg, model_config, ctx, seed) for name in ("valid", "test")}
    results = {
        "seed": seed,
        "finished": True,
        "protocol": cfg.protocol,
        "selection": {
            "rule": cfg.selection,
            "metric": cfg.select_metric if cfg.selection == "best" else None,
            "epoch": selected,
        },
        "headline": scored["test"]["metrics"][cfg.protocol],
        "test": scored["test"]["metrics"],
        "valid": scored["valid"]["metrics"],
        "ib_terms": {name: scored[name]["ib_terms"] for name in ("valid", "test")},
        "data": data.describe(),
        "timing": {
            "device": str(ctx.device),
            "world_size": ctx.world_size,
            "steps": state["global_step"],
            "skipped_steps": state.get("skipped_steps", 0),
            "train_seconds": state["train_seconds"],
            "epoch_seconds": [r["seconds"] for r in state["history"]["epochs"]],
        },
        "levels": {"modality_order": list(cfg.modality_order), "mask_padding": cfg.mask_padding},
        "missing_detectors": missing_detectors(cfg, seed, data),
        "stopped": state.get("stopped"),
        "history": state["history"],
        "checkpoint": paths.best if cfg.selection == "best" else paths.last,
    }
    if data.layout == "synthetic":
        results["synthetic_text_only_ceiling"] = synthetic_ceiling(synthetic_spec(data))
    if ctx.is_main:
        write_predictions(os.path.join(paths.run, "predictions_test.csv"), data.splits["test"], scored["test"])
        figures = write_figures(results, paths.run) if cfg.plots else {}
        if figures:
            results["plots"] = figures
        ckpt.write_json(paths.results, results)
    print_on_main(
        ctx,
        f"seed {seed}: test ({cfg.protocol} convention, {cfg.selection} epoch {selected}) "
        f"{format_metrics(results['headline'], tuple(results['headline']))}",
    )
    if ctx.is_main:
        print_on_main(ctx, wrote_line(f"seed {seed}", paths.run))
    return results


def missing_detectors(cfg: TrainConfig, seed: int, data: SentimentData) -> dict:
    """What --missing-rate dropped: the rate and, per detector, how many training examples went without it."""
    present = present_detectors(seed, len(data.splits["train"]), len(cfg.detector_names), cfg.missing_rate)
    dropped = [0] * len(cfg.detector_names) if present is None else (~present).sum(0).tolist()
    return {
        "rate": cfg.missing_rate,
        "train_examples": len(data.splits["train"]),
        "dropped": dict(zip(cfg.detector_names, dropped)),
    }


def write_figures(results: dict, directory: str) -> dict:
    """A seed's PNG figures, drawn from its ``results`` (skipped with a warning when matplotlib is missing)."""
    try:
        from .plots import plot_run
    except ImportError as exc:  # matplotlib is an optional dependency
        warnings.warn(f"no figures written ({exc}); install matplotlib or pass --no-plots", stacklevel=3)
        return {}
    return plot_run(results, directory)


def write_seed_comparison(seed_results: list[dict], directory: str) -> Optional[str]:
    """``seed_comparison.png`` of the finished seeds in the run ``directory`` (None without matplotlib)."""
    finished = [r for r in seed_results if r.get("finished")]
    try:
        from .seed_comparison import plot_seed_comparison
    except ImportError:  # matplotlib is an optional dependency; write_figures has said so
        return None
    return plot_seed_comparison(finished, directory) if finished else None


def summarise(results: list[dict], protocol: str) -> dict:
    """Mean and sample standard deviation (ddof=1) of every metric over the seeds; NaN when a seed's is."""
    finished = [r for r in results if r.get("finished")]
    summary: dict[str, Any] = {"protocol": protocol, "seeds": [r["seed"] for r in finished], "metrics": {}}
    for conv in CONVENTIONS:
        keys = [k for k in finished[0]["test"][conv] if k != "count"] if finished else []
        summary["metrics"][conv] = {}
        for k in keys:
            values = [r["test"][conv][k] for r in finished]
            mean, std = mean_std([math.nan if v is None else v for v in values])
            summary["metrics"][conv][k] = {"mean": mean, "std": std, "values": values}
    return summary


def print_summary(summary: dict, protocol: str) -> None:
    """The summary's test metrics, one per line: mean ± sample std (ddof=1) over two or more seeds, else the value."""
    several = len(summary["seeds"]) > 1
    what = "mean ± std (ddof=1)" if several else "one seed"
    lines = [f"test metrics over seeds {summary['seeds']} ({protocol} convention, {what}):"]
    for k, v in summary["metrics"][protocol].items():
        lines.append(f"  {k:14s} {v['mean']:.4f}" + (f" ± {v['std']:.4f}" if several else ""))
    print("\n".join(lines))
