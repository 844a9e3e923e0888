"""The six evolutionary baselines: valid integer assignments, non-dominated results,
reproducible with an explicit seed. Tiny instances and few generations."""
from __future__ import annotations

import numpy as np
import pytest

from optllm.errors import OptLLMError
from optllm.optimize.moea import pygmo_available, run_moea
from optllm.optimize.registry import MOEAS
from optllm.optimize.solutions import SolutionSet, objectives
from optllm.optimize.types import FrontLike

PYGMO = {"moead", "moeadgen", "mopso"}


def _instance(n: int = 25, m: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.random((n, m)), rng.random((n, m)) + 0.01


def _skip_if_no_pygmo(name: str) -> None:
    if name in PYGMO and not pygmo_available():
        pytest.skip("pygmo not installed (optional extra optllm[moea])")


@pytest.mark.parametrize("name", MOEAS)
def test_moea_returns_valid_nondominated_set(name):
    _skip_if_no_pygmo(name)
    p, c = _instance()
    s = run_moea(name, p, c, generations=3, seed=1)
    assert isinstance(s, SolutionSet) and isinstance(s, FrontLike)
    assert len(s) >= 1
    assert s.assignments.dtype.kind == "i"
    assert s.assignments.min() >= 0 and s.assignments.max() < p.shape[1]
    cc, aa = objectives(s.assignments, p, c)
    assert np.allclose(cc, s.costs) and np.allclose(aa, s.accuracies)
    assert np.all(np.diff(s.costs) > 0) and np.all(np.diff(s.accuracies) > 0)
    assert s.info["seconds"] > 0 and s.info["pop_size"] == 100 and s.info["generations"] == 3
    assert s.method == name


@pytest.mark.parametrize("name", MOEAS)
def test_moea_seeded_reproducible(name):
    _skip_if_no_pygmo(name)
    p, c = _instance(seed=2)
    a = run_moea(name, p, c, generations=2, seed=7)
    b = run_moea(name, p, c, generations=2, seed=7)
    assert np.array_equal(a.assignments, b.assignments)


def test_more_generations_do_not_hurt_nsga2_hypervolume():
    from optllm.evaluate.indicators import hypervolume

    p, c = _instance(n=30, m=3, seed=4)
    ref = (c.max(axis=1).sum() * 1.1, 0.0)
    short = run_moea("nsga2", p, c, generations=2, seed=0)
    long = run_moea("nsga2", p, c, generations=30, seed=0)
    assert hypervolume(long.points(), ref) >= hypervolume(short.points(), ref) - 1e-12


def test_aliases_and_errors():
    p, c = _instance(n=10, m=2)
    assert run_moea("NSGA-II", p, c, generations=1, seed=0).method == "nsga2"
    with pytest.raises(OptLLMError):
        run_moea("nsga3", p, c)
    with pytest.raises(OptLLMError):
        run_moea("nsga2", p, c, generations=0)


def test_single_model_instance():
    p, c = _instance(n=8, m=1)
    s = run_moea("nsga2", p, c, generations=2, seed=0)
    assert len(s) == 1 and np.all(s.assignments == 0)
