"""`optllm serve`: an OpenAI-compatible router that keeps a budget online.

- `pacing`: λ, the price of accuracy: its start from the exact front and its online rule;
- `router`: one request's decision (features → p → cost → argmax p − λ·cost, hull fallbacks);
- `upstream`: calls with dispatch's retries, circuit breaker and spend guard;
- `metrics`: Prometheus metrics; `app`: the FastAPI app; `setup`: from files to a `Server`.

FastAPI, uvicorn and prometheus-client come with the `serve` extra (`pip install optllm[serve]`).
"""
from optllm.serve.pacing import Pacer, lambda_at
from optllm.serve.router import Decision, Router, choose

__all__ = ["Pacer", "lambda_at", "Router", "Decision", "choose"]
