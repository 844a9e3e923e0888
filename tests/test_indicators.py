"""Indicators on small fronts whose values are computed by hand in the comments."""
from __future__ import annotations

import math

import numpy as np
import pytest

from optllm.evaluate import indicators as I
from optllm.optimize.solutions import SolutionSet

# reference front (cost, accuracy)
R = [[0.0, 0.5], [1.0, 0.8], [2.0, 1.0]]


def test_igd_by_hand():
    # ref (1,.8): distances to (0,.5) sqrt(1.09), to (2,1) sqrt(1.04); the others are 0
    assert I.igd([[0, 0.5], [2, 1.0]], R) == pytest.approx(math.sqrt(1.04) / 3)
    assert I.igd(R, R) == 0.0
    assert I.igd([], R) is None


def test_igd_plus_by_hand():
    # minimisation space (c, -a); set (0,-.4),(2,-1).
    # ref (0,-.5): to (0,-.4) only the accuracy shortfall .1 counts -> .1
    # ref (1,-.8): to (0,-.4): shortfall .4 -> .4 ; to (2,-1): cost excess 1 -> 1 ; min .4
    # ref (2,-1): 0            mean (.1 + .4 + 0) / 3
    assert I.igd_plus([[0, 0.4], [2, 1.0]], R) == pytest.approx(0.5 / 3)
    # a point better than the reference adds nothing to IGD+ (but does to IGD)
    assert I.igd_plus([[0, 0.6], [1, 0.9], [2, 1.0]], R) == pytest.approx(0.0)
    assert I.igd([[0, 0.6], [1, 0.9], [2, 1.0]], R) > 0


def test_hypervolume_by_hand():
    assert I.hypervolume([[1.0, 0.5]], (2.0, 0.0)) == pytest.approx(0.5)
    # staircase: (0,.5),(1,.8),(2,1) with ref (3,0): 1*.5 + 1*.8 + 1*1 = 2.3
    assert I.hypervolume(R, (3.0, 0.0)) == pytest.approx(2.3)
    # normalised cost: costs / 2 -> area halves
    assert I.hypervolume(R, (3.0, 0.0), cost_scale=2.0) == pytest.approx(1.15)
    # points beyond the reference cost add nothing
    assert I.hypervolume([[5.0, 1.0]], (3.0, 0.0)) == 0.0


def test_delta_by_hand():
    # set = reference: d_f = d_l = 0; consecutive distances sqrt(1.09), sqrt(1.04), mean dbar;
    # nearest neighbours: sqrt(1.09), sqrt(1.04), sqrt(1.04)
    a, b = math.sqrt(1.09), math.sqrt(1.04)
    dbar = (a + b) / 2
    want = (abs(a - dbar) + 2 * abs(b - dbar)) / (2 * dbar)
    assert I.delta_spread(R, R) == pytest.approx(want)
    # evenly spaced set on the ends of the reference: Δ = 0
    even = [[0, 0.0], [1, 0.0], [2, 0.0]]
    assert I.delta_spread(even, even) == pytest.approx(0.0)
    # extreme gaps count: shift the ends away by 1 in cost each
    ref2 = [[-1, 0.0], [3, 0.0]]
    assert I.delta_spread(even, ref2) == pytest.approx((1 + 1 + 0) / (1 + 1 + 2 * 1))
    assert I.delta_spread([[0, 0.0]], ref2) == 1.0
    assert I.delta_spread([], R) is None


def test_quality_raw_and_normalised():
    q = I.quality([[0, 0.5], [2, 1.0]], R, cost_scale=2.0)
    # normalised: costs halved -> the middle reference (0.5, .8) is sqrt(.25 + .04) from (1, 1)
    assert q["igd_norm"] == pytest.approx(math.sqrt(0.29) / 3)
    assert q["igd"] == pytest.approx(math.sqrt(1.04) / 3)
    # HV reference (1.1 * 2, 0): (0,.5),(2,1): 2*.5 + .2*1 = 1.2 ; normalised / 2
    assert q["hv"] == pytest.approx(1.2)
    assert q["hv_norm"] == pytest.approx(0.6)
    assert q["hv_ref"] == [2.2, 0.0] and q["hv_ref_norm"] == pytest.approx([1.1, 0.0])


