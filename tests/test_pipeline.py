"""`optllm run` end to end: outputs, honest selection, clear errors."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from optllm.cli import app
from optllm.data import load, synthetic
from optllm.errors import OptLLMError
from optllm.evaluate.pipeline import RunConfig, run_pipeline, write_run

runner = CliRunner()


@pytest.fixture(scope="module")
def small():
    return synthetic(3000, 5, seed=3, texts=True)


def test_run_budget_writes_all_outputs(tmp_path, small) -> None:
    budget = float(small.model_total_cost().max()) * 0.3
    res = run_pipeline(small, RunConfig(budget=budget, folds=5, predictor="base_rate"))
    assert res.plan.cost <= budget + 1e-9
    sel = res.selection
    assert sel["lower"] <= sel["estimated_accuracy"] <= sel["upper"]
    assert 0 <= sel["realised_accuracy"] <= 1
    paths = write_run(res, str(tmp_path / "out"))
    front = pd.read_csv(paths["front"])
    assert {"cost", "predicted_accuracy", "lower_bound", "true_accuracy"} <= set(front.columns)
    assert (np.diff(front["cost"]) >= -1e-9).all()
    plan = pd.read_csv(paths["plan"])
    assert len(plan) == res.data.n and set(plan["model"]) <= set(small.models)
    assert plan["expected_cost"].sum() == pytest.approx(res.plan.cost)
    summary = json.loads(open(paths["summary"]).read())
    assert summary["n_labelled"] == 60 and summary["labelling_cost"] > 0
    assert open(paths["plot"], "rb").read(4) == b"\x89PNG"
    assert not list((tmp_path / "out").glob(".*tmp"))


def test_target_not_reachable_says_how_many_labels(small) -> None:
    res = run_pipeline(small, RunConfig(target_accuracy=0.999, folds=5, predictor="base_rate"))
    assert res.selection["reachable"] is False
    assert "no plan reaches" in res.selection["message"]


def test_target_reachable_meets_lower_bound(small) -> None:
    res = run_pipeline(small, RunConfig(target_accuracy=0.5, folds=5, predictor="base_rate", train_frac=0.05))
    sel = res.selection
    assert sel["reachable"] and sel["lower"] >= 0.5


def test_labelling_cost_counted(small) -> None:
    a = run_pipeline(small, RunConfig(folds=0, predictor="base_rate"))
    b = run_pipeline(small, RunConfig(folds=0, predictor="base_rate", count_labelling_cost=True))
    assert b.selection["cost"] == pytest.approx(a.selection["cost"] + a.labelling_cost)


def test_budget_below_cheapest_is_clear(small) -> None:
    with pytest.raises(OptLLMError, match="below the cheapest plan"):
        run_pipeline(small, RunConfig(budget=1e-9, folds=0, predictor="base_rate"))


def test_cli_run_demo(tmp_path) -> None:
    r = runner.invoke(app, ["run", "demo", "--budget", "5", "--folds", "5", "--out", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["selection"]["cost"] <= 5 + 1e-9 and s["dataset"] == "overruling"
    assert (tmp_path / "plan.csv").exists() and (tmp_path / "front.png").exists()


def test_cli_run_bad_options() -> None:
    r = runner.invoke(app, ["run", "demo", "--budget", "1", "--target-accuracy", "0.9"])
    assert r.exit_code != 0


def test_cli_demo_runs_budget_and_target(tmp_path) -> None:
    """`make demo`: both plans are written and the saving line is printed for each."""
    r = runner.invoke(app, ["demo", "--out", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    for sub in ("d", "d/target"):
        s = json.loads((tmp_path / sub / "summary.json").read_text())
        assert s["selection"]["realised_accuracy"] > 0 and (tmp_path / sub / "plan.csv").exists()
    assert r.output.count("less than") == 2


def test_reference_model_prefers_the_pricier_of_models_the_sample_cannot_separate() -> None:
    from optllm.evaluate.pipeline import _reference_model
    from optllm.evaluate.uncertainty import HeldOut

    n = 44
    y = np.ones((n, 3))
    y[:2, 1] = 0.0  # model 1 (pricier) wrong on 2 queries the lead gets right: McNemar p = 0.25
    y[:12, 2] = 0.0  # model 2 (priciest) wrong on 12: clearly behind
    held = HeldOut(np.full((n, 3), 0.9), y, np.ones((n, 3)))
    p = np.full((500, 3), 0.9)
    totals = np.array([5.0, 10.0, 20.0])
    assert _reference_model(np.arange(3), totals, p, held, 0.9) == 1
    assert _reference_model(np.array([0, 2]), totals, p, held, 0.9) == 0


def test_cli_run_no_safe_takes_the_most_accurate_predicted_plan(tmp_path) -> None:
    r = runner.invoke(app, ["run", "demo", "--budget", "4.73", "--no-safe", "--json"])
    assert r.exit_code == 0, r.output
    sel = json.loads(r.output)["selection"]
    assert sel["rule"] == "most accurate plan within the budget" and "reference_model" not in sel
    assert 4.0 < sel["cost"] <= 4.73 + 1e-9
