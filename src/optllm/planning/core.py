"""The planning pass every path shares: labelled sample → predictor → predictions of the
queries to assign → front → cross-fitted bounds → `selection.select`.

`optllm run` (a dataset with ground truth, split at random) and `optllm plan` (a user's
prompts, a labelled sample and a catalogue) both call `plan_queries`, so the same labelled
sample, costs, seed and goal give the same plan on both paths.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optllm.cost import CostMatrix
from optllm.data import Outcomes
from optllm.errors import OptLLMError
from optllm.evaluate.uncertainty import DEFAULT_ESTIMATOR, ESTIMATORS, AccuracyBounds, HeldOut, bounds_along
from optllm.optimize.registry import OPTIMIZERS, build_front
from optllm.optimize.types import FrontLike
from optllm.selection import Goal, Selection, select

Progress = Callable[[str], None]

HOLDOUT_BOUND = "holdout"
# --bound: an estimator on the cross-fitted labelled sample, or the validation part as a holdout
BOUNDS = (*ESTIMATORS, HOLDOUT_BOUND)


@dataclass(frozen=True)
class PlanSettings:
    """How to plan, validated once (`optllm run`, `optllm plan` and the API share it).

    `predictor`: a name of `optllm.predict.PREDICTORS` (or `default`); `optimizer`: one of
    `optllm.optimize.registry.OPTIMIZERS`; `alpha`: the robust prediction p̄ + α·σ fed to the
    optimiser; `folds`: cross-fitting folds of the labelled sample for the bounds (0: the
    Bernoulli variance only, no held-out correction); `bound`: how the held-out sample bounds
    a plan's accuracy (`optllm.evaluate.uncertainty.ESTIMATORS`); `gn`, `generations`:
    OptLLM-M's group count and the MOEAs' generations; `seed`: every random choice.

    `bound="holdout"` keeps the validation part out of the fit: the predictor is fitted on
    the training part alone (half of it validating) and the plans are bounded by their
    answers on the validation part, routed by each plan's own rule (`validation_holdout`;
    docs/bounds.md). `folds` is then unused."""

    predictor: str = "default"
    optimizer: str = "exact"
    alpha: float = 0.0
    folds: int = 5
    seed: int = 0
    gn: int = 50
    generations: int = 100
    bound: str = DEFAULT_ESTIMATOR

    def __post_init__(self) -> None:
        if self.bound not in BOUNDS:
            raise OptLLMError(f"--bound must be one of {', '.join(BOUNDS)}, got {self.bound!r}")
        if self.optimizer not in OPTIMIZERS:
            raise OptLLMError(f"--optimizer: unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
        if self.seed < 0:
            raise OptLLMError(f"--seed must be a non-negative integer, got {self.seed}")
        if not (self.folds == 0 or self.folds >= 2):
            raise OptLLMError(f"--folds must be 0 (no cross-fitting) or at least 2, got {self.folds}")
        if not np.isfinite(self.alpha):
            raise OptLLMError(f"--alpha must be a finite number, got {self.alpha}")
        if self.gn < 1 or self.generations < 1:
            raise OptLLMError("--gn and --generations must be at least 1")
        from optllm.predict import make_predictor

        make_predictor(self.predictor)  # an unknown name fails here, before any work


@dataclass(frozen=True)
class Planned:
    """What one planning pass produced: predictions of the assigned queries (`p`, [n, m]; and
    `p_std`, their standard deviations, only when the robust prediction needs them: α ≠ 0,
    else None), the front built on them, the held-out sample and the bounds along the front,
    and the `Selection` for the goal; `predictor` is the fitted predictor itself."""

    p: np.ndarray
    p_std: np.ndarray | None
    front: FrontLike
    held: HeldOut | None
    bounds: AccuracyBounds
    selection: Selection
    timings: dict[str, float] = field(default_factory=dict)
    predictor: Any = None  # the fitted predictor (featuriser inside) that gave `p`: what `optllm serve` routes with


def need_two_models(models: tuple[str, ...] | list[str], where: str) -> None:
    """With one model there is nothing to route: say so, instead of fitting a predictor on it."""
    if len(models) < 2:
        raise OptLLMError(f"{where}: one model only ({', '.join(map(repr, models)) or 'none'}): there is nothing to "
                          "route; optllm chooses between at least 2 models per query")


def plan_queries(train: Outcomes, val: Outcomes, inputs: Any, cost: np.ndarray, goal: Goal,
                 settings: PlanSettings, *, extra_cost: float = 0.0, estimated: CostMatrix | None = None,
                 feasible: np.ndarray | None = None, progress: Progress | None = None,
                 holdout: Any = None) -> Planned:
    """Fit the predictor on `train` (with `val` as its validation part), predict `inputs`
    (texts or features of the queries to assign, whose costs are `cost` [n, m]), build the
    front, bound it by cross-fitting train + validation, and select the plan for `goal`.

    `train.cost` / `val.cost` must be on the same footing as `cost` (the same estimator on
    the plan path): the held-out rule routes the labelled queries by them. `estimated` prices
    the realised-cost risk of `goal.risk`; `extra_cost` is added to every plan's cost;
    `feasible` [n, m] marks the pairs that may be chosen (others get p = 0 and must carry a
    cost that no budget reaches, so they are dominated). `holdout` (a `planning.holdout.Holdout`,
    for an accuracy target): bound on it instead of cross-fitting `train` + `val`, buying its
    labels where the tested plans route (`planning.holdout.certify_on_holdout`)."""
    from optllm.predict.base import single_thread_blas

    say = progress or (lambda s: None)
    t: dict[str, float] = {}
    models = train.models
    need_two_models(models, train.name)
    # the cross-fits for the bounds need only the labelled sample: they run on a second thread
    # while this one fits, featurises and predicts the queries (mostly Python, holding the GIL,
    # where the fits mostly release it: trees, sparse products, BLAS); BLAS stays on one thread
    # for the whole stretch, so the two threads' nested limits cannot undo each other
    if holdout is not None and goal.target_accuracy is None:
        raise OptLLMError("certifying on a holdout needs an accuracy target")
    on_val = holdout is None and bounds_on_validation(settings, val)
    with single_thread_blas():
        crossed = None if holdout is not None or on_val else start_cross_fit(settings, train, val)
        say("fit predictor")
        t1 = time.perf_counter()
        model = fit_predictor(settings.predictor, train, val, settings.seed, on_val)
        # the standard deviations cost more than the means (a quadratic form per model and query)
        # and only the robust prediction p̄ + α·σ uses them
        mean, std = predict_in_chunks(model, inputs, with_std=settings.alpha != 0)
        if feasible is not None:
            mean = np.where(feasible, mean, 0.0)
            std = None if std is None else np.where(feasible, std, 0.0)
        t["predict"] = time.perf_counter() - t1
        p_robust = mean if std is None else np.clip(mean + settings.alpha * std, 0.0, 1.0)
        say("build front")
        t1 = time.perf_counter()
        front = build_front(settings.optimizer, mean, p_robust, cost, models, gn=settings.gn,
                            generations=settings.generations, seed=settings.seed)
        t["optimise"] = time.perf_counter() - t1
        say("bounds")
        t1 = time.perf_counter()
        if holdout is not None:
            held = _certify(holdout, model, front, mean, cost, goal, feasible)
            t["holdout"] = time.perf_counter() - t1
        elif on_val:
            held = validation_holdout(model, val)
            t["holdout"] = time.perf_counter() - t1
        else:
            held = crossed.result()
            t["cross_fit"] = crossed.seconds  # on the second thread, overlapping predict and optimise
            t["cross_fit_wait"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    bounds = bounds_along(front, mean, cost, held, goal.confidence, seed=settings.seed)
    t["bounds"] = time.perf_counter() - t1
    sel = select(front, bounds, goal, p=mean, cost=cost, held=held, models=models, extra_cost=extra_cost,
                 estimated=estimated, seed=settings.seed, feasible=feasible)
    return Planned(mean, std, front, held, bounds, sel, t, model)


HOLDOUT_SEED = 104729  # offsets the seed of the holdout bound's fit / check halves


def bounds_on_validation(settings: PlanSettings, val: Outcomes) -> bool:
    """Whether `settings` bound on the validation part as a holdout (`--bound holdout`);
    a clear error when it holds fewer than 2 labelled queries."""
    if settings.bound != HOLDOUT_BOUND:
        return False
    if val.n < 2:
        raise OptLLMError(f"--bound holdout bounds the plans on the validation labels: need at least 2, got {val.n}")
    return True


def fit_predictor(name: str, train: Outcomes, val: Outcomes, seed: int, holdout: bool = False) -> Any:
    """Predictor `name` fitted on the labelled sample: on `train` with `val` as its
    validation part; with `holdout`, on `train` alone (a seeded half of it validating, the
    proportion `optllm plan` splits a labelled sample in), so that `val` stays a holdout the
    predictor never saw (`validation_holdout`)."""
    from optllm.predict import inputs_of, make_predictor

    if holdout:
        order = np.random.default_rng(seed + HOLDOUT_SEED).permutation(train.n)
        half = (train.n + 1) // 2
        train, val = train.subset(order[:half]), train.subset(order[half:])
    model = make_predictor(name, seed=seed)
    has_val = val.n > 0
    model.fit(inputs_of(train), train.correct, inputs_of(val) if has_val else None,
              val.correct if has_val else None, models=train.models)
    return model


def validation_holdout(model: Any, val: Outcomes) -> HeldOut:
    """The validation labels as a holdout sample for the bounds (`--bound holdout`): the
    predictions of `model` (fitted by `fit_predictor(..., holdout=True)`, which never saw
    them) and every label. Routed by a plan's own rule, they are a binomial sample of its
    accuracy on the planned queries (`labelled` estimator, exact bound; docs/bounds.md)."""
    from optllm.predict import inputs_of

    p_hold, _ = predict_in_chunks(model, inputs_of(val), with_std=False)
    return HeldOut(p_hold, val.correct.astype(float), np.asarray(val.cost, dtype=float), "labelled", None,
                   rule_variance=False)


def _certify(holdout: Any, model: Any, front: FrontLike, mean: np.ndarray, cost: np.ndarray, goal: Goal,
             feasible: np.ndarray | None) -> HeldOut:
    """The holdout's `HeldOut` sample: predicted by the fitted `model`, labelled where the
    target rule's tests route (`planning.holdout`)."""
    from optllm.planning.holdout import certify_on_holdout
    from optllm.selection.engine import usable_models

    p_hold, _ = predict_in_chunks(model, holdout.inputs, with_std=False)
    if holdout.feasible is not None:
        p_hold = np.where(holdout.feasible, p_hold, 0.0)
    return certify_on_holdout(front, mean, cost, float(goal.target_accuracy), goal.confidence, p_hold, holdout,
                              usable_models(mean.shape[1], feasible))