def test_savings_against_best_single():
    # 2 queries, models A (cheap) and B (best): A right on q0, B right on both
    correct = np.array([[1.0, 1.0], [0.0, 1.0]])
    cost = np.array([[1.0, 4.0], [1.0, 4.0]])
    s = I.single_models(correct, cost)
    assert s.best == 1 and s.best_accuracy == 1.0 and s.best_cost == 8.0 and s.cost_scale == 8.0
    pts = [[2.0, 0.5], [5.0, 1.0], [8.0, 1.0]]
    v = I.vs_best_single(pts, correct, cost, reference=pts)
    assert v["saving"] == pytest.approx(1 - 5 / 8)
    assert v["saving_99"] == pytest.approx(1 - 5 / 8)
    assert v["accuracy_gain"] == pytest.approx(0.0)
    # no solution reaches the best accuracy: undefined, not 0
    v2 = I.vs_best_single([[2.0, 0.5], [6.0, 0.99]], correct, cost)
    assert v2["saving"] is None
    assert v2["saving_99"] == pytest.approx(1 - 6 / 8)  # 0.99 reaches 99% of 1.0
    assert v2["accuracy_gain"] == pytest.approx(-0.01)
    assert I.accuracy_gain_at_cost([[9.0, 1.0]], 8.0, 1.0) is None


def test_improv_and_cost_to_match():
    a = [[1.0, 0.6], [3.0, 0.9]]
    b = [[2.0, 0.6], [4.0, 0.75], [5.0, 0.75]]
    assert I.improv(a, b) == pytest.approx((0.9 - 0.75) / 0.75)
    assert I.improv(b, a) == pytest.approx((0.75 - 0.9) / 0.9)
    # b reaches .75 first at cost 4; a reaches >= .75 first at cost 3 -> saves 25%
    assert I.cost_saving_to_match(a, b) == pytest.approx(0.25)
    assert I.cost_saving_to_match(b, a) is None
    assert I.improv([], b) is None


def test_aiq_by_hand():
    # hull of (0,.5),(1,.8),(2,1) is all three: trapezoids .65 + .9 over a range of 2
    assert I.aiq([0, 1, 2], [0.5, 0.8, 1.0], (0, 2)) == pytest.approx(0.775)
    # step curve: .5 on [0,1), .8 on [1,2)
    assert I.aiq([0, 1, 2], [0.5, 0.8, 1.0], (0, 2), hull=False) == pytest.approx(0.65)
    # (1,.6) lies under the chord (.75): the hull skips it
    assert I.aiq([0, 1, 2], [0.5, 0.6, 1.0], (0, 2)) == pytest.approx(0.75)
    # nothing affordable below the cheapest point (quality 0), flat after the best
    assert I.aiq([1, 2], [0.5, 1.0], (0, 4)) == pytest.approx((0 + 0.75 + 2 * 1.0) / 4)
    # dominated points do not raise the curve; points form accepted too
    assert I.aiq([[0, 0.5], [1, 0.4], [2, 1.0]], cost_range=(0, 2)) == pytest.approx(0.75)
    assert I.aiq([0, 1], [0.5, 1.0], (1, 1)) is None


def test_headroom_captured():
    oracle = [[0.0, 0.5], [1.0, 0.9], [2.0, 1.0]]
    pts = [[0.0, 0.5], [1.0, 0.7]]
    # best single: cost 1, accuracy .6; oracle at cost 1: .9; ours: .7 -> (.1)/(.3)
    assert I.headroom_captured(pts, oracle, 1.0, 0.6) == pytest.approx(1 / 3)
    assert I.headroom_captured([[2.0, 1.0]], oracle, 1.0, 0.6) is None
    assert I.headroom_captured(pts, [[1.0, 0.6]], 1.0, 0.6) is None


def test_true_points_of_solution_set():
    p = np.array([[0.1, 0.9], [0.2, 0.8]])
    c = np.array([[1.0, 2.0], [1.0, 3.0]])
    correct = np.array([[0.0, 1.0], [1.0, 0.0]])
    s = SolutionSet.from_assignments(np.array([[0, 0], [1, 0], [1, 1]]), p, c)
    tp = I.true_points(s, correct)
    assert tp.tolist() == [[2.0, 0.5], [3.0, 1.0], [5.0, 0.5]]

    from optllm.optimize import pareto_front

    front = pareto_front(np.array([[0.0, 1.0], [0.0, 1.0]]), np.array([[1.0, 1.5], [1.0, 3.0]]))
    assert I.true_points(front, correct).tolist() == [[2.0, 0.5], [2.5, 1.0], [4.5, 0.5]]
