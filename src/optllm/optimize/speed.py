"""How fast is the exact front? `bench_speed` times `pareto_front` on synthetic n × m
probabilities against `np.argsort` of the same n·m floats in the same run (best of
`repeat`), with its peak extra memory (tracemalloc); `optllm bench-speed` prints it."""
from __future__ import annotations

import gc
import time
import tracemalloc
from typing import Any, Callable, Sequence

import numpy as np

from optllm.errors import OptLLMError

__all__ = ["DEFAULT_SIZES", "bench_speed", "parse_size"]

DEFAULT_SIZES = ("1e4x12", "1e5x12", "1e6x12", "1e6x40")


DEFAULT_M = 12  # models when a size gives n alone (the paper's overruling has 12)


def parse_size(text: str) -> tuple[int, int]:
    """'1e6x12' (or 1000000×12, 1e6*12) → (1000000, 12); n alone ('10000', '1e6') has 12 models."""
    t = text.strip().lower().replace("×", "x").replace("*", "x")
    try:
        n_s, m_s = t.split("x") if "x" in t else (t, str(DEFAULT_M))
        n_f = float(n_s)
        if not n_f.is_integer():
            raise ValueError
        n, m = int(n_f), int(m_s)
    except (ValueError, OverflowError):
        raise OptLLMError(f"--sizes: cannot read {text!r}; write n×m like 1e6x12 (or n alone for {DEFAULT_M} models)") from None
    if n < 1 or m < 1:
        raise OptLLMError(f"--sizes: {text!r} needs n ≥ 1 and m ≥ 1")
    return n, m


def _best_time(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(max(repeat, 1)):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _peak(fn: Callable[[], Any]) -> float:
    """Peak bytes allocated (tracked by tracemalloc, numpy buffers included) while `fn` runs,
    its result included."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        res = fn()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    del res
    return float(peak)


def _warm_up(backend: str, seed: int) -> float:
    """Seconds of one tiny front (JIT compilation, imports), kept out of the timings."""
    from optllm.data import synthetic
    from optllm.optimize.front import pareto_front

    t0 = time.perf_counter()
    warm = synthetic(64, 4, seed=seed, labels=False)
    pareto_front(warm.correct, warm.cost, backend=backend).at_budget(float(warm.cost.min(axis=1).sum()) * 1.5)
    return time.perf_counter() - t0


def _time_size(n: int, m: int, *, repeat: int, seed: int, backend: str, paper: bool,
               say: Callable[[str], None]) -> dict[str, Any]:
    """One row of `bench_speed`: one n × m instance."""
    from optllm.data import synthetic
    from optllm.optimize.front import pareto_front

    say(f"{n:,} × {m}: generating")
    d = synthetic(n, m, seed=seed, labels=False)
    p, cost = d.correct, d.cost
    del d
    flat = p.reshape(-1)
    say(f"{n:,} × {m}: timing")
    t_sort = _best_time(lambda: np.argsort(flat), repeat)
    holder: dict[str, Any] = {}

    def run() -> Any:
        holder["front"] = pareto_front(p, cost, backend=backend)
        return holder["front"]

    t_front = _best_time(run, repeat)
    front = holder.pop("front")
    points, moves = len(front), front.n_moves
    del front
    peak = _peak(lambda: pareto_front(p, cost, backend=backend))
    row: dict[str, Any] = {
        "n": n, "m": m, "backend": backend, "argsort_s": t_sort, "front_s": t_front, "ratio": t_front / t_sort,
        "points": points, "moves": moves, "peak_extra_mb": peak / 1e6,
        "input_mb": (p.nbytes + cost.nbytes) / 1e6, "peak_vs_input": peak / (p.nbytes + cost.nbytes),
        "paper_s": None,
    }
    if paper:
        from optllm.optimize.paper import optllm_m

        say(f"{n:,} × {m}: paper heuristic")
        row["paper_s"] = _best_time(lambda: optllm_m(p, None, cost), 1)
    return row


def bench_speed(sizes: Sequence[str] = DEFAULT_SIZES, *, repeat: int = 3, seed: int = 0, backend: str = "auto",
                paper: bool = False, paper_max_n: int = 100_000,
                progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Time `pareto_front` on synthetic n × m probabilities against `np.argsort` of the same
    n·m floats (best of `repeat`, same run), and its peak extra memory (tracemalloc).
    `paper`: also time the paper's OptLLM-M heuristic where n ≤ `paper_max_n`."""
    from optllm.optimize.front import _resolve_backend

    be = _resolve_backend(backend)
    say = progress or (lambda s: None)
    jit_s = _warm_up(be, seed)
    rows = []
    for text in sizes:
        n, m = parse_size(text)
        rows.append(_time_size(n, m, repeat=repeat, seed=seed, backend=be, paper=paper and n <= paper_max_n, say=say))
    if rows:
        rows[0]["jit_warmup_s"] = jit_s
    return rows
