"""The figures and console lines of a training run, checked through matplotlib's objects (titles, labels,
legends, the marked epoch, the ceiling line, the data drawn), not through pixels: tiny runs on the synthetic
set with two levels in either order or one level, one or two seeds."""

import io
import json
import re
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest
from helpers import TINY_TRAINING
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.legend import Legend
from matplotlib.text import Text

from ithp_fast.training.api import train
from ithp_fast.training.config import TrainConfig
from ithp_fast.training.console import data_line
from ithp_fast.training.plots import information_plane_figure, training_curves_figure
from ithp_fast.training.seed_comparison import mean_and_spread, seed_comparison_figure

RUNS = {
    # name: (modality order, seeds, protocol)
    "released": ("text,acoustic,visual", [1, 2], "authors"),
    "swapped": ("text,visual,acoustic", [3], "mmsa"),
    "one-level": ("text,visual", [4], "mmsa"),
}
RAW_TERM = re.compile(r"\b(kl|mse)\d+\b")


@pytest.fixture(scope="module", params=list(RUNS))
def run(request, tmp_path_factory):
    """A tiny run with figures on; its configuration, directory, each seed's results, and what it printed."""
    order, seeds, protocol = RUNS[request.param]
    out = tmp_path_factory.mktemp("plots") / request.param
    settings = {**TINY_TRAINING, "plots": True}
    cfg = TrainConfig(output_dir=str(out), synthetic_sizes=(24, 16, 16), epochs=3, lr=1e-3, log_every=2, seeds=seeds,
                      modality_order=order, protocol=protocol, **settings)
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        train(cfg)
    results = [json.loads((out / f"seed-{s}" / "results.json").read_text()) for s in seeds]
    return cfg, out, results, stderr.getvalue().splitlines(), stdout.getvalue().splitlines()


def axes_of(fig) -> list[Axes]:
    return [ax for ax in fig.findobj(Axes) if ax.get_label() != "<colorbar>"]


