"""A model shared across LLMs (item-response / low-rank): each query has a latent "easiness"
predicted from its features, each LLM an ability (intercept) and a sensitivity to easiness,
plus a small per-LLM deviation:

    logit P(k correct on i) = b_k + Σ_r a_kr · s_r(x_i) + g_k(x_i)

with s_r and g_k linear in the features (in kernel form). One labelled query trains s with all
m of its labels, so with 1% labels the shared part is learned from m times more data than a
per-model classifier. Fit by MAP (L-BFGS); uncertainty from a Laplace approximation (block-
diagonal: shared part and per-model part), probit-moderated mean.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize

from optllm.predict.base import (
    Predictor, bernoulli_nll_grad, beta_posterior, logit, moderated, rng_of, sigmoid, weighted_grams,
)
from optllm.predict.kernel import LANDMARKS, kernel_features, residual_var, warm_start_of


def _softplus(z: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, z)


class SharedIRT(Predictor):
    """Item-response model with feature-predicted query easiness (see module doc).

    `shared_var`: prior variance of the easiness per query (logit scale); `specific_var`: of
    each LLM's own deviation; `scale`: a factor on both, "auto" picks it from `scale_grid` by
    the (block-diagonal) Laplace approximation of the marginal likelihood on the training
    labels; `rank`: number of shared factors; `gamma` > 0: RBF kernel; past `landmarks` training
    queries the kernel is Nyström's on that many (`optllm.predict.kernel`)."""

    name = "irt"
    uses_kernel = True  # fits on the cosine kernel (`kernel_features`): a selector may share it

    def __init__(self, rank: int = 1, shared_var: float = 2.0, specific_var: float = 0.5,
                 slope_var: float = 1.0, intercept_var: float = 0.5, gamma: float = 0.0,
                 scale: float | str = "auto", scale_grid: tuple[float, ...] = (0.25, 1.0, 4.0, 16.0),
                 moderate: bool = False, max_rank: int | None = 256, landmarks: int | None = LANDMARKS,
                 featurizer: Any = "tfidf", seed: int = 0) -> None:
        super().__init__(featurizer=featurizer, seed=seed)
        self.landmarks = landmarks
        self.rank = rank
        self.shared_var = shared_var
        self.specific_var = specific_var
        self.slope_var = slope_var
        self.intercept_var = intercept_var
        self.gamma = gamma
        self.moderate = moderate
        self.max_rank = max_rank
        self.scale = scale
        self.scale_grid = scale_grid

    def _fit(self, F: Any, Y: np.ndarray, F_val: Any, Y_val: np.ndarray | None) -> None:
        self.kmap_, Phi = kernel_features(self, F)
        grid = tuple(self.scale_grid) if self.scale == "auto" else (float(self.scale),)
        best = None
        x0 = self._warm_x(F, Phi, Y)
        for sc in grid:
            fit = self._fit_scale(Phi, Y, sc, x0)
            x0 = fit.pop("x")
            if best is None or fit["evidence"] > best["evidence"]:
                best = fit
        for k, v in best.items():
            setattr(self, k + "_", v)

    def frozen_params(self) -> dict[str, Any]:
        """The hyperparameters chosen by this fit (the selector reuses them when it refits)."""
        return {"scale": float(self.scale_)}

    def logits(self, F: Any, cos: np.ndarray | None = None) -> np.ndarray:
        """The fitted logits (n, m) of feature rows F (`cos`: their cosines with the training
        rows, when known)."""
        Phi = self.kmap_.transform(F, cos)
        return self.offset_ + (Phi @ self.bs_) @ self.A_.T + Phi @ self.B_[:-1] + self.B_[-1]

    def _warm_x(self, F: Any, Phi: np.ndarray, Y: np.ndarray) -> np.ndarray | None:
        """Starting point for the solver from an earlier fit on part of these rows (a selector's
        refit): its easiness and per-model parts on these rows, in this fit's coordinates."""
        prev, cos = warm_start_of(self, Y.shape[1])
        if prev is None or prev.bs_.shape[1] != max(1, int(self.rank)):
            return None
        off = logit(beta_posterior(Y)[0])
        Phi_prev = prev.kmap_.transform(F, cos)
        bs = self.kmap_.coordinates(Phi, Phi_prev @ prev.bs_)
        B = np.vstack([self.kmap_.coordinates(Phi, Phi_prev @ prev.B_[:-1]), prev.B_[-1] + prev.offset_ - off])
        return np.concatenate([bs.ravel(), B.ravel(), prev.A_.ravel()])

    def _predict_mean(self, F: Any, n: int) -> np.ndarray:
        if self.moderate:  # the mean depends on the variance
            return self._predict(F, n)[0]
        return sigmoid(self.logits(F))

    def _fit_scale(self, Phi: np.ndarray, Y: np.ndarray, scale: float, x0: np.ndarray | None = None) -> dict[str, Any]:
        n, r = Phi.shape
        m = Y.shape[1]
        R = max(1, int(self.rank))
        rate, _ = beta_posterior(Y)
        off = logit(rate)
        X = np.hstack([Phi, np.ones((n, 1))])
        d = r + 1
        obs = ~np.isnan(Y)
        Y0 = np.where(obs, Y, 0.0)
        mask = obs.astype(np.float64)
        lmask = None if obs.all() else mask
        sv, gv = self.shared_var * scale, self.specific_var * scale
        ls, lg, la, lb = 1 / sv, 1 / gv, 1 / self.slope_var, 1 / self.intercept_var
        prec_g = np.r_[np.full(r, lg), lb]
        A0 = np.zeros((m, R))
        A0[:, 0] = 1.0
        sizes = [r * R, d * m, m * R]

        def unpack(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            bs = v[: sizes[0]].reshape(r, R)
            B = v[sizes[0]: sizes[0] + sizes[1]].reshape(d, m)
            A = v[sizes[0] + sizes[1]:].reshape(m, R)
            return bs, B, A

        rng = rng_of(self.seed)
        A_init = A0.copy()
        if R > 1:
            A_init[:, 1:] = rng.normal(0.0, 0.1, (m, R - 1))
        v0 = np.concatenate([np.zeros(r * R), np.zeros(d * m), A_init.ravel()]) if x0 is None else np.asarray(x0)
        # Jacobi preconditioning (as in `fit_logistic_map`): solve for u = v·√D with D the
        # Hessian's diagonal at the start; same optimum, far fewer iterations
        bs, B, A = unpack(v0)
        S = Phi @ bs
        P = sigmoid(off + S @ A.T + X @ B)
        W = mask * P * (1 - P)
        sq = np.sqrt(np.concatenate([((Phi * Phi).T @ (W @ (A * A)) + ls).ravel(),
                                     ((X * X).T @ W + prec_g[:, None]).ravel(),
                                     (W.T @ (S * S) + la).ravel()]))

        def fg(u: np.ndarray) -> tuple[float, np.ndarray]:
            # S Aᵀ = Φ bs Aᵀ, so Z = off + X (B + [bs Aᵀ; 0]): one product forward and one
            # back (G = Xᵀ R gives all three gradients)
            bs, B, A = unpack(u / sq)
            C = B.copy()
            C[:r] += bs @ A.T
            nll, Rr = bernoulli_nll_grad(off + X @ C, Y0, lmask)
            f = (nll + 0.5 * ls * float((bs * bs).sum()) + 0.5 * float((prec_g[:, None] * B * B).sum())
                 + 0.5 * la * float(((A - A0) ** 2).sum()))
            G = X.T @ Rr
            g_bs = G[:r] @ A + ls * bs
            g_B = G + prec_g[:, None] * B
            g_A = G[:r].T @ bs + la * (A - A0)
            return f, np.concatenate([g_bs.ravel(), g_B.ravel(), g_A.ravel()]) / sq

        res = minimize(fg, v0 * sq, jac=True, method="L-BFGS-B", options={"maxiter": 500, "gtol": 1e-4, "ftol": 1e-7})
        x = res.x / sq
        bs, B, A = unpack(x)
        # Laplace, block-diagonal: each shared factor, then each model's own part
        S = Phi @ bs
        P = sigmoid(off + S @ A.T + X @ B)
        W = mask * P * (1 - P)
        Ls = weighted_grams(Phi, W @ (A * A), np.full((r, R), ls))
        Lg = weighted_grams(X, W, np.tile(prec_g[:, None], (1, m)))
        logdet = (2 * np.log(np.diagonal(Ls, axis1=1, axis2=2)).sum() - R * r * np.log(ls)
                  + 2 * np.log(np.diagonal(Lg, axis1=1, axis2=2)).sum() - m * np.log(prec_g).sum())
        evidence = -float(res.fun) - 0.5 * logdet
        return {"offset": off, "bs": bs, "B": B, "A": A, "Hs_L": Ls, "Hg_L": Lg,
                "evidence": evidence, "scale": scale, "shared_var": sv, "specific_var": gv, "x": x}

    def _predict(self, F: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
        Phi = self.kmap_.transform(F)
        X = np.hstack([Phi, np.ones((n, 1))])
        S = Phi @ self.bs_
        mu = self.offset_ + S @ self.A_.T + X @ self.B_
        resid = residual_var(Phi, self.kmap_.diag(F))
        from optllm.predict.models import quad_form

        var_s = np.stack([quad_form(L, Phi) + self.shared_var_ * resid for L in self.Hs_L_], axis=1)
        var = var_s @ (self.A_.T ** 2)
        for k in range(mu.shape[1]):
            var[:, k] += quad_form(self.Hg_L_[k], X) + self.specific_var_ * resid
        return moderated(mu, var, self.moderate)
