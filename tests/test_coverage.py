"""The bounds behind every printed promise: their constructions, the target rule's single
LLMs and mixes, and `optllm coverage`, which measures how often the promises hold."""
from __future__ import annotations

import json
from dataclasses import asdict, replace

import numpy as np
import pytest
from scipy.stats import beta
from typer.testing import CliRunner

from optllm.cli import app
from optllm.evaluate.uncertainty import HeldOut, bounds_along, effective_trials, single_bounds, values_of
from optllm.optimize import pareto_front
from optllm.selection import Goal, select
from optllm.selection.engine import RULE_TARGET, RULE_TARGET_SINGLE

runner = CliRunner()


def test_labelled_bound_of_a_single_llm_is_clopper_pearson() -> None:
    """Every query to one model: the labelled estimator's bound is the exact binomial bound
    of that model's labelled answers (N huge: the assigned queries' own chance vanishes)."""
    n, k = 60, 51
    y = np.zeros((n, 2))
    y[:k, 1] = 1.0
    held = HeldOut(np.full((n, 2), 0.5), y, np.tile([1.0, 2.0], (n, 1)), "labelled")
    p = np.full((10**7, 2), 0.5)
    b = single_bounds(1, p, held, 0.9)
    from scipy.stats import t

    level = t.cdf(b.z, n - 1)  # = 0.9
    assert level == pytest.approx(0.9)
    assert b.estimate[0] == pytest.approx(k / n)
    assert b.lower[0] == pytest.approx(beta.ppf(0.1, k, n - k + 1), abs=2e-5)
    assert b.upper[0] == pytest.approx(beta.ppf(0.9, k + 1, n - k), abs=2e-5)
    # PPI on the same labels starts from the predictions: another estimate
    assert single_bounds(1, p, replace(held, estimator="ppi"), 0.9).estimate[0] == pytest.approx(k / n)


def test_effective_trials_shrink_for_the_assigned_queries_and_the_rule() -> None:
    assert effective_trials(100, 100)[()] == pytest.approx(50)
    assert effective_trials(100, 10**9)[()] == pytest.approx(100, rel=1e-6)
    # τ² = θ(1−θ)/100 doubles the variance of n = 100: half the trials
    assert effective_trials(100, 10**12, 0.8, 0.16 / 100)[()] == pytest.approx(50, rel=1e-6)


def test_rule_variance_is_zero_without_folds_and_never_negative() -> None:
    rng = np.random.default_rng(0)
    n = 200
    p = rng.random((n, 3))
    y = (rng.random((n, 3)) < p).astype(float)
    cost = np.tile([1.0, 2.0, 4.0], (n, 1))
    assert not HeldOut(p, y, cost).rectifier.rule_var.any()
    rv = HeldOut(p, y, cost, fold=np.arange(n) % 5).rectifier.rule_var
    assert rv.shape == (len(HeldOut(p, y, cost).rectifier.front),) and (rv >= 0).all()


def _misleading_world(seed: int, n: int = 3000, n_lab: int = 120):
    """A predictor that has the two cheap models backwards (sure of the first on the hard
    queries it fails), and a dear model right on 92%: the front's plans all send the hardest
    queries to the first model and stay near 0.83 in truth; the dear model alone does not."""
    rng = np.random.default_rng(seed)
    easy = rng.random(n + n_lab)
    rate = np.column_stack([0.2 + 0.6 * easy, 0.8 - 0.6 * easy, np.full(n + n_lab, 0.92)])
    pred = rate.copy()
    pred[:, 0], pred[:, 1] = 1.0 - 0.6 * easy, rate[:, 0]
    y = (rng.random(rate.shape) < rate).astype(float)
    cost = np.tile([1.0, 1.5, 10.0], (n + n_lab, 1))
    held = HeldOut(pred[n:], y[n:], cost[n:], "labelled", np.arange(n_lab) % 5)
    return pred[:n], y[:n], cost[:n], held


