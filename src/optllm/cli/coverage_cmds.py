"""`optllm coverage`: how often our printed promises held, over many splits."""
from __future__ import annotations

import shlex
import sys

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from optllm.cli.app import app, console, emit_json
from optllm.errors import OptLLMError
from optllm.evaluate.coverage import BOUNDS, CHOICES, CoverageConfig, run_coverage, write_coverage


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise OptLLMError(f"{option}: expected comma-separated numbers, got {text!r}") from None


@app.command()
def coverage(
    datasets: list[str] = typer.Argument(..., help="Named datasets or files with ground truth (e.g. overruling logparsing routerbench routellm:gsm8k synthetic synthetic-hidden)."),
    splits: int = typer.Option(50, help="Seeded random splits per dataset and label fraction."),
    fractions: str = typer.Option("0.01,0.02,0.05,0.1", help="Label fractions: each split labels this share for training and the same share for validation (the paper's 1% + 1%)."),
    confidences: str = typer.Option("0.8,0.9,0.95", help="Confidence levels to check."),
    targets: str = typer.Option("0.9,0.97,0.99,1", help="Accuracy targets as shares of the best single LLM's realised accuracy."),
    bounds: str = typer.Option(",".join(BOUNDS), help=f"Bound constructions to compare, from: {', '.join(CHOICES)} (-fixed-rule: without the rule's own variation across folds; holdout: the predictor fitted on the training labels alone, the plans bounded by their answers on the validation labels, as --bound holdout does; crossfold: the planned queries predicted by the cross-fit's own fold predictors, each by the predictor of a fold drawn for it, and bounded like labelled without τ²)."),
    predictor: str = typer.Option("default", help="Predictor (as in `optllm run`)."),
    folds: int = typer.Option(5, help="Cross-fitting folds of the labelled sample."),
    seed: int = typer.Option(0, help="Seed of the first split; split r uses seed + r."),
    workers: int = typer.Option(1, help="Worker processes (splits run in parallel)."),
    out: str = typer.Option(None, help="Write coverage.json, calibration.png and table.md to this folder."),
    checkpoint: str = typer.Option(None, help="Keep each finished split in this folder as it ends (splits.jsonl); run again with the same folder and settings to reuse them and run only the missing splits."),
    json_out: bool = typer.Option(False, "--json", help="Print the aggregated cells as JSON."),
) -> None:
    """Measure how often our confidence statements hold, on data with ground truth.

    For every dataset × label fraction × bound construction × confidence C, over --splits
    random splits: the share of the front's plans above their pointwise bound (promised: C);
    the share of splits where the whole-front band held (C); for accuracy targets, how often a
    plan was picked and the promise kept (declined, or met: at least C); whether the safe
    budget rule did no worse than the best plan without a predictor; the mean interval width
    and the certified saving (so a vacuous bound cannot pass); and the standardised error's
    mean and sd. No paper baselines run, so 50 splits are affordable. A long campaign
    survives a stop with --checkpoint DIR: run the same command again to go on.
    """
    from optllm.evaluate.coverage import COVERAGE_FILES
    from optllm.io import check_output_dir
    from optllm.predict import make_predictor

    if out:
        check_output_dir(out, "--out", COVERAGE_FILES)
    make_predictor(predictor)
    cfg = CoverageConfig(splits=splits, fractions=_floats(fractions, "--fractions"),
                         confidences=_floats(confidences, "--confidences"), targets=_floats(targets, "--targets"),
                         estimators=tuple(b.strip() for b in bounds.split(",") if b.strip()), predictor=predictor,
                         folds=folds, seed=seed)
    if workers < 1:
        raise OptLLMError(f"--workers must be at least 1, got {workers}")
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, transient=True, disable=json_out) as prog:
        task = prog.add_task("coverage", total=None)
        report = run_coverage(list(datasets), cfg, workers,
                              lambda done, total, what: prog.update(task, completed=done, total=total, description=what),
                              checkpoint=checkpoint)
    command = "optllm " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else ""
    paths = write_coverage(report, out, command) if out else None
    if json_out:
        from dataclasses import asdict

        emit_json({"config": asdict(cfg), "cells": [asdict(c) for c in report.cells()], "seconds": report.seconds,
                   "reused_from_checkpoint": report.reused})
        return
    t = Table(title=f"coverage, {splits} splits per row: kept = worst target ({targets} of the best LLM), "
                    "saving and picked at the highest target, budget = worst of 100%/50% of its cost")
    for col in ("dataset", "labels", "bound", "C", "points", "band", "kept", "picked", "saving", "budget", "width"):
        t.add_column(col, justify="left" if col in ("dataset", "bound") else "right")
    for c in report.cells():
        top = c.targets[max(c.targets, key=float)]
        nw = [v["no_worse"] for v in c.budgets.values() if v["no_worse"] is not None]
        t.add_row(c.dataset, f"{c.fraction:.0%}", c.estimator, f"{c.confidence:.0%}", f"{c.points:.1%}", f"{c.band:.0%}",
                  f"{min(v['kept'] for v in c.targets.values()):.0%}", f"{top['picked']:.0%}", f"{top['saving']:.1%}",
                  "—" if not nw else f"{min(nw):.0%}", f"{c.width:.3f}")
    console.print(t)
    if report.reused:
        console.print(f"{report.reused} of {len(report.records)} splits reused from {checkpoint}, "
                      f"{len(report.records) - report.reused} run now")
    console.print("every column, per target and budget: --out DIR (table.md, coverage.json) or --json")
    if paths:
        console.print(f"wrote {paths['coverage.json']}, {paths['calibration.png']} and {paths['table.md']}")
