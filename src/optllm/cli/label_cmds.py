"""`optllm label`: from a sample of prompts to the labels `optllm plan` needs."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from optllm.cli.app import app, console, emit_json, err_console
from optllm.errors import OptLLMError
from optllm.labelling.scorers import DEFAULT_SCORER


@app.command()
def label(
    samples: list[Path] = typer.Argument(..., help="JSONL/CSV/Parquet files with id and prompt (e.g. written by `optllm sample`), and a reference answer column unless --references gives them. Several files are labelled together: add a new sample to the old one and only its prompts are sent."),
    models: Path = typer.Option(..., "--models", help="Model catalogue (YAML or TOML) with base_url and api_key_env: every model answers every prompt."),
    out: Path = typer.Option(..., "--out", help="Labels to write (.csv or .parquet), the long format `optllm plan --labels` reads."),
    scorer: str = typer.Option(DEFAULT_SCORER, "--scorer", help="How an answer is judged: exact, normalised (case, punctuation, articles, spaces), number[:TOL], choice (letter A-J), regex:PATTERN, contains, python:MODULE:FUNCTION (yours: f(answer, reference, *, query_id, prompt) -> bool|None), or judge:MODEL (a catalogue model grades with a rubric; its calls count as labelling cost)."),
    reference_column: str = typer.Option("reference", "--reference-column", help="Column holding the reference answer (in the sample, or in --references)."),
    references: Optional[Path] = typer.Option(None, "--references", help="File with id and the reference column, when the sample has none."),
    rubric: Optional[Path] = typer.Option(None, "--rubric", help="With judge:MODEL, your own rubric (text with {prompt}, {answer} and optionally {reference_block}); the one used is stored in the work folder."),
    max_spend: Optional[float] = typer.Option(None, "--max-spend", help="Hard cap in USD on labelling (answers and judge together, all runs together)."),
    concurrency: int = typer.Option(16, "--concurrency", help="Requests in flight at once."),
    max_attempts: int = typer.Option(4, "--max-attempts", help="Tries per call on 429/5xx/timeouts."),
    work: Optional[Path] = typer.Option(None, "--work", help="Folder for the call journals (default: OUT.calls beside the labels); re-run to resume."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Send every sample prompt to every catalogue model, score each answer, write labels.

    Calls go through the dispatcher: bounded concurrency, rate limits, retries, a durable
    journal (re-running resumes; a prompt/model pair with an answer is never sent twice) and a
    hard --max-spend. The labels have one row per answered pair (query_id, model, correct,
    cost from billed usage, prompt/completion tokens, judge_cost, parsed, prompt, answer,
    reference). An answer the scorer cannot read is scored 0 and counted per model. Exit
    code 0 when every pair is labelled, 1 when some are missing (failed or capped: re-run), 2
    on bad input."""
    from optllm.cost import load_catalogue
    from optllm.labelling import label as run_label
    from optllm.labelling import load_rubric, parse_scorer, read_references
    from optllm.labelling.label import check_label_outputs

    check_label_outputs(out, work)
    sc = parse_scorer(scorer)
    if rubric is not None and sc.judge_model is None:
        raise OptLLMError("--rubric is for --scorer judge:MODEL")
    text = load_rubric(rubric)
    cat = load_catalogue(models)
    ids, prompts, given = _read_samples(samples, reference_column)
    refs = None
    if references is not None:
        refs = read_references(references, ids, reference_column)
    elif given:
        missing = [s for s in samples if str(s) not in given]
        if missing:
            raise OptLLMError(f"{missing[0]}: no {reference_column!r} column (the other samples have one)")
        refs = {}
        for part in given.values():
            refs.update(part)
        refs = read_references(samples[0], ids, reference_column, refs)
    elif sc.needs_reference:
        raise OptLLMError(f"{samples[0]}: no {reference_column!r} column; --scorer {sc.name} needs a reference answer "
                          f"per query (add the column, name it with --reference-column, or give --references FILE)")
    if max_spend is None and not json_out:
        err_console.print("note: no --max-spend given, so spending is not capped", highlight=False)
    rep = run_label(list(ids), prompts, refs, cat, sc, out, work=work, max_spend=max_spend, concurrency=concurrency,
                    rubric=text, max_attempts=max_attempts, progress=progress and not json_out, console=err_console)
    if json_out:
        emit_json(rep.as_dict())
    else:
        _print_report(rep)
    if rep.interrupted:
        raise typer.Exit(130)
    if rep.missing:
        raise typer.Exit(1)


def _read_samples(paths: list[Path], column: str) -> tuple[list[str], list[str], dict[str, dict[str, str]]]:
    """Ids and prompts of every sample file (an id in two files must carry the same prompt),
    and per file that has `column`, its references by id."""
    from optllm.planning.prompts import read_prompt_table

    ids: list[str] = []
    prompts: list[str] = []
    seen: dict[str, str] = {}
    refs: dict[str, dict[str, str]] = {}
    for path in paths:
        got, texts, extra = read_prompt_table(path)
        if column in extra:
            refs[str(path)] = dict(zip(map(str, got), extra[column]))
        for q, t in zip(map(str, got), texts):
            if q in seen:
                if seen[q] != t:
                    raise OptLLMError(f"{path}: id {q!r} is in an earlier sample with a different prompt")
                continue
            seen[q] = t
            ids.append(q)
            prompts.append(t)
    return ids, prompts, refs


def _print_report(rep) -> None:  # type: ignore[no-untyped-def]
    t = Table(title=f"labels: {rep.labelled:,} of {rep.pairs:,} prompt x model pairs ({rep.queries:,} prompts)")
    for col in ("model", "accuracy", "unparsed", "cost USD"):
        t.add_column(col, justify="left" if col == "model" else "right")
    for m in rep.models:
        acc = rep.accuracy.get(m)
        t.add_row(m, "-" if acc is None else f"{acc:.3f}", str(rep.unparsed.get(m, 0)), f"{rep.cost.get(m, 0.0):.6f}")
    console.print(t)
    if rep.judge_cost or rep.judge_unclear:
        console.print(f"judge: ${rep.judge_cost:.6f}; {rep.judge_unclear} verdicts neither CORRECT nor INCORRECT "
                      "(scored 0)")
    cap = f" of ${rep.max_spend:.6f}" if rep.max_spend is not None else ""
    console.print(f"spent ${rep.spent_total:.6f}{cap} in all (every run, answers and judge)")
    if rep.stopped:
        console.print(f"[yellow]stopped: {rep.stopped}[/]")
    if rep.missing:
        console.print(f"[yellow]{rep.missing:,} pairs have no label yet (failed or not sent); re-run to retry them[/]")
        for k, why in list(rep.failed_examples.items())[:5]:
            console.print(f"[red]failed[/] {k.replace(chr(9), ' / ')}: {why}")
    console.print(f"-> {rep.out} (call journals in {rep.work})")
