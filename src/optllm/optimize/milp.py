"""The exact integer optimum at one budget or accuracy target, by MILP (scipy / HiGHS).

For small batches with hard constraints (and to check `pareto_front`): one binary per
(query, model), one model per query, total cost ≤ budget (or mean p ≥ target). The solver's
dual bound is returned as the certificate. Sizes up to a few 10^5 variables are practical;
for more, use `pareto_front(...).at_budget` (gap ≤ one move's gain).
"""
from __future__ import annotations

import math
import time
from typing import Any, Sequence

import numpy as np

from optllm.errors import OptLLMError
from optllm.optimize.types import Assignment

__all__ = ["milp_at_budget", "milp_at_accuracy", "MAX_VARIABLES"]

MAX_VARIABLES = 2_000_000


def _inputs(p: Any, cost: Any, models: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray, tuple[str, ...] | None]:
    from optllm.optimize.front import _check, _check_models

    p, cost = _check(p, cost)
    if p.size > MAX_VARIABLES:
        raise OptLLMError(f"{p.shape[0]:,} × {p.shape[1]} = {p.size:,} binaries is too large for the MILP "
                          f"(limit {MAX_VARIABLES:,}); use pareto_front(...).at_budget / at_accuracy instead")
    return p, cost, _check_models(models, p.shape[1])


def _solve(obj: np.ndarray, n: int, m: int, extra_row: np.ndarray, lo: float, hi: float,
           time_limit: float | None, mip_rel_gap: float) -> Any:
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import csr_array

    one_each = csr_array((np.ones(n * m), np.arange(n * m), np.arange(0, n * m + 1, m)), shape=(n, n * m))
    cons = [LinearConstraint(one_each, 1.0, 1.0), LinearConstraint(extra_row[None, :], lo, hi)]
    opts: dict[str, Any] = {"mip_rel_gap": float(mip_rel_gap), "presolve": True}
    if time_limit is not None:
        opts["time_limit"] = float(time_limit)
    return milp(obj, constraints=cons, integrality=np.ones(n * m), bounds=Bounds(0.0, 1.0), options=opts)


def _decode(res: Any, n: int, m: int) -> np.ndarray:
    return np.asarray(res.x, dtype=float).reshape(n, m).argmax(axis=1)


def milp_at_budget(p: np.ndarray, cost: np.ndarray, budget: float, *, models: Sequence[str] | None = None,
                   time_limit: float | None = None, mip_rel_gap: float = 1e-9) -> Assignment:
    """The most accurate assignment with total cost ≤ `budget`, solved exactly by HiGHS.

    `upper_bound` is the solver's dual bound (equal to `accuracy` when proven optimal,
    within `mip_rel_gap`); a time limit returns the best plan found with its bound.
    """
    t0 = time.perf_counter()
    p, cost, names = _inputs(p, cost, models)
    n, m = p.shape
    B = float(budget)
    floor, top = float(cost.min(axis=1).sum()), float(cost.max(axis=1).sum())
    if not math.isfinite(B) or B < floor * (1 - 1e-12) - 1e-15:
        raise OptLLMError(f"budget {B:.6g} is below the cheapest assignment (cost {floor:.6g}); "
                          f"reachable costs: {floor:.6g} to {top:.6g}")
    res = _solve(-p.ravel(), n, m, cost.ravel(), -np.inf, max(B, floor), time_limit, mip_rel_gap)
    if res.x is None:
        raise OptLLMError(f"MILP found no plan within budget {B:.6g}: {res.message}")
    a = _decode(res, n, m)
    rows = np.arange(n)
    acc = float(p[rows, a].mean())
    bound = getattr(res, "mip_dual_bound", None)
    ub = -float(bound) / n if bound is not None and np.isfinite(bound) else float("nan")
    return Assignment(models=a, cost=float(cost[rows, a].sum()), accuracy=acc,
                      upper_bound=max(ub, acc) if np.isfinite(ub) else ub, cost_limit=B, model_names=names,
                      info={"method": "milp", "certified": res.status == 0, "status": int(res.status),
                            "message": str(res.message), "mip_gap": getattr(res, "mip_gap", None),
                            "seconds": time.perf_counter() - t0})


def milp_at_accuracy(p: np.ndarray, cost: np.ndarray, target: float, *, models: Sequence[str] | None = None,
                     time_limit: float | None = None, mip_rel_gap: float = 1e-9) -> Assignment:
    """The cheapest assignment with mean p ≥ `target`, solved exactly by HiGHS;
    `cost_lower_bound` is the solver's dual bound."""
    t0 = time.perf_counter()
    p, cost, names = _inputs(p, cost, models)
    n, m = p.shape
    A = float(target)
    best = float(p.max(axis=1).mean())
    if not math.isfinite(A) or A > best + 1e-12:
        raise OptLLMError(f"accuracy target {A:.6g} is above the best reachable expected accuracy {best:.6f}")
    res = _solve(cost.ravel(), n, m, p.ravel(), min(A, best) * n, np.inf, time_limit, mip_rel_gap)
    if res.x is None:
        raise OptLLMError(f"MILP found no plan reaching accuracy {A:.6g}: {res.message}")
    a = _decode(res, n, m)
    rows = np.arange(n)
    c = float(cost[rows, a].sum())
    bound = getattr(res, "mip_dual_bound", None)
    lb = float(bound) if bound is not None and np.isfinite(bound) else float("nan")
    return Assignment(models=a, cost=c, accuracy=float(p[rows, a].mean()),
                      cost_lower_bound=min(lb, c) if np.isfinite(lb) else lb, accuracy_target=A, model_names=names,
                      info={"method": "milp", "certified": res.status == 0, "status": int(res.status),
                            "message": str(res.message), "mip_gap": getattr(res, "mip_gap", None),
                            "seconds": time.perf_counter() - t0})
