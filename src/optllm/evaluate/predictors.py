"""`evaluate_predictors`: what `optllm predict-eval` prints — per predictor and split the
prediction scores on the test part, fit + predict time, and the end-to-end figures when the
exact optimiser uses the predictions:

* saving at the best single model's accuracy: among the front's points, the cheapest whose
  TRUE accuracy on the test part reaches the best single model's true accuracy (chosen with
  hindsight, as the paper does); undefined when no point reaches it, so it is averaged over
  the splits where it was reached and the count of those splits is reported beside it;
* the same saving over ALL splits, a split that does not reach it counting 0 (the user keeps
  the best single model): the one figure that compares predictors reaching it on different
  numbers of splits;
* the true accuracy of the front's plan at the best single model's cost.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np

from optllm.data import Outcomes, split
from optllm.errors import OptLLMError
from optllm.evaluate.indicators import hindsight_saving
from optllm.predict.base import Prediction
from optllm.predict.fitting import inputs_of
from optllm.predict.metrics import scores

__all__ = ["ALL", "METRICS", "end_to_end", "evaluate_predictors", "summarise"]

ALL = ("base", "knn", "logistic", "irt", "forest", "bootstrap_forest", "selector")


# --------------------------------------------------------------------- end to end
def end_to_end(p: np.ndarray, test: Outcomes) -> dict[str, Any]:
    """Saving at the best single model's accuracy (hindsight, true accuracy) and the true
    accuracy at the best single model's cost, for the exact front on predictions `p`."""
    from optllm.optimize import pareto_front

    best = test.best_model()
    acc_best = float(test.model_accuracy()[best])
    cost_best = float(test.model_total_cost()[best])
    front = pareto_front(p, test.cost, models=test.models)
    costs = np.asarray(front.costs)
    h = hindsight_saving(costs, front.values(test.correct), acc_best, cost_best)
    out: dict[str, Any] = {"best_model": test.models[best], "best_accuracy": acc_best, "best_cost": cost_best,
                           "front_points": len(front)}
    if h.reached:
        out.update(reached=True, cost_at_best_acc=h.cost, saving=float("nan") if h.saving is None else h.saving)
    else:
        out.update(reached=False, cost_at_best_acc=float("nan"), saving=float("nan"))
    plan = front.at_budget(min(cost_best, float(costs[-1])))
    acc_at = float(test.correct[np.arange(test.n), plan.models].mean())
    out.update(acc_at_best_cost=acc_at, acc_gain_at_best_cost=acc_at - acc_best)
    return out


