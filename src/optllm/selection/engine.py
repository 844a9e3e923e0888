"""One selection engine for every path (`optllm run`, `optllm bench`, `optllm plan`, the API):
`select(front, bounds, goal, ...) -> Selection`.

- Target: the cheapest plan certified to reach it among the front's points and the single
  LLMs and random mixes of two (two fixed sequences, each from its most accurate predicted
  plan down, each at half the error: `_target`); when none is, no plan, and roughly how many
  labels would be needed.
- Budget: the exact optimum within the budget, its accuracy reported as an interval; with
  `Goal.safe`, only a plan that beats the best plan without a predictor (`reference`) at the
  confidence level, paired on the held-out labels, replaces that plan; with `Goal.risk`, every
  plan considered (the reference included) must also keep its realised cost under the budget
  with that probability (`risk`).
- Neither: the knee of the predicted front.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from optllm.cost import CostMatrix
from optllm.errors import OptLLMError
from optllm.evaluate.indicators import upper_hull
from optllm.evaluate.uncertainty import AccuracyBounds, HeldOut, bounds_of, paired_lower, single_bounds
from optllm.optimize.types import Assignment, FrontLike, thin_indices
from optllm.selection.goal import Goal, percent
from optllm.selection.reference import Reference, best_reference, disagreements, sign_test_wins
from optllm.selection.risk import risk_cost

RULE_TARGET = "cheapest plan certified ≥ target (tested from the most accurate down)"
RULE_TARGET_SINGLE = "cheapest single LLM or random mix of two certified ≥ target (tested from the most accurate down)"
MIX_STEPS = 16  # random mixes tested between two neighbouring single LLMs of the target rule's path
RULE_BUDGET = "most accurate plan within the budget"
RULE_BUDGET_RISK = "most accurate plan whose realised cost stays within the budget at --risk"
RULE_SAFE_CHEAPER = "most accurate plan within the budget that is reliably better than the best plan without a predictor"
RULE_REFERENCE = "best plan without a predictor (single LLM or random mix of two)"
RULE_KNEE = "knee of the predicted front (no budget or target given)"


@dataclass(frozen=True)
class PlanFigures:
    """One plan as the selection saw it: expected cost (USD, labelling included when asked),
    mean predicted accuracy, held-out-corrected estimate and its interval at the confidence
    level; `point` is its index on the front (None for a plan off the front, e.g. a random mix);
    `cost_at_risk` the amount its realised cost stays under with probability `Goal.risk`."""

    description: str
    cost: float
    predicted_accuracy: float
    estimated_accuracy: float
    lower: float
    upper: float
    point: int | None = None
    cost_at_risk: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Selection:
    """What was chosen for a goal, and why. `plan` is None when the goal cannot be certified
    (`reachable` False: `message` says why and `labels_needed` how many labels might do).

    `reference`: the best plan without a predictor (budget goals); `alternative`: the plan not
    chosen (the most accurate predicted plan a safe rule overruled, or the cheapest plan whose
    PREDICTED accuracy reaches a target); `certified_gap`: the optimiser's certified accuracy
    gap to the optimum at the budget (expected accuracy)."""

    goal: Goal
    rule: str
    reachable: bool
    confidence: float
    n_labelled: int
    chosen: PlanFigures | None
    reference: PlanFigures | None = None
    alternative: PlanFigures | None = None
    labels_needed: int | None = None
    message: str = ""
    certified_gap: float | None = None
    plan: Assignment | None = field(default=None, repr=False, compare=False)
    alternative_plan: Assignment | None = field(default=None, repr=False, compare=False)
    reference_plan: np.ndarray | None = field(default=None, repr=False, compare=False)  # model per query

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: every field but the assignments, the same keys on every branch."""
        return {
            "goal": self.goal.as_dict(), "rule": self.rule, "reachable": self.reachable,
            "confidence": self.confidence, "n_labelled": self.n_labelled,
            "chosen": None if self.chosen is None else self.chosen.as_dict(),
            "reference": None if self.reference is None else self.reference.as_dict(),
            "alternative": None if self.alternative is None else self.alternative.as_dict(),
            "labels_needed": self.labels_needed, "message": self.message, "certified_gap": self.certified_gap,
        }


