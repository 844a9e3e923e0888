"""Quality indicators for cost–accuracy fronts, as the paper and RouterBench report them.

A *point set* is an array [K, 2] of (total cost USD, accuracy), accuracy to be maximised;
for the paper's figures the accuracy is the TRUE one (mean 0/1 label of the chosen model),
and the reference front is the exact true front built from the labels. `true_points`
turns any `FrontLike` into such an array.

Units: every distance indicator is given raw, in the paper's units (USD and accuracy, so
cost dominates), and normalised: cost divided by `cost_scale`, the most expensive single
model's total cost, accuracy as is (suffix ``_norm``).

- IGD, IGD+: pymoo's implementations, on (cost, −accuracy).
- HV: pymoo's hypervolume with reference point (1.1 · cost_scale USD, accuracy 0) unless
  given; normalised units (1.1, 0). Larger is better.
- Δ: the paper's spread (the authors' ``calculate_delta_metric``).
- Savings and gains relative to the best single model (`single_models`), the paper's
  hindsight saving (`hindsight_saving`), IMPROV, cost saving to match another method,
  RouterBench's AIQ (on the `upper_hull`) and the share of the oracle's headroom captured.
Undefined figures (no point reaches the target, empty sets) are None, never 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from optllm.optimize.types import FrontLike

__all__ = [
    "as_points", "true_points", "igd", "igd_plus", "hypervolume", "delta_spread", "quality",
    "SingleModels", "single_models", "HindsightSaving", "hindsight_saving", "saving_at_accuracy",
    "accuracy_at_cost", "accuracy_gain_at_cost", "vs_best_single", "improv", "cost_saving_to_match",
    "upper_hull", "aiq", "headroom_captured", "HV_REF_COST_FACTOR",
]

HV_REF_COST_FACTOR = 1.1
_TOL = 1e-12


# ---------------------------------------------------------------------- point sets
def as_points(points: Any) -> np.ndarray:
    """[K, 2] float array (cost, accuracy) sorted by cost, then accuracy descending."""
    P = np.asarray(points, dtype=float).reshape(-1, 2)
    if P.shape[0] > 1:
        P = P[np.lexsort((-P[:, 1], P[:, 0]))]
    return P


def true_points(front: FrontLike, correct: np.ndarray) -> np.ndarray:
    """(cost, TRUE accuracy) of every point of a `FrontLike`, from the labels `correct` [n, m]."""
    return np.column_stack([np.asarray(front.costs, dtype=float), front.values(np.asarray(correct, dtype=float))])


def _F(points: np.ndarray, cost_scale: float = 1.0) -> np.ndarray:
    P = as_points(points)
    return np.column_stack([P[:, 0] / cost_scale, -P[:, 1]])


# ---------------------------------------------------------------------- distance indicators
def igd(points: Any, reference: Any, cost_scale: float = 1.0) -> float | None:
    """Inverted generational distance (pymoo): mean distance from each reference point to
    the nearest point of the set. None for an empty set."""
    from pymoo.indicators.igd import IGD

    A, R = _F(points, cost_scale), _F(reference, cost_scale)
    if not len(A) or not len(R):
        return None
    return float(IGD(R)(A))


def igd_plus(points: Any, reference: Any, cost_scale: float = 1.0) -> float | None:
    """IGD+ (pymoo): like IGD but counting only the part of each distance where the set is
    worse (Pareto-compliant). None for an empty set."""
    from pymoo.indicators.igd_plus import IGDPlus

    A, R = _F(points, cost_scale), _F(reference, cost_scale)
    if not len(A) or not len(R):
        return None
    return float(IGDPlus(R)(A))


def hypervolume(points: Any, ref_point: tuple[float, float], cost_scale: float = 1.0) -> float:
    """Area dominated by the set and bounded by `ref_point` = (cost, accuracy) (pymoo).

    Points costing more than the reference cost or below its accuracy add nothing.
    `cost_scale` divides the costs of both the points and the reference point."""
    from pymoo.indicators.hv import Hypervolume

    A = _F(points, cost_scale)
    ref = np.array([ref_point[0] / cost_scale, -ref_point[1]], dtype=float)
    if not len(A):
        return 0.0
    return float(Hypervolume(ref_point=ref)(A))


def delta_spread(points: Any, reference: Any, cost_scale: float = 1.0) -> float | None:
    """The paper's Δ spread (the authors' ``calculate_delta_metric``), 0 = ideal.

    Both sets sorted by cost. d_f, d_l: distances between the first points and between the
    last points of the reference front and the set; d̄: mean distance between consecutive
    points of the set; d_i: each point's distance to its nearest other point of the set.
    Δ = (d_f + d_l + Σ|d_i − d̄|) / (d_f + d_l + (N − 1)·d̄). (Deb's original uses the N − 1
    consecutive distances for d_i; this follows the authors' code.) A single point gives 1
    (0 if it sits on both ends); an empty set None.
    """
    from scipy.spatial import cKDTree

    S = as_points(points)
    R = as_points(reference)
    if not len(S) or not len(R):
        return None
    S = np.column_stack([S[:, 0] / cost_scale, S[:, 1]])
    R = np.column_stack([R[:, 0] / cost_scale, R[:, 1]])
    d_f = float(np.linalg.norm(R[0] - S[0]))
    d_l = float(np.linalg.norm(R[-1] - S[-1]))
    N = len(S)
    if N == 1:
        return 1.0 if d_f + d_l > 0 else 0.0
    mean_d = float(np.linalg.norm(np.diff(S, axis=0), axis=1).mean())
    dist, _ = cKDTree(S).query(S, k=2)
    nn = dist[:, 1]
    den = d_f + d_l + (N - 1) * mean_d
    if den <= 0:
        return 0.0
    return float((d_f + d_l + np.abs(nn - mean_d).sum()) / den)


def quality(points: Any, reference: Any, *, cost_scale: float,
            hv_ref: tuple[float, float] | None = None) -> dict[str, Any]:
    """IGD, IGD+, HV and Δ of a point set against the reference front, raw and normalised.

    `cost_scale`: the most expensive single model's total cost (normalisation). `hv_ref`:
    the hypervolume reference point (cost USD, accuracy); default (1.1·cost_scale, 0).
    Keys: igd, igd_plus, hv, delta and the same with ``_norm``; hv_ref, hv_ref_norm.
    """
    scale = float(cost_scale) if cost_scale and cost_scale > 0 else 1.0
    ref = (HV_REF_COST_FACTOR * scale, 0.0) if hv_ref is None else (float(hv_ref[0]), float(hv_ref[1]))
    out: dict[str, Any] = {}
    for suffix, s in (("", 1.0), ("_norm", scale)):
        out[f"igd{suffix}"] = igd(points, reference, s)
        out[f"igd_plus{suffix}"] = igd_plus(points, reference, s)
        out[f"hv{suffix}"] = hypervolume(points, ref, s)
        out[f"delta{suffix}"] = delta_spread(points, reference, s)
    out["hv_ref"] = [ref[0], ref[1]]
    out["hv_ref_norm"] = [ref[0] / scale, ref[1]]
    return out


# ---------------------------------------------------------------------- savings and gains
@dataclass(frozen=True, eq=False)
class SingleModels:
    """Every LLM alone on the same queries: one (total cost, accuracy) point per model."""

    accuracy: np.ndarray  # (m,) mean correctness per model
    total_cost: np.ndarray  # (m,) cost of sending every query to the model
    best: int  # the most accurate model (ties: the cheaper)
    best_accuracy: float
    best_cost: float
    cost_scale: float  # the most expensive model's total cost (the normalisation scale)
    models: tuple[str, ...] | None = None

    def points(self) -> np.ndarray:
        """[m, 2] array of (total cost, accuracy), in model order."""
        return np.column_stack([self.total_cost, self.accuracy])

    @property
    def best_name(self) -> str | None:
        """The best model's name (None without names)."""
        return None if self.models is None else self.models[self.best]


def single_models(correct: np.ndarray, cost: np.ndarray, models: tuple[str, ...] | None = None) -> SingleModels:
    """Per model accuracy and total cost; the best model (most accurate, ties: cheaper);
    the most expensive model's total cost (the normalisation scale)."""
    acc = np.asarray(correct, dtype=float).mean(axis=0)
    tot = np.asarray(cost, dtype=float).sum(axis=0)
    best = int(np.lexsort((tot, -acc))[0])
    return SingleModels(acc, tot, best, float(acc[best]), float(tot[best]), float(tot.max()),
                        None if models is None else tuple(models))


@dataclass(frozen=True)
class HindsightSaving:
    """The paper's figure: the cheapest point whose TRUE accuracy reaches a target (the best
    single model's), chosen after the fact, which a user cannot do.

    `saving` = 1 − cost / the best model's cost (None when that cost is 0 or nothing reaches
    the target); `true_accuracy`: the chosen point's, or the best reached when none does.
    """

    reached: bool
    cost: float | None
    saving: float | None
    true_accuracy: float
    point: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of `summary.json`'s ``hindsight``."""
        if not self.reached:
            return {"reached": False, "cost": None, "saving": None, "true_accuracy": self.true_accuracy}
        return {"reached": True, "cost": self.cost, "true_accuracy": self.true_accuracy, "saving": self.saving,
                "point": self.point}


def hindsight_saving(costs: Any, true_acc: Any, best_acc: float, best_cost: float) -> HindsightSaving:
    """The cheapest point (cost `costs[k]`, TRUE accuracy `true_acc[k]`) whose accuracy
    reaches `best_acc` (within 1e-12), and its saving against `best_cost`."""
    costs, true_acc = np.asarray(costs, dtype=float), np.asarray(true_acc, dtype=float)
    ok = true_acc >= best_acc - _TOL
    if not ok.any():
        return HindsightSaving(False, None, None, float(true_acc.max()) if true_acc.size else float("nan"))
    k = int(np.flatnonzero(ok)[np.argmin(costs[ok])])
    return HindsightSaving(True, float(costs[k]), float(1 - costs[k] / best_cost) if best_cost > 0 else None,
                           float(true_acc[k]), k)


def saving_at_accuracy(points: Any, target: float, ref_cost: float) -> float | None:
    """1 − cost / ref_cost of the cheapest point whose accuracy reaches `target`
    (the paper's hindsight figure when accuracies are true ones); None when none reaches it."""
    P = as_points(points)
    return hindsight_saving(P[:, 0], P[:, 1], target, ref_cost).saving


def accuracy_at_cost(points: Any, budget: float, *, rtol: float = _TOL, atol: float = _TOL) -> float | None:
    """The best accuracy among points costing at most `budget` (· (1 + rtol) + atol);
    None when none does."""
    P = as_points(points)
    ok = P[:, 0] <= budget * (1 + rtol) + atol
    return float(P[ok, 1].max()) if ok.any() else None


def accuracy_gain_at_cost(points: Any, ref_cost: float, ref_accuracy: float) -> float | None:
    """Best accuracy within `ref_cost` minus `ref_accuracy` (e.g. the best single model's)."""
    a = accuracy_at_cost(points, ref_cost)
    return None if a is None else float(a - ref_accuracy)


def vs_best_single(points: Any, correct: np.ndarray, cost: np.ndarray,
                   reference: Any | None = None) -> dict[str, Any]:
    """The paper's comparison with the best single model, from TRUE-accuracy points.

    saving: at the best model's accuracy; saving_99: at 99% of it; accuracy_gain: at the
    best model's cost; headroom_captured: against `reference` (the true front) if given.
    """
    s = single_models(correct, cost)
    out = {"best_model": s.best, "best_accuracy": s.best_accuracy, "best_cost": s.best_cost,
           "saving": saving_at_accuracy(points, s.best_accuracy, s.best_cost),
           "saving_99": saving_at_accuracy(points, 0.99 * s.best_accuracy, s.best_cost),
           "accuracy_gain": accuracy_gain_at_cost(points, s.best_cost, s.best_accuracy)}
    if reference is not None:
        out["headroom_captured"] = headroom_captured(points, reference, s.best_cost, s.best_accuracy)
    return out


def improv(points: Any, other: Any) -> float | None:
    """The paper's IMPROV: relative accuracy improvement of this set's most accurate point
    over the other's, (max acc − other max acc) / other max acc. None if either is empty
    or the other's best is 0."""
    A, B = as_points(points), as_points(other)
    if not len(A) or not len(B):
        return None
    b = float(B[:, 1].max())
    return None if b <= 0 else float((A[:, 1].max() - b) / b)


def cost_saving_to_match(points: Any, other: Any) -> float | None:
    """1 − (cheapest cost at which this set reaches the other's best accuracy) / (the
    other's cheapest cost for that accuracy). None when this set never reaches it."""
    A, B = as_points(points), as_points(other)
    if not len(A) or not len(B):
        return None
    target = float(B[:, 1].max())
    cost_b = float(B[B[:, 1] >= target - _TOL, 0].min())
    ok = A[:, 1] >= target - _TOL
    if not ok.any() or cost_b <= 0:
        return None
    return float(1.0 - A[ok, 0].min() / cost_b)


def upper_hull(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the upper-left convex hull of points (x cost, y accuracy), by rising cost
    (monotone chain).

    Only points that are not dominated (cheaper or as cheap and more accurate) and lie on the
    concave envelope are kept: exactly the mixtures a random router can reach.
    """
    order = np.lexsort((-y, x))
    hull: list[int] = []
    for i in order:
        if hull and y[i] <= y[hull[-1]]:
            continue
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # drop b if it lies on or below the segment a→i
            if (y[b] - y[a]) * (x[i] - x[a]) <= (y[i] - y[a]) * (x[b] - x[a]):
                hull.pop()
            else:
                break
        hull.append(int(i))
    return np.array(hull, dtype=int)


def aiq(costs: Any, accuracies: Any | None = None, cost_range: tuple[float, float] | None = None, *,
        hull: bool = True) -> float | None:
    """RouterBench's AIQ: area under the non-decreasing cost–quality curve over
    `cost_range` = (lo, hi), divided by hi − lo.

    Call as ``aiq(costs, accuracies, (lo, hi))`` or ``aiq(points, cost_range=(lo, hi))``.
    The curve at cost c is the best accuracy reachable for at most c: with `hull=True`
    (RouterBench) the non-decreasing upper convex hull of the points, i.e. linear
    interpolation between hull points (mixing two plans); with `hull=False` the step
    function of single plans. Below the cheapest point nothing is affordable: quality 0.
    Above the most accurate point the curve stays flat. None when the range is empty.
    """
    if accuracies is None:
        P = as_points(costs)
    else:
        P = as_points(np.column_stack([np.asarray(costs, dtype=float), np.asarray(accuracies, dtype=float)]))
    if cost_range is None:
        raise ValueError("aiq needs cost_range=(lo, hi)")
    lo, hi = float(cost_range[0]), float(cost_range[1])
    if not hi > lo:
        return None
    if not len(P):
        return 0.0
    # non-dominated, non-decreasing staircase
    keep, best = [], -np.inf
    for c, a in P:
        if a > best:
            keep.append((c, a))
            best = a
    S = np.array(keep)
    total = 0.0
    if hull:
        H = S[upper_hull(S[:, 0], S[:, 1])]
        x = np.concatenate([H[:, 0], [max(hi, H[-1, 0])]])
        y = np.concatenate([H[:, 1], [H[-1, 1]]])
        a0 = max(lo, x[0])
        if hi > a0:
            knots = np.unique(np.concatenate([[a0, hi], x[(x > a0) & (x < hi)]]))
            vals = np.interp(knots, x, y)
            total = float(np.sum((knots[1:] - knots[:-1]) * (vals[1:] + vals[:-1]) / 2))
    else:
        edges = np.concatenate([S[:, 0], [np.inf]])
        for k in range(len(S)):
            a, b = max(lo, edges[k]), min(hi, edges[k + 1])
            if b > a:
                total += (b - a) * S[k, 1]
    return float(total / (hi - lo))


def headroom_captured(points: Any, reference: Any, best_cost: float, best_accuracy: float) -> float | None:
    """Share of the oracle's headroom captured at the best single model's cost:
    (acc − best acc) / (oracle acc − best acc), both the best accuracy within `best_cost`;
    the oracle is `reference`, the exact true front. None when undefined (no point within
    the cost, or no headroom)."""
    a = accuracy_at_cost(points, best_cost)
    o = accuracy_at_cost(reference, best_cost)
    if a is None or o is None or not o - best_accuracy > _TOL:
        return None
    return float((a - best_accuracy) / (o - best_accuracy))
