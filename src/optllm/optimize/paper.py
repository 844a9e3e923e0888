"""The paper's optimiser, faithfully: OptLLM-M (multi-objective) and OptLLM-S (one target).

OptLLM (Liu et al., ICWS 2024) is a destruction/reconstruction heuristic. We re-implement it
from the paper and the authors' code (``igs/OptLLM_robust.py`` in superyue72/OptLLM), with
the per-query work vectorised in numpy: `optllm_m` gives exactly the same solutions as a
plain-Python reference (``tests/paper_reference.py``; the tests compare them), only faster. It is a heuristic: it
returns about 2·GN solutions with no optimality certificate, unlike `pareto_front`.

Terms used below, for one query i currently on model a and another model e (q is the
predicted probability used by the stage, base or robust; c the cost):
  dq = q[i,e] - q[i,a], dc = c[i,e] - c[i,a];
  free improvement: dc <= 0 and dq >= 0, not both zero;
  upgrade: dc > 0 and dq > 0, gain per dollar dq/dc;
  downgrade: dc < 0 and dq < 0, loss per dollar saved dq/dc (positive).
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from optllm.errors import OptLLMError
from optllm.optimize.solutions import SolutionSet, objectives
from optllm.optimize.types import Assignment

__all__ = ["optllm_m", "optllm_s", "extremes"]


# ---------------------------------------------------------------------- input checks
def _inputs(p_base: Any, p_robust: Any, cost: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pb = np.asarray(p_base, dtype=np.float64)
    pr = pb if p_robust is None else np.asarray(p_robust, dtype=np.float64)
    c = np.asarray(cost, dtype=np.float64)
    if pb.ndim != 2:
        raise OptLLMError(f"predictions must be a [queries, models] matrix, got shape {pb.shape}")
    for name, arr in (("robust predictions", pr), ("cost", c)):
        if arr.shape != pb.shape:
            raise OptLLMError(f"{name} have shape {arr.shape}, predictions {pb.shape}")
    for name, arr in (("predictions", pb), ("robust predictions", pr), ("cost", c)):
        if not np.isfinite(arr).all():
            raise OptLLMError(f"{name} contain NaN or inf")
    if pb.shape[0] == 0 or pb.shape[1] == 0:
        raise OptLLMError(f"need at least one query and one model, got shape {pb.shape}")
    return pb, pr, c


def extremes(p_base: np.ndarray, p_robust: np.ndarray, cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two starting solutions: every query on its cheapest model (ties: higher base p,
    then lower index) and on its highest-robust-p model (ties: lower cost, then lower index)."""
    cheap_mask = cost == cost.min(axis=1, keepdims=True)
    x_cheap = np.where(cheap_mask, p_base, -np.inf).argmax(axis=1)
    high_mask = p_robust == p_robust.max(axis=1, keepdims=True)
    x_high = np.where(high_mask, cost, np.inf).argmin(axis=1)
    return x_cheap.astype(np.intp), x_high.astype(np.intp)


# ---------------------------------------------------------------------- vectorised moves
def _destruct(x: np.ndarray, target: np.ndarray, amount: np.ndarray, step: float) -> np.ndarray | None:
    """Apply per-query moves x[i] -> target[i] by decreasing `amount` (>0 only; ties by query
    index) until their running sum reaches `step`; None when all of them do not reach it."""
    cand = np.flatnonzero(amount > 0)
    if not cand.size:
        return None
    g = amount[cand]
    order = np.argsort(-g, kind="stable")
    run = np.cumsum(g[order])  # sequential sum, as the reference's running total
    hit = np.flatnonzero(run >= step)
    if not hit.size:
        return None
    sel = cand[order[: hit[0] + 1]]
    out = x.copy()
    out[sel] = target[sel]
    return out


def _destruct_up(x: np.ndarray, q: np.ndarray, step: float) -> np.ndarray | None:
    rows = np.arange(x.shape[0])
    best = q.argmax(axis=1)
    return _destruct(x, best, q[rows, best] - q[rows, x], step)


def _destruct_down(x: np.ndarray, c: np.ndarray, step: float) -> np.ndarray | None:
    rows = np.arange(x.shape[0])
    best = c.argmin(axis=1)
    return _destruct(x, best, c[rows, x] - c[rows, best], step)


