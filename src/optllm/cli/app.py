"""The typer application object and the helpers every command shares."""
from __future__ import annotations

import sys
from typing import Any

import typer
from rich.console import Console

from optllm.io import dumps_json

app = typer.Typer(
    name="optllm",
    help=(
        "Decide which LLM answers each query in a batch so you pay as little as possible "
        "for the accuracy you need. DATA is a named dataset (see `optllm datasets`) or a "
        "CSV/JSONL/Parquet file in the long or wide format."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

console = Console()
err_console = Console(stderr=True)


def emit_json(obj: Any) -> None:
    """Print strict JSON to stdout (no rich markup, no wrapping)."""
    sys.stdout.write(dumps_json(obj) + "\n")
    sys.stdout.flush()


def load_data(name: str) -> Any:
    """`optllm.data.load(name)`, with what the user should know about how it was read printed
    on stderr (e.g. a wide table's column that looks like a model but has no cost column)."""
    from optllm.data import load
    from optllm.data.wide import wide_notes

    data = load(name)
    for note in wide_notes(data):
        err_console.print(note, style="yellow", markup=False, highlight=False)
    return data
