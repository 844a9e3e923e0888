"""`optllm bench`: the paper's tables against every baseline, with a readable report."""
from __future__ import annotations

import shlex
import sys

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from optllm.cli import options as opt
from optllm.cli.app import app, console, emit_json
from optllm.errors import OptLLMError
from optllm.evaluate.bench import DEFAULT_METHODS, BenchConfig, run_bench
from optllm.evaluate.report import write_report
from optllm.evaluate.uncertainty import DEFAULT_ESTIMATOR
from optllm.optimize.registry import MOEAS
from optllm.planning.core import BOUNDS

ALL_METHODS = ("zero", "optllm", "threshold", "knn", "ours") + tuple(f"moea:{m}" for m in MOEAS)


@app.command()
def bench(
    datasets: list[str] = typer.Argument(..., help="Named datasets or files (e.g. overruling logparsing routerbench routellm:gsm8k synthetic)."),
    reps: int = typer.Option(10, help="Seeded random splits (the paper: 10)."),
    train_frac: float = typer.Option(0.01, help="Labelled training sample per split."),
    val_frac: float = typer.Option(0.01, help="Labelled validation sample per split."),
    methods: str = typer.Option(",".join(DEFAULT_METHODS), help=f"Comma-separated, from: {', '.join(ALL_METHODS)}."),
    generations: int = typer.Option(30, help="MOEA generations (the paper: 100-200)."),
    moea_reps: int = typer.Option(3, help="Run the MOEAs on this many splits only (they are slow)."),
    predictor: str = typer.Option("default", help="Our predictor."),
    paper_bootstraps: int = typer.Option(100, help="Bootstrap forests of OptLLM as published (the paper: 100)."),
    folds: int = typer.Option(5, help="Cross-fitting folds of the labelled sample for our confidence bounds."),
    confidence: float = typer.Option(0.9, help="Confidence level of the target selection."),
    bound: str = typer.Option(DEFAULT_ESTIMATOR, help=opt.BOUND),
    seed: int = typer.Option(0, help="Seed of the first split; split r uses seed + r."),
    quick: bool = typer.Option(False, help="A small run for CI: 2 splits, 10 forests, 5 generations, MOEAs on 1 split."),
    out: str = typer.Option(None, help="Write report.md, results.json and PNG plots here."),
    json_out: bool = typer.Option(False, "--json", help="Print results as JSON."),
) -> None:
    """Reproduce the paper's protocol on DATASETS with every method on the same splits."""
    if out:
        from optllm.evaluate.report import BENCH_FILES
        from optllm.io import check_output_dir

        check_output_dir(out, "--out", BENCH_FILES)
    if bound not in BOUNDS:
        raise OptLLMError(f"--bound must be one of {', '.join(BOUNDS)}, got {bound!r}")
    chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
    bad = [m for m in chosen if m not in ALL_METHODS]
    if bad:
        raise OptLLMError(f"--methods: unknown {bad}; choose from {', '.join(ALL_METHODS)}")
    cfg = BenchConfig(reps=reps, train_frac=train_frac, val_frac=val_frac, methods=chosen,
                      generations=generations, moea_reps=moea_reps, predictor=predictor,
                      paper_bootstraps=paper_bootstraps, folds=folds, confidence=confidence, seed=seed, bound=bound)
    if quick:
        cfg.reps, cfg.paper_bootstraps, cfg.generations, cfg.moea_reps, cfg.folds = min(reps, 2), 10, 5, 1, 3
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=json_out) as prog:
        task = prog.add_task("bench", total=None)
        results = run_bench(list(datasets), cfg, lambda s: prog.update(task, description=s))
    command = "optllm " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else ""
    if out:
        paths = write_report(results, out, command)
    if json_out:
        slim = {**results, "datasets": {k: {kk: vv for kk, vv in v.items() if kk not in ("curves_first_split", "per_split")}
                                        for k, v in results["datasets"].items()}}
        emit_json(slim)
        return
    for name, d in results["datasets"].items():
        t = Table(title=f"{name}: {d['n']:,} × {d['m']}, best single {d['best_model']} — hindsight savings (the paper's figure)")
        for col in ("method", "saving @best", "reached", "saving @99%", "reached", "best true acc", "time s"):
            t.add_column(col, justify="right" if col != "method" else "left")
        for m, f in d["methods"].items():
            s1, s2 = f["saving_at_best"], f["saving_at_99"]
            t.add_row(m, "undef." if s1["mean"] is None else f"{s1['mean']:.1%}",
                      f"{f['reached_best']['count']}/{f['reached_best']['of']}",
                      "undef." if s2["mean"] is None else f"{s2['mean']:.1%}",
                      f"{f['reached_99']['count']}/{f['reached_99']['of']}",
                      f"{f['best_true_accuracy']['mean']:.4f}", f"{f['seconds']['mean']:.2f}")
        console.print(t)
        h = Table(title=f"{name}: honest figures (picked from predictions alone)")
        for col in ("rule", "picked", "met", "realised acc", "cost $", "saving"):
            h.add_column(col)
        for key, v in d["honest"].items():
            if key == "ours_bound_coverage":
                continue
            if key.endswith("_at_half_best_cost"):
                reach = v.get("reachable", v["of"])  # splits whose cheapest plan fits half the best LLM's cost
                h.add_row(key, f"{reach}/{v['of']}" + ("" if reach == v["of"] else " reachable"), "",
                          _m(v["realised_accuracy"]), _m(v["cost"]), "")
                continue
            if key.endswith("_at_best_cost"):
                h.add_row(key, f"{v['of']}/{v['of']}", f"{v['at_least_best_accuracy']}/{v['of']}",
                          _m(v["realised_accuracy"]), _m(v["cost"]), "")
            else:
                h.add_row(key, f"{v['picked']}/{v['of']}", f"{v['met']}/{v['picked']}",
                          _m(v["realised_accuracy"]), _m(v["cost"]), _m(v["saving"], pct=True))
        console.print(h)
        bc = d["honest"].get("ours_bound_coverage")
        if bc:
            console.print(f"our {bc['confidence']:.0%} band held along the whole front on "
                          f"{bc['whole_front']}/{bc['of']} splits; plans above their pointwise bound: {_m(bc['points'], pct=True)} "
                          f"(uncorrected bound: {_m(bc['points_without_correction'], pct=True)})")
    if out:
        console.print(f"wrote {paths['report']}, {paths['results']} and plots")


def _m(a: dict, pct: bool = False) -> str:
    if a["mean"] is None:
        return "—"
    return f"{a['mean']:.1%}" if pct else f"{a['mean']:.4f}"
