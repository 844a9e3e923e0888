"""The exact TRUE front of a dataset (from its labels, with hindsight) against its best
single LLM: what `optllm front --truth` prints."""
from __future__ import annotations

from typing import Any

from optllm.data import Outcomes
from optllm.optimize.types import FrontLike

__all__ = ["truth_summary"]


def truth_summary(data: Outcomes, front: FrontLike) -> dict[str, Any]:
    """Both ends of `front` (the true front of `data`), the best single model, the cost of
    reaching its accuracy (and the saving), and the accuracy reachable at its cost."""
    acc, tot = data.model_accuracy(), data.model_total_cost()
    b = data.best_model()
    best_acc, best_cost = float(acc[b]), float(tot[b])
    at_acc = front.at_accuracy(best_acc)
    at_cost = front.at_budget(best_cost)
    return {
        "dataset": data.name, "n_queries": data.n, "n_models": data.m, "points": len(front),
        "seconds": getattr(front, "info", {}).get("seconds"),
        "cheapest": {"cost": float(front.costs[0]), "accuracy": float(front.accuracies[0])},
        "most_accurate": {"cost": float(front.costs[-1]), "accuracy": float(front.accuracies[-1])},
        "best_model": {"name": data.models[b], "accuracy": best_acc, "cost": best_cost},
        "at_best_accuracy": {"cost": at_acc.cost, "cost_lower_bound": at_acc.cost_lower_bound,
                             "accuracy": at_acc.accuracy,
                             "saving": 1.0 - at_acc.cost / best_cost if best_cost > 0 else None},
        "at_best_cost": {"accuracy": at_cost.accuracy, "upper_bound": at_cost.upper_bound, "cost": at_cost.cost,
                         "gain": at_cost.accuracy - best_acc},
        "single_models": {name: {"cost": float(tot[k]), "accuracy": float(acc[k])} for k, name in enumerate(data.models)},
    }
