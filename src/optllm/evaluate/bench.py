"""`optllm bench`: the paper's protocol on many datasets, every method on the same splits.

Per split (1% train, 1% validation, the rest assigned): single LLMs, the oracle front, a
zero router, OptLLM as published (BootstrapForest + OptLLM-M), the MOEAs on the same
predictions, a threshold router, kNN routing, and ours (default predictor + exact front +
selection under uncertainty). Every method is judged on the TRUE labels of the assigned
queries. The paper's saving is chosen with hindsight; we report it beside what a user could
have had (plans picked from predictions alone).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optllm.data import Outcomes, split
from optllm.errors import OptLLMError
from optllm.evaluate.baselines import Curve, pick_pair, threshold_router, zero_router
from optllm.evaluate.indicators import accuracy_at_cost, hindsight_saving, single_models
from optllm.evaluate.uncertainty import DEFAULT_ESTIMATOR, AccuracyBounds, bounds_along, values_along, values_of
from optllm.optimize.registry import MOEAS, build_front
from optllm.optimize.types import Assignment, FrontLike, thin_indices
from optllm.planning.core import BOUNDS, HOLDOUT_BOUND, cross_fit, fit_predictor, predict_in_chunks, validation_holdout
from optllm.predict import fit_predict, inputs_of
from optllm.selection import Goal, Selection, select

DEFAULT_METHODS = ("zero", "optllm", "threshold", "knn", "ours") + tuple(f"moea:{m}" for m in MOEAS)


@dataclass
class BenchConfig:
    """Protocol options; defaults are the paper's (1% / 1%, 10 seeded splits)."""

    reps: int = 10
    train_frac: float = 0.01
    val_frac: float = 0.01
    methods: tuple[str, ...] = DEFAULT_METHODS
    generations: int = 30
    moea_reps: int = 3  # MOEAs are slow: run them on the first splits only
    gn: int = 50
    paper_alpha: float = 1.0  # the authors' code uses p̄ + 1·σ
    paper_bootstraps: int = 100
    confidence: float = 0.9
    folds: int = 5  # cross-fitting folds of the labelled sample (confidence bounds)
    predictor: str = "default"
    seed: int = 0
    bound: str = DEFAULT_ESTIMATOR  # how the labelled sample bounds our plans (`planning.core.BOUNDS`)

    def __post_init__(self) -> None:
        if self.reps < 1:
            raise OptLLMError(f"--reps must be at least 1, got {self.reps}")
        if self.bound not in BOUNDS:
            raise OptLLMError(f"--bound must be one of {', '.join(BOUNDS)}, got {self.bound!r}")


def _front_curve(name: str, front: FrontLike, p: np.ndarray, correct: np.ndarray, seconds: float,
                 max_points: int = 4000) -> Curve:
    """Reduce a front to a thinned curve of (cost, predicted acc, true acc)."""
    idx = thin_indices(len(front), max_points)
    pred = values_along(front, p)[idx]
    true = values_along(front, correct)[idx]
    return Curve(name, np.asarray(front.costs)[idx], true, pred, seconds)


@dataclass
class SplitInputs:
    """One split's parts and the figures every method is judged by, with a cache of the
    predictions methods share (the paper's forest for OptLLM and the MOEAs, the default
    predictor for the threshold router and ours)."""

    cfg: BenchConfig
    rep: int
    train: Outcomes
    val: Outcomes
    test: Outcomes
    predictions: dict[str, tuple[np.ndarray, np.ndarray, float]] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return self.cfg.seed + self.rep

    @property
    def best(self) -> int:
        return single_models(self.test.correct, self.test.cost).best

    @property
    def target(self) -> float:
        return float(self.test.correct.mean(axis=0)[self.best])

    @property
    def best_cost(self) -> float:
        return float(self.test.cost.sum(axis=0)[self.best])

    @property
    def est_acc(self) -> np.ndarray:
        """Per-LLM accuracy on the labelled sample (what a user knows without a predictor)."""
        return np.vstack([self.train.correct, self.val.correct]).mean(axis=0)

    def predict(self, name: str, **params: Any) -> tuple[np.ndarray, np.ndarray, float]:
        """(mean, std, fit + predict seconds) of predictor `name`, fitted once per split."""
        if name not in self.predictions:
            t1 = time.perf_counter()
            mean, std = fit_predict(name, self.train, self.val, self.test, self.seed, **params)
            self.predictions[name] = (mean, std, time.perf_counter() - t1)
        return self.predictions[name]

    def paper_predictions(self) -> tuple[np.ndarray, np.ndarray, float]:
        """The paper's inputs: BootstrapForest's mean and its robust p̄ + α·σ, and the seconds."""
        mean, std, t = self.predict("bootstrap_forest", u=self.cfg.paper_bootstraps)
        return mean, np.clip(mean + self.cfg.paper_alpha * std, 0, 1), t


