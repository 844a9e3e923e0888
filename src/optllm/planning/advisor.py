"""The label advisor: how many labelled prompts a goal needs, from the bound's own formula.

The default bound (`labelled`, docs/bounds.md) is a one-sided Clopper-Pearson bound on the
labelled queries routed as the plan routes, with the effective sample 1/(1/n + 1/(N − n))
(`effective_trials`): n labelled prompts estimate the accuracy on the N − n planned ones. Its
distance below the estimate, at accuracy p and confidence C, is `half_width(n, N, p, C)`; the
advisor asks for the smallest n whose distance is at most `margin`:

- before any label (`optllm sample`), at p = 0.5 (the widest case): every plan and every
  single LLM is then known to within `margin` (at C, one at a time);
- with labels (`optllm plan`), per model at its labelled accuracy (narrower near 0 or 1).

A target or a budget needs the plan told apart from the target or the reference by that much;
`margin` (default 0.05) is the gap a user expects to certify. The sample size by default is
that n, at least `MIN_LABELS` and at most `MAX_SHARE` of the batch: labelling
more than half the prompts leaves little to save on, and the advisor says so.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from optllm.errors import OptLLMError

DEFAULT_MARGIN = 0.05
DEFAULT_CONFIDENCE = 0.9
MIN_LABELS = 30
MAX_SHARE = 0.5


def half_width(n: int | np.ndarray, n_total: int, accuracy: float = 0.5, confidence: float = DEFAULT_CONFIDENCE
               ) -> np.ndarray:
    """Distance of the labelled bound below its estimate with n of n_total prompts labelled."""
    from optllm.evaluate.uncertainty import clopper_pearson, effective_trials

    n = np.asarray(n, dtype=float)
    rest = np.maximum(n_total - n, 1.0)
    trials = np.array([effective_trials(k, int(r)) for k, r in zip(np.atleast_1d(n), np.atleast_1d(rest))],
                      dtype=float).reshape(n.shape)
    p = float(np.clip(accuracy, 0.0, 1.0))
    # at p = 0 or 1 the bound is one-sided in the other direction; use the nearer interior value
    p = min(max(p, 0.5 / max(float(n_total), 1.0)), 1.0 - 0.5 / max(float(n_total), 1.0))
    return p - clopper_pearson(p, trials, confidence, -1.0)


def labels_for_margin(margin: float, n_total: int, accuracy: float = 0.5,
                      confidence: float = DEFAULT_CONFIDENCE) -> int | None:
    """Smallest n (of n_total) whose bound lies within `margin` of the estimate; None when
    even labelling half the prompts would not do (beyond half, the fewer prompts left to plan
    make their realised accuracy noisier, and the width grows again)."""
    _check(margin, confidence)
    hi = max(int(n_total) // 2, 1)
    if half_width(hi, n_total, accuracy, confidence) > margin:
        return None
    lo = 1
    while lo < hi:  # the width shrinks as n grows
        mid = (lo + hi) // 2
        if half_width(mid, n_total, accuracy, confidence) <= margin:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _check(margin: float, confidence: float) -> None:
    if not (0 < margin < 1):
        raise OptLLMError(f"--margin must be between 0 and 1 (an accuracy gap, e.g. 0.05), got {margin}")
    if not (0.5 <= confidence < 1):
        raise OptLLMError(f"--confidence must be in [0.5, 1), got {confidence}")


@dataclass(frozen=True)
class LabelAdvice:
    """What the advisor says: `needed` labelled prompts in total (None: unreachable), per
    model at its labelled accuracy (with labels), against the `have` there are."""

    n_total: int
    margin: float
    confidence: float
    needed: int | None
    have: int = 0
    per_model: Mapping[str, int | None] = field(default_factory=dict)
    width: Mapping[str, float] = field(default_factory=dict)  # with `have` labels, per model
    unit: str = "labelled prompts"  # what `have` and `needed` count ("validation labels" under --bound holdout)

    @property
    def width_now(self) -> float | None:
        """The bound's distance with the `have` labels (the widest model's; p = 0.5 without
        accuracies); None with no labels."""
        if not self.have:
            return None
        if self.width:
            return max(self.width.values())
        return float(half_width(self.have, self.n_total, 0.5, self.confidence))

    @property
    def enough(self) -> bool:
        return self.needed is not None and self.have >= self.needed

    @property
    def message(self) -> str:
        gap = f"±{self.margin:g} at {self.confidence:.0%}"
        now = "" if self.width_now is None else (f"{self.have:,} {self.unit} resolve about "
                                                  f"±{self.width_now:.2f}; ")
        if self.needed is None:
            return (f"{now}no sample of these {self.n_total:,} prompts pins accuracy to {gap}: expect wide bounds, "
                    "or resolve a wider gap (optllm sample --margin)")
        if self.have and self.have >= self.needed:
            return f"{self.have:,} {self.unit}: enough for {gap} (needs {self.needed:,})"
        if self.have:
            return (f"{now}{gap} needs about {self.needed:,}: bounds will be wide and targets may not be "
                    f"certified (add {self.needed - self.have:,})")
        return f"{gap} needs about {self.needed:,} {self.unit} of {self.n_total:,}"

    def as_dict(self) -> dict[str, Any]:
        return {"n_total": self.n_total, "margin": self.margin, "confidence": self.confidence, "needed": self.needed,
                "have": self.have, "enough": self.enough, "width_now": self.width_now,
                "per_model": dict(self.per_model),
                "width": dict(self.width), "unit": self.unit, "message": self.message}


def advise(n_total: int, *, margin: float = DEFAULT_MARGIN, confidence: float = DEFAULT_CONFIDENCE,
           have: int = 0, accuracies: Mapping[str, float] | None = None, unit: str = "labelled prompts"
           ) -> LabelAdvice:
    """The advice for a batch of `n_total` prompts (labelled ones included); with
    `accuracies` (per model, from the labels), per model and in total (their maximum).
    `unit` names what the bound counts (`have` and the advice): the labelled prompts, or
    the validation labels alone under `--bound holdout`."""
    _check(margin, confidence)
    if not accuracies:
        need = labels_for_margin(margin, n_total, 0.5, confidence)
        return LabelAdvice(n_total, margin, confidence, need, have, unit=unit)
    per = {m: labels_for_margin(margin, n_total, a, confidence) for m, a in accuracies.items()}
    width = {m: float(half_width(max(have, 1), n_total, a, confidence)) for m, a in accuracies.items()}
    need = None if any(v is None for v in per.values()) else max(per.values(), default=None)
    return LabelAdvice(n_total, margin, confidence, need, have, per, width, unit)


def default_sample_size(n_total: int, *, margin: float = DEFAULT_MARGIN,
                        confidence: float = DEFAULT_CONFIDENCE) -> tuple[int, LabelAdvice]:
    """The sample size `optllm sample` draws without --size: the advice, at least
    `MIN_LABELS` and at most `MAX_SHARE` of them → (size, advice)."""
    adv = advise(n_total, margin=margin, confidence=confidence)
    cap = max(int(np.floor(MAX_SHARE * n_total)), 1)
    want = cap if adv.needed is None else adv.needed
    return int(np.clip(want, min(MIN_LABELS, cap), cap)), adv
