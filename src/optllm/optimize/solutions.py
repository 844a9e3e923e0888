"""`SolutionSet`: an explicit, finite set of assignments with their objectives.

What the heuristics (OptLLM-M, the evolutionary baselines) return. Unlike the exact `Front`
it stores every assignment as a row of an int matrix and gives no optimality certificate, so
the `Assignment`s it hands out have `upper_bound` and `cost_lower_bound` NaN. It satisfies
`FrontLike`: points sorted by cost, `assignment(k)`, `at_budget`, `at_accuracy`.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from optllm.errors import OptLLMError
from optllm.optimize.types import Assignment, thin_indices


def objectives(assignments: np.ndarray, p: np.ndarray, cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Total cost and mean p of each row of `assignments` ([K, n] or [n]) → ([K], [K])."""
    a = np.atleast_2d(np.asarray(assignments, dtype=np.intp))
    rows = np.arange(a.shape[1])[None, :]
    return cost[rows, a].sum(axis=1), p[rows, a].mean(axis=1)


def nondominated(costs: np.ndarray, accuracies: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points (min cost, max accuracy), sorted by cost.

    A point is dropped when another has cost <= and accuracy >= with one strict; of exact
    duplicates the first (lowest index) is kept. O(K log K).
    """
    c = np.asarray(costs, dtype=float)
    a = np.asarray(accuracies, dtype=float)
    if c.size == 0:
        return np.zeros(0, dtype=np.intp)
    order = np.lexsort((-a, c))  # by cost, then accuracy descending; stable on full ties
    keep = []
    best = -np.inf
    for k in order:
        if a[k] > best:
            keep.append(k)
            best = a[k]
    return np.asarray(keep, dtype=np.intp)


class SolutionSet:
    """Non-dominated assignments sorted by cost (ties impossible after filtering).

    `assignments[k]` is the model index per query of point k; `costs[k]` its total cost and
    `accuracies[k]` its mean p under the predictions it was built with. `method` names the
    optimiser; `info` holds its run details (seconds, settings).
    """

    def __init__(
        self,
        assignments: np.ndarray,
        costs: np.ndarray,
        accuracies: np.ndarray,
        *,
        models: Sequence[str] | None = None,
        method: str = "",
        info: dict[str, Any] | None = None,
    ) -> None:
        a = np.asarray(assignments, dtype=np.intp)
        self.assignments = a if a.ndim == 2 else a.reshape(len(costs), -1)
        self.costs = np.asarray(costs, dtype=float)
        self.accuracies = np.asarray(accuracies, dtype=float)
        self.models = tuple(models) if models is not None else None
        self.method = method
        self.info = dict(info or {})
        for arr in (self.assignments, self.costs, self.accuracies):
            arr.setflags(write=False)

    @classmethod
    def from_assignments(
        cls,
        assignments: np.ndarray,
        p: np.ndarray,
        cost: np.ndarray,
        *,
        models: Sequence[str] | None = None,
        method: str = "",
        info: dict[str, Any] | None = None,
        keep_dominated: bool = False,
    ) -> "SolutionSet":
        """Evaluate assignments [K, n] on (p, cost) and keep the non-dominated ones."""
        p = np.asarray(p, dtype=float)
        cost = np.asarray(cost, dtype=float)
        x = np.atleast_2d(np.asarray(assignments))
        if x.size and (x.shape[1] != p.shape[0]):
            raise OptLLMError(f"assignments have {x.shape[1]} queries, predictions {p.shape[0]}")
        x = x.astype(np.intp)
        if x.size and (x.min() < 0 or x.max() >= p.shape[1]):
            raise OptLLMError(f"assignment model index out of range 0..{p.shape[1] - 1}")
        c, a = objectives(x, p, cost) if x.size else (np.zeros(0), np.zeros(0))
        idx = np.lexsort((-a, c)) if keep_dominated else nondominated(c, a)
        inf = dict(info or {})
        inf.setdefault("candidates", int(x.shape[0]))
        return cls(x[idx], c[idx], a[idx], models=models, method=method, info=inf)

    # ------------------------------------------------------------------ FrontLike
    def __len__(self) -> int:
        return int(self.costs.shape[0])

    def __repr__(self) -> str:
        name = self.method or "SolutionSet"
        if not len(self):
            return f"{name}: empty"
        return (f"{name}: {len(self)} points, cost {self.costs[0]:.4g}..{self.costs[-1]:.4g}, "
                f"accuracy {self.accuracies[0]:.4f}..{self.accuracies[-1]:.4f}")

    @property
    def n(self) -> int:
        """Number of queries."""
        return int(self.assignments.shape[1])

    def assignment(self, k: int) -> np.ndarray:
        """Model index per query of point k (negative k counts from the end)."""
        return self.assignments[k]

    def _plan(self, k: int, **kw: Any) -> Assignment:
        return Assignment(
            models=np.array(self.assignments[k]), cost=float(self.costs[k]),
            accuracy=float(self.accuracies[k]), model_names=self.models,
            info={"method": self.method, "point": int(k), "certified": False}, **kw,
        )

    def at_budget(self, budget: float) -> Assignment:
        """The most accurate point costing at most `budget` (uncertified: upper_bound NaN)."""
        ok = np.flatnonzero(self.costs <= budget * (1 + 1e-12) + 1e-15)
        if not ok.size:
            cheapest = f"{self.costs[0]:.6g}" if len(self) else "n/a (empty set)"
            raise OptLLMError(f"budget {budget:.6g} is below the cheapest solution of {self.method or 'the set'} "
                              f"(cost {cheapest})")
        return self._plan(int(ok[-1]), cost_limit=float(budget))

    def at_accuracy(self, target: float) -> Assignment:
        """The cheapest point whose accuracy reaches `target` (uncertified: cost_lower_bound NaN)."""
        ok = np.flatnonzero(self.accuracies >= target - 1e-12)
        if not ok.size:
            best = f"{self.accuracies[-1]:.6f}" if len(self) else "n/a (empty set)"
            raise OptLLMError(f"accuracy target {target:.6f} is above the best solution of "
                              f"{self.method or 'the set'} (accuracy {best})")
        return self._plan(int(ok[0]), accuracy_target=float(target))

    def points(self, max_points: int | None = None) -> np.ndarray:
        """[K', 2] array of (cost, accuracy), thinned evenly to at most `max_points` rows
        (first and last always kept)."""
        k = len(self)
        idx = np.arange(k) if max_points is None else thin_indices(k, max(int(max_points), 2))
        return np.column_stack([self.costs[idx], self.accuracies[idx]])

    # ------------------------------------------------------------------ evaluation
    def values(self, values: np.ndarray) -> np.ndarray:
        """Mean of `values[i, a_k(i)]` for every point k, e.g. the TRUE accuracy from labels."""
        v = np.asarray(values, dtype=float)
        rows = np.arange(self.n)[None, :]
        return v[rows, self.assignments].mean(axis=1) if len(self) else np.zeros(0)
