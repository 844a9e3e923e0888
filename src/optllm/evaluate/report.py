"""The benchmark report a person reads: report.md with the paper's tables, PNG plots, and
results.json with every number."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from optllm.io import atomic_dir, atomic_open, write_json


def _fmt(a: dict[str, Any] | None, pct: bool = False, digits: int = 4) -> str:
    if not a or a.get("mean") is None:
        return "undefined"
    mean, std = a["mean"], a.get("std")
    if pct:
        s = f"{100 * mean:.1f}%" + (f" ± {100 * std:.1f}" if std is not None else "")
    else:
        s = f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")
    if a.get("defined") is not None and a["defined"] < a.get("of", 0):
        s += f" ({a['defined']}/{a['of']})"
    return s


def markdown(results: dict[str, Any], command: str = "") -> str:
    """The report text."""
    cfg = results["config"]
    lines = ["# optllm benchmark report", ""]
    if command:
        lines += ["Produced by:", "", f"```\n{command}\n```", ""]
    lines += [
        f"Protocol: {cfg['reps']} seeded splits; {cfg['train_frac']} train, {cfg['val_frac']} validation "
        f"(labelled: every LLM run on them), the rest assigned and judged on its true labels. "
        f"MOEAs: {cfg['generations']} generations, first {cfg['moea_reps']} splits. "
        "Savings are against the best single LLM on the assigned queries.",
        "",
        "**Hindsight** figures are the paper's: among a method's front, the cheapest point whose TRUE accuracy "
        "reaches the target — chosen after seeing the truth, which a user cannot do. **Honest** figures pick "
        "the plan from predictions alone.",
        "",
    ]
    for name, d in results["datasets"].items():
        lines += [f"## {name} ({d['n']:,} queries × {d['m']} LLMs)", ""]
        lines += [f"Best single LLM: **{d['best_model']}**. Labelled per split: {d['n_labelled']} queries, "
                  f"labelling cost ${_fmt(d['labelling_cost'])} (not included in the costs below). "
                  f"Wall time {d.get('seconds', 0):.0f} s.", ""]
        lines += ["### Savings and best accuracy (paper Tables II, III; hindsight)", "",
                  "| method | saving at best LLM acc | reached | saving at 99% | reached | best true acc | its cost $ | acc at best LLM cost | acc at half its cost | time s |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for m, f in d["methods"].items():
            lines.append(
                f"| {m} | {_fmt(f['saving_at_best'], pct=True)} | {f['reached_best']['count']}/{f['reached_best']['of']} "
                f"| {_fmt(f['saving_at_99'], pct=True)} | {f['reached_99']['count']}/{f['reached_99']['of']} "
                f"| {_fmt(f['best_true_accuracy'])} | {_fmt(f['cost_at_best_true_accuracy'])} "
                f"| {_fmt(f['acc_at_best_cost_hindsight'])} | {_fmt(f.get('acc_at_half_best_cost_hindsight'))} "
                f"| {_fmt(f['seconds'], digits=2)} |")
        lines += ["", "### Front quality (IGD, IGD+, HV, Δ: normalised cost = cost / most expensive LLM's total; raw in results.json)", "",
                  "| method | IGD | IGD+ | HV | Δ | AIQ | oracle headroom captured | points |", "|---|---|---|---|---|---|---|---|"]
        for m, f in d["methods"].items():
            lines.append(f"| {m} | {_fmt(f.get('igd_norm'))} | {_fmt(f.get('igd_plus_norm'))} | {_fmt(f.get('hv_norm'))} "
                         f"| {_fmt(f.get('delta_norm'))} | {_fmt(f['aiq'])} | {_fmt(f['headroom_captured'], pct=True)} "
                         f"| {_fmt(f['points'], digits=0)} |")
        lines += ["", "### Honest figures (plans picked from predictions alone)", "",
                  "Target rules: `mean` = cheapest point whose predicted accuracy reaches the target; `corrected` = the "
                  "same on the held-out-corrected estimate; `confidence` = cheapest point whose lower bound at the "
                  "confidence level reaches it (none picked = the tool refuses and says how many labels it would need). "
                  "Coverage = met / picked; promise kept = splits without a picked plan that missed.", "",
                  "| rule | plans picked | target met | coverage | promise kept | realised acc | cost $ | saving |",
                  "|---|---|---|---|---|---|---|---|"]
        for key, h in d["honest"].items():
            if key == "ours_bound_coverage":
                continue
            if key.endswith("_at_half_best_cost"):
                lines.append(f"| {key.replace('_', ' ')} (budget = half the best LLM's cost; picked = splits where "
                             f"it is reachable) | {h.get('reachable', h['of'])}/{h['of']} | | | "
                             f"| {_fmt(h['realised_accuracy'])} | {_fmt(h['cost'])} | |")
                continue
            if key.endswith("_at_best_cost"):
                lines.append(f"| {key.replace('_', ' ')} (budget = best LLM's cost) | {h['of']}/{h['of']} | "
                             f"{h['at_least_best_accuracy']}/{h['of']} reach best LLM acc | | | {_fmt(h['realised_accuracy'])} "
                             f"| {_fmt(h['cost'])} | |")
            else:
                cov = "n/a" if h["coverage"] is None else f"{h['coverage']:.0%}"
                kept = "" if h.get("promise_kept") is None else f"{h['promise_kept']:.0%}"
                lines.append(f"| {key.replace('_', ' ')} | {h['picked']}/{h['of']} | {h['met']}/{h['picked']} | {cov} | {kept} "
                             f"| {_fmt(h['realised_accuracy'])} | {_fmt(h['cost'])} | {_fmt(h['saving'], pct=True)} |")
        bc = d["honest"].get("ours_bound_coverage")
        if bc:
            lines += ["", f"Our {bc['confidence']:.0%} bounds checked on every plan of the front: the band (all plans at "
                      f"once) held on {bc['whole_front']}/{bc['of']} splits; plans above their pointwise bound: "
                      f"{_fmt(bc['points'], pct=True)} (the same bound without the held-out correction: "
                      f"{_fmt(bc['points_without_correction'], pct=True)})."]
        if d["wilcoxon_ours_vs_optllm"]:
            lines += ["", "Paired Wilcoxon test, ours vs OptLLM as published: " + "; ".join(
                f"{k}: p = {v['p_value']:.3g} ({v['pairs']} pairs)" if v["p_value"] is not None else f"{k}: no difference to test"
                for k, v in d["wilcoxon_ours_vs_optllm"].items())]
        lines += ["", f"![fronts]({_safe(name)}_fronts.png)", ""]
    lines += ["![savings](savings.png)", ""]
    return "\n".join(lines)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


BENCH_FILES = ("report.md", "results.json", "savings.png", "*_fronts.png")


def write_report(results: dict[str, Any], out_dir: str | Path, command: str = "") -> dict[str, str]:
    """Write report.md, results.json, one fronts PNG per dataset and savings.png to folder
    `out_dir`, all-or-nothing (`optllm.io.atomic_dir`)."""
    from optllm.evaluate.plots import bar_chart, plot_front

    out = Path(out_dir)
    paths = {"report": str(out / "report.md"), "results": str(out / "results.json"), "savings": str(out / "savings.png")}
    with atomic_dir(out, BENCH_FILES) as tmp:
        for name, d in results["datasets"].items():
            series = {m: (np.asarray(c["costs"]), np.asarray(c["true_acc"])) for m, c in d["curves_first_split"].items()}
            p = f"{_safe(name)}_fronts.png"
            plot_front(tmp / p, series=series, points={m: tuple(v) for m, v in d["singles_first_split"].items()},
                       title=f"{name}: true accuracy of every method's plans (split 1)")
            paths[f"fronts:{name}"] = str(out / p)
        groups: dict[str, dict[str, float]] = {}
        for name, d in results["datasets"].items():
            groups[name] = {m: (f["saving_at_99"]["mean"] or 0.0) * 100 for m, f in d["methods"].items()}
        bar_chart(tmp / "savings.png", groups, ylabel="saving at 99% of best LLM accuracy (%, hindsight)",
                  title="Cost saving vs the best single LLM")
        slim = {**results, "datasets": {k: {kk: vv for kk, vv in v.items() if kk != "curves_first_split"}
                                        for k, v in results["datasets"].items()}}
        slim["command"] = command
        write_json(tmp / "results.json", slim)
        with atomic_open(tmp / "report.md", "w", encoding="utf-8") as fh:
            fh.write(markdown(results, command))
    return paths