def _free_targets(x: np.ndarray, q: np.ndarray, c: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row: the most accurate model no dearer than the current one (ties: cheaper,
    then lower index) and whether moving there is a free improvement."""
    a = x[rows]
    qa, ca = q[rows, a], c[rows, a]
    qr, cr = q[rows], c[rows]
    ok = cr <= ca[:, None]
    qmax = np.where(ok, qr, -np.inf).max(axis=1)
    cand = ok & (qr == qmax[:, None])
    cmin = np.where(cand, cr, np.inf).min(axis=1)
    e = (cand & (cr == cmin[:, None])).argmax(axis=1)
    move = (qmax > qa) | ((qmax == qa) & (cmin < ca))
    return e, move


def _tables(x: np.ndarray, q: np.ndarray, c: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per row: best upgrade (max gain per dollar, ties lower model index) and best downgrade
    (min loss per dollar, ties lower model index); -inf / +inf where there is none."""
    a = x[rows]
    ar = np.arange(rows.shape[0])
    dq = q[rows] - q[rows, a][:, None]
    dc = c[rows] - c[rows, a][:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = dq / dc
    ur = np.where((dc > 0) & (dq > 0), r, -np.inf)
    ue = ur.argmax(axis=1)
    lr = np.where((dc < 0) & (dq < 0), r, np.inf)
    le = lr.argmin(axis=1)
    return ur[ar, ue], ue, lr[ar, le], le


def _reconstruct(x: np.ndarray, q: np.ndarray, c: np.ndarray, max_exchanges: int) -> tuple[np.ndarray, int]:
    """Free improvements everywhere, then paired exchanges (best upgrade + best downgrade on
    another query) while the downgrade's loss per dollar is below the upgrade's gain per dollar."""
    x = x.copy()
    allrows = np.arange(x.shape[0])
    e, mv = _free_targets(x, q, c, allrows)
    x[mv] = e[mv]
    U, UE, L, LE = _tables(x, q, c, allrows)
    done = 0
    while done < max_exchanges:
        i = int(U.argmax())
        g = U[i]
        if not g > 0:
            break
        li = L[i]
        L[i] = np.inf
        j = int(L.argmin())
        L[i] = li
        if not L[j] < g:
            break
        x[i] = UE[i]
        x[j] = LE[j]
        rows = np.array([i, j])
        e, mv = _free_targets(x, q, c, rows)
        x[rows[mv]] = e[mv]
        u, ue, l, le = _tables(x, q, c, rows)
        U[rows], UE[rows], L[rows], LE[rows] = u, ue, l, le
        done += 1
    return x, done


def _steps(pb: np.ndarray, c: np.ndarray, x_cheap: np.ndarray, x_high: np.ndarray, gn: int) -> tuple[float, float]:
    """Step sizes: the base-p gain (as a sum over queries) and the cost saving per step."""
    (c_lo, c_hi), (a_lo, a_hi) = objectives(np.vstack([x_cheap, x_high]), pb, c)
    n = x_cheap.shape[0]
    return float((a_hi - a_lo) / gn * n), float((c_hi - c_lo) / gn)


def _default_cap(n: int, m: int, max_exchanges: int | None) -> int:
    return int(max_exchanges) if max_exchanges is not None else 4 * n * m


def optllm_m(
    p_base: np.ndarray,
    p_robust: np.ndarray | None,
    cost: np.ndarray,
    gn: int = 50,
    *,
    models: Sequence[str] | None = None,
    max_exchanges: int | None = None,
) -> SolutionSet:
    """OptLLM-M: the paper's multi-objective heuristic; about 2·GN non-dominated solutions.

    Steps (paper, Sec. III-C, and the authors' ``OptLLM_robust.py``):

    1. Two extremes: every query on its cheapest model (ties: higher base p) and on its
       highest robust-p model (ties: lower cost).
    2. The gap between them is split into `gn` steps: a base-p gain step
       (Σ_i p_base at the accurate end − at the cheap end) / gn and a cost step
       (cost of the accurate end − of the cheap end) / gn.
    3. Up-sweep from the cheap end, gn − 1 times: destruction = each query's largest base-p
       gain (move to its highest-p model), applied by decreasing gain until the gains add up
       to the step; reconstruction with base p. The next step starts from the result.
    4. Down-sweep from the accurate end, gn − 1 times: destruction = each query's largest
       saving (move to its cheapest model), applied by decreasing saving until the savings
       add up to the step; reconstruction with robust p.
    5. Reconstruction: free improvements first, then paired exchanges — the best upgrade
       (highest gain per dollar) with the best downgrade (lowest loss per dollar) — while
       that loss per dollar is below that gain per dollar; free improvements again on the
       touched queries after each exchange.
    6. Pool the two extremes and every reconstructed solution; keep the non-dominated ones.

    Choices the paper leaves open (and what the authors' code does where it differs):

    - Steps per sweep: gn − 1 (the code's ``range(1, density)``), so up to 2·gn candidates.
    - A sweep stops early when a destruction cannot reach its step (the code's ``None``);
      a sweep is skipped when its step is <= 0 (extremes not apart).
    - Per query, destruction moves to the single best model (highest p / cheapest; ties:
      lower model index); candidates are applied by decreasing gain or saving, ties by
      query index, and the step is reached when the running sum is >= the step (as in the
      code).
    - Which free improvement: we move to the most accurate model no dearer than the current
      one (ties: cheaper, then lower index), which is non-dominated for that query, so one
      move suffices. The code takes the first such model in column order and may need
      several passes; it also does a single initial pass.
    - "Worst loss per dollar" is read as the code computes it: the downgrade losing the
      least accuracy per dollar saved (the least bad downgrade), compared with the best
      upgrade's gain per dollar.
    - One upgrade and one downgrade per exchange, ties broken by lowest query then model
      index (the code applies every tied cell at once, which can apply two moves to one
      query through a stale index). The downgrade is taken from another query than the
      upgrade.
    - At most `max_exchanges` exchanges per reconstruction (default 4·n·m, a guard against
      cycling the paper does not discuss; the count used is in ``info``).
    - Pooled solutions are all scored with base p. The code scores the down-sweep with
      robust p and the rest with base p, mixing two scales in one non-dominated filter.
    - Destruction-stage solutions are not pooled (as in the code).
    - `p_robust=None` means p_base (α = 0, the paper's ablation without robust prediction).

    Returns a `SolutionSet` whose accuracies are mean p_base; `info` has the seconds, the
    candidate count and exchanges per reconstruction.
    """
    t0 = time.perf_counter()
    pb, pr, c = _inputs(p_base, p_robust, cost)
    if int(gn) < 1:
        raise OptLLMError(f"gn must be >= 1, got {gn}")
    gn = int(gn)
    n, m = pb.shape
    cap = _default_cap(n, m, max_exchanges)
    x_cheap, x_high = extremes(pb, pr, c)
    acc_step, cost_step = _steps(pb, c, x_cheap, x_high, gn)
    pool = [x_cheap, x_high]
    exchanges: list[int] = []
    sweeps = (  # (step, start, destruction, p used to reconstruct): up from the cheap end, down from the accurate end
        (acc_step, x_cheap, lambda x: _destruct_up(x, pb, acc_step), pb),
        (cost_step, x_high, lambda x: _destruct_down(x, c, cost_step), pr),
    )
    for step, s, destruct, p_rec in sweeps:
        if step <= 0:
            continue
        for _ in range(1, gn):
            d = destruct(s)
            if d is None:
                break
            s, k = _reconstruct(d, p_rec, c, cap)
            exchanges.append(k)
            pool.append(s)
    info = {"gn": gn, "exchanges": exchanges, "max_exchanges": cap,
            "hit_exchange_cap": bool(any(k >= cap for k in exchanges))}
    out = SolutionSet.from_assignments(np.vstack(pool), pb, c, models=models, method=f"optllm-m(gn={gn})", info=info)
    out.info["seconds"] = time.perf_counter() - t0
    return out


# ---------------------------------------------------------------------- OptLLM-S
def optllm_s(
    p: np.ndarray,
    cost: np.ndarray,
    budget: float | None = None,
    min_accuracy: float | None = None,
    *,
    p_robust: np.ndarray | None = None,
    gn: int = 50,
    models: Sequence[str] | None = None,
) -> Assignment:
    """OptLLM-S: one plan for a budget (most accurate within it) or an accuracy target
    (cheapest reaching it), by OptLLM-M's moves plus a refinement stage.

    Exactly one of `budget` (USD) or `min_accuracy` (mean p) must be given.

    - Budget: start from the most accurate OptLLM-M solution within the budget, then use the
      rest of the budget: free improvements, and repeatedly the upgrade with the highest gain
      per dollar among those that still fit (ties: lower query, then model index).
    - Target: two candidates, the cheaper kept (ties: the more accurate). (a) the cheapest
      OptLLM-M solution reaching the target; (b) the most accurate one below it, raised by
      upgrades with the highest gain per dollar until it reaches the target. Each is then
      refined by downgrades with the lowest loss per dollar saved that keep it at or above
      the target, so it just reaches the target.
    Uncertified: `upper_bound` / `cost_lower_bound` are NaN. Raises `OptLLMError` when the
    budget is below the cheapest assignment or the target above the best predicted one.
    """
    t0 = time.perf_counter()
    if (budget is None) == (min_accuracy is None):
        raise OptLLMError("optllm_s needs exactly one of budget or min_accuracy")
    pb, pr, c = _inputs(p, p_robust, cost)
    n = pb.shape[0]
    rows = np.arange(n)
    front = optllm_m(pb, pr, c, gn=gn, models=models)

    def finish(x: np.ndarray, info: dict[str, Any], **kw: Any) -> Assignment:
        info.update(method="optllm-s", gn=gn, seconds=time.perf_counter() - t0, certified=False)
        return Assignment(models=x, cost=float(c[rows, x].sum()), accuracy=float(pb[rows, x].mean()),
                          model_names=tuple(models) if models is not None else None, info=info, **kw)

    if budget is not None:
        budget = float(budget)
        floor = float(c.min(axis=1).sum())
        if budget < floor * (1 - 1e-12):
            raise OptLLMError(f"budget {budget:.6g} is below the cheapest possible assignment ({floor:.6g})")
        ok = np.flatnonzero(front.costs <= budget)
        x = front.assignment(int(ok[-1])).copy() if ok.size else extremes(pb, pr, c)[0]
        x, moves = _fill_budget(x, pb, c, budget)
        return finish(x, {"refinement_moves": moves}, cost_limit=budget)

    target = float(min_accuracy)  # type: ignore[arg-type]
    top = float(pb.max(axis=1).mean())
    if target > top + 1e-12:
        raise OptLLMError(f"accuracy target {target:.6f} is above the best predicted accuracy ({top:.6f})")
    need = target * n
    cands = []
    ok = np.flatnonzero(front.accuracies >= target)
    if ok.size:
        cands.append(front.assignment(int(ok[0])).copy())
    below = np.flatnonzero(front.accuracies < target)
    if below.size:
        cands.append(_raise_to(front.assignment(int(below[-1])).copy(), pb, c, need))
    best = None
    for x in cands:
        if pb[rows, x].sum() < need:
            continue
        x, _ = _trim_to(x, pb, c, need)
        key = (float(c[rows, x].sum()), -float(pb[rows, x].mean()))
        if best is None or key < best[0]:
            best = (key, x)
    if best is None:  # only reachable through rounding: fall back to the most accurate plan
        best = ((0.0, 0.0), pb.argmax(axis=1))
    return finish(best[1], {}, accuracy_target=target)


def _fill_budget(x: np.ndarray, q: np.ndarray, c: np.ndarray, budget: float) -> tuple[np.ndarray, int]:
    """Greedy: free improvements, then the best-ratio upgrade that fits, until none fits."""
    x = x.copy()
    rows = np.arange(x.shape[0])
    moves = 0
    while True:
        e, mv = _free_targets(x, q, c, rows)
        x[mv] = e[mv]
        left = budget - c[rows, x].sum()
        dq = q - q[rows, x][:, None]
        dc = c - c[rows, x][:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where((dc > 0) & (dq > 0) & (dc <= left), dq / dc, -np.inf)
        k = int(r.argmax())
        if not r.flat[k] > 0:
            return x, moves
        x[k // q.shape[1]] = k % q.shape[1]
        moves += 1


def _raise_to(x: np.ndarray, q: np.ndarray, c: np.ndarray, need: float) -> np.ndarray:
    """Best-ratio upgrades (after free improvements) until Σ q reaches `need`."""
    x = x.copy()
    rows = np.arange(x.shape[0])
    while True:
        e, mv = _free_targets(x, q, c, rows)
        x[mv] = e[mv]
        if q[rows, x].sum() >= need:
            return x
        dq = q - q[rows, x][:, None]
        dc = c - c[rows, x][:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where((dc > 0) & (dq > 0), dq / dc, -np.inf)
        k = int(r.argmax())
        if not r.flat[k] > 0:
            return x
        x[k // q.shape[1]] = k % q.shape[1]


def _trim_to(x: np.ndarray, q: np.ndarray, c: np.ndarray, need: float) -> tuple[np.ndarray, int]:
    """Lowest-loss-per-dollar downgrades that keep Σ q >= `need`, until none does."""
    x = x.copy()
    rows = np.arange(x.shape[0])
    moves = 0
    while True:
        e, mv = _free_targets(x, q, c, rows)
        x[mv] = e[mv]
        slack = q[rows, x].sum() - need
        dq = q - q[rows, x][:, None]
        dc = c - c[rows, x][:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where((dc < 0) & (dq < 0) & (-dq <= slack), dq / dc, np.inf)
        k = int(r.argmin())
        if not np.isfinite(r.flat[k]):
            return x, moves
        x[k // q.shape[1]] = k % q.shape[1]
        moves += 1