@pytest.mark.parametrize("estimator", ["labelled", "ppi"])
def test_target_rule_takes_a_single_llm_when_no_front_plan_is_certified(estimator: str) -> None:
    """The front (built on a misled predictor) cannot be certified at 0.85; the dear model
    alone can: the target rule must return it, never "no plan", and cost no more than it."""
    p, y, cost, held = _misleading_world(1)
    held = replace(held, estimator=estimator)
    front = pareto_front(p, cost)
    b = bounds_along(front, p, cost, held, 0.9)
    sel = select(front, b, Goal(target_accuracy=0.85), p=p, cost=cost, held=held, models=("a", "b", "c"))
    assert sel.reachable and sel.rule == RULE_TARGET_SINGLE
    assert sel.plan.cost <= float(cost[:, 2].sum()) + 1e-9
    assert sel.chosen.lower >= 0.85 and sel.chosen.point is None
    assert values_of(sel.plan.models, y) >= 0.85  # and the truth agrees


def test_certified_target_plan_never_costs_more_than_a_single_llm_certified_for_it() -> None:
    """Over seeded worlds and targets: whenever a single LLM (or mix of two) passes the
    target rule's own test, the plan returned costs no more than it."""
    from optllm.selection.engine import _Context, _single_path_pick

    for seed in range(6):
        p, y, cost, held = _misleading_world(seed)
        front = pareto_front(p, cost)
        b = bounds_along(front, p, cost, held, 0.9)
        for target in (0.6, 0.7, 0.8, 0.85, 0.88):
            goal = Goal(target_accuracy=target)
            sel = select(front, b, goal, p=p, cost=cost, held=held, models=("a", "b", "c"))
            ctx = _Context(front, b, goal, p, cost, held, ("a", "b", "c"), 0.0, None, 0, np.ones(3, bool))
            single = _single_path_pick(ctx, target, 0.95)
            if single is not None:
                assert sel.plan is not None and sel.plan.cost <= single[1] * (1 + 1e-9) + 1e-9
            if sel.plan is not None:
                assert sel.rule in (RULE_TARGET, RULE_TARGET_SINGLE)


@pytest.mark.slow
def test_target_promise_holds_on_a_generated_world_with_hidden_links() -> None:
    """`synthetic-hidden` (near-duplicate templates whose models fail together, clusters the
    text does not show): over 16 splits at 2% + 2% labels, the 90% target promise (declined,
    or met) must hold on at least 13 splits for each target, and the pointwise bound must
    cover at least 80% of the plans on average. The PPI bound, which under-covered on such
    data, is measured beside it (not asserted)."""
    from optllm.data import load
    from optllm.evaluate.coverage import CoverageConfig, aggregate_cell, coverage_split

    data = load("synthetic-hidden:4000x8")
    cfg = CoverageConfig(splits=16, fractions=(0.02,), confidences=(0.9,), estimators=("labelled",))
    recs = [coverage_split(data, "synthetic-hidden", 0.02, r, cfg) for r in range(cfg.splits)]
    cell = aggregate_cell(recs, "labelled", 0.9)
    assert cell.points >= 0.80
    for share, t in cell.targets.items():
        assert t["kept"] * cfg.splits >= 13, (share, t)
    assert cell.width > 0 and 0 <= cell.band <= 1


