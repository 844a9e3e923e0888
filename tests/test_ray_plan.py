"""`optllm plan --engine ray` gives the local plan, query by query (bundled overruling prompts,
a local 2-CPU Ray cluster), through the CLI and the API; bad options exit 2 with one line."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from optllm.cli import app
from optllm.errors import OptLLMError


sys.path.insert(0, str(Path(__file__).resolve().parent))  # fake_openai, test_dispatch, test_dispatch_cli
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "models.yaml"
runner = CliRunner()
N, EVERY = 2160, 12  # every prompt of the bundled demo, every 12th labelled (180)


def _workspace(d: Path, n: int, every: int) -> Path:
    """prompts.jsonl (the first n demo prompts) and labels.csv (every `every`-th labelled)."""
    from optllm.data import load

    data = load("demo").subset(np.arange(n))
    pd.DataFrame({"id": [f"case-{i}" for i in data.query_ids], "prompt": data.texts}).to_json(
        d / "prompts.jsonl", orient="records", lines=True)
    lab = np.arange(0, n, every)
    rows = [{"query_id": f"case-{data.query_ids[i]}", "model": mdl, "correct": data.correct[i, k],
             "cost": data.cost[i, k]} for i in lab for k, mdl in enumerate(data.models)]
    pd.DataFrame(rows).to_csv(d / "labels.csv", index=False)
    return d


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _workspace(tmp_path_factory.mktemp("ws"), N, EVERY)


def _args(ws: Path, out: Path, *goal: str) -> list[str]:
    return ["plan", str(ws / "prompts.jsonl"), "--models", str(EXAMPLE), "--labels", str(ws / "labels.csv"),
            "--predictor", "knn", "--seed", "3", "--out", str(out), *goal]


def _ray_plan(out: Path) -> dict[str, str]:
    from optllm.planning.plan import read_plan_shards

    ids = pd.read_parquet(out / "ids.parquet").sort_values("query")["id"].tolist()
    return dict(zip(ids, read_plan_shards(out, len(ids))))


GOALS = [("--budget", "0.3"), ("--budget", "1.0", "--no-safe"), ("--budget", "4"),
         ("--target-accuracy", "0.7", "--confidence", "0.8"), ("--target-accuracy", "0.93"), ("--budget", "0.05"),
         ("--target-accuracy", "0.7", "--confidence", "0.8", "--bound", "holdout"), ("--budget", "1.0", "--bound", "holdout")]


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
                       (["--quantile", "0"], "--quantile must be in [0.5, 1), got 0.0"),
                       (["--engine", "ray", "--quantile", "1"], "--quantile must be in [0.5, 1), got 1.0"),
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


def _fake_catalogue(path: Path, url: str) -> Path:
    """examples/models.yaml with every endpoint on the fake server and no key."""
    import yaml

    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["defaults"].update(base_url=url, api_key_env=None, rpm=None, tpm=None)
    for m in doc["models"]:
        m.update(base_url=url, api_key_env=None)
        m.pop("rpm", None)
        m.pop("tpm", None)
    path.write_text(yaml.safe_dump(doc))
    return path


def test_ray_plan_folder_is_dispatched(cluster, tmp_path, monkeypatch):
    """A folder of `plan --engine ray` is what `dispatch` reads (either engine): the same
    queries, prompts, models and tiers as the local plan's folder; `dispatch --engine ray`
    answers every planned query once, on its planned model."""
    from fake_openai import FakeOpenAI
    from optllm.planning import read_plan
    from test_dispatch import answers

    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    ws = _workspace(tmp_path, 600, 6)  # 500 to plan and send
    lo, ro = tmp_path / "local", tmp_path / "ray"
    goal = ("--budget", "1.0", "--no-safe")
    assert runner.invoke(app, _args(ws, lo, *goal)).exit_code == 0
    r = runner.invoke(app, _args(ws, ro, *goal, "--engine", "ray", "--batch-rows", "700"))
    assert r.exit_code == 0, r.output
    loc, ray_items = read_plan(lo), read_plan(ro)
    assert sorted((i.id, i.prompt, i.model, i.tier) for i in ray_items) == sorted(
        (i.id, i.prompt, i.model, i.tier) for i in loc)
    assert all(i.fallbacks == () for i in ray_items)
    with FakeOpenAI(completion_tokens=3) as srv:
        models = _fake_catalogue(tmp_path / "models.yaml", srv.base_url)
        bad = runner.invoke(app, ["dispatch", str(ro), "--models", str(models), "--out", str(tmp_path / "x.jsonl"),
                                  "--fallback"])
        assert bad.exit_code == 2 and "lists no fallback models" in bad.output
        d = runner.invoke(app, ["dispatch", str(ro), "--models", str(models), "--out", str(tmp_path / "a.jsonl"),
                                "--engine", "ray", "--workers", "2", "--concurrency", "16", "--backoff", "0.01",
                                "--json"])
        assert d.exit_code == 0, d.output
        assert max(srv.served.values()) == 1 and sum(srv.requests.values()) == len(ray_items)
    rep = json.loads(d.output[d.output.index("{"):])
    assert rep["engine"] == "ray" and rep["answered"] == len(ray_items) and rep["workers"] == 2
    got = {a["id"]: a["model"] for a in answers(tmp_path / "a.jsonl")}
    assert got == {i.id: i.model for i in ray_items}


def test_dispatch_engine_options_exit_2(tmp_path):
    from test_dispatch_cli import catalogue_file, plan_folder

    plan = plan_folder(tmp_path / "p", 3)
    models = catalogue_file(tmp_path / "m.yaml", "http://127.0.0.1:9/v1")
    for extra, msg in ((["--engine", "spark"], "--engine must be local or ray"),
                       (["--workers", "2"], "--address and --workers are for --engine ray"),
                       (["--engine", "ray", "--workers", "0"], "--workers must be at least 1")):
        r = runner.invoke(app, ["dispatch", str(plan), "--models", str(models), "--out", str(tmp_path / "a.jsonl"),
                                *extra])
        assert r.exit_code == 2, (extra, r.output)
        lines = [x for x in r.output.splitlines() if x.strip()]
        assert len(lines) == 1 and msg in lines[0], r.output
        assert not (tmp_path / "a.jsonl").exists()


def test_the_shard_reader_checks_every_query_once(tmp_path):
    """One checked reader of a Ray plan folder's shards (no cluster needed): each planned query
    once, none missing, none outside ids.parquet; a broken shard is one line naming it."""
    from optllm.engine.ray_plan import _write_ids, _write_plan_shards
    from optllm.planning import read_plan
    from optllm.planning.plan import read_plan_shards

    names = ["a", "b", "c"]
    choice = np.array([2, 0, 1, 1, 0, 2, 2])
    d = tmp_path / "plan"
    d.mkdir()
    _write_ids(d / "ids.parquet", np.array([f"q{i}" for i in range(7)]), [f"prompt {i}" for i in range(7)])
    _write_plan_shards(d, choice, names, rows=3)  # three shards
    assert read_plan_shards(d, 7).tolist() == [names[k] for k in choice]
    assert [(i.id, i.model, i.fallbacks) for i in read_plan(d)] == [(f"q{i}", names[k], ()) for i, k in enumerate(choice)]
    with pytest.raises(OptLLMError, match="lists no fallback models"):
        read_plan(d, fallback=True)
    with pytest.raises(OptLLMError, match="0..5"):
        read_plan_shards(d, 6)
    shards = sorted(d.glob("part-*.parquet"))
    shards[-1].unlink()  # query 6 lost
    with pytest.raises(OptLLMError, match="1 planned queries have no shard row .first: query 6"):
        read_plan(d)
    _write_plan_shards(d, choice[:4], names, rows=4)  # part-00000 rewritten: queries 0..3, again in part-00001
    with pytest.raises(OptLLMError, match="planned twice"):
        read_plan_shards(d, 7)
    pd.DataFrame({"query": [0]}).to_parquet(shards[0])
    with pytest.raises(OptLLMError, match="part-00000.parquet: not a plan shard"):
        read_plan_shards(d, 7)
    _write_plan_shards(d, choice, names, rows=3)
    np.testing.assert_array_equal(read_plan_shards(d, 7, names), choice)  # by the model index column
    with pytest.raises(OptLLMError, match="model index 2 is not one of the plan's 2 models"):
        read_plan_shards(d, 7, names[:2])
