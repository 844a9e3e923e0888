"""Every optimiser on the same fixed predictions, side by side (`optllm compare-optimizers`).

The exact front, OptLLM-M at several GN, and the paper's six evolutionary baselines get the
same predicted p; each result is scored against the exact TRUE front (from the labels) with
IGD, IGD+, HV and Δ (normalised cost units), and checked against the exact front over the
same predictions ("dominated by exact").
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from optllm.data import Outcomes
from optllm.errors import OptLLMError
from optllm.evaluate import indicators as ind
from optllm.optimize.moea import POP_SIZE
from optllm.optimize.registry import OPTIMIZERS, build_front
from optllm.optimize.types import FrontLike

__all__ = ["ALL_METHODS", "compare_optimizers", "expand_methods", "noisy_predictions"]

ALL_METHODS = tuple(OPTIMIZERS)
_TOL = 1e-9


def noisy_predictions(correct: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """Predictions from the labels: p = (1 − noise)·correct + noise·U, U ~ Uniform(0, 1) per
    (query, model), seeded. noise 0 gives the labels, 1 pure noise; p stays in [0, 1]."""
    rng = np.random.default_rng(seed)
    return (1.0 - noise) * np.asarray(correct, dtype=float) + noise * rng.random(np.shape(correct))


def expand_methods(methods: list[str] | tuple[str, ...], gns: tuple[int, ...]) -> list[str]:
    """'optllm-m' becomes one entry per GN ('optllm-m:10', ...); 'exact' always comes first."""
    out: list[str] = []
    for m in methods:
        m = m.strip().lower()
        if not m:
            continue
        if m in ("optllm-m", "optllm"):
            out += [f"optllm-m:{g}" for g in gns]
        elif m.startswith("optllm-m:"):
            try:
                g = int(m.split(":", 1)[1])
            except ValueError:
                raise OptLLMError(f"--methods: bad GN in {m!r} (use e.g. optllm-m:50)") from None
            if g < 1:
                raise OptLLMError(f"--methods: GN must be >= 1 in {m!r}")
            out.append(f"optllm-m:{g}")
        elif m in ALL_METHODS:
            out.append(m)
        else:
            raise OptLLMError(f"--methods: unknown method {m!r}; known: {', '.join(ALL_METHODS)} (or optllm-m:GN)")
    out = ["exact"] + [m for m in dict.fromkeys(out) if m != "exact"]
    return out


# ---------------------------------------------------------------------- one run
def _run_method(method: str, p: np.ndarray, cost: np.ndarray, models: tuple[str, ...], generations: int,
                seed: int) -> FrontLike:
    """One method ('exact', 'optllm-m:GN' or a MOEA) on predictions `p` (also the robust ones)."""
    name, _, gn = method.partition(":")
    return build_front(name, p, p, cost, models, gn=int(gn) if gn else 50, generations=generations, seed=seed)


def _warm_up(names: list[str], data: Outcomes, generations: int, seed: int) -> None:
    """Run every method once on a few queries so imports and one-off compilation (numba,
    pygmo start-up) stay out of the timings."""
    k = min(data.n, 8)
    p = noisy_predictions(data.correct[:k], 0.5, seed)
    for name in names:
        _run_method(name, p, data.cost[:k], data.models, 1, seed)


def _dominated(costs: np.ndarray, accs: np.ndarray, exact: FrontLike) -> np.ndarray:
    """Per point: is it weakly dominated by some point of the exact front (same predictions)?"""
    ec = np.asarray(exact.costs, dtype=float)
    ea = np.maximum.accumulate(np.asarray(exact.accuracies, dtype=float))
    idx = np.searchsorted(ec, costs * (1 + _TOL) + _TOL, side="right") - 1
    ok = idx >= 0
    out = np.zeros(costs.shape[0], dtype=bool)
    out[ok] = ea[idx[ok]] >= accs[ok] - _TOL
    return out


def _beyond_bound(costs: np.ndarray, accs: np.ndarray, exact: FrontLike) -> int | None:
    """How many points beat the exact front's certified LP upper bound at their cost (must
    be 0); None when the front gives no bound."""
    if not len(costs):
        return 0
    lp = getattr(exact, "lp_accuracy", None)
    if lp is None:
        return None
    ub = np.atleast_1d(np.asarray(lp(costs), dtype=float))
    return int(np.sum(np.isfinite(ub) & (accs > ub + _TOL)))


def _score(name: str, res: FrontLike, exact: FrontLike, rep: int, seconds: float, correct: np.ndarray,
           cost: np.ndarray, ref: np.ndarray, scale: float) -> dict[str, Any]:
    """The figures of one method's front in one repetition: size, best accuracies, dominance
    by the exact front on the same predictions, quality against the true front `ref`, and
    the savings against the best single model."""
    pts = ind.true_points(res, correct)
    costs, pacc = np.asarray(res.costs, dtype=float), np.asarray(res.accuracies, dtype=float)
    dom = _dominated(costs, pacc, exact)
    row: dict[str, Any] = {
        "rep": rep, "seconds": seconds, "points": len(res),
        "best_true_accuracy": float(pts[:, 1].max()), "best_predicted_accuracy": float(pacc.max()),
        "dominated_by_exact": bool(dom.all()), "not_dominated_points": int((~dom).sum()),
        "beyond_bound": 0 if name == "exact" else _beyond_bound(costs[~dom], pacc[~dom], exact),
    }
    row.update(ind.quality(pts, ref, cost_scale=scale))
    row.update({f"vs_best_{k}": v for k, v in ind.vs_best_single(pts, correct, cost, ref).items()
                if k in ("saving", "saving_99", "accuracy_gain", "headroom_captured")})
    return row


# ---------------------------------------------------------------------- summaries
def _mean_over_reps(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean of every figure over the repetitions (undefined ones left out; None when none is
    defined); `dominated_by_exact` becomes the count of repetitions where it held."""
    mean: dict[str, Any] = {}
    for k in rows[0]:
        if k in ("rep", "hv_ref", "hv_ref_norm"):
            continue
        vals = [r[k] for r in rows]
        if k == "dominated_by_exact":
            mean[k] = int(sum(vals))
            continue
        num = [float(v) for v in vals if v is not None and not (isinstance(v, float) and np.isnan(v))]
        mean[k] = float(np.mean(num)) if num else None
    return mean


