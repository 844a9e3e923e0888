"""Simple predictors: the per-model base rate (the floor), kNN with a Beta prior, and an
L2-regularised logistic regression per model shrunk toward the model's base rate (with a
Laplace-approximation posterior for its uncertainty)."""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize

from optllm.predict.base import (
    Predictor, bernoulli_nll_grad, beta_posterior, logit, moderated, sigmoid, weighted_grams,
)
from optllm.predict.features import row_normalise
from optllm.predict.kernel import LANDMARKS, CosineRows, kernel_features, residual_var, warm_start_of


class BaseRate(Predictor):
    """P(correct) = the model's rate on the training sample, the same for every query; std from
    the Beta posterior (prior: `prior_strength` pseudo-labels at the pooled rate). No features."""

    name = "base"
    uses_features = False

    def __init__(self, prior_strength: float = 2.0, featurizer: Any = None, seed: int = 0) -> None:
        super().__init__(featurizer=featurizer, seed=seed)
        self.prior_strength = prior_strength

    def _fit(self, F: Any, Y: np.ndarray, F_val: Any, Y_val: np.ndarray | None) -> None:
        self.rate_, self.rate_std_ = beta_posterior(Y, self.prior_strength)

    def _predict(self, F: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
        return np.tile(self.rate_, (n, 1)), np.tile(self.rate_std_, (n, 1))


class KNN(Predictor):
    """k nearest training queries by cosine similarity of the features; each neighbour's labels
    count with weight max(sim, 0)^power on top of a Beta prior of `prior_strength`
    pseudo-labels at the model's base rate. Far from every training query it is the base rate;
    std is the Beta posterior's."""

    name = "knn"

    def __init__(self, k: int = 10, power: float = 2.0, prior_strength: float = 1.0,
                 featurizer: Any = "tfidf", seed: int = 0) -> None:
        super().__init__(featurizer=featurizer, seed=seed)
        self.k = k
        self.power = power
        self.prior_strength = prior_strength

    def _fit(self, F: Any, Y: np.ndarray, F_val: Any, Y_val: np.ndarray | None) -> None:
        self.F_ = row_normalise(F)
        self.rows_ = CosineRows(self.F_)
        self.Y_ = Y
        self.rate_, _ = beta_posterior(Y)

    def _predict(self, F: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
        n_train = self.Y_.shape[0]
        k = max(1, min(int(self.k), n_train))
        obs = ~np.isnan(self.Y_)
        Y0 = np.where(obs, self.Y_, 0.0)
        mean = np.empty((n, self.Y_.shape[1]))
        std = np.empty_like(mean)
        G = row_normalise(F)
        step = max(1, 2_000_000 // max(n_train, 1))
        s0 = float(self.prior_strength)
        train = self.__dict__.get("rows_") or CosineRows(self.F_)  # (fits pickled before rows_)
        for lo in range(0, n, step):
            S = np.clip(train.cosines(G[lo:lo + step]), 0.0, 1.0)
            if k < n_train:
                idx = np.argpartition(-S, k - 1, axis=1)[:, :k]
                W = np.zeros_like(S)
                rows = np.arange(S.shape[0])[:, None]
                W[rows, idx] = S[rows, idx]
            else:
                W = S
            W = W ** self.power
            num = W @ Y0 + s0 * self.rate_
            den = W @ obs.astype(np.float64) + s0
            p = num / den
            mean[lo:lo + step] = p
            std[lo:lo + step] = np.sqrt(p * (1 - p) / (den + 1.0))
        return mean, std


def _softplus(z: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, z)


class Logistic(Predictor):
    """Per-model L2-regularised logistic regression on the features (solved exactly in kernel
    form, so any vocabulary size costs at most n_train dimensions), with the logit offset at
    the model's base rate: with no signal, or a strong penalty, it is the base rate.

    `C` is the prior variance of the logit deviation for a query (inverse penalty); "auto"
    picks it per model from `C_grid` by the Laplace approximation of the marginal likelihood
    (empirical Bayes, training labels only). `gamma` > 0 switches the cosine kernel to an RBF
    on the unit sphere; past `landmarks` training queries the kernel is Nyström's on that many
    (`optllm.predict.kernel`). Uncertainty: Laplace approximation of the posterior."""

    name = "logistic"
    uses_kernel = True  # fits on the cosine kernel (`kernel_features`): a selector may share it

    def __init__(self, C: float | str = "auto", intercept_var: float = 0.5, gamma: float = 0.0,
                 C_grid: tuple[float, ...] = (0.25, 1.0, 4.0, 16.0, 64.0),
                 moderate: bool = False, max_rank: int | None = 256, landmarks: int | None = LANDMARKS,
                 featurizer: Any = "tfidf", seed: int = 0) -> None:
        super().__init__(featurizer=featurizer, seed=seed)
        self.landmarks = landmarks
        self.C = C
        self.C_grid = C_grid
        self.intercept_var = intercept_var
        self.gamma = gamma
        self.moderate = moderate
        self.max_rank = max_rank

    def _fit(self, F: Any, Y: np.ndarray, F_val: Any, Y_val: np.ndarray | None) -> None:
        self.kmap_, Phi = kernel_features(self, F)
        rate, _ = beta_posterior(Y)
        self.offset_ = logit(rate)
        X = np.hstack([Phi, np.ones((Phi.shape[0], 1))])
        if isinstance(self.C, str):
            grid = [np.full(Y.shape[1], float(c)) for c in self.C_grid]
        else:  # one value, or one per model
            grid = [np.broadcast_to(np.asarray(self.C, dtype=np.float64), (Y.shape[1],)).copy()]
        best = None
        theta = self._warm_theta(F, Phi, Y.shape[1])
        for Cv in grid:
            prec = np.concatenate([np.tile(1.0 / Cv, (Phi.shape[1], 1)), np.full((1, Y.shape[1]), 1.0 / self.intercept_var)])
            theta, Lc, ev = fit_logistic_map(X, Y, self.offset_, prec, x0=theta)
            if best is None:
                best = [theta.copy(), Lc, ev, Cv.copy()]
            else:
                better = ev > best[2]
                best[0][:, better], best[1][better] = theta[:, better], Lc[better]
                best[2][better], best[3][better] = ev[better], Cv[better]
        self.theta_, self.L_, self.evidence_, self.C_ = best

    def frozen_params(self) -> dict[str, Any]:
        """The hyperparameters chosen by this fit (the selector reuses them when it refits)."""
        return {"C": self.C_.copy()}

    def logits(self, F: Any, cos: np.ndarray | None = None) -> np.ndarray:
        """The fitted logits (n, m) of feature rows F (`cos`: their cosines with the training
        rows, when known)."""
        Phi = self.kmap_.transform(F, cos)
        return self.offset_ + Phi @ self.theta_[:-1] + self.theta_[-1]

    def _warm_theta(self, F: Any, Phi: np.ndarray, m: int) -> np.ndarray | None:
        """Starting point for the solver from an earlier fit of the same model on part of these
        rows (a selector's refit): its logits on these rows, in this fit's coordinates."""
        prev, cos = warm_start_of(self, m)
        if prev is None:
            return None
        theta = np.zeros((self.kmap_.proj_.shape[1] + 1, m))
        theta[-1] = prev.theta_[-1] + prev.offset_ - self.offset_
        theta[:-1] = self.kmap_.coordinates(Phi, prev.logits(F, cos) - self.offset_ - theta[-1])
        return theta

    def _predict_mean(self, F: Any, n: int) -> np.ndarray:
        if self.moderate:  # the mean depends on the variance
            return self._predict(F, n)[0]
        return sigmoid(self.logits(F))

    def _predict(self, F: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
        Phi = self.kmap_.transform(F)
        X = np.hstack([Phi, np.ones((n, 1))])
        mu = self.offset_ + X @ self.theta_
        var = np.empty_like(mu)
        for k in range(mu.shape[1]):
            var[:, k] = quad_form(self.L_[k], X)
        var += self.C_[None, :] * residual_var(Phi, self.kmap_.diag(F))[:, None]
        return moderated(mu, var, self.moderate)


def fit_logistic_map(X: np.ndarray, Y: np.ndarray, offset: np.ndarray, prec: np.ndarray,
                     maxiter: int = 200, x0: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MAP of m independent logistic regressions sharing the design X (n, d) with NaN-masked
    labels Y (n, m), logit = offset + X θ, Gaussian prior precision `prec` (d, m): one column per
model (a (d,) vector is shared). Starts from `x0` (d, m) when given. Returns θ (d, m),
    the Cholesky factors of the Laplace posterior precisions (m, d, d) and each model's Laplace
    log evidence (m,)."""
    n, d = X.shape
    m = Y.shape[1]
    prec = np.asarray(prec, dtype=np.float64)
    if prec.ndim == 1:
        prec = np.tile(prec[:, None], (1, m))
    obs = ~np.isnan(Y)
    Y0 = np.where(obs, Y, 0.0)
    mask = obs.astype(np.float64)
    lmask = None if obs.all() else mask
    T0 = np.zeros((d, m)) if x0 is None else np.asarray(x0, dtype=np.float64).reshape(d, m)
    # Jacobi preconditioning: solve for u = θ·√D with D the Hessian's diagonal at the start,
    # Σ_i w_ik x_ij² + prec_jk; the kernel coordinates are orthogonal with norms² = the
    # kernel's eigenvalues, so the Hessian is close to diagonal and this removes most of its
    # ill-conditioning (same optimum, far fewer iterations)
    P0 = sigmoid(offset + X @ T0)
    sq = np.sqrt((X * X).T @ (mask * P0 * (1 - P0)) + prec)

    def fg(v: np.ndarray) -> tuple[float, np.ndarray]:
        T = v.reshape(d, m) / sq
        nll, R = bernoulli_nll_grad(offset + X @ T, Y0, lmask)
        g = X.T @ R + prec * T
        return nll + 0.5 * float((prec * T * T).sum()), (g / sq).ravel()

    res = minimize(fg, (T0 * sq).ravel(), jac=True, method="L-BFGS-B",
                   options={"maxiter": maxiter, "gtol": 1e-4, "ftol": 1e-7})
    theta = res.x.reshape(d, m) / sq
    Z = offset + X @ theta
    P = sigmoid(Z)
    L = weighted_grams(X, mask * P * (1 - P), prec)
    nll = (mask * (_softplus(Z) - Y0 * Z)).sum(axis=0)
    logdet = 2 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum(axis=1) - np.log(prec).sum(axis=0)
    evidence = -nll - 0.5 * (prec * theta * theta).sum(axis=0) - 0.5 * logdet
    return theta, L, evidence


def quad_form(L: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Row-wise xᵀ (L Lᵀ)⁻¹ x for the rows of X, given the lower Cholesky factor L."""
    from scipy.linalg import solve_triangular

    V = solve_triangular(L, X.T, lower=True, check_finite=False)
    return (V * V).sum(axis=0)