@dataclass(frozen=True)
class _Context:
    """What every rule reads: the front and its bounds, the predictions and costs of the
    assigned queries, the held-out sample, and how to price a plan's risk."""

    front: FrontLike
    bounds: AccuracyBounds
    goal: Goal
    p: np.ndarray
    cost: np.ndarray
    held: HeldOut | None
    models: tuple[str, ...]
    extra_cost: float
    estimated: CostMatrix | None
    seed: int
    usable: np.ndarray  # [m] models that may answer every assigned query (single-LLM plans)

    def at_risk(self, choice: np.ndarray) -> float | None:
        g = self.goal
        if g.risk is None or self.estimated is None:
            return None
        return risk_cost(self.estimated, np.asarray(choice), g.risk, g.risk_method) + self.extra_cost

    def figures_of_point(self, k: int, description: str) -> PlanFigures:
        b = self.bounds
        risk = None if self.goal.risk is None else self.at_risk(self.front.assignment(k))
        return PlanFigures(description, float(self.front.costs[k]) + self.extra_cost, float(b.mean[k]),
                           float(b.estimate[k]), float(b.lower[k]), float(b.upper[k]), k, risk)

    def figures_of(self, plan: Assignment, description: str, b: AccuracyBounds | None = None,
                   point: int | None = None) -> PlanFigures:
        if b is None:
            b = bounds_of(plan.models, self.p, self.cost, self.held, self.bounds.confidence)
        return PlanFigures(description, plan.cost + self.extra_cost, plan.accuracy, float(b.estimate[0]),
                           float(b.lower[0]), float(b.upper[0]), point, self.at_risk(plan.models))

    def as_assignment(self, k: int) -> Assignment:
        f = self.front
        return Assignment(models=f.assignment(k), cost=float(f.costs[k]), accuracy=float(f.accuracies[k]),
                          model_names=self.models)


def select(front: FrontLike, bounds: AccuracyBounds, goal: Goal, *, p: np.ndarray, cost: np.ndarray,
           held: HeldOut | None, models: tuple[str, ...], extra_cost: float = 0.0,
           estimated: CostMatrix | None = None, seed: int = 0, feasible: np.ndarray | None = None) -> Selection:
    """The plan for `goal` on `front` (built on predictions `p` [n, m] of the assigned queries
    with costs `cost` [n, m]), with `bounds` along it and the held-out sample `held`.

    `extra_cost` is added to every plan's cost (the labelling cost, when counted);
    `estimated` (the cost estimate of `optllm plan`) prices the realised-cost risk of
    `Goal.risk`; `seed` draws the reference mix's random routing; `feasible` [n, m] marks the
    pairs that may be chosen (a single LLM that cannot answer every query is no plan)."""
    if goal.risk is not None and estimated is None:
        raise OptLLMError("--risk needs estimated costs with their spread (optllm plan); these costs are known")
    p, cost = np.asarray(p), np.asarray(cost)
    usable = usable_models(p.shape[1], feasible)
    ctx = _Context(front, bounds, goal, p, cost, held, models, float(extra_cost), estimated, seed, usable)
    if goal.kind == "target":
        return _target(ctx)
    if goal.kind == "budget":
        return _budget(ctx)
    return _knee(ctx)


def usable_models(m: int, feasible: np.ndarray | None) -> np.ndarray:
    """[m] the models that may answer every query (`feasible` [n, m], None: all): the single
    LLMs a plan may be."""
    return np.ones(m, dtype=bool) if feasible is None else np.asarray(feasible).all(axis=0)


def _base(ctx: _Context, **kw: Any) -> Selection:
    return Selection(goal=ctx.goal, confidence=ctx.bounds.confidence, n_labelled=ctx.bounds.n_labelled, **kw)


