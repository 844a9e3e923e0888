"""optllm: assign each query in a batch to the LLM that answers it for the least money.

Modules: `data` (Outcomes, loaders, splits), `predict` (who answers what), `cost` (prices and
tokens), `optimize` (exact Pareto fronts, the paper's heuristic, MOEAs), `evaluate`
(indicators, baselines, benchmarks), `dispatch` (send a plan to real endpoints), `cli`.
"""
from optllm.errors import OptLLMError

__version__ = "0.1.0"
__all__ = ["OptLLMError", "__version__"]
