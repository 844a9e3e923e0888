"""`optllm plan --engine ray`: the thin layer over `optllm.engine.ray_plan.ray_build_plan`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from optllm.errors import OptLLMError


def ray_plan_cmd(prompts: Path, models: Path, labels: Path, out: Path, *, goal: Any, settings: Any, address: str | None,
                 quantile: float, length_regression: bool, val_share: float, tier: str, label_budget: float | None,
                 batch_rows: int, progress: Any = None) -> dict[str, Any]:
    """Plan PROMPTS on Ray into `out` (plan shards, ids.parquet, summary.json) → the summary.
    Checks the options and that ray is importable before reading anything."""
    from optllm.engine import RAY_HINT, ray_available

    if label_budget is not None:
        raise OptLLMError("--label-budget is not available with --engine ray (labelling rounds run locally)")
    if batch_rows < 1:
        raise OptLLMError(f"--batch-rows must be ≥ 1, got {batch_rows}")
    if not ray_available():
        raise OptLLMError(RAY_HINT)
    from optllm.cost import load_catalogue
    from optllm.data import load_long
    from optllm.engine.ray_plan import RAY_PLAN_FILES, ray_build_plan
    from optllm.io import check_output_dir
    from optllm.planning import read_prompts

    check_output_dir(out, "--out", RAY_PLAN_FILES)
    cat = load_catalogue(models)
    cat.priced(tier)
    ids, texts = read_prompts(prompts)
    labelled = load_long(labels, require_cost=False, binary=True)
    res = ray_build_plan(ids, texts, cat, labelled, goal, settings, out, quantile=quantile,
                         length_regression=length_regression, val_share=val_share, labels_source=str(labels),
                         tier=tier, address=address, batch_rows=batch_rows, progress=progress)
    s = dict(res.summary)
    if res.choice is not None:
        import numpy as np

        counts = np.bincount(res.choice, minlength=len(res.models))
        s["assigned"] = {res.models[k]: int(counts[k]) for k in range(len(res.models)) if counts[k]}
    s["out"] = str(out)
    return s
