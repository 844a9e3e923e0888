"""Baselines and the uncertainty machinery on small hand-checked cases."""
from __future__ import annotations

import numpy as np
import pytest

from optllm.evaluate.baselines import pick_pair, threshold_router, zero_router
from optllm.evaluate.indicators import accuracy_at_cost, upper_hull
from optllm.evaluate.uncertainty import (HeldOut, Rectifier, bounds_along, bounds_of, paired_lower, single_bounds,
                                         values_along, values_of)


def test_upper_hull_drops_dominated_and_concave_points() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0, 2.5])
    y = np.array([0.5, 0.6, 0.9, 0.95, 0.4])
    # (2, .6) lies under the chord (1,.5)-(3,.9); (2.5,.4) is dominated
    assert upper_hull(x, y).tolist() == [0, 2, 3]


def test_zero_router_interpolates_true_accuracy() -> None:
    correct = np.array([[1, 1], [0, 1], [0, 1], [0, 0]], dtype=float)
    cost = np.array([[1, 3]] * 4, dtype=float)
    c = zero_router(correct, cost, est_acc=correct.mean(axis=0), steps=4)
    assert c.costs[0] == 4 and c.costs[-1] == 12
    assert c.true_acc[0] == 0.25 and c.true_acc[-1] == 0.75
    np.testing.assert_allclose(np.diff(c.true_acc) / np.diff(c.costs), 0.5 / 8)


def test_threshold_router_sweeps_topk() -> None:
    correct = np.array([[0, 1], [1, 1], [0, 0]], dtype=float)
    cost = np.array([[1, 5]] * 3, dtype=float)
    p = np.array([[0.1, 0.9], [0.9, 0.9], [0.5, 0.5]])
    c = threshold_router(correct, cost, p, weak=0, strong=1)
    # k = 0: all weak (acc 1/3, cost 3); k = 1: query 0 upgraded (acc 2/3, cost 7)
    assert c.costs[0] == 3 and c.true_acc[0] == pytest.approx(1 / 3)
    assert c.costs[1] == 7 and c.true_acc[1] == pytest.approx(2 / 3)
    assert c.costs[-1] == 15 and c.true_acc[-1] == pytest.approx(2 / 3)


def test_pick_pair_and_acc_at_cost() -> None:
    est = np.array([0.5, 0.85, 0.95, 0.9])
    tot = np.array([1.0, 2.0, 20.0, 12.0])
    assert pick_pair(est, tot) == (1, 2)
    assert accuracy_at_cost(np.column_stack([[1.0, 2.0, 3.0], [0.1, 0.5, 0.7]]), 2.5) == 0.5
    assert accuracy_at_cost(np.array([[1.0, 0.1]]), 0.5) is None


class _ExplicitFront:
    """A tiny explicit front (no move list) to test the generic path."""

    def __init__(self, assignments: np.ndarray, cost: np.ndarray) -> None:
        self.a = assignments
        rows = np.arange(assignments.shape[1])
        self.costs = np.array([cost[rows, a].sum() for a in assignments])
        self.accuracies = np.zeros(len(assignments))

    def __len__(self) -> int:
        return len(self.a)

    def assignment(self, k: int) -> np.ndarray:
        return self.a[k]

    def values(self, v: np.ndarray) -> np.ndarray:
        rows = np.arange(self.a.shape[1])
        return np.array([v[rows, a].mean() for a in self.a])


def test_values_along_exact_front_equals_explicit() -> None:
    from optllm.optimize import pareto_front

    rng = np.random.default_rng(0)
    p, cost = rng.random((6, 3)), rng.random((6, 3))
    front = pareto_front(p, cost)
    explicit = _ExplicitFront(np.array([front.assignment(k) for k in range(len(front))]), cost)
    np.testing.assert_allclose(values_along(explicit, p), values_along(front, p))
    pb = rng.random((4, 6, 3))
    np.testing.assert_allclose(values_along(explicit, pb), values_along(front, pb))
    np.testing.assert_allclose(values_along(front, p)[2], values_of(front.assignment(2), p))


