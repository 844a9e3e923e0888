"""Print the README results table from a `optllm bench --out DIR` results.json.

    python benchmarks/readme_table.py bench-results/results.json
"""
from __future__ import annotations

import json
import sys


def pct(a: dict | None) -> str:
    return "undefined" if not a or a.get("mean") is None else f"{100 * a['mean']:.1f}%"


def num(a: dict | None, d: int = 4) -> str:
    return "–" if not a or a.get("mean") is None else f"{a['mean']:.{d}f}"


def main(path: str) -> None:
    res = json.load(open(path))
    print(f"Command: `{res.get('command', '')}`\n")
    print("| dataset | method | saving at best LLM acc (hindsight; splits reaching it) | saving at 99% (hindsight) "
          "| best true acc | acc at half the best LLM's cost | AIQ | IGD (norm) | time s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, d in res["datasets"].items():
        for m in ("oracle", "zero", "threshold", "knn", "optllm", "ours"):
            f = d["methods"].get(m)
            if not f:
                continue
            print(f"| {name} | {m} | {pct(f['saving_at_best'])} ({f['reached_best']['count']}/{f['reached_best']['of']}) "
                  f"| {pct(f['saving_at_99'])} ({f['reached_99']['count']}/{f['reached_99']['of']}) "
                  f"| {num(f['best_true_accuracy'])} | {num(f.get('acc_at_half_best_cost_hindsight'))} | {num(f['aiq'])} | {num(f.get('igd_norm'))} | {num(f['seconds'], 2)} |")
    print("\nHonest picks (from predictions alone):\n")
    print("| dataset | rule | picked | target met | promise kept | realised acc | cost $ | saving |")
    print("|---|---|---|---|---|---|---|---|")
    bands = []
    for name, d in res["datasets"].items():
        for key, h in d["honest"].items():
            if key == "ours_bound_coverage":
                bands.append((name, h))
            elif key.endswith("_at_half_best_cost"):
                print(f"| {name} | {key} (budget = half the best LLM's cost) | {h['of']}/{h['of']} | | | "
                      f"{num(h['realised_accuracy'])} | {num(h['cost'])} | |")
            elif key.endswith("_at_best_cost"):
                print(f"| {name} | {key} (budget = best LLM cost) | {h['of']}/{h['of']} | "
                      f"{h['at_least_best_accuracy']}/{h['of']} | | {num(h['realised_accuracy'])} | {num(h['cost'])} | |")
            elif "_mean_" not in key and "_corrected_" not in key:  # those rows are in report.md
                kept = "" if h.get("promise_kept") is None else f"{h['promise_kept']:.0%}"
                print(f"| {name} | {key} | {h['picked']}/{h['of']} | {h['met']}/{h['picked']} | {kept} | "
                      f"{num(h['realised_accuracy'])} | {num(h['cost'])} | {pct(h['saving'])} |")
    if bands:
        print("\nOur bounds checked on every plan of the front (realised accuracy ≥ bound):\n")
        print("| dataset | confidence | band held on the whole front (splits) | plans above their pointwise bound | same, without the held-out correction |")
        print("|---|---|---|---|---|")
        for name, h in bands:
            print(f"| {name} | {h['confidence']:.0%} | {h['whole_front']}/{h['of']} | {pct(h['points'])} "
                  f"| {pct(h['points_without_correction'])} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench-results/results.json")
