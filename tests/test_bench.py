"""`optllm bench` on a small synthetic set: every method runs, figures are sane, the report is written."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from optllm.cli import app
from optllm.evaluate.bench import BenchConfig, aggregate, run_bench
from optllm.evaluate.report import write_report

runner = CliRunner()


@pytest.fixture(scope="module")
def results():
    cfg = BenchConfig(reps=2, methods=("zero", "optllm", "threshold", "knn", "ours", "moea:nsga2"),
                      generations=2, moea_reps=1, paper_bootstraps=3, folds=3)
    return run_bench(["synthetic:1500x4"], cfg)


@pytest.mark.slow
def test_every_method_has_figures(results) -> None:
    d = results["datasets"]["synthetic:1500x4"]
    assert set(d["methods"]) == {"oracle", "zero", "optllm", "threshold", "knn", "ours", "moea:nsga2"}
    oracle = d["methods"]["oracle"]
    for name, f in d["methods"].items():
        # nothing beats the oracle's true front (hindsight ceiling)
        assert f["best_true_accuracy"]["mean"] <= oracle["best_true_accuracy"]["mean"] + 1e-12, name
        assert f["reached_best"]["of"] == (1 if name.startswith("moea") else 2)
    assert oracle["reached_best"]["count"] == 2 and oracle["saving_at_best"]["mean"] > 0
    assert d["methods"]["moea:nsga2"]["points"]["of"] == 1
    assert d["labelling_cost"]["mean"] > 0
    honest = d["honest"]
    assert honest["ours_at_best_cost"]["of"] == 2
    assert {"ours_target_confidence_100", "ours_target_mean_99"} <= set(honest)
    # the budget that matters where the saving at the best accuracy is ~0: half its cost
    half = honest["ours_at_half_best_cost"]
    assert half["of"] == 2 and half["cost"]["mean"] <= 0.5 * d["singles"][d["best_model"]]["cost"]["mean"] + 1e-6
    ours = d["methods"]["ours"]["acc_at_half_best_cost_hindsight"]["mean"]
    assert ours <= d["methods"]["oracle"]["acc_at_half_best_cost_hindsight"]["mean"] + 1e-12


def test_report_files(results, tmp_path) -> None:
    paths = write_report(results, tmp_path, command="optllm bench synthetic:1500x4")
    text = open(paths["report"]).read()
    assert "Hindsight" in text and "Honest" in text and "optllm bench synthetic:1500x4" in text
    data = json.loads(open(paths["results"]).read())
    assert data["datasets"]["synthetic:1500x4"]["methods"]["ours"]["aiq"]["mean"] is not None
    for p in (paths["savings"], paths["fronts:synthetic:1500x4"]):
        assert open(p, "rb").read(4) == b"\x89PNG"


def test_aggregate_keeps_undefined_apart() -> None:
    a = aggregate([0.5, None, 0.7])
    assert a["defined"] == 2 and a["of"] == 3 and a["mean"] == pytest.approx(0.6)
    assert aggregate([None, None])["mean"] is None


@pytest.mark.slow
def test_cli_bench_quick_json(tmp_path) -> None:
    r = runner.invoke(app, ["bench", "synthetic:800x3", "--quick", "--methods", "zero,ours,threshold",
                            "--out", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)["datasets"]["synthetic:800x3"]
    assert d["methods"]["ours"]["reached_best"]["of"] == 2
    assert (tmp_path / "report.md").exists()
    bad = runner.invoke(app, ["bench", "synthetic:800x3", "--methods", "nope"])
    assert bad.exit_code == 2
    bad = runner.invoke(app, ["bench", "synthetic:800x3", "--bound", "hold"])
    assert bad.exit_code == 2 and "--bound must be one of labelled, ppi, holdout" in bad.output


@pytest.mark.slow
def test_cli_bench_bound_holdout(tmp_path) -> None:
    """`bench --bound holdout`: ours is fitted without the validation part and bounded on it;
    the config records the bound and the band and target figures are there."""
    r = runner.invoke(app, ["bench", "synthetic:1500x3", "--quick", "--methods", "zero,ours", "--train-frac", "0.1",
                            "--val-frac", "0.1", "--bound", "holdout", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["config"]["bound"] == "holdout"
    d = out["datasets"]["synthetic:1500x3"]
    assert d["methods"]["ours"]["reached_best"]["of"] == 2
    assert d["honest"]["ours_bound_coverage"]["of"] == 2


@pytest.mark.slow
def test_quick_bench_on_overruling(require_data, tmp_path) -> None:
    """The CI variant of `make bench`: OptLLM as published vs ours on the real data."""
    require_data("overruling/overruling.csv")
    r = runner.invoke(app, ["bench", "overruling", "--quick", "--methods", "zero,optllm,ours,moea:nsga2",
                            "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    d = json.loads((tmp_path / "results.json").read_text())["datasets"]["overruling"]
    assert d["best_model"] == "gpt-4"
    ours, paper = d["methods"]["ours"], d["methods"]["optllm"]
    # the exact front on our predictions is never worse in front quality than the heuristic's
    assert ours["aiq"]["mean"] >= paper["aiq"]["mean"] - 0.02
    assert d["methods"]["oracle"]["saving_at_best"]["mean"] > 0.9
