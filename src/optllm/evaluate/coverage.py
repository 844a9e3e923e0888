"""`optllm coverage`: how often the printed promises hold, measured over many random splits.

Per dataset, label fraction (train f + validation f, the paper's protocol) and split: fit the
predictor, build the exact front of the rest, cross-fit the labelled sample once, then for
every bound construction (`ESTIMATORS`) and confidence level C:

- pointwise coverage: the share of the front's plans whose realised accuracy is at least
  their lower bound (promised: about C);
- whole-front band: whether every plan stayed above the band (promised: C of the splits);
- target promise: for targets at 90/97/99/100% of the best single LLM's realised accuracy,
  whether a plan was picked (`selection.select`, the rule `run` and `plan` use), whether it
  met the target, and "kept" = declined or met (promised: at least C);
- budget safe rule, at the best LLM's cost and half of it: whether the plan picked realised
  at least the accuracy of the reference it had to beat (the best plan without a predictor);
- honesty of the width: the mean two-sided interval width along the front, and the mean
  certified saving (1 − cost / best LLM's cost of the target plan, 0 where declined), so a
  vacuous bound cannot pass;
- diagnostics of the error itself: at 64 points along the front, (realised − estimate) in
  units of the estimate's standard deviation (mean: bias; sd: whether the spread is right).

Only "ours" is run (no paper baselines), so 50 splits per cell are affordable.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from optllm.data import Outcomes, split
from optllm.errors import OptLLMError
from optllm.evaluate.indicators import single_models
from optllm.evaluate.uncertainty import ESTIMATORS, HeldOut, bounds_along, values_along, values_of
from optllm.optimize.types import thin_indices
from optllm.planning.core import HOLDOUT_BOUND
from optllm.selection import Goal, select

TARGET_SHARES = (0.90, 0.97, 0.99, 1.00)
# bound constructions compared: name -> (estimator, add the rule's variation τ²); the
# "-fixed-rule" ones treat the plan's routing rule as fixed (ppi-fixed-rule: the bound of
# optllm 0.1 to issue 14)
BOUNDS: dict[str, tuple[str, bool]] = {
    **{e: (e, True) for e in ESTIMATORS}, **{f"{e}-fixed-rule": (e, False) for e in ESTIMATORS}}
BUDGET_SHARES = (1.0, 0.5)
# a construction of its own, chosen with --bounds (not in the default set, so campaigns
# checkpointed before it resume): `--bound holdout` (`planning.core.validation_holdout`), the
# predictor fitted on the training labels alone, the plans bounded by their answers on the
# validation labels
# and the cross-fold construction: the planned queries are predicted by the fold predictors of
# the cross-fit (each by the predictor of a fold drawn for it, `CrossFitted.predict_by_fold`),
# so a labelled and a planned query of one fold are routed by one predictor that saw neither;
# the labelled estimator then needs no τ² (the rule's variation across folds is on both sides)
CROSSFOLD_BOUND = "crossfold"
# "-own-features": the cross-fit's fold predictors each fit their own featuriser on their own
# training texts (the default cross-fit fits one on every labelled text)
OWN = "-own-features"
CHOICES = (*BOUNDS, HOLDOUT_BOUND, CROSSFOLD_BOUND, "labelled" + OWN, CROSSFOLD_BOUND + OWN)


def check_splits(splits: int, fractions: tuple[float, ...]) -> None:
    """The options every campaign over splits and label fractions shares."""
    if splits < 1:
        raise OptLLMError(f"--splits must be at least 1, got {splits}")
    if not fractions or any(not 0 < f < 0.5 for f in fractions):
        raise OptLLMError(f"--fractions must lie in (0, 0.5) (train and validation each), got {list(fractions)}")


@dataclass(frozen=True)
class CoverageConfig:
    """What `optllm coverage` measures; validated once."""

    splits: int = 50
    fractions: tuple[float, ...] = (0.01, 0.02, 0.05, 0.10)
    confidences: tuple[float, ...] = (0.8, 0.9, 0.95)
    targets: tuple[float, ...] = TARGET_SHARES
    estimators: tuple[str, ...] = tuple(BOUNDS)
    predictor: str = "default"
    folds: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        check_splits(self.splits, self.fractions)
        if not self.confidences or any(not 0.5 <= c < 1 for c in self.confidences):
            raise OptLLMError(f"--confidences must lie in [0.5, 1), got {self.confidences}")
        if not self.targets or any(not 0 < t <= 1 for t in self.targets):
            raise OptLLMError(f"--targets are shares of the best LLM's accuracy in (0, 1], got {self.targets}")
        bad = [e for e in self.estimators if e not in CHOICES]
        if bad or not self.estimators:
            raise OptLLMError(f"--bounds: unknown {', '.join(bad) or '(none given)'}; choose from {', '.join(CHOICES)}")
        if self.folds < 2:
            raise OptLLMError(f"--folds must be at least 2 (the bounds are cross-fitted), got {self.folds}")
        if self.seed < 0:
            raise OptLLMError(f"--seed must be a non-negative integer, got {self.seed}")


@dataclass(frozen=True)
class CellRecord:
    """One split, one bound construction, one confidence: what held."""

    points: float  # share of front plans at or above their pointwise bound
    band: bool  # every plan at or above the band
    width: float  # mean two-sided interval width along the front
    targets: dict[str, dict[str, Any]]  # share label -> picked, met, cost, saving, rule
    budgets: dict[str, dict[str, Any]]  # share label -> realised, reference realised, no_worse


@dataclass(frozen=True)
class SplitRecord:
    """Everything measured on one split of one dataset at one label fraction."""

    dataset: str
    fraction: float
    split: int
    n_labelled: int
    n_assigned: int
    best_accuracy: float
    cells: dict[str, dict[str, CellRecord]]  # estimator -> confidence (as "0.9") -> record
    diagnostics: dict[str, dict[str, float]]  # estimator -> z-score mean / sd, bias
    seconds: float


def _share_label(x: float) -> str:
    return f"{round(x * 100):d}"


def coverage_split(data: Outcomes, name: str, fraction: float, rep: int, cfg: CoverageConfig) -> SplitRecord:
    """Measure one split (see the module docstring)."""
    from optllm.optimize import pareto_front
    from optllm.planning.core import cross_fit_models
    from optllm.predict import fit_predict, inputs_of

    t0 = time.perf_counter()
    seed = cfg.seed + rep
    train, val, test = split(data, train=fraction, val=fraction, seed=seed).parts(data)
    if any(e.removesuffix(OWN) in BOUNDS for e in cfg.estimators):  # the holdout and cross-fold ones predict on their own
        mean, _ = fit_predict(cfg.predictor, train, val, test, seed)
        front = pareto_front(mean, test.cost, models=test.models)
    fits: dict[bool, Any] = {}
    for own in sorted({e.endswith(OWN) for e in cfg.estimators if e != HOLDOUT_BOUND}):
        fits[own] = cross_fit_models(cfg.predictor, train, val, cfg.folds, seed, own_features=own)
        if fits[own] is None:
            raise OptLLMError(f"{name}: {train.n + val.n} labelled queries at fraction {fraction} are too few to "
                              "cross-fit")
    truth = test.correct
    singles = single_models(truth, test.cost)
    best_acc = float(truth.mean(axis=0)[singles.best])
    best_cost = float(test.cost.sum(axis=0)[singles.best])
    cells: dict[str, dict[str, CellRecord]] = {}
    diagnostics: dict[str, dict[str, float]] = {}
    for est in cfg.estimators:
        if est == HOLDOUT_BOUND:
            f_h, mean_h, held = _holdout_construction(cfg.predictor, train, val, test, seed)
            cells[est], diagnostics[est] = _construction(f_h, mean_h, held, test, cfg, best_acc, best_cost, seed)
            continue
        crossfit = fits[est.endswith(OWN)]
        if est.removesuffix(OWN) == CROSSFOLD_BOUND:
            mean_c = crossfit.predict_by_fold(inputs_of(test), seed)
            f_c = pareto_front(mean_c, test.cost, models=test.models)
            held = replace(crossfit.held, estimator="labelled", rule_variance=False)
            cells[est], diagnostics[est] = _construction(f_c, mean_c, held, test, cfg, best_acc, best_cost, seed)
            continue
        kind, tau = BOUNDS[est.removesuffix(OWN)]
        held = replace(crossfit.held, estimator=kind, rule_variance=tau)
        cells[est], diagnostics[est] = _construction(front, mean, held, test, cfg, best_acc, best_cost, seed)
    return SplitRecord(name, fraction, rep, train.n + val.n, test.n, best_acc, cells, diagnostics,
                       time.perf_counter() - t0)


def _construction(front: Any, mean: np.ndarray, held: HeldOut, test: Outcomes, cfg: CoverageConfig, best_acc: float,
                  best_cost: float, seed: int) -> tuple[dict[str, CellRecord], dict[str, float]]:
    """One bound construction (the sample `held`) on `front` (built on predictions `mean` of
    `test`): its record per confidence, and the error diagnostics at the first confidence."""
    realised = values_along(front, test.correct)
    diag_idx = thin_indices(len(front), 64)
    out: dict[str, CellRecord] = {}
    diagnostics: dict[str, float] = {}
    for conf in cfg.confidences:
        b = bounds_along(front, mean, test.cost, held, conf, seed=seed)
        if conf == cfg.confidences[0]:
            zs = (realised[diag_idx] - b.estimate[diag_idx]) / np.maximum(b.sd[diag_idx], 1e-9)
            diagnostics = {"z_mean": float(zs.mean()), "z_sd": float(zs.std()),
                           "bias": float((realised[diag_idx] - b.estimate[diag_idx]).mean())}
        out[f"{conf:g}"] = CellRecord(
            points=float(np.mean(realised >= b.lower - 1e-12)),
            band=bool(np.all(realised >= b.lower_band - 1e-12)),
            width=float(np.mean(b.upper - b.lower)),
            targets=_targets(front, b, mean, test, held, conf, cfg.targets, best_acc, best_cost, seed),
            budgets=_budgets(front, b, mean, test, held, conf, best_cost, seed),
        )
    return out, diagnostics


def _holdout_construction(predictor: str, train: Outcomes, val: Outcomes, test: Outcomes, seed: int
                          ) -> tuple[Any, np.ndarray, HeldOut]:
    """The holdout construction's own front, as `--bound holdout` plans
    (`planning.core.fit_predictor`, `validation_holdout`): the predictor fitted on `train`
    alone, `val` the holdout it routes by each plan's rule (every label known here, so
    nothing is left to buy), and the front of `test`."""
    from optllm.optimize import pareto_front
    from optllm.planning.core import fit_predictor, predict_in_chunks, validation_holdout
    from optllm.predict.fitting import inputs_of

    model = fit_predictor(predictor, train, val, seed, holdout=True)
    mean, _ = predict_in_chunks(model, inputs_of(test), with_std=False)
    return pareto_front(mean, test.cost, models=test.models), mean, validation_holdout(model, val)


def _targets(front: Any, b: Any, mean: np.ndarray, test: Outcomes, held: HeldOut, conf: float,
             shares: tuple[float, ...], best_acc: float, best_cost: float, seed: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for share in shares:
        target = share * best_acc
        sel = select(front, b, Goal(target_accuracy=target, confidence=conf), p=mean, cost=test.cost, held=held,
                     models=test.models, seed=seed)
        if sel.plan is None:
            out[_share_label(share)] = {"picked": False, "met": None, "cost": None, "saving": 0.0, "single": False}
            continue
        real = float(values_of(np.asarray(sel.plan.models), test.correct))
        out[_share_label(share)] = {"picked": True, "met": bool(real >= target - 1e-12), "realised": real,
                                    "cost": float(sel.plan.cost), "saving": 1.0 - float(sel.plan.cost) / best_cost,
                                    "single": sel.chosen is not None and sel.chosen.point is None}
    return out


def _budgets(front: Any, b: Any, mean: np.ndarray, test: Outcomes, held: HeldOut, conf: float,
             best_cost: float, seed: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for share in BUDGET_SHARES:
        budget = share * best_cost
        if budget < float(front.costs[0]):
            continue
        sel = select(front, b, Goal(budget=budget, confidence=conf, safe=True), p=mean, cost=test.cost, held=held,
                     models=test.models, seed=seed)
        assert sel.plan is not None
        real = float(values_of(np.asarray(sel.plan.models), test.correct))
        ref = sel.reference_plan
        ref_real = None if ref is None else float(values_of(ref, test.correct))
        out[_share_label(share)] = {"realised": real, "reference_realised": ref_real,
                                    "no_worse": None if ref_real is None else bool(real >= ref_real - 1e-12)}
    return out


# ============================================================== the campaign
def _tasks(cfg: CoverageConfig, names: list[str]) -> Iterator[tuple[str, float, int]]:
    for name in names:
        for f in cfg.fractions:
            for r in range(cfg.splits):
                yield name, f, r


_DATA_CACHE: dict[str, Outcomes] = {}


def _run_task(args: tuple[str, float, int, CoverageConfig]) -> SplitRecord:
    from optllm.data import load

    name, f, r, cfg = args
    if name not in _DATA_CACHE:
        _DATA_CACHE[name] = load(name)
    return coverage_split(_DATA_CACHE[name], name, f, r, cfg)


def run_coverage(names: list[str], cfg: CoverageConfig, workers: int = 1,
                 progress: Callable[[int, int, str], None] | None = None,
                 checkpoint: str | None = None) -> "CoverageReport":
    """Every split of every dataset × fraction; `workers` processes (1: in this process).

    `checkpoint`: a folder where each finished split is appended as it ends (splits.jsonl,
    beside config.json, the settings a split's figures depend on); a later call with the same
    folder and settings reuses them and runs only the missing splits (more splits, fractions or
    datasets may be added). Other settings there are refused, not mixed in."""
    from optllm.data import load

    for name in names:  # fail on a bad name before any work
        _DATA_CACHE.setdefault(name, load(name))
    store = Checkpoint(checkpoint, cfg) if checkpoint else None
    done = store.records() if store else {}
    all_tasks = [(n, f, r, cfg) for n, f, r in _tasks(cfg, names)]
    records: list[SplitRecord] = [done[k] for k in (_key(n, f, r) for n, f, r, _ in all_tasks) if k in done]
    tasks = [t for t in all_tasks if _key(*t[:3]) not in done]
    say = progress or (lambda done, total, what: None)
    t0 = time.perf_counter()

    def finished(rec: SplitRecord) -> None:
        records.append(rec)
        if store:
            store.add(rec)
        say(len(records), len(all_tasks), f"{rec.dataset} {rec.fraction:.0%} split {rec.split + 1}")

    if records:
        say(len(records), len(all_tasks), f"{len(records)} splits from {checkpoint}")
    if workers <= 1:
        for t in tasks:
            finished(_run_task(t))
    else:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=workers) as pool:
            futs = [pool.submit(_run_task, t) for t in tasks]
            for fut in as_completed(futs):
                finished(fut.result())
    records.sort(key=lambda s: (names.index(s.dataset), s.fraction, s.split))
    return CoverageReport(cfg, names, records, time.perf_counter() - t0, reused=len(all_tasks) - len(tasks))


def _key(dataset: str, fraction: float, split: int) -> tuple[str, str, int]:
    return dataset, f"{float(fraction):.10g}", int(split)


class Checkpoint:
    """The finished splits of a coverage campaign, one JSON line each in `folder/splits.jsonl`
    (appended and flushed to disk as each split ends, so a killed run loses at most the splits
    in flight), and `folder/config.json`: the settings every split's figures depend on (all of
    `CoverageConfig` but the number of splits and the fractions, which only say which splits)."""

    SETTINGS = ("confidences", "targets", "estimators", "predictor", "folds", "seed")

    def __init__(self, folder: str, cfg: CoverageConfig) -> None:
        import json
        from pathlib import Path

        from optllm.io import write_json

        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise OptLLMError(f"--checkpoint {folder}: is a file, expected a folder")
        want = json.loads(json.dumps({k: getattr(cfg, k) for k in self.SETTINGS}))  # tuples as lists
        conf = self.folder / "config.json"
        if conf.is_file():
            try:
                have = json.loads(conf.read_text())
            except (OSError, ValueError):
                raise OptLLMError(f"--checkpoint {folder}: config.json is not readable JSON; use another folder") from None
            diff = sorted(k for k in self.SETTINGS if have.get(k) != want[k])
            if diff:
                raise OptLLMError(f"--checkpoint {folder}: its splits were measured with other settings "
                                  f"({', '.join(f'{k} {have.get(k)!r}' for k in diff)}); use another folder or the same "
                                  "settings")
        else:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                write_json(conf, want)
            except OSError as e:
                raise OptLLMError(f"--checkpoint {folder}: cannot be written ({e.strerror or e})") from None
        self.path = self.folder / "splits.jsonl"

    def records(self) -> dict[tuple[str, str, int], SplitRecord]:
        """The splits already measured (a line cut short by a kill is ignored)."""
        import json

        out: dict[tuple[str, str, int], SplitRecord] = {}
        if not self.path.is_file():
            return out
        for line in self.path.read_text().splitlines():
            try:
                rec = split_record(json.loads(line))
            except (ValueError, KeyError, TypeError):
                continue
            out[_key(rec.dataset, rec.fraction, rec.split)] = rec
        return out

    def add(self, rec: SplitRecord) -> None:
        import json
        import os

        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(asdict(rec), default=_plain) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def _plain(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON: {type(x).__name__}")


def split_record(d: dict[str, Any]) -> SplitRecord:
    """A `SplitRecord` back from its JSON form."""
    cells = {est: {conf: CellRecord(**rec) for conf, rec in by_conf.items()} for est, by_conf in d["cells"].items()}
    return SplitRecord(d["dataset"], float(d["fraction"]), int(d["split"]), int(d["n_labelled"]), int(d["n_assigned"]),
                       float(d["best_accuracy"]), cells, d["diagnostics"], float(d["seconds"]))


@dataclass(frozen=True)
class Cell:
    """The aggregate of one dataset × fraction × bound construction × confidence."""

    dataset: str
    fraction: float
    estimator: str
    confidence: float
    splits: int
    n_labelled: float
    points: float  # mean pointwise coverage
    band: float  # share of splits where the whole-front band held
    width: float
    targets: dict[str, dict[str, Any]]  # share -> picked, kept, met_when_picked, saving, singles
    budgets: dict[str, dict[str, Any]]  # share -> no_worse rate, defined
    z_mean: float
    z_sd: float
    bias: float


def aggregate_cell(records: list[SplitRecord], est: str, conf: float) -> Cell:
    """Aggregate one cell's splits (see `Cell`)."""
    key = f"{conf:g}"
    rs = [r.cells[est][key] for r in records]
    targets: dict[str, dict[str, Any]] = {}
    for label in rs[0].targets:
        t = [r.targets[label] for r in rs]
        picked = [x for x in t if x["picked"]]
        missed = sum(not x["met"] for x in picked)
        targets[label] = {
            "picked": len(picked) / len(t), "kept": (len(t) - missed) / len(t),
            "met_when_picked": None if not picked else (len(picked) - missed) / len(picked),
            "saving": float(np.mean([x["saving"] for x in t])),
            "saving_when_picked": None if not picked else float(np.mean([x["saving"] for x in picked])),
            "singles": sum(x["single"] for x in picked),
        }
    budgets: dict[str, dict[str, Any]] = {}
    for label in {k for r in rs for k in r.budgets}:
        v = [r.budgets[label]["no_worse"] for r in rs if label in r.budgets and r.budgets[label]["no_worse"] is not None]
        budgets[label] = {"no_worse": float(np.mean(v)) if v else None, "defined": len(v)}
    d = [r.diagnostics[est] for r in records]
    return Cell(records[0].dataset, records[0].fraction, est, conf, len(rs),
                float(np.mean([r.n_labelled for r in records])),
                float(np.mean([r.points for r in rs])), float(np.mean([r.band for r in rs])),
                float(np.mean([r.width for r in rs])), targets, budgets,
                float(np.mean([x["z_mean"] for x in d])), float(np.mean([x["z_sd"] for x in d])),
                float(np.mean([x["bias"] for x in d])))


