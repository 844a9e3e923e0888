"""Kernels on query features and the whitened "kernel features" that let every linear model
run in at most n_train dimensions, whatever the size of the TF-IDF vocabulary.

With K = Φ Φᵀ (eigen-decomposition of the training kernel), a linear model on Φ with an L2
penalty is exactly the Gaussian-process / kernel model with covariance K; a test query's
coordinates are φ* = Λ^{-1/2} Uᵀ k*. Cost: one n_train × n_train eigen-decomposition.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from optllm.predict.base import dense_dot, row_normalise


class KernelMap:
    """Cosine kernel (gamma=0) or its RBF on the unit sphere, exp(gamma·(cos − 1))."""

    def __init__(self, gamma: float = 0.0, eig_tol: float = 1e-8, max_rank: int | None = None) -> None:
        self.gamma = gamma
        self.eig_tol = eig_tol
        self.max_rank = max_rank

    def _k(self, cos: np.ndarray) -> np.ndarray:
        if self.gamma and self.gamma > 0:
            return np.exp(self.gamma * (np.clip(cos, -1.0, 1.0) - 1.0))
        return cos

    def fit(self, F: Any) -> np.ndarray:
        """Store the normalised training rows; return Φ (n, r)."""
        self.F_ = row_normalise(F)
        K = self._k(dense_dot(self.F_, self.F_))
        K = 0.5 * (K + K.T)
        lam, U = np.linalg.eigh(K)
        keep = lam > self.eig_tol * max(float(lam.max()), 1e-12)
        if self.max_rank is not None and keep.sum() > self.max_rank:
            keep &= lam >= np.sort(lam)[-int(self.max_rank)]
        if not keep.any():  # every training text has empty features
            keep = np.zeros_like(lam, dtype=bool)
        self.U_ = U[:, keep]
        self.lam_ = lam[keep]
        self.proj_ = self.U_ / np.sqrt(self.lam_)  # (n, r): φ* = k* @ proj_
        return self.U_ * np.sqrt(self.lam_)

    def cross(self, F: Any) -> np.ndarray:
        """Kernel between new rows and the training rows, (n_new, n_train)."""
        return self._k(dense_dot(row_normalise(F), self.F_))

    def transform(self, F: Any) -> np.ndarray:
        """Φ* (n_new, r) and the kernel diagonal k(x*, x*)."""
        return self.cross(F) @ self.proj_

    def diag(self, F: Any) -> np.ndarray:
        G = row_normalise(F)
        sq = np.asarray(G.multiply(G).sum(axis=1)).ravel() if hasattr(G, "multiply") else (G * G).sum(axis=1)
        return self._k(sq)


def residual_var(Phi_star: np.ndarray, kdiag: np.ndarray) -> np.ndarray:
    """Prior variance of a test point outside the span of the training points: k** − |φ*|²
    (≥ 0), i.e. what the training queries cannot say about it."""
    return np.maximum(kdiag - (Phi_star ** 2).sum(axis=1), 0.0)
