"""Shared fixtures: real data skips with a reason when absent, except under CI=true."""
from __future__ import annotations

import os

import pytest

from optllm.data import data_dir, load


def _require_data(rel: str = "") -> None:
    d = data_dir(required=False)
    if d is None or (rel and not (d / rel).exists()):
        where = "OPTLLM_DATA_DIR or ../shared/datasets" + (f" ({rel})" if rel else "")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but the real data is missing: {where}")
        pytest.skip(f"real datasets not found in {where}")


@pytest.fixture
def require_data():
    """Call with a relative path to skip (or fail under CI) when that data is absent."""
    return _require_data


@pytest.fixture(scope="session")
def overruling():
    """The real overruling dataset (2,160 × 12)."""
    _require_data("overruling/overruling.csv")
    return load("overruling")


@pytest.fixture(scope="session")
def demo():
    """The bundled copy of overruling (always available)."""
    return load("demo")


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 2 CPUs (small object store) for one test module; skips with the
    reason when the `optllm[ray]` extra is absent, except under CI=true, where it fails."""
    try:
        import ray
    except Exception:  # noqa: BLE001 - depends on the environment
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but ray is not importable: pip install 'optllm[ray]'")
        pytest.skip("ray is not installed (the optllm[ray] extra): pip install 'optllm[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20, log_to_driver=False)
    yield ray
    ray.shutdown()
