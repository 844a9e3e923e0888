"""`optllm sample`, `optllm plan` and `optllm dispatch`: from a user's own prompts to answers."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.table import Table

from optllm.cli import options as opt
from optllm.cli.app import app, console, emit_json, err_console
from optllm.cli.run_cmds import stages
from optllm.errors import OptLLMError
from optllm.evaluate.uncertainty import DEFAULT_ESTIMATOR
from optllm.planning.adaptive import AdaptiveSettings


@app.command()
def sample(
    prompts: Path = typer.Argument(..., help="JSONL/CSV/Parquet with columns id and prompt."),
    size: Optional[str] = typer.Option(None, "--size", help="How many to label: a percentage (1%), a fraction (0.01) or a count (20). Default: the label advisor's count for --margin at --confidence (at least 30, at most half the prompts)."),
    margin: float = typer.Option(0.05, "--margin", help="Label advisor: the accuracy gap the bounds should resolve (their distance below the estimate)."),
    confidence: float = typer.Option(0.9, "--confidence", help="Label advisor: the confidence the plan will be certified at."),
    strategy: str = typer.Option("random", "--strategy", help="random, or diverse (covers the TF-IDF space of the prompts)."),
    method: str = typer.Option("stratified", "--method", help="For diverse: stratified (random within k-means clusters, in proportion to their sizes), kmeans (the prompt nearest each centre) or farthest (farthest-point)."),
    exclude: Optional[Path] = typer.Option(None, "--exclude", help="Labels (long format) or prompts already labelled: never chosen again (to add labels to a sample)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    out: Path = typer.Option(..., "--out", help="JSONL to write (id, prompt) of the queries to label."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Choose which prompts to send to every candidate model for labelling.

    Other columns of PROMPTS (a reference answer) are kept in the sample. Then `optllm
    label` sends each chosen prompt to every model, scores the answers and writes the labels
    for `optllm plan --labels`. With --exclude, only prompts not labelled yet are drawn (a
    percentage --size is then of those)."""
    from dataclasses import replace

    from optllm.io import check_output_file
    from optllm.planning.advisor import default_sample_size
    from optllm.planning.prompts import exclude_ids, read_prompt_table, write_prompts
    from optllm.sample import choose_sample

    check_output_file(out, "--out")
    if seed < 0:
        raise OptLLMError(f"--seed must be a non-negative integer, got {seed}")
    ids, texts, extra = read_prompt_table(prompts)
    pool = np.arange(len(texts))
    if exclude is not None:
        pool = exclude_ids(ids, exclude)
        if not pool.size:
            raise OptLLMError(f"--exclude {exclude}: every prompt of {prompts} is labelled already")
    done = len(texts) - int(pool.size)
    want, adv = default_sample_size(len(texts), margin=margin, confidence=confidence)
    adv = replace(adv, have=done)
    if size is None:
        size = str(max(min(want - done, int(pool.size)), 1))
    idx = pool[choose_sample([texts[i] for i in pool], size, strategy=strategy, seed=seed, method=method)]
    write_prompts(out, ids[idx], [texts[i] for i in idx], {c: [v[i] for i in idx] for c, v in extra.items()})
    adv = replace(adv, have=done + int(idx.size))
    info = {"prompts": len(texts), "excluded": done, "sampled": int(idx.size),
            "strategy": strategy, "seed": seed, "out": str(out), "label_advice": adv.as_dict()}
    if strategy == "diverse":
        info["method"] = method
    if json_out:
        emit_json(info)
    else:
        console.print(f"{idx.size:,} of {pool.size:,} prompts chosen ({strategy}) -> {out}")
        style = "" if adv.enough else "[yellow]warning:[/] "
        console.print(f"{style}label advisor: {adv.message}", highlight=False)


