"""Kernels on query features and the whitened "kernel features" that let every linear model
run in at most n_train dimensions, whatever the size of the TF-IDF vocabulary.

With K = Φ Φᵀ (eigen-decomposition of the training kernel), a linear model on Φ with an L2
penalty is exactly the Gaussian-process / kernel model with covariance K; a test query's
coordinates are φ* = Λ^{-1/2} Uᵀ k*. Cost: one n_train × n_train eigen-decomposition.

Past `landmarks` training rows the map is Nyström's (Williams & Seeger 2001): the
eigen-decomposition is of the kernel among at most L = `landmarks` rows, and every row's
coordinates are its kernel with those rows times Λ^{-1/2} U (the same formula). The rows are
chosen by randomly pivoted Cholesky (Chen, Epperly, Tropp & Webber 2023): each next landmark
is drawn with probability proportional to how badly the landmarks so far explain its kernel
(its residual variance), so a rare kind of query (one log template among many) is picked as
surely as a common one; uniform draws miss them (benchmarks/landmarks.py). A fit costs
O(n_train · L²) time and O(n_train · L) memory instead of O(n_train³) and O(n_train²). Up to
L rows nothing changes: the map is exact.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from optllm.predict.base import dense_dot
from optllm.predict.features import row_normalise


# Nyström landmarks of the kernel predictors (`logistic`, `irt`): chosen by validation, see
# docs/predictors.md "Past a thousand labels" (benchmarks/landmarks.py)
LANDMARKS = 1024


class CosineRows:
    """Fixed unit-norm rows `F_` (training queries) and the cosines of new rows with them: the
    product every kernel map and the kNN predictor take, with its fast paths."""

    def __init__(self, F_: Any = None) -> None:
        if F_ is not None:
            self.F_ = F_

    def cosines(self, G: Any) -> np.ndarray:
        """(n_new, n_rows) cosines of unit-norm rows G with F_ (dense)."""
        if sp.issparse(G) and sp.issparse(self.F_):
            dense = self._vocab_block()
            if dense is not None:
                if G.shape[0] == 1:  # one prompt (a router): its terms' rows of the block, no CSR built
                    rows, vals = self._one_row(G)
                    return (vals @ dense[rows])[None, :]
                return np.asarray(self._restrict(G) @ dense)  # sparse x dense: one pass, no sparse result
            return np.asarray((G @ self._transposed()).toarray())  # one query: no CSR->CSC per call
        return dense_dot(G, self.F_)

    # A new row's cosine with the training rows only involves the vocabulary the training rows
    # use; on those columns the training rows are a small dense block, and a sparse x dense
    # product is many times faster than sparse x sparse with a dense result (and the same sum).
    DENSE_BLOCK_MAX_BYTES = 512 * 2**20

    def _vocab_block(self) -> np.ndarray | None:
        """F_ on its own columns, dense and transposed (|vocab| x n_train), or None when too big."""
        if "_dense" not in self.__dict__:
            F = sp.csr_matrix(self.F_)
            cols = np.unique(F.indices)
            block = None
            if cols.size * F.shape[0] * 8 <= self.DENSE_BLOCK_MAX_BYTES:
                colmap = np.full(F.shape[1], -1, dtype=np.int64)
                colmap[cols] = np.arange(cols.size)
                block = np.ascontiguousarray(F[:, cols].toarray().T)
                self.__dict__["_colmap"] = colmap
            self.__dict__["_dense"] = block
        return self.__dict__["_dense"]

    def _one_row(self, G: Any) -> tuple[np.ndarray, np.ndarray]:
        """A one-row CSR G on the training vocabulary: (block rows, values) of its entries there."""
        G = sp.csr_matrix(G)
        m = self.__dict__["_colmap"][G.indices]
        keep = m >= 0
        return m[keep], G.data[keep]

    def _restrict(self, G: Any) -> Any:
        """G (CSR, normalised) on the training vocabulary's columns only."""
        G = sp.csr_matrix(G)
        colmap = self.__dict__["_colmap"]
        m = colmap[G.indices]
        keep = m >= 0
        indptr = np.concatenate([[0], np.cumsum(keep)])[G.indptr]
        return sp.csr_matrix((G.data[keep], m[keep], indptr), shape=(G.shape[0], int(colmap.max()) + 1))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for cache in ("_FT", "_dense", "_colmap"):  # caches: rebuilt on first use
            state.pop(cache, None)
        return state

    def _transposed(self) -> Any:
        """F_ᵀ in CSR, built once (a lazily cached copy; not part of the fitted state)."""
        FT = self.__dict__.get("_FT")
        if FT is None or FT.shape != (self.F_.shape[1], self.F_.shape[0]):
            FT = self.__dict__["_FT"] = sp.csr_matrix(self.F_.T)
        return FT



