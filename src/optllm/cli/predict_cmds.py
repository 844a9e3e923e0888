"""`optllm predict-eval`: compare the predictors of P(correct) on random splits of a dataset."""
from __future__ import annotations

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from optllm.cli.app import app, console, emit_json, load_data
from optllm.errors import OptLLMError


def _fmt(cell: dict, pct: bool = False, digits: int = 4) -> str:
    m, s = cell["mean"], cell["std"]
    if m != m:  # NaN
        return "undef."
    if pct:
        return f"{m:.1%} ± {s:.1%}"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


@app.command("predict-eval")
def predict_eval(
    data: str = typer.Argument(..., help="Named dataset (overruling, logparsing, routerbench, demo, synthetic:NxM) or a file."),
    train_frac: float = typer.Option(0.01, help="Labelled training sample per split (fraction or count)."),
    val_frac: float = typer.Option(0.01, help="Labelled validation sample per split (fraction or count)."),
    reps: int = typer.Option(10, help="Random splits; split r uses seed + r."),
    predictors: str = typer.Option("all", help="'all' or comma-separated names: base, knn, logistic, irt, forest, "
                                               "bootstrap_forest, selector (default); name@featuriser picks features "
                                               "(tfidf, lexical, embed, tfidf+lexical)."),
    seed: int = typer.Option(0, help="Seed of the first split."),
    alpha: float = typer.Option(0.0, help="Feed mean + alpha·std to the optimiser (the paper's robust estimate)."),
    end_to_end: bool = typer.Option(True, "--end-to-end/--no-end-to-end", help="Also run the exact optimiser on the predictions."),
    oracle: bool = typer.Option(True, "--oracle/--no-oracle", help="Add perfect predictions as a reference row."),
    json_flag: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout instead of a table."),
    json_out: str = typer.Option(None, "--json-out", help="Also write the results as JSON to this file."),
) -> None:
    """Brier, log loss, per-model AUC, calibration error and time of each predictor, and the
    saving at the best single model's accuracy when the exact optimiser uses its predictions."""
    from optllm.io import check_output_file, write_json
    from optllm.evaluate.predictors import ALL, evaluate_predictors

    if json_out:
        check_output_file(json_out, "--json-out")

    names = list(ALL) if predictors.strip().lower() == "all" else [p.strip() for p in predictors.split(",") if p.strip()]
    if not names:
        raise OptLLMError("--predictors: give 'all' or at least one predictor name")
    outcomes = load_data(data)
    quiet = json_flag
    rows = len(names) + (1 if oracle and end_to_end else 0)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=quiet) as prog:
        task = prog.add_task("predict-eval", total=reps * rows)
        started = [False]

        def step(msg: str) -> None:
            if started[0]:
                prog.advance(task)
            started[0] = True
            prog.update(task, description=msg)

        res = evaluate_predictors(outcomes, names, train_frac, val_frac, reps, seed=seed, alpha=alpha,
                                  end_to_end_figures=end_to_end, oracle=oracle, progress=step)
        prog.advance(task)
    if json_out:
        write_json(json_out, res)
    if quiet:
        emit_json(res)
        return
    _print(res)
    if json_out:
        console.print(f"JSON written to {json_out}")


def _print(res: dict) -> None:
    first = res["splits"][0] if res["splits"] else {}
    title = (f"{res['dataset']}: {res['n_queries']:,} × {res['n_models']}, train {first.get('n_train')} / "
             f"val {first.get('n_val')} / test {first.get('n_test')} queries, {res['reps']} splits (mean ± std)")
    t = Table(title=title)
    e2e = any("saving" in r for r in res["splits"])
    cols = ["predictor", "Brier", "log loss", "AUC", "ECE", "fit+predict s"]
    if e2e:
        cols += ["saving @best acc", "reached", "saving, all splits", "Δacc @best cost"]
    for c in cols:
        t.add_column(c, justify="left" if c == "predictor" else "right")
    for name, row in res["summary"].items():
        tm = row["fit_s"]["mean"] + row["predict_s"]["mean"]
        cells = [name, _fmt(row["brier"]), _fmt(row["log_loss"]), _fmt(row["auc"], digits=3), _fmt(row["ece"], digits=3),
                 f"{tm:.2f}"]
        if e2e:
            cells += [_fmt(row["saving"], pct=True), f"{row.get('reached', 0)}/{row['splits']}",
                      _fmt(row["saving_all"], pct=True) if "saving_all" in row else "—",
                      f"{row['acc_gain_at_best_cost']['mean']:+.4f}"]
        t.add_row(*cells)
    console.print(t)
    if e2e and first:
        console.print(f"Best single model on the test part: {first.get('best_model')}; saving = cost cut at its true "
                      "accuracy (cheapest front point that reaches it, chosen with hindsight; averaged over the "
                      "splits where it was reached; 'all splits': every split, 0 where not reached, as a user "
                      "who then keeps the best model).")
    for ref, label in (("bootstrap_forest", "the paper's bootstrap_forest"), ("base", "the base rate")):
        pairs = [(n, r[f"vs_{ref}"]) for n, r in res["summary"].items() if f"vs_{ref}" in r]
        if not pairs:
            continue
        p = Table(title=f"Against {label} on the same splits")
        for c in ("predictor", "both reached best acc", f"saving (it / {ref})", "higher saving on",
                  f"all splits, 0 if not reached (it / {ref})", "higher / lower", "fit time ratio"):
            p.add_column(c, justify="left" if c == "predictor" else "right")
        for n, v in pairs:
            sv = "—" if v["saving"] is None else f"{v['saving']:.1%} / {v[f'saving_{ref}']:.1%}"
            fr = f"{v['fit_ratio']:.1f}×" if v.get("fit_ratio") and ref == "bootstrap_forest" else ""
            sa = (f"{v['saving_all']:.1%} / {v[f'saving_all_{ref}']:.1%}", f"{v['wins_all']} / {v['losses_all']}") \
                if "saving_all" in v else ("—", "")
            p.add_row(n, f"{v['both_reached']}/{v['of']}", sv, f"{v['wins']}/{v['both_reached']}", *sa, fr)
        console.print(p)
    if res.get("note"):
        console.print(f"[yellow]{res['note']}[/]")
