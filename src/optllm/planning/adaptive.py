"""Labelling until the target is certified: label a random sample, plan, and label more in
rounds until the plan is certified, more labels stop paying, or the labelling budget is spent.

Each round labels new prompts drawn uniformly at random from those not labelled yet, refits
the predictor on every label so far, rebounds and selects the cheapest plan certified for the
target (`selection.select`) among every model labelled in the round; only then are the models
shown not worth more labels (`prune`) dropped from the rounds that follow (the same order as
`labelling.until`, the real path, so `optllm label-budget` measures what `plan --label-budget`
does).

Sizes follow a schedule fixed before any label is seen: round r has `first`·`growth`^(r−1)
labels in all (default: 1% of the batch, at least `MIN_LABELS`, doubling; at most half the
batch); the labels only decide whether to stop. Where 1% of the batch is at least twice
`pilot` prompts (default `MIN_LABELS`) and pruning is on, a pilot round of `pilot` prompts
comes first: labelling every model is most of the cost, and a model clearly
dominated (or dearer than one already certified for the target alone) is dropped on the pilot's labels
before the 1% rounds are bought; the pilot comes on top of the R regular rounds.

Error control across rounds (alpha spending): over the planned rounds (the pilot, if any, and
R = `max_rounds`), round r tests the target at level 1 − α_r with α_r = (1 − C)·w_r,
w_r = s_r / Σ_j s_j (s_r: the labels in all after round r on the schedule): the error is spent
in proportion to the planned sample sizes (1, 2, 4, 8 for doubling), so the early, small
rounds, which rarely certify, take little of it. The weights are fixed before any label is
seen, as are the round sizes, so round r's test is a test at level α_r on a random sample of
a size fixed in advance, and a plan certified in any round misses its target with
probability at most Σ α_r = 1 − C, whatever the stopping rule: the union bound covers every
round that might have been the one that stopped. (Pruning chooses
the candidate models from the same labels; that choice is not covered by the argument, and
`optllm label-budget` measures the promise with it.)

Certifying on a holdout (`certify="holdout"`, `planning.holdout`): a share `holdout` of the
prompts, drawn before any label is seen, never trains the predictor; the round's new prompts
in it are labelled only where the tested plans route them, and the round's plan is bounded on
the whole holdout so far (exact binomial, no cross-fitting); pruning reads the training
labels only, so the models kept do not depend on the holdout the tests read.

Why only random draws: the bound treats the labelled prompts as a uniform sample of the batch
(`docs/bounds.md`); choosing the next ones by diversity or by the predictor's uncertainty
would make them unrepresentative and the bound would no longer hold without reweighting.

Stops (the round's `stop`): `certified`; `no-gain` (the next round would cost more than the
most a plan could still save at C: the best LLM's cost on the prompts left minus that of the
cheapest plan, on the front or a single LLM, whose upper bound at C still reaches the target,
`hope_cost`); `label-budget`
(the next round does not fit what is left of it); `rounds` (R rounds done); `pool` (the
schedule reached half the batch). `Selection.labels_needed` is reported per round.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from optllm.data import Outcomes
from optllm.errors import OptLLMError
from optllm.evaluate.uncertainty import single_bounds
from optllm.planning.advisor import MIN_LABELS
from optllm.planning.core import Planned, PlanSettings, plan_queries
from optllm.selection import Goal

# labeller(rows, models) -> (correct [k, len(models)], labelling cost per row [k])
Labeller = Callable[[np.ndarray, tuple[str, ...]], tuple[np.ndarray, np.ndarray]]
STOPS = ("certified", "no-gain", "label-budget", "rounds", "pool")
CERTIFY = ("cross-fit", "holdout")  # how a round's plan is bounded: `planning.holdout` for the second


@dataclass(frozen=True)
class AdaptiveSettings:
    """How to label in rounds, validated once. `label_budget`: USD for labelling (None: no
    cap but the rounds); `first`: prompts labelled in round one (None: 1% of the batch, at
    least `MIN_LABELS`); `growth`: the most a round multiplies the labels by; `max_rounds`:
    R of the alpha spending; `val_share`: each labelled prompt's chance to validate rather
    than train the predictor; `prune`: stop labelling (and planning with) models shown
    dominated on the labels so far (`prune`); `pilot`: prompts in a first, pruning-only round
    where the first regular round is at least twice as big (0: none); `certify`: how a round's
    plan is bounded (`CERTIFY`: cross-fitting every labelled prompt, or a holdout labelled where
    the tested plans route); `holdout`: the share of the prompts kept as that holdout."""

    label_budget: float | None = None
    first: int | None = None
    growth: float = 2.0
    max_rounds: int = 6
    val_share: float = 0.5
    prune: bool = True
    pilot: int = MIN_LABELS
    certify: str = "cross-fit"
    holdout: float = 0.5

    def __post_init__(self) -> None:
        if self.certify not in CERTIFY:
            raise OptLLMError(f"--certify must be one of {', '.join(CERTIFY)}, got {self.certify!r}")
        if not (0 < self.holdout < 1):
            raise OptLLMError(f"--holdout must lie strictly between 0 and 1 (a share of the labelled prompts), "
                              f"got {self.holdout}")
        if self.label_budget is not None and not (self.label_budget > 0 and np.isfinite(self.label_budget)):
            raise OptLLMError(f"--label-budget must be a positive amount in USD, got {self.label_budget}")
        if self.first is not None and self.first < 4:
            raise OptLLMError(f"--first-round must be at least 4 prompts, got {self.first}")
        if not (self.growth > 1 and np.isfinite(self.growth)):
            raise OptLLMError(f"--growth must be above 1, got {self.growth}")
        if not (1 <= self.max_rounds <= 20):
            raise OptLLMError(f"--rounds must be between 1 and 20, got {self.max_rounds}")
        if not (0 < self.val_share < 1):
            raise OptLLMError(f"--val-share must be between 0 and 1, got {self.val_share}")
        if self.pilot != 0 and self.pilot < 10:
            raise OptLLMError(f"the pilot round needs at least 10 prompts (0: none), got {self.pilot}")

    def level(self, confidence: float, round_: int, n: int) -> float:
        """The level round `round_` (1-based) of a batch of n tests at (alpha spending, module
        docstring): weights in proportion to the schedule's sizes."""
        w = np.asarray(self.schedule(n), dtype=float)
        return 1.0 - (1.0 - confidence) * float(w[round_ - 1] / w.sum())

    def first_size(self, n: int) -> int:
        return self.size(n, 1)

    def schedule(self, n: int) -> list[int]:
        """Labels in all after each planned round (the pilot, if any, then R) of a batch of n,
        fixed before any label is seen."""
        k = self.first if self.first is not None else max(MIN_LABELS, int(np.ceil(0.01 * n)))
        # a pilot only where the first regular round is at least twice its size (a pilot of 30
        # before a round of 32 would buy 2 labels with a round's share of the error)
        wanted = self.prune and self.first is None and 0 < self.pilot and 2 * self.pilot <= min(k, n // 2)
        pilot = [self.pilot] if wanted else []
        cap = max(n // 2, 1)
        sizes = [min(k, cap)]
        while len(sizes) < self.max_rounds and sizes[-1] < cap:  # no round planned past the cap
            sizes.append(min(max(int(np.floor(sizes[-1] * self.growth)), sizes[-1] + 1), cap))
        return pilot + sizes

    def rounds(self, n: int) -> int:
        """Rounds planned for a batch of n: R, and the pilot where there is one."""
        return len(self.schedule(n))

    def size(self, n: int, round_: int) -> int:
        """Labels in all after round `round_` (1-based) of a batch of n: the fixed schedule."""
        sizes = self.schedule(n)
        return sizes[min(round_, len(sizes)) - 1]


@dataclass(frozen=True)
class Round:
    """One round: labels so far, what they cost, and what the plan on the rest is."""

    index: int
    n_labelled: int
    label_cost: float  # all rounds so far
    level: float
    certified: bool
    plan_cost: float | None  # the selected plan's estimated cost on the prompts left to plan
    reference_cost: float  # the best single LLM (by labelled accuracy) on those prompts
    labels_needed: int | None
    stop: str | None  # why labelling stopped after this round (None: it went on)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class AdaptiveResult:
    """The rounds, the last round's planning pass, and which rows were labelled (with their
    labels) and which were planned."""

    rounds: tuple[Round, ...]
    planned: Planned
    labelled: np.ndarray  # row indices, in labelling order
    correct: np.ndarray  # [len(labelled), m]
    train_mask: np.ndarray  # per labelled row: trains (True) or validates the predictor
    rest: np.ndarray  # row indices planned (sorted)
    label_cost: float
    stop: str
    active: np.ndarray  # column indices of the models still candidates (the plan's models index these)

    @property
    def certified(self) -> bool:
        return self.stop == "certified"


def label_until_certified(texts: np.ndarray | list[str] | None, cost: np.ndarray, models: tuple[str, ...],
                          goal: Goal, labeller: Labeller, settings: PlanSettings = PlanSettings(),
                          adaptive: AdaptiveSettings = AdaptiveSettings(), *, seed: int = 0,
                          progress: Callable[[str], None] | None = None) -> AdaptiveResult:
    """Run the rounds (module docstring) over a batch of prompts `texts` (None: no texts, the
    predictor falls back to base rates) with planning costs `cost` [N, m]."""
    if goal.target_accuracy is None:
        raise OptLLMError("labelling until certified needs --target-accuracy (a budget has no certificate to reach)")
    say = progress or (lambda s: None)
    cost = np.asarray(cost, dtype=float)
    n = cost.shape[0]
    txt = None if texts is None else np.asarray(texts, dtype=object)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)  # the random order prompts are labelled in
    roles = rng.random(n) >= adaptive.val_share  # True: trains
    holding = adaptive.certify == "holdout"
    # holdout (certify only, labelled where the tested plans route) or training, drawn before any label
    hold = (rng.random(n) < adaptive.holdout) if holding else np.zeros(n, dtype=bool)
    have, per_model = 0, 0.0
    spent = [0.0]
    m = len(models)
    Y = np.full((n, m), np.nan)  # labels by row of the batch (NaN: not bought)
    active = np.arange(m)
    totals = cost.sum(axis=0)
    rounds: list[Round] = []
    seen: dict[str, tuple[float, float]] = {}
    want = adaptive.first_size(n)
    stop = "rounds"
    planned: Planned | None = None
    hold_spent = 0.0
    for r in range(1, adaptive.rounds(n) + 1):
        new = order[have:want]
        fit_new = new[~hold[new]]
        say(f"round {r}: label {new.size} prompts")
        if fit_new.size:
            y, c = labeller(fit_new, tuple(models[k] for k in active))
            Y[np.ix_(fit_new, active)] = np.asarray(y, dtype=float)
            spent[0] += float(np.sum(c))
            per_model = float(np.mean(c)) / max(float(totals[active].sum()), 1e-300)  # label cost per prompt per $
        have = want
        lab = order[:have]
        fit, ho = lab[~hold[lab]], lab[hold[lab]]
        rest = np.sort(order[have:])
        level = adaptive.level(goal.confidence, r, n)
        g = Goal(target_accuracy=goal.target_accuracy, confidence=level, safe=goal.safe)
        observe(seen, [models[k] for k in active], Y[np.ix_(fit, active)], cost[np.ix_(rest, active)].sum(axis=0),
                rest.size)
        # plan on every model labelled this round, then prune for the next (as `labelling.until` does)
        say(f"round {r}: plan {rest.size} prompts on {have} labels, {active.size} models")
        before = spent[0]
        holdout = _holdout(ho, Y, txt, cost, active, models, labeller, spent) if holding else None
        planned = _plan(fit, Y[np.ix_(fit, active)], roles[fit], rest, txt, cost[:, active],
                        tuple(models[k] for k in active), g, settings, holdout)
        if holding:
            Y[np.ix_(ho, active)] = planned.held.y  # type: ignore[union-attr]
            hold_spent += spent[0] - before
        sel = planned.selection
        ref_cost = reference_cost(seen, rest.size)
        plan_cost = None if sel.plan is None else float(sel.plan.cost)
        hope = hope_cost(planned, cost[np.ix_(rest, active)], float(goal.target_accuracy), goal.confidence)
        # pruning reads the training labels only: the holdout's tests stay independent of the models kept
        keep = for_next_round(adaptive, r, n, Y[np.ix_(fit, np.arange(m))], active, totals, goal)
        per_prompt = next_cost_per_prompt(adaptive, per_model * float(totals[keep].sum()), hold_spent, ho.size)
        stop_now, nxt = next_round(adaptive, r, have, n, spent[0], per_prompt, sel, ref_cost, hope)
        certified = stop_now == "certified"
        rounds.append(Round(r, have, spent[0], level, certified, plan_cost, ref_cost, sel.labels_needed, stop_now))
        if stop_now is not None:
            stop = stop_now
            break
        active = keep
        want = nxt
    assert planned is not None
    lab = order[:have]
    return AdaptiveResult(tuple(rounds), planned, lab, Y[lab], roles[lab] & ~hold[lab], np.sort(order[have:]),
                          spent[0], stop, active)


def next_cost_per_prompt(adaptive: AdaptiveSettings, per_training_prompt: float, held_cost: float,
                         n_held: int) -> float:
    """The expected labelling cost of one more prompt: a training prompt's (every model kept),
    or, certifying on a holdout, the mix of that and what a holdout prompt's labels have cost
    so far (`held_cost` over `n_held`). One rule for the simulation and `labelling.until`."""
    if adaptive.certify != "holdout":
        return per_training_prompt
    return (1 - adaptive.holdout) * per_training_prompt + adaptive.holdout * held_cost / max(n_held, 1)


def next_round(adaptive: AdaptiveSettings, r: int, have: int, n: int, spent: float, per_prompt: float, sel: Any,
               ref_cost: float, hope: float) -> tuple[str | None, int]:
    """After round r with `have` of `n` prompts labelled for `spent` (about `per_prompt` for
    each more), and the round's `Selection`: why to stop (a `STOPS` entry) or None, and the
    labels to have after the next round (the fixed schedule, `AdaptiveSettings.size`); the
    next round runs whole or not at all. `ref_cost` / `hope`: the best LLM's estimated cost on
    the prompts left and `hope_cost` (their gap bounds what more labels could save)."""
    if sel.plan is not None and sel.reachable:
        return "certified", have
    if r >= adaptive.rounds(n):
        return ("pool" if have >= n // 2 else "rounds"), have
    nxt = adaptive.size(n, r + 1)
    if n - have <= 8:
        return "pool", have
    more = nxt - have
    if adaptive.label_budget is not None and spent + more * per_prompt > adaptive.label_budget:
        return "label-budget", have
    if more * per_prompt >= ref_cost - hope:
        return "no-gain", have
    return None, nxt


def hope_cost(planned: Planned, cost: np.ndarray, target: float, confidence: float) -> float:
    """The estimated cost on the prompts left (`cost` [n_rest, m], the planned models) of the
    cheapest plan not yet shown below `target`: a front plan or a single LLM whose upper bound
    at `confidence` reaches it (inf when none does). More labels cannot save more than the
    best LLM's cost minus this, at that confidence. (Projecting today's estimates forward
    instead, with the bounds shrinking as labels grow, stopped overruling after 30-240 labels
    on 8 of 8 splits where labelling on certified a plan saving 34-87%: a refitted predictor
    finds a better front than today's estimates promise.)"""
    costs = np.asarray(planned.front.costs, dtype=float)
    upper = planned.bounds.at_confidence(confidence).upper
    if planned.held is not None and planned.held.whole:
        # a holdout labelled only down to the first failure: a cheaper point not observed whole
        # is taken to be no better than the nearest dearer point that was (accuracy falls
        # along the front), not unknown
        obs = planned.bounds.tested
        capped = np.minimum.accumulate(np.where(obs, upper, np.inf)[::-1])[::-1]
        upper = np.where(np.isfinite(capped), capped, upper)
    ok = upper >= target
    best = float(costs[ok].min()) if ok.any() else np.inf
    if planned.held is not None:
        totals = cost.sum(axis=0)
        for k in np.argsort(totals):
            if totals[k] >= best:
                break
            if float(single_bounds(int(k), planned.p, planned.held, confidence).upper[0]) >= target:
                best = float(totals[k])
                break
    return best


def for_next_round(adaptive: AdaptiveSettings, r: int, n: int, Y: np.ndarray, active: np.ndarray,
                   totals: np.ndarray, goal: Goal) -> np.ndarray:
    """The models to label after round r (planned on all of `active`) of a batch of n: `active`
    pruned at the user's confidence (`prune`), or all of it when pruning is off or r is the
    last planned round. One rule for the simulation and `labelling.until`."""
    if adaptive.prune and r < adaptive.rounds(n):
        return prune(Y, active, totals, goal.confidence, goal.target_accuracy)
    return active


def prune(Y: np.ndarray, active: np.ndarray, totals: np.ndarray, level: float,
          target: float | None = None, target_level: float | None = None) -> np.ndarray:
    """The active models still worth labelling, on the labels `Y` so far. Model k goes when
    - some active model j costs no more on the batch and is more accurate on the same labelled
      prompts (dominated), or
    - `target` is given, the cheapest model j* whose labelled accuracy meets it (its one-sided
      Clopper-Pearson bound at `target_level` at or above `target`) costs less than k, and k is not
      shown more accurate than j*: k is dearer than a model already certified on its own and no
      better, so a plan needing k is rarely the cheapest certified;
    "more accurate" is a one-sided paired test at `level` (normal on the per-prompt
    differences, at least 10 pairs); the target bound is at `target_level` (default `level`).
    `label_until_certified` prunes at the user's confidence C and bounds the target at the
    round's level: a wrong drop costs savings, not the certificate's validity, so pruning
    need not be held to the round's small share of the error. Dropped models get no more
    labels and are no longer planned: labelling every model on every prompt is most of its
    cost."""
    from scipy.stats import norm

    z = float(norm.ppf(level))

    def better(j: int, k: int) -> bool:  # j shown more accurate than k
        d = Y[:, j] - Y[:, k]
        d = d[np.isfinite(d)]
        if d.size < 10:
            return False
        return bool(d.mean() - z * float(d.std(ddof=1)) / np.sqrt(d.size) > 0)

    keep = np.array([not any(j != k and totals[j] <= totals[k] and better(j, k) for j in active) for k in active])
    if target is not None and keep.any():
        from optllm.evaluate.uncertainty import clopper_pearson

        obs = np.isfinite(Y[:, active])
        trials = obs.sum(axis=0)
        acc = np.nansum(Y[:, active], axis=0) / np.maximum(trials, 1)
        low = np.atleast_1d(clopper_pearson(acc, np.maximum(trials, 1), target_level or level))
        meets = [a for a in np.flatnonzero(keep) if trials[a] >= 10 and low[a] >= target]
        if meets:
            star = active[min(meets, key=lambda a: totals[active[a]])]
            keep &= np.array([totals[k] <= totals[star] or better(k, star) for k in active])
    return active[keep] if keep.any() else active


def _holdout(ho: np.ndarray, Y: np.ndarray, txt: np.ndarray | None, cost: np.ndarray, active: np.ndarray,
             models: tuple[str, ...], labeller: Labeller, spent: list[float]) -> Any:
    """The holdout rows `ho` over the `active` models, their labels so far from `Y`, more
    bought through `labeller` one model at a time (their cost added to `spent[0]`)."""
    from optllm.planning.holdout import Holdout

    def buy(rows: np.ndarray, k: int) -> np.ndarray:
        y, c = labeller(ho[rows], (models[active[k]],))
        spent[0] += float(np.sum(c))
        return np.asarray(y, dtype=float).reshape(-1)

    inputs = np.zeros((ho.size, 1)) if txt is None else [str(t) for t in txt[ho]]
    return Holdout(inputs, cost[np.ix_(ho, active)], Y[np.ix_(ho, active)], buy)


def _plan(lab: np.ndarray, Y: np.ndarray, trains: np.ndarray, rest: np.ndarray, txt: np.ndarray | None,
          cost: np.ndarray, models: tuple[str, ...], goal: Goal, settings: PlanSettings,
          holdout: Any = None) -> Planned:
    if trains.all() or not trains.any():  # both roles must be present
        trains = trains.copy()
        trains[0], trains[-1] = True, False

    def part(mask: np.ndarray) -> Outcomes:
        rows = lab[mask]
        return Outcomes(query_ids=rows, models=models, correct=Y[mask], cost=cost[rows],
                        texts=None if txt is None else txt[rows], name="labelled")

    inputs = np.zeros((rest.size, 1)) if txt is None else [str(t) for t in txt[rest]]
    return plan_queries(part(trains), part(~trains), inputs, cost[rest], goal, settings, holdout=holdout)


def reference_cost(seen: dict[str, tuple[float, float]], n_rest: int) -> float:
    """The estimated cost on `n_rest` prompts of the LLM most accurate on its labels (the
    dearer one on a tie), among every model labelled so far, pruned ones included: what a user
    without a router (and a declined target) would pay. `seen`: model -> (accuracy on its
    labels, estimated cost per prompt), as of the last round it was labelled in."""
    top = max(a for a, _ in seen.values())
    return n_rest * max(c for a, c in seen.values() if a >= top - 1e-12)


def observe(seen: dict[str, tuple[float, float]], models: tuple[str, ...] | list[str], Y: np.ndarray,
            totals: np.ndarray, n_rest: int) -> None:
    """Record each labelled model's accuracy on its labels (`Y`, NaN: not labelled) and its
    estimated cost per prompt (`totals` on the `n_rest` prompts left) for `reference_cost`."""
    for k, name in enumerate(models):
        seen[name] = (float(np.nanmean(Y[:, k])), float(totals[k]) / max(n_rest, 1))