# --------------------------------------------------------------------- the loop
def evaluate_predictors(
    data: Outcomes,
    predictors: Sequence[str] = ALL,
    train_frac: float = 0.01,
    val_frac: float = 0.01,
    reps: int = 10,
    seed: int = 0,
    alpha: float = 0.0,
    end_to_end_figures: bool = True,
    oracle: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every predictor on `reps` random splits (seeds seed, seed+1, ...); return per-split
    records and the mean ± std summary per predictor."""
    from optllm.predict import make_predictor

    if reps < 1:
        raise OptLLMError(f"--reps must be at least 1, got {reps}")
    for name in predictors:
        make_predictor(name)  # unknown names fail before any work
    records: list[dict[str, Any]] = []
    rows = list(predictors) + (["oracle"] if oracle and end_to_end_figures else [])
    for r in range(reps):
        s = split(data, train_frac, val_frac, seed=seed + r)
        tr, va, te = s.parts(data)
        for name in rows:
            if progress:
                progress(f"split {r + 1}/{reps}: {name}")
            rec: dict[str, Any] = {"predictor": name, "split": r, "seed": seed + r,
                                   "n_train": tr.n, "n_val": va.n, "n_test": te.n}
            if name == "oracle":
                pred = Prediction(te.correct.copy(), np.zeros_like(te.correct), te.models)
                rec.update(fit_s=0.0, predict_s=0.0)
            else:
                p = make_predictor(name, seed=seed + r)
                t0 = time.perf_counter()
                p.fit(inputs_of(tr), tr.correct, inputs_of(va) if va.n else None,
                      va.correct if va.n else None, models=tr.models)
                t1 = time.perf_counter()
                pred = p.predict(inputs_of(te))
                rec.update(fit_s=t1 - t0, predict_s=time.perf_counter() - t1)
                if hasattr(p, "weights_") and isinstance(p.weights_, dict):
                    rec["weights"] = p.weights_
            rec.update(scores(te.correct, pred.mean))
            if end_to_end_figures:
                rec.update(end_to_end(pred.robust(alpha), te))
            records.append(rec)
    summary = summarise(records, rows)
    out: dict[str, Any] = {
        "dataset": data.name, "n_queries": data.n, "n_models": data.m, "train_frac": train_frac,
        "val_frac": val_frac, "reps": reps, "seed": seed, "alpha": alpha,
        "summary": summary, "splits": records,
    }
    return out


METRICS = ("brier", "log_loss", "auc", "ece", "fit_s", "predict_s", "saving", "acc_at_best_cost",
           "acc_gain_at_best_cost")


def summarise(records: list[dict[str, Any]], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Mean and std over splits per predictor; the saving over the splits where it was reached
    and, as `saving_all`, over all splits with 0 where it was not."""
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        rs = [r for r in records if r["predictor"] == name]
        row: dict[str, Any] = {"splits": len(rs)}
        for k in METRICS:
            v = np.array([r.get(k, np.nan) for r in rs], dtype=np.float64)
            v = v[np.isfinite(v)]
            row[k] = {"mean": float(v.mean()) if v.size else float("nan"),
                      "std": float(v.std(ddof=1)) if v.size > 1 else (0.0 if v.size else float("nan"))}
        if rs and "reached" in rs[0]:
            row["reached"] = int(sum(bool(r["reached"]) for r in rs))
            v = np.array([_saving_all(r) for r in rs])
            row["saving_all"] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0}
        out[name] = row
    for ref in ("bootstrap_forest", "base"):
        _paired_with(records, out, ref)
    return out


def _saving_all(r: dict[str, Any]) -> float:
    """A split's saving with 0 where the front never reaches the best model's accuracy."""
    return float(r["saving"]) if r.get("reached") else 0.0


def _paired_with(records: list[dict[str, Any]], out: dict[str, dict[str, Any]], ref: str) -> None:
    """Savings compared on equal terms with predictor `ref` (the paper's, the base rate): on
    the splits where BOTH reached the best model's accuracy (averages over different splits
    are not comparable), over all common splits with 0 where a front did not reach it, and
    the fit-time ratio ref / predictor on the same splits."""
    by = {(r["predictor"], r["split"]): r for r in records}
    splits = sorted({r["split"] for r in records if r["predictor"] == ref})
    if not splits:
        return
    for name, row in out.items():
        if name == ref:
            continue
        common = [(by[(name, s)], by[(ref, s)]) for s in splits if (name, s) in by]
        both = [(a, b) for a, b in common if a.get("reached") and b.get("reached")]
        row[f"vs_{ref}"] = {
            "both_reached": len(both), "of": len(splits),
            "saving": float(np.mean([a["saving"] for a, _ in both])) if both else None,
            f"saving_{ref}": float(np.mean([b["saving"] for _, b in both])) if both else None,
            "wins": int(sum(a["saving"] > b["saving"] + 1e-12 for a, b in both)),
        }
        if common and "reached" in common[0][0]:
            row[f"vs_{ref}"]["saving_all"] = float(np.mean([_saving_all(a) for a, _ in common]))
            row[f"vs_{ref}"][f"saving_all_{ref}"] = float(np.mean([_saving_all(b) for _, b in common]))
            row[f"vs_{ref}"]["wins_all"] = int(sum(_saving_all(a) > _saving_all(b) + 1e-12 for a, b in common))
            row[f"vs_{ref}"]["losses_all"] = int(sum(_saving_all(b) > _saving_all(a) + 1e-12 for a, b in common))
        fits = [(a["fit_s"], b["fit_s"]) for a, b in common]
        if fits and all(a > 0 for a, _ in fits):
            row[f"vs_{ref}"]["fit_ratio"] = float(np.mean([b for _, b in fits]) / np.mean([a for a, _ in fits]))
