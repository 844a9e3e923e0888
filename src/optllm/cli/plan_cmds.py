"""`optllm sample`, `optllm plan` and `optllm dispatch`: from a user's own prompts to answers."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from optllm.cli.app import app, console, emit_json, err_console


@app.command()
def sample(
    prompts: Path = typer.Argument(..., help="JSONL/CSV/Parquet with columns id and prompt."),
    size: str = typer.Option(..., "--size", help="How many to label: a percentage (1%), a fraction (0.01) or a count (20)."),
    strategy: str = typer.Option("random", "--strategy", help="random, or diverse (covers the TF-IDF space of the prompts)."),
    method: str = typer.Option("stratified", "--method", help="For diverse: stratified (random within k-means clusters, in proportion to their sizes), kmeans (the prompt nearest each centre) or farthest (farthest-point)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    out: Path = typer.Option(..., "--out", help="JSONL to write (id, prompt) of the queries to label."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Choose which prompts to send to every candidate model for labelling.

    Send each chosen prompt to every model, grade the answers, and give the result to
    `optllm plan --labels` in the long format (query_id, model, correct[, cost,
    prompt_tokens, completion_tokens])."""
    from optllm.dispatch.plan import read_prompts, write_prompts
    from optllm.sample import choose_sample

    ids, texts = read_prompts(prompts)
    idx = choose_sample(texts, size, strategy=strategy, seed=seed, method=method)
    write_prompts(out, ids[idx], [texts[i] for i in idx])
    info = {"prompts": len(texts), "sampled": int(idx.size), "strategy": strategy, "seed": seed, "out": str(out)}
    if strategy == "diverse":
        info["method"] = method
    if json_out:
        emit_json(info)
    else:
        console.print(f"{idx.size} of {len(texts):,} prompts chosen ({strategy}) -> {out}")


