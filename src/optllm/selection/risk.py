"""The realised-cost side of a budget: with `Goal.risk`, the plan's REALISED total must stay
under the budget with that probability, under one of two rules:

- `normal` (default): the total is approximated as normal with mean Σ mean_i and variance
  Σ var_i + s², var_i from the spread of the model's output length in the labelled sample
  (output price² × variance of completion tokens; queries independent) and s the systematic
  error of approximate tokenizers (Σ prompt cost_i × margin/2, fully correlated; 0 for exact
  tokenizers); the plan must have Σ mean_i + z_risk·sqrt(Σ var_i + s²) ≤ budget.
- `quantile`: Σ of each query's upper cost (output length at its upper quantile, and prompt
  tokens × (1 + margin) for approximate tokenizers) ≤ budget; no independence assumption,
  more conservative.
"""
from __future__ import annotations

import numpy as np

from optllm.cost import CostMatrix


def z_of(probability: float) -> float:
    """The standard normal quantile."""
    from scipy.stats import norm

    return float(norm.ppf(probability))


def risk_cost(costs: CostMatrix, choice: np.ndarray, risk: float, method: str) -> float:
    """The amount the realised total of assignment `choice` stays under with probability
    `risk` (per `method`)."""
    t = costs.total(choice)
    if method == "quantile":
        return t["upper"]
    return t["mean"] + z_of(risk) * t["sd"]
