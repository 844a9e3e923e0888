"""The exact cost/accuracy Pareto front of a batch, with an optimality certificate.

For fixed p [n, m] and cost [n, m] the problem is a multiple-choice knapsack. Per query we
keep the upper convex hull of its (cost, p) points; each hull step is a move (query, from,
to, Δcost, Δp). Sorting every move of every query by slope Δp/Δcost (descending) and
walking them from the all-cheapest assignment gives every supported Pareto point; each is
the LP optimum at its cost, so it is exact, and between two points the LP value is a
certified upper bound (at most one move's gain, ≤ 1/n for probabilities, above the integer
optimum). O(n·m·log m) per query block plus one sort of the hull steps.

`pareto_front` works in memory (numba kernels when numba is importable, an exact numpy
fallback otherwise: both give identical arrays); `pareto_front_chunks` builds the same
`Front` from an iterator of row blocks (hull per block, then a merge of the sorted move
lists) for inputs larger than memory; `front_block` + `merge_blocks` are the two halves
for a distributed back end.
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from optllm.errors import OptLLMError
from optllm.io import write_with
from optllm.optimize.types import Assignment

__all__ = [
    "Front", "MoveBlock", "pareto_front", "pareto_front_chunks", "front_block", "merge_blocks",
    "iter_row_chunks", "numba_available", "BACKENDS",
]

BACKENDS = ("auto", "numba", "numpy")
NUMPY_BLOCK_ROWS = 1 << 15  # rows per numpy block: bounds the [rows, m] temporaries
_TOL = 1e-12


# ====================================================================== kernels (plain Python)
# Written once; used as numba kernels when numba is importable (identical IEEE arithmetic to
# the numpy fallback below), and the two small loops also run as plain Python without numba.
def _hull_kernel(p: np.ndarray, cost: np.ndarray, H: np.ndarray, S: np.ndarray) -> None:  # pragma: no cover - jitted
    """Per row: the upper hull of (cost, p) in model indices, H[i, :S[i]], cheapest first."""
    n, m = p.shape
    perm = np.arange(m)
    hc = np.empty(m)
    hp = np.empty(m)
    hi = np.empty(m, dtype=np.int64)
    for i in range(n):
        # insertion sort by (cost, model index), starting from the previous row's order:
        # O(m) when rows share a price order, and a total order so the result is unique
        for a in range(1, m):
            k = perm[a]
            ck = cost[i, k]
            b = a - 1
            while b >= 0:
                kb = perm[b]
                cb = cost[i, kb]
                if cb > ck or (cb == ck and kb > k):
                    perm[b + 1] = kb
                    b -= 1
                else:
                    break
            perm[b + 1] = k
        s = 0
        for a in range(m):
            k = perm[a]
            c = cost[i, k]
            pp = p[i, k]
            if s > 0:
                if pp <= hp[s - 1]:
                    continue  # costlier (or as cheap) and not better: dominated
                if c == hc[s - 1]:
                    s -= 1  # same cost, better p: replaces the top
                while s >= 2 and (hp[s - 1] - hp[s - 2]) * (c - hc[s - 1]) < (pp - hp[s - 1]) * (hc[s - 1] - hc[s - 2]):
                    s -= 1  # top strictly below the chord: not on the upper hull
            hc[s] = c
            hp[s] = pp
            hi[s] = k
            s += 1
        for a in range(s):
            H[i, a] = hi[a]
        S[i] = s


def _emit_kernel(p: np.ndarray, cost: np.ndarray, H: np.ndarray, S: np.ndarray, offsets: np.ndarray, q0: int,
                 q: np.ndarray, fr: np.ndarray, to: np.ndarray, dc: np.ndarray, dp: np.ndarray,
                 key: np.ndarray) -> None:  # pragma: no cover - jitted
    """Write each row's hull steps as moves, in (query, step) order; key = −slope, made
    non-decreasing within a query so a stable sort keeps every query's chain in order."""
    n = p.shape[0]
    for i in range(n):
        o = offsets[i]
        prev = -np.inf
        for t in range(S[i] - 1):
            a = H[i, t]
            b = H[i, t + 1]
            d_c = cost[i, b] - cost[i, a]
            d_p = p[i, b] - p[i, a]
            kk = -(d_p / d_c)
            if kk < prev:
                kk = prev
            prev = kk
            q[o + t] = q0 + i
            fr[o + t] = a
            to[o + t] = b
            dc[o + t] = d_c
            dp[o + t] = d_p
            key[o + t] = kk


