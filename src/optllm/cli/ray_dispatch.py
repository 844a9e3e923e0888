"""`optllm dispatch --engine ray`: the thin layer over `optllm.engine.ray_dispatch.ray_dispatch`.

Called by `dispatch` (plan_cmds) once the options, the catalogue, the plan and the keys were
checked there; returns the same kind of report, printed by the same code."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from optllm.errors import OptLLMError


def check_engine(engine: str, address: str | None, workers: int | None) -> None:
    """`--engine`, `--address` and `--workers`, checked before anything else (one line each)."""
    if engine not in ("local", "ray"):
        raise OptLLMError(f"--engine must be local or ray, got {engine!r}")
    if engine == "local" and (address is not None or workers is not None):
        raise OptLLMError("--address and --workers are for --engine ray")
    if workers is not None and workers < 1:
        raise OptLLMError(f"--workers must be at least 1, got {workers}")


def ray_dispatch_cli(items: Sequence[Any], cat: Any, out: Path, *, address: str | None, workers: int | None,
                     via: str, concurrency: int, max_spend: float | None, fallback: bool, max_attempts: int,
                     backoff: float, seed: int) -> Any:
    """The run report of `dispatch --engine ray` (a `RayDispatchReport`). Online requests only:
    the provider batch APIs (`--via batch`, or a plan priced at the batch tier with `--via plan`)
    stay with the local engine. Without ray: `OptLLMError(RAY_HINT)` (exit 2)."""
    if via == "batch" or (via == "plan" and any(getattr(it, "tier", "online") == "batch" for it in items)):
        raise OptLLMError("--engine ray sends one request per query: give --via online (the plan is priced at "
                          "the batch tier) or use --engine local for provider batches")
    from optllm.engine import RAY_HINT, ray_available

    if not ray_available():
        raise OptLLMError(RAY_HINT)
    from optllm.engine.ray_dispatch import ray_dispatch

    return ray_dispatch(items, cat, out, address=address, workers=workers, concurrency=concurrency,
                        max_spend=max_spend, fallback=fallback, max_attempts=max_attempts, backoff_base=backoff,
                        seed=seed)
