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
from optllm.evaluate.uncertainty import HeldOut

runner = CliRunner()


@pytest.fixture(scope="module")
def small():
    return synthetic(3000, 5, seed=3, texts=True)


def test_run_budget_writes_all_outputs(tmp_path, small) -> None:
    budget = float(small.model_total_cost().max()) * 0.3
    res = run_pipeline(small, RunConfig(budget=budget, folds=5, predictor="base_rate"))
    assert res.selection.plan.cost <= budget + 1e-9
    ch = res.selection.chosen
    assert ch.lower <= ch.estimated_accuracy <= ch.upper
    assert 0 <= res.realised.accuracy <= 1
    paths = write_run(res, str(tmp_path / "out"))
    front = pd.read_csv(paths["front"])
    assert {"cost", "predicted_accuracy", "lower_bound", "true_accuracy"} <= set(front.columns)
    assert (np.diff(front["cost"]) >= -1e-9).all()
    plan = pd.read_csv(paths["plan"])
    assert len(plan) == res.data.n and set(plan["model"]) <= set(small.models)
    assert plan["expected_cost"].sum() == pytest.approx(res.selection.plan.cost)
    summary = json.loads(open(paths["summary"]).read())
    assert summary["n_labelled"] == 60 and summary["labelling_cost"] > 0
    assert open(paths["plot"], "rb").read(4) == b"\x89PNG"
    assert not list((tmp_path / "out").glob(".*tmp")) and not list(tmp_path.glob(".*"))
    # the same keys on every branch of the selection
    assert set(summary["selection"]) == {"goal", "rule", "reachable", "confidence", "n_labelled", "chosen",
                                         "reference", "alternative", "labels_needed", "message", "certified_gap"}


def test_target_not_reachable_says_how_many_labels(small) -> None:
    res = run_pipeline(small, RunConfig(target_accuracy=0.999, folds=5, predictor="base_rate"))
    assert res.selection.reachable is False and res.selection.plan is None and res.realised is None
    assert "no plan reaches" in res.selection.message


def test_target_reachable_meets_lower_bound(small) -> None:
    res = run_pipeline(small, RunConfig(target_accuracy=0.5, folds=5, predictor="base_rate", train_frac=0.05))
    sel = res.selection
    assert sel.reachable and sel.chosen.lower >= 0.5 and res.realised.target_met is not None


def test_labelling_cost_counted(small) -> None:
    a = run_pipeline(small, RunConfig(folds=0, predictor="base_rate"))
    b = run_pipeline(small, RunConfig(folds=0, predictor="base_rate", count_labelling_cost=True))
    assert b.selection.chosen.cost == pytest.approx(a.selection.chosen.cost + a.labelling_cost)


def test_without_held_out_labels_the_output_says_the_bound_is_not_a_guarantee(small) -> None:
    t = run_pipeline(small, RunConfig(target_accuracy=0.3, folds=0, predictor="base_rate"))
    assert t.selection.reachable and "does not cover the predictor's own error" in t.selection.message
    b = run_pipeline(small, RunConfig(budget=float(small.model_total_cost().max()) * 0.3, folds=0, predictor="base_rate"))
    assert "safe rule needs held-out labels" in b.selection.message and b.selection.reference is None


def test_budget_below_cheapest_is_clear(small) -> None:
    with pytest.raises(OptLLMError, match="below the cheapest plan"):
        run_pipeline(small, RunConfig(budget=1e-9, folds=0, predictor="base_rate"))


