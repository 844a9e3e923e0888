"""The exact front: brute force over all m^n assignments, properties on random instances,
edge cases, both back ends, chunked == in memory, and the plot helper."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import optllm.optimize.front as fm
from optllm.errors import OptLLMError
from optllm.optimize import Front, pareto_front, pareto_front_chunks
from optllm.optimize.front import front_block, iter_row_chunks, merge_blocks

ARRAYS = ("start", "move_query", "move_from", "move_to", "move_dcost", "move_dp", "costs", "accuracies")
EPS = 1e-9


def same_front(a: Front, b: Front) -> None:
    for name in ARRAYS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y), name


def evaluate(p: np.ndarray, cost: np.ndarray, a: np.ndarray) -> tuple[float, float]:
    rows = np.arange(p.shape[0])
    return float(cost[rows, a].sum()), float(p[rows, a].mean())


def expected_start_end(p: np.ndarray, cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cheapest (ties: higher p, then lower index); most accurate (ties: cheaper, lower index)."""
    idx = np.arange(p.shape[1])
    start = np.array([np.lexsort((idx, -p[i], cost[i]))[0] for i in range(p.shape[0])])
    end = np.array([np.lexsort((idx, cost[i], -p[i]))[0] for i in range(p.shape[0])])
    return start, end