# ------------------------------------------------------------------------------- target
def _target(ctx: _Context) -> Selection:
    """Two pre-specified sequences, each tested from its most accurate predicted plan toward
    cheaper ones and stopped at the first failure (fixed-sequence testing): the front, and
    the path of single LLMs and random mixes of two neighbours on their upper hull. With
    held-out labels each sequence gets half the error (Bonferroni), so the cheaper of the two
    plans picked still reaches the target with probability ≥ confidence; without them there
    are no single-LLM bounds, and only the front is tested."""
    b, target = ctx.bounds, float(ctx.goal.target_accuracy)  # type: ignore[arg-type]
    by_mean = np.flatnonzero(b.mean >= target)
    alt = None if not by_mean.size else ctx.figures_of_point(int(by_mean[0]), "cheapest plan whose PREDICTED accuracy reaches the target")
    alt_plan = None if not by_mean.size else ctx.as_assignment(int(by_mean[0]))
    singles = ctx.held is not None and ctx.usable.any()
    level = target_level(b.confidence, singles)
    tested = b if level == b.confidence else b.at_confidence(level)
    pick = tested.cheapest_certified(target)
    mix = _single_path_pick(ctx, target, level) if singles else None
    if mix is not None and (pick is None or mix[1] < float(ctx.front.costs[pick]) - 1e-12):
        return _target_single(ctx, target, mix, alt, alt_plan, level)
    if pick is None:
        need = tested.labels_needed(target)
        message = (
            f"no plan reaches accuracy {target:.4f} with {percent(b.confidence)} confidence "
            f"(best lower bound {b.lower.max():.4f}, best held-out estimate "
            f"{b.estimate[b.tested].max() if b.tested.any() else float('nan'):.4f}"
            + (", single LLMs and mixes of two tested too" if singles else "") + "); "
            + (f"roughly {need:,} labelled queries would be needed (now {b.n_labelled})"
               if need else "the held-out estimates of the front's plans do not reach it even on average, so more "
                            "labels alone are unlikely to certify one")
        )
        return _base(ctx, rule=RULE_TARGET, reachable=False, chosen=None, alternative=alt, labels_needed=need,
                     message=message, alternative_plan=alt_plan)
    chosen = ctx.figures_of_point(pick, "cheapest plan certified to reach the target")
    message = (f"at {percent(b.confidence)} confidence the plan's accuracy is at least {chosen.lower:.4f} "
               f"≥ target {target:.4f}")
    if singles:
        message += f" (tested at {percent(level)}: half the error each for the front and for single LLMs and mixes)"
    if ctx.held is None:
        message += (" — but without held-out labels (--folds 0, or under 4 labelled queries) this bound is only the "
                    "spread of the answers, assuming the predictions are right: it does not cover the predictor's "
                    "own error")
    same = alt is not None and alt.point == pick
    return _base(ctx, rule=RULE_TARGET, reachable=True, chosen=chosen, alternative=None if same else alt,
                 message=message, plan=ctx.as_assignment(pick), alternative_plan=None if same else alt_plan)


def target_level(confidence: float, singles: bool) -> float:
    """The level each of the target rule's sequences is tested at: half the error each for
    the front and for the single LLMs and mixes (`singles`), else all of it for the front."""
    return 1.0 - (1.0 - confidence) / 2.0 if singles else confidence


def single_path(p: np.ndarray, cost: np.ndarray, usable: np.ndarray) -> list[Reference]:
    """The single LLMs (those `usable` for every query) on the upper hull of (total cost,
    mean predicted accuracy) of predictions `p` and costs `cost` [n, m], most accurate first,
    with `MIX_STEPS` random mixes between each neighbouring pair: the target rule's second
    sequence, in descending predicted accuracy."""
    totals = cost.sum(axis=0)
    mu = p.mean(axis=0)
    ok = np.flatnonzero(usable)
    hull = ok[upper_hull(totals[ok], mu[ok])][::-1]  # most accurate (priciest) first
    path = [Reference(int(hull[0]), int(hull[0]), 0.0, float(mu[hull[0]]))]
    for hi, lo in zip(hull[:-1], hull[1:]):
        for w in np.linspace(1.0, 0.0, MIX_STEPS + 1)[1:]:
            ref = Reference(int(lo), int(hi), float(w), float((1 - w) * mu[lo] + w * mu[hi]))
            path.append(ref if w > 0 else Reference(int(lo), int(lo), 0.0, float(mu[lo])))
    return path


