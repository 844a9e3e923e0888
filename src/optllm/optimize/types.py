"""Result types shared by every optimiser: one chosen `Assignment`, the `FrontLike`
protocol that the exact `Front` and explicit solution sets both satisfy, and `thin_indices`
(the one rule for thinning a front to a few points)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True, eq=False)
class Assignment:
    """One plan: a model index per query, its total cost and expected accuracy.

    `upper_bound` is the best accuracy any assignment could reach within `cost_limit`
    (the LP value), so `upper_bound - accuracy` is a certified optimality gap; NaN when the
    optimiser gives no certificate. `cost_lower_bound` is the same for an accuracy target:
    no assignment reaches `accuracy_target` for less.
    """

    models: np.ndarray  # (n,) int, model index per query
    cost: float  # total USD
    accuracy: float  # mean p over queries
    upper_bound: float = float("nan")
    cost_lower_bound: float = float("nan")
    cost_limit: float | None = None
    accuracy_target: float | None = None
    model_names: tuple[str, ...] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def gap(self) -> float:
        """Certified accuracy gap to the optimum at this budget (NaN if uncertified)."""
        return float(self.upper_bound - self.accuracy)

    @property
    def cost_gap(self) -> float:
        """Certified cost gap to the cheapest plan reaching the target (NaN if uncertified)."""
        return float(self.cost - self.cost_lower_bound)

    def counts(self) -> dict[str, int]:
        """How many queries go to each model."""
        m = int(self.models.max()) + 1 if self.models.size else 0
        names = self.model_names or tuple(str(k) for k in range(m))
        c = np.bincount(self.models, minlength=len(names))
        return {names[k]: int(c[k]) for k in range(len(names)) if c[k]}


@runtime_checkable
class FrontLike(Protocol):
    """What every optimiser returns: points sorted by cost, each an assignment."""

    costs: np.ndarray  # (K,) total cost per point, non-decreasing
    accuracies: np.ndarray  # (K,) mean p per point

    def __len__(self) -> int: ...

    def assignment(self, k: int) -> np.ndarray: ...

    def at_budget(self, budget: float) -> Assignment: ...

    def at_accuracy(self, target: float) -> Assignment: ...

    def values(self, values: np.ndarray) -> np.ndarray: ...


def thin_indices(k: int, max_points: int) -> np.ndarray:
    """Indices of at most `max_points` of `k` points spread evenly by index along a front,
    both ends kept: all of them (``arange(k)``) when `k` <= `max_points`."""
    if k <= max_points:
        return np.arange(k)
    return np.unique(np.linspace(0, k - 1, max_points).round().astype(int))
