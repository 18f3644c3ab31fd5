"""Sentiment metrics against values worked out by hand on a seven-example case, both conventions."""

import math

import numpy as np
import pytest

from ithp_fast.training.metrics import (
    all_conventions,
    better,
    mean_std,
    multiclass_accuracy,
    sentiment_metrics,
    weighted_f1,
)

# Two zero labels; a prediction of exactly 0.0 (index 1) separates ">= 0" from "> 0".
LABELS = [2.0, -1.0, 0.0, 0.5, -2.6, 0.0, 1.2]
PREDS = [1.4, 0.0, -0.3, -0.2, -2.2, 0.6, 2.4]


def test_authors_convention_drops_zero_labels_everywhere():
    m = sentiment_metrics(PREDS, LABELS, "authors")
    # Non-zero examples: labels [2, -1, .5, -2.6, 1.2], preds [1.4, 0, -.2, -2.2, 2.4].
    # Classes (>= 0): true TFTFT, pred TTFFT -> 3 of 5 right.
    assert m["Non0_acc_2"] == pytest.approx(3 / 5)
    # class T: support 3, 3 predicted, 2 hits -> F1 4/6; class F: support 2, 2 predicted, 1 hit -> 2/4.
    assert m["Non0_F1_score"] == pytest.approx((3 * 4 / 6 + 2 * 2 / 4) / 5)
    assert m["MAE"] == pytest.approx((0.6 + 1.0 + 0.7 + 0.4 + 1.2) / 5)
    # Pearson from sums: n=5, sum xy 11.3, sum x 1.4, sum y 0.1, sum x^2 12.6, sum y^2 13.45.
    assert m["Corr"] == pytest.approx((5 * 11.3 - 1.4 * 0.1) / math.sqrt((5 * 12.6 - 1.4**2) * (5 * 13.45 - 0.1**2)))
    # 7 classes: preds round to [1, 0, 0, -2, 2], labels to [2, -1, 0, -3, 1] -> 1 of 5.
    assert m["Mult_acc_7"] == pytest.approx(1 / 5)
    # 5 classes (clip to +-2): labels [2, -1, 0, -2, 1] -> -2.2 now matches -2.6 -> 2 of 5.
    assert m["Mult_acc_5"] == pytest.approx(2 / 5)
    assert m["count"] == 5
    assert "Has0_acc_2" not in m


def test_mmsa_convention_keeps_zero_labels_for_mae_corr_and_has0():
    m = sentiment_metrics(PREDS, LABELS, "mmsa")
    # Has0 (>= 0, all 7): true TFTTFTT, pred TTFFFTT -> 4 of 7.
    assert m["Has0_acc_2"] == pytest.approx(4 / 7)
    # class T: support 5, 4 predicted, 3 hits -> 6/9; class F: support 2, 3 predicted, 1 hit -> 2/5.
    assert m["Has0_F1_score"] == pytest.approx((5 * 6 / 9 + 2 * 2 / 5) / 7)
    # Non0 (> 0, zero labels dropped): true TFTFT, pred TFFFT (0.0 is negative here) -> 4 of 5.
    assert m["Non0_acc_2"] == pytest.approx(4 / 5)
    assert m["Non0_F1_score"] == pytest.approx((3 * 4 / 5 + 2 * 4 / 5) / 5)
    assert m["MAE"] == pytest.approx((0.6 + 1.0 + 0.3 + 0.7 + 0.4 + 0.6 + 1.2) / 7)
    # n=7, sum xy 11.3, sum x 1.7, sum y 0.1, sum x^2 13.05, sum y^2 13.45.
    assert m["Corr"] == pytest.approx((7 * 11.3 - 1.7 * 0.1) / math.sqrt((7 * 13.05 - 1.7**2) * (7 * 13.45 - 0.1**2)))
    assert m["Mult_acc_7"] == pytest.approx(2 / 7)
    assert m["Mult_acc_5"] == pytest.approx(3 / 7)
    assert m["count"] == 7


def test_weighted_f1_edge_cases():
    # Only one class predicted: F1 of the other class is 0, weighted by its support.
    assert weighted_f1(np.array([True, True, False]), np.array([True, True, True])) == pytest.approx(
        2 * (2 * 2 / 5) / 3
    )
    assert weighted_f1(np.array([1, 1]), np.array([1, 1])) == 1.0
    assert math.isnan(weighted_f1(np.array([]), np.array([])))


def test_rounding_is_half_to_even_and_clipped():
    assert multiclass_accuracy(np.array([0.5, 2.5, 9.0]), np.array([0.0, 2.0, 3.0]), 3.0) == 1.0
    assert multiclass_accuracy(np.array([-9.0]), np.array([-2.4]), 2.0) == 1.0


def test_degenerate_inputs():
    m = sentiment_metrics([1.0, 1.0], [1.0, -1.0], "mmsa")
    assert math.isnan(m["Corr"])  # constant predictions
    assert math.isnan(sentiment_metrics([0.3], [0.0], "authors")["MAE"])  # nothing left after dropping zeros
    with pytest.raises(ValueError, match="convention"):
        sentiment_metrics([0.0], [1.0], "paper")
    with pytest.raises(ValueError, match="predictions: expected 2 values"):
        sentiment_metrics([0.0], [1.0, 2.0])


def test_helpers():
    assert set(all_conventions(PREDS, LABELS)) == {"authors", "mmsa"}
    assert better("MAE", 0.5, 0.6) and not better("MAE", 0.7, 0.6)
    assert better("Corr", 0.7, 0.6) and better("Corr", 0.1, None) and not better("Corr", math.nan, 0.1)
    mean, std = mean_std([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3) and std == pytest.approx(
        math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    )
    assert mean_std([3.0]) == (3.0, 0.0)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nonfinite_predictions_give_nan_not_a_result(bad):
    for convention in ("authors", "mmsa"):
        m = sentiment_metrics([bad, *PREDS[1:]], LABELS, convention)
        assert m["count"] == (5 if convention == "authors" else 7)
        assert all(math.isnan(v) for k, v in m.items() if k != "count"), m
    assert all(math.isnan(v) for v in mean_std([1.0, math.nan]))
