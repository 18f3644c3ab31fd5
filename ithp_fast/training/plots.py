"""Figures of a training run (matplotlib, written as PNG): training curves and the information plane.

Both read the ``history`` a run stores in its results JSON:
``history["steps"]``  one record per logging interval (training means over the interval):
                      ``step``, ``epoch``, ``loss``, ``task_mse``, ``IB_total``, then ``kl<k>``, ``mse<k>`` of
                      each ITHP level k (from 0);
``history["epochs"]`` one record per epoch: ``epoch``, ``train`` (the same terms, epoch means) and
                      ``valid`` / ``test`` metrics per convention.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_training_curves(history: dict, path: str, convention: str = "authors") -> str:
    """Loss per step, the ITHP terms per epoch, and validation / test MAE and binary accuracy per epoch."""
    steps, epochs = history.get("steps", []), history.get("epochs", [])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), layout="constrained")
    ax = axes[0]
    if steps:
        x = [r["step"] for r in steps]
        ax.plot(x, [r["loss"] for r in steps], label="loss (MSE + IB term)")
        ax.plot(x, [r["task_mse"] for r in steps], label="task MSE")
    ax.set(xlabel="optimiser step", ylabel="training loss", title="Training loss")
    ax.legend()

    ax = axes[1]
    if epochs:
        ep = [r["epoch"] for r in epochs]
        for key in [k for k in epochs[0]["train"] if k not in ("loss", "task_mse")]:
            ax.plot(ep, [r["train"][key] for r in epochs], marker="o", ms=3, label=key)
        ax.set_yscale("log")
    ax.set(xlabel="epoch", ylabel="epoch mean (log scale)", title="ITHP terms (training)")
    ax.legend()

    ax = axes[2]
    twin = ax.twinx()
    for split, style in (("valid", "--"), ("test", "-")):
        rows = [(r["epoch"], r[split][convention]) for r in epochs if r.get(split)]
        if rows:
            ax.plot(
                [e for e, _ in rows], [m["MAE"] for _, m in rows], "C0" + style, marker="o", ms=3, label=f"{split} MAE"
            )
            twin.plot(
                [e for e, _ in rows],
                [m["Non0_acc_2"] for _, m in rows],
                "C1" + style,
                marker="s",
                ms=3,
                label=f"{split} Non0_acc_2",
            )
    ax.set(xlabel="epoch", ylabel="MAE", title=f"Evaluation ({convention} convention)")
    twin.set_ylabel("Non0_acc_2")
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    if handles:
        ax.legend(handles=handles, loc="center right")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_information_plane(history: dict, path: str, modalities: Sequence[str] = ("acoustic", "visual")) -> str:
    """Compression (KL of each level) against prediction error (reconstruction MSE of each level)
    over training, one panel per level (``modalities``: the detector of each, in level order), coloured by
    optimiser step."""
    steps = history.get("steps", [])
    fig, axes = plt.subplots(
        1, len(modalities), figsize=(5.5 * len(modalities), 4.5), layout="constrained", squeeze=False
    )
    axes = list(axes[0])
    scatter = None
    panels = [(f"kl{k}", f"mse{k}", f"level {k}: B{k} (target: {name})") for k, name in enumerate(modalities)]
    for ax, (kl, mse, title) in zip(axes, panels):
        if steps:
            xs, ys, cs = [r[kl] for r in steps], [r[mse] for r in steps], [r["step"] for r in steps]
            ax.plot(xs, ys, color="0.7", lw=0.8, zorder=1)
            scatter = ax.scatter(xs, ys, c=cs, cmap="viridis", s=14, zorder=2)
            ax.annotate("start", (xs[0], ys[0]), textcoords="offset points", xytext=(5, 5), fontsize=8)
            ax.annotate("end", (xs[-1], ys[-1]), textcoords="offset points", xytext=(5, -10), fontsize=8)
        ax.set(
            xlabel=f"{kl}: KL to N(0, I) (compression term)",
            ylabel=f"{mse}: reconstruction MSE (prediction term)",
            title=title,
        )
    if scatter is not None:
        fig.colorbar(scatter, ax=axes, label="optimiser step")
    fig.suptitle("Information plane over training")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_run(
    history: dict, directory: str, convention: str = "authors", modalities: Sequence[str] = ("acoustic", "visual")
) -> dict[str, Optional[str]]:
    """Both figures into ``directory`` (``modalities``: the detector of each ITHP level); returns their paths."""
    plane = os.path.join(directory, "information_plane.png")
    return {
        "training_curves": plot_training_curves(history, os.path.join(directory, "training_curves.png"), convention),
        "information_plane": plot_information_plane(history, plane, modalities),
    }
