"""`optllm compare-optimizers`: JSON shape, the exact front dominates every method on the
same predictions, table output, one-line errors. Small synthetic data, few generations."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from optllm.cli import app
from optllm.evaluate.compare import expand_methods, noisy_predictions
from optllm.optimize.moea import pygmo_available

runner = CliRunner()
SMALL = ["synthetic:120x5", "--reps", "2", "--generations", "2", "--gn", "3,8"]


def test_json_every_method_dominated_by_exact():
    r = runner.invoke(app, ["compare-optimizers", *SMALL, "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    methods = d["methods"]
    want = {"exact", "optllm-m:3", "optllm-m:8", "nsga2", "rnsga2", "smsemoa"}
    if pygmo_available():
        want |= {"moead", "moeadgen", "mopso"}
    assert set(methods) == want
    assert list(methods)[0] == "exact"
    for name, v in methods.items():
        assert len(v["per_rep"]) == 2
        m = v["mean"]
        assert m["dominated_by_exact"] == 2, name
        assert m["beyond_bound"] in (0, 0.0, None), name
        for k in ("igd", "igd_norm", "igd_plus_norm", "hv_norm", "delta_norm", "seconds", "points",
                  "best_true_accuracy"):
            assert m[k] is not None, (name, k)
    # the exact front on the predictions is closest to the true front (highest HV)
    assert methods["exact"]["mean"]["hv_norm"] >= max(v["mean"]["hv_norm"] for v in methods.values()) - 1e-9
    assert d["settings"]["generations"] == 2 and d["settings"]["noise"] == 0.3
    assert d["speed"]["exact_seconds"] > 0 and "speedup" in d["speed"]


def test_table_and_json_file(tmp_path):
    out = tmp_path / "cmp.json"
    r = runner.invoke(app, ["compare-optimizers", "synthetic:60x3", "--reps", "1", "--generations", "1",
                            "--gn", "4", "--methods", "exact,optllm-m,nsga2", "--json-out", str(out)])
    assert r.exit_code == 0, r.output
    assert "optllm-m:4" in r.stdout and "nsga2" in r.stdout and "dominated by exact" in r.stdout
    d = json.loads(out.read_text())
    assert set(d["methods"]) == {"exact", "optllm-m:4", "nsga2"}


@pytest.mark.parametrize("args, needle", [
    (["--noise", "1.5"], "--noise"),
    (["--methods", "exact,simplex"], "unknown method"),
    (["--gn", "ten"], "--gn"),
    (["--gn", "0"], "--gn"),
    (["--reps", "0"], "--reps"),
])
def test_bad_options_exit_2(args, needle):
    r = runner.invoke(app, ["compare-optimizers", "synthetic:20x3", "--generations", "1", *args])
    assert r.exit_code == 2
    assert needle in r.output


def test_noisy_predictions():
    correct = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert np.array_equal(noisy_predictions(correct, 0.0, 1), correct)
    p = noisy_predictions(correct, 0.3, 1)
    assert np.array_equal(p, noisy_predictions(correct, 0.3, 1))
    assert np.all(p[correct == 1] >= 0.7) and np.all(p[correct == 0] <= 0.3)


def test_expand_methods():
    assert expand_methods(["nsga2", "optllm-m"], (10, 50)) == ["exact", "nsga2", "optllm-m:10", "optllm-m:50"]
    assert expand_methods(["optllm-m:7", "exact"], (10,)) == ["exact", "optllm-m:7"]


def test_json_flag_and_json_out_together(tmp_path):
    out = tmp_path / "cmp.json"
    r = runner.invoke(app, ["compare-optimizers", "synthetic:60x3", "--reps", "1", "--generations", "1",
                            "--gn", "4", "--methods", "exact,optllm-m", "--json", "--json-out", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == json.loads(out.read_text())
