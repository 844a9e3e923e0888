"""`optllm front` and `optllm bench-speed` end to end on the bundled demo data."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from optllm.cli import app
from optllm.optimize import pareto_front

runner = CliRunner()


def test_front_truth_json(demo) -> None:
    r = runner.invoke(app, ["front", "demo", "--truth", "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    f = pareto_front(demo.correct, demo.cost)
    assert s["points"] == len(f) and s["n_queries"] == demo.n and s["n_models"] == demo.m
    assert s["cheapest"]["cost"] == pytest.approx(f.costs[0])
    assert s["most_accurate"]["accuracy"] == pytest.approx(f.accuracies[-1])
    bm = s["best_model"]
    assert bm["name"] == "gpt-4"
    ab, ac = s["at_best_accuracy"], s["at_best_cost"]
    assert ab["accuracy"] >= bm["accuracy"] - 1e-12 and ab["cost"] < bm["cost"]
    assert ab["saving"] == pytest.approx(1 - ab["cost"] / bm["cost"]) and 0 < ab["saving"] < 1
    assert ab["cost_lower_bound"] <= ab["cost"]
    assert ac["accuracy"] >= bm["accuracy"] and ac["cost"] <= bm["cost"]
    assert set(s["single_models"]) == set(demo.models)


def test_front_table_csv_and_plot(tmp_path) -> None:
    csv, png = tmp_path / "front.csv", tmp_path / "front.png"
    r = runner.invoke(app, ["front", "demo", "--truth", "--out", str(csv), "--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert "saving" in r.stdout and "gpt-4" in r.stdout and "most accurate" in r.stdout
    df = pd.read_csv(csv)
    assert list(df.columns[:3]) == ["point", "cost", "accuracy"]
    assert df["point"].iloc[0] == 0 and np.all(np.diff(df["cost"]) > 0)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r2 = runner.invoke(app, ["front", "demo", "--truth", "--out", str(csv), "--max-points", "20", "--json"])
    assert r2.exit_code == 0 and len(pd.read_csv(csv)) <= 20


@pytest.mark.parametrize("args,needle", [
    (["front", "demo"], "optllm run"),
    (["front", "/no/such/file.csv", "--truth"], "not found"),
    (["front", "demo", "--truth", "--max-points", "-1"], "--max-points"),
    (["bench-speed", "--sizes", "12by3"], "cannot read"),
    (["bench-speed", "--repeat", "0"], "--repeat"),
])
def test_errors_exit_2_one_line(args: list[str], needle: str) -> None:
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    err = r.stderr if r.stderr else r.output
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_bench_speed_small(tmp_path) -> None:
    out = tmp_path / "speed.json"
    r = runner.invoke(app, ["bench-speed", "--sizes", "2e3x6,1000x3", "--repeat", "1", "--json-out", str(out)])
    assert r.exit_code == 0, r.output
    rows = json.loads(out.read_text())["rows"]
    assert [(x["n"], x["m"]) for x in rows] == [(2000, 6), (1000, 3)]
    for x in rows:
        assert x["argsort_s"] > 0 and x["front_s"] > 0 and x["ratio"] == pytest.approx(x["front_s"] / x["argsort_s"])
        assert x["points"] == x["moves"] + 1 and x["peak_extra_mb"] > 0
    assert "ratio" in r.stdout


def test_bench_speed_json_flag_and_sizes_without_m() -> None:
    """The README's `--sizes 10000,100000,1000000`: n alone means 12 models; `--json` is a flag
    that prints JSON only on stdout, as on every other command."""
    r = runner.invoke(app, ["bench-speed", "--sizes", "1000,2e3x3", "--repeat", "1", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)["rows"]
    assert [(x["n"], x["m"]) for x in rows] == [(1000, 12), (2000, 3)]