class Background:
    """`fn(*args)` on a daemon thread (a Ctrl-C in the caller does not wait for it to end);
    `result()` joins it and returns its value or raises its exception; `seconds` its run time."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._run, args=(fn, args), daemon=True, name="optllm-background")
        self._thread.start()

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        t0 = time.perf_counter()
        try:
            self._value = fn(*args)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread by result()
            self._error = e
        finally:
            self.seconds = time.perf_counter() - t0

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def start_cross_fit(settings: PlanSettings, train: Outcomes, val: Outcomes) -> Background:
    """`cross_fit` of the labelled sample on a second thread (`Background`), for the caller to
    fit and predict beside it; the predictors' lazy imports are done here first, on the
    caller's thread, so the two threads never import scikit-learn at once."""
    from optllm.predict.base import preload

    preload()
    return Background(cross_fit, settings.predictor, train, val, settings.folds, settings.seed, settings.bound)


def cross_fit(name: str, train: Outcomes, val: Outcomes, folds: int, seed: int,
              estimator: str = DEFAULT_ESTIMATOR) -> HeldOut | None:
    """Held-out predictions for every labelled query: `folds`-fold cross-fitting of predictor
    `name` over train + validation, each fold predicted by the predictor fitted on the others
    (their train/validation roles kept in the original proportion).

    The featuriser is fitted once on all labelled texts (it sees no labels), so the K fits
    reuse one feature matrix.
    """
    crossed = cross_fit_models(name, train, val, folds, seed, estimator)
    return None if crossed is None else crossed.held