class KernelMap(CosineRows):
    """Cosine kernel (gamma=0) or its RBF on the unit sphere, exp(gamma·(cos − 1))."""

    def __init__(self, gamma: float = 0.0, eig_tol: float = 1e-8, max_rank: int | None = None,
                 landmarks: int | None = None, seed: int = 0) -> None:
        self.gamma = gamma
        self.eig_tol = eig_tol
        self.max_rank = max_rank
        self.landmarks = landmarks
        self.seed = seed

    def _k(self, cos: np.ndarray) -> np.ndarray:
        if self.gamma and self.gamma > 0:
            return np.exp(self.gamma * (np.clip(cos, -1.0, 1.0) - 1.0))
        return cos

    def fit(self, F: Any, normalised: Any = None, cos: np.ndarray | None = None) -> np.ndarray:
        """Store the normalised training rows (the landmark rows past `landmarks`); return Φ
        (n, r). `normalised` (F's rows scaled to unit norm) and `cos` (their Gram matrix; exact
        maps only) may be passed when already computed."""
        Fn = row_normalise(F) if normalised is None else normalised
        n = Fn.shape[0]
        self.landmarks_ = None
        if self.landmarks is not None and n > int(self.landmarks):
            self.landmarks_ = self._pivots(Fn, int(self.landmarks))
            self.F_ = Fn[self.landmarks_]
            C = self._k(dense_dot(Fn, self.F_))  # (n, L): every row's kernel with the landmarks
            K = C[self.landmarks_]
        else:
            self.F_ = Fn
            K = C = self._k(dense_dot(self.F_, self.F_) if cos is None else cos)
        K = 0.5 * (K + K.T)
        lam, U = np.linalg.eigh(K)
        keep = lam > self.eig_tol * max(float(lam.max()), 1e-12)
        if self.landmarks_ is not None:
            # Φ of every training row from all the landmarks' directions, then the rank cap
            # on that (the leading directions of the approximated n x n kernel, as the exact
            # map takes them), not on the landmarks' own kernel, whose spectrum over-weights
            # the rare rows the pivots favour; the SVD also makes Φ's columns orthogonal, as
            # in the exact map, which the solvers' diagonal preconditioning relies on
            proj = U[:, keep] / np.sqrt(lam[keep])
            Phi = C @ proj
            _, sv, Vt = np.linalg.svd(Phi, full_matrices=False)
            r = int((sv ** 2 > self.eig_tol * max(float(sv[0]) ** 2 if sv.size else 0.0, 1e-12)).sum())
            if self.max_rank is not None:
                r = min(r, int(self.max_rank))
            self.lam_ = sv[:r] ** 2  # the eigenvalues of the approximated training kernel
            self.proj_ = proj @ Vt[:r].T  # (L, r): φ* = k*_landmarks @ proj_
            return Phi @ Vt[:r].T
        if self.max_rank is not None and keep.sum() > self.max_rank:
            keep &= lam >= np.sort(lam)[-int(self.max_rank)]
        if not keep.any():  # every training text has empty features
            keep = np.zeros_like(lam, dtype=bool)
        self.U_ = U[:, keep]
        self.lam_ = lam[keep]
        self.proj_ = self.U_ / np.sqrt(self.lam_)  # (n, r): φ* = k* @ proj_
        return self.U_ * np.sqrt(self.lam_)

    PIVOT_BLOCK = 64  # landmarks drawn per kernel product (the block variant of the method)

    def _pivots(self, Fn: Any, L: int) -> np.ndarray:
        """Up to L rows of Fn chosen by block randomly pivoted Cholesky (seeded): draw a block
        of rows with probability ∝ their residual kernel variance, accept each whose residual
        (after the rows accepted so far) is above `eig_tol`, update the residuals. Stops early
        when the landmarks explain every row (a kernel of rank < L)."""
        n = Fn.shape[0]
        rng = np.random.default_rng(self.seed)
        resid = self.diag(Fn).astype(np.float64)
        tol = self.eig_tol * max(float(resid.max()), 1e-12)
        G = np.zeros((n, L))  # the Cholesky factor of the kernel on the accepted landmarks
        chosen: list[int] = []
        while len(chosen) < L:
            live = resid > tol
            if not live.any():
                break
            want = min(self.PIVOT_BLOCK, L - len(chosen), int(live.sum()))
            w = np.where(live, resid, 0.0)
            S = rng.choice(n, size=want, replace=False, p=w / w.sum())
            k = len(chosen)
            C = self._k(dense_dot(Fn, Fn[S]))  # (n, b): the kernel with the drawn rows
            C -= G[:, :k] @ G[S, :k].T
            for j, s_ in enumerate(S):
                g = C[:, j] - G[:, k:len(chosen)] @ G[s_, k:len(chosen)]
                if g[s_] <= tol:  # explained by the rows accepted in this block
                    continue
                G[:, len(chosen)] = g / np.sqrt(g[s_])
                chosen.append(int(s_))
            resid = np.maximum(resid - (G[:, k:len(chosen)] ** 2).sum(axis=1), 0.0)
        return np.sort(np.asarray(chosen, dtype=np.int64))

    def coordinates(self, Phi: np.ndarray, values: np.ndarray) -> np.ndarray:
        """θ (r, …) with Φ θ closest to `values` (rows of Φ: this map's training rows): what a
        warm start carries over from an earlier fit. Exact maps have orthogonal Φ, so θ =
        proj_ᵀ values; a Nyström Φ needs the least-squares solve."""
        if getattr(self, "landmarks_", None) is None:
            return self.proj_.T @ values
        return np.linalg.lstsq(Phi, values, rcond=None)[0]

    def cross(self, F: Any, cos: np.ndarray | None = None) -> np.ndarray:
        """Kernel between new rows and the training rows, (n_new, n_train); `cos`: their
        cosines, when already computed."""
        if cos is None:
            cos = self.cosines(row_normalise(F))
        return self._k(cos)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_W", None)  # a cache: rebuilt on first use
        return state

    def transform(self, F: Any, cos: np.ndarray | None = None) -> np.ndarray:
        """Φ* (n_new, r), the coordinates of new rows (`cos` as in `cross`). For the cosine
        kernel, Φ* = G_S (F_S^T proj) is one sparse x dense product on the training vocabulary."""
        if cos is None and not (self.gamma and self.gamma > 0) and sp.issparse(F) and sp.issparse(self.F_):
            dense = self._vocab_block()
            if dense is not None:
                W = self.__dict__.get("_W")
                if W is None:
                    W = self.__dict__["_W"] = dense @ self.proj_
                G = row_normalise(F)
                if G.shape[0] == 1:  # one prompt: its terms' rows of W
                    rows, vals = self._one_row(G)
                    return (vals @ W[rows])[None, :]
                return np.asarray(self._restrict(G) @ W)
        return self.cross(F, cos) @ self.proj_

    def diag(self, F: Any) -> np.ndarray:
        G = row_normalise(F)
        sq = np.asarray(G.multiply(G).sum(axis=1)).ravel() if hasattr(G, "multiply") else (G * G).sum(axis=1)
        return self._k(sq)


