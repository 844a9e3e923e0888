"""Certifying on a holdout labelled only where the tested plans route (`planning.holdout`):
what is bought, that the certificate is the exact binomial bound of the plan's own answers on
the holdout, and that a plan not observed whole is never certified (the promise over rounds:
`test_adaptive.test_promise_over_rounds_on_generated_worlds[holdout]`)."""
from __future__ import annotations

import numpy as np
import pytest

from optllm.data import Outcomes
from optllm.data.synthetic import synthetic
from optllm.errors import OptLLMError
from optllm.evaluate.uncertainty import HeldOut, bounds_along, clopper_pearson, labelled_points, observed_points
from optllm.planning.adaptive import AdaptiveSettings, label_until_certified
from optllm.planning.core import PlanSettings, plan_queries
from optllm.planning.holdout import Holdout
from optllm.selection import Goal
from optllm.selection.engine import target_level


def _world(seed: int = 3, n: int = 3000):
    return synthetic(n=n, m=5, seed=seed, texts=True, templates=40)


def _split(data: Outcomes, n_fit: int, n_hold: int, seed: int = 0):
    order = np.random.default_rng(seed).permutation(data.n)
    fit, ho, rest = order[:n_fit], order[n_fit:n_fit + n_hold], np.sort(order[n_fit + n_hold:])
    half = n_fit // 2

    def part(rows):
        return Outcomes(query_ids=rows, models=data.models, correct=data.correct[rows], cost=data.cost[rows],
                        texts=data.texts[rows], name="labelled")

    return part(fit[:half]), part(fit[half:]), ho, rest


def _plan_on_holdout(data, target, confidence=0.9, n_fit=300, n_hold=600):
    train, val, ho, rest = _split(data, n_fit, n_hold)
    bought = []

    def label(rows, k):
        bought.append((rows.copy(), k))
        return data.correct[ho[rows], k]

    hold = Holdout([str(t) for t in data.texts[ho]], data.cost[ho], np.full((ho.size, data.m), np.nan), label)
    planned = plan_queries(train, val, [str(t) for t in data.texts[rest]], data.cost[rest],
                           Goal(target_accuracy=target, confidence=confidence), PlanSettings(folds=0), holdout=hold)
    return planned, bought, ho, rest


def test_holdout_labels_only_routed_pairs_and_certifies_with_the_exact_bound() -> None:
    data = _world()
    best = float(data.correct.mean(axis=0).max())
    planned, bought, ho, rest = _plan_on_holdout(data, 0.95 * best)
    held = planned.held
    assert held is not None and held.whole and held.fold is None
    cells = int(np.isfinite(held.y).sum())
    assert 0 < cells < held.y.size  # fewer labels than every model on every holdout prompt
    assert cells == sum(r.size for r, _ in bought)  # nothing asked twice
    sel = planned.selection
    assert sel.reachable and sel.plan is not None
    if sel.chosen.point is not None:  # a front plan: its rule's answers on the holdout, every one labelled
        front = planned.front
        t = int(labelled_points(front, planned.p, data.cost[rest], held, np.array([sel.chosen.point]))[0])
        a = held.rectifier.assignment(t)
        answers = held.y[np.arange(held.n), a]
        assert np.isfinite(answers).all()
        level = target_level(sel.confidence, True)
        n_eff = 1.0 / (1.0 / held.n + 1.0 / rest.size)
        want = float(clopper_pearson(answers.mean(), n_eff, level))
        got = float(bounds_along(front, planned.p, data.cost[rest], held, level, band=False).lower[sel.chosen.point])
        assert got == pytest.approx(want, rel=1e-9)
        assert got >= 0.95 * best


