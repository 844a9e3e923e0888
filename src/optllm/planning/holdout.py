"""Certifying on a holdout labelled only where the tested plans route (`--certify holdout`).

The cross-fitted bound (`planning.core.cross_fit`) needs every candidate model's label on
every labelled prompt: each labelled prompt trains some folds and is routed by the others.
Labelling every model is most of what labels cost (on a 12-model batch, several times the
best model's own call per prompt). A plan's accuracy, though, is a mean over the prompts of
ONE label each: that of the model the plan sends the prompt to. So here the labelled prompts
are split, at random and before any label is seen, into

- a training part, labelled by every candidate model, which fits the predictor; and
- a holdout, never trained on: the fitted predictor routes it by each tested plan's own rule
  (the exact front's slope λ, `uncertainty.labelled_points`) and only the (prompt, model)
  pairs some tested plan routes to are labelled.

The holdout is a uniform sample of the batch independent of the fitted plans, so a plan's
answers on it are a binomial sample of its accuracy on the prompts it plans (the `labelled`
estimator's exact bound, with no fold-versus-final-predictor gap). The tests are the target
rule's own (`selection.select`): the front from its most accurate point down and the single
LLMs and mixes from the most accurate down, each stopped at its first failure (fixed-sequence
testing) at half the error each. Labels are bought lazily, in the sequences' order: a point is
tested only once every holdout prompt has the label of the model its rule picks, and labels
for the next points are bought only while every point before them passed, so what is bought
never changes which test comes next and the procedure is the fixed-sequence test itself.
A single LLM (or a mix) is tested once its models are labelled on the whole holdout; its
sequence stops before the first one that costs at least the front's certified plan (which the
rule would choose over it). Each sequence is a fixed-sequence test, possibly stopped early, at
half the error, so the plan chosen (the cheaper of the two) misses its target with
probability at most 1 − C, whatever the front's result made the singles' sequence stop at.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from optllm.errors import OptLLMError
from optllm.evaluate.uncertainty import HeldOut, bounds_along, labelled_points, seen_whole, single_bounds
from optllm.optimize.types import FrontLike

# label(rows, model column) -> 0/1 labels of those holdout rows for that model (the caller counts the cost)
CellLabeller = Callable[[np.ndarray, int], np.ndarray]
CHUNK = 0.1  # labels bought for the front at a time, as a share of the holdout (at least MIN_CELLS)
MIN_CELLS = 10


@dataclass(frozen=True)
class Holdout:
    """Labelled prompts kept out of training: their inputs (texts or features), costs
    [h, m] on the plan's footing, the labels so far (NaN: not bought), which models may
    answer each (`feasible`, None: all) and how to buy more (`label`)."""

    inputs: Any
    cost: np.ndarray
    y: np.ndarray
    label: CellLabeller
    feasible: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.cost.shape != self.y.shape or self.cost.ndim != 2:
            raise OptLLMError(f"holdout costs and labels must share one (h, m) shape, got {self.cost.shape}, "
                              f"{self.y.shape}")


def certify_on_holdout(front: FrontLike, p: np.ndarray, cost: np.ndarray, target: float, confidence: float,
                       p_hold: np.ndarray, hold: Holdout, usable: np.ndarray) -> HeldOut:
    """The holdout as a `HeldOut` sample (predictions `p_hold` of the final predictor, the
    labels bought) with every label the target rule's two sequences need at `confidence`
    (module docstring) for `front`, built on predictions `p` [n, m] with costs `cost`."""
    from optllm.selection.engine import target_level

    y = np.array(hold.y, dtype=float, copy=True)
    asked = ~np.isnan(y)  # a label the labeller could not buy stays NaN and is not asked for again
    h = y.shape[0]
    singles = bool(np.asarray(usable).any()) and h >= 2
    level = target_level(confidence, singles)
    step = max(MIN_CELLS, int(np.ceil(CHUNK * h)))
    while True:
        held = HeldOut(np.asarray(p_hold, dtype=float), y.copy(), np.asarray(hold.cost, dtype=float), "labelled",
                       None, rule_variance=False, whole=True)
        if h < 2:
            return held
        need, pick_cost = _front_cells(front, p, cost, held, target, level, step)
        need &= ~asked  # the front's sequence stops at a point whose labels could not be bought
        if singles and not need.any():
            need = _single_cells(p, cost, held, target, level, usable, pick_cost) & ~asked
        if not need.any():
            return held
        asked |= need
        for k in np.flatnonzero(need.any(axis=0)):
            rows = np.flatnonzero(need[:, k])
            got = np.asarray(hold.label(rows, int(k)), dtype=float)
            if got.shape != rows.shape:
                raise OptLLMError(f"holdout labeller returned {got.shape[0] if got.ndim else 0} labels for "
                                  f"{rows.size} prompts")
            y[rows, k] = got


def _front_cells(front: FrontLike, p: np.ndarray, cost: np.ndarray, held: HeldOut, target: float, level: float,
                 step: int) -> tuple[np.ndarray, float]:
    """([h, m] the holdout labels to buy next for the front's sequence, the cost of the plan
    it certifies if it stops now: inf for none). No labels when the sequence already meets a
    tested failure (or passes every point); else those of the first point not observed whole
    and of the cheaper points after it, `step` new labels at least."""
    rect = held.rectifier
    t = labelled_points(front, p, cost, held)
    seen = seen_whole(held, t)
    lower = bounds_along(front, p, cost, held, level, band=False).lower
    bad = ~seen | (lower < target)
    costs = np.asarray(front.costs, dtype=float)
    none = np.zeros(held.y.shape, dtype=bool)
    if not bad.any():
        return none, float(costs[0])
    k = int(np.flatnonzero(bad)[-1])  # the first point from the most accurate down that is not a pass
    pick = float(costs[k + 1]) if k + 1 < costs.size else np.inf  # what the sequence certifies if it stops here
    if seen[k]:
        return none, pick
    hf = rect.front
    top = int(t[k])
    a = hf.assignment(top)
    rows = np.arange(held.n)
    missing = np.isnan(held.y)
    need = np.zeros(held.y.shape, dtype=bool)
    need[rows, a] = missing[rows, a]
    # the cheaper points undo moves top-1, top-2, ...: each sends its query back to `move_from`
    q, fr = np.asarray(hf.move_query[:top]), np.asarray(hf.move_from[:top])
    new = missing[q, fr]
    have = int(need.sum())
    if have < step and new.any():
        cum = np.cumsum(new[::-1])
        stop = int(np.searchsorted(cum, step - have)) + 1  # moves to undo, from the top down
        sel = slice(top - min(stop, top), top)
        need[q[sel][new[sel]], fr[sel][new[sel]]] = True
    return need & missing, pick


def _single_cells(p: np.ndarray, cost: np.ndarray, held: HeldOut, target: float, level: float,
                  usable: np.ndarray, pick_cost: float = np.inf) -> np.ndarray:
    """[h, m] the holdout labels to buy next for the single LLMs' sequence: a model's labels
    on the whole holdout, for the first single LLM or mix reached that uses it. The sequence
    stops before the first single or mix that costs at least `pick_cost` (the front's
    certified plan): the target rule would not choose it, and stopping a fixed sequence early
    only certifies less."""
    from optllm.selection.engine import single_path

    missing = np.isnan(held.y)
    need = np.zeros(held.y.shape, dtype=bool)
    totals = cost.sum(axis=0)
    for ref in single_path(p, cost, usable):
        if float(totals @ ref.weights(p.shape[1])) >= pick_cost - 1e-12:
            break
        gap = [k for k in {ref.lo, ref.hi} if missing[:, k].any()]
        if gap:
            need[:, gap] = missing[:, gap]
            return need
        if float(single_bounds(ref.weights(p.shape[1]), p, held, level).lower[0]) < target:
            break
    return need


# (query id, model) pairs -> their 0/1 labels (a pair the labeller could not buy is left out)
PairLabeller = Callable[[list[tuple[str, str]]], dict[tuple[str, str], float]]


@dataclass(frozen=True)
class HoldoutPrompts:
    """The holdout on `optllm plan`'s path, by prompt id: ids and texts, the labels already
    bought ((id, model) -> 0/1) and how to buy more (`buy`). `build_plan` prices them as it
    prices the prompts it plans and turns them into a `Holdout`."""

    ids: tuple[str, ...]
    texts: tuple[str, ...]
    known: dict[tuple[str, str], float]
    buy: PairLabeller

    def holdout(self, models: tuple[str, ...], cost: np.ndarray, feasible: np.ndarray) -> Holdout:
        """As a `Holdout` over `models`, with costs `cost` [h, m] (infeasible pairs dominated)
        and `feasible` [h, m]: an infeasible pair is never bought."""
        y = np.full((len(self.ids), len(models)), np.nan)
        col = {m: k for k, m in enumerate(models)}
        row = {q: i for i, q in enumerate(self.ids)}
        for (q, m), v in self.known.items():
            if q in row and m in col:
                y[row[q], col[m]] = v

        def label(rows: np.ndarray, k: int) -> np.ndarray:
            ok = rows[feasible[rows, k]]
            got = self.buy([(self.ids[i], models[k]) for i in ok])
            out = np.full(rows.size, np.nan)
            pos = {int(i): j for j, i in enumerate(rows)}
            for i in ok:
                v = got.get((self.ids[i], models[k]))
                if v is not None:
                    out[pos[int(i)]] = v
            return out

        return Holdout(list(self.texts), cost, y, label, feasible)
