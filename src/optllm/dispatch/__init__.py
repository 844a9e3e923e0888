"""Send a plan to real OpenAI-compatible endpoints: the async client (bounded concurrency,
rate limits, retries, fallback, hard spend cap) and its durable ledger. The plan itself (its
items and folder) belongs to `optllm.planning`."""
from optllm.dispatch.client import DispatchReport, Dispatcher, check_ready, classify, dispatch, dispatch_async
from optllm.dispatch.ledger import ResumeState, ledger_path, read_jsonl
from optllm.dispatch.limits import RateLimiter, SpendGuard, backoff_delay

__all__ = [
    "DispatchReport", "Dispatcher", "check_ready", "classify", "dispatch", "dispatch_async",
    "ResumeState", "ledger_path", "read_jsonl", "RateLimiter", "SpendGuard", "backoff_delay",
]