@dataclass
class MethodResult:
    """One method on one split: its curve and the plans it picked from predictions alone
    (name -> cost, realised and predicted accuracy); `ours` also reports its target picks and
    how its bounds held."""

    curve: Curve
    picks: dict[str, dict[str, Any]] = field(default_factory=dict)
    target_picks: dict[str, Any] | None = None
    band: dict[str, Any] | None = None


@dataclass
class SplitResult:
    """Every method on one split, judged on the true labels of its assigned part."""

    rep: int
    seed: int
    best: int
    target: float
    best_cost: float
    singles: dict[str, tuple[float, float]]
    oracle: Curve
    methods: dict[str, MethodResult]
    labelling_cost: float
    n_assigned: int
    n_labelled: int

    @property
    def curves(self) -> dict[str, Curve]:
        return {k: v.curve for k, v in self.methods.items()}

    @property
    def picks(self) -> dict[str, dict[str, Any]]:
        return {k: v for r in self.methods.values() for k, v in r.picks.items()}


def _zero(s: SplitInputs) -> MethodResult:
    return MethodResult(zero_router(s.test.correct, s.test.cost, s.est_acc))


def _optllm(s: SplitInputs) -> MethodResult:
    """OptLLM as published: BootstrapForest (robust p̄ + σ) + OptLLM-M."""
    mean, p_rob, t_pred = s.paper_predictions()
    t1 = time.perf_counter()
    front = build_front("optllm-m", mean, p_rob, s.test.cost, s.test.models, gn=s.cfg.gn)
    t_opt = time.perf_counter() - t1
    c = _front_curve("optllm", front, p_rob, s.test.correct, t_pred + t_opt)
    c.info.update(predict_s=t_pred, optimise_s=t_opt)
    return MethodResult(c, {"optllm": _budget_pick(c, s.best_cost), "optllm:half": _budget_pick(c, 0.5 * s.best_cost)})


def _moea(name: str) -> Callable[[SplitInputs], MethodResult]:
    def run(s: SplitInputs) -> MethodResult:
        mean, p_rob, _ = s.paper_predictions()  # the same input as OptLLM's, as in the paper
        t1 = time.perf_counter()
        front = build_front(name, mean, p_rob, s.test.cost, s.test.models, generations=s.cfg.generations, seed=s.seed)
        return MethodResult(_front_curve(f"moea:{name}", front, p_rob, s.test.correct, time.perf_counter() - t1))
    return run


def _threshold(s: SplitInputs) -> MethodResult:
    mean, _, t_pred = s.predict(s.cfg.predictor)
    w, strong = pick_pair(s.est_acc, s.train.cost.sum(axis=0) + s.val.cost.sum(axis=0))
    c = threshold_router(s.test.correct, s.test.cost, mean, w, strong)
    c.seconds = t_pred
    return MethodResult(c)


def _exact_on(s: SplitInputs, pred_name: str, method: str) -> tuple[FrontLike, np.ndarray, MethodResult]:
    """The exact front on predictor `pred_name`'s predictions, with the paper's budget picks."""
    mean, _, t_pred = s.predict(pred_name)
    return _exact_front(s, mean, t_pred, method)


def _exact_front(s: SplitInputs, mean: np.ndarray, t_pred: float, method: str
                 ) -> tuple[FrontLike, np.ndarray, MethodResult]:
    from optllm.optimize import pareto_front

    t1 = time.perf_counter()
    front = pareto_front(mean, s.test.cost, models=s.test.models)
    t_opt = time.perf_counter() - t1
    c = _front_curve(method, front, mean, s.test.correct, t_pred + t_opt)
    c.info.update(predict_s=t_pred, optimise_s=t_opt)
    return front, mean, MethodResult(c)


