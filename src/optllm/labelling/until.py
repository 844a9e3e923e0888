"""`optllm plan --label-budget`: label a user's prompts in rounds until the target is certified.

The same rounds as `planning.adaptive` (sizes, alpha spending, pruning, stops: one rule,
`next_round` and `for_next_round`), with real labels: each round sends the new prompts to every
model still a candidate through `label` (so the labelling budget is also the dispatcher's
hard spend cap, and a re-run resumes without sending anything twice), then plans every
unlabelled prompt with `build_plan`, as `optllm plan --labels` would, at the round's level.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from optllm.cost import Catalogue
from optllm.errors import OptLLMError
from optllm.labelling.label import LabelReport, label
from optllm.labelling.scorers import Scorer
from optllm.planning.adaptive import (AdaptiveSettings, Round, for_next_round, hope_cost, next_round, observe,
                                      reference_cost)
from optllm.planning.core import PlanSettings
from optllm.planning.plan import Plan, build_plan
from optllm.selection import Goal


@dataclass(frozen=True)
class LabelledPlan:
    """The last round's plan, every round, and the last labelling report."""

    plan: Plan
    rounds: tuple[Round, ...]
    stop: str
    labels: LabelReport

    def as_dict(self) -> dict[str, Any]:
        return {"stop": self.stop, "rounds": [r.as_dict() for r in self.rounds], "labels": self.labels.as_dict()}


def plan_with_labelling(ids: Sequence[str], prompts: Sequence[str], references: Mapping[str, str] | None,
                        catalogue: Catalogue, scorer: Scorer, goal: Goal, labels_out: str | Path, *,
                        settings: PlanSettings = PlanSettings(), adaptive: AdaptiveSettings = AdaptiveSettings(),
                        val_share: float = 0.5, seed: int = 0, progress: Callable[[str], None] | None = None,
                        tier: str = "online", **label_kw: Any) -> LabelledPlan:
    """Label in rounds and plan (module docstring); labels are bought online, the plan is
    priced at `tier` (see `build_plan`); `label_kw` go to `label` (work folder, concurrency,
    rubric, console, environ ...)."""
    from optllm.data import load_long

    if goal.target_accuracy is None:
        raise OptLLMError("--label-budget labels until a target is certified: give --target-accuracy")
    say = progress or (lambda s: None)
    ids = [str(i) for i in ids]
    n = len(ids)
    order = np.random.default_rng(seed).permutation(n)
    active = list(catalogue.names)
    want = adaptive.first_size(n)
    rounds: list[Round] = []
    seen: dict[str, tuple[float, float]] = {}
    have, stop = 0, "rounds"
    res: Plan | None = None
    rep: LabelReport | None = None
    per_model = 0.0
    for r in range(1, adaptive.rounds(n) + 1):
        rows = order[:want]  # sent in the random order: what a cap cuts off is a random part
        say(f"round {r}: label {want - have} new prompts with {len(active)} models")
        rep = label([ids[i] for i in rows], [prompts[i] for i in rows], references, catalogue, scorer, labels_out,
                    models=active, max_spend=adaptive.label_budget, **label_kw)
        if rep.missing:
            stop = "label-budget" if rep.stopped else "label-failures"
            if not rep.labelled:
                raise OptLLMError(f"no prompt could be labelled ({rep.stopped or 'every call failed'})")
        spent = rep.spent_total
        have = want
        # a pair the cap or a failure left without a label leaves its prompt unlabelled: planned
        labelled = load_long(labels_out, require_cost=False, on_missing="drop", binary=True)
        level = adaptive.level(goal.confidence, r, n)
        g = Goal(target_accuracy=goal.target_accuracy, confidence=level, safe=goal.safe)
        say(f"round {r}: plan {n - have} prompts at level {level:.3f}")
        res = build_plan(ids, prompts, catalogue.select(active), labelled, g, settings, val_share=val_share,
                         labels_source=str(labels_out), progress=None, tier=tier)
        totals = res.costs.mean.sum(axis=0)
        Y = _labels_matrix(labelled, res.models)
        per_model = (float(np.sum([rep.cost.get(m, 0.0) for m in res.models]) + rep.judge_cost)
                     / max(labelled.n, 1) / max(float(totals.sum()), 1e-300))
        keep = for_next_round(adaptive, r, n, Y, np.arange(len(res.models)), totals, goal)
        sel = res.selection
        observe(seen, res.models, Y, totals, n - have)
        ref_cost = reference_cost(seen, n - have)
        per_prompt = per_model * float(totals[keep].sum())
        hope = hope_cost(res.planned, res.costs.mean, float(goal.target_accuracy), goal.confidence)
        stop_now, nxt = next_round(adaptive, r, have, n, spent, per_prompt, sel, ref_cost, hope)
        if rep.missing and stop_now != "certified":
            stop_now = stop
        rounds.append(Round(r, have, spent, level, stop_now == "certified",
                            None if sel.plan is None else float(sel.plan.cost), ref_cost, sel.labels_needed, stop_now))
        if stop_now is not None:
            stop = stop_now
            break
        active = [res.models[k] for k in keep]
        want = nxt
    assert res is not None and rep is not None
    return LabelledPlan(res, tuple(rounds), stop, rep)


def _labels_matrix(labelled: Any, models: Sequence[str]) -> np.ndarray:
    col = [list(labelled.models).index(m) for m in models]
    return np.asarray(labelled.correct, dtype=float)[:, col]
