"""The paper's six evolutionary baselines, run through the libraries the authors used.

NSGA-II, R-NSGA-II and SMS-EMOA from pymoo; MOEA/D, MOEA/D-GEN and MOPSO (nspso) from pygmo
(optional dependency ``optllm[moea]``). One integer gene per query (the model index),
population 100, objectives total cost (min) and mean p (max, passed as −mean p).

Operator settings follow the authors' code (``baselines/pymoo_lib.py``, ``pygmo_lib.py``,
tuned values from their ``parameter_setting``), with these deliberate differences, all
so that every method works on the same integer encoding:

- pymoo: genes are sampled as integers (NSGA-II: Latin hypercube, rounded; the others:
  uniform integers) and SBX / polynomial mutation run on floats followed by pymoo's
  ``RoundingRepair`` (the authors' SMS-EMOA and R-NSGA-II ran on floats and truncated with
  ``astype(int)``). Every evaluation also rounds, so a float gene never reaches the objective.
- pygmo's algorithms are continuous: genes live in [0, m−1] and are rounded to the nearest
  model inside the fitness function (rounding repair); the final population is rounded the
  same way. The problem declares all genes integer, as the authors' did.
- R-NSGA-II's reference points are the two extremes (all-cheapest, all-most-accurate per
  query) of the same predictions, as in the authors' code.
- Seeds are explicit: pymoo ``minimize(seed=...)``, pygmo ``population(seed=...)`` and
  the algorithm's ``seed``.

Each function returns the non-dominated final set as a `SolutionSet` (re-evaluated on the
rounded genes) with ``info["seconds"]``.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np

from optllm.errors import OptLLMError
from optllm.optimize.paper import _inputs, extremes
from optllm.optimize.solutions import SolutionSet, objectives

__all__ = ["run_moea", "nsga2", "rnsga2", "smsemoa", "moead", "moead_gen", "mopso", "pygmo_available"]

POP_SIZE = 100


def pygmo_available() -> bool:
    """Whether pygmo (for MOEA/D, MOEA/D-GEN, MOPSO) can be imported."""
    from optllm.optimize.registry import importable

    return importable("pygmo")


def _round(x: np.ndarray, m: int) -> np.ndarray:
    return np.clip(np.rint(x), 0, m - 1).astype(np.intp)


def _result(X: np.ndarray, p: np.ndarray, cost: np.ndarray, name: str, t0: float,
            models: Sequence[str] | None, info: dict[str, Any]) -> SolutionSet:
    a = _round(np.atleast_2d(X), p.shape[1])
    out = SolutionSet.from_assignments(a, p, cost, models=models, method=name, info=info)
    out.info["seconds"] = time.perf_counter() - t0
    return out


# ---------------------------------------------------------------------- pymoo
def _pymoo_problem(p: np.ndarray, cost: np.ndarray) -> Any:
    from pymoo.core.problem import Problem

    n, m = p.shape
    rows = np.arange(n)[None, :]

    class AssignmentProblem(Problem):
        def __init__(self) -> None:
            super().__init__(n_var=n, n_obj=2, xl=0, xu=m - 1, vtype=int)

        def _evaluate(self, X: np.ndarray, out: dict, *args: Any, **kwargs: Any) -> None:
            a = _round(X, m)
            out["F"] = np.column_stack([cost[rows, a].sum(axis=1), -p[rows, a].mean(axis=1)])

    return AssignmentProblem()


def _pymoo_run(name: str, algorithm: Any, p: np.ndarray, cost: np.ndarray, generations: int, seed: int,
               t0: float, models: Sequence[str] | None, info: dict[str, Any]) -> SolutionSet:
    from pymoo.optimize import minimize

    res = minimize(_pymoo_problem(p, cost), algorithm, ("n_gen", int(generations)), seed=int(seed), verbose=False)
    X = res.X if res.X is not None else res.pop.get("X")
    return _result(X, p, cost, name, t0, models, info)


def _int_ops(sbx_prob: float, sbx_eta: float, pm_prob: float | None, pm_eta: float) -> dict[str, Any]:
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair

    pm = PM(eta=pm_eta, vtype=float, repair=RoundingRepair()) if pm_prob is None else \
        PM(prob=pm_prob, eta=pm_eta, vtype=float, repair=RoundingRepair())
    return {"crossover": SBX(prob=sbx_prob, eta=sbx_eta, vtype=float, repair=RoundingRepair()),
            "mutation": pm, "repair": RoundingRepair()}


def nsga2(p: np.ndarray, cost: np.ndarray, *, generations: int = 100, seed: int = 0,
          pop_size: int = POP_SIZE, models: Sequence[str] | None = None) -> SolutionSet:
    """NSGA-II (pymoo): LHS sampling, binary tournament, SBX(0.9053, η 24), PM(0.0023, η 6),
    duplicates eliminated (the authors' tuned values)."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.operators.sampling.lhs import LHS

    t0 = time.perf_counter()
    pb, _, c = _inputs(p, None, cost)
    algo = NSGA2(pop_size=pop_size, sampling=LHS(), eliminate_duplicates=True, **_int_ops(0.9053, 24, 0.0023, 6))
    return _pymoo_run("nsga2", algo, pb, c, generations, seed, t0, models,
                      {"generations": generations, "pop_size": pop_size, "seed": seed})


def rnsga2(p: np.ndarray, cost: np.ndarray, *, generations: int = 100, seed: int = 0,
           pop_size: int = POP_SIZE, models: Sequence[str] | None = None) -> SolutionSet:
    """R-NSGA-II (pymoo): reference points = the two extremes, ε 0.1043, front normalisation,
    extreme points as reference points, weights (0.5, 0.5); pymoo's default SBX(0.9, η 15)
    and PM(η 20) with rounding repair."""
    from pymoo.algorithms.moo.rnsga2 import RNSGA2
    from pymoo.operators.sampling.rnd import IntegerRandomSampling

    t0 = time.perf_counter()
    pb, _, c = _inputs(p, None, cost)
    lo, hi = extremes(pb, pb, c)
    cc, aa = objectives(np.vstack([lo, hi]), pb, c)
    ref = np.column_stack([cc, -aa])
    algo = RNSGA2(ref_points=ref, pop_size=pop_size, epsilon=0.1043, normalization="front",
                  extreme_points_as_reference_points=True, weights=np.array([0.5, 0.5]),
                  sampling=IntegerRandomSampling(), **_int_ops(0.9, 15, None, 20))
    return _pymoo_run("rnsga2", algo, pb, c, generations, seed, t0, models,
                      {"generations": generations, "pop_size": pop_size, "seed": seed, "ref_points": ref.tolist()})


def smsemoa(p: np.ndarray, cost: np.ndarray, *, generations: int = 100, seed: int = 0,
            pop_size: int = POP_SIZE, models: Sequence[str] | None = None) -> SolutionSet:
    """SMS-EMOA (pymoo): random integer sampling, SBX(0.9167, η 29), PM(0.7388, η 16)."""
    from pymoo.algorithms.moo.sms import SMSEMOA
    from pymoo.operators.sampling.rnd import IntegerRandomSampling

    t0 = time.perf_counter()
    pb, _, c = _inputs(p, None, cost)
    algo = SMSEMOA(pop_size=pop_size, sampling=IntegerRandomSampling(), eliminate_duplicates=True,
                   **_int_ops(0.9167, 29, 0.7388, 16))
    return _pymoo_run("smsemoa", algo, pb, c, generations, seed, t0, models,
                      {"generations": generations, "pop_size": pop_size, "seed": seed})


# ---------------------------------------------------------------------- pygmo
class _PygmoProblem:
    """User-defined pygmo problem: rounding repair inside the fitness."""

    def __init__(self, p: np.ndarray, cost: np.ndarray) -> None:
        self.p, self.cost = p, cost
        self.n, self.m = p.shape
        self.rows = np.arange(self.n)

    def fitness(self, x: np.ndarray) -> list[float]:
        a = _round(np.asarray(x), self.m)
        return [float(self.cost[self.rows, a].sum()), -float(self.p[self.rows, a].mean())]

    def get_nobj(self) -> int:
        return 2

    def get_nix(self) -> int:
        return self.n

    def get_bounds(self) -> tuple[list[int], list[int]]:
        return [0] * self.n, [self.m - 1] * self.n

    def get_name(self) -> str:
        return "optllm query assignment"


def _pygmo_run(name: str, make_algo: Callable[[Any], Any], p: np.ndarray, cost: np.ndarray, generations: int,
               seed: int, pop_size: int, models: Sequence[str] | None) -> SolutionSet:
    t0 = time.perf_counter()
    pb, _, c = _inputs(p, None, cost)
    try:
        import pygmo as pg
    except ImportError:
        raise OptLLMError(f"{name} needs pygmo: pip install 'optllm[moea]' (or use the pymoo methods: "
                          "nsga2, rnsga2, smsemoa)") from None
    prob = pg.problem(_PygmoProblem(pb, c))
    pop = pg.population(prob, size=int(pop_size), seed=int(seed))
    pop = pg.algorithm(make_algo(pg)).evolve(pop)
    return _result(pop.get_x(), pb, c, name, t0, models,
                   {"generations": generations, "pop_size": pop_size, "seed": seed})


def moead(p: np.ndarray, cost: np.ndarray, *, generations: int = 100, seed: int = 0,
          pop_size: int = POP_SIZE, models: Sequence[str] | None = None) -> SolutionSet:
    """MOEA/D (pygmo ``moead``): grid weights, weighted-sum decomposition, 29 neighbours."""
    return _pygmo_run("moead", lambda pg: pg.moead(gen=int(generations), weight_generation="grid",
                                                   decomposition="weighted", neighbours=29, seed=int(seed)),
                      p, cost, generations, seed, pop_size, models)


def moead_gen(p: np.ndarray, cost: np.ndarray, *, generations: int = 100, seed: int = 0,
              pop_size: int = POP_SIZE, models: Sequence[str] | None = None) -> SolutionSet:
    """MOEA/D-GEN (pygmo ``moead_gen``): random weights, weighted-sum decomposition, 11 neighbours."""
    return _pygmo_run("moeadgen", lambda pg: pg.moead_gen(gen=int(generations), weight_generation="random",
                                                          decomposition="weighted", neighbours=11, seed=int(seed)),
                      p, cost, generations, seed, pop_size, models)


def mopso(p: np.ndarray, cost: np.ndarray, *, generations: int = 100, seed: int = 0,
          pop_size: int = POP_SIZE, models: Sequence[str] | None = None) -> SolutionSet:
    """MOPSO (pygmo ``nspso``): ω 0.9375, c1 0.7631, c2 0.6387, v_coeff 0.1550."""
    return _pygmo_run("mopso", lambda pg: pg.nspso(gen=int(generations), omega=0.9375, c1=0.7631, c2=0.6387,
                                                   v_coeff=0.1550, seed=int(seed)),
                      p, cost, generations, seed, pop_size, models)


_ALIASES = {"nsgaii": "nsga2", "rnsgaii": "rnsga2", "nspso": "mopso"}


def run_moea(name: str, p: np.ndarray, cost: np.ndarray, *, generations: int = 100, seed: int = 0,
             pop_size: int = POP_SIZE, models: Sequence[str] | None = None) -> SolutionSet:
    """Run one baseline by name: nsga2, rnsga2, smsemoa, moead, moeadgen, mopso (the MOEAs
    of `optllm.optimize.registry.OPTIMIZERS`; NSGA-II, MOEA/D-GEN, nspso and the like also work)."""
    from optllm.optimize.registry import MOEAS, OPTIMIZERS

    key = name.lower().replace("-", "").replace("_", "").replace("/", "")
    key = _ALIASES.get(key, key)
    if key not in MOEAS:
        raise OptLLMError(f"unknown evolutionary method {name!r}; known: {', '.join(MOEAS)}")
    if int(generations) < 1:
        raise OptLLMError(f"generations must be >= 1, got {generations}")
    run = OPTIMIZERS[key].run
    assert run is not None  # every MOEA entry has its algorithm
    return run(p, cost, generations=generations, seed=seed, pop_size=pop_size, models=models)