def _knn(s: SplitInputs) -> MethodResult:
    _, _, r = _exact_on(s, "knn", "knn")
    r.picks = {"knn": _budget_pick(r.curve, s.best_cost), "knn:half": _budget_pick(r.curve, 0.5 * s.best_cost)}
    return r


def _ours(s: SplitInputs) -> MethodResult:
    """Ours as `optllm run` picks: the exact front on the default predictor, its bounds
    (cross-fitted, or on the validation part with `--bound holdout`), the target rule and
    the safe budget rule (`selection.select`)."""
    cfg, test = s.cfg, s.test
    if cfg.bound == HOLDOUT_BOUND:  # the predictor never sees the validation part, which bounds it
        t1 = time.perf_counter()
        model = fit_predictor(cfg.predictor, s.train, s.val, s.seed, holdout=True)
        mean, _ = predict_in_chunks(model, inputs_of(test), with_std=False)
        front, mean, r = _exact_front(s, mean, time.perf_counter() - t1, "ours")
        t1 = time.perf_counter()
        held = validation_holdout(model, s.val)
    else:
        front, mean, r = _exact_on(s, cfg.predictor, "ours")
        t1 = time.perf_counter()
        held = cross_fit(cfg.predictor, s.train, s.val, cfg.folds, s.seed, cfg.bound)
    b = bounds_along(front, mean, test.cost, held, cfg.confidence, seed=s.seed)
    r.curve.info["bounds_s"] = time.perf_counter() - t1
    r.target_picks = _target_picks(front, b, test.correct, s.target,
                                   lambda a: select(front, b, Goal(target_accuracy=a, confidence=cfg.confidence),
                                                    p=mean, cost=test.cost, held=held, models=test.models, seed=s.seed))
    realised = values_along(front, test.correct)
    r.band = {"whole_front": bool(np.all(realised >= b.lower_band - 1e-12)),
              "points": float(np.mean(realised >= b.lower - 1e-12)),
              "raw_points": float(np.mean(realised >= np.clip(b.mean - b.z * b.sd, 0, 1) - 1e-12))}

    def safe_at(budget: float) -> Selection:
        return select(front, b, Goal(budget=budget, confidence=cfg.confidence, safe=True), p=mean, cost=test.cost,
                      held=held, models=test.models, seed=s.seed)

    def pick_at(budget: float) -> dict[str, Any]:
        if budget < float(np.asarray(front.costs)[0]) - 1e-12:  # below the cheapest plan of this split's front
            return dict(UNREACHABLE)
        sel = safe_at(budget)
        assert sel.plan is not None  # a reachable budget goal always has a plan
        return {**_realised(sel.plan, test.correct), "rule": sel.rule}

    r.picks = {"ours": pick_at(s.best_cost),
               "ours:half": pick_at(0.5 * s.best_cost),
               "ours_unsafe": _realised(front.at_budget(s.best_cost), test.correct),
               # ours' own half-budget pick is the safe rule above; this is its --no-safe
               "ours_unsafe:half": _budget_pick(r.curve, 0.5 * s.best_cost)}
    return r


METHODS: dict[str, Callable[[SplitInputs], MethodResult]] = {
    "zero": _zero, "optllm": _optllm, "threshold": _threshold, "knn": _knn, "ours": _ours,
    **{f"moea:{m}": _moea(m) for m in MOEAS},
}


