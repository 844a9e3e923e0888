"""Prometheus metrics of the router (prometheus-client, one registry per app so several apps
can live in one process): requests, tokens, spend, per-model share, λ, latency and the
routing overhead."""
from __future__ import annotations

from collections import Counter as _Counts
from typing import Any

PREFIX = "optllm"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
ROUTE_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1)


class Metrics:
    def __init__(self, models: tuple[str, ...]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter(f"{PREFIX}_requests", "Chat requests by answering model, routing mode and status",
                                ["model", "mode", "status"], registry=r)
        self.tokens = Counter(f"{PREFIX}_tokens", "Billed tokens by model and kind (prompt, completion)",
                              ["model", "kind"], registry=r)
        self.spend = Counter(f"{PREFIX}_spend_usd", "Spend in USD by model (billed usage; the reservation when "
                             "usage is unknown)", ["model"], registry=r)
        self.share = Gauge(f"{PREFIX}_model_share", "Share of answered requests per model", ["model"], registry=r)
        self.lam = Gauge(f"{PREFIX}_lambda", "The price of accuracy lambda (predicted accuracy per USD)", registry=r)
        self.spend_rate = Gauge(f"{PREFIX}_spend_per_request_usd", "Mean spend per answered routed request",
                                registry=r)
        self.budget_rate = Gauge(f"{PREFIX}_budget_per_request_usd", "The budget rate (budget mode)", registry=r)
        self.cap_left = Gauge(f"{PREFIX}_spend_cap_remaining_usd", "Spend cap minus spent and reserved "
                              "(+Inf without a cap)", registry=r)
        self.latency = Histogram(f"{PREFIX}_request_latency_seconds", "Whole request latency", ["stream"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.routing = Histogram(f"{PREFIX}_routing_overhead_seconds", "Time inside the router (features, "
                                 "prediction, prices, choice), upstream excluded", buckets=ROUTE_BUCKETS, registry=r)
        self.fallbacks = Counter(f"{PREFIX}_fallbacks", "Requests answered by a fallback model", ["model"],
                                 registry=r)
        self.errors = Counter(f"{PREFIX}_upstream_errors", "Upstream call failures by model and kind",
                              ["model", "kind"], registry=r)
        self.shadow = Counter(f"{PREFIX}_shadow_disagreements", "Shadow mode: requests where the router would "
                              "have chosen another model", registry=r)
        self._answered: _Counts[str] = _Counts()
        self.models = models

    def answered(self, model: str, mode: str, prompt_tokens: int | None, completion_tokens: int | None,
                 cost: float, position: int) -> None:
        self.requests.labels(model, mode, "ok").inc()
        if prompt_tokens is not None:
            self.tokens.labels(model, "prompt").inc(prompt_tokens)
        if completion_tokens is not None:
            self.tokens.labels(model, "completion").inc(completion_tokens)
        self.spend.labels(model).inc(max(cost, 0.0))
        if position:
            self.fallbacks.labels(model).inc()
        self._answered[model] += 1
        total = sum(self._answered.values())
        for m in set(self.models) | set(self._answered):
            self.share.labels(m).set(self._answered[m] / total)

    def failed(self, mode: str, status: int) -> None:
        self.requests.labels("none", mode, str(status)).inc()

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def snapshot(self) -> dict[str, Any]:
        total = sum(self._answered.values())
        return {"answered": total, "share": {m: c / total for m, c in self._answered.items()} if total else {}}