@app.command()
def plan(
    prompts: Path = typer.Argument(..., help="JSONL/CSV/Parquet with columns id and prompt: the whole batch."),
    models: Path = typer.Option(..., "--models", help="Model catalogue (YAML or TOML), see examples/models.yaml."),
    labels: Path = typer.Option(..., "--labels", help="Labelled sample in the long format: query_id, model, correct[, cost, prompt, prompt_tokens, completion_tokens]."),
    budget: Optional[float] = typer.Option(None, "--budget", help="Total USD to spend on the planned prompts."),
    target: Optional[float] = typer.Option(None, "--target-accuracy", help="Predicted accuracy to reach at the least cost."),
    risk: Optional[float] = typer.Option(None, "--risk", help="With --budget: keep the REALISED cost under the budget with this probability (e.g. 0.95)."),
    risk_method: str = typer.Option("normal", "--risk-method", help="normal: mean + z·sd of the total (per-query variance from the output-length spread, queries independent); quantile: sum of per-query upper-quantile costs."),
    quantile: float = typer.Option(0.95, "--quantile", help="Upper quantile of the output length used for est_cost_upper."),
    length_regression: bool = typer.Option(False, "--length-regression", help="Predict output length linearly from prompt length (per model)."),
    predictor: Optional[str] = typer.Option(None, "--predictor", help="Correctness predictor (default: optllm's default; see optllm.predict.PREDICTORS)."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the predictor."),
    out: Path = typer.Option(..., "--out", help="Folder for plan.csv, prompts.jsonl, front.csv, front.png, summary.json."),
    json_out: bool = typer.Option(False, "--json", help="Print summary.json to stdout."),
) -> None:
    """Assign every unlabelled prompt to a model: the most accurate plan within --budget, or the
    cheapest reaching --target-accuracy, from the exact cost/accuracy front.

    The predictor is fitted on the labelled prompts; costs are prompt tokens (counted with
    tiktoken, offline) and output tokens (per model from the labels: mean and upper quantile)
    at the catalogue's prices. With --risk, the default rule is a normal approximation of the
    total: mean + z(risk)·sd ≤ budget, sd from the per-query output-length variance."""
    from optllm.cost import load_catalogue
    from optllm.data import load_long
    from optllm.dispatch.plan import build_plan, read_prompts, write_plan

    cat = load_catalogue(models)
    ids, texts = read_prompts(prompts)
    labelled = load_long(labels, require_cost=False)
    res = build_plan(ids, texts, cat, labelled, budget=budget, target=target, risk=risk, risk_method=risk_method,
                     quantile=quantile, length_regression=length_regression, predictor=predictor, seed=seed,
                     labels_source=str(labels))
    write_plan(res, out, inputs={"prompts": str(prompts), "models": str(models), "labels": str(labels)})
    s = res.summary
    if json_out:
        emit_json(s)
        return
    sel = s["selection"]
    t = Table(title=f"Plan: {s['n_planned']:,} prompts ({s['n_labelled']} labelled, not planned)")
    t.add_column("model")
    t.add_column("queries", justify="right")
    for name, c in sorted(s["assigned"].items(), key=lambda kv: -kv[1]):
        t.add_row(name, f"{c:,}")
    console.print(t)
    console.print(f"estimated cost ${sel['cost_mean']:.4f} (sd ${sel['cost_sd']:.4f}; "
                  f"{sel['cost_at_risk_probability']:.0%} sure under ${sel['cost_at_risk']:.4f}), "
                  f"predicted accuracy {sel['predicted_accuracy']:.4f}")
    console.print(f"suggested --max-spend for dispatch (sum of per-call upper bounds): ${sel['spend_cap_hint']:.4f}")
    if s["n_no_feasible_model"]:
        err_console.print(f"[yellow]{s['n_no_feasible_model']} prompt(s) fit no model's context and were left out "
                          f"(see summary.json)[/]")
    if s["infeasible_pairs"]:
        console.print("prompts over a model's context (that pair excluded): " +
                      ", ".join(f"{k} {v}" for k, v in s["infeasible_pairs"].items()))
    console.print(f"-> {out}/plan.csv, front.csv, front.png, summary.json")


@app.command()
def dispatch(
    plan_dir: Path = typer.Argument(..., help="Folder written by `optllm plan`."),
    models: Path = typer.Option(..., "--models", help="Model catalogue (YAML or TOML) with base_url and api_key_env."),
    out: Path = typer.Option(..., "--out", help="answers.jsonl to append to (its ledger goes beside it); re-run to resume."),
    concurrency: int = typer.Option(16, "--concurrency", help="Requests in flight at once."),
    max_spend: Optional[float] = typer.Option(None, "--max-spend", help="Hard cap in USD on the total spent on this answers file, all runs together."),
    fallback: bool = typer.Option(False, "--fallback", help="When a query keeps failing on its model, try the next model on its cost/accuracy staircase."),
    max_attempts: int = typer.Option(4, "--max-attempts", help="Tries per model on 429/5xx/timeouts."),
    backoff: float = typer.Option(0.5, "--backoff", help="First retry delay in seconds (doubles each try, with jitter)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the retry jitter."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
    json_out: bool = typer.Option(False, "--json", help="Print the run report as JSON."),
) -> None:
    """Send each planned prompt to its model (any OpenAI-compatible server) and record the answers.

    Nothing is sent unless the catalogue is valid and every API-key variable is set. Answers
    are appended to --out as they arrive (fsynced); re-running resumes and never re-sends an
    answered query. Each call reserves its upper-bound cost before it is sent; sending stops
    when the next reservation would exceed --max-spend. Exit code 0 when every planned query
    has an answer, 1 when some failed or were not sent."""
    from optllm.cost import load_catalogue
    from optllm.dispatch.client import dispatch as run_dispatch
    from optllm.dispatch.plan import read_plan

    cat = load_catalogue(models)
    items = read_plan(plan_dir)
    if max_spend is None and not json_out:
        err_console.print("note: no --max-spend given, so spending is not capped", highlight=False)
    rep = run_dispatch(items, cat, out, concurrency=concurrency, max_spend=max_spend, fallback=fallback,
                       max_attempts=max_attempts, backoff_base=backoff, seed=seed,
                       progress=progress and not json_out, console=err_console)
    d = rep.as_dict()
    if json_out:
        emit_json(d)
    else:
        console.print(f"answered {rep.answered:,} now, {rep.already_answered:,} before; failed {len(rep.failed):,}; "
                      f"not sent {rep.not_sent:,}; spent ${rep.spent_this_run:.6f} this run, "
                      f"${rep.spent_total:.6f} in all" + (f" of ${max_spend:.6f}" if max_spend is not None else ""))
        if rep.stopped:
            console.print(f"[yellow]stopped: {rep.stopped}[/]")
        for qid, why in list(rep.failed.items())[:5]:
            console.print(f"[red]failed[/] {qid}: {why}")
        console.print(f"-> {rep.answers_path} (ledger {rep.ledger_path})")
    if rep.remaining > 0:
        raise typer.Exit(1)