def run_split(data: Outcomes, rep: int, cfg: BenchConfig, say: Callable[[str], None] = lambda s: None) -> SplitResult:
    """Every method of `cfg.methods` on split `rep` (MOEAs on the first `moea_reps` splits only)."""
    from optllm.optimize import pareto_front

    sp = split(data, train=cfg.train_frac, val=cfg.val_frac, seed=cfg.seed + rep)
    train, val, test = sp.parts(data)
    s = SplitInputs(cfg, rep, train, val, test)
    t0 = time.perf_counter()
    oracle = pareto_front(test.correct, test.cost, models=test.models)
    oracle_curve = _front_curve("oracle", oracle, test.correct, test.correct, time.perf_counter() - t0)
    results: dict[str, MethodResult] = {}
    for method in cfg.methods:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
        if method.startswith("moea:") and rep >= cfg.moea_reps:
            continue
        say(f"split {rep + 1}: {method}")
        results[method] = METHODS[method](s)
    acc, tot = test.correct.mean(axis=0), test.cost.sum(axis=0)
    return SplitResult(rep, s.seed, s.best, s.target, s.best_cost,
                       {m: (float(tot[k]), float(acc[k])) for k, m in enumerate(test.models)}, oracle_curve, results,
                       float(train.cost.sum() + val.cost.sum()), test.n, train.n + val.n)


def _realised(plan: Assignment, correct: np.ndarray) -> dict[str, float]:
    """A picked plan's cost, its realised accuracy on the true labels and its predicted one."""
    return {"cost": float(plan.cost), "realised_accuracy": float(values_of(plan.models, correct)),
            "predicted_accuracy": float(plan.accuracy)}


# a budget below the cheapest plan of a split's front: no plan there (counted, not an error)
UNREACHABLE: dict[str, Any] = {"cost": None, "realised_accuracy": None, "reachable": False}


def _budget_pick(c: Curve, budget: float) -> dict[str, Any]:
    """What a user gets asking for the best plan at the best single model's cost: the point
    with the highest PREDICTED accuracy within budget, and its realised accuracy."""
    ok = np.flatnonzero(c.costs <= budget * (1 + 1e-9))
    if not ok.size:
        return dict(UNREACHABLE)
    if c.pred_acc is None:
        return {"cost": None, "realised_accuracy": None}
    k = int(ok[np.argmax(c.pred_acc[ok])])
    return {"cost": float(c.costs[k]), "realised_accuracy": float(c.true_acc[k]), "predicted_accuracy": float(c.pred_acc[k])}


def _target_picks(front: FrontLike, b: AccuracyBounds, correct: np.ndarray, target: float,
                  certified: Callable[[float], Selection]) -> dict[str, Any]:
    """Plans for the target chosen from predictions alone — by predicted mean, by the
    held-out estimate and by the confidence rule `optllm run --target-accuracy` applies
    (`certified`: the selection engine's target rule, single LLMs and mixes included) — each
    with realised accuracy and cost; at 100%, 99%, 97% and 90% of it."""
    out: dict[str, Any] = {}
    for label, a in (("100", target), ("99", 0.99 * target), ("97", 0.97 * target), ("90", 0.90 * target)):
        for rule, score in (("mean", b.mean), ("corrected", b.estimate), ("confidence", None)):
            if score is None:
                sel = certified(a)
                if sel.plan is None or sel.chosen is None:
                    out[f"{rule}_{label}"] = {"picked": False}
                    continue
                real = float(values_of(np.asarray(sel.plan.models), correct))
                out[f"{rule}_{label}"] = {"picked": True, "cost": float(sel.plan.cost), "realised_accuracy": real,
                                          "met": bool(real >= a - 1e-12), "predicted": sel.chosen.predicted_accuracy,
                                          "lower": sel.chosen.lower}
                continue
            ok = np.flatnonzero(score >= a)
            if not ok.size:
                out[f"{rule}_{label}"] = {"picked": False}
                continue
            k = int(ok[0])
            real = float(values_of(front.assignment(k), correct))
            out[f"{rule}_{label}"] = {"picked": True, "cost": float(front.costs[k]), "realised_accuracy": real,
                                      "met": bool(real >= a - 1e-12), "predicted": float(b.mean[k]), "lower": float(b.lower[k])}
    return out


