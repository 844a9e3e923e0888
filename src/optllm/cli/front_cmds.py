"""`optllm front` (the exact true front of a dataset) and `optllm bench-speed` (how fast
`pareto_front` is against a plain argsort of the same number of floats)."""
from __future__ import annotations

import gc
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import typer
from rich.table import Table

from optllm.cli.app import app, console, emit_json
from optllm.errors import OptLLMError

DEFAULT_SIZES = ("1e4x12", "1e5x12", "1e6x12", "1e6x40")


# ---------------------------------------------------------------------- optllm front
def truth_summary(data: Any, front: Any) -> dict[str, Any]:
    """The figures `optllm front` prints: both ends, the best single model, the cost of
    reaching its accuracy (and the saving), and the accuracy reachable at its cost."""
    acc, tot = data.model_accuracy(), data.model_total_cost()
    b = data.best_model()
    best_acc, best_cost = float(acc[b]), float(tot[b])
    at_acc = front.at_accuracy(best_acc)
    at_cost = front.at_budget(best_cost)
    return {
        "dataset": data.name, "n_queries": data.n, "n_models": data.m, "points": len(front),
        "seconds": front.info.get("seconds"),
        "cheapest": {"cost": float(front.costs[0]), "accuracy": float(front.accuracies[0])},
        "most_accurate": {"cost": float(front.costs[-1]), "accuracy": float(front.accuracies[-1])},
        "best_model": {"name": data.models[b], "accuracy": best_acc, "cost": best_cost},
        "at_best_accuracy": {"cost": at_acc.cost, "cost_lower_bound": at_acc.cost_lower_bound,
                             "accuracy": at_acc.accuracy,
                             "saving": 1.0 - at_acc.cost / best_cost if best_cost > 0 else None},
        "at_best_cost": {"accuracy": at_cost.accuracy, "upper_bound": at_cost.upper_bound, "cost": at_cost.cost,
                         "gain": at_cost.accuracy - best_acc},
        "single_models": {name: {"cost": float(tot[k]), "accuracy": float(acc[k])} for k, name in enumerate(data.models)},
    }


