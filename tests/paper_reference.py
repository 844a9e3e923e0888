"""The test oracle of `optllm.optimize.paper.optllm_m`: the same algorithm written as plain
loops over queries and models (slow), so the tests can prove the vectorised version returns
identical solutions."""
from __future__ import annotations

import numpy as np

from optllm.optimize.paper import _default_cap, _inputs, _steps
from optllm.optimize.solutions import SolutionSet


def optllm_m_reference(
    p_base: np.ndarray,
    p_robust: np.ndarray | None,
    cost: np.ndarray,
    gn: int = 50,
    *,
    max_exchanges: int | None = None,
) -> SolutionSet:
    """The same algorithm as `optllm_m`, written as plain loops over queries and models.

    Slow (minutes on thousands of queries); exists so tests can prove the vectorised
    version returns identical solutions. Only whole-assignment scoring uses numpy.
    """
    pb_a, pr_a, c_a = _inputs(p_base, p_robust, cost)
    n, m = pb_a.shape
    PB, PR, C = pb_a.tolist(), pr_a.tolist(), c_a.tolist()
    cap = _default_cap(n, m, max_exchanges)

    x_cheap, x_high = [], []
    for i in range(n):
        lo = 0
        for e in range(1, m):
            if C[i][e] < C[i][lo] or (C[i][e] == C[i][lo] and PB[i][e] > PB[i][lo]):
                lo = e
        x_cheap.append(lo)
        hi = 0
        for e in range(1, m):
            if PR[i][e] > PR[i][hi] or (PR[i][e] == PR[i][hi] and C[i][e] < C[i][hi]):
                hi = e
        x_high.append(hi)
    acc_step, cost_step = _steps(pb_a, c_a, np.array(x_cheap), np.array(x_high), gn)

    def destruct(x: list[int], amount_target: list[tuple[float, int]], step: float) -> list[int] | None:
        cands = [(amt, i, t) for i, (amt, t) in enumerate(amount_target) if amt > 0]
        cands.sort(key=lambda z: -z[0])  # stable: ties keep query order
        out = list(x)
        total = 0.0
        for amt, i, t in cands:
            out[i] = t
            total += amt
            if total >= step:
                return out
        return None

    def up(x: list[int], step: float) -> list[int] | None:
        at = []
        for i in range(n):
            b = 0
            for e in range(1, m):
                if PB[i][e] > PB[i][b]:
                    b = e
            at.append((PB[i][b] - PB[i][x[i]], b))
        return destruct(x, at, step)

    def down(x: list[int], step: float) -> list[int] | None:
        at = []
        for i in range(n):
            b = 0
            for e in range(1, m):
                if C[i][e] < C[i][b]:
                    b = e
            at.append((C[i][x[i]] - C[i][b], b))
        return destruct(x, at, step)

    def free(Q: list[list[float]], x: list[int], i: int) -> None:
        a = x[i]
        b = a
        first = True
        for e in range(m):
            if C[i][e] <= C[i][a]:
                if first or Q[i][e] > Q[i][b] or (Q[i][e] == Q[i][b] and C[i][e] < C[i][b]):
                    b = e
                    first = False
        if Q[i][b] > Q[i][a] or (Q[i][b] == Q[i][a] and C[i][b] < C[i][a]):
            x[i] = b

    def best_up(Q: list[list[float]], x: list[int], i: int) -> tuple[float, int]:
        a, best, arg = x[i], -np.inf, 0
        for e in range(m):
            dq, dc = Q[i][e] - Q[i][a], C[i][e] - C[i][a]
            if dc > 0 and dq > 0 and dq / dc > best:
                best, arg = dq / dc, e
        return best, arg

    def best_down(Q: list[list[float]], x: list[int], i: int) -> tuple[float, int]:
        a, best, arg = x[i], np.inf, 0
        for e in range(m):
            dq, dc = Q[i][e] - Q[i][a], C[i][e] - C[i][a]
            if dc < 0 and dq < 0 and dq / dc < best:
                best, arg = dq / dc, e
        return best, arg

    def reconstruct(Q: list[list[float]], x0: list[int]) -> list[int]:
        x = list(x0)
        for i in range(n):
            free(Q, x, i)
        for _ in range(cap):
            gi, g, ge = -1, -np.inf, 0
            for i in range(n):
                r, e = best_up(Q, x, i)
                if r > g:
                    gi, g, ge = i, r, e
            if not g > 0:
                break
            lj, loss, le = -1, np.inf, 0
            for j in range(n):
                if j == gi:
                    continue
                r, e = best_down(Q, x, j)
                if r < loss:
                    lj, loss, le = j, r, e
            if not loss < g:
                break
            x[gi] = ge
            x[lj] = le
            free(Q, x, gi)
            free(Q, x, lj)
        return x

    pool = [list(x_cheap), list(x_high)]
    if acc_step > 0:
        s = list(x_cheap)
        for _ in range(1, gn):
            d = up(s, acc_step)
            if d is None:
                break
            s = reconstruct(PB, d)
            pool.append(s)
    if cost_step > 0:
        s = list(x_high)
        for _ in range(1, gn):
            d = down(s, cost_step)
            if d is None:
                break
            s = reconstruct(PR, d)
            pool.append(s)
    return SolutionSet.from_assignments(np.array(pool), pb_a, c_a, method=f"optllm-m-reference(gn={gn})")
