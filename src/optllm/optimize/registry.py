"""Every optimiser by name: the exact front, the paper's OptLLM-M and the six MOEAs.

One `Optimizer` entry per optimiser in `OPTIMIZERS`; everything else (`MOEAS`, the CLI's
choices, `build_front`, `run_moea`'s dispatch) is derived from it, so adding an optimiser
is one entry here (plus its implementation).

Every entry's `build(p, p_robust, cost, models, *, gn, generations, seed)` returns a
`FrontLike` from the mean predictions `p` and the robust ones `p_robust` (p̄ + α·σ):

- ``exact``: the exact front on `p_robust` (`pareto_front`);
- ``optllm-m``: the paper's heuristic, base `p` and robust `p_robust`, `gn` steps;
- MOEAs: the algorithm on `p_robust`, `generations` generations, seeded with `seed`.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, Sequence

import numpy as np

from optllm.errors import OptLLMError
from optllm.optimize import moea
from optllm.optimize.front import pareto_front
from optllm.optimize.paper import optllm_m
from optllm.optimize.solutions import SolutionSet
from optllm.optimize.types import FrontLike

__all__ = ["Optimizer", "OPTIMIZERS", "MOEAS", "build_front", "get_optimizer", "importable"]

Kind = Literal["exact", "paper", "moea"]


class Builder(Protocol):
    """How every optimiser is called."""

    def __call__(self, p: np.ndarray, p_robust: np.ndarray, cost: np.ndarray, models: Sequence[str] | None, *,
                 gn: int, generations: int, seed: int) -> FrontLike: ...


@dataclass(frozen=True)
class Optimizer:
    """One optimiser: its name, its kind, how to build its front, and what it needs.

    `run` is, for a MOEA, the algorithm itself, ``run(p, cost, *, generations, seed,
    pop_size, models) -> SolutionSet`` (what `run_moea` dispatches to); None otherwise.
    `requires`: optional modules it imports (its `available()` checks them).
    """

    name: str
    kind: Kind
    build: Builder
    summary: str = ""
    requires: tuple[str, ...] = ()
    run: Callable[..., SolutionSet] | None = None

    def available(self) -> bool:
        """Whether every module in `requires` can be imported."""
        return all(importable(m) for m in self.requires)


def importable(module: str) -> bool:
    """Whether `module` can be imported (an optional dependency is installed)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _exact(p: np.ndarray, p_robust: np.ndarray, cost: np.ndarray, models: Sequence[str] | None, *,
           gn: int, generations: int, seed: int) -> FrontLike:
    return pareto_front(p_robust, cost, models=models)


def _optllm_m(p: np.ndarray, p_robust: np.ndarray, cost: np.ndarray, models: Sequence[str] | None, *,
              gn: int, generations: int, seed: int) -> FrontLike:
    return optllm_m(p, p_robust, cost, gn=gn, models=models)


def _moea(name: str, run: Callable[..., SolutionSet], summary: str, requires: tuple[str, ...] = ()) -> Optimizer:
    """A MOEA entry: built through `run_moea` (checks, then `run`) on the robust predictions."""

    def build(p: np.ndarray, p_robust: np.ndarray, cost: np.ndarray, models: Sequence[str] | None, *,
              gn: int, generations: int, seed: int) -> FrontLike:
        return moea.run_moea(name, p_robust, cost, generations=generations, seed=seed, models=models)

    return Optimizer(name, "moea", build, summary, requires, run)


_ENTRIES = (
    Optimizer("exact", "exact", _exact, "the exact cost/accuracy Pareto front (certified)"),
    Optimizer("optllm-m", "paper", _optllm_m, "OptLLM-M, the paper's heuristic (about 2·GN points)"),
    _moea("nsga2", moea.nsga2, "NSGA-II (pymoo)"),
    _moea("rnsga2", moea.rnsga2, "R-NSGA-II (pymoo)"),
    _moea("smsemoa", moea.smsemoa, "SMS-EMOA (pymoo)"),
    _moea("moead", moea.moead, "MOEA/D (pygmo)", ("pygmo",)),
    _moea("moeadgen", moea.moead_gen, "MOEA/D-GEN (pygmo)", ("pygmo",)),
    _moea("mopso", moea.mopso, "MOPSO, nspso (pygmo)", ("pygmo",)),
)
OPTIMIZERS: dict[str, Optimizer] = {o.name: o for o in _ENTRIES}
MOEAS: tuple[str, ...] = tuple(name for name, o in OPTIMIZERS.items() if o.kind == "moea")


def get_optimizer(name: str) -> Optimizer:
    """The entry called `name`; a clear error naming the known ones otherwise."""
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise OptLLMError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}") from None


def build_front(name: str, p: np.ndarray, p_robust: np.ndarray, cost: np.ndarray, models: Sequence[str] | None,
                *, gn: int = 50, generations: int = 100, seed: int = 0) -> FrontLike:
    """Run optimiser `name` on the predictions (see the module docstring for what each uses)."""
    return get_optimizer(name).build(p, p_robust, cost, models, gn=gn, generations=generations, seed=seed)