@app.command()
def plan(
    prompts: Path = typer.Argument(..., help="JSONL/CSV/Parquet with columns id and prompt: the whole batch."),
    models: Path = typer.Option(..., "--models", help="Model catalogue (YAML or TOML), see examples/models.yaml."),
    labels: Path = typer.Option(..., "--labels", help="Labelled sample in the long format: query_id, model, correct[, cost, prompt, prompt_tokens, completion_tokens, split (train|val)]. With --label-budget: the labels file optllm writes (and resumes)."),
    label_budget: Optional[float] = typer.Option(None, "--label-budget", help="Label in rounds until --target-accuracy is certified, spending at most this many USD on labelling (every candidate model answers each labelled prompt, except holdout prompts under --certify holdout; needs --scorer and reference answers in PROMPTS)."),
    scorer: str = typer.Option("normalised", "--scorer", help="With --label-budget: how answers are scored (as in `optllm label`)."),
    reference_column: str = typer.Option("reference", "--reference-column", help="With --label-budget: the column of PROMPTS holding reference answers."),
    rounds: int = typer.Option(AdaptiveSettings.max_rounds, "--rounds", help="With --label-budget: labelling rounds planned (the confidence is spent over them)."),
    certify: str = typer.Option(AdaptiveSettings.certify, "--certify", help="With --label-budget: how each round's plan is certified. cross-fit: every candidate model labels every labelled prompt, and the cross-fitted predictor bounds the plans on all of them. holdout: a share (--holdout) of the labelled prompts never trains the predictor; each is labelled only by the models the tested plans send it to, and the plans are bounded on their answers there (exact binomial). holdout pays where labelling every model costs several times the best model's own call."),
    holdout: float = typer.Option(AdaptiveSettings.holdout, "--holdout", help="With --certify holdout: the share of the labelled prompts kept as the holdout, drawn by --seed."),
    budget: Optional[float] = typer.Option(None, "--budget", help=opt.BUDGET),
    target: Optional[float] = typer.Option(None, "--target-accuracy", help=opt.TARGET),
    confidence: float = typer.Option(0.9, "--confidence", help=opt.CONFIDENCE),
    safe: bool = typer.Option(True, "--safe/--no-safe", help=opt.SAFE),
    folds: int = typer.Option(5, "--folds", help=opt.FOLDS),
    bound: str = typer.Option(DEFAULT_ESTIMATOR, "--bound", help=opt.BOUND),
    risk: Optional[float] = typer.Option(None, "--risk", help="With --budget: also keep the REALISED cost under the budget with this probability (e.g. 0.95)."),
    risk_method: str = typer.Option("normal", "--risk-method", help="normal: mean + z·sd of the total (per-query variance from the output-length spread, queries independent); quantile: sum of per-query upper-quantile costs."),
    quantile: float = typer.Option(0.95, "--quantile", help="Upper quantile of the output length used for est_cost_upper."),
    length_regression: bool = typer.Option(False, "--length-regression", help="Predict output length linearly from prompt length (per model)."),
    predictor: str = typer.Option("default", "--predictor", help=opt.PREDICTOR),
    val_share: float = typer.Option(0.5, "--val-share", help="Share of the labelled sample the predictor validates on (the rest trains it), drawn by --seed; a 'split' column in the labels fixes the roles instead."),
    seed: int = typer.Option(0, "--seed", help=opt.SEED),
    tier: str = typer.Option("online", "--tier", help="Prices to plan at: online (as in the catalogue), batch (every model at its batch tier, e.g. batch: {discount: 0.5}; dispatch --via batch sends through the provider's /v1/batches) or auto (batch where a model offers it). The summary gives the plan's cost at both."),
    out: Path = typer.Option(..., "--out", help="Folder for plan.csv, prompts.jsonl, front.csv, front.png, summary.json (written all or nothing). With --engine ray: part-*.parquet (query, model, model_name), ids.parquet (query, id), summary.json."),
    json_out: bool = typer.Option(False, "--json", help="Print summary.json to stdout."),
    engine: str = typer.Option("local", "--engine", help="local (one process) or ray: the fit on the driver, the prompts featurised and predicted with ray.data on the workers, the plan taken by the Ray front engine and written as Parquet shards (needs optllm[ray])."),
    address: Optional[str] = typer.Option(None, "--address", help="--engine ray: the Ray cluster to join (default: start a local one)."),
    batch_rows: int = typer.Option(4096, "--batch-rows", help="--engine ray: prompts per prediction batch (and per p/cost shard)."),
) -> None:
    """Assign every unlabelled prompt to a model, with the same rules as `optllm run`: the
    most accurate plan within --budget that reliably beats the best plan without a predictor,
    or the cheapest plan CERTIFIED to reach --target-accuracy at --confidence (neither: the
    knee of the front).

    The predictor is fitted on the labelled prompts and cross-fitted (--folds) to correct and
    bound every plan's accuracy; costs are prompt tokens (counted with tiktoken, offline) and
    output tokens (per model from the labels: mean and upper quantile) at the catalogue's
    prices. With --risk the budget also holds for the realised cost at that probability.
    Exit code 0 with a plan, 1 when the target cannot be certified (no plan.csv; the output
    says how many labels might do and the command that adds them), 2 on bad input."""
    from optllm.cost import check_quantile, load_catalogue
    from optllm.data import load_long
    from optllm.io import check_output_dir
    from optllm.planning import PLAN_FILES, PlanSettings, build_plan, read_prompts, write_plan
    from optllm.selection import Goal

    if engine not in ("local", "ray"):
        raise OptLLMError(f"--engine must be local or ray, got {engine!r}")
    check_quantile(quantile, "--quantile")  # said before any data is read, with the option's name
    if label_budget is None and (certify != AdaptiveSettings.certify or holdout != AdaptiveSettings.holdout):
        raise OptLLMError("--certify and --holdout are for --label-budget (how its rounds certify a plan)")
    if certify != "holdout" and holdout != AdaptiveSettings.holdout:
        raise OptLLMError("--holdout is the share kept by --certify holdout; give --certify holdout with it")
    AdaptiveSettings(certify=certify, holdout=holdout)  # a bad value is said now, before any data is read
    if engine == "local" and (address is not None or batch_rows != 4096):
        raise OptLLMError("--address and --batch-rows are for --engine ray")
    if engine == "ray":
        from optllm.cli.ray_plan import ray_plan_cmd

        goal = Goal(budget=budget, target_accuracy=target, confidence=confidence, safe=safe, risk=risk,
                    risk_method=risk_method)
        settings = PlanSettings(predictor=predictor, folds=folds, seed=seed, bound=bound)
        with stages(not json_out) as say:
            s = ray_plan_cmd(prompts, models, labels, out, goal=goal, settings=settings, address=address,
                             quantile=quantile, length_regression=length_regression, val_share=val_share, tier=tier,
                             label_budget=label_budget, batch_rows=batch_rows, progress=say)
        sel = s["selection"]
        if json_out:
            emit_json(s)
        else:
            console.print(f"[bold]{s['n_to_plan']:,} prompts planned on Ray[/] ({s['n_labelled']} labelled); "
                          f"{sel['rule']}: {sel['message']}", highlight=False)
            if s.get("assigned"):
                console.print(", ".join(f"{k} {v:,}" for k, v in sorted(s["assigned"].items(), key=lambda kv: -kv[1])))
            console.print(f"wrote {out}/ (part-*.parquet, ids.parquet, summary.json)", highlight=False)
        if not sel["reachable"]:
            raise typer.Exit(1)
        return
    check_output_dir(out, "--out", PLAN_FILES)
    if label_budget is not None:  # the labels file (and its journals) is written by the labelling rounds
        from optllm.labelling.label import check_label_outputs

        check_label_outputs(labels, option="--labels")
    goal = Goal(budget=budget, target_accuracy=target, confidence=confidence, safe=safe, risk=risk,
                risk_method=risk_method)
    settings = PlanSettings(predictor=predictor, folds=folds, seed=seed, bound=bound)
    cat = load_catalogue(models)
    cat.priced(tier)  # an unknown tier, or a model without a batch tier under --tier batch: said now
    if label_budget is not None:
        res, labelling = _plan_labelling(prompts, cat, labels, goal, settings, label_budget, scorer, reference_column,
                                         rounds, val_share, seed, json_out, tier, certify, holdout)
        s = res.summary
        s["labelling"] = labelling.as_dict()
        sel = s["selection"]
        s["next_step"] = None if sel["reachable"] else (
            f"labelling stopped ({labelling.stop}); re-run with a larger --label-budget to label more (keep "
            "--rounds, --confidence and --seed: the rounds' error split is fixed by them)")
        write_plan(res, out, inputs={"prompts": str(prompts), "models": str(models), "labels": str(labels)})
        if json_out:
            emit_json(s)
        else:
            from optllm.selection.goal import percent

            console.print(f"--confidence {percent(confidence)} is spent over the rounds: each tests at its share")
            for rd in labelling.rounds:
                console.print(f"round {rd.index}: {rd.n_labelled:,} labelled, ${rd.label_cost:.4f} spent, tested at "
                              f"{percent(rd.level)}: " + ("certified" if rd.certified else "not certified")
                              + (f" -> stop ({rd.stop})" if rd.stop else ""))
            _print_plan(s, out)
        if not sel["reachable"]:
            raise typer.Exit(1)
        return
    ids, texts = read_prompts(prompts)
    labelled = load_long(labels, require_cost=False, binary=True)
    with stages(not json_out) as say:
        res = build_plan(ids, texts, cat, labelled, goal, settings, quantile=quantile,
                         length_regression=length_regression, val_share=val_share, labels_source=str(labels),
                         progress=say, tier=tier)
        s = res.summary
        sel = s["selection"]
        s["next_step"] = (None if sel["reachable"] else
                          _more_labels_hint(prompts, models, labels, sel["labels_needed"], s["n_labelled"]))
        say("write outputs")
        write_plan(res, out, inputs={"prompts": str(prompts), "models": str(models), "labels": str(labels)})
    if json_out:
        emit_json(s)
    else:
        _print_plan(s, out)
    if not sel["reachable"]:
        raise typer.Exit(1)


