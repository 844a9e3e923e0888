"""What the user asks for, validated once: a budget, an accuracy target, or neither (the knee).

One `Goal` is built by `optllm run`, `optllm plan` and the Python API alike, so an option
means the same thing, and a bad value gives the same one-line message, on every path.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from optllm.errors import OptLLMError

RISK_METHODS = ("normal", "quantile")
GoalKind = Literal["budget", "target", "knee"]


@dataclass(frozen=True)
class Goal:
    """A budget (USD on the assigned queries) or an accuracy target (0-1), never both; with
    neither, the knee of the predicted front.

    - `confidence`: the level of every bound; a target plan reaches the target with this
      probability, a safe budget plan beats the best plan without a predictor with it.
    - `safe` (budget only): keep the optimiser's plan only when it reliably beats the best plan
      a user could make without a predictor; `False` is the paper's rule.
    - `risk` (budget only): also keep the REALISED cost under the budget with this
      probability, by `risk_method` (`normal`: mean + z·sd of the total; `quantile`: sum of
      per-query upper-quantile costs). Needs estimated costs (`optllm plan`).
    """

    budget: float | None = None
    target_accuracy: float | None = None
    confidence: float = 0.9
    safe: bool = True
    risk: float | None = None
    risk_method: str = "normal"

    def __post_init__(self) -> None:
        if self.budget is not None and self.target_accuracy is not None:
            raise OptLLMError("give --budget or --target-accuracy, not both (neither: the knee of the front)")
        if self.budget is not None and not (isinstance(self.budget, (int, float)) and math.isfinite(self.budget)
                                            and self.budget >= 0):
            raise OptLLMError(f"--budget must be a non-negative amount in USD, got {self.budget}")
        if self.target_accuracy is not None and not 0 <= self.target_accuracy <= 1:
            raise OptLLMError(f"--target-accuracy must lie in [0, 1], got {self.target_accuracy}")
        if not 0.5 <= self.confidence < 1:
            raise OptLLMError(f"--confidence must lie in [0.5, 1), got {self.confidence}")
        if not self.safe and self.budget is None:
            raise OptLLMError("--no-safe applies to --budget (the safe rule is the budget rule's)")
        if self.risk is not None:
            if self.budget is None:
                raise OptLLMError("--risk applies to --budget (the probability that the realised cost stays under it)")
            if not 0.5 <= self.risk < 1:
                raise OptLLMError(f"--risk must be a probability in [0.5, 1), got {self.risk}")
        if self.risk_method not in RISK_METHODS:
            raise OptLLMError(f"--risk-method must be one of {', '.join(RISK_METHODS)}, got {self.risk_method!r}")

    @property
    def kind(self) -> GoalKind:
        """`budget`, `target` or `knee`."""
        if self.budget is not None:
            return "budget"
        if self.target_accuracy is not None:
            return "target"
        return "knee"

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


def percent(x: float) -> str:
    """A confidence level as a percentage, with as few decimals as show it without rounding
    it onto a rounder figure: 0.9 -> 90%, 0.996 -> 99.6% (not 100%), 0.99841... -> 99.8%."""
    v = 100.0 * float(x)
    for d in range(4):
        if abs(round(v, d) - v) < 1e-9:
            return f"{v:.{d}f}%"
    d = 1
    while d < 4 and x < 1 and round(v, d) >= 100:
        d += 1
    return f"{v:.{d}f}%"