def test_cli_coverage_writes_table_json_and_plot(tmp_path) -> None:
    out = tmp_path / "cov"
    r = runner.invoke(app, ["coverage", "routellm:gsm8k" if _has_data() else "demo", "--splits", "2",
                            "--fractions", "0.05", "--confidences", "0.9", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    cells = json.loads(r.output)["cells"]
    assert {c["estimator"] for c in cells} == {"labelled", "ppi", "labelled-fixed-rule", "ppi-fixed-rule"}
    c = cells[0]
    assert c["splits"] == 2 and 0 <= c["points"] <= 1 and set(c["targets"]) == {"90", "97", "99", "100"}
    assert {"kept", "picked", "saving", "met_when_picked"} <= set(c["targets"]["100"])
    assert sorted(p.name for p in out.iterdir()) == ["calibration.png", "coverage.json", "table.md"]
    saved = json.loads((out / "coverage.json").read_text())
    assert len(saved["splits"]) == 2 and "| dataset |" in (out / "table.md").read_text()


@pytest.mark.parametrize("args, where", [
    (["--fractions", "0.7"], "--fractions"), (["--confidences", "1.2"], "--confidences"),
    (["--bounds", "magic"], "--bounds"), (["--splits", "0"], "--splits"), (["--fractions", "a"], "--fractions"),
])
def test_cli_coverage_bad_options_are_one_line(args, where) -> None:
    r = runner.invoke(app, ["coverage", "demo", *args])
    assert r.exit_code == 2 and where in r.output and "Traceback" not in r.output


def _has_data() -> bool:
    from optllm.data import data_dir

    d = data_dir(required=False)
    return d is not None and (d / "routellm").exists()


def test_a_checkpoint_keeps_finished_splits_and_resumes_only_the_missing(tmp_path, monkeypatch) -> None:
    """A campaign killed part-way goes on from its checkpoint: the finished splits are not run
    again, the figures equal a campaign run in one go, other settings are refused."""
    import optllm.evaluate.coverage as cov

    cfg = cov.CoverageConfig(splits=2, fractions=(0.02,), confidences=(0.9,), estimators=("labelled",))
    ck = tmp_path / "ck"
    whole = cov.run_coverage(["demo"], replace(cfg, splits=3))
    calls = []
    real = cov.coverage_split
    monkeypatch.setattr(cov, "coverage_split", lambda *a: calls.append(a[2:4]) or real(*a))
    cov.run_coverage(["demo"], cfg, checkpoint=str(ck))
    assert calls == [(0.02, 0), (0.02, 1)] and len((ck / "splits.jsonl").read_text().splitlines()) == 2
    with open(ck / "splits.jsonl", "a") as fh:
        fh.write('{"dataset": "demo", "fraction": 0.0')  # a line cut short by a kill
    calls.clear()
    seen = []
    again = cov.run_coverage(["demo"], replace(cfg, splits=3), checkpoint=str(ck),
                             progress=lambda done, total, what: seen.append((done, total)))
    assert calls == [(0.02, 2)] and seen[0] == (2, 3) and seen[-1] == (3, 3) and again.reused == 2
    strip = lambda d: [{k: v for k, v in r.items() if k != "seconds"} for r in d["splits"]]  # noqa: E731
    assert strip(again.as_dict()) == strip(whole.as_dict())
    assert [asdict(c) for c in again.cells()] == [asdict(c) for c in whole.cells()]
    r = runner.invoke(app, ["coverage", "demo", "--splits", "1", "--fractions", "0.02", "--confidences", "0.8",
                            "--bounds", "labelled", "--checkpoint", str(ck)])
    assert r.exit_code == 2 and "measured with other settings (confidences [0.9])" in r.output
    assert len([x for x in r.output.splitlines() if x.strip()]) == 1


def test_the_holdout_construction_bounds_its_own_front_on_the_validation_answers() -> None:
    """`--bounds holdout`: the predictor fits on the training labels alone and the plans of
    its own front are bounded by their answers on the validation labels, exactly: the lower
    bound at a point is Clopper-Pearson on those answers (n_eff for the assigned queries)."""
    from optllm.data import split
    from optllm.data.synthetic import synthetic
    from optllm.evaluate.coverage import CoverageConfig, _holdout_construction, coverage_split
    from optllm.evaluate.uncertainty import bounds_along, clopper_pearson, labelled_points

    data = synthetic(n=3000, m=4, seed=4, texts=True, templates=30)
    cfg = CoverageConfig(splits=1, fractions=(0.05,), confidences=(0.9,), estimators=("labelled", "holdout"))
    rec = coverage_split(data, "gen", 0.05, 0, cfg)
    assert set(rec.cells) == {"labelled", "holdout"} and 0 <= rec.cells["holdout"]["0.9"].points <= 1
    train, val, test = split(data, train=0.05, val=0.05, seed=0).parts(data)
    front, mean, held = _holdout_construction("default", train, val, test, 0)
    assert held.n == val.n and held.fold is None and not held.rule_variance
    b = bounds_along(front, mean, test.cost, held, 0.9, band=False)
    k = len(front) // 2
    t = int(labelled_points(front, mean, test.cost, held, np.array([k]))[0])
    answers = held.y[np.arange(held.n), held.rectifier.assignment(t)]
    n_eff = 1.0 / (1.0 / held.n + 1.0 / test.n)
    assert b.lower[k] == pytest.approx(float(clopper_pearson(answers.mean(), n_eff, 0.9)), rel=1e-9)
