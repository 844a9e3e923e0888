"""`optllm plan --label-budget`: label a user's prompts in rounds until the target is certified.

The same rounds as `planning.adaptive` (sizes, alpha spending, pruning, stops, the holdout
draw: one rule, `next_round`, `for_next_round` and `next_cost_per_prompt`), with real labels:
each round sends the new prompts to every model still a candidate through `label` (so the
labelling budget is also the dispatcher's hard spend cap, and a re-run resumes without
sending anything twice), then plans every unlabelled prompt with `build_plan`, as
`optllm plan --labels` would, at the round's level. With `--certify holdout` a share of the
new prompts is a holdout instead: `build_plan` buys their labels through `label` one
(prompt, model) pair at a time where the tested plans route them (`planning.holdout`); the
labels file holds both parts, and a holdout prompt never trains the predictor.
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
from optllm.planning.adaptive import (AdaptiveSettings, Round, for_next_round, hope_cost, next_cost_per_prompt,
                                      next_round, observe, reference_cost)
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

    certify: str = AdaptiveSettings.certify
    holdout: float | None = None  # the holdout share (None: cross-fit)

    def as_dict(self) -> dict[str, Any]:
        return {"stop": self.stop, "certify": self.certify, "holdout": self.holdout,
                "rounds": [r.as_dict() for r in self.rounds], "labels": self.labels.as_dict()}


def plan_with_labelling(ids: Sequence[str], prompts: Sequence[str], references: Mapping[str, str] | None,
                        catalogue: Catalogue, scorer: Scorer, goal: Goal, labels_out: str | Path, *,
                        settings: PlanSettings = PlanSettings(), adaptive: AdaptiveSettings = AdaptiveSettings(),
                        val_share: float = 0.5, seed: int = 0, progress: Callable[[str], None] | None = None,
                        tier: str = "online", **label_kw: Any) -> LabelledPlan:
    """Label in rounds and plan (module docstring); labels are bought online, the plan is
    priced at `tier` (see `build_plan`); `label_kw` go to `label` (work folder, concurrency,
    rubric, console, environ ...)."""
    if goal.target_accuracy is None:
        raise OptLLMError("--label-budget labels until a target is certified: give --target-accuracy")
    say = progress or (lambda s: None)
    ids = [str(i) for i in ids]
    n = len(ids)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    holding = adaptive.certify == "holdout"
    hold = (rng.random(n) < adaptive.holdout) if holding else np.zeros(n, dtype=bool)
    active = list(catalogue.names)
    want = adaptive.first_size(n)
    rounds: list[Round] = []
    seen: dict[str, tuple[float, float]] = {}
    have, stop = 0, "rounds"
    res: Plan | None = None
    box = _Labels(ids, prompts, order, references, catalogue, scorer, labels_out, adaptive.label_budget, label_kw)
    for r in range(1, adaptive.rounds(n) + 1):
        rows = order[:want]  # sent in the random order: what a cap cuts off is a random part
        fit, ho = rows[~hold[rows]], rows[hold[rows]]
        say(f"round {r}: label {want - have} new prompts with {len(active)} models"
            + (f" ({int(hold[order[have:want]].sum())} of them a holdout, labelled where plans route)" if holding else ""))
        box.train = [(ids[i], m) for i in fit for m in active]
        box.held = {pm for pm in box.held if pm[1] in active}
        rep = box.send()
        if rep.missing and not rep.labelled:
            raise OptLLMError(f"no prompt could be labelled ({rep.stopped or 'every call failed'})")
        have = want
        # a pair the cap or a failure left without a label leaves its prompt unlabelled: planned
        labelled = box.training({ids[i] for i in fit})
        level = adaptive.level(goal.confidence, r, n)
        g = Goal(target_accuracy=goal.target_accuracy, confidence=level, safe=goal.safe)
        say(f"round {r}: plan {n - have} prompts at level {level:.3f}")
        holdout = None
        if holding:
            from optllm.planning.holdout import HoldoutPrompts

            holdout = HoldoutPrompts(tuple(ids[i] for i in ho), tuple(prompts[i] for i in ho), box.known(), box.buy)
        res = build_plan(ids, prompts, catalogue.select(active), labelled, g, settings, val_share=val_share,
                         labels_source=str(labels_out), progress=None, tier=tier, holdout=holdout)
        rep = box.report
        totals = res.costs.mean.sum(axis=0)
        Y = _labels_matrix(labelled, res.models)
        fit_cost, held_cost = box.costs({ids[i] for i in fit})
        # what this round's labels cost (the pairs in the file), not the journals' total: a
        # re-run that resumes reports and decides each round as the first run did
        spent = fit_cost + held_cost
        per_model = fit_cost / max(labelled.n, 1) / max(float(totals.sum()), 1e-300)
        keep = for_next_round(adaptive, r, n, Y, np.arange(len(res.models)), totals, goal)
        sel = res.selection
        observe(seen, res.models, Y, totals, n - have)
        ref_cost = reference_cost(seen, n - have)
        per_prompt = next_cost_per_prompt(adaptive, per_model * float(totals[keep].sum()), held_cost, ho.size)
        hope = hope_cost(res.planned, res.costs.mean, float(goal.target_accuracy), goal.confidence)
        stop_now, nxt = next_round(adaptive, r, have, n, spent, per_prompt, sel, ref_cost, hope)
        if (rep.missing or rep.stopped) and stop_now != "certified":
            stop_now = "label-budget" if rep.stopped else "label-failures"
        rounds.append(Round(r, have, spent, level, stop_now == "certified",
                            None if sel.plan is None else float(sel.plan.cost), ref_cost, sel.labels_needed, stop_now))
        if stop_now is not None:
            stop = stop_now
            break
        active = [res.models[k] for k in keep]
        want = nxt
    assert res is not None
    return LabelledPlan(res, tuple(rounds), stop, box.report, adaptive.certify,
                        adaptive.holdout if holding else None)


class _Labels:
    """The labels file as the rounds grow it: the training pairs (every candidate model on
    each training prompt) and the holdout pairs bought so far, all sent by one `label` call
    (resumed: a pair answered before is never sent again), so the file always holds both."""

    def __init__(self, ids: list[str], prompts: Sequence[str], order: np.ndarray,
                 references: Mapping[str, str] | None, catalogue: Catalogue, scorer: Scorer, out: str | Path,
                 cap: float | None, label_kw: dict[str, Any]) -> None:
        self.ids, self.prompts, self.references = ids, list(prompts), references
        self.catalogue, self.scorer, self.out, self.cap, self.label_kw = catalogue, scorer, out, cap, label_kw
        self.position = {q: i for i, q in enumerate(ids)}
        self.rank = {ids[i]: r for r, i in enumerate(order)}  # prompts are sent in the labelling order
        self.train: list[tuple[str, str]] = []
        self.held: set[tuple[str, str]] = set()
        self.report: LabelReport | None = None  # type: ignore[assignment]
        self._df: Any = None

    def send(self) -> LabelReport:
        pairs = list(dict.fromkeys(self.train + sorted(self.held)))
        qs = sorted({q for q, _ in pairs}, key=self.rank.__getitem__)
        models = [m for m in self.catalogue.names if any(pm[1] == m for pm in pairs)]
        self.report = label(qs, [self.prompts[self.position[q]] for q in qs], self.references, self.catalogue,
                            self.scorer, self.out, models=models, max_spend=self.cap, pairs=pairs, **self.label_kw)
        self._df = None
        return self.report

    @property
    def frame(self) -> Any:
        if self._df is None:
            from optllm.data.wide import read_long_table

            self._df = read_long_table(self.out)
            self._df["query_id"] = self._df["query_id"].astype(str)
        return self._df

    def training(self, fit_ids: set[str]) -> Any:
        """The training prompts' labels (a prompt missing a model's label is left out)."""
        from optllm.data import load_long

        df = self.frame[self.frame["query_id"].isin(fit_ids)]
        return load_long(self.out, df=df.reset_index(drop=True), require_cost=False, on_missing="drop", binary=True)

    def known(self) -> dict[tuple[str, str], float]:
        df = self.frame
        return {(q, m): float(c) for q, m, c in zip(df["query_id"], df["model"].astype(str), df["correct"])}

    def buy(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], float]:
        """Label these holdout pairs (with every pair so far) and return what they scored."""
        self.held.update(pairs)
        self.send()
        known = self.known()
        return {pm: known[pm] for pm in pairs if pm in known}

    def costs(self, fit_ids: set[str]) -> tuple[float, float]:
        """What the training pairs and the holdout pairs in the file cost (calls and judge)."""
        df = self.frame
        c = df["cost"].astype(float).fillna(0.0) + df["judge_cost"].astype(float).fillna(0.0)
        on_fit = df["query_id"].isin(fit_ids).to_numpy()
        return float(c[on_fit].sum()), float(c[~on_fit].sum())


def _labels_matrix(labelled: Any, models: Sequence[str]) -> np.ndarray:
    col = [list(labelled.models).index(m) for m in models]
    return np.asarray(labelled.correct, dtype=float)[:, col]