def _plan_labelling(prompts: Path, cat, labels: Path, goal, settings, budget: float, scorer: str,  # type: ignore[no-untyped-def]
                    reference_column: str, rounds: int, val_share: float, seed: int, quiet: bool, tier: str,
                    certify: str, holdout: float):
    """`plan --label-budget`: `labelling.until.plan_with_labelling` on PROMPTS' own references."""
    from optllm.labelling import parse_scorer, read_references
    from optllm.labelling.until import plan_with_labelling
    from optllm.planning.prompts import read_prompt_table

    sc = parse_scorer(scorer)
    adaptive = AdaptiveSettings(label_budget=budget, max_rounds=rounds, val_share=val_share if val_share > 0 else 0.5,
                                certify=certify, holdout=holdout)
    ids, texts, extra = read_prompt_table(prompts)
    refs = None
    if reference_column in extra:
        refs = read_references(prompts, ids, reference_column, dict(zip(ids, extra[reference_column])))
    elif sc.needs_reference:
        raise OptLLMError(f"{prompts}: no {reference_column!r} column; --label-budget with --scorer {sc.name} needs a "
                          "reference answer per prompt (or --scorer judge:MODEL)")
    if labels.exists() and not (labels.parent / (labels.name + ".calls")).exists():
        raise OptLLMError(f"--labels {labels}: exists and was not written by --label-budget (no {labels.name}.calls "
                          "journal beside it); give a new file, or plan on it without --label-budget")
    with stages(not quiet) as say:
        lp = plan_with_labelling(list(ids), texts, refs, cat, sc, goal, labels, settings=settings, adaptive=adaptive,
                                 val_share=val_share, seed=seed, progress=say, console=err_console, tier=tier)
    return lp.plan, lp


