"""How sure can a user be of a plan's accuracy? Lower confidence bounds along a front.

A plan's predicted accuracy μ (the mean of p over its queries) comes from a predictor fit on a
few dozen labels; its error is shared by every query sent to the same model, and the cheapest
plan that *looks* good enough is the one whose predictions are most optimistic (the winner's
curse). Refitting the predictor on bootstrap resamples does not see that bias: every refit
inherits the sample's luck. What does see it is the labelled sample itself, scored by
predictors that did not train on it.

So we cross-fit (K folds of the labelled sample, each predicted by the predictor fitted on
the others), apply the SAME routing rule to the labelled queries — the exact front's rule at
slope λ sends query j to argmax_k p̂_jk − λ·c_jk, so each point of a front has a labelled
counterpart on the exact front of the held-out predictions — and measure how far the
held-out predictions were from the truth there. That is prediction-powered inference
(Angelopoulos et al., Science 2023; cross-fitted, Zrnic & Candès, PNAS 2024):

    θ̂_k = μ_k + r_k,    r_k = mean_j (y_j,a(j) − p̂_j,a(j))      (the rectifier)
    sd_k² = s_k² / n_L + Σ_i p(1 − p) / N²                       (labelled part ⊕ Bernoulli)
    LB_k = θ̂_k − z · sd_k

s_k² is the residuals' variance, floored at the mean p̂(1 − p̂) (its value under calibration)
so that a lucky all-correct sample does not claim zero spread, and the bound is found the way
Wilson's score interval is: the lowest level L with θ̂ − L ≤ z·sd(L), the spread re-evaluated
as if the true accuracy were L (a lucky sample's high mean also shrinks its 0/1 spread). z is
the one-sided Student t quantile.

Choosing among many plans needs care (the winner's curse): for an accuracy target the plans
are tested in the predicted front's order, from the most accurate toward cheaper ones,
stopping at the first that fails (fixed-sequence testing, as in Learn-then-Test: Angelopoulos
et al. 2021), which keeps the error of the chosen plan at 1 − confidence without widening the
bounds. Where a rule must search the front in another order (the budget rule looking for any
plan that beats a single LLM), it uses `z_band`: a bootstrap-t band over the labelled queries
that holds at every point at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.stats import beta as beta_dist
from scipy.stats import t as student_t

from optllm.errors import OptLLMError
from optllm.optimize.types import FrontLike, thin_indices


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


# ============================================================== held-out predictions
ESTIMATORS = ("labelled", "ppi")  # the first is the default: see docs/bounds.md
DEFAULT_ESTIMATOR = "labelled"
"""How a plan's accuracy is estimated from the held-out sample (`HeldOut.estimator`):

- ``labelled``: route the labelled queries by the plan's rule (each by the cross-fitted
  predictor that never saw it) and count how many it answers right: an exact binomial
  (Clopper-Pearson) bound, its sample size shrunk for the assigned queries' own chance
  (n_eff = 1 / (1/n_L + 1/N)). The predictions only route; they never enter the estimate.
