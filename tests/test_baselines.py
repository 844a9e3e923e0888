"""Baselines and the uncertainty machinery on small hand-checked cases."""
from __future__ import annotations

import numpy as np
import pytest

from optllm.evaluate.baselines import acc_at_cost, pick_pair, threshold_router, upper_hull, zero_router
from optllm.evaluate.uncertainty import Refits, bounds_along, bounds_of, values_along, values_of


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
    assert acc_at_cost(np.array([1.0, 2.0, 3.0]), np.array([0.1, 0.5, 0.7]), 2.5) == 0.5
    assert acc_at_cost(np.array([1.0]), np.array([0.1]), 0.5) is None


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


def test_bounds_shrink_with_certainty_and_estimate_labels() -> None:
    rng = np.random.default_rng(1)
    n = 4000
    p = np.column_stack([np.full(n, 0.6), np.full(n, 0.9)])
    a = np.array([np.zeros(n, int), np.ones(n, int)])
    front = _ExplicitFront(a, np.ones((n, 2)))
    tight = bounds_along(front, p, None, 0.9, 20)
    assert np.all(tight.lower < tight.mean) and np.all(tight.upper > tight.mean)
    boot = np.clip(p[None] + rng.normal(0, 0.05, (30, 1, 2)), 0, 1)
    rows = np.arange(0, n, 4)  # refits scored on a subsample of the rows
    refits = Refits(boot[:, rows], p[rows], rows, n)
    loose = bounds_along(front, p, refits, 0.9, 20)
    assert np.all(loose.lower < tight.lower)
    need = loose.labels_needed(0.85)
    assert need is not None and need > 20
    assert loose.labels_needed(0.95) is None
    np.testing.assert_allclose(refits.along(front)[:, 1], refits.of(a[1]))
    one = bounds_of(a[1], p, refits, 0.9, 20)
    assert one.lower[0] == pytest.approx(loose.lower[1])