def _speed(methods: dict[str, Any]) -> dict[str, Any]:
    """The exact front's mean time against every other method's."""
    t_exact = methods["exact"]["mean"]["seconds"]
    others = {m: v["mean"]["seconds"] for m, v in methods.items() if m != "exact"}
    fastest = min(others, key=others.get) if others else None  # type: ignore[arg-type]
    return {
        "exact_seconds": t_exact,
        "fastest_other": fastest,
        "fastest_other_seconds": others.get(fastest) if fastest else None,
        "speedup_vs_fastest_other": (others[fastest] / t_exact) if fastest and t_exact > 0 else None,
        "exact_fastest": bool(all(s > t_exact for s in others.values())),
        "speedup": {m: (s / t_exact if t_exact > 0 else None) for m, s in others.items()},
    }


def _check_options(reps: int, generations: int, noise: float) -> None:
    if reps < 1:
        raise OptLLMError(f"--reps must be >= 1, got {reps}")
    if generations < 1:
        raise OptLLMError(f"--generations must be >= 1, got {generations}")
    if not 0.0 <= noise <= 1.0:
        raise OptLLMError(f"--noise must lie in [0, 1], got {noise}")


def _runnable(names: list[str]) -> tuple[list[str], list[str]]:
    """(the methods that can run here, those skipped because an optional module is missing)."""
    skipped = [m for m in names if not OPTIMIZERS[m.partition(":")[0]].available()]
    return [m for m in names if m not in skipped], skipped


# ---------------------------------------------------------------------- the comparison
def compare_optimizers(
    data: Outcomes,
    *,
    reps: int = 3,
    generations: int = 100,
    noise: float = 0.3,
    gns: tuple[int, ...] = (10, 50, 200),
    methods: list[str] | tuple[str, ...] = ALL_METHODS,
    seed: int = 0,
    on_step: Callable[[int, str], None] | None = None,
) -> dict[str, Any]:
    """Run every method on the same predictions, `reps` times (new noise each time).

    Returns {"settings", "reference", "methods": {name: {"per_rep": [...], "mean": {...}}},
    "speed"}; figures per run: seconds, points, best true/predicted accuracy, IGD, IGD+,
    HV, Δ (raw and normalised), dominated_by_exact, beyond_bound.
    """
    from optllm.optimize.front import pareto_front

    _check_options(reps, generations, noise)
    names, skipped = _runnable(expand_methods(list(methods), gns))
    correct, cost, models = data.correct, data.cost, data.models
    singles = ind.single_models(correct, cost, models)
    truth = pareto_front(correct, cost, models=models)
    ref = ind.true_points(truth, correct)
    _warm_up(names, data, generations, seed)
    per: dict[str, list[dict[str, Any]]] = {m: [] for m in names}
    step = 0
    for rep in range(reps):
        p = noisy_predictions(correct, noise, seed + rep)
        exact: FrontLike | None = None
        for name in names:  # 'exact' comes first: every other method is checked against it
            if on_step:
                on_step(step, f"rep {rep + 1}/{reps}: {name}")
            t0 = time.perf_counter()
            res = _run_method(name, p, cost, models, generations, seed + rep)
            secs = time.perf_counter() - t0
            if name == "exact":
                exact = res
            assert exact is not None
            per[name].append(_score(name, res, exact, rep, secs, correct, cost, ref, singles.cost_scale))
            step += 1
    out_methods = {name: {"mean": _mean_over_reps(rows), "per_rep": rows} for name, rows in per.items()}
    return {
        "settings": {"data": data.name, "n_queries": data.n, "n_models": data.m, "reps": reps,
                     "generations": generations, "population": POP_SIZE, "noise": noise, "gn": list(gns),
                     "seed": seed, "predictions": "p = (1 - noise) * correct + noise * Uniform(0, 1), seed + rep",
                     "skipped": skipped},
        "reference": {"true_front_points": len(truth), "cost_scale": singles.cost_scale,
                      "best_single_model": singles.best_name, "best_single_accuracy": singles.best_accuracy,
                      "best_single_cost": singles.best_cost, "hv_ref_norm": [ind.HV_REF_COST_FACTOR, 0.0]},
        "methods": out_methods,
        "speed": _speed(out_methods),
    }