def texts_of(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def legend_labels(owner) -> list[str]:
    return [t.get_text() for legend in owner.legends for t in legend.get_texts()]


def gid_lines(ax: Axes, gid: str) -> list:
    return [line for line in ax.lines if line.get_gid() == gid]


def assert_legends_clear_of_axes(fig) -> None:
    """No legend of the figure covers any axes (panels and colour bars)."""
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    legends = fig.findobj(Legend)
    assert legends, "the figure has no legend"
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in fig.findobj(Axes):
            assert not box.overlaps(ax.get_window_extent(renderer)), (
                f"legend {[t.get_text() for t in legend.get_texts()]} covers the axes titled {ax.get_title()!r}"
            )


def level_names(cfg) -> list[str]:
    return [f"level {k + 1} ({name})" for k, name in enumerate(cfg.detector_names)]


def selected(results: dict) -> dict:
    return next(r for r in results["history"]["epochs"] if r["epoch"] == results["selection"]["epoch"])


def test_training_curves_name_the_run_seed_and_levels(run):
    cfg, out, results, _, _ = run
    for r in results:
        fig = training_curves_figure(r, "my-run")
        assert f"run 'my-run', seed {r['seed']}" in fig.get_suptitle()
        objective, levels, evaluation = fig.subfigs
        assert legend_labels(levels) == [*level_names(cfg), "selected epoch"]
        texts = texts_of(fig)
        assert not [t for t in texts if RAW_TERM.search(t)], "a term is labelled by its key"
        assert f"modality order {' → '.join(cfg.modality_order)}" in fig.get_suptitle()
        assert_legends_clear_of_axes(fig)


def test_ib_term_has_its_own_axes_and_the_loss_weight_is_read_back(run):
    cfg, _, results, _, _ = run
    r = results[0]
    objective = training_curves_figure(r, "x").subfigs[0]
    steps = r["history"]["steps"]
    by_title = {ax.get_title(): ax for ax in objective.axes}
    ib_ax = next(ax for title, ax in by_title.items() if title.startswith("IB_total"))
    mse_ax = next(ax for title, ax in by_title.items() if title.startswith("task MSE"))
    np.testing.assert_allclose(ib_ax.lines[0].get_ydata(), [s["IB_total"] for s in steps])
    np.testing.assert_allclose(mse_ax.lines[0].get_ydata(), [s["task_mse"] for s in steps])
    weights = (cfg.p_beta, cfg.p_gamma)[: len(cfg.detector_names)]
    assert f"loss = task MSE + {2 / sum(weights):.3g} · IB_total" in objective.get_suptitle()


def test_evaluation_panels_one_metric_each_with_ceiling_and_selected_epoch(run):
    cfg, _, results, _, _ = run
    for r in results:
        fig = training_curves_figure(r, "x")
        evaluation = fig.subfigs[2]
        assert len(axes_of(fig)) == 6, "a twin axis or a missing panel"
        chosen, ceiling = selected(r), r["synthetic_text_only_ceiling"][cfg.protocol]
        for ax, metric in zip(evaluation.axes, ("MAE", "Non0_acc_2")):
            assert ax.get_ylabel() == metric
            data = [line for line in ax.lines if line.get_label() in ("valid", "test")]
            for line in data:
                expected = [e[line.get_label()][cfg.protocol][metric] for e in r["history"]["epochs"]]
                np.testing.assert_allclose(line.get_ydata(), expected)
            (ceiling_line,) = gid_lines(ax, "ceiling")
            assert list(ceiling_line.get_ydata()) == [ceiling[metric]] * 2
            (star,) = gid_lines(ax, "selected-test")
            assert list(star.get_xdata()) == [chosen["epoch"]]
            assert list(star.get_ydata()) == [chosen["test"][cfg.protocol][metric]]
        assert legend_labels(evaluation)[:3] == ["valid", "test", "text-only ceiling (test)"]


def test_every_panel_marks_the_selected_epoch(run):
    _, _, results, _, _ = run
    for r in results:
        fig = training_curves_figure(r, "x")
        chosen = selected(r)
        for ax in axes_of(fig):
            (line,) = gid_lines(ax, "selected-epoch")
            at = chosen["step"] if ax.get_xlabel() == "optimiser step" else chosen["epoch"]
            assert list(line.get_xdata()) == [at, at], ax.get_title()
        assert f"selected {('epoch ' + str(chosen['epoch']))}" in fig.get_suptitle()


def test_information_plane_numbers_levels_from_one_and_names_their_detectors(run):
    cfg, _, results, _, _ = run
    r = results[0]
    fig = information_plane_figure(r, "my-run")
    panels = axes_of(fig)
    assert [ax.get_title() for ax in panels] == level_names(cfg)
    for ax, name in zip(panels, cfg.detector_names):
        assert f"reconstruction MSE of {name}" in ax.get_ylabel() and "KL" in ax.get_xlabel()
    assert not [t for t in texts_of(fig) if RAW_TERM.search(t)]
    assert f"run 'my-run', seed {r['seed']}" in fig.get_suptitle()
    assert_legends_clear_of_axes(fig)


def test_seed_comparison_figure_is_written_and_holds_every_seed(run):
    cfg, out, results, _, _ = run
    assert (out / "seed_comparison.png").stat().st_size > 0
    fig = seed_comparison_figure(results, "my-run")
    panels = axes_of(fig)
    metrics = [m for m in results[0]["test"][cfg.protocol] if m != "count"]
    assert [ax.get_title() for ax in panels] == ["training loss (epoch mean)", *(f"test {m}" for m in metrics)]
    seeds = ", ".join(str(r["seed"]) for r in results)
    assert (f"seeds {seeds}" if len(results) > 1 else f"seed {seeds} only") in fig.get_suptitle()
    for ax, key in zip(panels, ["loss", *metrics]):
        value = (lambda e: e["train"][key]) if key == "loss" else (lambda e: e["test"][cfg.protocol][key])
        curves = [[value(e) for e in r["history"]["epochs"]] for r in results]
        assert [line.get_label() for line in ax.lines if line.get_label().startswith("seed")] == [
            f"seed {r['seed']}" for r in results
        ]
        stars = gid_lines(ax, "selected-epoch")
        assert sorted(s.get_xdata()[0] for s in stars) == sorted(r["selection"]["epoch"] for r in results)
        means = gid_lines(ax, "mean")
        spread = [c for c in ax.collections if c.get_gid() == "spread"]
        if len(results) > 1:
            np.testing.assert_allclose(means[0].get_ydata(), np.mean(curves, axis=0))
            assert len(spread) == 1
        else:
            assert not means and not spread  # one seed: no mean or spread to show
        assert len(gid_lines(ax, "ceiling")) == (key != "loss")
    assert_legends_clear_of_axes(fig)


def test_mean_and_spread_cover_the_epochs_every_seed_reached():
    epochs, mean, std = mean_and_spread([{1: 1.0, 2: 3.0, 3: 5.0}, {1: 3.0, 2: 4.0}, {1: 2.0, 2: 8.0}])
    assert epochs == [1, 2]  # the first seed's epoch 3 alone is no mean over the seeds
    np.testing.assert_allclose(mean, [2.0, 5.0])
    np.testing.assert_allclose(std, [1.0, np.sqrt(7.0)])  # ddof=1, as summary.json


def test_console_names_the_data_and_where_every_file_went(run):
    cfg, out, results, err, stdout = run
    first = err[0]
    assert first.startswith("data: synthetic set (seed 0): 24 train / 16 valid / 16 test examples, 50 tokens"), first
    assert "{" not in first and "acoustic 74 and visual 47 features per token" in first
    for r in results:
        seed_dir = out / f"seed-{r['seed']}"
        (line,) = [line for line in err if line.startswith(f"seed {r['seed']}: wrote ")]
        listed = line.split(" (", 1)[1].rstrip(")").split(", ")
        assert line.startswith(f"seed {r['seed']}: wrote {seed_dir}/ (")
        for name in ("checkpoint-last/", "training_curves.png", "information_plane.png", "results.json"):
            assert name in listed, line
        assert all((seed_dir / name.rstrip("/")).exists() for name in listed)
        assert ("checkpoint-best/" in listed) == (cfg.protocol == "mmsa")
    (run_line,) = [line for line in stdout if line.startswith("run: wrote ")]
    listed = run_line.split(" (", 1)[1].rstrip(")").split(", ")
    assert {"seed_comparison.png", "summary.json", "train_config.json"} <= set(listed)
    assert {f"seed-{r['seed']}/" for r in results} <= set(listed)


def test_data_line_of_a_pickle_names_file_and_layout():
    described = {"layout": "words", "source": "data/mosi.pkl", "sizes": {"train": 3, "valid": 2, "test": 1},
                 "tokens": 50, "visual_dim": 47, "acoustic_dim": 74, "vocab_size": 900}
    assert data_line(described) == (
        "data: data/mosi.pkl (word-level pickle): 3 train / 2 valid / 1 test examples, 50 tokens, acoustic 74 and "
        "visual 47 features per token, vocabulary of 900"
    )


def test_training_modules_load_matplotlib_only_to_plot():
    code = "import sys, ithp_fast.training.loop, ithp_fast.training.console; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "False"