def _apply_kernel(a: np.ndarray, q: np.ndarray, to: np.ndarray, k: int) -> None:  # pragma: no cover - jitted
    """Apply the first k moves to assignment a in place (sequential, so repeats are safe)."""
    for j in range(k):
        a[q[j]] = to[j]


def _fill_kernel(a: np.ndarray, q: np.ndarray, fr: np.ndarray, to: np.ndarray, dc: np.ndarray, dp: np.ndarray,
                 idx: np.ndarray, sufmin: np.ndarray, room: float) -> tuple[float, float, int]:
    """Greedy in slope order: apply each listed move that still fits `room` and starts from
    the query's current model (so chains stay valid). Returns (spent, gained, moves)."""
    spent = 0.0
    gained = 0.0
    count = 0
    for t in range(idx.shape[0]):
        left = room - spent
        if sufmin[t] > left:
            break
        j = idx[t]
        if dc[j] <= left and a[q[j]] == fr[j]:
            a[q[j]] = to[j]
            spent += dc[j]
            gained += dp[j]
            count += 1
    return spent, gained, count


def _trim_kernel(a: np.ndarray, q: np.ndarray, fr: np.ndarray, to: np.ndarray, dc: np.ndarray, dp: np.ndarray,
                 idx: np.ndarray, sufmin: np.ndarray, slack: float) -> tuple[float, float, int]:
    """Greedy from the lowest slope: undo each listed applied move (the last of its query's
    chain) whose Δp fits within `slack`. Returns (saved, lost, moves)."""
    saved = 0.0
    lost = 0.0
    count = 0
    for t in range(idx.shape[0]):
        left = slack - lost
        if sufmin[t] > left:
            break
        j = idx[t]
        if dp[j] <= left and a[q[j]] == to[j]:
            a[q[j]] = fr[j]
            saved += dc[j]
            lost += dp[j]
            count += 1
    return saved, lost, count


_JIT: dict[str, Callable[..., Any]] | None = None


def numba_available() -> bool:
    """Whether the numba kernels can be used (numba importable and compiling)."""
    return _jit() is not None


def _jit() -> dict[str, Callable[..., Any]] | None:
    """The jitted kernels, compiled lazily (cached on disk); None without numba."""
    global _JIT
    if _JIT is None:
        try:
            import numba
        except Exception:  # pragma: no cover - depends on the environment
            _JIT = {}
        else:
            nj = numba.njit(cache=True, nogil=True)
            kernels = {"hull": nj(_hull_kernel), "emit": nj(_emit_kernel), "apply": nj(_apply_kernel),
                       "fill": nj(_fill_kernel), "trim": nj(_trim_kernel)}
            try:  # compile the main kernel once (the usual signature) so a broken install falls back
                kernels["hull"](np.zeros((1, 2)), np.zeros((1, 2)), np.zeros((1, 2), np.int8), np.zeros(1, np.int8))
            except Exception:  # pragma: no cover - depends on the environment
                kernels = {}
            _JIT = kernels
    return _JIT or None


def _resolve_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise OptLLMError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if backend == "numpy":
        return "numpy"
    if _jit() is None:
        if backend == "numba":
            raise OptLLMError("backend 'numba' needs numba: pip install 'optllm[fast]' (or use backend='numpy')")
        return "numpy"
    return "numba"


# ====================================================================== move blocks
def _index_dtype(m: int) -> type:
    """Smallest signed integer type holding a model index."""
    return np.int8 if m <= 127 else np.int16 if m <= 32767 else np.int32


def _query_dtype(last: int) -> type:
    return np.int32 if last < 2**31 - 1 else np.int64


