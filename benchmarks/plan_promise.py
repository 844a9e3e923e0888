"""Does `optllm plan` keep its promise on a user's prompts? Over seeded splits of a dataset
with known truth (default: overruling), write the prompts and a labelled sample as a user
would have them (no train/val roles), plan with the example catalogue, and judge each plan on
the true labels:

- target: the plan meets --target-accuracy, or plan declines (both keep the promise);
- budget (the best single LLM's estimated cost): the plan's realised accuracy against the
  best single LLM's on the same planned prompts.

    python benchmarks/plan_promise.py --reps 20 --labels 0.02 --target 0.94 --out bench-results/plan_promise.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from optllm.cost import load_catalogue
from optllm.data import Outcomes, load, split
from optllm.io import write_json
from optllm.planning import PlanSettings, build_plan
from optllm.selection import Goal

ROOT = Path(__file__).resolve().parents[1]


def labelled_sample(data: Outcomes, rows: np.ndarray) -> Outcomes:
    """The labels a user would load: string ids, correctness, and the observed cost."""
    part = data.subset(rows)
    return Outcomes(query_ids=np.array([str(q) for q in part.query_ids], dtype=object), models=part.models,
                    correct=part.correct, cost=part.cost, name="labels")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="overruling")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--labels", type=float, default=0.02, help="labelled share (half train, half validation)")
    ap.add_argument("--target", type=float, default=0.94)
    ap.add_argument("--confidence", type=float, default=0.9)
    ap.add_argument("--models", default=str(ROOT / "examples" / "models.yaml"))
    ap.add_argument("--out", default=str(ROOT / "bench-results" / "plan_promise.json"))
    a = ap.parse_args()
    data = load(a.data)
    cat = load_catalogue(a.models)
    ids = np.array([str(q) for q in data.query_ids], dtype=object)
    pos = {q: i for i, q in enumerate(ids)}
    texts = [str(t) for t in data.texts]
    rows = []
    for seed in range(a.reps):
        t0 = time.perf_counter()
        sp = split(data, train=a.labels / 2, val=a.labels / 2, seed=seed)
        lab = labelled_sample(data, np.concatenate([sp.train, sp.val]))
        row: dict = {"seed": seed, "n_labelled": lab.n}
        plan = build_plan(ids, texts, cat, lab, Goal(target_accuracy=a.target, confidence=a.confidence),
                          PlanSettings(seed=seed))
        if plan.choice is None:
            row["target"] = {"picked": False, "kept": True, "labels_needed": plan.selection.labels_needed}
        else:
            idx = np.array([pos[q] for q in plan.ids])
            real = float(data.correct[idx, plan.choice].mean())
            row["target"] = {"picked": True, "realised_accuracy": real, "met": real >= a.target, "kept": real >= a.target,
                             "lower": plan.selection.chosen.lower, "est_cost": plan.selection.chosen.cost}
        # budget: the estimated cost of the best single LLM by the labelled sample
        best = int(np.argmax(lab.correct.mean(axis=0)))
        idx = np.array([pos[q] for q in plan.ids])
        budget = float(plan.costs.mean[:, best].sum())
        bp = build_plan(ids, texts, cat, lab, Goal(budget=budget, confidence=a.confidence), PlanSettings(seed=seed))
        bidx = np.array([pos[q] for q in bp.ids])
        row["budget"] = {"budget": budget, "best_by_labels": data.models[best], "rule": bp.selection.rule,
                         "realised_accuracy": float(data.correct[bidx, bp.choice].mean()),
                         "best_single_accuracy": float(data.correct[idx, best].mean()),
                         "est_cost": float(bp.selection.chosen.cost)}
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        t = row["target"]
        print(f"seed {seed}: target {'picked, realised %.4f' % t['realised_accuracy'] if t['picked'] else 'declined'}; "
              f"budget ${budget:.2f}: realised {row['budget']['realised_accuracy']:.4f} vs "
              f"{row['budget']['best_single_accuracy']:.4f} ({row['budget']['rule']})", flush=True)
    kept = sum(r["target"]["kept"] for r in rows)
    picked = sum(r["target"]["picked"] for r in rows)
    no_worse = sum(r["budget"]["realised_accuracy"] >= r["budget"]["best_single_accuracy"] - 1e-12 for r in rows)
    summary = {"data": a.data, "reps": a.reps, "labels": a.labels, "target": a.target, "confidence": a.confidence,
               "target_promise_kept": kept / len(rows), "target_picked": picked, "target_met_when_picked":
               (sum(r["target"].get("met", False) for r in rows) / picked) if picked else None,
               "budget_no_worse_than_best_single": no_worse, "rows": rows}
    write_json(a.out, summary)
    print(f"target {a.target} at {a.confidence:.0%}: promise kept on {kept}/{len(rows)} seeds "
          f"({picked} picked a plan); budget at the best LLM's cost: no worse than it on {no_worse}/{len(rows)}")
    print(f"-> {a.out}")


if __name__ == "__main__":
    main()
