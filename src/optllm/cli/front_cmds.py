"""`optllm front` (the exact true front of a dataset, `optllm.evaluate.truth`) and
`optllm bench-speed` (how fast `pareto_front` is against a plain argsort of the same number
of floats, `optllm.optimize.speed`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import typer
from rich.table import Table

from optllm.cli.app import app, console, emit_json, err_console, load_data
from optllm.errors import OptLLMError
from optllm.evaluate.truth import truth_summary
from optllm.optimize.speed import DEFAULT_SIZES, bench_speed, parse_size


# ---------------------------------------------------------------------- optllm front
@app.command("front")
def front_cmd(
    data: str = typer.Argument(..., help="Named dataset or path to a long/wide file with labels."),
    truth: bool = typer.Option(False, "--truth", help="The true front from the 0/1 labels (exact, hindsight)."),
    out: Path = typer.Option(None, "--out", help="Write the front's points to this CSV."),
    plot: Path = typer.Option(None, "--plot", help="Write a PNG: the front and every single LLM as a labelled dot."),
    max_points: int = typer.Option(0, "--max-points", help="Thin the CSV to at most this many points (0: all)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    engine: str = typer.Option("local", "--engine", help="local (one process) or ray (per-shard hulls on a Ray "
                               "cluster; DATA may then be a Parquet file/folder with columns p_<model>, "
                               "cost_<model>; prints the ends and the plan at --budget/--target; `optllm plan` "
                               "has no Ray engine yet)."),
    address: str = typer.Option(None, "--address", help="Ray cluster to join (--engine ray; default: start a "
                                "local one with all CPUs)."),
    budget: float = typer.Option(None, "--budget", help="--engine ray: the plan at this total budget (USD)."),
    target: float = typer.Option(None, "--target", help="--engine ray: the cheapest plan reaching this expected "
                                 "accuracy."),
    plan_out: Path = typer.Option(None, "--plan-out", help="--engine ray: write the plan as Parquet shards "
                                  "(part-NNNNN.parquet: query, model, model_name) into this folder, all-or-nothing."),
) -> None:
    """The exact cost/accuracy Pareto front of a dataset: points, both ends, and the saving
    against the best single LLM."""
    if engine not in ("local", "ray"):
        raise OptLLMError(f"--engine must be local or ray, got {engine!r}")
    if engine == "ray":
        from optllm.cli.ray_front import ray_front

        s = ray_front(data, truth=truth, address=address, budget=budget, target=target, plan_out=plan_out,
                      other=[o for o, v in (("--out", out), ("--plot", plot), ("--max-points", max_points)) if v])
        if json_out:
            emit_json(s)
        else:
            console.print_json(data=s)
        return
    for opt, v in (("--address", address), ("--budget", budget), ("--target", target), ("--plan-out", plan_out)):
        if v is not None:
            raise OptLLMError(f"{opt} goes with --engine ray")
    if not truth:
        raise OptLLMError("a front from predictions comes with `optllm run DATA` (it labels a sample and predicts "
                          "the rest); add --truth for the exact true front from DATA's labels")
    if max_points < 0:
        raise OptLLMError(f"--max-points must be ≥ 0, got {max_points}")
    from optllm.io import check_output_file

    if out is not None:
        check_output_file(out, "--out")
    if plot is not None:
        check_output_file(plot, "--plot")
    from optllm.optimize.front import pareto_front

    d = load_data(data)
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
    sizes: list[str] = typer.Option(None, "--sizes", help="n×m sizes (n alone: 12 models), repeat or "
                                                          "comma-separate (default 1e4x12,1e5x12,1e6x12,1e6x40)."),
    repeat: int = typer.Option(3, help="Timed runs per size (best is kept)."),
    seed: int = typer.Option(0, help="Seed of the synthetic instances."),
    backend: str = typer.Option("auto", help="auto (numba if installed), numba or numpy."),
    paper: bool = typer.Option(False, "--paper", help="Also time the paper's OptLLM-M (n ≤ --paper-max-n)."),
    paper_max_n: int = typer.Option(100_000, help="Largest n for --paper."),
    json_flag: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout instead of the table."),
    json_out: Path = typer.Option(None, "--json-out", help="Also write the results to this JSON file."),
) -> None:
    """Time the exact front on synthetic data against np.argsort of the same number of floats."""
    from optllm.io import check_output_file, write_json

    if json_out is not None:
        check_output_file(json_out, "--json-out")
    if repeat < 1:
        raise OptLLMError(f"--repeat must be ≥ 1, got {repeat}")
    wanted = [s for item in (sizes or DEFAULT_SIZES) for s in item.split(",") if s.strip()]
    for s in wanted:
        parse_size(s)
    rows = bench_speed(wanted, repeat=repeat, seed=seed, backend=backend, paper=paper, paper_max_n=paper_max_n,
                       progress=(lambda s: err_console.print(f"[dim]{s}[/]")) if json_flag else
                       (lambda s: console.print(f"[dim]{s}[/]")))
    res = {"rows": rows, "repeat": repeat, "seed": seed}
    if json_out is not None:
        write_json(json_out, res)
    if json_flag:
        emit_json(res)
        return
    print_speed_table(rows)
    if json_out is not None:
        console.print(f"wrote {json_out}")