def test_cli_run_demo(tmp_path) -> None:
    r = runner.invoke(app, ["run", "demo", "--budget", "5", "--folds", "5", "--out", str(tmp_path), "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["selection"]["chosen"]["cost"] <= 5 + 1e-9 and s["dataset"] == "overruling"
    assert (tmp_path / "plan.csv").exists() and (tmp_path / "front.png").exists()


def test_cli_run_bad_options() -> None:
    r = runner.invoke(app, ["run", "demo", "--budget", "1", "--target-accuracy", "0.9"])
    assert r.exit_code == 2 and "not both" in r.output


def test_cli_run_unreachable_target_exits_1_and_writes_no_plan(tmp_path) -> None:
    r = runner.invoke(app, ["run", "demo", "--target-accuracy", "0.999", "--out", str(tmp_path / "o"), "--json"])
    assert r.exit_code == 1, r.output
    s = json.loads(r.stdout)
    sel = s["selection"]
    assert sel["reachable"] is False and (sel["labels_needed"] is None or sel["labels_needed"] > sel["n_labelled"])
    assert not (tmp_path / "o" / "plan.csv").exists() and (tmp_path / "o" / "summary.json").exists()


@pytest.mark.slow
def test_cli_demo_runs_budget_and_target(tmp_path) -> None:
    """`make demo`: both plans are written and the saving line is printed for each."""
    r = runner.invoke(app, ["demo", "--out", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    for sub in ("d", "d/target"):
        s = json.loads((tmp_path / sub / "summary.json").read_text())
        assert s["realised"]["accuracy"] > 0 and (tmp_path / sub / "plan.csv").exists()
    assert r.output.count("less than") == 2


def test_reference_model_prefers_the_pricier_of_models_the_sample_cannot_separate() -> None:
    from optllm.evaluate.uncertainty import HeldOut
    from optllm.selection.reference import reference_model as _reference_model

    n = 44
    y = np.ones((n, 3))
    y[:2, 1] = 0.0  # model 1 (pricier) wrong on 2 queries the lead gets right: McNemar p = 0.25
    y[:12, 2] = 0.0  # model 2 (priciest) wrong on 12: clearly behind
    held = HeldOut(np.full((n, 3), 0.9), y, np.ones((n, 3)))
    p = np.full((500, 3), 0.9)
    totals = np.array([5.0, 10.0, 20.0])
    est = np.full(3, 0.9)
    assert _reference_model(np.arange(3), totals, est, held, 0.9) == 1
    assert _reference_model(np.array([0, 2]), totals, est[[0, 2]], held, 0.9) == 0


def test_cli_run_no_safe_takes_the_most_accurate_predicted_plan(tmp_path) -> None:
    r = runner.invoke(app, ["run", "demo", "--budget", "4.73", "--no-safe", "--json"])
    assert r.exit_code == 0, r.output
    sel = json.loads(r.output)["selection"]
    assert sel["rule"] == "most accurate plan within the budget" and sel["reference"] is None
    assert 4.0 < sel["chosen"]["cost"] <= 4.73 + 1e-9


def _no_signal_world(seed: int, n: int, n_lab: int):
    """Three models (cheap/weak, mid, dear/strong), answers independent of the query, and a
    predictor that knows only each model's base rate: no plan can beat random mixes."""
    rng = np.random.default_rng(seed)
    rate = np.array([0.55, 0.65, 0.85])
    price = np.array([1.0, 2.0, 10.0])
    p = np.tile(rate, (n, 1))
    y_lab = (rng.random((n_lab, 3)) < rate).astype(float)
    held = HeldOut(np.tile(rate, (n_lab, 1)), y_lab, np.tile(price, (n_lab, 1)))
    return rate, price, p, np.tile(price, (n, 1)), held


def test_reference_between_single_llms_is_a_random_mix_that_spends_the_budget() -> None:
    from optllm.selection import Reference
    from optllm.selection import best_reference as _reference

    rate, price, p, cost, held = _no_signal_world(0, 4000, 400)
    totals = cost.sum(axis=0)
    budget = 0.5 * totals[2]
    ref = _reference(np.flatnonzero(totals <= budget), totals, budget, p, held, 0.9)
    assert ref.hi == 2 and ref.lo in (0, 1) and 0 < ref.w < 1
    # the estimate is the straight line between the two models' corrected estimates
    assert ref.estimate > max(rate[0], rate[1]) + 0.05
    a = ref.assignment(cost, budget, seed=1)
    spent = cost[np.arange(4000), a].sum()
    assert spent <= budget + 1e-9 and spent >= budget - price[2]
    assert np.mean(a == ref.hi) == pytest.approx(ref.w, abs=2 / 4000)
    # at a budget that buys the dear model outright, the reference is that model alone
    top = _reference(np.arange(3), totals, float(totals[2]), p, held, 0.9)
    assert (top.lo, top.w) == (2, 0.0)
    single = Reference(1, 1, 0.0, 0.65)
    np.testing.assert_array_equal(single.assignment(cost, budget, 0), np.full(4000, 1))
    assert "random mix" in ref.describe(("a", "b", "c")) and single.describe(("a", "b", "c")) == "b"


def test_safe_budget_rule_takes_the_mix_when_no_plan_beats_it() -> None:
    """Without signal, the safe rule must not fall back to the best affordable LLM (0.65 here)
    when the budget buys a mix that reaches about 0.75 in truth."""
    from optllm.evaluate.uncertainty import bounds_along, paired_lower, values_of
    from optllm.selection import Goal, select
    from optllm.optimize import pareto_front

    rate, price, p, cost, held = _no_signal_world(2, 3000, 60)
    budget = 0.5 * float(cost[:, 2].sum())
    front = pareto_front(p, cost)
    b = bounds_along(front, p, cost, held, 0.9)
    sel = select(front, b, Goal(budget=budget), p=p, held=held, models=("a", "b", "c"), cost=cost, seed=4)
    plan, info = sel.plan, sel.chosen
    assert plan.cost <= budget + 1e-9 and "random mix" in sel.reference.description
    assert "labelled queries it gets" in sel.message  # why the predicted plan was not kept
    assert values_of(plan.models, p) > 0.72  # expected true accuracy: rates are the truth here
    # the mix's interval is the mix's own (the straight line between its two models' estimates)
    from optllm.selection import best_reference as _reference

    totals = cost.sum(axis=0)
    ref = _reference(np.flatnonzero(totals <= budget), totals, budget, p, held, 0.9)
    assert info.estimated_accuracy == pytest.approx(ref.estimate) == sel.reference.estimated_accuracy
    assert info.lower < info.estimated_accuracy < info.upper
    # a mix given as weights: one-hot weights agree with the single-model comparison
    pts = np.arange(len(front))
    np.testing.assert_allclose(paired_lower(front, pts, 1, p, cost, held, b.z),
                               paired_lower(front, pts, np.eye(3)[1], p, cost, held, b.z))


def _routing_world(rng: np.random.Generator, n: int, misled: bool):
    """Cheap models good on easy queries, a dear flat one; a predictor that is right, or one
    that has the cheapest model backwards (good on hard queries)."""
    easy = rng.random(n)
    rate = np.column_stack([0.3 + 0.6 * easy, 0.5 + 0.4 * easy, np.full(n, 0.85)])
    pred = rate.copy()
    if misled:
        pred[:, 0] = 0.9 - 0.6 * easy
    return rate, pred, np.tile([1.0, 3.0, 10.0], (n, 1))


@pytest.mark.parametrize("misled", [False, True])
def test_safe_budget_rule_does_no_harm_and_still_gains(misled: bool) -> None:
    """Between single LLMs, over 10 seeded worlds with 400 labels: a right predictor's plan
    (5–8 points above the random mix in truth) is taken on most; a misled one's (3 points
    below) on none, and the rule never ends up below the mix."""
    from optllm.evaluate.uncertainty import bounds_along
    from optllm.selection import Goal, select
    from optllm.selection import best_reference as _reference
    from optllm.optimize import pareto_front

    taken, gains = 0, []
    for s in range(10):
        rng = np.random.default_rng(s)
        rate, pred, cost = _routing_world(rng, 2000, misled)
        lr, lp, lc = _routing_world(rng, 400, misled)
        held = HeldOut(lp, (rng.random(lr.shape) < lr).astype(float), lc)
        budget = 0.5 * float(cost[:, 2].sum())
        front = pareto_front(pred, cost)
        b = bounds_along(front, pred, cost, held, 0.9, seed=s)
        sel = select(front, b, Goal(budget=budget), p=pred, held=held, models=("a", "b", "c"), cost=cost, seed=s)
        plan = sel.plan
        assert plan.cost <= budget + 1e-9
        tot, acc = cost.sum(axis=0), rate.mean(axis=0)
        ref = _reference(np.flatnonzero(tot <= budget), tot, budget, pred, held, 0.9)
        gains.append(rate[np.arange(2000), plan.models].mean() - ((1 - ref.w) * acc[ref.lo] + ref.w * acc[ref.hi]))
        taken += sel.rule == "most accurate plan within the budget"
    assert min(gains) > -0.01
    if misled:
        assert taken == 0
    else:
        assert taken >= 6 and np.mean(gains) > 0.03


def test_safe_rule_compares_with_every_llm_the_budget_buys_even_beyond_the_front() -> None:
    """A model the predictor wrongly ranks below a cheaper one is never on the front, so the
    front ends below the budget; the reference must still be that model when the budget buys
    it and the held-out labels say it is best (the budget, not the front's top, decides what
    is affordable)."""
    from optllm.evaluate.uncertainty import bounds_along
    from optllm.optimize import pareto_front
    from optllm.selection import Goal, select

    rng = np.random.default_rng(5)
    n, n_lab = 2000, 300
    pred_rate = np.array([0.55, 0.65, 0.85, 0.80])  # model d predicted below c ...
    true_rate = np.array([0.55, 0.65, 0.85, 0.97])  # ... but it is the best in truth
    price = np.array([1.0, 2.0, 10.0, 20.0])
    p, cost = np.tile(pred_rate, (n, 1)), np.tile(price, (n, 1))
    held = HeldOut(np.tile(pred_rate, (n_lab, 1)), (rng.random((n_lab, 4)) < true_rate).astype(float),
                   np.tile(price, (n_lab, 1)))
    front = pareto_front(p, cost)
    budget = float(cost[:, 3].sum())
    assert front.costs[-1] < budget - 1  # the front ends at model c alone
    b = bounds_along(front, p, cost, held, 0.9)
    sel = select(front, b, Goal(budget=budget), p=p, cost=cost, held=held, models=("a", "b", "c", "d"), seed=0)
    assert sel.reference.description.endswith(": d")
    assert (sel.plan.models == 3).all() and sel.plan.cost <= budget + 1e-9


def test_output_folder_is_replaced_whole_but_never_one_holding_other_files(tmp_path) -> None:
    out = tmp_path / "o"
    for _ in range(2):  # a folder we wrote is replaced whole, sub-folders carried over
        r = runner.invoke(app, ["run", "demo", "--budget", "5", "--predictor", "base", "--out", str(out), "--json"])
        assert r.exit_code == 0, r.output
        (out / "keep").mkdir(exist_ok=True)
    assert (out / "keep").is_dir() and not list(tmp_path.glob(".*"))
    (out / "notes.txt").write_text("mine")
    r = runner.invoke(app, ["run", "demo", "--budget", "5", "--predictor", "base", "--out", str(out)])
    assert r.exit_code == 2 and "notes.txt" in r.output and "did not write" in r.output
    assert (out / "notes.txt").read_text() == "mine" and (out / "plan.csv").exists()
