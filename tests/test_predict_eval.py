"""`optllm predict-eval` end to end, and the end-to-end figures on the exact front."""
from __future__ import annotations

import json
import numpy as np
import pytest
from typer.testing import CliRunner

from optllm.cli import app
from optllm.data import synthetic
from optllm.evaluate.predictors import end_to_end, evaluate_predictors


def test_oracle_end_to_end_reaches_best_model_cheaper():
    d = synthetic(n=300, m=5, seed=2)
    e = end_to_end(d.correct.copy(), d)
    assert e["reached"] and e["saving"] > 0.3
    assert e["acc_at_best_cost"] >= e["best_accuracy"]


def test_unreached_saving_is_undefined_not_zero():
    d = synthetic(n=200, m=4, seed=3)
    e = end_to_end(1.0 - d.correct, d)  # perfectly wrong predictions
    assert not e["reached"] and np.isnan(e["saving"])


def test_evaluate_predictors_summary():
    d = synthetic(n=400, m=4, seed=0, texts=True)
    res = evaluate_predictors(d, ["base", "knn"], 0.05, 0.05, reps=2)
    s = res["summary"]
    assert set(s) == {"base", "knn", "oracle"}
    assert s["oracle"]["brier"]["mean"] == 0.0 and s["oracle"]["reached"] == 2
    assert len(res["splits"]) == 6
    for row in s.values():
        assert {"brier", "log_loss", "auc", "ece", "fit_s", "saving", "acc_at_best_cost"} <= set(row)
    assert 0 <= s["base"]["reached"] <= 2


def test_cli_predict_eval_demo(monkeypatch, tmp_path):
    out = tmp_path / "pe.json"
    r = CliRunner().invoke(app, ["predict-eval", "demo", "--reps", "1", "--predictors", "base,knn",
                                 "--json-out", str(out)])
    assert r.exit_code == 0, r.output
    assert "Brier" in r.output and "knn" in r.output and "oracle" in r.output
    res = json.loads(out.read_text())
    assert res["summary"]["knn"]["splits"] == 1 and res["n_models"] == 12


def test_cli_predict_eval_json_stdout_and_errors(monkeypatch):
    r = CliRunner().invoke(app, ["predict-eval", "synthetic:300x3", "--reps", "1", "--predictors", "base",
                                 "--train-frac", "20", "--val-frac", "20", "--no-end-to-end", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["summary"]["base"]["brier"]["mean"] > 0 and "oracle" not in res["summary"]
    bad = CliRunner().invoke(app, ["predict-eval", "demo", "--reps", "1", "--predictors", "nope"])
    assert bad.exit_code == 2 and "unknown predictor" in bad.output


@pytest.mark.parametrize("reps", [0])
def test_evaluate_rejects_zero_reps(reps):
    from optllm.errors import OptLLMError

    with pytest.raises(OptLLMError):
        evaluate_predictors(synthetic(n=50, m=2), ["base"], reps=reps)


def test_paired_comparison_with_the_paper_predictor():
    from optllm.evaluate.predictors import summarise

    def rec(name, split, reached, saving, fit):
        return {"predictor": name, "split": split, "reached": reached, "saving": saving, "fit_s": fit}

    records = [rec("bootstrap_forest", 0, True, 0.30, 10.0), rec("bootstrap_forest", 1, False, float("nan"), 10.0),
               rec("bootstrap_forest", 2, True, 0.20, 10.0),
               rec("selector", 0, True, 0.40, 0.5), rec("selector", 1, True, 0.90, 0.5),
               rec("selector", 2, True, 0.10, 0.5)]
    v = summarise(records, ["bootstrap_forest", "selector"])["selector"]["vs_bootstrap_forest"]
    # split 1 is left out (the paper's predictor never reached it): 0.25 vs 0.25 on splits 0 and 2
    assert v["both_reached"] == 2 and v["of"] == 3 and v["wins"] == 1
    assert v["saving"] == pytest.approx(0.25) and v["saving_bootstrap_forest"] == pytest.approx(0.25)
    assert v["fit_ratio"] == pytest.approx(20.0)
    # over all splits, 0 where a front never reached the best model: (0.4+0.9+0.1)/3 vs 0.5/3
    assert v["saving_all"] == pytest.approx(1.4 / 3) and v["saving_all_bootstrap_forest"] == pytest.approx(0.5 / 3)
    assert (v["wins_all"], v["losses_all"]) == (2, 1)
    row = summarise(records, ["bootstrap_forest", "selector"])["bootstrap_forest"]
    assert row["saving_all"]["mean"] == pytest.approx(0.5 / 3) and row["saving"]["mean"] == pytest.approx(0.25)
