"""The main job on a dataset with ground truth: split → `planning.plan_queries` (fit, predict,
front, bounds, select) → evaluate the plan on the true labels.

`run_pipeline` is what `optllm run` and `make demo` call. The labels of the assigned part are
used only to evaluate, never to choose: the plan is the one `optllm plan` would choose from
the same labelled sample, costs, seed and goal.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from optllm.data import Outcomes, Split, split
from optllm.evaluate.indicators import hindsight_saving
from optllm.evaluate.uncertainty import DEFAULT_ESTIMATOR, values_along, values_of
from optllm.optimize.types import FrontLike, thin_indices
from optllm.planning.core import PlanSettings, Planned, Progress, plan_queries
from optllm.predict import inputs_of
from optllm.selection import Goal, Selection


RUN_FILES = ("front.csv", "plan.csv", "summary.json", "front.png")


@dataclass
class RunConfig:
    """Options of one run; defaults follow the paper's protocol (1% train, 1% validation).
    The goal and the planning settings are validated by `Goal` and `PlanSettings`, the same
    classes `optllm plan` uses."""

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
    bound: str = DEFAULT_ESTIMATOR  # how the labelled sample bounds a plan (`planning.core.BOUNDS`)

    def goal(self) -> Goal:
        return Goal(budget=self.budget, target_accuracy=self.target_accuracy, confidence=self.confidence,
                    safe=self.safe)

    def settings(self) -> PlanSettings:
        return PlanSettings(predictor=self.predictor, optimizer=self.optimizer, alpha=self.alpha, folds=self.folds,
                            seed=self.seed, gn=self.gn, generations=self.generations, bound=self.bound)

    def validate(self) -> None:
        """Clear errors for impossible option values (raised by `Goal` and `PlanSettings`)."""
        self.goal()
        self.settings()


@dataclass(frozen=True)
class Realised:
    """How the chosen plan (and the plan not chosen) did on the true labels."""

    accuracy: float
    cost: float
    target_met: bool | None
    alternative_accuracy: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunResult:
    """Everything a run produced; plain arrays, written out by `write_run`. `plan` is None when
    the goal could not be certified."""

    data: Outcomes  # the assigned (test) part
    config: RunConfig
    split: Split
    planned: Planned
    true_acc: np.ndarray  # realised accuracy of each front point
    true_front: FrontLike
    realised: Realised | None
    labelling_cost: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def selection(self) -> Selection:
        return self.planned.selection

    @property
    def front(self) -> FrontLike:
        return self.planned.front

    @property
    def p(self) -> np.ndarray:
        return self.planned.p

    @property
    def extra_cost(self) -> float:
        return self.labelling_cost if self.config.count_labelling_cost else 0.0

    def summary(self) -> dict[str, Any]:
        """The figures `summary.json` holds."""
        d = self.data
        acc, tot = d.model_accuracy(), d.model_total_cost()
        best = d.best_model()
        tf = self.true_front
        return {
            "dataset": d.name,
            "n_assigned": d.n,
            "n_labelled": int(len(self.split.train) + len(self.split.val)),
            "models": list(d.models),
            "config": self.config.__dict__,
            "labelling_cost": self.labelling_cost,
            "labelling_cost_included": self.config.count_labelling_cost,
            "front_points": len(self.front),
            "selection": self.selection.as_dict(),
            "realised": None if self.realised is None else self.realised.as_dict(),
            "timings_s": self.timings,
            "single_models": [{"name": m, "accuracy": float(acc[k]), "total_cost": float(tot[k])}
                              for k, m in enumerate(d.models)],
            "best_model": {"name": d.models[best], "accuracy": float(acc[best]), "total_cost": float(tot[best])},
            "true_front": {"points": len(tf), "min_cost": float(tf.costs[0]), "max_accuracy": float(tf.accuracies[-1])},
            "hindsight": hindsight_saving(self.front.costs, self.true_acc, float(acc[best]), float(tot[best])).as_dict(),
        }


def run_pipeline(data: Outcomes, cfg: RunConfig, progress: Progress | None = None) -> RunResult:
    """The whole job on a dataset with labels (the labels of the test part are used only to
    evaluate, never to choose)."""
    from optllm.planning.core import need_two_models

    goal, settings = cfg.goal(), cfg.settings()
    need_two_models(data.models, str(data.metadata.get("source", data.name)))
    say = progress or (lambda s: None)
    t0 = time.perf_counter()
    sp = split(data, train=cfg.train_frac, val=cfg.val_frac, seed=cfg.seed)
    train, val, test = sp.parts(data)
    labelling = float(train.cost.sum() + val.cost.sum())
    extra = labelling if cfg.count_labelling_cost else 0.0
    planned = plan_queries(train, val, inputs_of(test, stream=True), test.cost, goal, settings, extra_cost=extra,
                           progress=say)
    say("evaluate")
    from optllm.optimize import pareto_front

    true_acc = values_along(planned.front, test.correct)
    true_front = pareto_front(test.correct, test.cost, models=test.models)
    sel = planned.selection
    realised = None
    if sel.plan is not None:
        a = sel.plan.models
        acc = float(values_of(a, test.correct))
        met = bool(acc >= goal.target_accuracy) if goal.target_accuracy is not None else None
        alt = None if sel.alternative_plan is None else float(values_of(sel.alternative_plan.models, test.correct))
        realised = Realised(acc, float(test.cost[np.arange(test.n), a].sum()) + extra, met, alt)
    t = dict(planned.timings, total=time.perf_counter() - t0)
    return RunResult(test, cfg, sp, planned, true_acc, true_front, realised, labelling, t)


def write_run(res: RunResult, out_dir: str) -> dict[str, str]:
    """Write front.csv, plan.csv (when the goal was certified), summary.json and front.png to
    `out_dir`, all-or-nothing (a temporary folder renamed into place)."""
    from pathlib import Path

    import pandas as pd

    from optllm.evaluate.plots import plot_front
    from optllm.io import atomic_dir, write_csv_chunks, write_json, write_with
    from optllm.planning.plan import front_table

    out = Path(out_dir)
    front_df = front_table(res.planned, 5000, res.extra_cost)
    front_df["true_accuracy"] = res.true_acc[front_df["point"].to_numpy()]
    plan = res.selection.plan
    with atomic_dir(out, RUN_FILES) as tmp:
        write_with(tmp / "front.csv", lambda p: front_df.to_csv(p, index=False))
        if plan is not None:
            a, names = plan.models, np.asarray(res.data.models, dtype=object)

            def rows_of(lo: int, hi: int) -> pd.DataFrame:
                r = np.arange(lo, hi)
                return pd.DataFrame({"query_id": res.data.query_ids[lo:hi], "model": names[a[lo:hi]],
                                     "expected_cost": res.data.cost[r, a[lo:hi]], "p": res.p[r, a[lo:hi]]})

            write_csv_chunks(tmp / "plan.csv", res.data.n, rows_of)
        summary = res.summary()
        write_json(tmp / "summary.json", summary)
        d = res.data
        series = {"predicted front": (front_df["cost"].to_numpy(), front_df["predicted_accuracy"].to_numpy()),
                  "realised (true accuracy of the same plans)": (front_df["cost"].to_numpy(),
                                                                  front_df["true_accuracy"].to_numpy())}
        ti = thin_indices(len(res.true_front), 3000)
        series["true front (oracle, hindsight)"] = (np.asarray(res.true_front.costs)[ti],
                                                   np.asarray(res.true_front.accuracies)[ti])
        points = {m: (float(c), float(acc)) for m, c, acc in zip(d.models, d.model_total_cost(), d.model_accuracy())}
        marks = {} if res.realised is None else {"chosen plan": (res.realised.cost, res.realised.accuracy)}
        plot_front(tmp / "front.png", series=series, points=points, marks=marks,
                   title=f"{d.name}: {d.n:,} queries, {summary['n_labelled']} labelled")
    written = {"front": "front.csv", "plan": "plan.csv", "summary": "summary.json", "plot": "front.png"}
    return {key: str(out / name) for key, name in written.items() if plan is not None or key != "plan"}
