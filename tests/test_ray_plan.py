"""`optllm plan --engine ray` gives the local plan, query by query (bundled overruling prompts,
a local 2-CPU Ray cluster), through the CLI and the API; bad options exit 2 with one line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from optllm.cli import app
from optllm.errors import OptLLMError


ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "models.yaml"
runner = CliRunner()
N, EVERY = 2160, 12  # every prompt of the bundled demo, every 12th labelled (180)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from optllm.data import load

    d = tmp_path_factory.mktemp("ws")
    data = load("demo").subset(np.arange(N))
    pd.DataFrame({"id": [f"case-{i}" for i in data.query_ids], "prompt": data.texts}).to_json(
        d / "prompts.jsonl", orient="records", lines=True)
    lab = np.arange(0, N, EVERY)
    rows = [{"query_id": f"case-{data.query_ids[i]}", "model": mdl, "correct": data.correct[i, k],
             "cost": data.cost[i, k]} for i in lab for k, mdl in enumerate(data.models)]
    pd.DataFrame(rows).to_csv(d / "labels.csv", index=False)
    return d


def _args(ws: Path, out: Path, *goal: str) -> list[str]:
    return ["plan", str(ws / "prompts.jsonl"), "--models", str(EXAMPLE), "--labels", str(ws / "labels.csv"),
            "--predictor", "knn", "--seed", "3", "--out", str(out), *goal]


def _ray_plan(out: Path) -> dict[str, str]:
    from optllm.engine.ray_plan import read_plan_shards

    ids = pd.read_parquet(out / "ids.parquet").sort_values("query")["id"].tolist()
    summary = json.loads((out / "summary.json").read_text())
    names = summary["models"]
    return {i: names[k] for i, k in zip(ids, read_plan_shards(out))}


GOALS = [("--budget", "0.3"), ("--budget", "1.0", "--no-safe"), ("--budget", "4"),
         ("--target-accuracy", "0.7", "--confidence", "0.8"), ("--target-accuracy", "0.93"), ("--budget", "0.05")]


@pytest.mark.parametrize("goal", GOALS, ids=lambda g: " ".join(g))
def test_cli_ray_equals_local(cluster, ws, tmp_path, goal):
    lo, ro = tmp_path / "local", tmp_path / "ray"
    r1 = runner.invoke(app, _args(ws, lo, *goal, "--json"))
    r2 = runner.invoke(app, _args(ws, ro, *goal, "--engine", "ray", "--batch-rows", "500", "--json"))
    assert r2.exit_code == r1.exit_code, (r1.output, r2.output)
    if r1.exit_code == 2:  # the same one-line error (a budget below the cheapest plan)
        err = [x for x in r2.output.splitlines() if x.startswith("error:")]  # (ray's own log lines aside)
        assert err == r1.output.strip().splitlines() and len(err) == 1
        assert not ro.exists()
        return
    s1, s2 = json.loads((lo / "summary.json").read_text()), json.loads((ro / "summary.json").read_text())
    assert s2["selection"] == s1["selection"]
    assert s2["prediction_shards"] == -(-s1["n_to_plan"] // 500)
    if r1.exit_code == 1:
        assert not list(ro.glob("part-*.parquet"))
        return
    local = pd.read_csv(lo / "plan.csv", dtype=str)
    assert _ray_plan(ro) == dict(zip(local["id"], local["model"]))


def test_api_ray_equals_local(cluster, ws, tmp_path):
    from optllm.cost import load_catalogue
    from optllm.data import load_long
    from optllm.engine.ray_plan import ray_build_plan
    from optllm.planning import PlanSettings, build_plan, read_prompts
    from optllm.selection import Goal

    ids, texts = read_prompts(ws / "prompts.jsonl")
    lab = load_long(ws / "labels.csv", require_cost=False, binary=True)
    cat = load_catalogue(EXAMPLE)
    st = PlanSettings(predictor="knn", seed=1)
    for goal in (Goal(budget=0.2), Goal(target_accuracy=0.55, confidence=0.8), Goal()):
        loc = build_plan(ids, texts, cat, lab, goal, st)
        res = ray_build_plan(ids, texts, cat, lab, goal, st, tmp_path / "r", batch_rows=700)
        np.testing.assert_array_equal(res.ids, loc.ids)
        assert res.selection.as_dict() == loc.selection.as_dict()
        if loc.choice is None:
            assert res.choice is None
        else:
            np.testing.assert_array_equal(res.choice, loc.choice)
        assert res.info  # the plan came from RayFront (or, off the front, from the driver)


def test_bad_options_exit_2_one_line(ws, tmp_path):
    for extra, msg in ((["--engine", "spark"], "--engine must be local or ray"),
                       (["--address", "x:1"], "--address and --batch-rows are for --engine ray"),
                       (["--engine", "ray", "--batch-rows", "0"], "--batch-rows must be"),
                       (["--engine", "ray", "--label-budget", "1"], "--label-budget is not available")):
        r = runner.invoke(app, _args(ws, tmp_path / "o", "--budget", "0.3", *extra))
        assert r.exit_code == 2, (extra, r.output)
        lines = [x for x in r.output.splitlines() if x.strip()]
        assert len(lines) == 1 and msg in lines[0], r.output
        assert not (tmp_path / "o").exists()


def test_without_ray_exit_2_with_hint(ws, tmp_path, monkeypatch):
    import optllm.engine as eng

    monkeypatch.setattr(eng, "ray_available", lambda: False)
    r = runner.invoke(app, _args(ws, tmp_path / "o", "--budget", "0.3", "--engine", "ray"))
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [f"error: {eng.RAY_HINT}"]


def test_api_refuses_alpha(cluster, ws, tmp_path):
    from optllm.engine.ray_plan import ray_build_plan
    from optllm.planning import PlanSettings
    from optllm.selection import Goal

    with pytest.raises(OptLLMError, match="alpha"):
        ray_build_plan([], [], None, None, Goal(budget=1.0), PlanSettings(alpha=0.5), tmp_path / "o")