- ``ppi``: prediction-powered: the plan's mean predicted accuracy on the assigned queries
  plus the held-out residual under the same rule, with a Wilson-type normal bound."""


@dataclass(frozen=True)
class HeldOut:
    """Cross-fitted predictions on the labelled sample: row j predicted by a predictor that
    never saw query j's labels. `y` may hold NaN (not observed). `estimator` (one of
    `ESTIMATORS`) is how bounds built on this sample estimate a plan's accuracy."""

    p: np.ndarray  # [n_L, m] held-out P(correct)
    y: np.ndarray  # [n_L, m] labels in [0, 1]
    cost: np.ndarray  # [n_L, m] USD per query and model
    estimator: str = DEFAULT_ESTIMATOR
    fold: np.ndarray | None = None  # [n_L] the cross-fitting fold of each labelled query (None: unknown)
    rule_variance: bool = True  # add the rule's own variation across folds (τ², `Rectifier.rule_var`)
    whole: bool = False  # a plan is estimated only where every query it routes is labelled (else unknown)

    def __post_init__(self) -> None:
        if not (self.p.shape == self.y.shape == self.cost.shape) or self.p.ndim != 2:
            raise OptLLMError(f"held-out arrays must share one (n, m) shape, got {self.p.shape}, "
                              f"{self.y.shape}, {self.cost.shape}")
        if self.estimator not in ESTIMATORS:
            raise OptLLMError(f"--bound: unknown estimator {self.estimator!r}; choose from {', '.join(ESTIMATORS)}")

    @property
    def uses_predictions(self) -> bool:
        """True when the estimate starts from the predicted accuracy (PPI), False when it is
        the labelled queries' own answers under the plan's rule."""
        return self.estimator == "ppi"

    @property
    def n(self) -> int:
        """Number of labelled queries."""
        return int(self.p.shape[0])

    @cached_property
    def rectifier(self) -> "Rectifier":
        """The held-out errors along the rule's front, built once per sample (every bound and
        test on these labels reads it)."""
        return Rectifier(self)