def residual_var(Phi_star: np.ndarray, kdiag: np.ndarray) -> np.ndarray:
    """Prior variance of a test point outside the span of the training points: k** − |φ*|²
    (≥ 0), i.e. what the training queries cannot say about it."""
    return np.maximum(kdiag - (Phi_star ** 2).sum(axis=1), 0.0)


class SharedKernel:
    """The cosines between the rows of one labelled feature matrix, computed once, and the
    kernel maps built from them (one eigen-decomposition per (gamma, eig_tol, max_rank)):
    what a `Selector` hands the kernel predictors (`logistic`, `irt`) it fits on the same rows,
    so they share the work. `rows` picks a leading block of the rows (the training part) out
    of the cosines of a larger matrix (training + validation)."""

    def __init__(self, normalised: Any, cos: np.ndarray, rows: int | None = None) -> None:
        n = cos.shape[0] if rows is None else int(rows)
        self.normalised = normalised[:n] if n < normalised.shape[0] else normalised
        self.cos = cos[:n, :n]
        self.cos_all = cos  # cosines of every row of the larger matrix with every other
        self.n = n
        self._maps: dict[tuple[float, float, int | None], tuple[KernelMap, np.ndarray]] = {}

    @classmethod
    def of(cls, F: Any) -> "SharedKernel":
        Fn = row_normalise(F)
        return cls(Fn, dense_dot(Fn, Fn))

    def block(self, rows: int) -> "SharedKernel":
        """The same for the first `rows` rows (their cosines are a block of these)."""
        return SharedKernel(self.normalised, self.cos_all, rows)

    def kernel_map(self, gamma: float, eig_tol: float, max_rank: int | None) -> tuple[KernelMap, np.ndarray]:
        """A fitted `KernelMap` of these rows and their Φ (shared: do not modify)."""
        key = (float(gamma or 0.0), float(eig_tol), None if max_rank is None else int(max_rank))
        if key not in self._maps:
            km = KernelMap(gamma, eig_tol=eig_tol, max_rank=max_rank)
            Phi = km.fit(None, normalised=self.normalised, cos=self.cos)
            Phi.setflags(write=False)
            self._maps[key] = (km, Phi)
        return self._maps[key]

    def cross_rows(self, lo: int, hi: int) -> np.ndarray:
        """Cosines of rows lo:hi of the larger matrix with these rows."""
        return self.cos_all[lo:hi, :self.n]

    def __deepcopy__(self, memo: dict) -> "SharedKernel":  # shared on purpose, never copied
        return self


