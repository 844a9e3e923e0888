"""The optimiser registry (one entry per optimiser), front thinning and the hindsight saving."""
from __future__ import annotations

import numpy as np
import pytest

from optllm.errors import OptLLMError
from optllm.evaluate.indicators import hindsight_saving
from optllm.optimize import optllm_m, pareto_front, run_moea
from optllm.optimize.registry import MOEAS, OPTIMIZERS, build_front
from optllm.optimize.types import thin_indices


def test_names_kinds_and_moeas_derived():
    assert list(OPTIMIZERS) == ["exact", "optllm-m", "nsga2", "rnsga2", "smsemoa", "moead", "moeadgen", "mopso"]
    assert MOEAS == tuple(n for n, o in OPTIMIZERS.items() if o.kind == "moea")
    assert {o.kind for o in OPTIMIZERS.values()} == {"exact", "paper", "moea"}
    assert all((o.run is not None) == (o.kind == "moea") for o in OPTIMIZERS.values())
    with pytest.raises(OptLLMError, match="unknown optimizer"):
        build_front("simplex", np.ones((2, 2)), np.ones((2, 2)), np.ones((2, 2)), None)


def test_build_front_calls_each_optimiser_as_before():
    rng = np.random.default_rng(0)
    p, c = rng.random((20, 3)), rng.random((20, 3)) + 0.01
    pr = np.clip(p + 0.1, 0, 1)
    models = ("a", "b", "c")
    ex = build_front("exact", p, pr, c, models)
    assert np.array_equal(ex.costs, pareto_front(pr, c, models=models).costs)
    om = build_front("optllm-m", p, pr, c, models, gn=7)
    assert np.array_equal(om.assignments, optllm_m(p, pr, c, gn=7, models=models).assignments)
    ns = build_front("nsga2", p, pr, c, models, generations=2, seed=3)
    assert np.array_equal(ns.assignments, run_moea("nsga2", pr, c, generations=2, seed=3, models=models).assignments)


@pytest.mark.parametrize("k, max_points", [(0, 5), (3, 5), (5, 5), (6, 5), (1000, 7), (10, 2)])
def test_thin_indices_keeps_both_ends(k, max_points):
    idx = thin_indices(k, max_points)
    if k <= max_points:
        assert idx.tolist() == list(range(k))
    else:
        assert idx[0] == 0 and idx[-1] == k - 1 and len(idx) <= max_points and np.all(np.diff(idx) > 0)


def test_hindsight_saving_dict_shapes():
    costs, acc = np.array([1.0, 2.0, 4.0]), np.array([0.5, 0.8, 0.9])
    h = hindsight_saving(costs, acc, 0.8, 4.0)
    assert h.as_dict() == {"reached": True, "cost": 2.0, "true_accuracy": 0.8, "saving": 0.5, "point": 1}
    assert list(h.as_dict()) == ["reached", "cost", "true_accuracy", "saving", "point"]
    miss = hindsight_saving(costs, acc, 0.95, 4.0).as_dict()
    assert miss == {"reached": False, "cost": None, "saving": None, "true_accuracy": 0.9}
    assert hindsight_saving(costs, acc, 0.8, 0.0).saving is None
