"""The unit a plan is made of and a sender sends: one query and the model it goes to."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PlanItem:
    """One query of a plan: its id, prompt, planned model, the models to fall back to, and the
    price tier it was planned at (`online`, or `batch`: a provider's batch API)."""

    id: str
    prompt: str
    model: str
    fallbacks: tuple[str, ...] = ()
    tier: str = "online"
