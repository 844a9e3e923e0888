"""The main job: split → fit a predictor → predict → front → select → evaluate on the truth.

`run_pipeline` is what `optllm run` and `make demo` call; `optllm bench` calls its pieces
once per split and method.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optllm.data import Outcomes, Split, split
from optllm.errors import OptLLMError
from optllm.evaluate.uncertainty import (AccuracyBounds, HeldOut, bounds_along, bounds_of, paired_lower, single_bounds,
                                          values_along, values_of)
from optllm.optimize.types import Assignment, FrontLike

OPTIMIZERS = ("exact", "optllm-m", "nsga2", "rnsga2", "smsemoa", "moead", "moeadgen", "mopso")

Progress = Callable[[str], None]


@dataclass
class RunConfig:
    """Options of one run; defaults follow the paper's protocol (1% train, 1% validation)."""

    train_frac: float = 0.01
    val_frac: float = 0.01
    seed: int = 0
    predictor: str = "default"
    optimizer: str = "exact"
    alpha: float = 0.0  # robust prediction p̄ + α·σ fed to the optimiser
    budget: float | None = None
    target_accuracy: float | None = None
    confidence: float = 0.9
    folds: int = 5  # cross-fitting folds of the labelled sample for the bounds (0: Bernoulli only)
    count_labelling_cost: bool = False
    safe: bool = True  # budget plans must beat the best plan without a predictor at `confidence`
    gn: int = 50
    generations: int = 100

    def validate(self) -> None:
        """Clear errors for impossible option values."""
        if self.budget is not None and self.target_accuracy is not None:
            raise OptLLMError("give either --budget or --target-accuracy, not both")
        if self.budget is not None and not (np.isfinite(self.budget) and self.budget >= 0):
            raise OptLLMError(f"--budget must be a non-negative number of USD, got {self.budget}")
        if self.target_accuracy is not None and not 0 <= self.target_accuracy <= 1:
            raise OptLLMError(f"--target-accuracy must lie in [0, 1], got {self.target_accuracy}")
        if not 0.5 <= self.confidence < 1:
            raise OptLLMError(f"--confidence must lie in [0.5, 1), got {self.confidence}")
        if self.optimizer not in OPTIMIZERS:
            raise OptLLMError(f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")


@dataclass
class RunResult:
    """Everything a run produced; plain arrays, written out by `write_run`."""

    data: Outcomes  # the assigned (test) part
    config: RunConfig
    split: Split
    p: np.ndarray  # predicted P(correct) on the test part [n, m]
    p_std: np.ndarray
    front: FrontLike
    bounds: AccuracyBounds
    true_acc: np.ndarray | None  # realised accuracy of each front point (None without labels)
    true_front: FrontLike | None
    selection: dict[str, Any]
    plan: Assignment
    labelling_cost: float
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The figures `summary.json` holds."""
        d = self.data
        acc, tot = d.model_accuracy(), d.model_total_cost()
        best = d.best_model()
        out: dict[str, Any] = {
            "dataset": d.name,
            "n_assigned": d.n,
            "n_labelled": int(len(self.split.train) + len(self.split.val)),
            "models": list(d.models),
            "config": self.config.__dict__,
            "labelling_cost": self.labelling_cost,
            "labelling_cost_included": self.config.count_labelling_cost,
            "front_points": len(self.front),
            "selection": self.selection,
            "timings_s": self.timings,
            "single_models": [{"name": m, "accuracy": float(acc[k]), "total_cost": float(tot[k])}
                              for k, m in enumerate(d.models)],
            "best_model": {"name": d.models[best], "accuracy": float(acc[best]), "total_cost": float(tot[best])},
        }
        if self.true_front is not None:
            tf = self.true_front
            out["true_front"] = {"points": len(tf), "min_cost": float(tf.costs[0]), "max_accuracy": float(tf.accuracies[-1])}
            out["hindsight"] = hindsight_saving(self.front.costs, self.true_acc, float(acc[best]), float(tot[best]))
        return out


def fit_predict(name: str, labelled: Outcomes, val: Outcomes, test: Outcomes, seed: int,
                **params: Any) -> tuple[np.ndarray, np.ndarray]:
    """Fit predictor `name` on the labelled sample and predict the test part → (mean, std)."""
    from optllm import predict

    return predict.fit_predict(name, labelled, val, test, seed=seed, **params)


def cross_fit(name: str, train: Outcomes, val: Outcomes, folds: int, seed: int) -> HeldOut | None:
    """Held-out predictions for every labelled query: `folds`-fold cross-fitting of predictor
    `name` over train + validation, each fold predicted by the predictor fitted on the others
    (their train/validation roles kept in the original proportion).

    The featuriser is fitted once on all labelled texts (it sees no labels), so the K fits
    reuse one feature matrix.
    """
    n_tr, n_va = train.n, val.n
    n = n_tr + n_va
    if folds < 2 or n < 4:
        return None
    from optllm.predict import make_featurizer, make_predictor
    from optllm.predict.evaluation import inputs_of
    from optllm.predict.features import fit_transform

    proto = make_predictor(name, seed=seed)
    X = inputs_of(train)
    Xv = inputs_of(val) if n_va else None
    if Xv is not None:
        X = X + Xv if isinstance(X, list) else np.vstack([X, Xv])
    if getattr(proto, "uses_features", True) and isinstance(X, list):
        X = fit_transform(make_featurizer(getattr(proto, "featurizer", None)), X)
    Y = np.vstack([train.correct, val.correct]) if n_va else train.correct
    C = np.vstack([train.cost, val.cost]) if n_va else train.cost
    rng = np.random.default_rng(seed + 7919)
    order = rng.permutation(n)
    parts = np.array_split(order, min(folds, n))
    share_val = n_va / n
    P = np.empty_like(Y, dtype=float)
    for f, held in enumerate(parts):
        rest = np.setdiff1d(order, held, assume_unique=True)
        rest = rest[rng.permutation(rest.size)]
        k_va = int(round(share_val * rest.size)) if n_va else 0
        k_va = min(max(k_va, 2 if n_va else 0), rest.size - 2)
        tr, va = rest[k_va:], rest[:k_va]
        model = make_predictor(name, seed=seed + f + 1, featurizer=None)
        if va.size:
            model.fit(_rows(X, tr), Y[tr], _rows(X, va), Y[va], models=train.models)
        else:
            model.fit(_rows(X, tr), Y[tr], models=train.models)
        P[held] = model.predict(_rows(X, held)).mean
    return HeldOut(P, Y.astype(float), C)


def _rows(X: Any, idx: np.ndarray) -> Any:
    return [X[i] for i in idx] if isinstance(X, list) else X[idx]


def build_front(optimizer: str, p: np.ndarray, p_robust: np.ndarray, cost: np.ndarray,
                models: tuple[str, ...], cfg: RunConfig) -> FrontLike:
    """Run the chosen optimiser on the predictions."""
    from optllm import optimize

    if optimizer == "exact":
        return optimize.pareto_front(p_robust, cost, models=models)
    if optimizer == "optllm-m":
        return optimize.optllm_m(p, p_robust, cost, gn=cfg.gn, models=models)
    return optimize.run_moea(optimizer, p_robust, cost, generations=cfg.generations, seed=cfg.seed, models=models)


def hindsight_saving(costs: np.ndarray, true_acc: np.ndarray, best_acc: float, best_cost: float) -> dict[str, Any]:
    """The paper's figure: the cheapest front point whose TRUE accuracy reaches the best model's.

    Chosen after the fact, which a user cannot do; reported beside the honest figures.
    """
    ok = true_acc >= best_acc - 1e-12
    if not ok.any():
        return {"reached": False, "cost": None, "saving": None, "true_accuracy": float(true_acc.max())}
    k = int(np.flatnonzero(ok)[np.argmin(costs[ok])])
    return {"reached": True, "cost": float(costs[k]), "true_accuracy": float(true_acc[k]),
            "saving": float(1 - costs[k] / best_cost) if best_cost > 0 else None, "point": k}


def select(front: FrontLike, bounds: AccuracyBounds, budget: float | None, target: float | None,
           p: np.ndarray, held: HeldOut | None, models: tuple[str, ...], extra_cost: float = 0.0,
           cost: np.ndarray | None = None, safe: bool = True, seed: int = 0) -> tuple[Assignment | None, dict[str, Any]]:
    """Pick the plan for a budget or an accuracy target (or the knee), with its bounds.

    Target: the cheapest point certified to reach it (fixed-sequence tests from the most
    accurate predicted point down, `AccuracyBounds.cheapest_certified`); when none is, no
    plan (and roughly how many labels would be needed). Budget: the exact
    optimum within the budget, its accuracy reported as an interval; with `safe`, only a plan
    that beats the best plan without a predictor (the strongest affordable single LLM, or a
    random mix of two that spends the budget) at the confidence level, paired on the
    held-out labels, replaces that plan (`seed`: the mix's random draw).
    """
    info: dict[str, Any] = {"confidence": bounds.confidence, "n_labelled": bounds.n_labelled}
    costs = np.asarray(front.costs) + extra_cost
    if target is not None:
        info["target_accuracy"] = target
        by_mean = np.flatnonzero(bounds.mean >= target)
        info["by_mean"] = None if not by_mean.size else _point(front, bounds, int(by_mean[0]), extra_cost)
        pick = bounds.cheapest_certified(target)
        if pick is None:
            need = bounds.labels_needed(target)
            info["reachable"] = False
            info["labels_needed"] = need
            info["message"] = (
                f"no plan reaches accuracy {target:.4f} with {bounds.confidence:.0%} confidence "
                f"(best lower bound {bounds.lower.max():.4f}, best held-out-corrected estimate "
                f"{bounds.estimate.max():.4f}); "
                + (f"roughly {need:,} labelled queries would be needed (now {bounds.n_labelled})"
                   if need else "the corrected estimates do not reach it even on average: more labels alone will not do")
            )
            return None, info
        k = pick
        info.update(reachable=True, rule="cheapest plan certified ≥ target (tested from the most accurate down)",
                    **_point(front, bounds, k, extra_cost))
        return _as_assignment(front, k, models), info
    if budget is not None:
        info["budget"] = budget
        if budget < costs[0] - 1e-12:
            raise OptLLMError(
                f"budget ${budget:.4f} is below the cheapest plan (${costs[0]:.4f}); reachable budgets: "
                f"${costs[0]:.4f} to ${costs[-1]:.4f}"
            )
        plan = front.at_budget(min(budget - extra_cost, float(front.costs[-1])))
        plan_bounds: AccuracyBounds | None = None  # known already when the plan is the safe rule's reference
        info.update(rule="most accurate plan within the budget", certified_gap=plan.gap)
        if safe and held is not None and cost is not None:
            best_predicted = plan
            plan, plan_bounds = _safe_budget_plan(front, bounds, plan, budget - extra_cost, p, held, cost, models,
                                                  info, seed)
            if plan is not best_predicted:
                # what the optimiser alone would have chosen, shown beside the safe choice
                b = bounds_of(best_predicted.models, p, cost, held, bounds.confidence)
                info["most_accurate_predicted"] = {
                    "cost": best_predicted.cost + extra_cost, "predicted_accuracy": best_predicted.accuracy,
                    "estimated_accuracy": float(b.estimate[0]), "lower": float(b.lower[0]), "upper": float(b.upper[0]),
                    "assignment": best_predicted.models}
        if cost is not None:
            b = plan_bounds if plan_bounds is not None else bounds_of(plan.models, p, cost, held, bounds.confidence)
            info.update(estimated_accuracy=float(b.estimate[0]), lower=float(b.lower[0]), upper=float(b.upper[0]))
        else:
            info.update(estimated_accuracy=plan.accuracy, lower=float("nan"), upper=float("nan"))
        info.update(cost=plan.cost + extra_cost, predicted_accuracy=plan.accuracy)
        return plan, info
    # neither: the knee (largest distance above the chord between both ends, in normalised units)
    c, a = costs, bounds.mean
    cn = (c - c[0]) / max(c[-1] - c[0], 1e-12)
    an = (a - a[0]) / max(a[-1] - a[0], 1e-12)
    k = int(np.argmax(an - cn))
    info.update(rule="knee of the predicted front (no budget or target given)", **_point(front, bounds, k, extra_cost))
    return _as_assignment(front, k, models), info


@dataclass(frozen=True)
class Reference:
    """What a budget plan must beat: model `lo` alone (w = 0), or a random mix sending a
    share w of the queries to the pricier model `hi` and the rest to `lo` (RouterBench's
    zero router: any budget between two single LLMs buys their straight line)."""

    lo: int
    hi: int
    w: float
    estimate: float

    def weights(self, m: int) -> np.ndarray:
        out = np.zeros(m)
        out[self.lo] += 1.0 - self.w
        out[self.hi] += self.w
        return out

    def describe(self, models: tuple[str, ...]) -> str:
        if self.w <= 0.0:
            return models[self.lo]
        return f"a random mix: {self.w:.0%} of the queries to {models[self.hi]}, the rest to {models[self.lo]}"

    def choices(self, n: int, seed: int) -> np.ndarray:
        """One realisation of the reference on n queries: each goes to hi with probability w."""
        if self.w <= 0.0:
            return np.full(n, self.lo)
        return np.where(np.random.default_rng(seed).random(n) < self.w, self.hi, self.lo)

    def assignment(self, cost: np.ndarray, budget: float, seed: int) -> np.ndarray:
        """The reference as a plan within `budget`: a random share of queries, as many as
        the budget pays for, to hi; the rest to lo."""
        n = cost.shape[0]
        out = np.full(n, self.lo)
        if self.w <= 0.0:
            return out
        order = np.random.default_rng(seed).permutation(n)
        extra = np.cumsum(cost[order, self.hi] - cost[order, self.lo])
        room = budget - float(cost[:, self.lo].sum())
        out[order[: int(np.searchsorted(extra, room * (1 + 1e-12), side="right"))]] = self.hi
        return out


def _safe_budget_plan(front: FrontLike, bounds: AccuracyBounds, plan: Assignment, budget: float, p: np.ndarray,
                      held: HeldOut, cost: np.ndarray, models: tuple[str, ...], info: dict[str, Any],
                      seed: int = 0) -> tuple[Assignment, AccuracyBounds | None]:
    """Do no harm: keep the most accurate plan within budget only if it beats the reference
    (`_reference`: the strongest single LLM that fits the budget, or a random mix of two
    single LLMs that spends it) at the confidence level, the difference bounded on the same
    held-out labels and assigned queries; otherwise take the most accurate plan that does,
    or the reference itself (returned with its own bounds: its rule is not the front's)."""
    totals = cost.sum(axis=0)
    affordable = np.flatnonzero(totals <= budget * (1 + 1e-12))
    if not affordable.size:
        return plan, None
    conf = bounds.confidence
    ref = _reference(affordable, totals, budget, p, held, conf)
    name = ref.describe(models)
    info["reference_model"] = name
    ok_cost = np.flatnonzero(np.asarray(front.costs) <= budget * (1 + 1e-12))
    if not ok_cost.size:
        return plan, None
    k_plan = int(ok_cost[-1])
    w = ref.weights(p.shape[1])
    labelled_ref = ref.choices(held.n, seed)
    # one pre-specified comparison: the pointwise quantile; scanning the front below: the band's z
    if (paired_lower(front, np.array([k_plan]), w, p, cost, held, bounds.z)[0] >= 0
            and _sign_test_wins(front, np.array([k_plan]), labelled_ref, p, cost, held, conf)[0]):
        info["safe"] = f"at {conf:.0%} confidence the plan beats {name}"
        return plan, None
    cand = ok_cost[np.unique(np.linspace(0, ok_cost.size - 1, min(ok_cost.size, 512)).round().astype(int))]
    z_band = bounds.z if bounds.z_band is None else bounds.z_band
    cand = cand[paired_lower(front, cand, w, p, cost, held, z_band) >= 0]
    good = cand[_sign_test_wins(front, cand, labelled_ref, p, cost, held, conf)] if cand.size else cand
    if good.size:
        k = int(good[np.argmax(bounds.estimate[good])])
        info["safe"] = (f"at {conf:.0%} confidence only cheaper plans beat {name}; "
                        f"front point {k} is the most accurate of them")
        info["rule"] = "most accurate plan within the budget that is reliably better than the best plan without a predictor"
        return _as_assignment(front, k, models), None
    info["safe"] = f"at {conf:.0%} confidence no predicted plan beats {name}; taking that"
    info["rule"] = "best plan without a predictor (single LLM or random mix of two)"
    a = ref.assignment(cost, budget, seed)
    rows = np.arange(p.shape[0])
    return (Assignment(models=a, cost=float(cost[rows, a].sum()), accuracy=float(p[rows, a].mean()), model_names=models),
            single_bounds(w, p, held, conf))


def _sign_test_ahead(d: np.ndarray, confidence: float) -> bool:
    """Exact sign test (McNemar's for 0/1 labels) on paired differences `d` (NaN ignored):
    are the positive differences significantly more than the negative ones at `confidence`?
    Only the pairs that disagree count, so a handful of them cannot look decisive."""
    from scipy.stats import binomtest

    d = d[~np.isnan(d)]
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    return wins > losses and binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue <= 1.0 - confidence


def _sign_test_wins(front: FrontLike, points: np.ndarray, ref: np.ndarray, p: np.ndarray, cost: np.ndarray,
                    held: HeldOut, confidence: float) -> np.ndarray:
    """Small-sample check of "plan beats the reference": route the labelled queries by each
    plan's rule and sign-test the plan's answers against the reference's (`ref`: its model
    per labelled query) on them. The normal approximation behind the paired bound is
    unreliable when only a handful of labelled queries disagree."""
    from optllm.evaluate.uncertainty import rule_slopes

    rect = held.rectifier
    ts = rect.point(rule_slopes(front, p, cost)[points])
    rows = np.arange(held.n)
    y_ref = held.y[rows, ref]
    return np.array([_sign_test_ahead(held.y[rows, rect.assignment(int(t))] - y_ref, confidence)
                     for t in ts], dtype=bool)


def _reference(affordable: np.ndarray, totals: np.ndarray, budget: float, p: np.ndarray, held: HeldOut,
               confidence: float) -> Reference:
    """The best plan a user could make at this budget without a predictor: the strongest
    affordable single LLM (`_reference_model`), or a random mix of an affordable LLM with a
    pricier one that spends the whole budget, whichever has the higher held-out-corrected
    accuracy estimate (the mix's estimate is the straight line between the two)."""
    est = np.array([single_bounds(k, p, held, confidence).estimate[0] for k in range(p.shape[1])])
    single = _reference_model(affordable, totals, est[affordable], held, confidence)
    best = Reference(single, single, 0.0, float(est[single]))
    for hi in np.flatnonzero(totals > budget * (1 + 1e-12)):
        for lo in affordable:
            w = (budget - totals[lo]) / (totals[hi] - totals[lo])
            e = float(est[lo] + w * (est[hi] - est[lo]))
            if e > best.estimate + 1e-12:
                best = Reference(int(lo), int(hi), float(w), e)
    return best


def _reference_model(affordable: np.ndarray, totals: np.ndarray, est: np.ndarray, held: HeldOut,
                     confidence: float) -> int:
    """The single LLM a budget plan must beat: the affordable model with the best
    held-out-corrected accuracy, unless the labelled sample cannot tell it apart from a
    pricier affordable one; then the priciest of those. "Cannot tell apart": an exact sign
    test on the same labelled queries (McNemar's test for 0/1 labels: only the queries where
    the two disagree count) does not find the lead at `confidence`. With a few dozen labels,
    near-equal models are a coin flip on the sample, and under a budget the price is the
    better prior. `est`: the corrected estimate of each affordable model."""
    lead = int(affordable[int(np.argmax(est))])
    # paired on the same labelled queries; the lead itself is never "ahead" of itself
    tied = np.array([not _sign_test_ahead(held.y[:, lead] - held.y[:, k], confidence) for k in affordable])
    cand = affordable[tied]
    return int(cand[np.argmax(totals[cand])])


def _point(front: FrontLike, bounds: AccuracyBounds, k: int, extra_cost: float) -> dict[str, Any]:
    return {"point": k, "cost": float(front.costs[k]) + extra_cost, "predicted_accuracy": float(bounds.mean[k]),
            "estimated_accuracy": float(bounds.estimate[k]), "lower": float(bounds.lower[k]), "upper": float(bounds.upper[k])}


def _as_assignment(front: FrontLike, k: int, models: tuple[str, ...]) -> Assignment:
    return Assignment(models=front.assignment(k), cost=float(front.costs[k]),
                      accuracy=float(front.accuracies[k]), model_names=models)


def run_pipeline(data: Outcomes, cfg: RunConfig, progress: Progress | None = None) -> RunResult:
    """The whole job on a dataset with labels (the labels of the test part are used only to
    evaluate, never to choose)."""
    cfg.validate()
    say = progress or (lambda s: None)
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    sp = split(data, train=cfg.train_frac, val=cfg.val_frac, seed=cfg.seed)
    train, val, test = sp.parts(data)
    labelling = float(train.cost.sum() + val.cost.sum())
    say("fit predictor")
    t1 = time.perf_counter()
    mean, std = fit_predict(cfg.predictor, train, val, test, cfg.seed)
    t["predict"] = time.perf_counter() - t1
    p_robust = np.clip(mean + cfg.alpha * std, 0.0, 1.0)
    say("build front")
    t1 = time.perf_counter()
    front = build_front(cfg.optimizer, mean, p_robust, test.cost, test.models, cfg)
    t["optimise"] = time.perf_counter() - t1
    say("bounds")
    t1 = time.perf_counter()
    held = cross_fit(cfg.predictor, train, val, cfg.folds, cfg.seed)
    bounds = bounds_along(front, mean, test.cost, held, cfg.confidence, seed=cfg.seed)
    t["bounds"] = time.perf_counter() - t1
    extra = labelling if cfg.count_labelling_cost else 0.0
    plan, info = select(front, bounds, cfg.budget, cfg.target_accuracy, mean, held, test.models, extra,
                        cost=test.cost, safe=cfg.safe, seed=cfg.seed)
    if plan is None:
        # nothing certified: still return the most accurate plan for inspection, flagged
        plan = _as_assignment(front, len(front) - 1, test.models)
        info["plan_written"] = "most accurate point (target not certified)"
    say("evaluate")
    from optllm.optimize import pareto_front

    true_acc = values_along(front, test.correct)
    true_front = pareto_front(test.correct, test.cost, models=test.models)
    info["realised_accuracy"] = float(values_of(plan.models, test.correct))
    info["realised_cost"] = float(test.cost[np.arange(test.n), plan.models].sum()) + extra
    alt = info.get("most_accurate_predicted")
    if alt is not None:
        alt["realised_accuracy"] = float(values_of(alt.pop("assignment"), test.correct))
    if info.get("target_accuracy") is not None and info.get("reachable"):
        info["target_met"] = bool(info["realised_accuracy"] >= info["target_accuracy"])
    t["total"] = time.perf_counter() - t0
    return RunResult(test, cfg, sp, mean, std, front, bounds, true_acc, true_front, info, plan, labelling, t)


def write_run(res: RunResult, out_dir: str) -> dict[str, str]:
    """Write front.csv, plan.csv, summary.json and front.png to `out_dir`, each atomically."""
    from pathlib import Path

    import pandas as pd

    from optllm.evaluate.plots import plot_front
    from optllm.io import write_json, write_with

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    extra = res.labelling_cost if res.config.count_labelling_cost else 0.0
    idx = _thin(len(res.front), 5000)
    front_df = pd.DataFrame({
        "point": idx,
        "cost": np.asarray(res.front.costs)[idx] + extra,
        "predicted_accuracy": res.bounds.mean[idx],
        "lower_bound": res.bounds.lower[idx],
        "upper_bound": res.bounds.upper[idx],
    })
    if res.true_acc is not None:
        front_df["true_accuracy"] = res.true_acc[idx]
    rows = np.arange(res.data.n)
    a = res.plan.models
    plan_df = pd.DataFrame({
        "query_id": res.data.query_ids,
        "model": np.asarray(res.data.models, dtype=object)[a],
        "expected_cost": res.data.cost[rows, a],
        "p": res.p[rows, a],
    })
    paths = {k: str(out / f) for k, f in (("front", "front.csv"), ("plan", "plan.csv"),
                                           ("summary", "summary.json"), ("plot", "front.png"))}
    write_with(paths["front"], lambda p: front_df.to_csv(p, index=False))
    write_with(paths["plan"], lambda p: plan_df.to_csv(p, index=False))
    write_json(paths["summary"], res.summary())
    d = res.data
    series = {"predicted front": (front_df["cost"].to_numpy(), front_df["predicted_accuracy"].to_numpy())}
    if res.true_acc is not None:
        series["realised (true accuracy of the same plans)"] = (front_df["cost"].to_numpy(), front_df["true_accuracy"].to_numpy())
    if res.true_front is not None:
        ti = _thin(len(res.true_front), 3000)
        series["true front (oracle, hindsight)"] = (np.asarray(res.true_front.costs)[ti], np.asarray(res.true_front.accuracies)[ti])
    points = {m: (float(c), float(acc)) for m, c, acc in zip(d.models, d.model_total_cost(), d.model_accuracy())}
    sel = res.selection
    marks = {}
    if "cost" in sel:
        marks["chosen plan"] = (float(sel["cost"]), float(sel.get("realised_accuracy", sel.get("predicted_accuracy"))))
    plot_front(paths["plot"], series=series, points=points, marks=marks,
               title=f"{d.name}: {d.n:,} queries, {res.summary()['n_labelled']} labelled")
    return paths


def _thin(k: int, max_points: int) -> np.ndarray:
    """Indices of at most `max_points` points spread along a front, both ends kept."""
    if k <= max_points:
        return np.arange(k)
    return np.unique(np.linspace(0, k - 1, max_points).round().astype(int))
