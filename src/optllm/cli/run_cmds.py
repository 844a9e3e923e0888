"""`optllm run` (the main job) and `optllm demo` (what `make demo` runs)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from optllm.cli.app import app, console, emit_json
from optllm.data import load
from optllm.evaluate.pipeline import OPTIMIZERS, RunConfig, RunResult, run_pipeline, write_run


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
    """A short human summary of a run."""
    s = res.summary()
    sel = s["selection"]
    best = s["best_model"]
    console.print(f"[bold]{s['dataset']}[/]: {s['n_assigned']:,} queries assigned, {s['n_labelled']} labelled "
                  f"(labelling cost ${s['labelling_cost']:.4f}, {'included' if s['labelling_cost_included'] else 'not included'} below)")
    t = Table(title=f"Chosen plan — {sel.get('rule', '')}")
    t.add_column("")
    t.add_column("cost $", justify="right")
    t.add_column("predicted acc", justify="right")
    t.add_column("held-out corrected", justify="right")
    t.add_column(f"{sel['confidence']:.0%} lower, upper bounds", justify="right")
    t.add_column("realised acc", justify="right")
    if "cost" in sel and sel.get("reachable", True):
        t.add_row("plan", f"{sel['realised_cost']:.4f}", f"{sel['predicted_accuracy']:.4f}",
                  f"{sel.get('estimated_accuracy', float('nan')):.4f}", f"[{sel['lower']:.4f}, {sel['upper']:.4f}]", f"{sel['realised_accuracy']:.4f}")
    alt = sel.get("most_accurate_predicted")
    if alt:
        t.add_row("[dim]most accurate predicted plan (not chosen)[/]", f"{alt['cost']:.4f}", f"{alt['predicted_accuracy']:.4f}",
                  f"{alt['estimated_accuracy']:.4f}", f"[{alt['lower']:.4f}, {alt['upper']:.4f}]",
                  f"{alt['realised_accuracy']:.4f}")
    t.add_row(f"best single ({best['name']})", f"{best['total_cost']:.4f}", "", "", "", f"{best['accuracy']:.4f}")
    console.print(t)
    if sel.get("reachable") is False:
        console.print(f"[yellow]{sel['message']}[/]")
    if "safe" in sel:
        console.print(f"safe budget rule: {sel['safe']} (--no-safe: the most accurate predicted plan)")
    if "budget" in sel:
        console.print(f"certified optimality gap at this budget (expected accuracy): {sel['certified_gap']:.2e}")
    if "hindsight" in s:
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
    seed: int = typer.Option(0, help="Seed of the split and of every random choice."),
    predictor: str = typer.Option("default", help="Predictor name (see `optllm predict-eval --help`)."),
    optimizer: str = typer.Option("exact", help=f"One of: {', '.join(OPTIMIZERS)}."),
    alpha: float = typer.Option(0.0, help="Robust prediction p̄ + α·σ given to the optimiser (the paper: 1)."),
    budget: float = typer.Option(None, help="Spend at most this many USD on the assigned queries."),
    target_accuracy: float = typer.Option(None, help="Reach this true accuracy (0-1) with --confidence."),
    confidence: float = typer.Option(0.9, help="Confidence that the realised accuracy reaches the target."),
    folds: int = typer.Option(5, help="Cross-fitting folds of the labelled sample: each labelled query is predicted by "
                              "a predictor fitted without it, and those held-out errors correct and bound every "
                              "plan's accuracy (0: Bernoulli variance only)."),
    count_labelling_cost: bool = typer.Option(False, help="Add the cost of labelling the sample to the totals."),
    safe: bool = typer.Option(True, "--safe/--no-safe", help="With --budget: leave the best plan without a predictor (the "
                              "best affordable single LLM, or a random mix of two that spends the budget) only for a "
                              "plan that beats it at --confidence (--no-safe: the most accurate predicted plan "
                              "within budget, as the paper does)."),
    out: str = typer.Option(None, help="Write front.csv, plan.csv, summary.json, front.png here."),
    json_out: bool = typer.Option(False, "--json", help="Print summary.json to stdout."),
) -> None:
    """Split DATA, fit the predictor on the labelled sample, build the front, pick the plan for
    the budget or target (or the knee), and evaluate every point on the true labels."""
    cfg = RunConfig(train_frac=train_frac, val_frac=val_frac, seed=seed, predictor=predictor,
                    optimizer=optimizer, alpha=alpha, budget=budget, target_accuracy=target_accuracy,
                    confidence=confidence, folds=folds, count_labelling_cost=count_labelling_cost, safe=safe)
    cfg.validate()
    outcomes = load(data)
    with stages(not json_out) as say:
        res = run_pipeline(outcomes, cfg, progress=say)
        if out:
            say("write outputs")
            paths = write_run(res, out)
    if json_out:
        emit_json(res.summary())
        return
    print_run(res)
    if out:
        console.print("wrote " + ", ".join(paths.values()))


@app.command()
def demo(out: str = typer.Option("demo-out", help="Where to write the demo's plan and plots.")) -> None:
    """What `make demo` runs: describe the bundled OVERRULING data; with 1% labels, plan it
    for a budget of a quarter of gpt-4's cost, then for the cheapest plan certified to reach
    90% accuracy, and show what each plan really achieves on the true labels."""
    from optllm.cli.data_cmds import print_summary

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
        sel, b = res.selection, res.summary()["best_model"]
        if sel.get("reachable", True) and b["total_cost"] > 0:
            console.print(f"[bold]the chosen plan costs {1 - sel['realised_cost'] / b['total_cost']:.0%} less than "
                          f"{b['name']} alone[/] (realised accuracy {sel['realised_accuracy']:.4f} vs {b['accuracy']:.4f})")
        console.print("wrote " + ", ".join(paths.values()))