def _single_path_pick(ctx: _Context, target: float, level: float) -> tuple[Reference, float] | None:
    """The cheapest plan on `single_path` passing "accuracy ≥ target" at `level`, testing in
    its order and stopping at the first failure; with its expected cost (None: the first fails)."""
    assert ctx.held is not None
    totals = ctx.cost.sum(axis=0)
    last = None
    for ref in single_path(ctx.p, ctx.cost, ctx.usable):
        w = ref.weights(ctx.p.shape[1])
        if float(single_bounds(w, ctx.p, ctx.held, level).lower[0]) < target:
            break
        last = (ref, float(totals @ w))
    return last


def _target_single(ctx: _Context, target: float, mix: tuple[Reference, float], alt: PlanFigures | None,
                   alt_plan: Assignment | None, level: float) -> Selection:
    ref, spend = mix
    a = ref.assignment(ctx.cost, spend, ctx.seed)
    rows = np.arange(ctx.p.shape[0])
    plan = Assignment(models=a, cost=float(ctx.cost[rows, a].sum()), accuracy=float(ctx.p[rows, a].mean()),
                      model_names=ctx.models)
    w = ref.weights(ctx.p.shape[1])
    conf = ctx.bounds.confidence
    chosen = ctx.figures_of(plan, f"cheapest single LLM or mix certified to reach the target: {ref.describe(ctx.models)}",
                            b=single_bounds(w, ctx.p, ctx.held, conf))  # type: ignore[arg-type]
    message = (f"at {percent(conf)} confidence {ref.describe(ctx.models)} reaches at least {chosen.lower:.4f} ≥ target "
               f"{target:.4f} (tested at {percent(level)}), and no cheaper plan of the front is certified")
    return _base(ctx, rule=RULE_TARGET_SINGLE, reachable=True, chosen=chosen, alternative=alt, message=message,
                 plan=plan, alternative_plan=alt_plan)


# ------------------------------------------------------------------------------- knee
def _knee(ctx: _Context) -> Selection:
    c = np.asarray(ctx.front.costs) + ctx.extra_cost
    a = ctx.bounds.mean
    cn = (c - c[0]) / max(c[-1] - c[0], 1e-12)
    an = (a - a[0]) / max(a[-1] - a[0], 1e-12)
    k = int(np.argmax(an - cn))  # largest distance above the chord between both ends, normalised
    return _base(ctx, rule=RULE_KNEE, reachable=True, chosen=ctx.figures_of_point(k, "knee of the predicted front"),
                 message="no --budget or --target-accuracy given: the knee of the predicted front",
                 plan=ctx.as_assignment(k))


# ------------------------------------------------------------------------------- budget
def _budget(ctx: _Context) -> Selection:
    goal, front = ctx.goal, ctx.front
    budget = float(goal.budget)  # type: ignore[arg-type]
    costs = np.asarray(front.costs) + ctx.extra_cost
    if budget < costs[0] - 1e-12:
        raise OptLLMError(
            f"--budget ${budget:.6g} is below the cheapest plan (${costs[0]:.6g}); reachable budgets: "
            f"${costs[0]:.6g} (predicted accuracy {float(front.accuracies[0]):.4f}) to ${costs[-1]:.6g} "
            f"({float(front.accuracies[-1]):.4f}), beyond which more money buys nothing"
        )
    limit = budget - ctx.extra_cost  # what the assigned queries may spend
    spend, plan = _budget_for_risk(ctx, limit)
    rule = RULE_BUDGET if goal.risk is None else RULE_BUDGET_RISK
    gap = float(plan.gap) if np.isfinite(plan.gap) else None
    if not (goal.safe and ctx.held is not None):
        note = ("" if not goal.safe else "the safe rule needs held-out labels (--folds of at least 2 and 4 or more "
                "labelled queries) and was not applied: this is the most accurate PREDICTED plan within the budget")
        return _base(ctx, rule=rule, reachable=True, chosen=ctx.figures_of(plan, "most accurate plan within the budget"),
                     certified_gap=gap, plan=plan, message=note)
    safe = _safe(ctx, plan, spend, limit)
    if safe is None:  # no affordable single LLM: nothing to compare with
        return _base(ctx, rule=rule, reachable=True, chosen=ctx.figures_of(plan, "most accurate plan within the budget"),
                     certified_gap=gap, plan=plan, message="no single LLM fits the budget: nothing to compare with")
    kept, chosen, verdict, ref, ref_plan = safe
    alt = alt_plan = None
    if kept is not plan:
        alt, alt_plan = ctx.figures_of(plan, "the most accurate predicted plan within the budget"), plan
    return _base(ctx, rule=rule if kept is plan else verdict[1], reachable=True, chosen=chosen, reference=ref,
                 alternative=alt, certified_gap=gap, message=verdict[0], plan=kept, alternative_plan=alt_plan,
                 reference_plan=ref_plan)


