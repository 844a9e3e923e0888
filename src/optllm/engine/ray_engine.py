"""The exact front's plan on a Ray cluster: per-shard hulls on the workers, the global plan at a
budget or an accuracy target by bisection on the dual price, never all moves on one node.

Each shard of queries (rows of p/cost, in memory or one Parquet file of a dataset with
columns ``p_<model>``, ``cost_<model>``) becomes a Ray object holding its hull moves
(`optllm.optimize.front.front_block`, the single-process hull code), sorted by key = −slope
with running sums of Δcost and Δp. The single-process `Front` orders all moves by
(key, query, step); a shard's sorted list is that order restricted to the shard, so "every
move with key ≤ t" is a prefix of every shard's list and of the global list at once.

At a budget B (or a target A) the driver bisects t over the ordered float64 values between
the smallest and the largest key: each round every shard reports (moves taken, ΣΔcost, ΣΔp)
at t in O(log moves), a few numbers. It stops once the bracket (t_lo, t_hi] holds at most
`gather_cap` moves (or t_lo, t_hi are adjacent floats, a tie block); only those moves are
gathered and merged in the global order (stable sort on the key of the shards' lists
concatenated in query order, the same tie-breaking as the single-process merge), which fixes
the front point k exactly as `Front.at_budget` / `Front.at_accuracy` do. Their last step (the
greedy fill of the leftover budget, or the trim of the accuracy surplus) is run on the driver
with the same kernels, over the candidate moves each shard sends: moves whose Δcost (Δp) fits
the leftover, pruned to the chains that can still be reached, so usually a small set (counted
in `info["candidates"]`). Each shard then writes or returns its own rows of the assignment.

The assignment equals the single-process one at the same budget/target; the running costs are
sums in another order, so a budget within rounding (~1e-12 relative) of a breakpoint could
land on the other side of it (never seen in the tests, whose integer-valued cases are exact).
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from optllm.engine import RAY_HINT, cluster_workers, join_or_start
from optllm.errors import OptLLMError
from optllm.optimize.front import _TOL, _fill_kernel, _jit, _trim_kernel, front_block
from optllm.optimize.types import Assignment

__all__ = ["RayFront", "ray_plan", "scan_parquet", "PART_NAMES"]

PART_NAMES = ("part-*.parquet",)
GATHER_CAP = 1 << 16
_PRUNE_REL = 1e-9  # candidate pruning is a superset test: the kernels decide exactly


# ====================================================================== shard side (plain functions)
def _state(blk: Any, q0: int) -> dict[str, Any]:
    key = blk.key
    return {
        "q0": int(q0), "rows": blk.rows, "m": blk.m, "start": blk.start,
        "query": blk.query, "src": blk.src, "dst": blk.dst, "dc": blk.dcost, "dp": blk.dp, "key": key,
        "cumc": np.cumsum(blk.dcost), "cump": np.cumsum(blk.dp),
        "start_cost": float(np.sum(blk.start_cost)), "start_psum": float(np.sum(blk.start_p)),
    }


def _summary(st: dict[str, Any]) -> dict[str, Any]:
    M = int(st["key"].shape[0])
    return {"q0": st["q0"], "rows": st["rows"], "m": st["m"], "moves": M,
            "start_cost": st["start_cost"], "start_psum": st["start_psum"],
            "tot_c": float(st["cumc"][-1]) if M else 0.0, "tot_p": float(st["cump"][-1]) if M else 0.0,
            "kmin": float(st["key"][0]) if M else math.inf, "kmax": float(st["key"][-1]) if M else -math.inf,
            "nbytes": int(sum(v.nbytes for v in st.values() if isinstance(v, np.ndarray)))}


def _build_arrays(p: np.ndarray, cost: np.ndarray, q0: int, backend: str) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        blk = front_block(p, cost, 0, backend=backend, sort=True)
    except OptLLMError as e:
        raise OptLLMError(f"{e} (shard starting at query {q0})") from None
    st = _state(blk, q0)
    return st, _summary(st)


def _read_parquet(path: str, models: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow.parquet as pq

    cols = [f"p_{k}" for k in models] + [f"cost_{k}" for k in models]
    try:
        tbl = pq.read_table(path, columns=cols)
    except Exception as e:
        raise OptLLMError(f"cannot read {path}: {type(e).__name__}: {e}".splitlines()[0]) from None
    m = len(models)
    arr = [np.asarray(tbl.column(c).to_numpy(zero_copy_only=False), dtype=np.float64) for c in cols]
    return np.column_stack(arr[:m]), np.column_stack(arr[m:])


def _build_parquet(path: str, q0: int, models: Sequence[str], backend: str) -> tuple[dict[str, Any], dict[str, Any]]:
    p, cost = _read_parquet(path, models)
    return _build_arrays(p, cost, q0, backend)


def _count(t: float, *states: dict[str, Any]) -> list[tuple[int, float, float]]:
    out = []
    for st in states:
        c = int(np.searchsorted(st["key"], t, side="right"))
        out.append((c, float(st["cumc"][c - 1]) if c else 0.0, float(st["cump"][c - 1]) if c else 0.0))
    return out


def _rows(st: dict[str, Any], pos: np.ndarray, cur: np.ndarray | None = None) -> dict[str, np.ndarray]:
    r = {"key": st["key"][pos], "q": st["query"][pos].astype(np.int64) + st["q0"], "src": st["src"][pos],
         "dst": st["dst"][pos], "dc": st["dc"][pos], "dp": st["dp"][pos], "pos": pos.astype(np.int64)}
    if cur is not None:
        r["cur"] = cur
    return r


def _between(spans: Sequence[tuple[int, int]], *states: dict[str, Any]) -> list[dict[str, np.ndarray]]:
    return [_rows(st, np.arange(a, b)) for (a, b), st in zip(spans, states)]


def _chain_prune(q: np.ndarray, v: np.ndarray, lim: float, from_end: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Moves of a list (each query's chain in order) that can be reached within `lim`: per
    query the prefix (from_end: the suffix) of its chain whose running sum of v stays ≤ lim.
    Returns (order, keep, edge): `order` groups the list by query (chain order kept), `keep`
    flags order's entries, `edge[i]` is the index (into the list) of order[i]'s query's first
    (from_end: last) move. One vectorised pass per chain step (at most m−1)."""
    n = q.shape[0]
    order = np.argsort(q, kind="stable")
    qs = q[order]
    new = np.empty(n, dtype=bool)
    new[0] = True
    new[1:] = qs[1:] != qs[:-1]
    gstart = np.flatnonzero(new)
    grp = np.cumsum(new) - 1
    gend = np.append(gstart[1:], n)
    rank = (gend[grp] - 1 - np.arange(n)) if from_end else (np.arange(n) - gstart[grp])
    vs = v[order]
    acc = np.zeros(gstart.shape[0])
    alive = np.ones(gstart.shape[0], dtype=bool)
    keep = np.zeros(n, dtype=bool)
    for s in range(int(rank.max()) + 1):
        i = np.flatnonzero(rank == s)
        g = grp[i]
        acc[g] += vs[i]
        ok = alive[g] & (acc[g] <= lim)
        alive[g] = ok
        keep[i] = ok
    edge = order[(gend - 1 if from_end else gstart)[grp]]
    return order, keep, edge


