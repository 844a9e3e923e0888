"""The Ray engine's plans equal the single-process front's, query by query (local 2-CPU cluster)."""
from __future__ import annotations

import numpy as np
import pytest

from optllm.errors import OptLLMError
from optllm.optimize.front import pareto_front


def _case(kind: str, n: int, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.random((n, m)), rng.random((n, m)) * rng.uniform(0.1, 10, m)
    if kind == "ties":  # equal costs and equal p within and across queries: many equal slopes
        return rng.integers(0, 4, (n, m)) / 4.0, rng.integers(1, 4, (n, m)).astype(float)
    if kind == "dominated":  # every other model a costlier, worse copy; one model free
        p, c = rng.random((n, m)), rng.random((n, m))
        p[:, 1::2], c[:, 1::2] = p[:, 0::2][:, : m // 2] * 0.9, c[:, 0::2][:, : m // 2] + 0.5
        c[:, 0] = 0.0
        return p, c
    if kind == "truth":  # 0/1 labels, one price per model (like a labelled dataset)
        prices = rng.integers(1, 1024, m) / 1024.0  # dyadic: every sum is exact
        return (rng.random((n, m)) < rng.uniform(0.2, 0.9, m)).astype(float), np.tile(prices, (n, 1))
    raise ValueError(kind)


EXACT = ("ties", "truth")  # sums of dyadic costs are exact: budgets on the breakpoints too


def _budgets(f, kind: str) -> list[float]:
    """Budgets between breakpoints; on them only where float sums are exact (elsewhere the
    single-process running sum's own rounding decides a budget equal to a breakpoint)."""
    lo, hi = float(f.costs[0]), float(f.costs[-1])
    mid = [lo + (hi - lo) * x for x in (0.001, 0.1, 0.37, 0.5, 0.8, 0.999)]
    pts = ([float(f.costs[k]) for k in np.linspace(1, len(f) - 2, 4).astype(int)]
           if len(f) > 3 and kind in EXACT else [])
    return [lo, *mid, *pts, hi, hi * 2 + 1]


def _targets(f) -> list[float]:
    lo, hi = float(f.accuracies[0]), float(f.accuracies[-1])
    return [lo - 0.1, lo, *(lo + (hi - lo) * x for x in (0.0001, 0.2, 0.5, 0.77, 0.99)), hi]


def _same(a, b) -> None:
    np.testing.assert_array_equal(a.models, b.models)
    assert a.cost == pytest.approx(b.cost, rel=1e-9, abs=1e-9)
    assert a.accuracy == pytest.approx(b.accuracy, rel=1e-9, abs=1e-12)
    for x, y in ((a.upper_bound, b.upper_bound), (a.cost_lower_bound, b.cost_lower_bound)):
        assert (np.isnan(x) and np.isnan(y)) or x == pytest.approx(y, rel=1e-9, abs=1e-9)
    assert a.info["point"] == b.info["point"]


@pytest.mark.parametrize("kind,m", [("random", 6), ("ties", 5), ("dominated", 6), ("truth", 7)])
@pytest.mark.parametrize("shards,cap", [(1, 1 << 16), (2, 7), (5, 40)])
def test_same_plans_as_single_process(cluster, kind, m, shards, cap):
    from optllm.engine.ray_engine import RayFront

    p, c = _case(kind, 1000, m, seed=hash((kind, shards)) % 1000)
    f = pareto_front(p, c)
    with RayFront(p, c, shards=shards, gather_cap=cap) as rf:
        assert rf.n_moves == f.n_moves and rf.S == shards
        for B in _budgets(f, kind):
            _same(rf.at_budget(B), f.at_budget(B))
        for A in _targets(f):
            _same(rf.at_accuracy(A), f.at_accuracy(A))
        with pytest.raises(OptLLMError, match="below the cheapest"):
            rf.at_budget(float(f.costs[0]) * 0.5 - 1)
        with pytest.raises(OptLLMError, match="above the best reachable"):
            rf.at_accuracy(float(f.accuracies[-1]) + 0.01)
        if cap < 100:  # the bisection really ran and only a bracket came back
            r = rf.at_budget(_budgets(f, kind)[4])
            assert r.info["rounds"] > 0 and r.info["gathered"] < f.n_moves
            assert r.info["gathered"] <= cap or kind in EXACT  # a block of equal slopes comes whole


@pytest.mark.parametrize("kind", ["random", "ties"])
def test_bisection_to_one_move_or_one_tie_block(cluster, kind):
    from optllm.engine.ray_engine import RayFront

    p, c = _case(kind, 800, 5, seed=11)
    f = pareto_front(p, c)
    with RayFront(p, c, shards=3, gather_cap=1) as rf:
        for B in _budgets(f, kind)[1:8:2]:
            r = rf.at_budget(B)
            _same(r, f.at_budget(B))
            if r.info["point"] < f.n_moves:
                assert r.info["gathered"] >= 1 and (r.info["gathered"] == 1 or kind == "ties")
        for A in _targets(f)[2:6]:
            _same(rf.at_accuracy(A), f.at_accuracy(A))


def test_parquet_in_and_out(cluster, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from optllm.engine.ray_engine import RayFront

    p, c = _case("random", 2000, 4, seed=3)
    names = ("a", "b", "c", "d")
    d = tmp_path / "ds"
    d.mkdir()
    for i, (s, e) in enumerate([(0, 700), (700, 1300), (1300, 2000)]):
        cols = {**{f"p_{k}": p[s:e, j] for j, k in enumerate(names)}, **{f"cost_{k}": c[s:e, j] for j, k in enumerate(names)}}
        pq.write_table(pa.table(cols), d / f"shard-{i}.parquet")
    f = pareto_front(p, c, models=names)
    B = float(f.costs[0] + 0.4 * (f.costs[-1] - f.costs[0]))
    out = tmp_path / "plan"
    with RayFront(parquet=d, gather_cap=3) as rf:
        assert rf.models == names and rf.S == 3
        _same(rf.at_budget(B), f.at_budget(B))
        r = rf.at_budget(B, out=out)
        assert r.models.size == 0
    got = pq.read_table(out).to_pandas().sort_values("query")
    np.testing.assert_array_equal(got["query"].to_numpy(), np.arange(2000))
    np.testing.assert_array_equal(got["model"].to_numpy(), f.at_budget(B).models)
    assert list(got["model_name"].astype(str)[:3]) == [names[k] for k in f.at_budget(B).models[:3]]
    assert sorted(x.name for x in out.iterdir()) == [f"part-{i:05d}.parquet" for i in range(3)]


def test_bad_input_is_one_line(cluster, tmp_path):
    from optllm.engine.ray_engine import RayFront, scan_parquet

    p, c = _case("random", 50, 3, seed=1)
    c[7, 1] = -1.0
    with pytest.raises(OptLLMError, match="negative"):
        RayFront(p, c, shards=2)
    with pytest.raises(OptLLMError, match="same shape"):
        RayFront(p, c[:, :2])
    with pytest.raises(OptLLMError, match="no Parquet files"):
        scan_parquet(tmp_path)


def test_cli_front_engine_ray(cluster, tmp_path):
    import json

    from typer.testing import CliRunner

    from optllm.cli import app

    from optllm.data import load

    d = load("demo")
    fd = pareto_front(d.correct, d.cost, models=d.models)
    B = float(fd.costs[0] + 0.3 * (fd.costs[-1] - fd.costs[0]))
    runner = CliRunner()
    r = runner.invoke(app, ["front", "demo", "--truth", "--engine", "ray", "--budget", repr(B),
                            "--plan-out", str(tmp_path / "plan"), "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["points"] == len(fd) and s["plan"]["point"] == fd.at_budget(B).info["point"]
    import pyarrow.parquet as pq

    got = pq.read_table(tmp_path / "plan").to_pandas().sort_values("query")
    np.testing.assert_array_equal(got["model"].to_numpy(), fd.at_budget(B).models)
    r = runner.invoke(app, ["front", "demo", "--truth", "--engine", "ray", "--out", str(tmp_path / "x.csv")])
    assert r.exit_code == 2 and "not with --engine ray" in r.output
