"""`optllm run` (the main job) and `optllm demo` (what `make demo` runs)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from optllm.cli import options as opt
from optllm.cli.app import app, console, emit_json, load_data
from optllm.cli.selection_view import print_selection
from optllm.data import load
from optllm.evaluate.pipeline import RunConfig, RunResult, run_pipeline, write_run
from optllm.evaluate.uncertainty import DEFAULT_ESTIMATOR
from optllm.optimize.registry import OPTIMIZERS


@contextmanager
def stages(enabled: bool = True) -> Iterator:
    """A rich spinner that names the current stage; `say(stage)` advances it."""
    if not enabled:
        yield lambda s: None
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=True) as prog:
        task = prog.add_task("split", total=None)
        yield lambda s: prog.update(task, description=s)


def print_run(res: RunResult) -> None:
    """A short human summary of a run: the selection table (with realised figures) and the
    paper's hindsight figure beside it."""
    s = res.summary()
    best = s["best_model"]
    console.print(f"[bold]{s['dataset']}[/]: {s['n_assigned']:,} queries assigned, {s['n_labelled']:,} labelled "
                  f"(labelling cost ${s['labelling_cost']:.4f}, {'included' if s['labelling_cost_included'] else 'not included'} below)")
    print_selection(s["selection"], realised=s["realised"] or {},
                    single={"name": best["name"], "cost": best["total_cost"], "realised": best["accuracy"]})
    h = s["hindsight"]
    if h["reached"]:
        console.print(f"hindsight (the paper's figure, not available to a user): the cheapest front point whose "
                      f"TRUE accuracy reaches {best['name']}'s costs ${h['cost']:.4f} (saving {h['saving']:.1%})")
    else:
        console.print(f"hindsight: no front point reaches {best['name']}'s true accuracy (best {h['true_accuracy']:.4f})")
    console.print(f"front: {s['front_points']:,} points; time: " +
                  ", ".join(f"{k} {v:.2f}s" for k, v in s["timings_s"].items()))


@app.command()
def run(
    data: str = typer.Argument(..., help="Named dataset or a long/wide file with ground truth."),
    train_frac: float = typer.Option(0.01, help="Labelled training sample: fraction (<1) or count."),
    val_frac: float = typer.Option(0.01, help="Labelled validation sample: fraction (<1) or count."),
    seed: int = typer.Option(0, help=opt.SEED),
    predictor: str = typer.Option("default", help=opt.PREDICTOR),
    optimizer: str = typer.Option("exact", help=f"One of: {', '.join(OPTIMIZERS)}."),
    alpha: float = typer.Option(0.0, help="Robust prediction p̄ + α·σ given to the optimiser (the paper: 1)."),
    budget: float = typer.Option(None, help=opt.BUDGET),
    target_accuracy: float = typer.Option(None, help=opt.TARGET),
    confidence: float = typer.Option(0.9, help=opt.CONFIDENCE),
    folds: int = typer.Option(5, help=opt.FOLDS),
    bound: str = typer.Option(DEFAULT_ESTIMATOR, help=opt.BOUND),
    count_labelling_cost: bool = typer.Option(False, help="Add the cost of labelling the sample to the totals."),
    safe: bool = typer.Option(True, "--safe/--no-safe", help=opt.SAFE),
    out: str = typer.Option(None, help="Write front.csv, plan.csv, summary.json, front.png here (all or nothing)."),
    json_out: bool = typer.Option(False, "--json", help="Print summary.json to stdout."),
) -> None:
    """Split DATA, fit the predictor on the labelled sample, build the front, pick the plan for
    the budget or target (or the knee), and evaluate every point on the true labels.

    The plan is chosen exactly as `optllm plan` chooses it on a user's prompts (same rules,
    same options). Exit code 0 with a plan, 1 when the target cannot be certified, 2 on bad
    input."""
    cfg = RunConfig(train_frac=train_frac, val_frac=val_frac, seed=seed, predictor=predictor,
                    optimizer=optimizer, alpha=alpha, budget=budget, target_accuracy=target_accuracy,
                    confidence=confidence, folds=folds, count_labelling_cost=count_labelling_cost, safe=safe,
                    bound=bound)
    cfg.validate()
    if out:
        from optllm.evaluate.pipeline import RUN_FILES
        from optllm.io import check_output_dir

        check_output_dir(out, "--out", RUN_FILES)
    outcomes = load_data(data)
    with stages(not json_out) as say:
        res = run_pipeline(outcomes, cfg, progress=say)
        if out:
            say("write outputs")
            paths = write_run(res, out)
    if json_out:
        emit_json(res.summary())
    else:
        print_run(res)
        if out:
            console.print("wrote " + ", ".join(paths.values()))
    if not res.selection.reachable:
        raise typer.Exit(1)  # the goal was not certified: no plan


@app.command()
def demo(out: str = typer.Option("demo-out", help="Where to write the demo's plan and plots.")) -> None:
    """What `make demo` runs: describe the bundled OVERRULING data; with 1% labels, plan it
    for a budget of a quarter of gpt-4's cost, then for the cheapest plan certified to reach
    90% accuracy, and show what each plan really achieves on the true labels."""
    from optllm.cli.data_cmds import print_summary
    from optllm.evaluate.pipeline import RUN_FILES
    from optllm.io import check_output_dir

    check_output_dir(out, "--out", RUN_FILES)
    check_output_dir(f"{out}/target", "--out", RUN_FILES)
    outcomes = load("demo")
    print_summary(outcomes.summary())
    best = outcomes.best_model()
    budget = float(outcomes.model_total_cost()[best]) * 0.98 / 4
    runs = ((f"optllm run demo --budget {budget:.2f} --out {out}", RunConfig(budget=budget), out),
            (f"optllm run demo --target-accuracy 0.9 --out {out}/target", RunConfig(target_accuracy=0.9), f"{out}/target"))
    for title, cfg, where in runs:
        console.rule(title)
        with stages() as say:
            res = run_pipeline(outcomes, cfg, progress=say)
            paths = write_run(res, where)
        print_run(res)
        r, b = res.realised, res.summary()["best_model"]
        if r is not None and b["total_cost"] > 0:
            console.print(f"[bold]the chosen plan costs {1 - r.cost / b['total_cost']:.0%} less than "
                          f"{b['name']} alone[/] (realised accuracy {r.accuracy:.4f} vs {b['accuracy']:.4f})")
        console.print("wrote " + ", ".join(paths.values()))