def _more_labels_hint(prompts: Path, models: Path, labels: Path, need: int | None, have: int) -> str | None:
    """The command that adds labels when a target could not be certified (None when more
    labels alone will not do)."""
    if not need:
        return None
    more = max(need - have, 1)
    return (f"optllm sample {prompts} --size {more} --exclude {labels} --out more.jsonl; then "
            f"optllm label SAMPLE more.jsonl --models {models} --out {labels} with your first sample and scorer "
            "(only the new prompts are sent)")


def _print_plan(s: dict, out: Path) -> None:
    from optllm.cli.selection_view import print_selection
    from optllm.planning import PLAN_FILES

    sel = s["selection"]
    console.print(f"[bold]{s['n_to_plan']:,} prompts to plan[/], {s['n_labelled']} labelled "
                  f"({s['n_train']} train, {s['n_validation']} validation"
                  + (f", {s['n_holdout']} holdout with {s['holdout_pairs_labelled']:,} of its "
                     f"{s['n_holdout'] * len(s['models']):,} pairs labelled" if s.get("n_holdout") else "")
                  + "; not planned)")
    adv = s["label_advice"]
    if not adv["enough"]:
        err_console.print(f"[yellow]warning:[/] label advisor: {adv['message']}", highlight=False)
    singles = [r for r in s["single_models"] if r.get("estimated_accuracy") is not None] or s["single_models"]
    best = max(singles, key=lambda r: (r.get("estimated_accuracy", r["predicted_accuracy"]), -r["est_cost"]),
               default=None)
    single = None if best is None else {**best, "cost": best["est_cost"], "name": best["name"]}
    print_selection(sel, single=single, cost_label="est. cost $")
    if s["cost"] is not None:
        c = s["cost"]
        t = Table(title="Queries per model")
        t.add_column("model")
        t.add_column("queries", justify="right")
        for name, n in sorted(s["assigned"].items(), key=lambda kv: -kv[1]):
            t.add_row(name, f"{n:,}")
        console.print(t)
        console.print(f"estimated cost ${c['cost_mean']:.4f} (sd ${c['cost_sd']:.4f}; "
                      f"{c['cost_at_risk_probability']:.0%} sure under ${c['cost_at_risk']:.4f})")
        tr = s.get("tier") or {}
        if tr.get("tier", "online") != "online":
            console.print(f"priced at --tier {tr['tier']}: {tr['queries_batch']:,} queries at batch prices "
                          f"({', '.join(tr['batch_models']) or 'no model offers one'}); the same plan online: "
                          f"${tr['cost_mean_online']:.4f}; `optllm dispatch` sends those queries through the batch API")
        console.print(f"suggested --max-spend for dispatch: ${c['spend_cap_hint']:.4f}, the sum of the per-call "
                      "worst cases dispatch reserves before each call (max_output_tokens, token margin); a cap "
                      "below it may stop sending before every prompt is answered")
    elif s.get("next_step"):
        console.print(f"to add labels: {s['next_step']}", highlight=False)
    if s["n_no_feasible_model"]:
        err_console.print(f"[yellow]{s['n_no_feasible_model']} prompt(s) fit no model's context and were left out "
                          f"(see summary.json)[/]")
    if s["models_not_in_labels"]:
        err_console.print(f"[yellow]not planned (no labels): {', '.join(s['models_not_in_labels'])}[/]")
    if s["infeasible_pairs"]:
        console.print("prompts over a model's context (that pair excluded): " +
                      ", ".join(f"{k} {v}" for k, v in s["infeasible_pairs"].items()))
    console.print(f"wrote {out}/: " + ", ".join(f for f in PLAN_FILES if (out / f).exists()))


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
    via: str = typer.Option("plan", "--via", help="plan: each query the way the plan priced it (plan --tier); batch: through the provider's batch API (/v1/files + /v1/batches, at the batch price) for every model with a batch tier; online: one request per query."),
    retry_failed: str = typer.Option("online", "--retry-failed", help="With batches: lines a batch failed or did not run (expired, cancelled) are retried online (at the online price), in a follow-up batch, or not at all (none)."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="With batches: poll until they end (Ctrl-C stops polling; they keep running), or submit and return; the same command collects them later."),
    poll_interval: float = typer.Option(30.0, "--poll-interval", help="With batches: seconds between polls at first (grows 1.5x per poll, to 10 minutes)."),
    engine: str = typer.Option("local", "--engine", help="local: this process sends every request; ray: the plan's shards are sent from the workers of a Ray cluster (`optllm[ray]`) under one global spend cap held by a coordinator actor (online requests only)."),
    address: Optional[str] = typer.Option(None, "--address", help="With --engine ray: the cluster to join (default: the running session, or a local one)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="With --engine ray: sending workers (default: the cluster's CPUs); --concurrency is per worker."),
    json_out: bool = typer.Option(False, "--json", help="Print the run report as JSON."),
) -> None:
    """Send each planned prompt to its model (any OpenAI-compatible server) and record the answers.

    Nothing is sent unless the catalogue is valid and every API-key variable is set. Answers
    are appended to --out as they arrive (fsynced); re-running resumes and never re-sends an
    answered query. Each call reserves its upper-bound cost before it is sent; sending stops
    when the next reservation would exceed --max-spend (when the cap is below the plan's cost,
    the cheapest calls go first, so it answers as many queries as it can). A server that bills
    more than reserved is caught from the billed usage (see README, Guarantees). Ctrl-C stops
    sending and waits for the calls in flight (Ctrl-C again abandons them). Exit code 0 when
    every planned query has an answer, 1 when some failed or were not sent, 130 when
    interrupted.

    With batches (`--via batch`, or a plan made with `--tier batch|auto`): one batch per
    endpoint and model at the batch price; the batch ids are journaled, so a re-run polls them
    again and never submits twice; answers go to the same --out and ledger."""
    from optllm.cost import load_catalogue
    from optllm.dispatch.client import check_options, check_ready, dispatch as run_dispatch
    from optllm.planning import read_plan

    from optllm.dispatch.ledger import ledger_path
    from optllm.io import check_output_file

    from optllm.dispatch.batch import check_batch_options
    from optllm.cli.ray_dispatch import check_engine, ray_dispatch_cli

    if via not in ("plan", "batch", "online"):
        raise OptLLMError(f"--via must be plan, batch or online, got {via!r}")
    check_options(concurrency=concurrency, max_spend=max_spend, max_attempts=max_attempts, backoff_base=backoff)
    check_batch_options(retry=retry_failed, poll_interval=poll_interval)
    check_engine(engine, address, workers)
    check_output_file(out, "--out")
    check_output_file(ledger_path(out), "--out (its ledger)")
    cat = load_catalogue(models)
    items = read_plan(plan_dir, fallback=fallback)
    check_ready(items, cat, fallback)  # every problem is reported before anything else is printed
    if max_spend is None and not json_out:
        err_console.print("note: no --max-spend given, so spending is not capped", highlight=False)
    batched = via == "batch" or (via == "plan" and any(it.tier == "batch" for it in items))
    priced_batch = [it for it in items if it.tier == "batch"]
    lacking = sorted({it.model for it in priced_batch if cat[it.model].batch is None})
    if not json_out and (via == "online" and priced_batch or via == "plan" and lacking):
        why = "--via online" if via == "online" else f"model(s) {', '.join(lacking)} have no batch tier in {models}"
        err_console.print(f"note: the plan was priced at batch prices, but {why}: those queries go online and cost "
                          "more (the plan's summary.json gives both totals)", highlight=False)
    if engine == "ray":
        rep = ray_dispatch_cli(items, cat, out, address=address, workers=workers, via=via, concurrency=concurrency,
                               max_spend=max_spend, fallback=fallback, max_attempts=max_attempts, backoff=backoff,
                               seed=seed)
    elif batched:
        from optllm.dispatch.batch import dispatch_batch

        if fallback:
            raise OptLLMError("--fallback is for online dispatch; batches retry failed lines with --retry-failed")
        rep = dispatch_batch(items, cat, out, max_spend=max_spend, retry=retry_failed, wait=wait,
                             poll_interval=poll_interval, follow_plan=via == "plan", concurrency=concurrency,
                             max_attempts=max_attempts, backoff_base=backoff, seed=seed,
                             console=None if json_out else err_console)
    else:
        rep = run_dispatch(items, cat, out, concurrency=concurrency, max_spend=max_spend, fallback=fallback,
                           max_attempts=max_attempts, backoff_base=backoff, seed=seed,
                           progress=progress and not json_out, console=err_console)
    if json_out:
        emit_json(rep.as_dict())
    else:
        _print_dispatch(rep)
    if rep.interrupted:
        raise typer.Exit(130)
    if rep.remaining > 0:
        raise typer.Exit(1)


def _print_dispatch(rep) -> None:  # type: ignore[no-untyped-def]
    """The run report for people: what was answered, what was left and why, and the money."""
    if rep.batches:
        t = Table(title="Provider batches")
        for col in ("batch", "model", "queries", "status", "answered", "failed", "not run"):
            t.add_column(col, justify="right" if col in ("queries", "answered", "failed", "not run") else "left")
        for b in rep.batches:
            t.add_row(str(b["batch_id"] or "-"), b["model"], f"{b['lines']:,}",
                      b["status"] or (f"running ({b.get('provider_status') or 'submitted'})" if b["batch_id"]
                                      else "unconfirmed (looked for next run)"), f"{b['answered']:,}",
                      f"{b['failed']:,}", f"{b['not_run']:,}")
        console.print(t)
    if rep.in_pending_batches:
        console.print(f"[yellow]{rep.in_pending_batches:,} queries are in batches not collected yet "
                      f"(${rep.reserved_in_batches:.6f} reserved for them); the same command collects them and "
                      "sends nothing twice[/]")
    if rep.answered_by_other_model:
        console.print(f"[yellow]{rep.answered_by_other_model:,} answers already in {rep.answers_path} came from a model "
                      "this plan does not use for them: the file was written for another plan?[/]")
    left = ""
    if rep.not_sent:
        by = ", ".join(f"{m} {n:,}" for m, n in sorted(rep.not_sent_by_model.items(), key=lambda kv: -kv[1]))
        left = f" ({by}; upper-bound cost ${rep.not_sent_upper_cost:.6f})"
    console.print(f"answered {rep.answered:,} now, {rep.already_answered:,} before; failed {len(rep.failed):,}; "
                  f"not sent {rep.not_sent:,}{left}", highlight=False)
    cap = f" of ${rep.max_spend:.6f}" if rep.max_spend is not None else ""
    unknown = ""
    if rep.spent_uncertain > 0:
        unknown = (f"; up to ${rep.spent_uncertain:.6f} of it is unknown: calls that timed out or lost their "
                   "connection after sending may or may not be billed, so their reservations stay counted")
    if rep.reserved_in_batches > 0:
        unknown += f"; ${rep.reserved_in_batches:.6f} of it is reserved for batches still running"
    console.print(f"spent ${rep.spent_this_run:.6f} this run, ${rep.spent_total:.6f} in all{cap}{unknown}",
                  highlight=False)
    if rep.overruns:
        console.print(f"[red]{rep.overruns} call(s) were billed more than reserved (the server ignores max_tokens or "
                      "counts more prompt tokens than the local tokenizer); later calls reserved the larger amounts[/]")
    if rep.over_cap > 0:
        console.print(f"[bold red]over the cap by ${rep.over_cap:.6f}: calls (or batch lines) were billed more "
                      "than reserved (see README, Guarantees)[/]")
    if rep.order != "as planned":
        console.print(f"order: {rep.order}", highlight=False)
    if rep.resent_after_crash:
        console.print(f"[yellow]{rep.resent_after_crash} queries were in flight when an earlier run was killed: they "
                      "were sent again and may be billed twice[/]")
    for url, why in rep.endpoints_down.items():
        console.print(f"cannot reach {url}, {why}; nothing more was sent there", style="red", highlight=False,
                      markup=False, soft_wrap=True)
    if rep.interrupted:
        console.print(f"[yellow]interrupted by {rep.interrupted}: " + (
            "calls in flight were abandoned (counted as spent; their queries are sent again on resume)"
            if rep.abandoned else "calls in flight were recorded") + "; re-run the same command to resume[/]")
    elif rep.stopped:
        console.print(f"[yellow]stopped: {rep.stopped}[/]", highlight=False)
    listed = [(q, why) for q, why in rep.failed.items() if "unreachable" not in why]
    for qid, why in listed[:5]:
        console.print(f"failed {qid}: {why}", highlight=False, markup=False)
    if len(listed) > 5:
        console.print(f"... and {len(listed) - 5:,} more failed (the ledger has every one)", highlight=False)
    console.print(f"-> {rep.answers_path} (ledger {rep.ledger_path})", highlight=False)