@dataclass(eq=False)
class MoveBlock:
    """The hull moves of a contiguous block of queries (global indices q0..q0+rows−1).

    `start` is the cheapest model per query (ties: higher p, then lower index) with its cost
    and p; the move arrays are in (query, step) order or, once `sorted`, by `key` = −slope
    (stable, so each query's chain stays in order).
    """

    q0: int
    m: int
    start: np.ndarray
    start_cost: np.ndarray
    start_p: np.ndarray
    query: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    dcost: np.ndarray
    dp: np.ndarray
    key: np.ndarray
    sorted: bool = False

    @property
    def rows(self) -> int:
        return int(self.start.shape[0])

    def sort(self, keep_key: bool = True) -> "MoveBlock":
        """Sort the moves by slope, descending (stable), in place; one array at a time so
        the peak is one extra move array plus the permutation. Returns self."""
        if not self.sorted:
            self._permute(np.argsort(self.key, kind="stable"), keep_key)
            self.sorted = True
        elif not keep_key:
            self.key = np.zeros(0)
        return self

    def _permute(self, order: np.ndarray, keep_key: bool) -> None:
        self.key = self.key[order] if keep_key else np.zeros(0)
        for f in ("query", "src", "dst", "dcost", "dp"):
            setattr(self, f, getattr(self, f)[order])


def _hull_numpy(p: np.ndarray, cost: np.ndarray, idt: type) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised upper hull of one row block: (H model indices, S sizes, HC, HP) with the
    same arithmetic and tie rules as `_hull_kernel`; a loop over the m columns, pops as a
    shrinking active set."""
    R, m = p.shape
    order = np.argsort(cost, axis=1, kind="stable")  # by (cost, model index)
    cs = np.take_along_axis(cost, order, axis=1)
    ps = np.take_along_axis(p, order, axis=1)
    HC = np.empty((R, m))
    HP = np.empty((R, m))
    H = np.empty((R, m), dtype=idt)
    S = np.ones(R, dtype=np.intp)
    HC[:, 0], HP[:, 0], H[:, 0] = cs[:, 0], ps[:, 0], order[:, 0]
    rows = np.arange(R)
    for j in range(1, m):
        cj, pj = cs[:, j], ps[:, j]
        act = np.flatnonzero(pj > HP[rows, S - 1])
        if not act.size:
            continue
        ca, pa = cj[act], pj[act]
        s = S[act]
        s -= ca == HC[act, s - 1]
        cand = np.flatnonzero(s >= 2)
        while cand.size:
            r, sc = act[cand], s[cand]
            c1, p1 = HC[r, sc - 1], HP[r, sc - 1]
            c0, p0 = HC[r, sc - 2], HP[r, sc - 2]
            cand = cand[(p1 - p0) * (ca[cand] - c1) < (pa[cand] - p1) * (c1 - c0)]
            s[cand] -= 1
            cand = cand[s[cand] >= 2]
        HC[act, s], HP[act, s], H[act, s] = ca, pa, order[act, j]
        S[act] = s + 1
    return H, S, HC, HP


def _block_numpy(p: np.ndarray, cost: np.ndarray, q0: int, idt: type, qdt: type) -> MoveBlock:
    R, m = p.shape
    H, S, HC, HP = _hull_numpy(p, cost, idt)
    start = H[:, 0].copy()
    start_cost, start_p = HC[:, 0].copy(), HP[:, 0].copy()
    if m == 1:
        e = np.zeros(0)
        return MoveBlock(q0, m, start, start_cost, start_p, np.zeros(0, qdt), np.zeros(0, idt), np.zeros(0, idt),
                         e, e.copy(), e.copy())
    with np.errstate(all="ignore"):  # entries past a row's hull are garbage, masked below
        Dc = HC[:, 1:] - HC[:, :-1]
        Dp = HP[:, 1:] - HP[:, :-1]
        K = -(Dp / Dc)
    np.maximum.accumulate(K, axis=1, out=K)
    r, t = np.nonzero(np.arange(m - 1)[None, :] < (S - 1)[:, None])  # row-major: (query, step)
    return MoveBlock(q0, m, start, start_cost, start_p, (r + q0).astype(qdt), H[r, t], H[r, t + 1],
                     Dc[r, t], Dp[r, t], K[r, t])


def _block_numba(p: np.ndarray, cost: np.ndarray, q0: int, idt: type, qdt: type) -> MoveBlock:
    jit = _jit()
    assert jit is not None
    R, m = p.shape
    H = np.empty((R, m), dtype=idt)
    S = np.empty(R, dtype=idt if m < 127 else np.int32)
    jit["hull"](p, cost, H, S)
    start = H[:, 0].copy()
    rows = np.arange(R)
    start_cost, start_p = cost[rows, start], p[rows, start]
    steps = S.astype(np.int64)
    steps -= 1
    offsets = np.zeros(R, dtype=np.int64)
    np.cumsum(steps[:-1], out=offsets[1:])
    M = int(offsets[-1] + steps[-1]) if R else 0
    del steps
    q = np.empty(M, dtype=qdt)
    fr = np.empty(M, dtype=idt)
    to = np.empty(M, dtype=idt)
    dc, dp, key = np.empty(M), np.empty(M), np.empty(M)
    jit["emit"](p, cost, H, S, offsets, q0, q, fr, to, dc, dp, key)
    return MoveBlock(q0, m, start, start_cost, start_p, q, fr, to, dc, dp, key)


def front_block(p: np.ndarray, cost: np.ndarray, q0: int = 0, *, backend: str = "auto",
                n_total: int | None = None, sort: bool = True) -> MoveBlock:
    """Hull moves of one block of queries whose first global index is `q0` (validated).

    `n_total` (if known) picks the query index type; blocks from `front_block` merge with
    `merge_blocks` into exactly the `Front` that `pareto_front` gives on the stacked rows.
    """
    p, cost = _check(p, cost, what=f"rows {q0}..")
    return _block(p, cost, q0, _resolve_backend(backend), n_total, sort)


def _block(p: np.ndarray, cost: np.ndarray, q0: int, be: str, n_total: int | None, sort: bool,
           keep_key: bool = True) -> MoveBlock:
    R, m = p.shape
    idt = _index_dtype(m)
    qdt = _query_dtype(max(n_total or 0, q0 + R))
    if be == "numba":
        blk = _block_numba(p, cost, q0, idt, qdt)
    else:
        parts = [_block_numpy(p[s:s + NUMPY_BLOCK_ROWS], cost[s:s + NUMPY_BLOCK_ROWS], q0 + s, idt, qdt)
                 for s in range(0, R, NUMPY_BLOCK_ROWS)]
        blk = parts[0] if len(parts) == 1 else _concat(parts)
    return blk.sort(keep_key) if sort else blk


def _concat(blocks: Sequence[MoveBlock]) -> MoveBlock:
    """Stack consecutive blocks (in query order) into one, keeping each block's move order."""
    b0 = blocks[0]
    cat = [np.concatenate([getattr(b, f) for b in blocks]) for f in
           ("start", "start_cost", "start_p", "query", "src", "dst", "dcost", "dp", "key")]
    return MoveBlock(b0.q0, b0.m, *cat, sorted=False)


