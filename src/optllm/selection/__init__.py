"""Selection: from a front, its accuracy bounds and a `Goal` to one plan with its guarantee.

`select(front, bounds, goal, ...) -> Selection` is the only place a plan is chosen; `optllm
run`, `optllm bench`, `optllm plan` and the Python API all call it.
"""
from optllm.selection.engine import PlanFigures, Selection, select
from optllm.selection.goal import RISK_METHODS, Goal
from optllm.selection.reference import Reference, best_reference
from optllm.selection.risk import risk_cost

__all__ = ["Goal", "RISK_METHODS", "Selection", "PlanFigures", "select", "Reference", "best_reference", "risk_cost"]
