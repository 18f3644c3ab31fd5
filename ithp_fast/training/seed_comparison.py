"""The figure that compares the seeds of a run (``seed_comparison.png`` in the run directory): the training loss
and every test metric per epoch, each seed's curve with its selected epoch starred, their mean, and the spread
(mean ± sample standard deviation, ddof=1, as ``summary.json`` reports it), drawn from each seed's results."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Optional

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .plots import draw_ceiling, epoch_axis, save_figure, text_only_ceiling

SEED_COLOURS = ("tab:blue", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")
MAX_COLUMNS = 5
SELECTED = "selected epoch (each seed)"


def panels(results: dict) -> list[tuple[str, str]]:
    """(split, key) of each panel: the training loss, then every test metric of the run's convention."""
    first = results["history"]["epochs"][0]
    metrics = [m for m in first["test"][results["protocol"]] if m != "count"]
    return [("train", "loss"), *(("test", m) for m in metrics)]


def curve(results: dict, split: str, key: str) -> dict[int, float]:
    """Epoch -> value of ``key`` in one seed's history (NaN where the value is missing)."""
    value = (lambda r: r["train"][key]) if split == "train" else (lambda r: r[split][results["protocol"]][key])
    out = {}
    for record in results["history"]["epochs"]:
        v = value(record)
        out[record["epoch"]] = math.nan if v is None else float(v)
    return out


def mean_and_spread(curves: Sequence[dict[int, float]]) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Over the epochs every seed reached (seeds stopped early reach fewer), the mean of the seeds and their
    sample standard deviation (ddof=1) per epoch: a mean over the same seeds throughout."""
    epochs = sorted(set.intersection(*(set(c) for c in curves)))
    values = np.array([[c[e] for c in curves] for e in epochs]).reshape(len(epochs), len(curves))
    return epochs, values.mean(1), values.std(1, ddof=1)


def seed_comparison_figure(seed_results: Sequence[dict], run_name: str) -> Figure:
    """One panel per metric: each seed per epoch, their mean and mean ± std; the text-only ceiling on the test
    metrics of the synthetic set."""
    if not seed_results:
        raise ValueError("seed_results: expected the results of at least one finished seed, got none")
    first = seed_results[0]
    protocol, keys = first["protocol"], panels(first)
    columns = min(MAX_COLUMNS, math.ceil(len(keys) / 2))
    rows = math.ceil(len(keys) / columns)
    fig = Figure(figsize=(3.6 * columns, 3.0 * rows + 1.4), layout="constrained")
    seeds = ", ".join(str(r["seed"]) for r in seed_results)
    what = f"seeds {seeds}" if len(seed_results) > 1 else f"seed {seeds} only (no mean or spread over one seed)"
    fig.suptitle(
        f"Seeds compared: run '{run_name}', {what}\ntraining loss and test metrics per epoch ({protocol} convention)"
    )
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    ceiling = text_only_ceiling(first) or {}
    for ax, (split, key) in zip(axes, keys):
        draw_metric(ax, seed_results, split, key)
        if split == "test":
            draw_ceiling(ax, ceiling.get(key))
        ax.set_title("training loss (epoch mean)" if split == "train" else f"test {key}")
        epoch_axis(ax)
    for ax in axes[len(keys) :]:
        ax.remove()
    labelled = {}
    for ax in axes[: len(keys)]:
        labelled.update(zip(*reversed(ax.get_legend_handles_labels())))
    if labelled.pop(SELECTED, None) is not None:  # drawn in each seed's colour; the legend shows one for all
        labelled[SELECTED] = Line2D([], [], marker="*", ls="", color="white", mec="black", ms=10)
    fig.legend(list(labelled.values()), list(labelled), loc="outside lower center", ncols=min(len(labelled), 8))
    return fig


def draw_metric(ax, seed_results: Sequence[dict], split: str, key: str) -> None:
    """Each seed's curve (its selected epoch starred), then, over two or more seeds, their mean and mean ± std."""
    curves = [curve(r, split, key) for r in seed_results]
    for i, (results, values) in enumerate(zip(seed_results, curves)):
        colour = SEED_COLOURS[i % len(SEED_COLOURS)]
        ax.plot(list(values), list(values.values()), color=colour, lw=1, alpha=0.8, label=f"seed {results['seed']}")
        selected = results.get("selection", {}).get("epoch")
        if selected in values:
            ax.plot(
                selected,
                values[selected],
                "*",
                color=colour,
                ms=10,
                mec="black",
                mew=0.5,
                label=SELECTED,
                gid="selected-epoch",
            )
    if len(curves) < 2:
        return  # one seed: its curve is the mean, and there is no spread
    epochs, mean, std = mean_and_spread(curves)
    ax.plot(epochs, mean, color="black", lw=2, label="mean over seeds (epochs all reached)", gid="mean")
    ax.fill_between(
        epochs, mean - std, mean + std, color="black", alpha=0.15, lw=0, label="mean ± std (ddof=1)", gid="spread"
    )


def plot_seed_comparison(seed_results: Sequence[dict], directory: str, run_name: Optional[str] = None) -> str:
    """``seed_comparison.png`` in the run ``directory``; returns its path. ``seed_results``: each finished seed's
    ``results.json`` content; ``run_name`` defaults to the directory's name."""
    run_name = run_name or os.path.basename(os.path.abspath(directory))
    return save_figure(seed_comparison_figure(seed_results, run_name), os.path.join(directory, "seed_comparison.png"))
