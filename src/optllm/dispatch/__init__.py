"""Dispatch a plan to real OpenAI-compatible endpoints: the plan folder, the async client
(bounded concurrency, rate limits, retries, fallback, hard spend cap) and its durable ledger."""
from optllm.dispatch.client import (
    DispatchItem, DispatchReport, Dispatcher, check_ready, classify, dispatch, dispatch_async,
)
from optllm.dispatch.ledger import ResumeState, ledger_path, read_jsonl
from optllm.dispatch.limits import RateLimiter, SpendGuard, backoff_delay
from optllm.dispatch.plan import Plan, build_plan, read_plan, read_prompts, write_plan, write_prompts

__all__ = [
    "DispatchItem", "DispatchReport", "Dispatcher", "check_ready", "classify", "dispatch", "dispatch_async",
    "ResumeState", "ledger_path", "read_jsonl", "RateLimiter", "SpendGuard", "backoff_delay",
    "Plan", "build_plan", "read_plan", "read_prompts", "write_plan", "write_prompts",
]