def _candidates(args: Sequence[tuple[int, int, float, bool]], *states: dict[str, Any]) -> list[dict[str, np.ndarray]]:
    """Per shard (cut, excluded position or −1, limit, fill?): the fill candidates (moves at
    positions ≥ cut, Δcost ≤ limit, reachable) or the trim candidates (applied moves, Δp ≤
    limit, undoable from the chain's end); `cur` is the query's model at the front point."""
    out = []
    for (cut, excl, lim, fill), st in zip(args, states):
        M = int(st["key"].shape[0])
        lo, hi = (cut, M) if fill else (0, cut)
        if hi <= lo:
            out.append(_rows(st, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=st["src"].dtype)))
            continue
        q = st["query"][lo:hi]
        v = (st["dc"] if fill else st["dp"])[lo:hi]
        order, keep, edge = _chain_prune(q, v, lim * (1 + _PRUNE_REL), from_end=not fill)
        if excl >= 0:
            keep &= q[order] != st["query"][excl]
        cur = (st["src"][lo:hi][edge] if fill else st["dst"][lo:hi][edge])[keep]
        sel = order[keep]
        o = np.argsort(sel, kind="stable")
        out.append(_rows(st, sel[o] + lo, cur[o]))
    return out


def _assign_rows(st: dict[str, Any], cut: int, oq: np.ndarray, om: np.ndarray) -> np.ndarray:
    """The shard's model per query after its first `cut` moves, with the driver's overrides."""
    a = st["start"].astype(np.intp)
    if cut:
        jit = _jit()
        if jit is not None:
            jit["apply"](a, st["query"], st["dst"], cut)
        else:
            last = np.full(st["rows"], -1, dtype=np.int64)
            np.maximum.at(last, st["query"][:cut], np.arange(cut))
            hit = last >= 0
            a[hit] = st["dst"][last[hit]]
    if oq.size:
        a[oq - st["q0"]] = om
    return a.astype(st["start"].dtype)


