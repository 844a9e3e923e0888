"""The label-budget curve (`optllm label-budget`): what labels buy, gross and net of their cost.

On a dataset with ground truth, for each split (a seeded random labelling order) and target
(a share of the best single LLM's realised accuracy on the whole dataset), two ways to label:

- `fixed F`: label a random 2F of the prompts in one round (the paper's F train + F
  validation), plan the rest at confidence C;
- `adaptive`: `planning.adaptive.label_until_certified` with its defaults (rounds from 1%,
  alpha spent over the rounds), its labels revealed from the dataset round by round.

Per run: labels used and their cost (every model on every labelled prompt, at the dataset's
costs), whether a plan was certified, its realised accuracy on the prompts planned (promise
kept: declined, or met) and its realised cost. Savings are against sending every prompt to
the best single LLM (by realised accuracy) with no labels at all:
- gross = 1 − plan cost / best LLM's cost on the planned prompts (0 when declined);
- net = 1 − (labelling cost + plan cost) / best LLM's cost on every prompt; a declined target
  falls back to the best LLM on the planned prompts, so its net saving is minus the labels' cost.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from optllm.data import Outcomes
from optllm.errors import OptLLMError
from optllm.planning.adaptive import AdaptiveSettings, label_until_certified
from optllm.planning.core import PlanSettings
from optllm.selection import Goal


@dataclass(frozen=True)
class LabelBudgetConfig:
    splits: int = 10
    fractions: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1)
    shares: tuple[float, ...] = (0.97, 0.99, 1.0)
    confidence: float = 0.9
    max_rounds: int = AdaptiveSettings.max_rounds
    predictor: str = "default"
    folds: int = 5
    seed: int = 0
    certify: str = AdaptiveSettings.certify
    holdout: float = AdaptiveSettings.holdout

    def __post_init__(self) -> None:
        from optllm.evaluate.coverage import check_splits

        self.adaptive()  # --certify and --holdout checked once
        check_splits(self.splits, self.fractions)
        if not self.shares or any(not (0 < s <= 1.2) for s in self.shares):
            raise OptLLMError(f"--targets must be shares of the best LLM's accuracy in (0, 1.2], got {list(self.shares)}")
        if not (0.5 <= self.confidence < 1):
            raise OptLLMError(f"--confidence must be in [0.5, 1), got {self.confidence}")
        PlanSettings(predictor=self.predictor, folds=self.folds, seed=self.seed)

    def adaptive(self) -> AdaptiveSettings:
        """The adaptive rule's settings (`plan --label-budget`'s, with these rounds and certification)."""
        return AdaptiveSettings(max_rounds=self.max_rounds, certify=self.certify, holdout=self.holdout)

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(f"fixed {f:g}" for f in self.fractions) + ("adaptive",)


@dataclass(frozen=True)
class RunRecord:
    dataset: str
    method: str
    share: float
    rep: int
    target: float
    labels: int
    rounds: int
    label_cost: float
    certified: bool
    realised: float | None
    met: bool | None
    plan_cost: float | None
    gross_saving: float
    net_saving: float
    stop: str
    seconds: float


def run_one(data: Outcomes, name: str, method: str, share: float, rep: int, cfg: LabelBudgetConfig) -> RunRecord:
    """One dataset x method x target x split."""
    t0 = time.perf_counter()
    best = int(np.argmax(data.correct.mean(axis=0)))
    target = share * float(data.correct[:, best].mean())
    goal = Goal(target_accuracy=target, confidence=cfg.confidence)
    settings = PlanSettings(predictor=cfg.predictor, folds=cfg.folds, seed=cfg.seed + rep)
    n = data.n
    if method == "adaptive":
        ad = cfg.adaptive()
    else:
        f = float(method.split()[1])
        ad = AdaptiveSettings(first=max(int(round(2 * f * n)), 4), max_rounds=1)

    col = {mdl: k for k, mdl in enumerate(data.models)}

    def reveal(rows: np.ndarray, models: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        ks = [col[mdl] for mdl in models]
        return data.correct[np.ix_(rows, ks)], data.cost[np.ix_(rows, ks)].sum(axis=1)

    res = label_until_certified(data.texts, data.cost, data.models, goal, reveal, settings, ad, seed=cfg.seed + rep)
    rest = res.rest
    best_rest = float(data.cost[rest, best].sum())
    best_all = float(data.cost[:, best].sum())
    sel = res.planned.selection
    if res.certified and sel.plan is not None:
        a = res.active[np.asarray(sel.plan.models)]
        realised = float(data.correct[rest, a].mean())
        plan_cost = float(data.cost[rest, a].sum())
        gross = 1.0 - plan_cost / best_rest
        net = 1.0 - (res.label_cost + plan_cost) / best_all
        met: bool | None = realised >= target - 1e-12
    else:
        realised, plan_cost, met, gross = None, None, None, 0.0
        net = 1.0 - (res.label_cost + best_rest) / best_all
    return RunRecord(name, method, share, rep, target, int(res.labelled.size), len(res.rounds), res.label_cost,
                     res.certified, realised, met, plan_cost, gross, net, res.stop, time.perf_counter() - t0)


@dataclass(frozen=True)
class CurveCell:
    """One dataset x method x target over the splits."""

    dataset: str
    method: str
    share: float
    splits: int
    labels: float  # mean labels used
    label_cost_share: float  # mean labelling cost / best LLM's cost on every prompt
    certified: float  # share of splits with a certified plan
    kept: float  # promise kept (declined, or met)
    gross: float  # mean gross saving (0 when declined)
    net: float  # mean net saving
    net_positive: float  # share of splits certified with a positive net saving


def aggregate(records: list[RunRecord], data_cost: dict[str, float]) -> list[CurveCell]:
    cells: list[CurveCell] = []
    keys = sorted({(r.dataset, r.method, r.share) for r in records},
                  key=lambda k: (k[0], k[1] != "adaptive", k[1], k[2]))
    for d, m, s in keys:
        rs = [r for r in records if (r.dataset, r.method, r.share) == (d, m, s)]
        cells.append(CurveCell(d, m, s, len(rs), float(np.mean([r.labels for r in rs])),
                               float(np.mean([r.label_cost for r in rs])) / data_cost[d],
                               float(np.mean([r.certified for r in rs])),
                               float(np.mean([r.met is not False for r in rs])),
                               float(np.mean([r.gross_saving for r in rs])), float(np.mean([r.net_saving for r in rs])),
                               float(np.mean([r.certified and r.net_saving > 0 for r in rs]))))
    return cells


def run_label_budget(datasets: dict[str, Outcomes], cfg: LabelBudgetConfig,
                     progress: Callable[[str], None] | None = None) -> Iterator[RunRecord]:
    """Every dataset x split x target x method (the adaptive one first), one record each."""
    for name, data in datasets.items():
        for rep in range(cfg.splits):
            for share in cfg.shares:
                for method in ("adaptive", *cfg.methods[:-1]):
                    if progress is not None:
                        progress(f"{name} split {rep} target {share:g} {method}")
                    yield run_one(data, name, method, share, rep, cfg)


def best_cost(data: Outcomes) -> float:
    best = int(np.argmax(data.correct.mean(axis=0)))
    return float(data.cost[:, best].sum())


def report(records: list[RunRecord], datasets: dict[str, Outcomes], cfg: LabelBudgetConfig) -> dict[str, Any]:
    cells = aggregate(records, {k: best_cost(v) for k, v in datasets.items()})
    return {"config": asdict(cfg), "cells": [asdict(c) for c in cells], "runs": [asdict(r) for r in records]}


def table_md(rep: dict[str, Any], command: str) -> str:
    lines = ["# optllm label-budget", "", f"`{command}`", "",
             f"Targets: shares of the best single LLM's realised accuracy; confidence "
             f"{rep['config']['confidence']:.0%}. Savings against the best LLM on every prompt with no labels; "
             "net counts the labelling cost (every model on every labelled prompt"
             + (f"; the adaptive rule certifies on a holdout of {rep['config']['holdout']:.0%} of its labelled "
                "prompts, labelled only where the tested plans route" if rep["config"].get("certify") == "holdout"
                else "") + ").", "",
             "| dataset | method | target | splits | labels | label cost | certified | kept | gross saving | "
             "net saving | net > 0 and certified |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in rep["cells"]:
        lines.append(f"| {c['dataset']} | {c['method']} | {c['share']:.0%} | {c['splits']} | {c['labels']:.0f} | "
                     f"{c['label_cost_share']:.1%} | {c['certified']:.0%} | {c['kept']:.0%} | {c['gross']:.1%} | "
                     f"{c['net']:.1%} | {c['net_positive']:.0%} |")
    return "\n".join(lines) + "\n"


def plot(rep: dict[str, Any], path: Any) -> None:
    """Net saving against labels bought, per dataset and target: the fixed fractions as a
    curve, the adaptive rule as a point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = rep["cells"]
    names = sorted({c["dataset"] for c in cells})
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4), squeeze=False)
    for ax, d in zip(axes[0], names):
        for s in sorted({c["share"] for c in cells}):
            fixed = sorted((c for c in cells if c["dataset"] == d and c["share"] == s and c["method"] != "adaptive"),
                           key=lambda c: c["labels"])
            line, = ax.plot([c["labels"] for c in fixed], [c["net"] for c in fixed], marker="o",
                            label=f"fixed, {s:.0%} of best")
            for c in cells:
                if c["dataset"] == d and c["share"] == s and c["method"] == "adaptive":
                    ax.scatter([c["labels"]], [c["net"]], marker="*", s=160, color=line.get_color(),
                               label=f"adaptive, {s:.0%}", zorder=3)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(d)
        ax.set_xlabel("labelled prompts")
        ax.set_ylabel("net saving (labels counted)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
