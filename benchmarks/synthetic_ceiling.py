"""How much can any text predictor save on a generated world, and how much of that survives a
certificate? The `synthetic` world keeps its true probabilities (metadata["p_true"]); its text
shows only the difficulty bucket (`level0`-`level3`, then random words). So the best predictor
that reads the text is the per-bucket mean of p_true. On that predictor's exact front, this
prints the cheapest plan whose TRUE accuracy reaches each level. A certificate needs a plan well
above the target, so the saving at a level a little above the target is what labels could buy
at best. The front built on p_true itself is printed beside it.

    python benchmarks/synthetic_ceiling.py --out bench-results/synthetic_ceiling.json
"""
from __future__ import annotations

import argparse
import re

import numpy as np

from optllm.data import load
from optllm.io import write_json
from optllm.optimize import pareto_front


def saving_at(front, true_acc: np.ndarray, level: float, best_cost: float) -> float | None:
    ok = np.flatnonzero(true_acc >= level - 1e-12)
    return None if not ok.size else float(1.0 - front.costs[ok[0]] / best_cost)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--levels", default="0.97,0.98,0.985,0.99,0.995,0.997,1.0",
                    help="true accuracies, as shares of the best single LLM's")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    d = load(a.dataset)
    P, C, Y = d.metadata["p_true"], d.cost, d.correct
    bi = int(np.argmax(Y.mean(axis=0)))
    best_acc, best_cost = float(Y[:, bi].mean()), float(C[:, bi].sum())
    bucket = np.array([int(re.match(r"level(\d+)", str(t)).group(1)) for t in d.texts])
    Q = np.zeros_like(P)
    for b in np.unique(bucket):
        Q[bucket == b] = P[bucket == b].mean(axis=0)
    text_front, truth_front = pareto_front(Q, C), pareto_front(P, C)
    text_acc, truth_acc = text_front.values(P), truth_front.values(P)
    rows = []
    for share in (float(x) for x in a.levels.split(",")):
        lvl = share * best_acc
        rows.append({"share": share, "true_accuracy": lvl,
                     "saving_best_text_predictor": saving_at(text_front, text_acc, lvl, best_cost),
                     "saving_p_true": saving_at(truth_front, truth_acc, lvl, best_cost)})
        s1, s2 = rows[-1]["saving_best_text_predictor"], rows[-1]["saving_p_true"]
        print(f"true accuracy {lvl:.4f} ({share:.1%} of the best LLM): best text predictor saves "
              f"{'-' if s1 is None else f'{s1:.1%}'}, p_true {'-' if s2 is None else f'{s2:.1%}'}")
    print(f"best LLM accuracy {best_acc:.4f}; most accurate plan of the best text predictor {text_acc.max():.4f}")
    if a.out:
        write_json(a.out, {"dataset": a.dataset, "best_accuracy": best_acc, "buckets": int(np.unique(bucket).size),
                           "top_text_accuracy": float(text_acc.max()), "rows": rows})


if __name__ == "__main__":
    main()