def method_figures(res: SplitResult, name: str, curve: Curve) -> dict[str, Any]:
    """Per split and method: savings (hindsight), best accuracy, indicators, AIQ, headroom."""
    from optllm.evaluate import indicators as ind

    target, best_cost = res.target, res.best_cost
    costs, true = curve.costs, curve.true_acc
    h100 = hindsight_saving(costs, true, target, best_cost)
    h99 = hindsight_saving(costs, true, 0.99 * target, best_cost)
    k = int(np.argmax(true))
    oracle = res.oracle
    max_single = max(c for c, _ in res.singles.values())
    min_single = min(c for c, _ in res.singles.values())
    ref = np.column_stack([oracle.costs, oracle.true_acc])
    approx = np.column_stack([costs, true])
    q = ind.quality(approx, ref, cost_scale=max_single)
    at_best = _acc_at(costs, true, best_cost)
    at_half = _acc_at(costs, true, 0.5 * best_cost)
    oracle_at_best = _acc_at(oracle.costs, oracle.true_acc, best_cost)
    head = None
    if at_best is not None and oracle_at_best is not None and oracle_at_best > target:
        head = (at_best - target) / (oracle_at_best - target)
    fig = {
        "saving_at_best": h100.saving, "reached_best": h100.reached,
        "saving_at_99": h99.saving, "reached_99": h99.reached,
        "best_true_accuracy": float(true[k]), "cost_at_best_true_accuracy": float(costs[k]),
        "acc_at_best_cost_hindsight": at_best,
        "acc_at_half_best_cost_hindsight": at_half,
        "aiq": ind.aiq(costs, true, (min_single, max_single)),
        "headroom_captured": head, "points": len(curve), "seconds": curve.seconds,
    }
    fig.update(q)
    return fig


def _acc_at(costs: np.ndarray, acc: np.ndarray, budget: float) -> float | None:
    return accuracy_at_cost(np.column_stack([costs, acc]), budget, rtol=1e-9, atol=0.0)


def aggregate(values: list[Any]) -> dict[str, Any]:
    """mean ± std over splits of the defined values, and how many were defined."""
    v = np.array([x for x in values if x is not None and not (isinstance(x, float) and np.isnan(x))], dtype=float)
    return {"mean": float(v.mean()) if v.size else None, "std": float(v.std(ddof=1)) if v.size > 1 else None,
            "defined": int(v.size), "of": len(values)}


def _honest(splits: list[SplitResult], cfg: BenchConfig) -> dict[str, Any]:
    """What a user could have had: the plans picked from predictions alone (budget picks at
    the best LLM's cost and half of it, target picks, and how the bounds held)."""
    honest: dict[str, Any] = {}
    for m in ("ours", "ours_unsafe", "optllm", "knn"):
        half = [s.picks[f"{m}:half"] for s in splits if f"{m}:half" in s.picks]
        if half:  # the budget that matters where the saving at the best accuracy is ~0 (routerbench)
            # a split whose cheapest plan costs more than half the best LLM's cost has no plan there
            honest[f"{m}_at_half_best_cost"] = {
                "realised_accuracy": aggregate([v["realised_accuracy"] for v in half]),
                "cost": aggregate([v["cost"] for v in half]),
                "reachable": int(sum(v.get("reachable", True) for v in half)), "of": len(half)}
        vals = [s.picks[m] for s in splits if m in s.picks]
        if vals:
            honest[f"{m}_at_best_cost"] = {
                "realised_accuracy": aggregate([v["realised_accuracy"] for v in vals]),
                "cost": aggregate([v["cost"] for v in vals]),
                "at_least_best_accuracy": int(sum(v["realised_accuracy"] is not None and v["realised_accuracy"] >= s.target - 1e-12
                                                  for v, s in zip(vals, splits))),
                "of": len(vals),
            }
    tp = [s.methods["ours"].target_picks for s in splits if "ours" in s.methods]
    if tp:
        for key in tp[0]:
            picked = [t[key] for t in tp if t[key]["picked"]]
            missed = int(sum(not p["met"] for p in picked))
            honest[f"ours_target_{key}"] = {
                "picked": len(picked), "of": len(tp),
                "met": len(picked) - missed,
                "coverage": ((len(picked) - missed) / len(picked)) if picked else None,
                # what the confidence level promises: a plan is returned only if it reaches the
                # target; refusing ("more labels needed") keeps that promise
                "promise_kept": (len(tp) - missed) / len(tp),
                "realised_accuracy": aggregate([p["realised_accuracy"] for p in picked]),
                "cost": aggregate([p["cost"] for p in picked]),
                "saving": aggregate([1 - p["cost"] / s.best_cost for p, s in
                                     zip([t[key] for t in tp], splits) if p["picked"]]),
            }
    bands = [s.methods["ours"].band for s in splits if "ours" in s.methods]
    if bands:
        # the bound itself, checked on every plan of the front: the share of splits where the
        # realised accuracy stayed above it all along (what the band promises, at `confidence`),
        # the mean share of points above it, and the same for the uncorrected bound
        honest["ours_bound_coverage"] = {
            "whole_front": int(sum(b["whole_front"] for b in bands)), "of": len(bands),
            "points": aggregate([b["points"] for b in bands]),
            "points_without_correction": aggregate([b["raw_points"] for b in bands]),
            "confidence": cfg.confidence,
        }
    return honest


