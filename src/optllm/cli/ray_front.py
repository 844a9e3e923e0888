"""`optllm front --engine ray`: the thin layer over `optllm.engine.ray_engine.RayFront`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from optllm.errors import OptLLMError


def ray_front(data: str, *, truth: bool, address: str | None, budget: float | None, target: float | None,
              plan_out: Path | None, other: Sequence[str] = ()) -> dict[str, Any]:
    """Summary of the front's ends (and the plan at `budget`/`target`) from the Ray engine."""
    if other:
        raise OptLLMError(f"{', '.join(other)}: not with --engine ray (the full point list lives on one node); "
                          "use --budget/--target and --plan-out")
    if budget is not None and target is not None:
        raise OptLLMError("give at most one of --budget and --target")
    if plan_out is not None and budget is None and target is None:
        raise OptLLMError("--plan-out needs --budget or --target")
    from optllm.engine import RAY_HINT, ray_available

    if not ray_available():
        raise OptLLMError(RAY_HINT)
    from optllm.engine.ray_engine import PART_NAMES, RayFront

    if plan_out is not None:
        from optllm.io import check_output_dir

        check_output_dir(plan_out, "--plan-out", PART_NAMES)
    pth = Path(data)
    parquet = pth.is_dir() or pth.suffix == ".parquet"
    if parquet:
        kw: dict[str, Any] = {"parquet": pth}
        name = str(pth)
    else:
        if not truth:
            raise OptLLMError("with --engine ray, DATA is a Parquet p/cost dataset, or a labelled dataset with --truth")
        from optllm.data import load

        d = load(data)
        kw = {"p": d.correct, "cost": d.cost, "models": d.models}
        name = d.name
    with RayFront(address=address, **kw) as rf:
        s: dict[str, Any] = {
            "dataset": name, "engine": "ray", "n_queries": rf.n, "n_models": rf.m, "points": len(rf),
            "shards": rf.S, "workers": rf.workers, "cluster_start_s": round(rf.start_s, 3),
            "build_s": round(rf.build_s, 3),
            "cheapest": {"cost": rf.cost_lo, "accuracy": rf.acc_lo},
            "most_accurate": {"cost": rf.cost_hi, "accuracy": rf.acc_hi},
        }
        if budget is not None or target is not None:
            a = rf.at_budget(budget, plan_out) if budget is not None else rf.at_accuracy(target, plan_out)
            s["plan"] = {"budget": budget, "target": target, "cost": a.cost, "accuracy": a.accuracy,
                         "upper_bound": None if a.upper_bound != a.upper_bound else a.upper_bound,
                         "cost_lower_bound": None if a.cost_lower_bound != a.cost_lower_bound else a.cost_lower_bound,
                         **{k: a.info[k] for k in ("point", "rounds", "gathered", "candidates", "seconds")}}
            if a.models.size:
                s["plan"]["counts"] = a.counts()
            if plan_out is not None:
                s["plan"]["parquet"] = str(plan_out)
    return s
