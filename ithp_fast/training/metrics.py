"""Sentiment-regression metrics for CMU-MOSI / CMU-MOSEI, under the two conventions in use.

``authors`` (the ITHP / MAG-BERT evaluation): examples whose label is exactly 0 are dropped for
every metric, MAE and correlation included; the binary classes are ``value >= 0``.

``mmsa`` (the MMSA toolkit): all examples count for MAE, correlation and the multi-class
accuracies; ``Has0_*`` use all examples with classes ``value >= 0``; ``Non0_*`` drop the zero
labels and use classes ``value > 0``.

Keys: ``Non0_acc_2``, ``Non0_F1_score`` (and under ``mmsa`` also ``Has0_acc_2``,
``Has0_F1_score``), ``Mult_acc_5`` / ``Mult_acc_7`` (values clipped to [-2, 2] / [-3, 3], rounded
half-to-even, predicted class == true class), ``MAE``, ``Corr`` (Pearson). F1 scores are
support-weighted over the two classes. Accuracies and F1 are fractions in [0, 1].

Predictions that are not all finite (a diverged model) give NaN for every metric: a NaN counted
as a class or a distance would look like a result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

CONVENTIONS = ("authors", "mmsa")
# Metrics where a smaller value is better (for model selection).
LOWER_IS_BETTER = frozenset({"MAE"})


def weighted_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 of each class present in ``y_true`` or ``y_pred``, averaged with weights = true support."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.size == 0:
        return math.nan
    total = 0.0
    for c in np.union1d(y_true, y_pred):
        is_true, is_pred = y_true == c, y_pred == c
        support = int(is_true.sum())
        if support == 0:
            continue
        tp = int((is_true & is_pred).sum())
        total += support * 2 * tp / (support + int(is_pred.sum()))  # 2tp / (2tp + fp + fn)
    return total / y_true.size


def multiclass_accuracy(predictions: np.ndarray, labels: np.ndarray, bound: float) -> float:
    """Fraction with ``round(clip(pred, -bound, bound)) == round(clip(label, -bound, bound))``."""
    if labels.size == 0:
        return math.nan
    p = np.round(np.clip(predictions, -bound, bound))
    t = np.round(np.clip(labels, -bound, bound))
    return float(np.mean(p == t))


def pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant or there are fewer than 2 values."""
    if labels.size < 2 or np.std(predictions) == 0 or np.std(labels) == 0:
        return math.nan
    return float(np.corrcoef(predictions, labels)[0, 1])


def _binary(pred_cls: np.ndarray, true_cls: np.ndarray, prefix: str) -> dict[str, float]:
    acc = float(np.mean(pred_cls == true_cls)) if true_cls.size else math.nan
    return {f"{prefix}_acc_2": acc, f"{prefix}_F1_score": weighted_f1(true_cls, pred_cls)}


def sentiment_metrics(
    predictions: Sequence[float], labels: Sequence[float], convention: str = "authors"
) -> dict[str, float]:
    """All metrics of one convention (``"authors"`` or ``"mmsa"``) for regression outputs vs labels."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention: expected one of {CONVENTIONS}, got {convention!r}")
    pred = np.asarray(predictions, dtype=np.float64).reshape(-1)
    true = np.asarray(labels, dtype=np.float64).reshape(-1)
    if pred.shape != true.shape:
        raise ValueError(f"predictions: expected {true.size} values (one per label), got {pred.size}")
    finite = bool(np.isfinite(pred).all())
    if not finite:
        pred = np.zeros_like(pred)  # scored for the keys only; every value is replaced by NaN below
    nonzero = true != 0
    out: dict[str, float] = {}
    if convention == "authors":
        pred, true = pred[nonzero], true[nonzero]
        out.update(_binary(pred >= 0, true >= 0, "Non0"))
    else:
        out.update(_binary(pred >= 0, true >= 0, "Has0"))
        out.update(_binary(pred[nonzero] > 0, true[nonzero] > 0, "Non0"))
    out["Mult_acc_5"] = multiclass_accuracy(pred, true, 2.0)
    out["Mult_acc_7"] = multiclass_accuracy(pred, true, 3.0)
    out["MAE"] = float(np.mean(np.abs(pred - true))) if true.size else math.nan
    out["Corr"] = pearson(pred, true)
    if not finite:
        out = {k: math.nan for k in out}
    out["count"] = int(true.size)
    return out


def metric_names(convention: str) -> tuple[str, ...]:
    """The metrics of one convention, as :func:`sentiment_metrics` names them (``count`` left out)."""
    return tuple(k for k in sentiment_metrics([1.0, -1.0], [1.0, -1.0], convention) if k != "count")


def format_metrics(metrics: dict, keys: Sequence[str] = ("Non0_acc_2", "Non0_F1_score", "MAE", "Corr")) -> str:
    """``"Non0_acc_2 0.6125 MAE 1.3380 ..."``: the given metrics, four decimals, in order."""
    return " ".join(f"{k} {metrics[k]:.4f}" for k in keys if k in metrics and k != "count")


def all_conventions(predictions: Sequence[float], labels: Sequence[float]) -> dict[str, dict[str, float]]:
    """``{"authors": {...}, "mmsa": {...}}``."""
    return {c: sentiment_metrics(predictions, labels, c) for c in CONVENTIONS}


def better(metric: str, new: float, old: float | None) -> bool:
    """Whether ``new`` improves on ``old`` for model selection (NaN never improves)."""
    if new is None or math.isnan(new):
        return False
    if old is None or math.isnan(old):
        return True
    return new < old if metric in LOWER_IS_BETTER else new > old


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value); NaN if any value is NaN."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0
