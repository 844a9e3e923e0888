"""How sure can a user be of a plan's accuracy? Lower confidence bounds along a front.

The predicted accuracy of a plan is uncertain for two reasons: each answer is a coin flip
(Bernoulli variance, small for thousands of queries), and the predictor itself was fit on a
few dozen labels, so its errors are correlated across every query sent to the same model
(the dominant term at 1% labels). We measure the second by refitting the predictor on
bootstrap resamples of the labelled sample and re-scoring the SAME plans with each refit;
the spread of those scores, and their mean shift (the winner's curse of picking the
cheapest plan that looks good enough), give the bound

    LB_C = μ + min(0, shift) − z_C · sqrt(var_bootstrap + var_bernoulli).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from optllm.optimize.types import FrontLike


def values_along(front: FrontLike, values: np.ndarray) -> np.ndarray:
    """Mean of `values[i, a_k(i)]` over queries for every point k of `front`.

    `values` is [n, m] or [B, n, m] (then the result is [B, K]); each front computes it its
    own fast way (`Front.values`: one cumulative sum over its moves).
    """
    if values.ndim == 2:
        return front.values(values)
    return np.stack([front.values(v) for v in values])


def values_of(assignment: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Mean of `values[..., i, a(i)]` for one assignment; [n, m] → scalar, [B, n, m] → [B]."""
    rows = np.arange(assignment.shape[0])
    return values[..., rows, assignment].mean(axis=-1)


@dataclass(frozen=True)
class AccuracyBounds:
    """Predicted accuracy of each plan with a one-sided lower bound at `confidence`."""

    mean: np.ndarray  # μ_k, the main predictor's expected accuracy
    shift: np.ndarray  # mean bootstrap score − μ (≤ 0 means optimism in μ)
    sd: np.ndarray  # total standard deviation (bootstrap ⊕ Bernoulli)
    sd_predictor: np.ndarray  # bootstrap part only
    confidence: float
    n_labelled: int

    @property
    def z(self) -> float:
        """One-sided normal quantile of the confidence level."""
        return float(norm.ppf(self.confidence))

    @property
    def lower(self) -> np.ndarray:
        """Lower bound on the realised accuracy at level `confidence`."""
        return np.clip(self.mean + np.minimum(self.shift, 0.0) - self.z * self.sd, 0.0, 1.0)

    @property
    def upper(self) -> np.ndarray:
        """The matching upper bound (two-sided interval = [lower, upper])."""
        return np.clip(self.mean + np.maximum(self.shift, 0.0) + self.z * self.sd, 0.0, 1.0)

    def labels_needed(self, target: float) -> int | None:
        """Roughly how many labelled queries would let some plan reach `target` at this level.

        The predictor part of the spread shrinks like 1/sqrt(labels); None when even the
        central estimate of every plan is below the target (more labels alone won't do).
        """
        centre = self.mean + np.minimum(self.shift, 0.0)
        var_bern = np.maximum(self.sd**2 - self.sd_predictor**2, 0.0)
        room = ((centre - target) / max(self.z, 1e-9)) ** 2 - var_bern
        ok = (centre > target) & (room > 0)
        if not ok.any():
            return None
        need = self.n_labelled * self.sd_predictor[ok] ** 2 / room[ok]
        return int(np.ceil(max(float(need.min()), self.n_labelled)))


@dataclass(frozen=True)
class Refits:
    """Predictions of B bootstrap refits of the predictor on a subsample of the assigned rows.

    Only the spread of plan scores across refits is needed, and it is dominated by errors
    shared by every query sent to the same model, so a few thousand rows estimate it well;
    `main` holds the main predictor's values on the same rows for centring.
    """

    boot: np.ndarray  # [B, s, m]
    main: np.ndarray  # [s, m]
    rows: np.ndarray  # [s] row indices into the assigned queries
    n: int  # number of assigned queries

    def _expand(self, v: np.ndarray) -> np.ndarray:
        full = np.zeros((self.n, v.shape[-1]))
        full[self.rows] = v * (self.n / self.rows.shape[0])
        return full

    def along(self, front: FrontLike) -> np.ndarray:
        """Refit score minus main score on the subsample, for every front point → [B, K]."""
        base = front.values(self._expand(self.main))
        return np.stack([front.values(self._expand(b)) - base for b in self.boot])

    def of(self, assignment: np.ndarray) -> np.ndarray:
        """The same for one assignment of all n queries → [B]."""
        a = assignment[self.rows]
        r = np.arange(self.rows.shape[0])
        return self.boot[:, r, a].mean(axis=1) - self.main[r, a].mean()


def bounds_along(
    front: FrontLike,
    p: np.ndarray,
    refits: Refits | None,
    confidence: float,
    n_labelled: int,
) -> AccuracyBounds:
    """Accuracy bounds for every point of `front` from the main predictions `p` [n, m] and
    bootstrap refits (None: Bernoulli variance only)."""
    mean = values_along(front, p)
    var_bern = values_along(front, p * (1.0 - p)) / p.shape[0]
    if refits is not None and refits.boot.shape[0] > 1:
        dev = refits.along(front)
        shift, sd_pred = dev.mean(axis=0), dev.std(axis=0, ddof=1)
    else:
        shift, sd_pred = np.zeros_like(mean), np.zeros_like(mean)
    return AccuracyBounds(mean, shift, np.sqrt(sd_pred**2 + var_bern), sd_pred, confidence, n_labelled)


def bounds_of(
    assignment: np.ndarray, p: np.ndarray, refits: Refits | None, confidence: float, n_labelled: int
) -> AccuracyBounds:
    """The same bounds for a single assignment (arrays of length 1)."""
    mean = np.atleast_1d(values_of(assignment, p))
    var_bern = np.atleast_1d(values_of(assignment, p * (1 - p))) / p.shape[0]
    if refits is not None and refits.boot.shape[0] > 1:
        dev = refits.of(assignment)
        shift, sd_pred = np.atleast_1d(dev.mean()), np.atleast_1d(dev.std(ddof=1))
    else:
        shift, sd_pred = np.zeros(1), np.zeros(1)
    return AccuracyBounds(mean, shift, np.sqrt(sd_pred**2 + var_bern), sd_pred, confidence, n_labelled)
