from optllm.optimize.types import Assignment, FrontLike, thin_indices  # noqa: E402,F401
from optllm.optimize.front import Front, pareto_front, pareto_front_chunks, iter_row_chunks  # noqa: E402,F401
from optllm.optimize.milp import milp_at_budget, milp_at_accuracy  # noqa: E402,F401
from optllm.optimize.solutions import SolutionSet  # noqa: E402,F401
from optllm.optimize.paper import optllm_m, optllm_s  # noqa: E402,F401
from optllm.optimize.moea import run_moea  # noqa: E402,F401
from optllm.optimize.registry import MOEAS, OPTIMIZERS, build_front  # noqa: E402,F401