def _assign(jobs: Sequence[tuple[int, np.ndarray, np.ndarray]], *states: dict[str, Any]) -> list[np.ndarray]:
    return [_assign_rows(st, cut, oq, om) for (cut, oq, om), st in zip(jobs, states)]


def _write(folder: str, names: Sequence[str] | None, jobs: Sequence[tuple[int, int, np.ndarray, np.ndarray]],
           *states: dict[str, Any]) -> list[int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = []
    for (idx, cut, oq, om), st in zip(jobs, states):
        a = _assign_rows(st, cut, oq, om)
        cols = {"query": pa.array(np.arange(st["q0"], st["q0"] + st["rows"], dtype=np.int64)),
                "model": pa.array(a.astype(np.int16))}
        if names:
            cols["model_name"] = pa.DictionaryArray.from_arrays(pa.array(a.astype(np.int32)), pa.array(list(names)))
        pq.write_table(pa.table(cols), str(Path(folder) / f"part-{idx:05d}.parquet"))
        out.append(int(st["rows"]))
    return out


# ====================================================================== driver side
_REMOTE: dict[str, Any] | None = None


def _ray() -> Any:
    try:
        import ray
    except Exception:
        raise OptLLMError(RAY_HINT) from None
    return ray


def _remote() -> dict[str, Any]:
    global _REMOTE
    if _REMOTE is None:
        ray = _ray()
        _REMOTE = {"build": ray.remote(num_returns=2)(_build_arrays),
                   "build_parquet": ray.remote(num_returns=2)(_build_parquet),
                   **{k: ray.remote(f) for k, f in (("count", _count), ("between", _between),
                                                      ("candidates", _candidates), ("assign", _assign),
                                                      ("write", _write))}}
    return _REMOTE


def _get(refs: Any) -> Any:
    ray = _ray()
    try:
        return ray.get(refs)
    except Exception as e:
        cause = getattr(e, "cause", None)
        if isinstance(e, OptLLMError) or isinstance(cause, OptLLMError):
            raise OptLLMError(str(cause if isinstance(cause, OptLLMError) else e).splitlines()[-1]) from None
        raise


def _f2i(x: float) -> int:
    """Order-preserving map of a float64 (not NaN) to an integer."""
    u = int(np.float64(x).view(np.int64))
    return u if u >= 0 else -(u & 0x7FFF_FFFF_FFFF_FFFF) - 1


def _i2f(i: int) -> float:
    u = i if i >= 0 else ((-i - 1) | (1 << 63)) - (1 << 64)
    return float(np.int64(u).view(np.float64))


def _merge(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate shard lists in shard (query) order and stable-sort on the key: the global
    (key, query, step) order of the single-process front. Adds `shard`."""
    cat = {f: np.concatenate([p[f] for p in parts]) for f in parts[0]}
    cat["shard"] = np.repeat(np.arange(len(parts)), [p["key"].shape[0] for p in parts])
    o = np.argsort(cat["key"], kind="stable")
    return {f: v[o] for f, v in cat.items()}


def scan_parquet(path: str | Path) -> tuple[list[str], list[int], tuple[str, ...]]:
    """The files of a Parquet dataset (a file, or a folder's *.parquet in name order), their
    row counts and the model names (columns p_<model> with a matching cost_<model>)."""
    import pyarrow.parquet as pq

    pth = Path(path)
    files = sorted(pth.glob("*.parquet")) if pth.is_dir() else [pth] if pth.is_file() else []
    if not files:
        raise OptLLMError(f"{path}: no Parquet files (give a .parquet file or a folder of them)")
    try:
        names = pq.read_schema(files[0]).names
    except Exception as e:
        raise OptLLMError(f"cannot read {files[0]}: {type(e).__name__}") from None
    models = tuple(c[2:] for c in names if c.startswith("p_") and f"cost_{c[2:]}" in names)
    if not models:
        raise OptLLMError(f"{files[0]}: no column pairs p_<model>, cost_<model> (columns: {', '.join(names[:8])})")
    rows = []
    need = {f"p_{k}" for k in models} | {f"cost_{k}" for k in models}
    for f in files:
        try:
            md = pq.read_metadata(f)
            have = set(pq.read_schema(f).names)
        except Exception as e:
            raise OptLLMError(f"cannot read {f}: {type(e).__name__}") from None
        if not need <= have:
            raise OptLLMError(f"{f}: missing columns {', '.join(sorted(need - have)[:4])} (first file has them)")
        rows.append(int(md.num_rows))
    if not sum(rows):
        raise OptLLMError(f"{path}: the Parquet dataset has no rows")
    keep = [i for i, r in enumerate(rows) if r]
    return [str(files[i]) for i in keep], [rows[i] for i in keep], models


class RayFront:
    """The exact front of p [n, m] / cost [n, m] kept as per-shard hull moves on a Ray
    cluster; `at_budget` / `at_accuracy` give the same assignment as `pareto_front(p, cost)`'s.

    Input: arrays (`p`, `cost`) split into `shards` row blocks, or `parquet` (a file or a
    folder of Parquet files with columns p_<model>, cost_<model>; one shard per file, read on
    the workers). Uses the running Ray session, or starts one (`address`: join that cluster;
    otherwise a local one with `workers` CPUs) and stops it in `close`.
    """

    def __init__(self, p: Any = None, cost: Any = None, *, parquet: str | Path | None = None,
                 models: Sequence[str] | None = None, shards: int | None = None, workers: int | None = None,
                 address: str | None = None, backend: str = "auto", gather_cap: int = GATHER_CAP) -> None:
        ray = _ray()
        if gather_cap < 1:
            raise OptLLMError(f"gather_cap must be ≥ 1, got {gather_cap}")
        if shards is not None and shards < 1:
            raise OptLLMError(f"shards must be ≥ 1, got {shards}")
        if workers is not None and workers < 1:
            raise OptLLMError(f"workers must be ≥ 1, got {workers}")
        scanned = scan_parquet(parquet) if parquet is not None else None  # before any cluster starts
        t0 = time.perf_counter()
        self._started = join_or_start(address, workers)
        self.start_s = time.perf_counter() - t0
        self.workers = cluster_workers(workers)
        self.gather_cap = int(gather_cap)
        R = _remote()
        t1 = time.perf_counter()
        if parquet is not None:
            if p is not None or cost is not None:
                raise OptLLMError("give either p and cost or parquet, not both")
            files, rows, names = scanned
            if models is not None and tuple(models) != names:
                raise OptLLMError(f"models {tuple(models)} differ from the dataset's {names}")
            q0s = np.concatenate([[0], np.cumsum(rows)[:-1]]).tolist()
            pairs = [R["build_parquet"].remote(f, int(q), names, backend) for f, q in zip(files, q0s)]
        else:
            if p is None or cost is None:
                raise OptLLMError("give p and cost (or parquet)")
            if np.ndim(p) != 2 or np.shape(p) != np.shape(cost):
                raise OptLLMError(f"p and cost must be 2-D and of the same shape; got {np.shape(p)}, {np.shape(cost)}")
            n = int(np.shape(p)[0])
            if n == 0 or np.shape(p)[1] == 0:
                raise OptLLMError(f"need at least one query and one model; got shape {np.shape(p)}")
            S = min(int(shards or self.workers), n)
            cuts = np.linspace(0, n, S + 1).astype(np.int64)
            names = tuple(str(x) for x in models) if models is not None else None
            if names is not None and len(names) != np.shape(p)[1]:
                raise OptLLMError(f"models has {len(names)} names but the arrays have {np.shape(p)[1]} columns")
            pairs = [R["build"].remote(ray.put(np.ascontiguousarray(p[a:b], dtype=np.float64)),
                                       ray.put(np.ascontiguousarray(cost[a:b], dtype=np.float64)), int(a), backend)
                     for a, b in zip(cuts[:-1], cuts[1:])]
        self.models = names
        self._states = [s for s, _ in pairs]
        summ = _get([m for _, m in pairs])
        self.build_s = time.perf_counter() - t1
        self.S = len(self._states)
        self.n = int(sum(s["rows"] for s in summ))
        self.m = int(summ[0]["m"])
        if any(s["m"] != self.m for s in summ):
            raise OptLLMError("shards have different numbers of models")
        self._moves = np.array([s["moves"] for s in summ], dtype=np.int64)
        self.n_moves = int(self._moves.sum())
        self._q0 = np.array([s["q0"] for s in summ], dtype=np.int64)
        self.cost_lo = float(sum(s["start_cost"] for s in summ))
        self.psum_lo = float(sum(s["start_psum"] for s in summ))
        self.cost_hi = self.cost_lo + float(sum(s["tot_c"] for s in summ))
        self.acc_lo = self.psum_lo / self.n
        self.acc_hi = (self.psum_lo + float(sum(s["tot_p"] for s in summ))) / self.n
        self._kmin = min(s["kmin"] for s in summ)
        self._kmax = max(s["kmax"] for s in summ)
        self.shard_bytes = [int(s["nbytes"]) for s in summ]
        g = np.array_split(np.arange(self.S), min(self.workers, self.S))
        self._groups = [x.tolist() for x in g if x.size]

    # ------------------------------------------------------------------ plumbing
    def close(self) -> None:
        """Drop the shard objects; stop Ray if this object started it."""
        self._states = []
        if self._started:
            _ray().shutdown()
            self._started = False

    def __enter__(self) -> "RayFront":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __len__(self) -> int:
        return self.n_moves + 1

    def _call(self, name: str, per_shard: Sequence[Any] | None, *head: Any) -> list[Any]:
        """Run `name` once per shard group; per_shard[i] is shard i's argument. Results in shard order."""
        f = _remote()[name]
        refs = [f.remote(*head, *([[per_shard[i] for i in grp]] if per_shard is not None else []),
                         *[self._states[i] for i in grp]) for grp in self._groups]
        return [x for part in _get(refs) for x in part]

    def _ctol(self) -> float:
        return _TOL * max(abs(self.cost_hi), 1.0)

    def _bisect(self, over: Any) -> tuple[np.ndarray, float, float, np.ndarray, int]:
        """Bisect t over ordered floats until (t_lo, t_hi] holds ≤ gather_cap moves or is one
        key value; `over(C, P)` is True past the wanted point. Returns (taken per shard at t_lo,
        ΣΔcost, ΣΔp at t_lo, taken per shard at t_hi, rounds)."""
        lo_i, hi_i = _f2i(self._kmin) - 1, _f2i(self._kmax)
        n_lo, c_lo, p_lo = np.zeros(self.S, dtype=np.int64), 0.0, 0.0
        n_hi = self._moves.copy()
        rounds = 0
        while int(n_hi.sum() - n_lo.sum()) > self.gather_cap and hi_i - lo_i > 1:
            mid = lo_i + (hi_i - lo_i) // 2
            res = self._call("count", None, _i2f(mid))
            rounds += 1
            cnt = np.array([r[0] for r in res], dtype=np.int64)
            C, P = float(sum(r[1] for r in res)), float(sum(r[2] for r in res))
            if over(C, P):
                hi_i, n_hi = mid, cnt
            else:
                lo_i, n_lo, c_lo, p_lo = mid, cnt, C, P
        return n_lo, c_lo, p_lo, n_hi, rounds

    def _bracket(self, n_lo: np.ndarray, n_hi: np.ndarray) -> dict[str, np.ndarray]:
        return _merge(self._call("between", list(zip(n_lo.tolist(), n_hi.tolist()))))

    def _gather_candidates(self, cuts: np.ndarray, excl_shard: int, excl_pos: int, lim: float,
                           fill: bool) -> dict[str, np.ndarray]:
        args = [(int(cuts[s]), excl_pos if s == excl_shard else -1, float(lim), fill) for s in range(self.S)]
        return _merge(self._call("candidates", args))

    def _overrides(self, cand: dict[str, np.ndarray], run: Any) -> tuple[float, float, int, np.ndarray, np.ndarray]:
        """Run the single-process fill/trim kernel `run(a, q, idx, sufmin)` on the candidate
        moves (queries renumbered locally). Returns (Σ, Σ, count, changed queries, models)."""
        uq, qi = np.unique(cand["q"], return_inverse=True)
        a = np.empty(uq.shape[0], dtype=np.intp)
        a[qi] = cand["cur"]
        before = a.copy()
        x, y, count = run(a, qi.astype(np.int64))
        ch = a != before
        return float(x), float(y), int(count), uq[ch], a[ch]

    def _finish(self, cuts: np.ndarray, oq: np.ndarray, om: np.ndarray, out: str | Path | None) -> np.ndarray | None:
        owner = np.searchsorted(self._q0, oq, side="right") - 1
        per = [(oq[owner == s], om[owner == s]) for s in range(self.S)]
        if out is None:
            parts = self._call("assign", [(int(cuts[s]), *per[s]) for s in range(self.S)])
            return np.concatenate(parts).astype(np.intp)
        from optllm.io import atomic_dir

        with atomic_dir(out, PART_NAMES) as tmp:
            self._call("write", [(s, int(cuts[s]), *per[s]) for s in range(self.S)], str(tmp), self.models)
        return None

    def _plan(self, a: np.ndarray | None, cost: float, acc: float, info: dict[str, Any], **kw: Any) -> Assignment:
        info.update(engine="ray", shards=self.S, workers=self.workers, moves=self.n_moves)
        models = a if a is not None else np.zeros(0, dtype=np.intp)
        return Assignment(models=models, cost=float(cost), accuracy=float(acc), model_names=self.models, info=info, **kw)

    # ------------------------------------------------------------------ plans
    def at_budget(self, budget: float, out: str | Path | None = None) -> Assignment:
        """`Front.at_budget` on the cluster. With `out`, the plan is written there as Parquet
        shards (part-NNNNN.parquet: query, model[, model_name]; all-or-nothing) and
        `models` is empty."""
        t0 = time.perf_counter()
        B = float(budget)
        lo, hi = self.cost_lo, self.cost_hi
        if not math.isfinite(B) or B < lo - self._ctol():
            raise OptLLMError(f"budget {B:.6g} is below the cheapest assignment (cost {lo:.6g}); "
                              f"reachable costs: {lo:.6g} to {hi:.6g} (a larger budget buys nothing more)")
        info: dict[str, Any] = {"method": "exact", "certified": True}
        if B >= hi - self._ctol() or self.n_moves == 0:  # hi is a sum in another order: a budget
            # equal to the single-process front's top cost buys the top here as well
            a = self._finish(self._moves, np.zeros(0, np.int64), np.zeros(0, np.intp), out)
            acc = self.acc_hi
            info.update(point=self.n_moves, fill_moves=0, rounds=0, gathered=0, candidates=0,
                        seconds=time.perf_counter() - t0)
            return self._plan(a, hi, acc, info, upper_bound=float(acc), cost_limit=B)
        Bp = max(B, lo)
        n_lo, c_lo, p_lo, n_hi, rounds = self._bisect(lambda C, P: lo + C > Bp)
        br = self._bracket(n_lo, n_hi)
        L = br["key"].shape[0]
        base_c, base_p = lo + c_lo, self.psum_lo + p_lo
        costs = np.concatenate([[base_c], base_c + np.cumsum(br["dc"])])
        psums = np.concatenate([[base_p], base_p + np.cumsum(br["dp"])])
        kl = min(max(int(np.searchsorted(costs, B, side="right")) - 1, 0), L - 1)
        k = int(n_lo.sum()) + kl
        room = max(B - float(costs[kl]), 0.0)
        frac = min(room / float(br["dc"][kl]), 1.0)
        acc_k = float(psums[kl]) / self.n
        ub = acc_k + float(br["dp"][kl]) * frac / self.n
        cuts = n_lo + np.bincount(br["shard"][:kl], minlength=self.S)
        spent = gained = 0.0
        count = ncand = 0
        oq, om = np.zeros(0, np.int64), np.zeros(0, np.intp)
        if room > 0 and k + 1 < self.n_moves:
            cand = self._gather_candidates(cuts, int(br["shard"][kl]), int(br["pos"][kl]), room, fill=True)
            sel = cand["dc"] <= room  # the single-process candidate rule
            cand = {f: v[sel] for f, v in cand.items()}
            ncand = int(cand["key"].shape[0])
            if ncand:
                fill = (_jit() or {}).get("fill", _fill_kernel)
                idx = np.arange(ncand, dtype=np.int64)
                sufmin = np.minimum.accumulate(cand["dc"][::-1])[::-1].copy()
                spent, gained, count, oq, om = self._overrides(
                    cand, lambda a, q: fill(a, q, cand["src"], cand["dst"], cand["dc"], cand["dp"], idx, sufmin, room))
        a = self._finish(cuts, oq, om, out)
        acc = acc_k + gained / self.n
        info.update(point=k, fill_moves=count, rounds=rounds, gathered=L, candidates=ncand,
                    seconds=time.perf_counter() - t0)
        return self._plan(a, float(costs[kl]) + spent, acc, info, upper_bound=max(ub, acc), cost_limit=B)

    def at_accuracy(self, target: float, out: str | Path | None = None) -> Assignment:
        """`Front.at_accuracy` on the cluster (`out` as in `at_budget`)."""
        t0 = time.perf_counter()
        A = float(target)
        lo, hi = self.acc_lo, self.acc_hi
        if not math.isfinite(A) or A > hi + _TOL:
            raise OptLLMError(f"accuracy target {A:.6g} is above the best reachable expected accuracy {hi:.6f}; "
                              f"reachable: {lo:.6f} (cost {self.cost_lo:.6g}) to {hi:.6f} (cost {self.cost_hi:.6g})")
        info: dict[str, Any] = {"method": "exact", "certified": True}
        if A <= lo or lo >= A - _TOL or self.n_moves == 0:
            # point 0 (the single-process front also lands there when A − tol ≤ its start)
            a = self._finish(np.zeros(self.S, np.int64), np.zeros(0, np.int64), np.zeros(0, np.intp), out)
            info.update(point=0, trim_moves=0, rounds=0, gathered=0, candidates=0, seconds=time.perf_counter() - t0)
            return self._plan(a, self.cost_lo, lo, info, cost_lower_bound=self.cost_lo, accuracy_target=A)
        n = self.n
        n_lo, c_lo, p_lo, n_hi, rounds = self._bisect(lambda C, P: (self.psum_lo + P) / n >= A - _TOL)
        br = self._bracket(n_lo, n_hi)
        L = br["key"].shape[0]
        base_c, base_p = self.cost_lo + c_lo, self.psum_lo + p_lo
        costs = np.concatenate([[base_c], base_c + np.cumsum(br["dc"])])
        accs = np.concatenate([[base_p], base_p + np.cumsum(br["dp"])]) / n
        kl = min(max(int(np.searchsorted(accs, A - _TOL, side="left")), 1), L)
        k = int(n_lo.sum()) + kl
        frac = min(max((A - float(accs[kl - 1])) * n / float(br["dp"][kl - 1]), 0.0), 1.0)
        lb = float(costs[kl - 1]) + float(br["dc"][kl - 1]) * frac
        slack = max((float(accs[kl]) - A) * n, 0.0)
        cuts = n_lo + np.bincount(br["shard"][:kl], minlength=self.S)
        saved = lost = 0.0
        count = ncand = 0
        oq, om = np.zeros(0, np.int64), np.zeros(0, np.intp)
        if slack > 0 and k > 1:
            cand = self._gather_candidates(cuts, int(br["shard"][kl - 1]), int(br["pos"][kl - 1]), slack, fill=False)
            sel = cand["dp"] <= slack
            cand = {f: v[sel][::-1].copy() for f, v in cand.items()}  # lowest slope first
            ncand = int(cand["key"].shape[0])
            if ncand:
                trim = (_jit() or {}).get("trim", _trim_kernel)
                idx = np.arange(ncand, dtype=np.int64)
                sufmin = np.minimum.accumulate(cand["dp"][::-1])[::-1].copy()
                saved, lost, count, oq, om = self._overrides(
                    cand, lambda a, q: trim(a, q, cand["src"], cand["dst"], cand["dc"], cand["dp"], idx, sufmin, slack))
        a = self._finish(cuts, oq, om, out)
        cost = float(costs[kl]) - saved
        info.update(point=k, trim_moves=count, rounds=rounds, gathered=L, candidates=ncand,
                    seconds=time.perf_counter() - t0)
        return self._plan(a, cost, float(accs[kl]) - lost / n, info, cost_lower_bound=min(lb, cost),
                          accuracy_target=A)


def ray_plan(p: Any = None, cost: Any = None, *, budget: float | None = None, target: float | None = None,
             out: str | Path | None = None, **kw: Any) -> Assignment:
    """One plan (exactly one of `budget`, `target`) with `RayFront(p, cost, **kw)`."""
    if (budget is None) == (target is None):
        raise OptLLMError("give exactly one of budget and target")
    with RayFront(p, cost, **kw) as rf:
        return rf.at_budget(budget, out) if budget is not None else rf.at_accuracy(target, out)
