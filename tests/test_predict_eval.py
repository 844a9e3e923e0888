"""`optllm predict-eval` end to end, and the end-to-end figures on a tiny exact front.

`_TinyFront` below is a temporary stand-in for `optllm.optimize.pareto_front` (the supported
exact front by the hull walk) so these tests do not depend on the optimiser's module.
"""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from optllm.cli import app
from optllm.data import synthetic
from optllm.predict.evaluation import end_to_end, evaluate_predictors, true_along


def _hull(c: np.ndarray, p: np.ndarray) -> list[int]:
    pts: list[int] = []
    for k in np.lexsort((-p, c)):
        if pts and p[k] <= p[pts[-1]]:
            continue
        while len(pts) >= 2:
            a, b = pts[-2], pts[-1]
            if (p[b] - p[a]) * (c[k] - c[a]) <= (p[k] - p[a]) * (c[b] - c[a]):
                pts.pop()
            else:
                break
        pts.append(int(k))
    return pts


class _TinyFront:
    def __init__(self, p: np.ndarray, cost: np.ndarray, models=None, moves: bool = True) -> None:
        n = p.shape[0]
        self.start = np.empty(n, dtype=int)
        steps = []
        for i in range(n):
            h = _hull(cost[i], p[i])
            self.start[i] = h[0]
            for a, b in zip(h[:-1], h[1:]):
                dc, dp = cost[i, b] - cost[i, a], p[i, b] - p[i, a]
                steps.append((-(dp / dc) if dc > 0 else -np.inf, i, a, b, dc, dp))
        steps.sort(key=lambda s: s[0])
        q = np.array([s[1] for s in steps], dtype=int)
        fr = np.array([s[2] for s in steps], dtype=int)
        to = np.array([s[3] for s in steps], dtype=int)
        rows = np.arange(n)
        self.costs = np.r_[cost[rows, self.start].sum(), cost[rows, self.start].sum() + np.cumsum([s[4] for s in steps])]
        self.accuracies = np.r_[p[rows, self.start].sum(), p[rows, self.start].sum() + np.cumsum([s[5] for s in steps])] / n
        if moves:
            self.move_query, self.move_from, self.move_to = q, fr, to
        self._q, self._to = q, to

    def __len__(self) -> int:
        return len(self.costs)

    def assignment(self, k: int) -> np.ndarray:
        a = self.start.copy()
        for q, t in zip(self._q[:k], self._to[:k]):
            a[q] = t
        return a

    def at_budget(self, budget: float):
        k = max(int(np.searchsorted(self.costs, budget + 1e-12, side="right")) - 1, 0)
        return SimpleNamespace(models=self.assignment(k), cost=self.costs[k], accuracy=self.accuracies[k])


def tiny_front(p, cost, models=None):
    return _TinyFront(np.asarray(p, float), np.asarray(cost, float), models)


def test_true_along_moves_equals_explicit_assignments():
    d = synthetic(n=60, m=4, seed=1)
    p = np.random.default_rng(0).random((60, 4))
    with_moves = _TinyFront(p, d.cost)
    without = _TinyFront(p, d.cost, moves=False)
    idx, acc = true_along(with_moves, d.correct)
    assert idx.size == len(with_moves)
    explicit = [d.correct[np.arange(60), with_moves.assignment(k)].mean() for k in idx]
    assert np.allclose(acc, explicit)
    idx2, acc2 = true_along(without, d.correct, thin=10)
    assert idx2.size <= 11 and np.allclose(acc2, acc[idx2])


def test_oracle_end_to_end_reaches_best_model_cheaper():
    d = synthetic(n=300, m=5, seed=2)
    e = end_to_end(d.correct.copy(), d, tiny_front)
    assert e["reached"] and e["saving"] > 0.3
    assert e["acc_at_best_cost"] >= e["best_accuracy"]


def test_unreached_saving_is_undefined_not_zero():
    d = synthetic(n=200, m=4, seed=3)
    e = end_to_end(1.0 - d.correct, d, tiny_front)  # perfectly wrong predictions
    assert not e["reached"] and np.isnan(e["saving"])


def test_evaluate_predictors_summary():
    d = synthetic(n=400, m=4, seed=0, texts=True)
    res = evaluate_predictors(d, ["base", "knn"], 0.05, 0.05, reps=2, pareto_front=tiny_front)
    s = res["summary"]
    assert set(s) == {"base", "knn", "oracle"}
    assert s["oracle"]["brier"]["mean"] == 0.0 and s["oracle"]["reached"] == 2
    assert len(res["splits"]) == 6
    for row in s.values():
        assert {"brier", "log_loss", "auc", "ece", "fit_s", "saving", "acc_at_best_cost"} <= set(row)
    assert 0 <= s["base"]["reached"] <= 2


def test_cli_predict_eval_demo(monkeypatch, tmp_path):
    import optllm.predict.evaluation as ev

    monkeypatch.setattr(ev, "_optimiser", lambda: tiny_front)
    out = tmp_path / "pe.json"
    r = CliRunner().invoke(app, ["predict-eval", "demo", "--reps", "1", "--predictors", "base,knn",
                                 "--json-out", str(out)])
    assert r.exit_code == 0, r.output
    assert "Brier" in r.output and "knn" in r.output and "oracle" in r.output
    res = json.loads(out.read_text())
    assert res["summary"]["knn"]["splits"] == 1 and res["n_models"] == 12


def test_cli_predict_eval_json_stdout_and_errors(monkeypatch):
    import optllm.predict.evaluation as ev

    monkeypatch.setattr(ev, "_optimiser", lambda: None)  # optimiser missing: scores only
    r = CliRunner().invoke(app, ["predict-eval", "synthetic:300x3", "--reps", "1", "--predictors", "base",
                                 "--train-frac", "20", "--val-frac", "20", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["summary"]["base"]["brier"]["mean"] > 0 and "note" in res
    bad = CliRunner().invoke(app, ["predict-eval", "demo", "--reps", "1", "--predictors", "nope"])
    assert bad.exit_code == 2 and "unknown predictor" in bad.output


@pytest.mark.parametrize("reps", [0])
def test_evaluate_rejects_zero_reps(reps):
    from optllm.errors import OptLLMError

    with pytest.raises(OptLLMError):
        evaluate_predictors(synthetic(n=50, m=2), ["base"], reps=reps)