@app.command("front")
def front_cmd(
    data: str = typer.Argument(..., help="Named dataset or path to a long/wide file with labels."),
    truth: bool = typer.Option(False, "--truth", help="The true front from the 0/1 labels (exact, hindsight)."),
    out: Path = typer.Option(None, "--out", help="Write the front's points to this CSV."),
    plot: Path = typer.Option(None, "--plot", help="Write a PNG: the front and every single LLM as a labelled dot."),
    max_points: int = typer.Option(0, "--max-points", help="Thin the CSV to at most this many points (0: all)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """The exact cost/accuracy Pareto front of a dataset: points, both ends, and the saving
    against the best single LLM."""
    if not truth:
        raise OptLLMError("a front from predictions comes with `optllm run DATA` (it labels a sample and predicts "
                          "the rest); add --truth for the exact true front from DATA's labels")
    if max_points < 0:
        raise OptLLMError(f"--max-points must be ≥ 0, got {max_points}")
    from optllm.data import load
    from optllm.optimize.front import pareto_front

    d = load(data)
    front = pareto_front(d.correct, d.cost, models=d.models)
    s = truth_summary(d, front)
    if out is not None:
        front.write_csv(str(out), max_points=max_points or None)
        s["csv"] = str(out)
    if plot is not None:
        from optllm.evaluate.plots import plot_front

        pts = front.points(max_points=5000)
        xs = [c for c in [*pts[:, 0], *(v["cost"] for v in s["single_models"].values())] if c > 0]
        plot_front(plot, logx=bool(xs) and max(xs) / min(xs) > 50, series={"true front (exact)": (pts[:, 0], pts[:, 1])},
                   points={k: (v["cost"], v["accuracy"]) for k, v in s["single_models"].items()},
                   title=f"{d.name}: true cost/accuracy front, {d.n:,} queries × {d.m} LLMs")
        s["plot"] = str(plot)
    if json_out:
        emit_json(s)
        return
    _print_summary(s)


def _print_summary(s: dict[str, Any]) -> None:
    t = Table(title=f"{s['dataset']}: true front, {s['n_queries']:,} queries × {s['n_models']} LLMs "
                    f"({s['points']:,} points)")
    t.add_column("")
    t.add_column("cost $", justify="right")
    t.add_column("accuracy", justify="right")
    bm = s["best_model"]
    ab, ac = s["at_best_accuracy"], s["at_best_cost"]
    t.add_row("cheapest point", f"{s['cheapest']['cost']:.4f}", f"{s['cheapest']['accuracy']:.4f}")
    t.add_row("most accurate point", f"{s['most_accurate']['cost']:.4f}", f"{s['most_accurate']['accuracy']:.4f}")
    t.add_row(f"best single LLM ({bm['name']})", f"{bm['cost']:.4f}", f"{bm['accuracy']:.4f}", style="bold")
    t.add_row("front at its accuracy", f"{ab['cost']:.4f}", f"{ab['accuracy']:.4f}", style="green")
    t.add_row("front at its cost", f"{ac['cost']:.4f}", f"{ac['accuracy']:.4f}", style="green")
    console.print(t)
    if ab["saving"] is not None:
        console.print(f"Reaching {bm['name']}'s accuracy costs ${ab['cost']:.4f} instead of ${bm['cost']:.4f}: "
                      f"[bold]{ab['saving']:.1%} saving[/] (no plan is cheaper than ${ab['cost_lower_bound']:.4f}).")
    console.print(f"At {bm['name']}'s cost the front reaches accuracy {ac['accuracy']:.4f} "
                  f"({ac['gain']:+.4f}; certified ≤ {ac['upper_bound']:.4f}).")
    for key, label in (("csv", "points"), ("plot", "plot")):
        if key in s:
            console.print(f"wrote {label} to {s[key]}")


# ---------------------------------------------------------------------- bench-speed
def parse_size(text: str) -> tuple[int, int]:
    """'1e6x12' (or 1000000×12, 1e6*12) → (1000000, 12)."""
    t = text.strip().lower().replace("×", "x").replace("*", "x")
    try:
        n_s, m_s = t.split("x")
        n, m = int(float(n_s)), int(m_s)
    except ValueError:
        raise OptLLMError(f"--sizes: cannot read {text!r}; write n×m like 1e6x12") from None
    if n < 1 or m < 1:
        raise OptLLMError(f"--sizes: {text!r} needs n ≥ 1 and m ≥ 1")
    return n, m


def _best_time(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(max(repeat, 1)):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _peak(fn: Callable[[], Any]) -> float:
    """Peak bytes allocated (tracked by tracemalloc, numpy buffers included) while `fn` runs,
    its result included."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        res = fn()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    del res
    return float(peak)


def bench_speed(sizes: Sequence[str] = DEFAULT_SIZES, *, repeat: int = 3, seed: int = 0, backend: str = "auto",
                paper: bool = False, paper_max_n: int = 100_000,
                progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Time `pareto_front` on synthetic n × m probabilities against `np.argsort` of the same
    n·m floats (best of `repeat`, same run), and its peak extra memory (tracemalloc).
    `paper`: also time the paper's OptLLM-M heuristic where n ≤ `paper_max_n`."""
    from optllm.data import synthetic
    from optllm.optimize.front import _resolve_backend, pareto_front

    be = _resolve_backend(backend)
    say = progress or (lambda s: None)
    t0 = time.perf_counter()
    warm = synthetic(64, 4, seed=seed, labels=False)
    pareto_front(warm.correct, warm.cost, backend=be).at_budget(float(warm.cost.min(axis=1).sum()) * 1.5)
    jit_s = time.perf_counter() - t0
    rows = []
    for text in sizes:
        n, m = parse_size(text)
        say(f"{n:,} × {m}: generating")
        d = synthetic(n, m, seed=seed, labels=False)
        p, cost = d.correct, d.cost
        del d
        flat = p.reshape(-1)
        say(f"{n:,} × {m}: timing")
        t_sort = _best_time(lambda: np.argsort(flat), repeat)
        holder: dict[str, Any] = {}

        def run() -> Any:
            holder["front"] = pareto_front(p, cost, backend=be)
            return holder["front"]

        t_front = _best_time(run, repeat)
        front = holder.pop("front")
        points, moves = len(front), front.n_moves
        del front
        peak = _peak(lambda: pareto_front(p, cost, backend=be))
        row: dict[str, Any] = {
            "n": n, "m": m, "backend": be, "argsort_s": t_sort, "front_s": t_front, "ratio": t_front / t_sort,
            "points": points, "moves": moves, "peak_extra_mb": peak / 1e6,
            "input_mb": (p.nbytes + cost.nbytes) / 1e6, "peak_vs_input": peak / (p.nbytes + cost.nbytes),
            "paper_s": None,
        }
        if paper and n <= paper_max_n:
            from optllm.optimize.paper import optllm_m

            say(f"{n:,} × {m}: paper heuristic")
            row["paper_s"] = _best_time(lambda: optllm_m(p, None, cost), 1)
        rows.append(row)
        del p, cost, flat
    if rows:
        rows[0]["jit_warmup_s"] = jit_s
    return rows


def print_speed_table(rows: Sequence[dict[str, Any]]) -> None:
    """The rich table `optllm bench-speed` prints."""
    backends = ", ".join(dict.fromkeys(r["backend"] for r in rows))
    t = Table(title=f"pareto_front ({backends}) vs np.argsort of n·m floats, best of repeats in the same run")
    for col in ("n×m", "argsort s", "front s", "ratio", "points", "peak MB", "×input"):
        t.add_column(col, justify="right")
    paper = any(r.get("paper_s") is not None for r in rows)
    if paper:
        t.add_column("OptLLM-M s", justify="right")
    for r in rows:
        cells = [f"{r['n']:.0e}×{r['m']}".replace("e+0", "e"), f"{r['argsort_s']:.3f}", f"{r['front_s']:.3f}",
                 f"{r['ratio']:.2f}×", f"{r['points']:,}", f"{r['peak_extra_mb']:.0f}", f"{r['peak_vs_input']:.2f}"]
        if paper:
            cells.append("" if r.get("paper_s") is None else f"{r['paper_s']:.2f}")
        t.add_row(*cells, style="green" if r["ratio"] <= 1.0 else "red")
    console.print(t)


@app.command("bench-speed")
def bench_speed_cmd(
    sizes: list[str] = typer.Option(None, "--sizes", help="n×m sizes, repeat or comma-separate "
                                                          "(default 1e4x12,1e5x12,1e6x12,1e6x40)."),
    repeat: int = typer.Option(3, help="Timed runs per size (best is kept)."),
    seed: int = typer.Option(0, help="Seed of the synthetic instances."),
    backend: str = typer.Option("auto", help="auto (numba if installed), numba or numpy."),
    paper: bool = typer.Option(False, "--paper", help="Also time the paper's OptLLM-M (n ≤ --paper-max-n)."),
    paper_max_n: int = typer.Option(100_000, help="Largest n for --paper."),
    json_path: Path = typer.Option(None, "--json", help="Also write the results to this JSON file."),
) -> None:
    """Time the exact front on synthetic data against np.argsort of the same number of floats."""
    from optllm.io import write_json

    if repeat < 1:
        raise OptLLMError(f"--repeat must be ≥ 1, got {repeat}")
    wanted = [s for item in (sizes or DEFAULT_SIZES) for s in item.split(",") if s.strip()]
    for s in wanted:
        parse_size(s)
    rows = bench_speed(wanted, repeat=repeat, seed=seed, backend=backend, paper=paper, paper_max_n=paper_max_n,
                       progress=lambda s: console.print(f"[dim]{s}[/]"))
    print_speed_table(rows)
    if json_path is not None:
        write_json(json_path, {"rows": rows, "repeat": repeat, "seed": seed})
        console.print(f"wrote {json_path}")
