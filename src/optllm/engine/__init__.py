"""Execution back ends beyond one process: `ray_engine` (the exact front's plan on a Ray cluster)."""
from __future__ import annotations

__all__ = ["ray_available", "RAY_HINT"]

RAY_HINT = "the Ray engine needs ray: pip install 'optllm[ray]'"


def ray_available() -> bool:
    """Whether `ray` is importable (the `optllm[ray]` extra)."""
    try:
        import ray  # noqa: F401
    except Exception:
        return False
    return True
