"""`optllm plan` on a Ray cluster: the fit stays on the driver, the unlabelled prompts are
featurised and predicted on the workers, the plan is chosen by the single selection engine and
written as Parquet shards by `RayFront`.

Steps (the single-process path is `optllm.planning.build_plan` → `plan_queries`):

1. Driver: read the labels, estimate every prompt's cost (tokens × catalogue prices), split the
   labelled sample and fit the predictor on it: the same code and seed as `build_plan`, so the
   same fitted predictor (the labelled sample is small).
2. Workers (the cross-fits for the bounds meanwhile on a driver thread): the fitted predictor
   (featuriser inside) and the cost matrix are put in the object store once; a `ray.data`
   dataset of (row, prompt) is mapped with `map_batches` in batches of `batch_rows` rows, each
   batch predicting the means (`predict_mean`, the call `predict_in_chunks` makes; rows of a
   fitted predictor are independent, so batches give the same numbers) and writing one Parquet shard (`part-<first row>.parquet`, columns
   `p_<model>`, `cost_<model>`) into a temporary folder.
3. Decision: the selection rules need per-query values along the whole front (the held-out
   correction routes the labelled queries at every point's dual price, the Bernoulli variance
   and the safe rule's paired comparison sum over the planned queries, the reference mix
   orders queries by cost), so the driver reads the p/cost shards back (n × m float64 twice,
   16·n·m bytes: 19 MB at 10^5 × 12) and runs the one implementation of every rule
   (`plan_queries`' front/bounds/select steps: `build_front`, `cross_fit`, `bounds_along`,
   `selection.select`). The selection is therefore exactly the local one. What is NOT done
   yet: a gather-free decision (per-point bounds computed from the shards' sums); at 10^7
   prompts this step holds p and cost on the driver.
4. Plan: the chosen plan, expressed as a budget (the selection's budget for the front's plan
   at a budget; a front point's own cost for a front point), is taken by `RayFront` on the
   shards (per-shard hulls, bisection on the dual price) and written by the workers as
   `part-NNNNN.parquet` (query = row in plan order, model, model_name). Its cost and accuracy
   are checked against the selection's (an `OptLLMError` if they differ). A plan off the front
   (the reference: a single LLM or a random mix of two) is written by the driver.

A cluster this function starts (no running session, no `address`) gets one worker per CPU
started and the front's kernels compiled first (`warm_workers`, in `timings["cluster_start"]`).

The output folder (all-or-nothing, `optllm.io.atomic_dir`) holds the plan shards, `ids.parquet`
(query, id, prompt: so `optllm dispatch` sends the folder as it sends a local plan) and
`summary.json` (the local plan's summary keys that need no per-query table, with the engine's
timings).
"""
from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from optllm.engine import cluster_workers, join_or_start
from optllm.errors import OptLLMError

__all__ = ["RayPlan", "RAY_PLAN_FILES", "ray_build_plan", "predict_to_parquet", "warm_workers", "BATCH_ROWS"]

BATCH_ROWS = 4096
RAY_PLAN_FILES = ("part-*.parquet", "ids.parquet", "summary.json")
_CACHE: dict[str, Any] = {}  # per worker process: the fitted predictor and costs, fetched once


@dataclass(frozen=True)
class RayPlan:
    """What `ray_build_plan` produced. `choice` is the model index per planned prompt (read back
    from the written shards) or None when the goal was not certified; `selection` is the single
    engine's `Selection`; `timings` in seconds (cluster start, fit, predict on Ray, select,
    plan on Ray); `info` the RayFront call's figures (shards, rounds, gathered moves)."""

    ids: np.ndarray
    models: tuple[str, ...]
    choice: np.ndarray | None
    selection: Any
    summary: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------- worker side