@dataclass(frozen=True)
class CoverageReport:
    """All splits and their aggregates; `cells()` in a fixed order."""

    config: CoverageConfig
    datasets: list[str]
    records: list[SplitRecord]
    seconds: float
    reused: int = 0  # splits taken from the checkpoint, not run again
    _cells: list[Cell] = field(default_factory=list, repr=False, compare=False)

    def cells(self) -> list[Cell]:
        if not self._cells:
            for name in self.datasets:
                for f in self.config.fractions:
                    recs = [r for r in self.records if r.dataset == name and r.fraction == f]
                    if not recs:
                        continue
                    for est in self.config.estimators:
                        for c in self.config.confidences:
                            self._cells.append(aggregate_cell(recs, est, c))
        return self._cells

    def as_dict(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "datasets": self.datasets, "seconds": self.seconds,
                "reused_from_checkpoint": self.reused,
                "cells": [asdict(c) for c in self.cells()],
                "splits": [asdict(r) for r in self.records]}


COVERAGE_FILES = ("coverage.json", "calibration.png", "table.md")


def table_rows(report: CoverageReport) -> list[list[str]]:
    """One row per cell: the figures the table and table.md show."""
    rows = []
    for c in report.cells():
        t = c.targets
        kept = " ".join(f"{t[k]['kept']:.0%}" for k in t)
        picked = " ".join(f"{t[k]['picked']:.0%}" for k in t)
        saving = " ".join(f"{t[k]['saving']:.1%}" for k in t)
        budget = " ".join("—" if v["no_worse"] is None else f"{v['no_worse']:.0%}"
                          for _, v in sorted(c.budgets.items(), key=lambda kv: -float(kv[0])))
        rows.append([c.dataset, f"{c.fraction:.0%}", f"{c.n_labelled:.0f}", c.estimator, f"{c.confidence:.0%}",
                     str(c.splits), f"{c.points:.1%}", f"{c.band:.0%}", kept, picked, saving, budget,
                     f"{c.width:.3f}", f"{c.z_mean:+.2f} / {c.z_sd:.2f}"])
    return rows