def instance(rng: np.random.Generator, n: int, m: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    if kind == "ties":  # coarse grids: equal costs, equal p, zero costs, collinear points
        return rng.integers(0, 3, (n, m)) / 2.0, rng.integers(0, 3, (n, m)).astype(float)
    if kind == "truth":
        return (rng.random((n, m)) < 0.5).astype(float), rng.integers(1, 5, (n, m)) * 0.25
    return rng.random((n, m)), rng.random((n, m))


# ---------------------------------------------------------------------- brute force
def brute(p: np.ndarray, cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cost, accuracy) of all m^n assignments."""
    n, m = p.shape
    A = np.indices((m,) * n).reshape(n, -1).T
    rows = np.arange(n)
    return cost[rows, A].sum(axis=1), p[rows, A].mean(axis=1)


CASES = [(n, m, kind, seed) for seed, (n, m) in enumerate([(1, 1), (1, 4), (3, 1), (2, 3), (4, 3), (5, 4), (6, 3),
                                                            (7, 3), (8, 3), (8, 4)])
         for kind in ("float", "ties", "truth")]


@pytest.mark.parametrize("n,m,kind,seed", CASES)
def test_brute_force(n: int, m: int, kind: str, seed: int) -> None:
    rng = np.random.default_rng(1000 + seed)
    p, cost = instance(rng, n, m, kind)
    C, P = brute(p, cost)
    f = pareto_front(p, cost)
    tol = EPS * max(1.0, float(C.max()))
    # every supported point is optimal at its cost and nothing reaches its accuracy cheaper
    for k in range(len(f)):
        assert P[C <= f.costs[k] + tol].max() == pytest.approx(f.accuracies[k], abs=EPS)
        assert C[P >= f.accuracies[k] - EPS].min() == pytest.approx(f.costs[k], abs=tol)
        assert evaluate(p, cost, f.assignment(k)) == pytest.approx((f.costs[k], f.accuracies[k]), abs=tol)
    assert f.costs[0] == pytest.approx(C.min()) and f.accuracies[-1] == pytest.approx(P.max())
    gmax = float(f.move_dp.max(initial=0.0)) / n
    budgets = np.concatenate([f.costs, rng.uniform(f.costs[0], f.costs[-1] * 1.1 + 0.1, 15)])
    for B in budgets:
        a = f.at_budget(float(B))
        opt = P[C <= B + tol].max()
        assert a.cost <= B + tol
        assert evaluate(p, cost, a.models) == pytest.approx((a.cost, a.accuracy), abs=tol)
        assert a.accuracy <= opt + EPS <= a.upper_bound + 2 * EPS  # certified: optimum within the gap
        assert a.gap <= gmax + EPS
    for A in np.concatenate([f.accuracies, rng.uniform(f.accuracies[0] - 0.1, f.accuracies[-1], 15)]):
        a = f.at_accuracy(float(A))
        cheapest = C[P >= A - EPS].min()
        assert a.accuracy >= A - EPS
        assert evaluate(p, cost, a.models) == pytest.approx((a.cost, a.accuracy), abs=tol)
        assert a.cost_lower_bound - tol <= cheapest <= a.cost + tol


# ---------------------------------------------------------------------- properties
def _grid(k: int) -> st.SearchStrategy[float]:
    return st.integers(0, k).map(lambda v: v / k)


@st.composite
def instances(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n, m = draw(st.integers(1, 25)), draw(st.integers(1, 6))
    pv = draw(st.sampled_from([_grid(2), _grid(10), _grid(1000)]))
    cv = draw(st.sampled_from([st.integers(0, 3).map(float), st.integers(0, 10_000).map(lambda v: v / 100)]))
    p = np.array(draw(st.lists(pv, min_size=n * m, max_size=n * m))).reshape(n, m)
    c = np.array(draw(st.lists(cv, min_size=n * m, max_size=n * m))).reshape(n, m)
    return p, c


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances(), st.integers(1, 9), st.floats(0, 1))
def test_properties(inst: tuple[np.ndarray, np.ndarray], chunk: int, u: float) -> None:
    p, cost = inst
    n = p.shape[0]
    f = pareto_front(p, cost)
    assert len(f.costs) == len(f.accuracies) == f.n_moves + 1
    # monotone, and strictly so: no point dominates another
    assert np.all(np.diff(f.costs) > 0) and np.all(np.diff(f.accuracies) > 0)
    assert np.all(f.move_dcost > 0) and np.all(f.move_dp > 0)
    slopes = f.move_dp / f.move_dcost
    assert np.all(np.diff(slopes) <= 1e-9 * np.maximum(1.0, slopes[1:]))  # sorted by slope, descending
    start, end = expected_start_end(p, cost)
    assert np.array_equal(f.assignment(0), start) and np.array_equal(f.assignment(-1), end)
    for k in range(len(f)):
        assert evaluate(p, cost, f.assignment(k)) == pytest.approx((f.costs[k], f.accuracies[k]), abs=EPS)
    assert np.allclose(f.values(p), f.accuracies, atol=1e-12)
    # both back ends and the chunked build give the same arrays
    same_front(f, pareto_front(p, cost, backend="numpy"))
    same_front(f, pareto_front_chunks(iter_row_chunks(p, cost, rows=chunk)))
    # budgets: feasible, certified, gap at most one move's gain
    B = float(f.costs[0] + u * (f.costs[-1] - f.costs[0]))
    a = f.at_budget(B)
    assert a.cost <= B + EPS and a.accuracy <= a.upper_bound + EPS
    assert a.upper_bound == pytest.approx(f.lp_accuracy(B), abs=EPS)
    assert a.gap <= float(f.move_dp.max(initial=0.0)) / n + EPS
    A = float(f.accuracies[0] + u * (f.accuracies[-1] - f.accuracies[0]))
    b = f.at_accuracy(A)
    assert b.accuracy >= A - EPS and b.cost_lower_bound <= b.cost + EPS
    assert b.cost_lower_bound == pytest.approx(f.lp_cost(A), abs=EPS)


# ---------------------------------------------------------------------- edge cases
def test_single_model_and_single_query() -> None:
    f = pareto_front(np.array([[0.3], [0.8]]), np.array([[1.0], [2.0]]), models=["only"])
    assert len(f) == 1 and f.n_moves == 0 and f.costs[0] == 3.0 and f.accuracies[0] == pytest.approx(0.55)
    a = f.at_budget(10.0)
    assert a.models.tolist() == [0, 0] and a.gap == 0 and a.model_names == ("only",)
    assert f.at_accuracy(0.1).cost == 3.0
    with pytest.raises(OptLLMError, match="reachable costs: 3 to 3"):
        f.at_budget(2.0)
    g = pareto_front(np.array([[0.1, 0.6, 0.9]]), np.array([[1.0, 2.0, 4.0]]))
    assert g.costs.tolist() == [1.0, 2.0, 4.0] and g.assignment(-1).tolist() == [2]


def test_ties_zero_costs_equal_p_and_dominated_models() -> None:
    # equal costs: the better p wins; equal p: the cheaper; both equal: the lower index
    p = np.array([[0.2, 0.9, 0.9], [0.5, 0.5, 0.5], [0.1, 0.5, 0.9], [0.9, 0.5, 0.2], [0.0, 0.5, 1.0]])
    c = np.array([[0.0, 0.0, 1.0], [2.0, 1.0, 1.0], [0.0, 0.0, 1.0], [1.0, 2.0, 3.0], [0.0, 1.0, 2.0]])
    f = pareto_front(p, c)
    assert f.assignment(0).tolist() == [1, 1, 1, 0, 0]
    assert f.assignment(-1).tolist() == [1, 1, 2, 0, 2]
    # query 4 is collinear: both steps kept as exact points (same slope, chain order kept)
    assert f.move_query.tolist() == [4, 4, 2] and f.move_to.tolist() == [1, 2, 2]
    assert f.costs.tolist() == [2.0, 3.0, 4.0, 5.0]
    flat = pareto_front(np.full((4, 3), 0.7), np.array([[3.0, 1.0, 2.0]] * 4))
    assert len(flat) == 1 and flat.assignment(0).tolist() == [1] * 4


def test_equal_slopes_are_ordered_by_query() -> None:
    p = np.array([[0.0, 1.0]] * 3)
    c = np.array([[1.0, 2.0]] * 3)
    f = pareto_front(p, c)
    assert f.move_query.tolist() == [0, 1, 2]
    assert [f.assignment(k).tolist() for k in range(4)] == [[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]]


def test_true_front_ends_at_the_oracle(demo) -> None:
    f = pareto_front(demo.correct, demo.cost, models=demo.models)
    a, acc, cost = demo.oracle()
    assert f.accuracies[-1] == pytest.approx(acc) and f.costs[-1] == pytest.approx(cost)
    at_min = demo.cost == demo.cost.min(axis=1, keepdims=True)
    fixable = ~((demo.correct == 1) & at_min).any(axis=1) & (demo.correct.max(axis=1) == 1)
    assert f.n_moves == int(fixable.sum())  # each move fixes one wrong query (Δp = 1)
    assert np.all(f.move_dp == 1.0)
    assert np.all(np.diff(f.move_dcost) >= -1e-12 * f.move_dcost[1:])  # so the slope order is the order of extra cost
    best = demo.best_model()
    plan = f.at_accuracy(float(demo.model_accuracy()[best]))
    assert plan.cost < demo.model_total_cost()[best]


def test_at_budget_fills_with_any_later_move_that_fits() -> None:
    p = np.array([[0.0, 1.0], [0.0, 0.05], [0.0, 0.01]])
    c = np.array([[0.0, 10.0], [0.0, 1.0], [0.0, 0.5]])
    f = pareto_front(p, c)
    assert f.move_query.tolist() == [0, 1, 2]
    a = f.at_budget(1.2)  # move 0 (10 USD) does not fit; move 1 does, then move 2 does not
    assert a.models.tolist() == [0, 1, 0] and a.cost == 1.0 and a.info["fill_moves"] == 1
    assert a.accuracy == pytest.approx(0.05 / 3) and a.upper_bound == pytest.approx(0.12 / 3)
    b = f.at_budget(1.6)
    assert b.models.tolist() == [0, 1, 1] and b.cost == 1.5
    e = f.at_budget(1e9)
    assert e.models.tolist() == [1, 1, 1] and e.gap == 0 and e.cost == 11.5


def test_at_accuracy_undoes_low_slope_moves_the_surplus_allows() -> None:
    p = np.array([[0.0, 0.5], [0.0, 0.3], [0.0, 0.1]])
    c = np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 5.0]])
    f = pareto_front(p, c)
    assert f.move_query.tolist() == [0, 1, 2]
    a = f.at_accuracy(0.6 / 3)  # first reached at point 2 (0.8/3); undoing move 0 (Δp .5) would miss it
    assert a.models.tolist() == [1, 1, 0] and a.cost == 2.0 and a.info["trim_moves"] == 0
    q = pareto_front(np.array([[0.0, 0.5], [0.0, 0.05], [0.0, 0.2]]), np.array([[0.0, 1.0], [0.0, 0.2], [0.0, 10.0]]))
    assert q.move_query.tolist() == [0, 1, 2]
    t = q.at_accuracy(0.69 / 3)  # first reached at point 3 (all moves); undo query 1 (Δp .05 ≤ surplus .06)
    assert t.models.tolist() == [1, 0, 1] and t.cost == pytest.approx(11.0) and t.info["trim_moves"] == 1
    assert t.accuracy == pytest.approx(0.7 / 3) and t.cost_lower_bound <= t.cost


def test_impossible_targets_and_bad_inputs_say_what() -> None:
    f = pareto_front(np.array([[0.2, 0.8]]), np.array([[1.0, 3.0]]))
    with pytest.raises(OptLLMError, match=r"below the cheapest.*reachable costs: 1 to 3"):
        f.at_budget(0.5)
    with pytest.raises(OptLLMError, match=r"above the best reachable.*0\.800000"):
        f.at_accuracy(0.9)
    with pytest.raises(OptLLMError, match="out of range"):
        f.assignment(5)
    bad = [
        ((np.ones((2, 3)), np.ones((2, 2))), "same shape"),
        ((np.ones(3), np.ones(3)), "2-D"),
        ((np.ones((0, 3)), np.ones((0, 3))), "at least one query"),
        ((np.array([[np.nan, 1.0]]), np.ones((1, 2))), "p has NaN"),
        ((np.ones((1, 2)), np.array([[1.0, np.inf]])), "cost has NaN or infinite"),
        ((np.ones((1, 2)), np.array([[1.0, -1.0]])), "negative"),
    ]
    for (p, c), needle in bad:
        with pytest.raises(OptLLMError, match=needle):
            pareto_front(p, c)
    with pytest.raises(OptLLMError, match="2 columns"):
        pareto_front(np.ones((1, 2)), np.ones((1, 2)), models=["a"])
    with pytest.raises(OptLLMError, match="unknown backend"):
        pareto_front(np.ones((1, 2)), np.ones((1, 2)), backend="gpu")


# ---------------------------------------------------------------------- back ends and chunks
def test_numba_and_numpy_identical_on_synthetic() -> None:
    from optllm.data import synthetic

    d = synthetic(20_000, 12, seed=3, labels=False)
    a = pareto_front(d.correct, d.cost, backend="numpy")
    b = pareto_front(d.correct, d.cost)
    same_front(a, b)
    assert b.info["backend"] == ("numba" if fm.numba_available() else "numpy")
    t = synthetic(5_000, 40, seed=4)  # 0/1 labels: massive slope ties
    same_front(pareto_front(t.correct, t.cost, backend="numpy"), pareto_front(t.correct, t.cost))


def test_without_numba_everything_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    p, c = rng.random((300, 5)), rng.random((300, 5))
    f = pareto_front(p, c)
    B, A = float(f.costs[len(f) // 2] + 1e-3), float(f.accuracies[len(f) // 3] + 1e-4)
    ref = (f.assignment(len(f) // 2), f.at_budget(B), f.at_accuracy(A))
    monkeypatch.setattr(fm, "_JIT", {})
    assert not fm.numba_available()
    g = pareto_front(p, c)
    assert g.info["backend"] == "numpy"
    same_front(f, g)
    assert np.array_equal(g.assignment(len(g) // 2), ref[0])
    for x, y in ((g.at_budget(B), ref[1]), (g.at_accuracy(A), ref[2])):
        assert np.array_equal(x.models, y.models) and x.cost == y.cost and x.accuracy == y.accuracy
    with pytest.raises(OptLLMError, match="needs numba"):
        pareto_front(p, c, backend="numba")


def test_chunked_equals_in_memory_with_memmaps(tmp_path) -> None:
    from optllm.data import synthetic

    d = synthetic(30_000, 8, seed=7, labels=False)
    np.save(tmp_path / "p.npy", d.correct)
    np.save(tmp_path / "c.npy", d.cost)
    pm, cm = np.load(tmp_path / "p.npy", mmap_mode="r"), np.load(tmp_path / "c.npy", mmap_mode="r")
    ref = pareto_front(d.correct, d.cost, models=d.models)
    for backend in ("auto", "numpy"):
        g = pareto_front_chunks(iter_row_chunks(pm, cm, rows=7_001), models=d.models, backend=backend)
        same_front(ref, g)
        assert g.models == d.models and g.info["chunks"] == 5
    # the two halves a distributed back end would use
    blocks = [front_block(d.correct[s:s + 10_000], d.cost[s:s + 10_000], s) for s in (0, 10_000, 20_000)]
    same_front(ref, merge_blocks(blocks))
    with pytest.raises(OptLLMError, match="not consecutive"):
        merge_blocks([front_block(d.correct[:10], d.cost[:10], 0), front_block(d.correct[20:30], d.cost[20:30], 20)])
    with pytest.raises(OptLLMError, match="empty iterator"):
        pareto_front_chunks(iter([]))


# ---------------------------------------------------------------------- output
def test_points_frame_csv_and_plot(tmp_path, demo) -> None:
    f = pareto_front(demo.correct, demo.cost, models=demo.models)
    pts = f.points(max_points=50)
    assert 2 <= len(pts) <= 50
    assert tuple(pts[0]) == (f.costs[0], f.accuracies[0]) and tuple(pts[-1]) == (f.costs[-1], f.accuracies[-1])
    assert np.all(np.diff(pts[:, 0]) > 0) and np.all(np.diff(pts[:, 1]) > 0)
    assert len(f.points()) == len(f) and len(f.points(max_points=10**9)) == len(f)
    df = f.to_frame()
    assert len(df) == len(f) and df["query"].iloc[0] == -1 and df["to_model"].iloc[1] in demo.models
    path = tmp_path / "front.csv"
    f.write_csv(str(path), max_points=100)
    back = pd.read_csv(path)
    assert len(back) <= 100 and back["cost"].iloc[-1] == pytest.approx(f.costs[-1])
    assert f"{len(f):,} points" in repr(f)

    from optllm.evaluate.plots import bar_chart, plot_front

    png = tmp_path / "sub" / "front.png"
    plot_front(png, series={"true": (pts[:, 0], pts[:, 1]), "other": ([0.2, 0.3], [0.6, 0.7])},
               points={m: (float(c), float(a)) for m, c, a in zip(demo.models, demo.model_total_cost(),
                                                                  demo.model_accuracy())},
               marks={"chosen": (0.3, 0.9)}, title="demo", logx=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(png.parent.glob(".*.tmp"))
    bar = tmp_path / "bars.png"
    bar_chart(bar, {"a": {"x": 1.0, "y": 2.0}, "b": {"x": 3.0}}, ylabel="%", title="t")
    assert bar.read_bytes()[:4] == b"\x89PNG"