def _budget_for_risk(ctx: _Context, limit: float) -> tuple[float, Assignment]:
    """The mean spend plans may use and the front's plan there: the budget itself, or with
    `Goal.risk`, when the front's plan at the budget fails the risk test, the largest spend
    whose plan keeps its realised cost under the budget at that probability (bisection on the
    front's budget, each plan verified)."""
    front, goal = ctx.front, ctx.goal
    hi_cost = float(front.costs[-1])
    best = front.at_budget(min(limit, hi_cost))
    if goal.risk is None:
        return limit, best

    def ok(a: Assignment) -> bool:
        return risk_cost(ctx.estimated, np.asarray(a.models), goal.risk, goal.risk_method) <= limit  # type: ignore[arg-type]

    lo_cost = float(front.costs[0])
    cheapest = front.at_budget(lo_cost)
    if not ok(cheapest):
        need = risk_cost(ctx.estimated, np.asarray(cheapest.models), goal.risk, goal.risk_method)  # type: ignore[arg-type]
        raise OptLLMError(
            f"--budget ${limit + ctx.extra_cost:.6g} cannot hold with --risk {goal.risk}: even the cheapest plan "
            f"(mean ${lo_cost + ctx.extra_cost:.6g}) needs ${need + ctx.extra_cost:.6g} at that probability "
            f"({goal.risk_method} rule); reachable budgets start at ${need + ctx.extra_cost:.6g}"
        )
    if ok(best):
        return limit, best
    lo, hi, chosen = lo_cost, min(limit, hi_cost), cheapest
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        a = front.at_budget(mid)
        if ok(a):
            lo, chosen = mid, a
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return lo, chosen