TABLE_COLUMNS = ("dataset", "labels", "n_L", "bound", "C", "splits", "points", "band",
                 "target kept", "picked", "certified saving", "budget no worse", "width", "z mean / sd")


def write_coverage(report: CoverageReport, out: str, command: str = "") -> dict[str, str]:
    """coverage.json, calibration.png and table.md in folder `out`, all-or-nothing."""
    from pathlib import Path

    from optllm.evaluate.plots import plot_calibration
    from optllm.io import atomic_dir, write_json

    targets = ", ".join(f"{float(k):g}%" for k in (report.cells()[0].targets if report.cells() else {}))
    with atomic_dir(out, COVERAGE_FILES) as tmp:
        write_json(tmp / "coverage.json", {"command": command, **report.as_dict()})
        plot_calibration(tmp / "calibration.png", report.cells(),
                         title=f"{report.config.splits} splits per cell; target: 100% of the best LLM")
        lines = ["# optllm coverage\n", f"`{command}`\n" if command else "",
                 f"Targets (columns 'target kept', 'picked', 'certified saving'): {targets} of the best LLM's "
                 "realised accuracy. Budgets ('budget no worse'): the best LLM's cost, then half of it.\n",
                 "| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
        lines += ["| " + " | ".join(r) + " |" for r in table_rows(report)]
        (tmp / "table.md").write_text("\n".join(lines) + "\n")
    return {name: str(Path(out) / name) for name in COVERAGE_FILES}
