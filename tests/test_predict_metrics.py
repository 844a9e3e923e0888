"""Prediction scores on hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pytest

from optllm.predict import auc, brier, ece, log_loss, mean_auc, scores


def test_brier_hand_computed():
    y = np.array([[1, 0], [0, 1]], dtype=float)
    p = np.array([[0.8, 0.4], [0.5, 1.0]])
    # (0.04 + 0.16 + 0.25 + 0) / 4
    assert brier(y, p) == pytest.approx(0.1125)


def test_brier_skips_nan_labels():
    y = np.array([[1.0, np.nan]])
    p = np.array([[0.5, 0.9]])
    assert brier(y, p) == pytest.approx(0.25)


def test_log_loss_hand_computed_and_clipped():
    y = np.array([1.0, 0.0])
    p = np.array([0.5, 0.25])
    assert log_loss(y, p) == pytest.approx(-(math.log(0.5) + math.log(0.75)) / 2)
    assert np.isfinite(log_loss(np.array([1.0]), np.array([0.0])))
    assert log_loss(np.array([1.0]), np.array([0.0]), eps=1e-6) == pytest.approx(-math.log(1e-6))


def test_auc_hand_computed_with_ties():
    y = np.array([1, 1, 0, 0], dtype=float)
    assert auc(y, np.array([0.9, 0.8, 0.3, 0.1])) == 1.0
    assert auc(y, np.array([0.1, 0.2, 0.8, 0.9])) == 0.0
    # pairs (pos, neg): (0.5,0.5) tie = 1/2, (0.5,0.2)=1, (0.7,0.5)=1, (0.7,0.2)=1 -> 3.5/4
    assert auc(y, np.array([0.5, 0.7, 0.5, 0.2])) == pytest.approx(0.875)
    assert math.isnan(auc(np.array([1.0, 1.0]), np.array([0.2, 0.3])))


def test_mean_auc_skips_single_class_models():
    Y = np.array([[1, 1], [0, 1], [1, 1]], dtype=float)
    P = np.array([[0.9, 0.1], [0.1, 0.2], [0.8, 0.3]])
    assert mean_auc(Y, P) == 1.0


def test_ece_hand_computed():
    # bin [0.2,0.3): p=0.2,0.2 labels 0,1 -> |1 - 0.4| ; bin [0.9,1]: p=0.9,0.9 labels 1,1 -> |2 - 1.8|
    y = np.array([0, 1, 1, 1], dtype=float)
    p = np.array([0.2, 0.2, 0.9, 0.9])
    assert ece(y, p) == pytest.approx((0.6 + 0.2) / 4)
    assert ece(np.array([0.0, 1.0]), np.array([0.0, 1.0])) == 0.0


def test_scores_keys():
    s = scores(np.array([[1.0, 0.0]]), np.array([[0.7, 0.2]]))
    assert set(s) == {"brier", "log_loss", "auc", "ece"}
