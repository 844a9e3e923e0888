"""`optllm label-budget`: the label-budget curve, fixed fractions against labelling until certified."""
from __future__ import annotations

import shlex
import sys

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from optllm.cli.app import app, console, emit_json
from optllm.cli.coverage_cmds import _floats
from optllm.planning.adaptive import AdaptiveSettings

LABEL_BUDGET_FILES = ("label_budget.json", "label_budget.md", "label_budget.png")


@app.command("label-budget")
def label_budget(
    datasets: list[str] = typer.Argument(..., help="Named datasets or files with ground truth (e.g. overruling logparsing synthetic)."),
    splits: int = typer.Option(10, help="Seeded random labelling orders per dataset."),
    fractions: str = typer.Option("0.01,0.02,0.05,0.1", help="Fixed label fractions to compare: each labels this share to train and the same share to validate."),
    targets: str = typer.Option("0.97,0.99,1", help="Accuracy targets as shares of the best single LLM's realised accuracy."),
    confidence: float = typer.Option(0.9, help="Confidence of the certified target (the adaptive rule spends it over its rounds)."),
    rounds: int = typer.Option(AdaptiveSettings.max_rounds, help="Rounds of the adaptive rule (R of its alpha spending)."),
    certify: str = typer.Option(AdaptiveSettings.certify, help="How the adaptive rule certifies each round's plan, as `optllm plan --certify`: cross-fit (every model labels every labelled prompt) or holdout (a share of the labelled prompts labelled only where the tested plans route)."),
    holdout: float = typer.Option(AdaptiveSettings.holdout, help="With --certify holdout: the share of the labelled prompts kept as the holdout."),
    predictor: str = typer.Option("default", help="Predictor (as in `optllm run`)."),
    seed: int = typer.Option(0, help="Seed of the first split; split r uses seed + r."),
    out: str = typer.Option(None, help="Write label_budget.json, label_budget.md and label_budget.png (net saving against labels) here."),
    json_out: bool = typer.Option(False, "--json", help="Print the cells as JSON."),
) -> None:
    """What labels buy: certified saving at each target, gross and net of the labelling cost.

    For every dataset, split and target: label fixed fractions in one round, or label in
    rounds until certified (`optllm plan --label-budget`, simulated by revealing the dataset's
    own labels round by round). Reports labels used, their cost (every model on every
    labelled prompt; with --certify holdout, only the pairs bought on the holdout), how often a plan was certified and its promise kept, and the saving
    against the best single LLM on every prompt, gross and net of the labels."""
    from optllm.data import load
    from optllm.evaluate.label_budget import LabelBudgetConfig, plot, report, run_label_budget, table_md
    from optllm.io import atomic_dir, check_output_dir, write_json

    if out:
        check_output_dir(out, "--out", LABEL_BUDGET_FILES)
    cfg = LabelBudgetConfig(splits=splits, fractions=_floats(fractions, "--fractions"),
                            shares=_floats(targets, "--targets"), confidence=confidence, max_rounds=rounds,
                            predictor=predictor, seed=seed, certify=certify, holdout=holdout)
    data = {name: load(name) for name in datasets}
    total = len(data) * splits * len(cfg.shares) * len(cfg.methods)
    records = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=console, transient=True, disable=json_out) as prog:
        task = prog.add_task("label-budget", total=total)
        for rec in run_label_budget(data, cfg, lambda what: prog.update(task, description=what)):
            records.append(rec)
            prog.advance(task)
    rep = report(records, data, cfg)
    command = "optllm " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else ""
    if out:
        with atomic_dir(out, LABEL_BUDGET_FILES) as tmp:
            write_json(tmp / "label_budget.json", rep)
            (tmp / "label_budget.md").write_text(table_md(rep, command), encoding="utf-8")
            plot(rep, tmp / "label_budget.png")
    if json_out:
        emit_json({"config": rep["config"], "cells": rep["cells"]})
        return
    t = Table(title=f"label budget, {splits} splits per row (confidence {confidence:.0%}; adaptive rule certified by "
                    + (f"a {holdout:.0%} holdout" if certify == "holdout" else "cross-fitting") + ")",
              caption="kept: declined or met its target; net counts the labels' cost, and a labelled prompt is "
                      "answered by its labels")
    for col in ("dataset", "method", "target", "labels", "label cost", "certified", "kept", "gross", "net",
                "net>0 & certified"):
        t.add_column(col, justify="left" if col in ("dataset", "method") else "right")
    for c in rep["cells"]:
        t.add_row(c["dataset"], c["method"], f"{c['share']:.0%}", f"{c['labels']:.0f}", f"{c['label_cost_share']:.1%}",
                  f"{c['certified']:.0%}", f"{c['kept']:.0%}", f"{c['gross']:.1%}", f"{c['net']:.1%}",
                  f"{c['net_positive']:.0%}")
    console.print(t)
    if out:
        console.print(f"wrote {out}/: " + ", ".join(LABEL_BUDGET_FILES))