def test_a_point_not_observed_whole_is_unknown_never_certified() -> None:
    data = _world()
    best = float(data.correct.mean(axis=0).max())
    planned, _, ho, rest = _plan_on_holdout(data, 0.95 * best)
    held = planned.held
    y = held.y.copy()
    y[0, :] = np.nan  # one holdout prompt loses every label: no point is observed whole
    partial = HeldOut(held.p, y, held.cost, "labelled", None, rule_variance=False, whole=True)
    obs = observed_points(planned.front, planned.p, data.cost[rest], partial)
    assert not obs.any()
    b = bounds_along(planned.front, planned.p, data.cost[rest], partial, 0.9, band=False)
    assert (b.lower < 1e-6).all() and (b.upper > 1 - 1e-6).all()
    # the same labels without `whole` would have been read as a sample of the observed prompts
    loose = HeldOut(held.p, y, held.cost, "labelled", None, rule_variance=False)
    assert bounds_along(planned.front, planned.p, data.cost[rest], loose, 0.9, band=False).lower.max() > 0.3


def test_holdout_needs_a_target_and_valid_settings() -> None:
    data = _world(n=600)
    train, val, ho, rest = _split(data, 100, 100)
    hold = Holdout([str(t) for t in data.texts[ho]], data.cost[ho], np.full((ho.size, data.m), np.nan),
                   lambda r, k: data.correct[ho[r], k])
    with pytest.raises(OptLLMError, match="target"):
        plan_queries(train, val, [str(t) for t in data.texts[rest]], data.cost[rest], Goal(budget=1.0),
                     PlanSettings(folds=0), holdout=hold)
    for bad in (dict(certify="bootstrap"), dict(holdout=1.0), dict(holdout=0)):
        with pytest.raises(OptLLMError):
            AdaptiveSettings(**bad)


def test_rounds_on_a_holdout_train_on_the_training_part_only() -> None:
    data = synthetic(n=2000, m=4, seed=5, texts=True, templates=30)
    col = {m: k for k, m in enumerate(data.models)}
    calls = []

    def reveal(rows, models):
        calls.append((rows.copy(), models))
        ks = [col[m] for m in models]
        return data.correct[np.ix_(rows, ks)], data.cost[np.ix_(rows, ks)].sum(axis=1)

    ad = AdaptiveSettings(certify="holdout", holdout=0.6, max_rounds=3)
    res = label_until_certified(data.texts, data.cost, data.models,
                                Goal(target_accuracy=0.9 * float(data.correct.mean(axis=0).max()), confidence=0.9),
                                reveal, PlanSettings(folds=0), ad, seed=1)
    whole_rows = np.concatenate([r for r, m in calls if len(m) > 1])  # every candidate model: training prompts
    single = np.concatenate([r for r, m in calls if len(m) == 1] or [np.zeros(0, int)])
    assert not np.intersect1d(whole_rows, single).size  # a holdout prompt is never labelled by every model at once
    assert not res.train_mask[np.isin(res.labelled, single)].any()  # and never trains
    spent = sum(float(data.cost[np.ix_(r, [col[x] for x in m])].sum()) for r, m in calls)
    assert res.label_cost == pytest.approx(spent)
    assert np.isnan(res.correct).any()  # the holdout is labelled where plans route, not everywhere


def test_labels_that_cannot_be_bought_leave_their_plans_unknown_and_are_not_asked_again() -> None:
    """A model whose holdout labels never come back (failed calls, a spent cap): every plan
    routing a holdout prompt to it stays unknown, its pairs are asked once, the single LLMs
    are still tested, and whatever is certified was observed whole."""
    data = _world()
    best = float(data.correct.mean(axis=0).max())
    train, val, ho, rest = _split(data, 300, 600)
    dead = int(np.argsort(data.cost.sum(axis=0))[1])  # the second-cheapest model never answers
    asked = []

    def label(rows, k):
        asked.append((k, rows.copy()))
        return np.full(rows.size, np.nan) if k == dead else data.correct[ho[rows], k]

    hold = Holdout([str(t) for t in data.texts[ho]], data.cost[ho], np.full((ho.size, data.m), np.nan), label)
    planned = plan_queries(train, val, [str(t) for t in data.texts[rest]], data.cost[rest],
                           Goal(target_accuracy=0.9 * best, confidence=0.9), PlanSettings(folds=0), holdout=hold)
    dead_rows = np.concatenate([r for k, r in asked if k == dead] or [np.zeros(0, int)])
    assert np.unique(dead_rows).size == dead_rows.size  # each dead pair asked once
    held, sel = planned.held, planned.selection
    assert np.isnan(held.y[:, dead]).all()
    if sel.plan is not None and sel.chosen.point is not None:
        obs = observed_points(planned.front, planned.p, data.cost[rest], held)
        assert obs[sel.chosen.point]
    elif sel.plan is not None:
        assert dead not in set(np.unique(sel.plan.models))