@dataclass(frozen=True)
class CrossFitted:
    """The cross-fit itself: the held-out sample (`held`, its `fold` per labelled query), the
    fold predictors (`models[f]` never saw fold f) and the featuriser they share (None when
    the predictor reads raw inputs)."""

    held: HeldOut
    models: tuple[Any, ...]
    featurizer: Any

    def predict_by_fold(self, inputs: Any, seed: int) -> np.ndarray:
        """[n, m] predictions of `inputs` (texts or features), each query by the fold
        predictor of its fold (`fold_of`: a seeded hash of its text, drawn independently of
        every label). So a planned query and a labelled query of one fold are predicted by
        one predictor that saw neither, and a query gets the same fold in every run."""
        n = inputs.shape[0] if hasattr(inputs, "shape") else len(inputs)
        fold = fold_of(inputs, len(self.models), seed)
        X = inputs if self.featurizer is None else self.featurizer.transform(list(inputs))
        out = np.empty((n, self.held.y.shape[1]), dtype=float)
        for f, model in enumerate(self.models):
            rows = np.flatnonzero(fold == f)
            if rows.size:
                out[rows] = model.predict(_rows(X, rows)).mean
        return out


def fold_of(inputs: Any, folds: int, seed: int) -> np.ndarray:
    """The fold (0..folds-1) of each query to plan: a keyed hash (BLAKE2b, keyed by the seed)
    of its text, or of its feature row's bytes; uniform over the folds and independent of
    the labels, and the same for a query wherever it is planned or served."""
    import hashlib

    key = int(seed + CROSSFOLD_SEED).to_bytes(8, "little", signed=False)
    numeric = hasattr(inputs, "dtype") and np.asarray(inputs).dtype != object
    rows = ((np.ascontiguousarray(r).tobytes() for r in np.asarray(inputs)) if numeric
            else (str(x).encode("utf-8") for x in inputs))
    digests = b"".join(hashlib.blake2b(r, digest_size=8, key=key).digest() for r in rows)
    return (np.frombuffer(digests, dtype="<u8") % np.uint64(folds)).astype(np.int64)


