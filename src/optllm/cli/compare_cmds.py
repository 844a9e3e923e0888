"""`optllm compare-optimizers`: every optimiser on the same fixed predictions, side by side.

The exact front, OptLLM-M at several GN, and the paper's six evolutionary baselines get the
same predicted p; each result is scored against the exact TRUE front (from the labels) with
IGD, IGD+, HV and Δ (normalised cost units), and checked against the exact front over the
same predictions ("dominated by exact").
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from optllm.cli.app import app, console, emit_json, err_console
from optllm.data import Outcomes, load
from optllm.errors import OptLLMError

MOEA_METHODS = ("nsga2", "rnsga2", "smsemoa", "moead", "moeadgen", "mopso")
ALL_METHODS = ("exact", "optllm-m") + MOEA_METHODS
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


def _dominated(costs: np.ndarray, accs: np.ndarray, exact: Any) -> np.ndarray:
    """Per point: is it weakly dominated by some point of the exact front (same predictions)?"""
    ec = np.asarray(exact.costs, dtype=float)
    ea = np.maximum.accumulate(np.asarray(exact.accuracies, dtype=float))
    idx = np.searchsorted(ec, costs * (1 + _TOL) + _TOL, side="right") - 1
    ok = idx >= 0
    out = np.zeros(costs.shape[0], dtype=bool)
    out[ok] = ea[idx[ok]] >= accs[ok] - _TOL
    return out


def _beyond_bound(costs: np.ndarray, accs: np.ndarray, exact: Any) -> int | None:
    """How many points beat the exact front's certified LP upper bound at their cost (must
    be 0); None when the front gives no bound."""
    if not len(costs):
        return 0
    lp = getattr(exact, "lp_accuracy", None)
    if lp is None:
        return None
    ub = np.atleast_1d(np.asarray(lp(costs), dtype=float))
    return int(np.sum(np.isfinite(ub) & (accs > ub + _TOL)))


def _run_method(method: str, p: np.ndarray, cost: np.ndarray, models: tuple[str, ...], generations: int,
                seed: int) -> Any:
    from optllm.optimize.moea import run_moea
    from optllm.optimize.paper import optllm_m

    if method == "exact":
        from optllm.optimize.front import pareto_front

        return pareto_front(p, cost, models=models)
    if method.startswith("optllm-m:"):
        return optllm_m(p, None, cost, gn=int(method.split(":", 1)[1]), models=models)
    return run_moea(method, p, cost, generations=generations, seed=seed, models=models)


def _warm_up(names: list[str], data: Outcomes, generations: int, seed: int) -> None:
    """Run every method once on a few queries so imports and one-off compilation (numba,
    pygmo start-up) stay out of the timings."""
    k = min(data.n, 8)
    p = noisy_predictions(data.correct[:k], 0.5, seed)
    for name in names:
        _run_method(name, p, data.cost[:k], data.models, 1, seed)


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
    from optllm.evaluate import indicators as ind
    from optllm.optimize.front import pareto_front

    if reps < 1:
        raise OptLLMError(f"--reps must be >= 1, got {reps}")
    if generations < 1:
        raise OptLLMError(f"--generations must be >= 1, got {generations}")
    if not 0.0 <= noise <= 1.0:
        raise OptLLMError(f"--noise must lie in [0, 1], got {noise}")
    names = expand_methods(list(methods), gns)
    from optllm.optimize.moea import pygmo_available

    skipped = []
    if not pygmo_available():
        skipped = [m for m in names if m in ("moead", "moeadgen", "mopso")]
        names = [m for m in names if m not in skipped]
    correct, cost, models = data.correct, data.cost, data.models
    singles = ind.single_models(correct, cost)
    scale = singles["cost_scale"]
    truth = pareto_front(correct, cost, models=models)
    ref = ind.true_points(truth, correct)
    _warm_up(names, data, generations, seed)
    per: dict[str, list[dict[str, Any]]] = {m: [] for m in names}
    step = 0
    for rep in range(reps):
        p = noisy_predictions(correct, noise, seed + rep)
        exact = None
        for name in names:
            if on_step:
                on_step(step, f"rep {rep + 1}/{reps}: {name}")
            t0 = time.perf_counter()
            res = _run_method(name, p, cost, models, generations, seed + rep)
            secs = time.perf_counter() - t0
            if name == "exact":
                exact = res
            pts = ind.true_points(res, correct)
            costs, pacc = np.asarray(res.costs, dtype=float), np.asarray(res.accuracies, dtype=float)
            dom = _dominated(costs, pacc, exact)
            row: dict[str, Any] = {
                "rep": rep, "seconds": secs, "points": len(res),
                "best_true_accuracy": float(pts[:, 1].max()), "best_predicted_accuracy": float(pacc.max()),
                "dominated_by_exact": bool(dom.all()), "not_dominated_points": int((~dom).sum()),
                "beyond_bound": 0 if name == "exact" else _beyond_bound(costs[~dom], pacc[~dom], exact),
            }
            row.update(ind.quality(pts, ref, cost_scale=scale))
            row.update({f"vs_best_{k}": v for k, v in ind.vs_best_single(pts, correct, cost, ref).items()
                        if k in ("saving", "saving_99", "accuracy_gain", "headroom_captured")})
            per[name].append(row)
            step += 1
    out_methods: dict[str, Any] = {}
    for name, rows in per.items():
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
        out_methods[name] = {"mean": mean, "per_rep": rows}
    t_exact = out_methods["exact"]["mean"]["seconds"]
    others = {m: v["mean"]["seconds"] for m, v in out_methods.items() if m != "exact"}
    fastest = min(others, key=others.get) if others else None
    speed = {
        "exact_seconds": t_exact,
        "fastest_other": fastest,
        "fastest_other_seconds": others.get(fastest) if fastest else None,
        "speedup_vs_fastest_other": (others[fastest] / t_exact) if fastest and t_exact > 0 else None,
        "exact_fastest": bool(all(s > t_exact for s in others.values())),
        "speedup": {m: (s / t_exact if t_exact > 0 else None) for m, s in others.items()},
    }
    return {
        "settings": {"data": data.name, "n_queries": data.n, "n_models": data.m, "reps": reps,
                     "generations": generations, "population": 100, "noise": noise, "gn": list(gns),
                     "seed": seed, "predictions": "p = (1 - noise) * correct + noise * Uniform(0, 1), seed + rep",
                     "skipped": skipped},
        "reference": {"true_front_points": len(truth), "cost_scale": scale,
                      "best_single_model": models[singles["best"]], "best_single_accuracy": singles["best_accuracy"],
                      "best_single_cost": singles["best_cost"], "hv_ref_norm": [ind.HV_REF_COST_FACTOR, 0.0]},
        "methods": out_methods,
        "speed": speed,
    }


def _fmt(v: Any, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def print_comparison(res: dict[str, Any]) -> None:
    """The rich table of `compare_optimizers` results (means over repetitions)."""
    from rich import box
    from rich.console import Console

    out = console if console.is_terminal else Console(width=max(console.width, 150))
    s, r = res["settings"], res["reference"]
    t = Table(title=(f"{s['data']}: {s['n_queries']:,} queries × {s['n_models']} LLMs, same predictions "
                     f"(noise {s['noise']}), {s['reps']} rep(s), MOEAs {s['generations']} gen × 100"),
              box=box.SIMPLE_HEAD)
    cols = [("method", "left"), ("points", "right"), ("IGD", "right"), ("IGD+", "right"), ("HV", "right"),
            ("Δ", "right"), ("IGD $", "right"), ("best true acc", "right"), ("time s", "right"),
            ("× exact", "right"), ("dominated by exact", "left")]
    for name, just in cols:
        t.add_column(name, justify=just, no_wrap=True)  # type: ignore[arg-type]
    t_exact = res["speed"]["exact_seconds"]
    for name, v in res["methods"].items():
        m = v["mean"]
        if name == "exact":
            dom = "–"
        else:
            k = m["dominated_by_exact"]
            dom = "yes" if k == s["reps"] else f"[red]no[/] ({s['reps'] - k}/{s['reps']} reps)"
            if m.get("beyond_bound"):
                dom += " [red]BEYOND BOUND[/]"
        ratio = m["seconds"] / t_exact if t_exact > 0 else None
        t.add_row(name, f"{m['points']:.0f}", _fmt(m["igd_norm"], ".4f"), _fmt(m["igd_plus_norm"], ".4f"),
                  _fmt(m["hv_norm"], ".4f"), _fmt(m["delta_norm"], ".3f"), _fmt(m["igd"], ".3f"),
                  _fmt(m["best_true_accuracy"], ".4f"), _fmt(m["seconds"], ".3f"),
                  "1" if name == "exact" else _fmt(ratio, ",.0f"), dom,
                  style="bold" if name == "exact" else None)
    out.print(t)
    out.print(f"IGD, IGD+, HV, Δ against the exact TRUE front ({r['true_front_points']:,} points, from the labels), "
              f"cost normalised by the dearest single model (${r['cost_scale']:.4f}); HV reference point "
              f"(cost {r['hv_ref_norm'][0]}, accuracy {r['hv_ref_norm'][1]}). Times exclude imports and "
              f"one-off compilation (warm-up on a few queries).")
    sp = res["speed"]
    if sp["fastest_other"]:
        verdict = "the fastest" if sp["exact_fastest"] else "[red]not the fastest[/]"
        out.print(f"Exact front: {sp['exact_seconds']:.3f} s, {verdict}; next fastest "
                  f"{sp['fastest_other']} {sp['fastest_other_seconds']:.3f} s "
                  f"({sp['speedup_vs_fastest_other']:,.1f}× the exact time).")
    if s["skipped"]:
        out.print(f"[yellow]skipped (pygmo not installed):[/] {', '.join(s['skipped'])}")


@app.command("compare-optimizers")
def compare_optimizers_cmd(
    data: str = typer.Argument(..., help="Named dataset or path to a long/wide file."),
    reps: int = typer.Option(3, "--reps", help="Repetitions, each with fresh noise (seed + rep)."),
    generations: int = typer.Option(100, "--generations", help="MOEA generations (paper: 100-200)."),
    noise: float = typer.Option(0.3, "--noise", help="p = (1 - noise)·label + noise·Uniform(0,1)."),
    gn: str = typer.Option("10,50,200", "--gn", help="OptLLM-M GN values, comma-separated."),
    methods: str = typer.Option(",".join(ALL_METHODS), "--methods",
                                help="Comma-separated: exact, optllm-m (or optllm-m:GN), nsga2, rnsga2, smsemoa, "
                                     "moead, moeadgen, mopso. 'exact' always runs."),
    seed: int = typer.Option(0, "--seed", help="Seed of the noise and of every optimiser."),
    json_path: str = typer.Option(None, "--json", help="Write the full results as JSON to PATH ('-': stdout, no table)."),
) -> None:
    """Run the exact front, OptLLM-M and the six MOEAs on the same predictions; compare
    IGD, IGD+, HV, Δ, points, best accuracy and time, and check the exact front dominates."""
    try:
        gns = tuple(int(x) for x in gn.split(",") if x.strip())
    except ValueError:
        raise OptLLMError(f"--gn: expected comma-separated integers, got {gn!r}") from None
    if not gns or min(gns) < 1:
        raise OptLLMError(f"--gn: need one or more integers >= 1, got {gn!r}")
    outcomes = load(data)
    names = expand_methods(methods.split(","), gns)
    total = reps * len(names)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task("starting", total=total)

        def on_step(i: int, what: str) -> None:
            bar.update(task, completed=i, description=what)

        res = compare_optimizers(outcomes, reps=reps, generations=generations, noise=noise, gns=gns,
                                 methods=methods.split(","), seed=seed, on_step=on_step)
        bar.update(task, completed=total)
    if json_path == "-":
        emit_json(res)
        return
    if json_path:
        from optllm.io import write_json

        write_json(json_path, res)
    print_comparison(res)
    if json_path:
        err_console.print(f"JSON written to {json_path}")