def kernel_features(pred: Any, F: Any) -> tuple[KernelMap, np.ndarray]:
    """(KernelMap, Φ) of training features F for a kernel predictor (attributes gamma,
    max_rank, landmarks, seed): from the `SharedKernel` a selector handed it for exactly these
    rows (`pred._shared_kernel`, taken off the predictor here; exact maps only), else computed."""
    shared = pred.__dict__.pop("_shared_kernel", None)
    landmarks = getattr(pred, "landmarks", None)
    if shared is not None and shared.n == F.shape[0] and not needs_landmarks(shared.n, landmarks):
        return shared.kernel_map(pred.gamma, 1e-8, pred.max_rank)
    km = KernelMap(pred.gamma, max_rank=pred.max_rank, landmarks=landmarks, seed=int(getattr(pred, "seed", 0)))
    return km, km.fit(F)


def needs_landmarks(n_train: int, landmarks: int | None) -> bool:
    """Whether a kernel map of `n_train` rows is Nyström's (more rows than `landmarks`)."""
    return landmarks is not None and n_train > int(landmarks)


def warm_start_of(pred: Any, m: int) -> tuple[Any, np.ndarray | None]:
    """The earlier fit a selector handed `pred` to start its solver from (`pred._warm_start`:
    the fitted predictor and the cosines between the new training rows and its training rows,
    or None), taken off the predictor here; (None, None) when there is none or it does not fit
    (another number of models, or not fitted)."""
    hint = pred.__dict__.pop("_warm_start", None)
    if hint is None:
        return None, None
    prev, cos = hint
    if type(prev) is not type(pred) or len(getattr(prev, "models_", ())) != m or not getattr(prev, "fitted_", False):
        return None, None
    return prev, cos