def merge_blocks(blocks: Iterable[MoveBlock], models: Sequence[str] | None = None,
                 info: dict[str, Any] | None = None) -> "Front":
    """Merge the sorted move lists of consecutive query blocks into one `Front`.

    Blocks must cover queries 0..n−1 in order. The merge is a stable sort of the
    concatenated keys (timsort: a k-way merge of the already sorted runs), so ties keep
    (query, step) order and the result equals the in-memory one bit for bit.
    """
    blocks = [b.sort() for b in blocks]
    if not blocks:
        raise OptLLMError("no query blocks to merge (empty input)")
    nxt = 0
    for b in blocks:
        if b.q0 != nxt:
            raise OptLLMError(f"query blocks are not consecutive: expected a block starting at {nxt}, got {b.q0}")
        nxt += b.rows
    m = blocks[0].m
    if any(b.m != m for b in blocks):
        raise OptLLMError("query blocks have different numbers of models")
    allb = blocks[0] if len(blocks) == 1 else _concat(blocks)
    if len(blocks) > 1:
        del blocks
        allb.sort(keep_key=False)
    return Front._from_block(allb, models=models, info=info)


def _check(p: Any, cost: Any, what: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Validate once at the boundary: 2-D, same shape, finite, cost ≥ 0; float64, C order."""
    where = f" ({what})" if what else ""
    p = np.ascontiguousarray(p, dtype=np.float64)
    cost = np.ascontiguousarray(cost, dtype=np.float64)
    if p.ndim != 2 or cost.ndim != 2:
        raise OptLLMError(f"p and cost must be 2-D [queries, models]; got p {p.shape}, cost {cost.shape}{where}")
    if p.shape != cost.shape:
        raise OptLLMError(f"p {p.shape} and cost {cost.shape} must have the same shape{where}")
    if p.shape[0] == 0 or p.shape[1] == 0:
        raise OptLLMError(f"need at least one query and one model; got shape {p.shape}{where}")
    for name, x in (("p", p), ("cost", cost)):
        lo, hi = float(x.min()), float(x.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise OptLLMError(f"{name} has NaN or infinite values{where}")
        if name == "cost" and lo < 0:
            raise OptLLMError(f"cost has negative values (min {lo:.6g}){where}")
    return p, cost


def _check_models(models: Sequence[str] | None, m: int) -> tuple[str, ...] | None:
    if models is None:
        return None
    names = tuple(str(x) for x in models)
    if len(names) != m:
        raise OptLLMError(f"models has {len(names)} names but the arrays have {m} columns")
    return names


# ====================================================================== public builders
def pareto_front(p: np.ndarray, cost: np.ndarray, models: Sequence[str] | None = None, *,
                 backend: str = "auto") -> "Front":
    """The exact supported cost/accuracy Pareto front of p [n, m] (probabilities or 0/1
    truth) and cost [n, m] USD; with the 0/1 correctness matrix it is the true front.

    backend: "auto" (numba if importable), "numba" or "numpy" (identical results).
    """
    t0 = time.perf_counter()
    p, cost = _check(p, cost)
    names = _check_models(models, p.shape[1])
    be = _resolve_backend(backend)
    blk = _block(p, cost, 0, be, None, sort=True, keep_key=False)
    return Front._from_block(blk, models=names, info={"backend": be, "seconds": time.perf_counter() - t0})


def pareto_front_chunks(chunks: Iterable[tuple[np.ndarray, np.ndarray]], models: Sequence[str] | None = None, *,
                        backend: str = "auto") -> "Front":
    """The same `Front` as `pareto_front` on the stacked rows, from an iterator of
    (p_chunk, cost_chunk) row blocks; only one block's arrays are in memory at a time."""
    t0 = time.perf_counter()
    be = _resolve_backend(backend)
    blocks: list[MoveBlock] = []
    q0 = 0
    m: int | None = None
    for i, (pc, cc) in enumerate(chunks):
        if np.ndim(pc) == 2 and np.shape(pc)[0] == 0:
            continue
        blk = front_block(pc, cc, q0, backend=be, sort=True)
        if m is not None and blk.m != m:
            raise OptLLMError(f"chunk {i} has {blk.m} models, the first had {m}")
        m = blk.m
        blocks.append(blk)
        q0 += blk.rows
    if m is None:
        raise OptLLMError("no chunks given (empty iterator)")
    names = _check_models(models, m)
    if q0 >= 2**31 - 1:
        for b in blocks:
            b.query = b.query.astype(np.int64)
    return merge_blocks(blocks, models=names,
                        info={"backend": be, "seconds": time.perf_counter() - t0, "chunks": len(blocks)})


def iter_row_chunks(p: np.ndarray, cost: np.ndarray, rows: int = 1 << 18) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Row blocks of two [n, m] arrays (e.g. `np.load(..., mmap_mode="r")` memmaps)."""
    if rows < 1:
        raise OptLLMError(f"chunk rows must be ≥ 1, got {rows}")
    for s in range(0, p.shape[0], rows):
        yield p[s:s + rows], cost[s:s + rows]


# ====================================================================== the front
class Front:
    """Every supported Pareto point of a batch, stored compactly: the start assignment and
    the ordered moves; `costs[k]` / `accuracies[k]` (mean p) after the first k moves.

    Point 0 is the all-cheapest assignment (ties: higher p, then lower model index), the last
    the most accurate (ties: cheaper). A model costing as much as a better one is never used,
    so a zero-cost improvement is already in the start and every move has Δcost > 0, Δp > 0:
    costs and accuracies increase strictly along the front. Equal slopes are ordered by
    query, then hull step; collinear hull points are kept as exact points.
    """

    def __init__(self, start: np.ndarray, move_query: np.ndarray, move_from: np.ndarray, move_to: np.ndarray,
                 move_dcost: np.ndarray, move_dp: np.ndarray, start_cost: float, start_psum: float, *,
                 models: Sequence[str] | None = None, m: int | None = None,
                 info: dict[str, Any] | None = None) -> None:
        self.start = np.asarray(start)
        self.move_query = np.asarray(move_query)
        self.move_from = np.asarray(move_from)
        self.move_to = np.asarray(move_to)
        self.move_dcost = np.asarray(move_dcost, dtype=np.float64)
        self.move_dp = np.asarray(move_dp, dtype=np.float64)
        self.n = int(self.start.shape[0])
        self.models = tuple(models) if models is not None else None
        self.m = int(m if m is not None else (len(self.models) if self.models else
                                              max(int(self.start.max(initial=0)), int(self.move_to.max(initial=0))) + 1))
        self.info = dict(info or {})
        M = self.move_query.shape[0]
        self.costs = np.empty(M + 1)
        self.costs[0] = start_cost
        np.cumsum(self.move_dcost, out=self.costs[1:])
        self.costs[1:] += start_cost
        self.accuracies = np.empty(M + 1)
        self.accuracies[0] = start_psum
        np.cumsum(self.move_dp, out=self.accuracies[1:])
        self.accuracies[1:] += start_psum
        self.accuracies /= self.n
        for a in (self.start, self.move_query, self.move_from, self.move_to, self.move_dcost, self.move_dp,
                  self.costs, self.accuracies):
            a.setflags(write=False)

    @classmethod
    def _from_block(cls, blk: MoveBlock, models: Sequence[str] | None = None,
                    info: dict[str, Any] | None = None) -> "Front":
        return cls(blk.start, blk.query, blk.src, blk.dst, blk.dcost, blk.dp,
                   float(np.sum(blk.start_cost)), float(np.sum(blk.start_p)), models=models, m=blk.m, info=info)

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return int(self.costs.shape[0])

    def __repr__(self) -> str:
        return (f"Front({self.n:,} queries × {self.m} models: {len(self):,} points, "
                f"cost {self.costs[0]:.6g}..{self.costs[-1]:.6g}, "
                f"accuracy {self.accuracies[0]:.4f}..{self.accuracies[-1]:.4f})")

    @property
    def n_moves(self) -> int:
        """Number of moves (= points − 1)."""
        return int(self.move_query.shape[0])

    @property
    def nbytes(self) -> int:
        """Memory held by the front's arrays."""
        return sum(a.nbytes for a in (self.start, self.move_query, self.move_from, self.move_to,
                                      self.move_dcost, self.move_dp, self.costs, self.accuracies))

    def _k(self, k: int) -> int:
        K = len(self)
        kk = int(k) + K if int(k) < 0 else int(k)
        if not 0 <= kk < K:
            raise OptLLMError(f"front point {k} out of range 0..{K - 1}")
        return kk

    def assignment(self, k: int) -> np.ndarray:
        """Model index per query at point k (negative k counts from the end)."""
        k = self._k(k)
        a = self.start.astype(np.intp)
        if k:
            jit = _jit()
            if jit is not None:
                jit["apply"](a, self.move_query, self.move_to, k)
            else:
                last = np.full(self.n, -1, dtype=np.int64)
                np.maximum.at(last, self.move_query[:k], np.arange(k))
                hit = last >= 0
                a[hit] = self.move_to[last[hit]]
        return a

    @property
    def end(self) -> np.ndarray:
        """The most accurate assignment (ties: cheaper)."""
        return self.assignment(len(self) - 1)

    def slopes(self) -> np.ndarray:
        """λ_k of every point: the slope Δp/Δcost of the last move taken (∞ at the start,
        where each query sits at its cheapest model); the exact rule at point k sends query i
        to argmax_j p_ij − λ_k·c_ij."""
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.where(self.move_dcost > 0, self.move_dp / self.move_dcost, np.inf)
        return np.concatenate([[np.inf], s])

    def values(self, values: np.ndarray) -> np.ndarray:
        """Mean of `values[i, a_k(i)]` for every point k (e.g. the TRUE accuracy from labels)."""
        v = np.asarray(values, dtype=np.float64)
        if v.shape != (self.n, self.m):
            raise OptLLMError(f"values must have shape {(self.n, self.m)}, got {v.shape}")
        base = v[np.arange(self.n), self.start].sum()
        out = np.empty(len(self))
        out[0] = base
        np.cumsum(v[self.move_query, self.move_to] - v[self.move_query, self.move_from], out=out[1:])
        out[1:] += base
        return out / self.n

    # ------------------------------------------------------------------ LP bounds
    def lp_accuracy(self, budget: float | np.ndarray) -> float | np.ndarray:
        """The LP relaxation's best mean p at each budget (the certified upper bound):
        linear between breakpoints, flat past the last; NaN below the cheapest point."""
        B = np.asarray(budget, dtype=np.float64)
        out = np.interp(B, self.costs, self.accuracies) if len(self) > 1 else np.full(B.shape, self.accuracies[0])
        out = np.where(B < self.costs[0] - self._ctol(), np.nan, out)
        return float(out) if out.ndim == 0 else out

    def lp_cost(self, target: float | np.ndarray) -> float | np.ndarray:
        """The LP relaxation's least cost reaching each mean-p target (a certified lower
        bound on any plan's cost); NaN above the best reachable accuracy."""
        A = np.asarray(target, dtype=np.float64)
        out = np.interp(A, self.accuracies, self.costs) if len(self) > 1 else np.full(A.shape, self.costs[0])
        out = np.where(A > self.accuracies[-1] + _TOL, np.nan, out)
        return float(out) if out.ndim == 0 else out

    def _ctol(self) -> float:
        return _TOL * max(abs(float(self.costs[-1])), 1.0)

    # ------------------------------------------------------------------ choosing a plan
    def _plan(self, a: np.ndarray, cost: float, acc: float, **kw: Any) -> Assignment:
        return Assignment(models=a, cost=float(cost), accuracy=float(acc), model_names=self.models, **kw)

    def at_budget(self, budget: float) -> Assignment:
        """The best assignment costing at most `budget`: the last breakpoint under it, then
        the leftover spent greedily on the best remaining moves that fit. `upper_bound` is
        the LP value at `budget`, so `gap` is a certified optimality gap (≤ one move's Δp/n)."""
        B = float(budget)
        lo, hi = float(self.costs[0]), float(self.costs[-1])
        if not math.isfinite(B) or B < lo - self._ctol():
            raise OptLLMError(f"budget {B:.6g} is below the cheapest assignment (cost {lo:.6g}); "
                              f"reachable costs: {lo:.6g} to {hi:.6g} (a larger budget buys nothing more)")
        K = len(self)
        info: dict[str, Any] = {"method": "exact", "certified": True}
        if B >= hi:
            k = K - 1
            info.update(point=k, fill_moves=0)
            return self._plan(self.assignment(k), hi, self.accuracies[k], upper_bound=float(self.accuracies[k]),
                              cost_limit=B, info=info)
        k = max(int(np.searchsorted(self.costs, B, side="right")) - 1, 0)
        room = max(B - float(self.costs[k]), 0.0)
        frac = min(room / float(self.move_dcost[k]), 1.0)
        ub = float(self.accuracies[k]) + float(self.move_dp[k]) * frac / self.n
        a = self.assignment(k)
        spent = gained = 0.0
        count = 0
        if room > 0 and k + 1 < K - 1:
            idx = np.flatnonzero(self.move_dcost[k + 1:] <= room)
            if idx.size:
                idx += k + 1
                sufmin = np.minimum.accumulate(self.move_dcost[idx][::-1])[::-1].copy()
                fill = (_jit() or {}).get("fill", _fill_kernel)
                spent, gained, count = fill(a, self.move_query, self.move_from, self.move_to, self.move_dcost,
                                            self.move_dp, idx, sufmin, room)
        acc = float(self.accuracies[k]) + gained / self.n
        info.update(point=k, fill_moves=int(count))
        return self._plan(a, float(self.costs[k]) + spent, acc, upper_bound=max(ub, acc),
                          cost_limit=B, info=info)

    def at_accuracy(self, target: float) -> Assignment:
        """The cheapest assignment with expected accuracy ≥ `target`: the first breakpoint
        reaching it, then greedy undoing of the lowest-slope moves the surplus allows.
        `cost_lower_bound` is the LP cost at `target` (a certified cost gap)."""
        A = float(target)
        lo, hi = float(self.accuracies[0]), float(self.accuracies[-1])
        if not math.isfinite(A) or A > hi + _TOL:
            raise OptLLMError(f"accuracy target {A:.6g} is above the best reachable expected accuracy {hi:.6f}; "
                              f"reachable: {lo:.6f} (cost {self.costs[0]:.6g}) to {hi:.6f} (cost {self.costs[-1]:.6g})")
        info: dict[str, Any] = {"method": "exact", "certified": True}
        if A <= lo:
            info.update(point=0, trim_moves=0)
            return self._plan(self.assignment(0), self.costs[0], lo, cost_lower_bound=float(self.costs[0]),
                              accuracy_target=A, info=info)
        k = min(int(np.searchsorted(self.accuracies, A - _TOL, side="left")), len(self) - 1)
        frac = min(max((A - float(self.accuracies[k - 1])) * self.n / float(self.move_dp[k - 1]), 0.0), 1.0)
        lb = float(self.costs[k - 1]) + float(self.move_dcost[k - 1]) * frac
        slack = max((float(self.accuracies[k]) - A) * self.n, 0.0)
        a = self.assignment(k)
        saved = lost = 0.0
        count = 0
        if slack > 0 and k > 1:
            idx = np.flatnonzero(self.move_dp[:k - 1] <= slack)[::-1].copy()
            if idx.size:
                sufmin = np.minimum.accumulate(self.move_dp[idx][::-1])[::-1].copy()
                trim = (_jit() or {}).get("trim", _trim_kernel)
                saved, lost, count = trim(a, self.move_query, self.move_from, self.move_to, self.move_dcost,
                                          self.move_dp, idx, sufmin, slack)
        cost = float(self.costs[k]) - saved
        info.update(point=k, trim_moves=int(count))
        return self._plan(a, cost, float(self.accuracies[k]) - lost / self.n, cost_lower_bound=min(lb, cost),
                          accuracy_target=A, info=info)

    # ------------------------------------------------------------------ output
    def point_indices(self, max_points: int | None = None) -> np.ndarray:
        """Indices of at most `max_points` points spread evenly along the front's length (in
        cost and accuracy scaled to [0, 1]); both ends always kept."""
        K = len(self)
        if max_points is None or K <= max(int(max_points), 2):
            return np.arange(K)
        c, a = self.costs, self.accuracies
        cn = np.diff(c) / max(float(c[-1] - c[0]), 1e-300)
        an = np.diff(a) / max(float(a[-1] - a[0]), 1e-300)
        s = np.concatenate([[0.0], np.cumsum(np.hypot(cn, an))])
        idx = np.searchsorted(s, np.linspace(0.0, s[-1], max(int(max_points), 2)), side="left")
        return np.unique(np.concatenate([[0], np.clip(idx, 0, K - 1), [K - 1]]))

    def points(self, max_points: int | None = None) -> np.ndarray:
        """[K', 2] array of (cost, accuracy), thinned to at most `max_points` (ends kept)."""
        idx = self.point_indices(max_points)
        return np.column_stack([self.costs[idx], self.accuracies[idx]])

    def to_frame(self, max_points: int | None = None) -> Any:
        """A pandas DataFrame: point, cost, accuracy, and the move that reached the point
        (query index, from/to model, marginal accuracy per USD); thinned like `points`."""
        import pandas as pd

        idx = self.point_indices(max_points)
        j = idx - 1
        has = j >= 0
        jj = np.where(has, j, 0)
        names = np.asarray(self.models if self.models else [str(k) for k in range(self.m)], dtype=object)
        M = self.n_moves
        q = self.move_query[jj] if M else np.zeros(idx.size, dtype=np.int64)
        with np.errstate(all="ignore"):
            slope = self.move_dp[jj] / self.n / self.move_dcost[jj] if M else np.zeros(idx.size)
        return pd.DataFrame({
            "point": idx,
            "cost": self.costs[idx],
            "accuracy": self.accuracies[idx],
            "query": np.where(has, q, -1),
            "from_model": np.where(has, names[self.move_from[jj]] if M else "", ""),
            "to_model": np.where(has, names[self.move_to[jj]] if M else "", ""),
            "accuracy_per_usd": np.where(has, slope, np.nan),
        })

    def write_csv(self, path: str, max_points: int | None = None) -> None:
        """Write `to_frame(max_points)` as CSV, atomically."""
        df = self.to_frame(max_points)
        write_with(path, lambda tmp: df.to_csv(tmp, index=False))
