"""`optllm plan` on a user's prompts and `optllm run` on a dataset choose with ONE engine:
the same labelled sample, costs, seed and goal give the same assignment; and a certified
target plan keeps its promise over many seeds of a world whose truth is known."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from optllm.cli import app
from optllm.cost import estimate_costs, load_catalogue, parse_catalogue
from optllm.data import Outcomes, load, split, synthetic
from optllm.evaluate.pipeline import RunConfig, run_pipeline
from optllm.planning import PlanSettings, build_plan, output_tokens_of
from optllm.selection import Goal

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "models.yaml"
runner = CliRunner()


def _write_user_files(d: Path, data: Outcomes, train: np.ndarray, val: np.ndarray) -> tuple[Path, Path]:
    """A prompts file of every query and a long-format labels file of the labelled ones
    (with their train/val roles), as a user would have them."""
    prompts = d / "prompts.jsonl"
    pd.DataFrame({"id": [str(i) for i in data.query_ids], "prompt": data.texts}).to_json(
        prompts, orient="records", lines=True)
    rows = [{"query_id": str(data.query_ids[i]), "model": m, "correct": data.correct[i, k],
             "cost": data.cost[i, k], "split": role}
            for role, part in (("train", train), ("val", val)) for i in part for k, m in enumerate(data.models)]
    labels = d / "labels.csv"
    pd.DataFrame(rows).to_csv(labels, index=False)
    return prompts, labels


@pytest.mark.parametrize("goal,bound", [(["--budget", "1.0"], "labelled"), (["--target-accuracy", "0.9"], "labelled"),
                                        ([], "labelled"), (["--budget", "1.0", "--no-safe"], "labelled"),
                                        (["--budget", "1.0"], "holdout"), (["--target-accuracy", "0.9"], "holdout")])
def test_plan_and_run_choose_the_same_assignment(tmp_path: Path, goal: list[str], bound: str) -> None:
    data = load("demo").subset(np.arange(700))
    seed, k = 3, 21
    sp = split(data, train=k, val=k, seed=seed)
    prompts, labels = _write_user_files(tmp_path, data, sp.train, sp.val)
    # the dataset `run` sees carries the costs `plan` estimates from the catalogue for every prompt
    cat = load_catalogue(EXAMPLE)
    from optllm.data import load_long

    lab = load_long(labels)
    texts = [str(t) for t in data.texts]
    pos = {str(q): i for i, q in enumerate(data.query_ids)}
    out_model = output_tokens_of(lab, cat.select(list(lab.models)), [texts[pos[str(q)]] for q in lab.query_ids])
    est = estimate_costs(texts, cat.select(list(data.models)), out_model)
    assert est.feasible.all()
    world = Outcomes(query_ids=data.query_ids, models=data.models, correct=data.correct, cost=est.mean,
                     texts=data.texts, name="overruling-estimated")
    r = runner.invoke(app, ["plan", str(prompts), "--models", str(EXAMPLE), "--labels", str(labels), "--seed",
                            str(seed), "--out", str(tmp_path / "plan"), "--bound", bound, "--json", *goal])
    kw = {"budget": float(goal[1])} if "--budget" in goal else {}
    if "--target-accuracy" in goal:
        kw = {"target_accuracy": float(goal[1])}
    res = run_pipeline(world, RunConfig(train_frac=k, val_frac=k, seed=seed, safe="--no-safe" not in goal, bound=bound,
                                        **kw))
    s = json.loads(r.stdout)
    assert r.exit_code == (0 if res.selection.reachable else 1), r.output
    assert s["settings"]["bound"] == bound and (bound == "holdout") == ("validation labels" in s["notes"][0])
    ran, planned = res.selection.as_dict(), s["selection"]
    assert planned["rule"] == ran["rule"] and planned["reachable"] == ran["reachable"]
    if res.selection.plan is None:
        return
    chosen = dict(zip(pd.read_csv(tmp_path / "plan" / "plan.csv", dtype={"id": str})["id"],
                      pd.read_csv(tmp_path / "plan" / "plan.csv", dtype={"id": str})["model"]))
    run_models = np.asarray(world.models, dtype=object)[res.selection.plan.models]
    assert chosen == {str(q): m for q, m in zip(res.data.query_ids, run_models)}
    for key in ("estimated_accuracy", "lower", "upper", "cost"):
        assert planned["chosen"][key] == pytest.approx(ran["chosen"][key], rel=1e-9, abs=1e-12)


def _catalogue(models: tuple[str, ...], prices: np.ndarray):
    return parse_catalogue({"defaults": {"max_output_tokens": 8, "expected_output_tokens": 4},
                            "models": [{"name": m, "input_per_million": float(p), "output_per_million": float(p)}
                                       for m, p in zip(models, prices)]})


@pytest.mark.slow
@pytest.mark.parametrize("bound,labels", [("labelled", 50), ("holdout", 100)])
def test_plan_target_promise_holds_on_a_known_world_over_many_seeds(bound: str, labels: int) -> None:
    """A generated world (truth known), 5% labels (10% for `--bound holdout`, which bounds on
    the validation half alone and, at 5%, picked a plan on 1 seed of 30), 90% confidence: over 30 seeds the plan
    meets its target or declines on at least ~90% of them (binomial slack: ≤ 7 misses
    of 30 has probability < 1% at a 10% miss rate), and it does not decline everywhere."""
    world = synthetic(2000, 5, seed=11, texts=True)
    prices = np.geomspace(0.5, 40.0, world.m)
    cat = _catalogue(world.models, prices)
    acc = world.correct.mean(axis=0)
    target = float(np.sort(acc)[-2])  # the second-best LLM's accuracy
    ids = np.array([str(q) for q in world.query_ids], dtype=object)
    texts = [str(t) for t in world.texts]
    misses = picked = 0
    for seed in range(30):
        sp = split(world, train=labels, val=labels, seed=seed)
        lab = world.subset(np.concatenate([sp.train, sp.val]))
        lab = Outcomes(query_ids=np.array([str(q) for q in lab.query_ids], dtype=object), models=lab.models,
                       correct=lab.correct, cost=lab.cost, texts=lab.texts, name="labels")
        plan = build_plan(ids, texts, cat, lab, Goal(target_accuracy=target, confidence=0.9),
                          PlanSettings(predictor="knn", seed=seed, bound=bound))
        if plan.choice is None:
            continue
        picked += 1
        rows = np.array([int(q) for q in plan.ids])
        idx = np.searchsorted(world.query_ids, rows)
        misses += world.correct[idx, plan.choice].mean() < target
    assert misses <= 7, (misses, picked)
    assert picked >= 3, picked  # 4 picked when measured with the labelled bound (issue 14)