def _predict_batch(batch: dict[str, np.ndarray], *, model_ref: Any, cost_ref: Any, feas_ref: Any,
                   names: Sequence[str], folder: str) -> dict[str, np.ndarray]:
    """One `map_batches` batch: predict the means of its prompts and write its p/cost shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    key = model_ref.hex()
    if _CACHE.get("key") != key:
        _CACHE.clear()
        _CACHE.update(key=key, model=ray.get(model_ref), cost=ray.get(cost_ref), feas=ray.get(feas_ref))
    rows = np.asarray(batch["row"], dtype=np.int64)
    if rows.size == 0:
        return {"row0": np.zeros(0, np.int64), "rows": np.zeros(0, np.int64)}
    r0 = int(rows[0])
    if not np.array_equal(rows, np.arange(r0, r0 + rows.size)):
        raise OptLLMError(f"internal error: a prediction batch is not a contiguous range of rows (from {r0})")
    texts = [str(t) for t in batch["prompt"]]
    mean = np.asarray(_CACHE["model"].predict_mean(texts), dtype=np.float64)
    feas = _CACHE["feas"]
    if feas is not None:
        mean = np.where(feas[r0:r0 + rows.size], mean, 0.0)
    cost = _CACHE["cost"][r0:r0 + rows.size]
    cols = {f"p_{k}": pa.array(mean[:, j]) for j, k in enumerate(names)}
    cols.update({f"cost_{k}": pa.array(np.ascontiguousarray(cost[:, j])) for j, k in enumerate(names)})
    pq.write_table(pa.table(cols), os.path.join(folder, f"part-{r0:012d}.parquet"))
    return {"row0": np.array([r0], np.int64), "rows": np.array([rows.size], np.int64)}


def _warm(hold_s: float) -> int:
    """Import the front code and compile its kernels in this worker (one tiny hull)."""
    from optllm.optimize.front import front_block

    rng = np.random.default_rng(0)
    front_block(rng.random((64, 4)), rng.random((64, 4)), 0, backend="auto", sort=True)
    time.sleep(hold_s)  # keep this worker busy so the next warm-up task lands on another one
    return os.getpid()


# ---------------------------------------------------------------------- driver side
def warm_workers(n: int | None = None, hold_s: float = 0.5) -> int:
    """Start `n` worker processes (default: the cluster's CPUs) on the running Ray session and
    have each import the front code and compile its kernels, so a first plan is not timed with
    Ray's lazy worker start-up and numba's compilation. Returns how many distinct workers ran."""
    import ray

    k = cluster_workers(n)
    f = ray.remote(num_cpus=1)(_warm)
    return len(set(ray.get([f.remote(hold_s) for _ in range(k)])))


def predict_to_parquet(model: Any, texts: Sequence[str], cost: np.ndarray, feasible: np.ndarray | None,
                       names: Sequence[str], folder: str | Path, batch_rows: int = BATCH_ROWS) -> int:
    """Predict `texts` with the fitted `model` on the running Ray cluster (`ray.data`
    `map_batches`, `batch_rows` per batch) and write one p/cost Parquet shard per batch into
    `folder`; returns the number of shards. Row order is kept (shard names are their first row)."""
    import pandas as pd
    import ray

    if batch_rows < 1:
        raise OptLLMError(f"batch_rows must be ≥ 1, got {batch_rows}")
    n = len(texts)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False  # the CLI has its own stage spinner
    refs = {"model_ref": ray.put(model), "cost_ref": ray.put(np.ascontiguousarray(cost, dtype=np.float64)),
            "feas_ref": ray.put(None if feasible is None else np.asarray(feasible, dtype=bool))}
    blocks = max(1, -(-n // batch_rows))
    ds = ray.data.from_pandas(pd.DataFrame({"row": np.arange(n, dtype=np.int64), "prompt": list(texts)}))
    ds = ds.repartition(blocks)
    out = ds.map_batches(_predict_batch, batch_size=batch_rows, batch_format="numpy",
                         fn_kwargs={**refs, "names": tuple(names), "folder": str(folder)})
    try:
        res = out.take_all()
    except Exception as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, OptLLMError):
            raise OptLLMError(str(cause)) from None
        raise
    done = sum(int(r["rows"]) for r in res)
    if done != n:
        raise OptLLMError(f"internal error: {done} of {n} prompts predicted")
    return len(res)


def _read_shards(folder: Path, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    from optllm.engine.ray_engine import _read_parquet

    ps, cs = [], []
    for f in sorted(folder.glob("part-*.parquet")):
        p, c = _read_parquet(str(f), names)
        ps.append(p)
        cs.append(c)
    return np.vstack(ps), np.vstack(cs)


def _plan_budget(sel: Any, front: Any, goal: Any) -> float | None:
    """The budget at which the front's plan is the selection's plan, or None when it is off the
    front (the reference). The selection's plan is `front.at_budget(spend)` (budget rule) or a
    front point k (`front.assignment(k)` = `front.at_budget(front.costs[k])`)."""
    plan, chosen = sel.plan, sel.chosen
    if plan is None:
        return None
    if chosen is not None and chosen.point is not None:
        return float(front.costs[chosen.point])
    lim = plan.cost_limit
    return float(lim) if lim is not None and np.isfinite(lim) else None


def ray_build_plan(prompt_ids: Sequence[Any], prompts: Sequence[str], catalogue: Any, labelled: Any, goal: Any,
                   settings: Any, out: str | Path, *, quantile: float = 0.95, length_regression: bool = False,
                   val_share: float = 0.5, labels_source: str = "labels", tier: str = "online",
                   address: str | None = None, workers: int | None = None, batch_rows: int = BATCH_ROWS,
                   progress: Callable[[str], None] | None = None) -> RayPlan:
    """`build_plan` on Ray (see the module docstring): same arguments, plus `out` (the plan
    folder, written all-or-nothing), `address` (a cluster to join; default: the running
    session, or a local one with `workers` CPUs, stopped at the end) and `batch_rows`."""
    from optllm.engine import RAY_HINT, ray_available
    from optllm.engine.ray_engine import RayFront
    from optllm.evaluate.uncertainty import bounds_along
    from optllm.io import atomic_dir, check_output_dir, write_json
    from optllm.optimize.registry import build_front
    from optllm.planning.core import bounds_on_validation, fit_predictor, start_cross_fit, validation_holdout
    from optllm.predict.base import single_thread_blas
    from optllm.planning.plan import prepare
    from optllm.selection import select

    if not ray_available():
        raise OptLLMError(RAY_HINT)
    if settings.alpha != 0:
        raise OptLLMError("--engine ray predicts the means only (alpha 0); the robust prediction needs the local engine")
    if batch_rows < 1:
        raise OptLLMError(f"--batch-rows must be ≥ 1, got {batch_rows}")
    check_output_dir(out, "--out", RAY_PLAN_FILES)
    say = progress or (lambda s: None)
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    # ---- driver: costs, labelled sample, fit (build_plan's steps, same helpers)
    pr = prepare(prompt_ids, prompts, catalogue, labelled, settings.seed, quantile=quantile,
                 length_regression=length_regression, val_share=val_share, labels_source=labels_source, tier=tier)
    cat, ids, plan_ids, plan_texts, costs, dropped = pr.cat, pr.ids, pr.plan_ids, pr.plan_texts, pr.costs, pr.dropped
    sample, cost_f = pr.sample, pr.cost_f
    train, val = sample.train, sample.val
    on_val = bounds_on_validation(settings, val)
    say("fit predictor")
    model = fit_predictor(settings.predictor, train, val, settings.seed, on_val)
    t["costs_and_fit"] = time.perf_counter() - t0

    import ray

    t1 = time.perf_counter()
    started = join_or_start(address, workers)
    if started:
        warm_workers()
    t["cluster_start"] = time.perf_counter() - t1
    names = tuple(cat.names)
    work = Path(out).resolve().parent / f".{Path(out).name}.ray-pc.{os.getpid()}"
    try:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        say("predict on Ray")
        t1 = time.perf_counter()
        # the cross-fits (labelled sample only) run on a driver thread while the workers predict
        with single_thread_blas():
            crossed = None if on_val else start_cross_fit(settings, train, val)
            n_shards = predict_to_parquet(model, plan_texts, cost_f, costs.feasible, names, work, batch_rows)
            t["predict_ray"] = time.perf_counter() - t1
            held = validation_holdout(model, val) if crossed is None else crossed.result()
        if crossed is not None:
            t["cross_fit"] = crossed.seconds
        # ---- decision: the single selection engine (module docstring, step 3)
        say("select")
        t1 = time.perf_counter()
        mean, cost = _read_shards(work, names)
        front = build_front(settings.optimizer, mean, mean, cost, names, gn=settings.gn,
                            generations=settings.generations, seed=settings.seed)
        bounds = bounds_along(front, mean, cost, held, goal.confidence, seed=settings.seed)
        sel = select(front, bounds, goal, p=mean, cost=cost, held=held, models=names, estimated=costs,
                     seed=settings.seed, feasible=costs.feasible)
        B = _plan_budget(sel, front, goal) if settings.optimizer == "exact" else None
        off_front = None if sel.plan is None or B is not None else np.asarray(sel.plan.models, dtype=np.int64)
        summary: dict[str, Any] = {
            "engine": "ray", "n_prompts": int(ids.size), "n_to_plan": int(plan_ids.size),
            "n_labelled": int(train.n + val.n), "n_train": int(train.n), "n_validation": int(val.n),
            "n_no_feasible_model": len(dropped), "no_feasible_model_ids": dropped[:50],
            "predictor": settings.predictor, "selection": sel.as_dict(), "models": list(names),
            "front": {"points": int(len(front.costs)), "cost_min": float(front.costs[0]),
                      "cost_max": float(front.costs[-1]), "accuracy_min": float(front.accuracies[0]),
                      "accuracy_max": float(front.accuracies[-1])},
            "prediction_shards": n_shards, "batch_rows": int(batch_rows),
            "tier": {"tier": tier, "batch_models": [] if tier == "online" else list(pr.online.batch_models())},
        }
        del mean, cost, front
        t["select"] = time.perf_counter() - t1
        # ---- plan shards
        say("plan on Ray")
        t1 = time.perf_counter()
        info: dict[str, Any] = {}
        with atomic_dir(out, RAY_PLAN_FILES) as tmp:
            if B is not None:
                with RayFront(parquet=work) as rf:
                    a = rf.at_budget(B, tmp / ".parts")
                info = {k: a.info.get(k) for k in ("point", "rounds", "gathered", "candidates", "shards")}
                want = sel.plan
                if (abs(a.cost - want.cost) > 1e-9 * max(1.0, abs(want.cost))
                        or abs(a.accuracy - want.accuracy) > 1e-9):
                    raise OptLLMError(f"internal error: the Ray plan (cost {a.cost:.9g}, accuracy {a.accuracy:.9f}) "
                                      f"differs from the selection's ({want.cost:.9g}, {want.accuracy:.9f})")
                for f in sorted((tmp / ".parts").glob("part-*.parquet")):
                    os.replace(f, tmp / f.name)
                (tmp / ".parts").rmdir()
            elif off_front is not None:
                _write_plan_shards(tmp, off_front, names)
                info = {"written_by": "driver (plan off the front)"}
            _write_ids(tmp / "ids.parquet", plan_ids, plan_texts)
            t["plan_ray"] = time.perf_counter() - t1
            t["total"] = time.perf_counter() - t0
            summary.update(timings_s=t, ray=info)
            write_json(tmp / "summary.json", summary)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if started:
            ray.shutdown()
    choice = None
    if sel.plan is not None:  # read back through the checked reader dispatch uses: every query once
        from optllm.planning.plan import read_plan_shards

        choice = read_plan_shards(out, plan_ids.size, names)
    return RayPlan(plan_ids, names, choice, sel, summary, t, info)


def _write_plan_shards(folder: Path, choice: np.ndarray, names: Sequence[str], rows: int = 1 << 20) -> None:
    """The driver's plan as shards in RayFront's format (query, model, model_name)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for i, lo in enumerate(range(0, choice.size, rows)):
        a = choice[lo:lo + rows]
        pq.write_table(pa.table({
            "query": pa.array(np.arange(lo, lo + a.size, dtype=np.int64)), "model": pa.array(a.astype(np.int16)),
            "model_name": pa.DictionaryArray.from_arrays(pa.array(a.astype(np.int32)), pa.array(list(names)))}),
            str(folder / f"part-{i:05d}.parquet"))


def _write_ids(path: Path, ids: np.ndarray, prompts: Sequence[str]) -> None:
    """query (row in plan order) → id and prompt: what `dispatch` reads with the plan shards."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"query": pa.array(np.arange(ids.size, dtype=np.int64)),
                             "id": pa.array([str(x) for x in ids]),
                             "prompt": pa.array([str(t) for t in prompts], type=pa.large_string())}), str(path))
