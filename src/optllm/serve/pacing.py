"""The price of accuracy, λ, kept online: where it starts and how it moves.

Routing rule (the exact front's): request i goes to argmax_k p_ik − λ·c_ik, with p_ik the
predicted P(correct) and c_ik the estimated cost (USD) of model k. On a batch, every point
of the exact front is this rule for some λ (the slope of the front there, `Front.slopes`),
so λ is the dual price of the budget: how much accuracy one more dollar buys at the margin.

Start. λ₀ is the slope of the front of the labelled batch (the plan's prompts) at the
budget: with a budget of ρ USD per request, the front point of cost ρ·n; with a target
accuracy, the front point reaching it. Any λ between the slopes of the moves on either side
of that point reproduces it; we take their geometric mean.

Budget mode (`--budget-per-1k`, ρ = USD per request). After each answered request t, whose
billed cost is c_t, λ moves multiplicatively (dual mirror descent with an entropic mirror
map, as in Balseiro, Lu & Mirrokni, "The best of many worlds: dual mirror descent for online
allocation problems", 2020):

    log λ_{t+1} = max(log λ_min, log λ_t + η · (c_t − ρ) / ρ)

Spending above the pace raises λ (cheaper models win more often), below it lowers λ.
Guarantee (telescoping the update; the floor only ever raises λ): after T answered
requests,

    Σ_t c_t  ≤  ρ·T + (ρ/η) · log(λ_T / λ₀)

so the overspend is bounded by how far λ has risen, whatever the order of the requests.
λ itself stays bounded: once λ ≥ λ* (the price at which every request goes to its cheapest
model) it can rise only on a request whose cheapest model costs more than ρ. So when the
budget rate covers each request's cheapest model, λ_T ≤ λ*·exp(η·g_max) with g_max the
largest (c_t − ρ)/ρ, the overspend is a constant, and the average spend per request tends
to at most ρ (≤ ρ + O(1/T)). With i.i.d. requests and η ~ 1/√T the same algorithm's regret
against the best fixed λ in hindsight is O(√T) (ibid.). The hard cap (`--max-spend`, the
spend guard shared with `dispatch`) is separate and absolute.

Accuracy mode (`--target-accuracy A`). No labels arrive online, so the signal is the
predicted accuracy p_t of each routed request: log λ_{t+1} = clip(log λ_t + η·(p_t − A)),
falling (buy accuracy) while the running predicted accuracy is below A. Telescoping again:
Σ_t (A − p_t) ≤ log(λ₀/λ_T)/η, so the mean predicted accuracy is at least
A − log(λ₀/λ_T)/(η·T); the realised accuracy is as good as the predictions are calibrated
(as for a batch plan).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optllm.errors import OptLLMError


def lambda_at(front: Any, *, budget: float | None = None, accuracy: float | None = None) -> float:
    """λ₀: the slope of the exact front (`optllm.optimize.front.Front`) at a total `budget`
    (USD for the front's queries) or at a mean predicted `accuracy`; finite and > 0."""
    slopes = np.asarray(front.slopes(), dtype=np.float64)  # slopes[k]: of the move into point k (∞ at 0)
    K = len(front)
    if budget is not None:
        k = int(np.searchsorted(front.costs, float(budget), side="right")) - 1
    elif accuracy is not None:
        k = int(np.searchsorted(front.accuracies, float(accuracy) - 1e-12, side="left"))
    else:
        raise ValueError("give a budget or an accuracy")
    k = min(max(k, 0), K - 1)
    finite = slopes[np.isfinite(slopes) & (slopes > 0)]
    if finite.size == 0:  # one point: every query's best model is also its cheapest
        return 1.0
    before = slopes[k] if k > 0 else math.inf  # slope of the last move taken
    after = slopes[k + 1] if k + 1 < K else 0.0  # slope of the next move
    if math.isfinite(before) and after > 0:
        return float(math.sqrt(before * after))
    if after > 0:  # at the all-cheapest point: a price above every move's slope
        return float(after * 2.0)
    return float(before / 2.0)  # at the most accurate point: below every move's slope


@dataclass
class PacerState:
    lam: float
    requests: int = 0
    spend: float = 0.0
    predicted: float = 0.0  # Σ predicted accuracy of the routed choices
    log: list[tuple[float, float, float]] = field(default_factory=list)  # (time, λ, spend) every `log_every`


class Pacer:
    """λ and its online update (see the module docstring). `mode` is "budget" (target: `rate`
    USD per request) or "accuracy" (target: `rate` = the mean predicted accuracy). Thread-safe;
    `clock` stamps the λ history (a fake clock in tests)."""

    def __init__(self, mode: str, rate: float, lam0: float, *, eta: float = 0.05, lam_min: float | None = None,
                 lam_max: float | None = None, clock: Any = None, log_every: int = 100) -> None:
        if mode not in ("budget", "accuracy"):
            raise OptLLMError(f"pacing mode must be budget or accuracy, got {mode!r}")
        if not (math.isfinite(rate) and rate > 0):
            raise OptLLMError(f"the budget rate must be a positive amount, got {rate}")
        if mode == "accuracy" and not rate < 1:
            raise OptLLMError(f"--target-accuracy must lie in (0, 1), got {rate}")
        if not (math.isfinite(eta) and eta > 0):
            raise OptLLMError(f"--eta must be a positive number, got {eta}")
        if not (math.isfinite(lam0) and lam0 > 0):
            raise OptLLMError(f"the starting price λ must be positive and finite, got {lam0}")
        import time

        self.mode, self.rate, self.eta = mode, float(rate), float(eta)
        self.lam0 = float(lam0)
        self.lam_min = float(lam_min) if lam_min is not None else self.lam0 * 1e-6
        self.lam_max = float(lam_max) if lam_max is not None else self.lam0 * 1e6
        self.clock = clock or time.time
        self.log_every = max(1, int(log_every))
        self.state = PacerState(self.lam0)
        self._lock = threading.Lock()

    @property
    def lam(self) -> float:
        return self.state.lam

    def observe(self, cost: float, predicted: float) -> float:
        """One answered request: its billed `cost` (USD) and the predicted accuracy of the model
        that answered → the new λ."""
        with self._lock:
            s = self.state
            s.requests += 1
            s.spend += float(cost)
            s.predicted += float(predicted)
            if self.mode == "budget":
                g = (float(cost) - self.rate) / self.rate
            else:
                g = float(predicted) - self.rate
            u = math.log(s.lam) + self.eta * g
            s.lam = float(min(max(math.exp(u), self.lam_min), self.lam_max))
            if s.requests % self.log_every == 0:
                s.log.append((float(self.clock()), s.lam, s.spend))
            return s.lam

    def overspend_bound(self) -> float:
        """The guarantee's right-hand side minus ρ·T: (ρ/η)·log(λ_T/λ₀) (budget mode)."""
        return self.rate / self.eta * math.log(self.state.lam / self.lam0) if self.mode == "budget" else float("nan")

    def describe(self) -> dict[str, Any]:
        s = self.state
        return {"mode": self.mode, "rate": self.rate, "eta": self.eta, "lambda0": self.lam0, "lambda": s.lam,
                "requests": s.requests, "spend": s.spend,
                "spend_per_request": s.spend / s.requests if s.requests else None,
                "mean_predicted_accuracy": s.predicted / s.requests if s.requests else None}