def _world(rng: np.random.Generator, n: int, bias: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two models, per-query true rates, and predictions that overstate the cheap model by
    `bias` (the error a small labelled sample leaves)."""
    easy = rng.random(n)
    rate = np.column_stack([0.45 + 0.5 * easy, np.full(n, 0.9)])
    pred = np.clip(rate + np.array([bias, 0.0]), 0, 1)
    cost = np.column_stack([np.full(n, 1.0), np.full(n, 10.0)])
    return rate, pred, cost


def test_rectifier_rule_matches_argmax() -> None:
    rng = np.random.default_rng(3)
    q, c = rng.random((30, 4)), rng.random((30, 4)) + 0.1
    y = (rng.random((30, 4)) < q).astype(float)
    rect = Rectifier(HeldOut(q, y, c, "ppi"))
    lab = Rectifier(HeldOut(q, y, c, "labelled"))
    for lam in (np.inf, 5.0, 1.0, 0.2, 0.0):
        t = int(rect.point(np.array([lam]))[0])
        a = rect.assignment(t)
        if np.isfinite(lam) and lam > 0:
            score = q - lam * c
            np.testing.assert_array_equal(score[np.arange(30), a], score.max(axis=1))
        assert rect.mean[t] == pytest.approx(float((y - q)[np.arange(30), a].mean()))
        # the labelled estimator: the answers themselves under the same rule
        assert lab.mean[t] == pytest.approx(float(y[np.arange(30), a].mean()))


@pytest.mark.slow
def test_held_out_correction_removes_bias_and_covers() -> None:
    """The cheap model is overstated by 0.08; the corrected estimate is not, and the lower
    bound at 90% holds for about 90% of random labelled samples (plans along the front)."""
    from optllm.optimize import pareto_front

    rng = np.random.default_rng(0)
    N, nL, reps = 3000, 60, 200
    rate, pred, cost = _world(rng, N, 0.08)
    front = pareto_front(pred, cost)
    truth = values_along(front, rate)
    covered, pointwise, err_raw, err_cor, picked, missed = [], [], [], [], [], []
    for r in range(reps):
        lr, lp, lc = _world(np.random.default_rng(100 + r), nL, 0.08)
        y = (np.random.default_rng(500 + r).random(lr.shape) < lr).astype(float)
        b = bounds_along(front, pred, cost, HeldOut(lp, y, lc), 0.9, seed=r)
        covered.append(np.all(b.lower_band <= truth + 1e-9))
        pointwise.append(np.mean(b.lower <= truth + 1e-9))
        err_raw.append(np.mean(b.mean - truth))
        err_cor.append(np.mean(b.estimate - truth))
        k = b.cheapest_certified(0.85)
        picked.append(k is not None)
        missed.append(k is not None and truth[k] < 0.85)
    assert np.mean(err_raw) > 0.02  # the predictions are optimistic ...
    assert abs(np.mean(err_cor)) < 0.01  # ... the held-out correction is not
    assert 0.85 <= np.mean(covered) <= 1.0  # the band holds along the whole front ~90% of the time
    assert 0.88 <= np.mean(pointwise)  # each pointwise bound holds ≥ ~90% of the time
    assert np.mean(picked) > 0.3 and np.mean(missed) <= 0.12  # the target rule errs ≤ ~10% of the time


def test_all_correct_sample_does_not_claim_certainty() -> None:
    q = np.full((40, 1), 0.97)
    held = HeldOut(q, np.ones((40, 1)), np.ones((40, 1)))
    b = single_bounds(0, np.full((1000, 1), 0.97), held, 0.9)
    assert b.sd_labelled[0] >= np.sqrt(0.97 * 0.03 / 40) - 1e-12
    assert b.lower[0] < 0.99


def test_labels_needed_and_paired_difference() -> None:
    from optllm.optimize import pareto_front

    rng = np.random.default_rng(1)
    rate, pred, cost = _world(rng, 2000, 0.0)
    lr, lp, lc = _world(rng, 40, 0.0)
    y = (rng.random(lr.shape) < lr).astype(float)
    held = HeldOut(lp, y, lc)
    front = pareto_front(pred, cost)
    b = bounds_along(front, pred, cost, held, 0.9)
    assert np.all(b.lower <= b.estimate) and np.all(b.upper >= b.estimate)
    top = float(b.estimate.max())
    need = b.labels_needed(top - 0.03)
    assert need is not None and need > 40
    assert b.labels_needed(top + 0.01) is None
    # a point equal to "everything to model 1" cannot beat model 1 alone
    last = np.array([len(front) - 1])
    assert paired_lower(front, last, 1, pred, cost, held, b.z)[0] <= 1e-12
    one = bounds_of(np.ones(2000, dtype=int), pred, cost, held, 0.9)
    assert one.estimate[0] == pytest.approx(0.9 + float((y[:, 1] - lp[:, 1]).mean()))