def _safe(ctx: _Context, plan: Assignment, spend: float, limit: float
          ) -> tuple[Assignment, PlanFigures, tuple[str, str], PlanFigures, np.ndarray] | None:
    """Do no harm: keep the most accurate plan within `spend` only if it beats the reference
    (the strongest single LLM that fits, or a random mix of two single LLMs that spends it) at
    the confidence level, the difference bounded on the same held-out labels and assigned
    queries; otherwise take the most accurate plan that does, or the reference itself (with
    its own bounds: its rule is not the front's). Returns (plan, its figures, (verdict, rule),
    the reference's figures, the reference as a plan), or None when no single LLM fits."""
    front, b, p, cost, held = ctx.front, ctx.bounds, ctx.p, ctx.cost, ctx.held
    assert held is not None
    totals = cost.sum(axis=0)
    fits = totals <= spend * (1 + 1e-12)
    if ctx.goal.risk is not None:
        fits &= np.array([ctx.at_risk(np.full(cost.shape[0], k)) <= limit + ctx.extra_cost + 1e-12
                          for k in range(cost.shape[1])])
    affordable = np.flatnonzero(fits)
    ok_cost = np.flatnonzero(np.asarray(front.costs) <= spend * (1 + 1e-12))
    if not affordable.size or not ok_cost.size:
        return None
    conf = b.confidence
    ref = best_reference(affordable, totals, spend, p, held, conf)
    name = ref.describe(ctx.models)
    ref_fig = _reference_figures(ctx, ref, totals, name)
    k_plan = int(ok_cost[-1])
    w = ref.weights(p.shape[1])
    labelled_ref = ref.choices(held.n, ctx.seed)
    # one pre-specified comparison: the pointwise quantile; scanning the front below: the band's z
    diff_lower = float(paired_lower(front, np.array([k_plan]), w, p, cost, held, b.z)[0])
    ref_plan = _reference_plan(ctx, ref, spend, limit)
    if diff_lower >= 0 and sign_test_wins(front, np.array([k_plan]), labelled_ref, p, cost, held, conf)[0]:
        return (plan, ctx.figures_of(plan, "most accurate plan within the budget"),
                (f"at {percent(conf)} confidence the plan beats {name}", ""), ref_fig, ref_plan)
    wins, losses = disagreements(front, k_plan, labelled_ref, p, cost, held)
    why = (f"the most accurate plan within the budget was not shown better: {percent(conf)} lower bound on its lead "
           f"{diff_lower:+.4f}; of the {held.n} labelled queries it gets {wins} right where the reference is "
           f"wrong and {losses} the other way")
    cand = ok_cost[thin_indices(ok_cost.size, 512)]
    z_band = b.z if b.z_band is None else b.z_band
    cand = cand[paired_lower(front, cand, w, p, cost, held, z_band) >= 0]
    good = cand[sign_test_wins(front, cand, labelled_ref, p, cost, held, conf)] if cand.size else cand
    if good.size:
        k = int(good[np.argmax(b.estimate[good])])
        verdict = (f"at {percent(conf)} confidence only cheaper plans beat {name}; front point {k} is the most accurate "
                   f"of them ({why})", RULE_SAFE_CHEAPER)
        return ctx.as_assignment(k), ctx.figures_of_point(k, "most accurate plan reliably better than the reference"), \
            verdict, ref_fig, ref_plan
    a = ref_plan
    rows = np.arange(p.shape[0])
    kept = Assignment(models=a, cost=float(cost[rows, a].sum()), accuracy=float(p[rows, a].mean()),
                      model_names=ctx.models)
    fig = ctx.figures_of(kept, f"the best plan without a predictor: {name}", b=single_bounds(w, p, held, conf))
    return kept, fig, (f"at {percent(conf)} confidence no predicted plan beats {name}; taking that ({why})",
                       RULE_REFERENCE), ref_fig, ref_plan


def _reference_plan(ctx: _Context, ref: Reference, spend: float, limit: float) -> np.ndarray:
    """The reference as a plan: with `Goal.risk`, the mix's share of the pricier model is cut
    (bisection on its budget) until the realised cost stays under the budget at that risk."""
    a = ref.assignment(ctx.cost, spend, ctx.seed)
    risky: Callable[[np.ndarray], bool] = lambda x: (ctx.at_risk(x) or 0.0) > limit + ctx.extra_cost + 1e-12
    if ctx.goal.risk is None or ref.w <= 0.0 or not risky(a):
        return a
    lo, hi = float(ctx.cost[:, ref.lo].sum()), spend
    best = ref.assignment(ctx.cost, lo, ctx.seed)
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        cand = ref.assignment(ctx.cost, mid, ctx.seed)
        if risky(cand):
            hi = mid
        else:
            lo, best = mid, cand
    return best


def _reference_figures(ctx: _Context, ref: Reference, totals: np.ndarray, name: str) -> PlanFigures:
    w = ref.weights(ctx.p.shape[1])
    b = single_bounds(w, ctx.p, ctx.held, ctx.bounds.confidence)  # type: ignore[arg-type]
    return PlanFigures(f"best plan without a predictor: {name}", float(totals @ w) + ctx.extra_cost,
                       float((ctx.p @ w).mean()), float(b.estimate[0]), float(b.lower[0]), float(b.upper[0]))
