"""`optllm datasets` and `optllm describe`."""
from __future__ import annotations

import typer
from rich.table import Table

from optllm.cli.app import app, console, emit_json, load_data
from optllm.data import datasets as list_datasets


@app.command()
def datasets(json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the named datasets, whether their files were found, and their size (n × m)."""
    rows = []
    for info in list_datasets():
        row = {"name": info.name, "description": info.description, "available": info.available(),
               "parts": list(info.parts), "n_queries": None, "n_models": None}
        if row["available"] and info.name not in ("synthetic", "routellm"):
            data = info.loader()
            row["n_queries"], row["n_models"] = data.n, data.m
        rows.append(row)
    if json_out:
        emit_json(rows)
        return
    t = Table(title="Named datasets")
    for col in ("name", "found", "n", "m", "description"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["name"], "yes" if r["available"] else "[red]no[/]",
                  "" if r["n_queries"] is None else f"{r['n_queries']:,}",
                  "" if r["n_models"] is None else str(r["n_models"]), r["description"])
    console.print(t)


@app.command()
def describe(
    data: str = typer.Argument(..., help="Named dataset or path to a long/wide file."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Per model: accuracy, total and mean cost; the oracle; the best single model."""
    out = load_data(data)
    s = out.summary()
    if json_out:
        emit_json(s)
        return
    print_summary(s)


def print_summary(s: dict) -> None:
    """A rich table of the candidate LLMs and the oracle."""
    t = Table(title=f"{s['name']}: {s['n_queries']:,} queries × {s['n_models']} LLMs")
    t.add_column("model")
    t.add_column("accuracy", justify="right")
    t.add_column("total cost $", justify="right")
    t.add_column("mean cost $", justify="right")
    for r in sorted(s["models"], key=lambda r: r["total_cost"]):
        style = "bold green" if r["name"] == s["best_model"] else None
        t.add_row(r["name"], f"{r['accuracy']:.4f}", f"{r['total_cost']:.4f}", f"{r['mean_cost']:.6f}", style=style)
    t.add_section()
    t.add_row("oracle (cheapest correct per query)", f"{s['oracle']['accuracy']:.4f}",
              f"{s['oracle']['total_cost']:.4f}", "", style="bold")
    console.print(t)
    console.print(f"Best single model: [bold]{s['best_model']}[/]")