def _fixed_parts(data: Outcomes, n_train: int = 300, n_val: int = 300):
    order = np.random.default_rng(1).permutation(data.n)
    tr, va, rest = order[:n_train], order[n_train:n_train + n_val], np.sort(order[n_train + n_val:])

    def part(rows, y=None):
        return Outcomes(query_ids=rows, models=data.models, correct=data.correct[rows] if y is None else y,
                        cost=data.cost[rows], texts=data.texts[rows], name="labelled")

    return part, tr, va, rest


def test_bound_holdout_fits_without_the_validation_part_and_bounds_on_its_answers() -> None:
    """`--bound holdout` on the planning path every command shares (`plan_queries`): the
    predictor never sees the validation labels (flipping them leaves the predictions and
    the front unchanged), and a plan's lower bound is Clopper-Pearson on the validation
    answers its own rule picks (n_eff for the planned queries)."""
    from optllm.planning.core import validation_holdout

    data = _world()
    part, tr, va, rest = _fixed_parts(data)
    best = float(data.correct[rest].mean(axis=0).max())
    goal = Goal(target_accuracy=0.95 * best, confidence=0.9)
    settings = PlanSettings(bound="holdout")
    texts = [str(t) for t in data.texts[rest]]
    planned = plan_queries(part(tr), part(va), texts, data.cost[rest], goal, settings)
    flipped = plan_queries(part(tr), part(va, 1 - data.correct[va]), texts, data.cost[rest], goal, settings)
    assert np.array_equal(planned.p, flipped.p) and np.array_equal(planned.front.costs, flipped.front.costs)
    held = planned.held
    assert held is not None and held.n == va.size and held.fold is None and not held.rule_variance
    assert np.array_equal(held.y, data.correct[va])
    assert np.array_equal(held.p, validation_holdout(planned.predictor, part(va)).p)
    k = len(planned.front) // 2
    t = int(labelled_points(planned.front, planned.p, data.cost[rest], held, np.array([k]))[0])
    answers = held.y[np.arange(held.n), held.rectifier.assignment(t)]
    n_eff = 1.0 / (1.0 / held.n + 1.0 / rest.size)
    assert planned.bounds.lower[k] == pytest.approx(float(clopper_pearson(answers.mean(), n_eff, 0.9)), rel=1e-9)
    sel = planned.selection
    if sel.plan is not None and sel.chosen.point is not None:
        assert planned.bounds.lower[sel.chosen.point] >= goal.target_accuracy
    # the budget rule runs on the same sample
    cheap = float(data.cost[rest].sum(axis=0).max())
    assert plan_queries(part(tr), part(va), texts, data.cost[rest], Goal(budget=cheap, confidence=0.9),
                        settings).selection.plan is not None


def test_bound_holdout_needs_validation_labels_and_a_known_name() -> None:
    data = _world(n=600)
    part, tr, va, rest = _fixed_parts(data, 100, 1)
    with pytest.raises(OptLLMError, match="validation labels: need at least 2, got 1"):
        plan_queries(part(tr), part(va), [str(t) for t in data.texts[rest]], data.cost[rest],
                     Goal(target_accuracy=0.5), PlanSettings(bound="holdout"))
    with pytest.raises(OptLLMError, match="--bound must be one of labelled, ppi, holdout"):
        PlanSettings(bound="hold")