def rule_slopes(front: FrontLike, p: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """The routing rule's slope λ for every point of `front`: exact fronts carry it; for any
    other front (OptLLM-M, MOEAs) it is the exact front's slope at the same spend."""
    from optllm.optimize.front import Front, pareto_front

    if isinstance(front, Front):
        return front.slopes()
    ef = pareto_front(p, cost)
    k = np.clip(np.searchsorted(ef.costs, np.asarray(front.costs), side="right") - 1, 0, len(ef) - 1)
    return ef.slopes()[k]


def labelled_points(front: FrontLike, p: np.ndarray, cost: np.ndarray, held: HeldOut,
                    points: np.ndarray | None = None) -> np.ndarray:
    """The labelled counterpart t of each front point (all, or `points`): where the same
    routing rule (the slope λ of `rule_slopes`) puts the labelled queries under their
    held-out predictions. (Matching by spend per query instead was measured and covers
    less: `optllm coverage`, docs/bounds.md.)"""
    rect = held.rectifier
    lam = rule_slopes(front, p, cost)
    share = _tie_share(front, lam)
    if points is not None:
        lam, share = lam[points], share[points]
    return rect.point(lam, share)


def _tie_share(front: FrontLike, lam: np.ndarray) -> np.ndarray:
    """For each point, the share of the moves at exactly its slope λ already taken (1 off an
    exact front): where many queries tie (equal predictions), the rule at λ sends only part
    of them on, and the labelled counterpart must send the same part."""
    from optllm.optimize.front import Front

    if not isinstance(front, Front) or len(front) < 2:
        return np.ones(len(lam))
    neg = -front.slopes()[1:]  # ascending
    k = np.arange(len(front))
    first = np.searchsorted(neg, -lam, side="left")  # moves strictly steeper than λ
    last = np.searchsorted(neg, -lam, side="right")  # moves at least as steep
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(last > first, np.clip((k - first) / (last - first), 0.0, 1.0), 1.0)


class Rectifier:
    """The held-out errors (PPI) or answers (`labelled`) along the exact front of the
    held-out predictions.

    Point t of that labelled front is where the rule at slope λ puts the labelled queries
    (t = the number of labelled moves whose slope is ≥ λ), so every per-point moment is one
    cumulative sum (`Front.values`) over the labelled moves. `resid` is y − p̂ for PPI and
    y itself for the labelled estimator; `mean` is then the correction or the estimate.
    """

    def __init__(self, held: HeldOut) -> None:
        from optllm.optimize import pareto_front

        self.held = held
        obs = ~np.isnan(held.y)
        q = np.clip(held.p, 0.0, 1.0)
        y = np.nan_to_num(held.y)
        self.resid = np.where(obs, y - q if held.uses_predictions else y, 0.0)  # [n_L, m]
        self.var_cal = np.where(obs, q * (1.0 - q), 0.0)
        self.front = pareto_front(q, held.cost)
        slopes = self.front.slopes()[1:]
        self._neg = -slopes  # ascending (moves are in decreasing slope order)
        f = self.front
        self.seen = np.maximum(f.values(obs.astype(float)), 1e-12)  # share of observed cells
        self.mean = f.values(self.resid) / self.seen
        self.second = f.values(self.resid**2) / self.seen
        self.floor = f.values(self.var_cal) / self.seen
        self.observed = self.seen * held.n  # labelled queries observed at each point
        self.rule_var = self._rule_variance(obs)

    def _rule_variance(self, obs: np.ndarray) -> np.ndarray:
        """τ² per labelled point: how much the accuracy of the rule itself varies with the
        labels it was fitted on. Each fold's rule is fitted on different labels, so the
        spread of the per-fold means beyond what their sampling explains (spread / fold size)
        estimates it (a random-effects split, one-way ANOVA); the plan sent out is one more
        such rule, so τ² adds to the variance of its realised accuracy. 0 without folds."""
        fold = self.held.fold
        if fold is None or not self.held.rule_variance:
            return np.zeros(len(self.front))
        ks = np.unique(fold)
        if ks.size < 2:
            return np.zeros(len(self.front))
        f = self.front
        means, sizes = [], []
        for k in ks:
            mask = (fold == k)[:, None]
            seen = f.values((obs & mask).astype(float))
            means.append(f.values(np.where(mask, self.resid, 0.0)) / np.maximum(seen, 1e-12))
            sizes.append(seen * self.held.n)
        M = np.stack(means)  # [K, T]
        between = M.var(axis=0, ddof=1)
        n_k = np.maximum(np.stack(sizes).mean(axis=0), 1.0)
        return np.maximum(between - self.spread() / n_k, 0.0)

    def point(self, lam: np.ndarray, share: np.ndarray | None = None) -> np.ndarray:
        """Labelled-front point for each slope λ; with `share`, only that share of the
        labelled moves at exactly λ (ties) is taken."""
        neg = -np.asarray(lam, dtype=float)
        last = np.searchsorted(self._neg, neg, side="right")
        if share is None:
            return last
        first = np.searchsorted(self._neg, neg, side="left")
        return first + np.round(np.asarray(share) * (last - first)).astype(int)

    def spread(self) -> np.ndarray:
        """s² per labelled point: the residual variance, floored at the calibrated variance."""
        return np.maximum(np.maximum(self.second - self.mean**2, self.floor), 0.0)

    def assignment(self, t: int) -> np.ndarray:
        """Model per labelled query at labelled point t."""
        return self.front.assignment(int(t))

    def residuals(self, t: int) -> np.ndarray:
        """Per-query residual (0 where unobserved) at labelled point t → [n_L]."""
        a = self.assignment(t)
        return self.resid[np.arange(self.held.n), a]

    def band(self, points: np.ndarray, confidence: float, reps: int = 2000, seed: int = 0,
             max_points: int = 256) -> float:
        """Critical value z for a one-sided band over `points`: the `confidence` quantile of
        the largest standardised bootstrap error, at least Student's t quantile."""
        n = self.held.n
        z_t = float(student_t.ppf(confidence, max(n - 1, 1)))
        pts = np.unique(np.asarray(points, dtype=int))
        if n < 3 or pts.size == 0:
            return z_t
        if pts.size > max_points:
            pts = pts[thin_indices(pts.size, max_points)]
        R = np.stack([self.residuals(t) for t in pts], axis=1)  # [n_L, G]
        rng = np.random.default_rng(seed)
        W = rng.multinomial(n, np.full(n, 1.0 / n), size=reps) / n  # [B, n_L]
        seen = self.seen[pts][None, :]
        m_b = W @ R
        dev = (m_b - self.mean[pts][None, :] * seen) / seen
        # bootstrap-t: each replicate standardised by its own spread (better small-sample
        # coverage with skewed 0/1 residuals), floored like the estimate's
        var_b = np.maximum((W @ R**2) / seen - (m_b / seen) ** 2, self.floor[pts][None, :])
        se_b = np.sqrt(var_b / n)
        worst = (dev / np.maximum(se_b, 1e-12)).max(axis=1)
        return max(z_t, float(np.quantile(worst, confidence)))


# ============================================================== bounds
@dataclass(frozen=True)
class AccuracyBounds:
    """Accuracy of each plan: the predicted mean, the held-out correction, and a one-sided
    bound at `confidence` that holds along the whole front at once."""

    mean: np.ndarray  # μ_k: mean predicted p of the plan's queries
    correction: np.ndarray  # r_k: held-out (truth − prediction) under the same rule
    sd: np.ndarray  # total standard deviation of the estimate
    sd_labelled: np.ndarray  # the labelled-sample part (shrinks like 1/sqrt(labels))
    confidence: float
    n_labelled: int
    z: float  # pointwise critical value (Student's t), used by `lower` / `upper`
    z_band: float | None = None  # critical value of the band over the whole front (None: = z)
    trials: np.ndarray | None = None  # labelled estimator: effective binomial sample size per point

    def at_confidence(self, confidence: float) -> "AccuracyBounds":
        """The same bounds at another pointwise level (the band is not recomputed: None)."""
        from dataclasses import replace

        z = float(student_t.ppf(confidence, max(self.n_labelled - 1, 1) if self.n_labelled else 1e6))
        return replace(self, confidence=confidence, z=z, z_band=None)

    @property
    def estimate(self) -> np.ndarray:
        """θ̂ = μ + r: the predicted accuracy corrected on held-out labels (within [0, 1])."""
        return np.clip(self.mean + self.correction, 0.0, 1.0)

    def _var_at(self, level: np.ndarray) -> np.ndarray:
        """Variance of the estimate if the plan's true accuracy were `level`: the labelled
        part re-centred there (0/1 answers: a lucky sample's high mean also makes its spread
        look small, so the spread is taken at the level being tested — Wilson's score idea)."""
        n = max(self.n_labelled, 1)
        s2 = self.sd_labelled**2 * n
        var_bern = np.maximum(self.sd**2 - self.sd_labelled**2, 0.0)
        th = self.estimate
        s2_at = np.maximum(s2 + level * (1 - level) - th * (1 - th), 0.25 * s2)
        return np.where(self.n_labelled > 0, s2_at / n, 0.0) + var_bern

    def _exact(self, sign: float, z: float) -> np.ndarray:
        """Clopper-Pearson bound at the one-sided level whose Student-t quantile is `z`, on
        the estimate's share of `trials` effective trials (fractional counts)."""
        level = float(student_t.cdf(z, max(self.n_labelled - 1, 1)))
        trials = np.asarray(self.trials, dtype=float)
        out = clopper_pearson(self.estimate, trials, level, sign)
        return np.where(trials > 0, out, 0.0 if sign < 0 else 1.0)  # untested (`tested`): 0 and 1 exactly

    @property
    def tested(self) -> np.ndarray:
        """Per point: whether its labelled queries bound it at all (False where a holdout
        labelled only where plans route has no answer for some of its queries)."""
        if self.trials is None:
            return np.ones(self.mean.shape, dtype=bool)
        return np.asarray(self.trials, dtype=float) > 0

    def _solve(self, sign: float, z: float | None = None) -> np.ndarray:
        """The level L (below the estimate for sign −1, above for +1) where |θ̂ − L| equals
        z standard deviations evaluated at L; bisection, vectorised over the points."""
        z = self.z if z is None else z
        if self.trials is not None:
            return self._exact(sign, z)
        th = self.estimate
        lo = np.where(sign < 0, 0.0, th)
        hi = np.where(sign < 0, th, 1.0)
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            inside = np.abs(th - mid) <= z * np.sqrt(self._var_at(mid))  # mid still plausible
            if sign < 0:
                hi = np.where(inside, mid, hi)
                lo = np.where(inside, lo, mid)
            else:
                lo = np.where(inside, mid, lo)
                hi = np.where(inside, hi, mid)
        return lo if sign < 0 else hi

    @property
    def lower(self) -> np.ndarray:
        """Lower bound on the realised accuracy at level `confidence`."""
        return np.clip(self._solve(-1.0), 0.0, 1.0)

    @property
    def upper(self) -> np.ndarray:
        """The matching upper bound (two-sided interval = [lower, upper])."""
        return np.clip(self._solve(1.0), 0.0, 1.0)

    @property
    def lower_band(self) -> np.ndarray:
        """Lower bounds that hold at every point of the front at once, at level `confidence`."""
        return np.clip(self._solve(-1.0, self.z if self.z_band is None else self.z_band), 0.0, 1.0)

    def cheapest_certified(self, target: float) -> int | None:
        """The plan for an accuracy target, by fixed-sequence testing (Learn-then-Test): test
        "accuracy ≥ target" at each point with its pointwise bound, from the most accurate
        predicted plan toward cheaper ones, and stop at the first failure; the cheapest point
        passed is wrong with probability ≤ 1 − confidence, with no multiplicity penalty,
        because the order (the predicted front) is fixed before the tests. None if the most
        accurate plan already fails."""
        ok = self.lower >= target
        if not ok.size or not ok[-1]:
            return None
        fail = np.flatnonzero(~ok)
        return int(fail[-1] + 1) if fail.size else 0

    def labels_needed(self, target: float) -> int | None:
        """Roughly how many labelled queries would let some plan reach `target` at this level.

        The labelled part of the spread shrinks like 1/sqrt(labels); None when even the
        corrected estimate of every plan is below the target (more labels alone won't do).
        """
        centre = self.estimate
        var_bern = np.maximum(self.sd**2 - self.sd_labelled**2, 0.0)
        room = ((centre - target) / max(self.z, 1e-9)) ** 2 - var_bern
        ok = (centre > target) & (room > 0)
        if not ok.any():
            return None
        n = max(self.n_labelled, 1)
        s2_at = (self._var_at(np.full_like(centre, target)) - var_bern) * n  # spread at the target
        need = s2_at[ok] / room[ok]
        return int(np.ceil(max(float(need.min()), self.n_labelled + 1)))


def clopper_pearson(share: np.ndarray | float, trials: np.ndarray | float, level: float, sign: float = -1.0
                    ) -> np.ndarray:
    """One-sided Clopper-Pearson bound at `level` (lower for sign −1, upper for +1) for a
    success share `share` of `trials` trials (fractional counts allowed)."""
    n = np.maximum(np.asarray(trials, dtype=float), 1e-9)
    k = np.clip(np.asarray(share, dtype=float), 0.0, 1.0) * n
    if sign < 0:
        return np.where(k <= 0, 0.0, beta_dist.ppf(1.0 - level, np.maximum(k, 1e-12), n - k + 1.0))
    return np.where(k >= n, 1.0, beta_dist.ppf(level, k + 1.0, np.maximum(n - k, 1e-12)))


def bernoulli_var(front: FrontLike, p: np.ndarray) -> np.ndarray:
    """Variance of each plan's realised accuracy given its p (answers independent)."""
    return np.maximum(values_along(front, p * (1.0 - p)), 0.0) / p.shape[0]


def bounds_along(front: FrontLike, p: np.ndarray, cost: np.ndarray, held: HeldOut | None,
                 confidence: float, seed: int = 0, band: bool = True) -> AccuracyBounds:
    """Accuracy bounds for every point of `front` built on predictions `p` [n, m] with
    costs `cost`, corrected by the held-out predictions `held` (None: Bernoulli only);
    `band=False` skips the whole-front band (its bootstrap), leaving `z_band` None."""
    mean = values_along(front, p)
    var_bern = bernoulli_var(front, p)
    if held is None or held.n < 2:
        z = float(student_t.ppf(confidence, 1e6))
        zero = np.zeros_like(mean)
        return AccuracyBounds(mean, zero, np.sqrt(var_bern), zero, confidence, 0 if held is None else held.n, z)
    rect = held.rectifier
    t = labelled_points(front, p, cost, held)
    s2 = rect.spread()[t] / held.n
    z = float(student_t.ppf(confidence, max(held.n - 1, 1)))
    z_band = rect.band(t, confidence, seed=seed) if band else None
    tau2 = rect.rule_var[t]
    if held.uses_predictions:
        return AccuracyBounds(mean, rect.mean[t], np.sqrt(s2 + var_bern + tau2), np.sqrt(s2), confidence, held.n, z,
                              z_band)
    # labelled: the estimate is the labelled answers under the rule; the assigned queries'
    # own Bernoulli chance and the rule's own variation (τ²) enter as a smaller effective sample
    est = rect.mean[t]
    trials = effective_trials(rect.observed[t], p.shape[0], est, tau2)
    if held.whole:  # labelled only where plans route: a point not observed whole is unknown (bounds 0 and
        whole = seen_whole(held, t)  # 1), its estimate the prediction itself
        trials = np.where(whole, trials, 0.0)
        est = np.where(whole, est, mean)
    var_test = est * (1.0 - est) / p.shape[0]
    return AccuracyBounds(mean, est - mean, np.sqrt(s2 + var_test + tau2), np.sqrt(s2), confidence, held.n, z,
                          z_band, trials)


def observed_points(front: FrontLike, p: np.ndarray, cost: np.ndarray, held: HeldOut) -> np.ndarray:
    """Per point of `front`: True where the labelled queries routed by its rule have the
    label of every model they are routed to (a sample labelled only where plans route,
    `planning.holdout`, observes some points whole and others in part)."""
    return seen_whole(held, labelled_points(front, p, cost, held))


def seen_whole(held: HeldOut, t: np.ndarray) -> np.ndarray:
    """Per labelled point t of `held`: every labelled query has the label of the model its
    rule picks there."""
    return held.rectifier.seen[np.asarray(t)] >= 1.0 - 1e-9


def effective_trials(n_labelled: np.ndarray | float, n_assigned: int, estimate: np.ndarray | float = 0.5,
                     extra_var: np.ndarray | float = 0.0) -> np.ndarray:
    """The binomial sample size whose variance equals that of (labelled mean − realised mean
    over `n_assigned` queries): 1 / (1/n_L + 1/N), shrunk further for an `extra_var` (the
    rule's own variation τ²) at accuracy `estimate`: θ(1−θ)/n_eff = θ(1−θ)/n + τ²."""
    n_l = np.maximum(np.asarray(n_labelled, dtype=float), 1e-9)
    n = 1.0 / (1.0 / n_l + 1.0 / max(int(n_assigned), 1))
    v = np.asarray(estimate, dtype=float) * (1.0 - np.asarray(estimate, dtype=float))
    extra = np.asarray(extra_var, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        shrunk = np.where(v > 0, v / (v / n + extra), n)
    return np.minimum(n, shrunk)


def bounds_of(assignment: np.ndarray, p: np.ndarray, cost: np.ndarray, held: HeldOut | None,
              confidence: float, seed: int = 0) -> AccuracyBounds:
    """The same bounds for one assignment of the n queries (arrays of length 1); its rule is
    the exact front's at the same spend, or "every query to model k" for a single model."""
    from optllm.optimize.solutions import SolutionSet

    single = np.unique(assignment)
    if held is not None and held.n >= 2 and single.size == 1:
        return single_bounds(int(single[0]), p, held, confidence)
    one = SolutionSet(assignment[None, :], np.array([cost[np.arange(cost.shape[0]), assignment].sum()]),
                      np.atleast_1d(values_of(assignment, p)))
    return bounds_along(one, p, cost, held, confidence, seed)


def single_bounds(k: int | np.ndarray, p: np.ndarray, held: HeldOut, confidence: float) -> AccuracyBounds:
    """Bounds for sending every query to model k, or, with `k` as weights over the models
    (`reference_weights`), each query at random to model j with probability w_j (pointwise:
    one plan, Student's t). Labelled queries count where every model used is observed."""
    w = reference_weights(k, p.shape[1])
    used = w > 0
    pm = p @ w
    mean = np.atleast_1d(pm.mean())
    var_bern = np.atleast_1d((pm * (1 - pm)).mean() / p.shape[0])
    obs = ~np.isnan(held.y[:, used]).any(axis=1)
    q = np.clip(held.p[obs][:, used], 0, 1) @ w[used]
    yw = held.y[obs][:, used] @ w[used]
    r = yw - q if held.uses_predictions else yw
    n = max(int(obs.sum()), 1)
    s2 = max(float(r.var()) if r.size else 0.0, float((q * (1 - q)).mean()) if q.size else 0.25)
    z = float(student_t.ppf(confidence, max(n - 1, 1)))
    sl = np.atleast_1d(np.sqrt(s2 / n))
    if held.uses_predictions:
        corr = np.atleast_1d(r.mean() if r.size else 0.0)
        return AccuracyBounds(mean, corr, np.sqrt(sl**2 + var_bern), sl, confidence, held.n, z)
    est = float(r.mean()) if r.size else 0.0
    trials = np.atleast_1d(effective_trials(float(obs.sum()), p.shape[0]))
    if held.whole and not obs.all():  # its models not labelled on the whole sample: unknown, the prediction
        trials, est = np.zeros(1), float(mean[0])
    var_test = np.atleast_1d(est * (1 - est) / p.shape[0])
    return AccuracyBounds(mean, np.atleast_1d(est) - mean, np.sqrt(sl**2 + var_test), sl, confidence, held.n, z,
                          trials=trials)


def reference_weights(ref: int | np.ndarray, m: int) -> np.ndarray:
    """A reference plan as the share of queries it sends to each model: model `ref` alone
    (an int) or a random mix (weights summing to 1)."""
    if isinstance(ref, (int, np.integer)):
        w = np.zeros(m)
        w[int(ref)] = 1.0
        return w
    return np.asarray(ref, dtype=float)


def paired_lower(front: FrontLike, points: np.ndarray, ref: int | np.ndarray, p: np.ndarray, cost: np.ndarray,
                 held: HeldOut, z: float) -> np.ndarray:
    """Lower bound on (accuracy of front point − accuracy of the reference) for each of
    `points`, paired on the same labelled and assigned queries. The reference is model `ref`
    alone or a random mix (`reference_weights`), compared by its expected answer per query."""
    rect = held.rectifier
    t = labelled_points(front, p, cost, held, points)
    n, N = held.n, p.shape[0]
    w = reference_weights(ref, p.shape[1])

    def diff_var(v: np.ndarray) -> np.ndarray:
        # variance of (answer of model k − the reference's answer) per query and k, answers
        # independent: v_k + Σ_j w_j v_j − 2 w_k v_k (0 where the plan agrees with a single ref)
        return v * (1.0 - 2.0 * w[None, :]) + (v @ w)[:, None]

    # held-out part: per labelled query, residual under the plan minus the reference's
    f = rect.front
    delta = rect.resid - (rect.resid @ w)[:, None]
    d_mean = f.values(delta) / rect.seen
    d_second = f.values(delta**2) / rect.seen
    d_floor = f.values(diff_var(rect.var_cal)) / rect.seen
    s2 = np.maximum(d_second - d_mean**2, d_floor)[t] / n
    # assigned part: predicted difference (PPI only: the labelled estimator's difference is
    # the labelled answers' own) and its Bernoulli variance
    mu = values_along(front, p)[points] - float((p @ w).mean()) if held.uses_predictions else 0.0
    bern = values_along(front, diff_var(p * (1 - p)))[points] / N
    return mu + d_mean[t] - z * np.sqrt(np.maximum(s2 + bern, 0.0))  # cumsums can round below 0
