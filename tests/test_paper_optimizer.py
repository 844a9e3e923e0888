"""OptLLM-M / OptLLM-S: the vectorised optimiser equals the slow reference; extremes, steps,
non-dominance, OptLLM-S targets; SolutionSet as a FrontLike."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optllm.errors import OptLLMError
from optllm.optimize.paper import extremes, optllm_m, optllm_s
from optllm.optimize.solutions import SolutionSet, nondominated, objectives
from optllm.optimize.types import FrontLike
from paper_reference import optllm_m_reference  # tests/paper_reference.py, the slow oracle


def _instance(seed: int, n: int, m: int, kind: str):
    rng = np.random.default_rng(seed)
    if kind == "ties":  # coarse grids: many exact ties in p, cost and ratios
        p = rng.integers(0, 4, (n, m)) / 4
        c = rng.integers(1, 4, (n, m)) / 10
        pr = np.clip(p + rng.integers(0, 2, (n, m)) / 4, 0, 1)
    elif kind == "flat":  # one price per model, the usual API pricing
        p = rng.random((n, m))
        c = np.tile(rng.random(m) + 0.01, (n, 1))
        pr = None
    else:
        p = rng.random((n, m))
        c = rng.random((n, m)) + 0.01
        pr = np.clip(p + 0.2 * rng.random((n, m)), 0, 1)
    return p, pr, c


@pytest.mark.parametrize("kind", ["random", "ties", "flat"])
@pytest.mark.parametrize("seed", range(6))
def test_vectorised_equals_reference(kind, seed):
    rng = np.random.default_rng(100 + seed)
    n, m, gn = int(rng.integers(5, 40)), int(rng.integers(2, 6)), int(rng.integers(2, 15))
    p, pr, c = _instance(seed, n, m, kind)
    fast = optllm_m(p, pr, c, gn=gn)
    slow = optllm_m_reference(p, pr, c, gn=gn)
    assert np.array_equal(fast.assignments, slow.assignments)
    assert np.array_equal(fast.costs, slow.costs)
    assert np.array_equal(fast.accuracies, slow.accuracies)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 12), st.integers(1, 4), st.integers(1, 8), st.integers(0, 10_000))
def test_vectorised_equals_reference_property(n, m, gn, seed):
    rng = np.random.default_rng(seed)
    p = np.round(rng.random((n, m)), 1)
    c = np.round(rng.random((n, m)), 1)
    pr = np.round(rng.random((n, m)), 1)
    a, b = optllm_m(p, pr, c, gn=gn), optllm_m_reference(p, pr, c, gn=gn)
    assert np.array_equal(a.assignments, b.assignments)


def test_reference_on_real_data_subset(demo):
    d = demo.subset(np.arange(120))
    rng = np.random.default_rng(3)
    p = 0.7 * d.correct + 0.3 * rng.random(d.correct.shape)
    pr = np.clip(p + 0.1 * rng.standard_normal(d.correct.shape), 0, 1)
    a = optllm_m(p, pr, d.cost, gn=10)
    b = optllm_m_reference(p, pr, d.cost, gn=10)
    assert np.array_equal(a.assignments, b.assignments)


def test_extremes_tie_rules():
    p = np.array([[0.2, 0.9, 0.9, 0.5]])
    pr = np.array([[0.2, 0.9, 0.9, 0.5]])
    c = np.array([[1.0, 3.0, 2.0, 1.0]])
    lo, hi = extremes(p, pr, c)
    assert lo[0] == 3  # cheapest (cost 1) tie -> higher base p
    assert hi[0] == 2  # highest p tie -> lower cost


def test_front_is_nondominated_sorted_and_contains_extremes():
    p, pr, c = _instance(7, 200, 6, "random")
    s = optllm_m(p, pr, c, gn=20)
    assert isinstance(s, FrontLike)
    assert np.all(np.diff(s.costs) > 0) and np.all(np.diff(s.accuracies) > 0)
    cc, aa = objectives(s.assignments, p, c)
    assert np.array_equal(cc, s.costs) and np.array_equal(aa, s.accuracies)
    # the cheapest possible cost is reached (all-cheapest extreme, ties to higher p)
    assert s.costs[0] == pytest.approx(c.min(axis=1).sum())
    assert 2 <= len(s) <= 2 * 20
    assert s.info["hit_exchange_cap"] is False


def test_gn_one_gives_only_extremes():
    p, pr, c = _instance(1, 30, 4, "random")
    s = optllm_m(p, pr, c, gn=1)
    assert s.info["candidates"] == 2


def test_without_robust_the_top_is_the_max_p():
    p, _, c = _instance(2, 50, 5, "random")
    s = optllm_m(p, None, c, gn=10)
    assert s.accuracies[-1] == pytest.approx(p.max(axis=1).mean())


def test_never_beats_exact_lp_bound():
    """A heuristic point can never beat the LP relaxation (concave hull of per-query hulls)."""
    from scipy.optimize import linprog

    p, _, c = _instance(5, 12, 3, "random")
    s = optllm_m(p, None, c, gn=8)
    n, m = p.shape
    for k in range(len(s)):
        res = linprog(-p.ravel() / n, A_ub=c.ravel()[None, :], b_ub=[s.costs[k] + 1e-12],
                      A_eq=np.kron(np.eye(n), np.ones(m)), b_eq=np.ones(n), bounds=(0, 1), method="highs")
        assert s.accuracies[k] <= -res.fun + 1e-9


def test_paper_is_fast_on_thousands(demo):
    rng = np.random.default_rng(0)
    p = 0.7 * demo.correct + 0.3 * rng.random(demo.correct.shape)
    s = optllm_m(p, None, demo.cost, gn=50)
    assert s.info["seconds"] < 30
    assert len(s) > 20


def test_input_errors():
    with pytest.raises(OptLLMError):
        optllm_m(np.ones((3, 2)), None, np.ones((3, 3)))
    with pytest.raises(OptLLMError):
        optllm_m(np.ones((3, 2)), None, np.ones((3, 2)), gn=0)
    with pytest.raises(OptLLMError):
        optllm_m(np.array([[np.nan, 1.0]]), None, np.ones((1, 2)))


# ---------------------------------------------------------------------- SolutionSet
def test_nondominated_filter_by_hand():
    costs = np.array([3.0, 1.0, 2.0, 2.0, 1.0, 4.0])
    accs = np.array([0.9, 0.5, 0.6, 0.7, 0.5, 0.8])
    # (1,.5) twice -> first kept (index 1); (2,.6) dominated by (2,.7); (4,.8) dominated by (3,.9)
    assert nondominated(costs, accs).tolist() == [1, 3, 0]


def test_solution_set_frontlike():
    p = np.array([[0.1, 0.9], [0.2, 0.8]])
    c = np.array([[1.0, 2.0], [1.0, 3.0]])
    X = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [1, 1]])
    s = SolutionSet.from_assignments(X, p, c, models=("a", "b"), method="t")
    assert len(s) == 3  # [0,1] (cost 4, .45) is dominated by [1,0] (cost 3, .5); duplicate dropped
    assert s.costs.tolist() == [2.0, 3.0, 5.0]
    assert s.at_budget(4.0).models.tolist() == [1, 0]
    a = s.at_accuracy(0.6)
    assert a.models.tolist() == [1, 1] and np.isnan(a.upper_bound) and np.isnan(a.cost_lower_bound)
    with pytest.raises(OptLLMError):
        s.at_budget(1.0)
    with pytest.raises(OptLLMError):
        s.at_accuracy(0.95)
    assert s.points(2).shape == (2, 2)
    assert s.values(np.array([[0, 1], [1, 0]])).tolist() == [0.5, 1.0, 0.5]


# ---------------------------------------------------------------------- OptLLM-S
def test_optllm_s_budget_uses_budget_and_respects_it():
    p, _, c = _instance(11, 150, 5, "random")
    front = optllm_m(p, None, c, gn=50)
    budget = float(np.quantile(front.costs, 0.4))
    a = optllm_s(p, c, budget=budget)
    assert a.cost <= budget + 1e-9
    assert a.accuracy >= front.at_budget(budget).accuracy - 1e-12
    # nothing fits any more: every remaining upgrade is dearer than what is left
    rows = np.arange(p.shape[0])
    left = budget - a.cost
    dq = p - p[rows, a.models][:, None]
    dc = c - c[rows, a.models][:, None]
    assert not np.any((dq > 0) & (dc <= left) & (dc > 0))
    assert np.isnan(a.upper_bound) and a.cost_limit == budget


def test_optllm_s_target_just_reaches_it():
    p, _, c = _instance(12, 150, 5, "random")
    front = optllm_m(p, None, c, gn=50)
    target = float(np.mean(front.accuracies[[0, -1]]))
    a = optllm_s(p, c, min_accuracy=target)
    assert a.accuracy >= target - 1e-12
    assert a.cost <= front.at_accuracy(target).cost + 1e-12
    assert a.accuracy_target == target


def test_optllm_s_errors():
    p, _, c = _instance(13, 20, 3, "random")
    with pytest.raises(OptLLMError):
        optllm_s(p, c)
    with pytest.raises(OptLLMError):
        optllm_s(p, c, budget=1.0, min_accuracy=0.5)
    with pytest.raises(OptLLMError):
        optllm_s(p, c, budget=c.min(axis=1).sum() * 0.5)
    with pytest.raises(OptLLMError):
        optllm_s(p, c, min_accuracy=1.01)
