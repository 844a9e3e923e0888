"""`optllm compare-optimizers`: every optimiser on the same fixed predictions, side by side
(`optllm.evaluate.compare.compare_optimizers`), printed as one table."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from optllm.cli.app import app, console, emit_json, err_console, load_data
from optllm.errors import OptLLMError
from optllm.evaluate.compare import ALL_METHODS, compare_optimizers, expand_methods


_METHODS_HELP = ", ".join("optllm-m (or optllm-m:GN)" if m == "optllm-m" else m for m in ALL_METHODS)


def _fmt(v: Any, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def print_comparison(res: dict[str, Any]) -> None:
    """The rich table of `compare_optimizers` results (means over repetitions)."""
    from rich import box
    from rich.console import Console

    out = console if console.is_terminal else Console(width=max(console.width, 150))
    s, r = res["settings"], res["reference"]
    t = Table(title=(f"{s['data']}: {s['n_queries']:,} queries × {s['n_models']} LLMs, same predictions "
                     f"(noise {s['noise']}), {s['reps']} rep(s), MOEAs {s['generations']} gen × {s['population']}"),
              box=box.SIMPLE_HEAD)
    cols = [("method", "left"), ("points", "right"), ("IGD", "right"), ("IGD+", "right"), ("HV", "right"),
            ("Δ", "right"), ("IGD $", "right"), ("best true acc", "right"), ("time s", "right"),
            ("× exact", "right"), ("dominated by exact", "left")]
    for name, just in cols:
        t.add_column(name, justify=just, no_wrap=True)  # type: ignore[arg-type]
    t_exact = res["speed"]["exact_seconds"]
    for name, v in res["methods"].items():
        m = v["mean"]
        if name == "exact":
            dom = "–"
        else:
            k = m["dominated_by_exact"]
            dom = "yes" if k == s["reps"] else f"[red]no[/] ({s['reps'] - k}/{s['reps']} reps)"
            if m.get("beyond_bound"):
                dom += " [red]BEYOND BOUND[/]"
        ratio = m["seconds"] / t_exact if t_exact > 0 else None
        t.add_row(name, f"{m['points']:.0f}", _fmt(m["igd_norm"], ".4f"), _fmt(m["igd_plus_norm"], ".4f"),
                  _fmt(m["hv_norm"], ".4f"), _fmt(m["delta_norm"], ".3f"), _fmt(m["igd"], ".3f"),
                  _fmt(m["best_true_accuracy"], ".4f"), _fmt(m["seconds"], ".3f"),
                  "1" if name == "exact" else _fmt(ratio, ",.0f"), dom,
                  style="bold" if name == "exact" else None)
    out.print(t)
    out.print(f"IGD, IGD+, HV, Δ against the exact TRUE front ({r['true_front_points']:,} points, from the labels), "
              f"cost normalised by the dearest single model (${r['cost_scale']:.4f}); HV reference point "
              f"(cost {r['hv_ref_norm'][0]}, accuracy {r['hv_ref_norm'][1]}). Times exclude imports and "
              f"one-off compilation (warm-up on a few queries).")
    sp = res["speed"]
    if sp["fastest_other"]:
        verdict = "the fastest" if sp["exact_fastest"] else "[red]not the fastest[/]"
        out.print(f"Exact front: {sp['exact_seconds']:.3f} s, {verdict}; next fastest "
                  f"{sp['fastest_other']} {sp['fastest_other_seconds']:.3f} s "
                  f"({sp['speedup_vs_fastest_other']:,.1f}× the exact time).")
    if s["skipped"]:
        out.print(f"[yellow]skipped (pygmo not installed):[/] {', '.join(s['skipped'])}")


@app.command("compare-optimizers")
def compare_optimizers_cmd(
    data: str = typer.Argument(..., help="Named dataset or path to a long/wide file."),
    reps: int = typer.Option(3, "--reps", help="Repetitions, each with fresh noise (seed + rep)."),
    generations: int = typer.Option(100, "--generations", help="MOEA generations (paper: 100-200)."),
    noise: float = typer.Option(0.3, "--noise", help="p = (1 - noise)·label + noise·Uniform(0,1)."),
    gn: str = typer.Option("10,50,200", "--gn", help="OptLLM-M GN values, comma-separated."),
    methods: str = typer.Option(",".join(ALL_METHODS), "--methods",
                                help=f"Comma-separated: {_METHODS_HELP}. 'exact' always runs."),
    seed: int = typer.Option(0, "--seed", help="Seed of the noise and of every optimiser."),
    json_flag: bool = typer.Option(False, "--json", help="Print the full results as JSON on stdout instead of the table."),
    json_out: Optional[Path] = typer.Option(None, "--json-out", help="Also write the full results as JSON to this file."),
) -> None:
    """Run the exact front, OptLLM-M and the six MOEAs on the same predictions; compare
    IGD, IGD+, HV, Δ, points, best accuracy and time, and check the exact front dominates."""
    try:
        gns = tuple(int(x) for x in gn.split(",") if x.strip())
    except ValueError:
        raise OptLLMError(f"--gn: expected comma-separated integers, got {gn!r}") from None
    if not gns or min(gns) < 1:
        raise OptLLMError(f"--gn: need one or more integers >= 1, got {gn!r}")
    if json_out is not None:
        from optllm.io import check_output_file

        check_output_file(json_out, "--json-out")
    outcomes = load_data(data)
    names = expand_methods(methods.split(","), gns)
    total = reps * len(names)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task("starting", total=total)

        def on_step(i: int, what: str) -> None:
            bar.update(task, completed=i, description=what)

        res = compare_optimizers(outcomes, reps=reps, generations=generations, noise=noise, gns=gns,
                                 methods=methods.split(","), seed=seed, on_step=on_step)
        bar.update(task, completed=total)
    if json_out is not None:
        from optllm.io import write_json

        write_json(json_out, res)
    if json_flag:
        emit_json(res)
        return
    print_comparison(res)
    if json_out is not None:
        err_console.print(f"JSON written to {json_out}")