CROSSFOLD_SEED = 15485863  # offsets the seed of the planned queries' fold draw


def cross_fit_models(name: str, train: Outcomes, val: Outcomes, folds: int, seed: int,
                     estimator: str = DEFAULT_ESTIMATOR, own_features: bool = False) -> CrossFitted | None:
    """`cross_fit`, keeping the fold predictors and their featuriser (`CrossFitted`).
    `own_features`: each fold predictor fits its own featuriser on its own training texts,
    so the texts of the fold it predicts are as new to it as the planned queries' texts are
    to the final predictor (`featurizer` None: the models featurise their inputs)."""
    n_tr, n_va = train.n, val.n
    n = n_tr + n_va
    if folds < 2 or n < 4:
        return None
    from optllm.predict import inputs_of, make_featurizer, make_predictor
    from optllm.predict.features import fit_transform

    proto = make_predictor(name, seed=seed)
    X = inputs_of(train)
    Xv = inputs_of(val) if n_va else None
    if Xv is not None:
        X = X + Xv if isinstance(X, list) else np.vstack([X, Xv])
    featurizer = None
    if getattr(proto, "uses_features", True) and isinstance(X, list) and not own_features:
        featurizer = make_featurizer(getattr(proto, "featurizer", None))
        X = fit_transform(featurizer, X)
    Y = np.vstack([train.correct, val.correct]) if n_va else train.correct
    C = np.vstack([train.cost, val.cost]) if n_va else train.cost
    rng = np.random.default_rng(seed + 7919)
    order = rng.permutation(n)
    parts = np.array_split(order, min(folds, n))
    share_val = n_va / n
    P = np.empty_like(Y, dtype=float)
    fold = np.empty(n, dtype=int)
    models = []
    for f, held in enumerate(parts):
        fold[held] = f
        rest = np.setdiff1d(order, held, assume_unique=True)
        rest = rest[rng.permutation(rest.size)]
        k_va = int(round(share_val * rest.size)) if n_va else 0
        k_va = min(max(k_va, 2 if n_va else 0), rest.size - 2)
        tr, va = rest[k_va:], rest[:k_va]
        model = make_predictor(name, seed=seed + f + 1) if own_features else make_predictor(
            name, seed=seed + f + 1, featurizer=None)
        if va.size:
            model.fit(_rows(X, tr), Y[tr], _rows(X, va), Y[va], models=train.models)
        else:
            model.fit(_rows(X, tr), Y[tr], models=train.models)
        P[held] = model.predict(_rows(X, held)).mean
        models.append(model)
    return CrossFitted(HeldOut(P, Y.astype(float), C, estimator, fold), tuple(models), featurizer)


PREDICT_CHUNK = 32_768  # rows featurised and predicted at once: bounds the (rows x n_train) kernel blocks


def predict_in_chunks(model: Any, inputs: Any, rows: int = PREDICT_CHUNK,
                      with_std: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """(mean, std) of `model` on `inputs`, `rows` at a time: the fitted featuriser and
    predictor are fixed, so chunks give the same numbers with memory bounded by the chunk.
    `with_std=False`: the means alone (`predict_mean`), std None."""
    from optllm.data.texts import DiskTexts

    n = inputs.shape[0] if hasattr(inputs, "shape") else len(inputs)
    if isinstance(inputs, DiskTexts):  # texts on disk: read a chunk, predict it, let it go
        chunks: Any = inputs.chunks(rows)
    else:
        chunks = (inputs if n <= rows else _rows(inputs, np.arange(lo, min(n, lo + rows)))
                  for lo in range(0, max(n, 1), rows))
    means, stds = [], []
    for chunk in chunks:
        if with_std:
            pred = model.predict(chunk)
            means.append(np.asarray(pred.mean, dtype=np.float64))
            stds.append(np.asarray(pred.std, dtype=np.float64))
        else:
            means.append(np.asarray(model.predict_mean(chunk), dtype=np.float64))
    if not means:  # no queries on disk: the fitted predictor's shape from an empty call
        return predict_in_chunks(model, [], rows, with_std)
    return np.concatenate(means), (np.concatenate(stds) if with_std else None)


def _rows(X: Any, idx: np.ndarray) -> Any:
    return [X[i] for i in idx] if isinstance(X, list) else X[idx]
