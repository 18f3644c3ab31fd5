"""What a run reports: a seed's results (selected epoch, both conventions, history, timing) and
the summary over seeds. Scores come in from the loop, which has :mod:`.evaluate` compute them: nothing
here runs a model or scores predictions."""

from __future__ import annotations

import math
import os
import warnings
from typing import Any, Optional

import torch

from ..data import SentimentData
from . import checkpoints as ckpt
from .config import TrainConfig
from .console import wrote_line
from .distributed import DistContext, print_on_main
from .metrics import CONVENTIONS, format_metrics, mean_std
from .state import TrainState

RESULTS_FILE = "results.json"


def report_seed(results: dict, directory: str, *, ctx: DistContext, plots: bool) -> dict:
    """On rank 0, a seed's figures (with ``plots``) and ``results.json`` (:func:`seed_results`, with the figures'
    files added) written to the seed's ``directory``, and its headline metrics and files said. Returns the
    results."""
    if ctx.is_main:
        figures = write_figures(results, directory) if plots else {}
        if figures:
            results["plots"] = figures
        ckpt.write_json(os.path.join(directory, RESULTS_FILE), results)
        print_on_main(ctx, seed_line(results))
        print_on_main(ctx, wrote_line(f"seed {results['seed']}", directory))
    return results


def seed_results(
    cfg: TrainConfig,
    seed: int,
    state: TrainState,
    scored: dict[str, dict],
    data: SentimentData,
    *,
    ctx: DistContext,
    present: Optional[torch.Tensor],
    ceiling: Optional[dict],
    checkpoint: str,
) -> dict:
    """What ``results.json`` holds for a seed: the scores of its selected weights (``scored``: what
    :func:`~ithp_fast.training.evaluate.predict` gave for ``valid`` and ``test``), how its training went
    (``state``), the data, what --missing-rate dropped (``present``: the training examples' detector mask),
    the text-only ``ceiling`` of a synthetic set (None for other data) and the ``checkpoint`` holding those
    weights. Computes nothing: scores come in, results go out."""
    selected = state.epoch if cfg.selection == "last" else state.best_epoch
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
            "steps": state.global_step,
            "skipped_steps": state.skipped_steps,
            "train_seconds": state.train_seconds,
            "epoch_seconds": [r["seconds"] for r in state.history["epochs"]],
        },
        "levels": {"modality_order": list(cfg.modality_order), "mask_padding": cfg.mask_padding},
        "missing_detectors": missing_detectors(cfg, len(data.splits["train"]), present),
        "stopped": state.stopped,
        "history": state.history,
        "checkpoint": checkpoint,
    }
    if ceiling is not None:
        results["synthetic_text_only_ceiling"] = ceiling
    return results


def seed_line(results: dict) -> str:
    """``seed 1: test (authors convention, last epoch 6) Non0_acc_2 0.7500 ...``: a seed's headline metrics."""
    selection, headline = results["selection"], results["headline"]
    return (
        f"seed {results['seed']}: test ({results['protocol']} convention, {selection['rule']} epoch "
        f"{selection['epoch']}) {format_metrics(headline, tuple(headline))}"
    )


def missing_detectors(cfg: TrainConfig, train_examples: int, present: Optional[torch.Tensor]) -> dict:
    """What --missing-rate dropped: the rate and, per detector, how many training examples went without it
    (``present``: [train examples, detectors] bool, None when none was dropped)."""
    dropped = [0] * len(cfg.detector_names) if present is None else (~present).sum(0).tolist()
    return {
        "rate": cfg.missing_rate,
        "train_examples": train_examples,
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
