"""Evaluation metrics (MONAI-backed) against values worked out by hand."""

import math

import numpy as np

from training.evaluate import dice
from training.train_rds import roc_auc


def test_dice_of_overlapping_squares() -> None:
    a = np.zeros((10, 10), dtype=bool)
    b = np.zeros((10, 10), dtype=bool)
    a[0:4, 0:4] = True  # 16 pixels
    b[2:6, 2:6] = True  # 16 pixels, 4 shared
    assert math.isclose(dice(a, b), 2 * 4 / 32, rel_tol=1e-6)
    assert math.isclose(dice(a, a), 1.0, rel_tol=1e-6)


def test_dice_empty_cases() -> None:
    empty = np.zeros((5, 5, 5), dtype=bool)
    full = np.ones((5, 5, 5), dtype=bool)
    assert math.isnan(dice(empty, empty))
    assert dice(full, empty) == 0.0
    assert dice(empty, full) == 0.0


def test_roc_auc_counts_pairs_and_ties() -> None:
    # positives 0.9, 0.5; negatives 0.5, 0.1: pairs (0.9>0.5, 0.9>0.1, 0.5=0.5 -> 1/2, 0.5>0.1)
    assert math.isclose(roc_auc([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]), 3.5 / 4)
    assert roc_auc([0.2, 0.8], [1, 0]) == 0.0
    assert roc_auc([0.3, 0.4], [1, 1]) is None