def _wilcoxon_ours_vs_optllm(raw: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Paired Wilcoxon tests of ours against OptLLM over the splits."""
    from scipy.stats import wilcoxon

    tests: dict[str, Any] = {}
    if "ours" in raw and "optllm" in raw:
        for key in ("acc_at_best_cost_hindsight", "best_true_accuracy", "igd_norm"):
            a = [f[key] for f in raw["ours"]]
            b = [f[key] for f in raw["optllm"]]
            pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
            if len(pairs) >= 2 and any(abs(x - y) > 1e-12 for x, y in pairs):
                r = wilcoxon([x for x, _ in pairs], [y for _, y in pairs])
                tests[key] = {"statistic": float(r.statistic), "p_value": float(r.pvalue), "pairs": len(pairs)}
            else:
                tests[key] = {"statistic": None, "p_value": None, "pairs": len(pairs)}
    return tests


def bench_dataset(data: Outcomes, cfg: BenchConfig, say: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """All splits of one dataset → per-method aggregated figures (and the raw per-split ones)."""
    from optllm.planning.core import need_two_models

    need_two_models(data.models, str(data.metadata.get("source", data.name)))
    splits = [run_split(data, r, cfg, say) for r in range(cfg.reps)]
    methods = ["oracle"] + [m for m in cfg.methods if any(m in s.curves for s in splits)]
    per_method: dict[str, Any] = {}
    raw: dict[str, list[dict[str, Any]]] = {}
    for m in methods:
        figs = [method_figures(s, m, s.oracle if m == "oracle" else s.curves[m])
                for s in splits if m == "oracle" or m in s.curves]
        raw[m] = figs
        agg = {k: aggregate([f[k] for f in figs]) for k in figs[0] if not k.startswith("reached")}
        agg["reached_best"] = {"count": int(sum(f["reached_best"] for f in figs)), "of": len(figs)}
        agg["reached_99"] = {"count": int(sum(f["reached_99"] for f in figs)), "of": len(figs)}
        per_method[m] = agg
    singles = {name: {"cost": aggregate([s.singles[name][0] for s in splits]),
                      "accuracy": aggregate([s.singles[name][1] for s in splits])}
               for name in data.models}
    honest = _honest(splits, cfg)
    tests = _wilcoxon_ours_vs_optllm(raw)
    first = splits[0]
    return {
        "dataset": data.name, "n": data.n, "m": data.m, "models": list(data.models),
        "best_model": data.models[first.best],
        "labelling_cost": aggregate([s.labelling_cost for s in splits]),
        "n_labelled": first.n_labelled, "n_assigned": first.n_assigned,
        "methods": per_method, "singles": singles, "honest": honest, "wilcoxon_ours_vs_optllm": tests,
        "per_split": raw,
        "curves_first_split": {name: {"costs": c.costs, "true_acc": c.true_acc}
                               for name, c in {"oracle": first.oracle, **first.curves}.items()},
        "singles_first_split": first.singles,
    }


def run_bench(names: list[str], cfg: BenchConfig, say: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """`optllm bench` as a function: every dataset, every method, every split."""
    from optllm.data import load

    out: dict[str, Any] = {"config": cfg.__dict__ | {"methods": list(cfg.methods)}, "datasets": {}}
    for name in names:
        say(f"{name}: loading")
        data = load(name)
        t0 = time.perf_counter()
        out["datasets"][name] = bench_dataset(data, cfg, lambda s, n=name: say(f"{n}: {s}"))
        out["datasets"][name]["seconds"] = time.perf_counter() - t0
    return out
