"""Execution back ends beyond one process: `ray_engine` (the exact front's plan on a Ray cluster),
`ray_plan` (`plan --engine ray`), `ray_dispatch` (`dispatch --engine ray`)."""
from __future__ import annotations

__all__ = ["ray_available", "RAY_HINT", "join_or_start", "cluster_workers"]

RAY_HINT = "the Ray engine needs ray: pip install 'optllm[ray]'"


def ray_available() -> bool:
    """Whether `ray` is importable (the `optllm[ray]` extra)."""
    try:
        import ray  # noqa: F401
    except Exception:
        return False
    return True


def join_or_start(address: str | None, workers: int | None) -> bool:
    """Use the running Ray session; else join the cluster at `address`, or start a local one
    with `workers` CPUs (no dashboard: its assets would be downloaded). True when this call
    started or joined a session, which the caller then shuts down."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    return True


def cluster_workers(workers: int | None = None) -> int:
    """`workers`, or the running cluster's CPUs (at least 1)."""
    import ray

    return int(workers or max(int(ray.cluster_resources().get("CPU", 1)), 1))
