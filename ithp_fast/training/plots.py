"""Figures of one seed of a training run, drawn from what its ``results.json`` holds (matplotlib, PNG).

``training_curves.png``   three rows: the training objective per logged step (task MSE and IB_total, each on
                          its own axes), each ITHP level's KL and reconstruction MSE per epoch, and valid / test
                          MAE and Non0_acc_2 per epoch; the selected epoch is marked in every panel and the
                          synthetic set's text-only ceiling drawn where ``results.json`` reports it;
``information_plane.png`` one panel per level: KL (compression) against reconstruction MSE (prediction) over
                          training, coloured by optimiser step.

Levels are numbered from 1, as in the docs, and named by their detector (``level 1 (acoustic)``), whatever
``--modality-order`` chose. The comparison of a run's seeds is drawn by :mod:`.seed_comparison`. Figures are
``matplotlib.figure.Figure`` objects (no pyplot): drawing one changes no global matplotlib state.
"""

from __future__ import annotations

import math
import os
from typing import Optional

from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from matplotlib.ticker import MaxNLocator

SPLIT_COLOURS = {"valid": "tab:orange", "test": "tab:blue"}
SPLIT_STYLES = {"valid": "--", "test": "-"}
LEVEL_COLOURS = ("tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
CEILING_COLOUR = "tab:green"
SELECTED_COLOUR = "tab:red"
STEP_COLOUR = "0.6"
# The evaluation panels of training_curves.png: metric, and which way is better.
EVALUATION_PANELS = (("MAE", "lower is better"), ("Non0_acc_2", "higher is better"))


def detectors(results: dict) -> tuple[str, ...]:
    """The detector of each ITHP level, in level order (the run's modality order after text)."""
    return tuple(results.get("levels", {}).get("modality_order", ("text", "acoustic", "visual"))[1:])


def level_label(k: int, detector: str) -> str:
    """``level 1 (acoustic)`` for the level of index ``k`` (from 0) whose detector is ``detector``."""
    return f"level {k + 1} ({detector})"


def level_colour(k: int) -> str:
    return LEVEL_COLOURS[k % len(LEVEL_COLOURS)]


def selected_record(results: dict) -> Optional[dict]:
    """The history's record of the selected epoch (None when no epoch was selected)."""
    epoch = results.get("selection", {}).get("epoch")
    return next((r for r in results["history"]["epochs"] if r["epoch"] == epoch), None)


def selection_text(results: dict) -> str:
    """How the selected epoch was chosen: ``epoch 10 (the last)`` or ``epoch 7 (best valid MAE)``."""
    selection = results.get("selection", {})
    if selection.get("epoch") is None:
        return "no epoch selected"
    rule = "the last" if selection.get("rule") == "last" else f"best valid {selection.get('metric')}"
    return f"epoch {selection['epoch']} ({rule})"


def text_only_ceiling(results: dict) -> Optional[dict]:
    """The text-only oracle's test metrics under the run's convention (the synthetic set only), else None."""
    return results.get("synthetic_text_only_ceiling", {}).get(results["protocol"])


def draw_ceiling(ax: Axes, value: Optional[float]) -> None:
    """The text-only oracle's test value as a horizontal line, its value written on it."""
    if value is None:
        return
    ax.axhline(value, color=CEILING_COLOUR, ls=":", lw=1.5, label="text-only ceiling (test)", gid="ceiling")
    ax.annotate(
        f"{value:.3f}",
        (0.015, value),
        xycoords=ax.get_yaxis_transform(),
        ha="left",
        va="center",
        fontsize=8,
        color=CEILING_COLOUR,
        bbox=dict(fc="white", ec="none", pad=1),
    )


def mark_selected(ax: Axes, x: float) -> None:
    """A vertical line at the selected epoch (``x``: its epoch, or its last step on a step axis)."""
    ax.axvline(x, color=SELECTED_COLOUR, ls=":", lw=1.2, label="selected epoch", gid="selected-epoch")


def epoch_axis(ax: Axes) -> None:
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def legend_below(figure: Figure | SubFigure, ax: Axes) -> None:
    """The legend of ``ax``'s curves, under the row, outside every panel (each label once)."""
    labelled = dict(zip(*reversed(ax.get_legend_handles_labels())))
    figure.legend(list(labelled.values()), list(labelled), loc="outside lower center", ncols=len(labelled))


def run_title(results: dict, run_name: str, what: str) -> str:
    order = " → ".join(["text", *detectors(results)])
    source = results.get("data", {}).get("source", "")
    return (
        f"{what}: run '{run_name}', seed {results['seed']}\n"
        f"{source} · modality order {order} · selected {selection_text(results)}"
    )


def training_curves_figure(results: dict, run_name: str) -> Figure:
    """The training objective, the ITHP terms of each level and the evaluation metrics of one seed."""
    fig = Figure(figsize=(11, 12), layout="constrained")
    fig.suptitle(run_title(results, run_name, "Training curves"))
    objective, levels, evaluation = fig.subfigures(3, 1)
    draw_objective(objective, results)
    draw_level_terms(levels, results)
    draw_evaluation(evaluation, results)
    return fig


def loss_weight(epochs: list[dict]) -> Optional[float]:
    """The weight of IB_total in the training loss, read back from the first epoch's means
    (loss = task MSE + weight · IB_total holds for the means as for each step)."""
    train = epochs[0]["train"] if epochs else {}
    if not train.get("IB_total"):
        return None
    weight = (train["loss"] - train["task_mse"]) / train["IB_total"]
    return weight if math.isfinite(weight) else None


def draw_objective(row: SubFigure, results: dict) -> None:
    """Task MSE and IB_total per logged step (each on its own axes) with the epoch means over them."""
    steps, epochs = results["history"]["steps"], results["history"]["epochs"]
    weight = loss_weight(epochs)
    row.suptitle("Training objective: loss = task MSE + " + (f"{weight:.3g} · IB_total" if weight else "w · IB_total"))
    selected = selected_record(results)
    panels = (("task_mse", "task MSE (prediction of the label)"), ("IB_total", "IB_total (information bottleneck)"))
    axes = row.subplots(1, 2)
    for ax, (key, title) in zip(axes, panels):
        ax.plot(
            [r["step"] for r in steps],
            [r[key] for r in steps],
            color=STEP_COLOUR,
            lw=0.9,
            label="mean over each logged interval",
        )
        ax.plot(
            [r["step"] for r in epochs],
            [r["train"][key] for r in epochs],
            color="black",
            marker="o",
            ms=3,
            label="epoch mean",
        )
        if selected is not None:
            mark_selected(ax, selected["step"])
        ax.set(xlabel="optimiser step", ylabel=key.replace("task_mse", "task MSE"), title=title)
    legend_below(row, axes[0])


def draw_level_terms(row: SubFigure, results: dict) -> None:
    """Each level's KL and reconstruction MSE, epoch means, one colour per level in both panels."""
    epochs = results["history"]["epochs"]
    row.suptitle("ITHP terms of each level (training, epoch means)")
    selected = selected_record(results)
    x = [r["epoch"] for r in epochs]
    kl_ax, mse_ax = row.subplots(1, 2)
    for k, name in enumerate(detectors(results)):
        style = dict(color=level_colour(k), marker="o", ms=3, label=level_label(k, name))
        kl_ax.plot(x, [r["train"][f"kl{k}"] for r in epochs], **style)
        mse_ax.plot(x, [r["train"][f"mse{k}"] for r in epochs], **style)
    kl_ax.set(title="compression: KL of the level's latent to N(0, I)", ylabel="KL")
    mse_ax.set(title="prediction: reconstruction MSE of the level's detector", ylabel="reconstruction MSE")
    for ax in (kl_ax, mse_ax):
        epoch_axis(ax)
        if selected is not None:
            mark_selected(ax, selected["epoch"])
    legend_below(row, kl_ax)


def draw_evaluation(row: SubFigure, results: dict) -> None:
    """Valid and test MAE and Non0_acc_2 per epoch (one colour per split), the text-only ceiling, the selected
    epoch with its test value starred."""
    protocol, epochs = results["protocol"], results["history"]["epochs"]
    row.suptitle(f"Evaluation per epoch ({protocol} convention)")
    ceiling, selected = text_only_ceiling(results) or {}, selected_record(results)
    axes = row.subplots(1, 2)
    for ax, (metric, better) in zip(axes, EVALUATION_PANELS):
        for split in ("valid", "test"):
            rows = [r for r in epochs if r.get(split)]
            ax.plot(
                [r["epoch"] for r in rows],
                [r[split][protocol][metric] for r in rows],
                SPLIT_STYLES[split],
                color=SPLIT_COLOURS[split],
                marker="o",
                ms=3,
                label=split,
            )
        draw_ceiling(ax, ceiling.get(metric))
        if selected is not None:
            mark_selected(ax, selected["epoch"])
            ax.plot(
                selected["epoch"],
                selected["test"][protocol][metric],
                "*",
                color=SELECTED_COLOUR,
                ms=12,
                label="test value at the selected epoch",
                gid="selected-test",
            )
        ax.set(title=f"{metric} ({better})", ylabel=metric)
        epoch_axis(ax)
    legend_below(row, axes[0])


def information_plane_figure(results: dict, run_name: str) -> Figure:
    """Per level, KL (compression) against reconstruction MSE (prediction), one point per logged interval,
    coloured by optimiser step; the selected epoch's last point starred."""
    steps, names = results["history"]["steps"], detectors(results)
    fig = Figure(figsize=(max(5 * len(names) + 1.5, 9.5), 5.2), layout="constrained")  # room for the title
    fig.suptitle(run_title(results, run_name, "Information plane"))
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    selected = selected_record(results)
    step_range = dict(vmin=min((r["step"] for r in steps), default=0), vmax=max((r["step"] for r in steps), default=1))
    scatter = None
    for k, (ax, name) in enumerate(zip(axes, names)):
        xs, ys = [r[f"kl{k}"] for r in steps], [r[f"mse{k}"] for r in steps]
        ax.plot(xs, ys, color="0.75", lw=0.8, zorder=1)
        scatter = ax.scatter(xs, ys, c=[r["step"] for r in steps], cmap="viridis", s=16, zorder=2, **step_range)
        if steps:
            ax.annotate("start", (xs[0], ys[0]), textcoords="offset points", xytext=(5, 5), fontsize=8)
            ax.annotate("end", (xs[-1], ys[-1]), textcoords="offset points", xytext=(5, -10), fontsize=8)
        at = [r for r in steps if selected is not None and r["step"] == selected["step"]]
        if at:
            ax.plot(
                at[0][f"kl{k}"],
                at[0][f"mse{k}"],
                "*",
                color=SELECTED_COLOUR,
                ms=14,
                zorder=3,
                label=f"selected {selection_text(results)}",
                gid="selected-point",
            )
        ax.set(
            title=level_label(k, name),
            xlabel="KL of the latent to N(0, I) (compression: left is more compressed)",
            ylabel=f"reconstruction MSE of {name} (prediction: lower is better)",
        )
    if scatter is not None:
        fig.colorbar(scatter, ax=list(axes), label="optimiser step")
    if any(ax.get_legend_handles_labels()[0] for ax in axes):
        legend_below(fig, next(ax for ax in axes if ax.get_legend_handles_labels()[0]))
    return fig


def save_figure(fig: Figure, path: str, dpi: int = 110) -> str:
    """Write ``fig`` as PNG to ``path`` through a temporary file, so no half-written figure is left behind."""
    tmp = f"{path}.tmp"
    fig.savefig(tmp, dpi=dpi, format="png")
    os.replace(tmp, path)
    return path


def plot_run(results: dict, directory: str, run_name: Optional[str] = None) -> dict[str, str]:
    """Both figures of one seed into ``directory``; returns their paths. ``results``: the seed's
    ``results.json`` content; ``run_name`` defaults to the name of ``directory``'s parent (the run directory)."""
    run_name = run_name or os.path.basename(os.path.dirname(os.path.abspath(directory)))
    return {
        "training_curves": save_figure(
            training_curves_figure(results, run_name), os.path.join(directory, "training_curves.png")
        ),
        "information_plane": save_figure(
            information_plane_figure(results, run_name), os.path.join(directory, "information_plane.png")
        ),
    }
