"""Baselines users compare with, each reduced to a cost/accuracy curve on the assigned queries.

Every curve carries, per point, the total cost, the accuracy the method expected (where it
has one) and the TRUE accuracy on the assigned queries, so all methods are judged alike.
Single LLMs (`single_models`), the hull (`upper_hull`) and accuracy at a cost
(`accuracy_at_cost`) are `optllm.evaluate.indicators`' rules.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optllm.evaluate.indicators import upper_hull
from optllm.optimize.types import thin_indices


@dataclass
class Curve:
    """Points (sorted by cost) of one method on one split."""

    name: str
    costs: np.ndarray
    true_acc: np.ndarray
    pred_acc: np.ndarray | None = None
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.costs.shape[0])


def zero_router(correct: np.ndarray, cost: np.ndarray, est_acc: np.ndarray, steps: int = 20) -> Curve:
    """RouterBench's zero router: random mixtures of the single LLMs on their convex hull.

    Which LLMs form the hull is decided from `est_acc` (accuracies measured on the labelled
    sample, what a user knows); the curve's true accuracy is the expected true accuracy of
    each mixture on the assigned queries.
    """
    tot = cost.sum(axis=0)
    acc = correct.mean(axis=0)
    h = upper_hull(tot, est_acc)
    if h.size == 1:
        return Curve("zero router", tot[h], acc[h], est_acc[h])
    w = np.linspace(0.0, 1.0, steps + 1)[:-1]
    seg_c = [tot[a] + w * (tot[b] - tot[a]) for a, b in zip(h[:-1], h[1:])] + [tot[h[-1:]]]
    seg_t = [acc[a] + w * (acc[b] - acc[a]) for a, b in zip(h[:-1], h[1:])] + [acc[h[-1:]]]
    seg_p = [est_acc[a] + w * (est_acc[b] - est_acc[a]) for a, b in zip(h[:-1], h[1:])] + [est_acc[h[-1:]]]
    return Curve("zero router", np.concatenate(seg_c), np.concatenate(seg_t), np.concatenate(seg_p),
                 info={"hull_models": h.tolist()})


def pick_pair(est_acc: np.ndarray, total_cost: np.ndarray, ratio: float = 0.8) -> tuple[int, int]:
    """The (weak, strong) pair of a two-model router: strong = the most accurate on the
    labelled sample (ties: cheaper); weak = the cheapest model reaching `ratio` of its accuracy."""
    strong = int(np.lexsort((total_cost, -est_acc))[0])
    ok = np.flatnonzero((est_acc >= ratio * est_acc[strong]) & (total_cost < total_cost[strong]))
    if not ok.size:
        ok = np.flatnonzero(total_cost < total_cost[strong])
    if not ok.size:
        return strong, strong
    return int(ok[np.argmin(total_cost[ok])]), strong


def threshold_router(correct: np.ndarray, cost: np.ndarray, p: np.ndarray, weak: int, strong: int,
                     max_points: int = 2000) -> Curve:
    """A RouteLLM-style router: score each query by the predicted gain p[strong] − p[weak] and
    send the top-k queries to the strong model, for every k (the threshold sweep)."""
    n = correct.shape[0]
    score = p[:, strong] - p[:, weak]
    order = np.argsort(-score, kind="stable")
    dc = (cost[:, strong] - cost[:, weak])[order]
    dt = (correct[:, strong] - correct[:, weak])[order]
    dp = (p[:, strong] - p[:, weak])[order]
    c = cost[:, weak].sum() + np.concatenate([[0.0], np.cumsum(dc)])
    t = (correct[:, weak].sum() + np.concatenate([[0.0], np.cumsum(dt)])) / n
    e = (p[:, weak].sum() + np.concatenate([[0.0], np.cumsum(dp)])) / n
    idx = thin_indices(n + 1, max_points)
    # costs can dip when the strong model is cheaper on some queries: keep the curve sorted
    o = np.argsort(c[idx], kind="stable")
    idx = idx[o]
    return Curve("threshold router", c[idx], t[idx], e[idx], info={"weak": weak, "strong": strong})
