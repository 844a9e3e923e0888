"""The best plan a user could make WITHOUT a predictor, which a safe budget plan must beat.

At a budget that is the strongest affordable single LLM or, between two single LLMs, a random
mix of them that spends the budget (RouterBench's zero router: a budget between two LLMs buys
their straight line). Both are compared with a plan on the same held-out labels, by a paired
bound and by an exact sign test (McNemar's for 0/1 labels).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optllm.evaluate.uncertainty import HeldOut, labelled_points, single_bounds
from optllm.optimize.types import FrontLike


@dataclass(frozen=True)
class Reference:
    """Model `lo` alone (w = 0), or a random mix sending a share w of the queries to the
    pricier model `hi` and the rest to `lo`; `estimate` is its held-out-corrected accuracy."""

    lo: int
    hi: int
    w: float
    estimate: float

    def weights(self, m: int) -> np.ndarray:
        """Share of the queries sent to each of the m models."""
        out = np.zeros(m)
        out[self.lo] += 1.0 - self.w
        out[self.hi] += self.w
        return out

    def describe(self, models: tuple[str, ...]) -> str:
        if self.w <= 0.0:
            return models[self.lo]
        return f"a random mix: {self.w:.0%} of the queries to {models[self.hi]}, the rest to {models[self.lo]}"

    def choices(self, n: int, seed: int) -> np.ndarray:
        """One realisation of the reference on n queries: each goes to hi with probability w."""
        if self.w <= 0.0:
            return np.full(n, self.lo)
        return np.where(np.random.default_rng(seed).random(n) < self.w, self.hi, self.lo)

    def assignment(self, cost: np.ndarray, budget: float, seed: int) -> np.ndarray:
        """The reference as a plan within `budget`: a random share of queries, as many as
        the budget pays for, to hi; the rest to lo."""
        n = cost.shape[0]
        out = np.full(n, self.lo)
        if self.w <= 0.0:
            return out
        order = np.random.default_rng(seed).permutation(n)
        extra = np.cumsum(cost[order, self.hi] - cost[order, self.lo])
        room = budget - float(cost[:, self.lo].sum())
        out[order[: int(np.searchsorted(extra, room * (1 + 1e-12), side="right"))]] = self.hi
        return out


def best_reference(affordable: np.ndarray, totals: np.ndarray, budget: float, p: np.ndarray, held: HeldOut,
                   confidence: float) -> Reference:
    """The best plan without a predictor at `budget`: the strongest affordable single LLM
    (`reference_model`), or a random mix of an affordable LLM with a pricier one that spends
    the whole budget, whichever has the higher held-out-corrected accuracy estimate (the
    mix's estimate is the straight line between the two)."""
    est = np.array([single_bounds(k, p, held, confidence).estimate[0] for k in range(p.shape[1])])
    single = reference_model(affordable, totals, est[affordable], held, confidence)
    best = Reference(single, single, 0.0, float(est[single]))
    for hi in np.flatnonzero(totals > budget * (1 + 1e-12)):
        for lo in affordable:
            w = (budget - totals[lo]) / (totals[hi] - totals[lo])
            e = float(est[lo] + w * (est[hi] - est[lo]))
            if e > best.estimate + 1e-12:
                best = Reference(int(lo), int(hi), float(w), e)
    return best


def reference_model(affordable: np.ndarray, totals: np.ndarray, est: np.ndarray, held: HeldOut,
                    confidence: float) -> int:
    """The single LLM a budget plan must beat: the affordable model with the best
    held-out-corrected accuracy, unless the labelled sample cannot tell it apart from a
    pricier affordable one; then the priciest of those. "Cannot tell apart": an exact sign
    test on the same labelled queries (only the queries where the two disagree count) does
    not find the lead at `confidence`. With a few dozen labels, near-equal models are a coin
    flip on the sample, and under a budget the price is the better prior. `est`: the
    corrected estimate of each affordable model."""
    lead = int(affordable[int(np.argmax(est))])
    # paired on the same labelled queries; the lead itself is never "ahead" of itself
    tied = np.array([not sign_test_ahead(held.y[:, lead] - held.y[:, k], confidence) for k in affordable])
    cand = affordable[tied]
    return int(cand[np.argmax(totals[cand])])


def sign_test_ahead(d: np.ndarray, confidence: float) -> bool:
    """Exact sign test (McNemar's for 0/1 labels) on paired differences `d` (NaN ignored):
    are the positive differences significantly more than the negative ones at `confidence`?
    Only the pairs that disagree count, so a handful of them cannot look decisive."""
    from scipy.stats import binomtest

    d = d[~np.isnan(d)]
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    return wins > losses and binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue <= 1.0 - confidence


def sign_test_wins(front: FrontLike, points: np.ndarray, ref: np.ndarray, p: np.ndarray, cost: np.ndarray,
                   held: HeldOut, confidence: float) -> np.ndarray:
    """Small-sample check of "plan beats the reference" for each of `points`: route the
    labelled queries by each plan's rule and sign-test the plan's answers against the
    reference's (`ref`: its model per labelled query) on them. The normal approximation
    behind the paired bound is unreliable when only a handful of labelled queries disagree."""
    return np.array([sign_test_ahead(d, confidence) for d in _paired_answers(front, points, ref, p, cost, held)],
                    dtype=bool)


def disagreements(front: FrontLike, point: int, ref: np.ndarray, p: np.ndarray, cost: np.ndarray,
                  held: HeldOut) -> tuple[int, int]:
    """On the labelled queries routed by front point `point`'s rule: how many the plan gets
    right and the reference wrong, and the reverse (what the sign test counts)."""
    d = _paired_answers(front, np.array([point]), ref, p, cost, held)[0]
    d = d[~np.isnan(d)]
    return int((d > 0).sum()), int((d < 0).sum())


def _paired_answers(front: FrontLike, points: np.ndarray, ref: np.ndarray, p: np.ndarray, cost: np.ndarray,
                    held: HeldOut) -> list[np.ndarray]:
    """Per point: the plan's label minus the reference's on each labelled query."""
    rect = held.rectifier
    ts = labelled_points(front, p, cost, held, points)
    rows = np.arange(held.n)
    y_ref = held.y[rows, ref]
    return [held.y[rows, rect.assignment(int(t))] - y_ref for t in ts]
