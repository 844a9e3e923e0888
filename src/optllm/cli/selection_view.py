"""The one table `optllm run` and `optllm plan` print for a `Selection`: the chosen plan, the
plan not chosen, the best plan without a predictor, and a single-LLM row, each with its cost,
predicted accuracy, held-out-corrected estimate and bounds (and, for `run`, what it really
achieved on the true labels)."""
from __future__ import annotations

from typing import Any

from rich.table import Table

from optllm.cli.app import console
from optllm.selection.goal import percent


def _f(x: Any, fmt: str = ".4f") -> str:
    return "" if x is None else format(float(x), fmt)


def print_selection(sel: dict[str, Any], *, single: dict[str, Any] | None = None,
                    realised: dict[str, Any] | None = None, cost_label: str = "cost $") -> None:
    """`sel`: `Selection.as_dict()`; `single`: a row for a single LLM (name, cost, predicted,
    estimated, lower, upper, realised — any may be missing); `realised`: `Realised.as_dict()`
    (run only: adds the realised-accuracy column)."""
    conf = sel["confidence"]
    show_real = realised is not None
    t = Table(title=f"Chosen plan — {sel['rule']}" if sel["reachable"] else "No plan certified for the goal")
    t.add_column("")
    t.add_column(cost_label, justify="right")
    t.add_column("predicted acc", justify="right")
    t.add_column("held-out corrected", justify="right")
    t.add_column(f"{percent(conf)} lower, upper bounds", justify="right")
    if show_real:
        t.add_column("realised acc", justify="right")

    def row(label: str, fig: dict[str, Any] | None, real: float | None = None, cost: float | None = None) -> None:
        if fig is None:
            return
        bounds = "" if fig.get("lower") is None else f"[{_f(fig['lower'])}, {_f(fig['upper'])}]"
        cells = [label, _f(cost if cost is not None else fig.get("cost")), _f(fig.get("predicted_accuracy")),
                 _f(fig.get("estimated_accuracy")), bounds]
        if show_real:
            cells.append(_f(real))
        t.add_row(*cells)

    if sel["chosen"] is not None:
        row("[bold]plan[/]", sel["chosen"], realised and realised["accuracy"], realised and realised["cost"])
    alt, ref = sel["alternative"], sel["reference"]
    if alt is not None:
        row("[dim]not chosen[/]", alt, realised and realised.get("alternative_accuracy"))
    if ref is not None:
        row("[dim]reference[/]", ref)
    if single is not None:
        row(f"{single['name']} alone", single, single.get("realised"))
    console.print(t)
    if alt is not None:
        console.print(f"not chosen: {alt['description']}", style="dim", highlight=False)
    if ref is not None:
        console.print(f"reference: {ref['description']}", style="dim", highlight=False)
    if sel["message"]:
        console.print(("" if sel["reachable"] else "[yellow]") + sel["message"] + ("" if sel["reachable"] else "[/]"),
                      highlight=False)
    if sel["goal"]["kind"] == "budget" and sel["certified_gap"] is not None:
        console.print(f"certified optimality gap at this budget (expected accuracy): {sel['certified_gap']:.2e}")
    if sel["goal"]["kind"] == "budget" and sel["goal"]["safe"] and sel["reference"] is not None:
        console.print("safe budget rule on (--no-safe: the most accurate predicted plan within the budget)",
                      style="dim")
