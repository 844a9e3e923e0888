"""The front against the exact integer optimum (HiGHS MILP) and the LP relaxation, for n in
the hundreds: our plan is within its certified gap, and the gap is at most one move's gain."""
from __future__ import annotations

import numpy as np
import pytest

import optllm.optimize.milp as milp_mod
from optllm.data import synthetic
from optllm.errors import OptLLMError
from optllm.optimize import milp_at_accuracy, milp_at_budget, pareto_front

EPS = 1e-9


@pytest.fixture(scope="module")
def inst() -> tuple[np.ndarray, np.ndarray]:
    d = synthetic(300, 6, seed=11, labels=False)
    return d.correct, d.cost


@pytest.mark.slow
def test_at_budget_within_gap_of_milp_at_20_budgets(inst) -> None:
    p, cost = inst
    n = p.shape[0]
    f = pareto_front(p, cost)
    max_gain = float(f.move_dp.max()) / n
    assert max_gain <= 1.0 / n
    rng = np.random.default_rng(0)
    budgets = np.sort(rng.uniform(f.costs[0], f.costs[-1], 20))
    for B in budgets:
        ours = f.at_budget(float(B))
        best = milp_at_budget(p, cost, float(B))
        assert best.info["certified"] and ours.info["certified"]
        assert ours.cost <= B * (1 + 1e-12) and best.cost <= B * (1 + 1e-9)
        assert best.accuracy >= ours.accuracy - EPS  # the MILP is optimal, ours feasible
        assert best.accuracy <= ours.upper_bound + EPS  # our certificate bounds the optimum
        assert ours.accuracy >= best.accuracy - ours.gap - EPS
        assert ours.gap <= max_gain + EPS


def test_breakpoints_are_integer_optima(inst) -> None:
    p, cost = inst
    f = pareto_front(p, cost)
    for k in np.linspace(0, len(f) - 1, 5).round().astype(int):
        best = milp_at_budget(p, cost, float(f.costs[k]))
        assert best.accuracy == pytest.approx(f.accuracies[k], abs=EPS)
        assert f.at_budget(float(f.costs[k])).gap == pytest.approx(0.0, abs=EPS)


def test_at_accuracy_against_milp(inst) -> None:
    p, cost = inst
    f = pareto_front(p, cost)
    for A in np.linspace(f.accuracies[0] + 1e-3, f.accuracies[-1] - 1e-4, 6):
        ours = f.at_accuracy(float(A))
        best = milp_at_accuracy(p, cost, float(A))
        assert ours.accuracy >= A - EPS and best.accuracy >= A - EPS
        assert ours.cost_lower_bound - EPS <= best.cost <= ours.cost + EPS
        assert best.cost_lower_bound <= best.cost + EPS


def test_upper_bound_is_the_lp_relaxation(inst) -> None:
    from scipy.optimize import linprog
    from scipy.sparse import csr_array

    p, cost = inst[0][:80], inst[1][:80]
    n, m = p.shape
    f = pareto_front(p, cost)
    rows = csr_array((np.ones(n * m), np.arange(n * m), np.arange(0, n * m + 1, m)), shape=(n, n * m))
    for u in (0.1, 0.37, 0.8):
        B = float(f.costs[0] + u * (f.costs[-1] - f.costs[0]))
        lp = linprog(-p.ravel() / n, A_ub=cost.ravel()[None, :], b_ub=[B], A_eq=rows, b_eq=np.ones(n),
                     bounds=(0, 1), method="highs")
        assert lp.status == 0
        assert f.at_budget(B).upper_bound == pytest.approx(-lp.fun, abs=1e-9)


def test_true_front_against_milp(demo) -> None:
    sub = demo.subset(np.arange(200))
    f = pareto_front(sub.correct, sub.cost)
    for u in (0.05, 0.3, 0.6, 0.95):
        B = float(f.costs[0] + u * (f.costs[-1] - f.costs[0]))
        ours, best = f.at_budget(B), milp_at_budget(sub.correct, sub.cost, B)
        assert best.accuracy <= ours.upper_bound + EPS and ours.accuracy >= best.accuracy - 1 / 200 - EPS


def test_milp_errors_and_names(inst, monkeypatch: pytest.MonkeyPatch) -> None:
    p, cost = inst[0][:20], inst[1][:20]
    floor = float(cost.min(axis=1).sum())
    with pytest.raises(OptLLMError, match="below the cheapest assignment"):
        milp_at_budget(p, cost, floor * 0.5)
    with pytest.raises(OptLLMError, match="above the best reachable"):
        milp_at_accuracy(p, cost, 1.5)
    a = milp_at_budget(p, cost, floor * 3, models=[f"m{k}" for k in range(6)])
    assert a.model_names == tuple(f"m{k}" for k in range(6)) and a.models.shape == (20,)
    monkeypatch.setattr(milp_mod, "MAX_VARIABLES", 10)
    with pytest.raises(OptLLMError, match="too large"):
        milp_at_budget(p, cost, floor * 3)
