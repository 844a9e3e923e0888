"""`Selector`: blends several predictors with weights chosen on held-out labels, the base rate
always among them, so that where the text says nothing the blend falls back to the base rate.

Procedure: fit every candidate on the training sample and predict the validation sample (or,
without one, K-fold out-of-fold predictions on the training sample); find the convex weights
that minimise the validation Brier score (stacking on the simplex; `mode="select"` picks the
single best instead); shrink them toward the base rate unless 5-fold cross-validation over the
validation queries shows the blend beating the base rate by about two standard errors; refit the candidates with weight > 0 on train + validation; predict with
the weighted mean. Std: the mixture's, sqrt(Σ w (std² + (p − p̄)²)).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy.optimize import minimize

from optllm.errors import OptLLMError
from optllm.predict.base import Predictor, check_labels, is_texts, rng_of
from optllm.predict.metrics import brier


def simplex_lsq(A: np.ndarray, y: np.ndarray) -> np.ndarray:
    """argmin_w |A w − y|² subject to w ≥ 0, Σ w = 1 (A: cells × candidates)."""
    J = A.shape[1]
    if J == 1:
        return np.ones(1)
    G = A.T @ A
    c = A.T @ y

    def f(w: np.ndarray) -> tuple[float, np.ndarray]:
        return float(w @ G @ w - 2 * c @ w), 2 * (G @ w - c)

    res = minimize(f, np.full(J, 1.0 / J), jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * J,
                   constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(J)}],
                   options={"maxiter": 200, "ftol": 1e-12})
    w = np.clip(res.x, 0.0, None)
    w[w < 1e-4] = 0.0
    return w / w.sum() if w.sum() > 0 else np.full(J, 1.0 / J)


DEFAULT_CANDIDATES = ("base", "knn", "logistic", "irt", "forest")


class Selector(Predictor):
    """Validation-weighted blend of `candidates` (names from `optllm.predict.PREDICTORS`, or
    predictor objects); the base rate is always added. One featuriser (`featurizer`) is fitted
    once, on the labelled texts (train + validation; it sees no labels), and shared by the
    candidates built by name. `mode`: "stack" (convex weights) or
    "select" (the single best). `refit`: refit on train + validation after choosing."""

    name = "selector"

    def __init__(self, candidates: Sequence[Any] = DEFAULT_CANDIDATES, mode: str = "stack",
                 refit: bool = True, cv: int = 5, featurizer: Any = "tfidf", seed: int = 0) -> None:
        super().__init__(featurizer=featurizer, seed=seed)
        self.candidates = tuple(candidates)
        self.mode = mode
        self.refit = refit
        self.cv = cv

    # the selector featurises once and hands features to its candidates
    def _build(self) -> list[Any]:
        from optllm.predict import make_predictor
        from sklearn.base import clone

        out = []
        names = []
        for j, c in enumerate(self.candidates):
            if isinstance(c, str):
                p = make_predictor(c, seed=int(self.seed) + 7919 * (j + 1), featurizer=None)
            else:
                import copy

                p = copy.deepcopy(c)
            out.append(p)
            names.append(getattr(p, "name", type(p).__name__))
        if "base" not in names:
            out.insert(0, make_predictor("base"))
        return out

    def fit(self, X: Any, Y: Any, X_val: Any = None, Y_val: Any = None,
            models: Sequence[str] | None = None) -> "Selector":
        from optllm.predict.base import single_thread_blas

        with single_thread_blas():
            return self._fit_all(X, Y, X_val, Y_val, models)

    def _fit_all(self, X: Any, Y: Any, X_val: Any, Y_val: Any, models: Sequence[str] | None) -> "Selector":
        if self.mode not in ("stack", "select"):
            raise OptLLMError(f"selector mode must be 'stack' or 'select', got {self.mode!r}")
        n = self._length(X)
        Y = check_labels(Y, n)
        m = Y.shape[1]
        self.models_ = tuple(models) if models is not None else tuple(f"model_{k}" for k in range(m))
        if len(self.models_) != m:
            raise OptLLMError(f"{self.name}: {len(self.models_)} model names for {m} label columns")
        self.texts_ = is_texts(X)
        cands = self._build()
        self.names_ = [getattr(p, "name", type(p).__name__) for p in cands]
        have_val = X_val is not None and Y_val is not None
        shared_all = None
        if have_val:
            Y_val = check_labels(Y_val, self._length(X_val), where="Y_val")
            if Y_val.shape[1] != m:
                raise OptLLMError(f"{self.name}: Y_val has {Y_val.shape[1]} models, Y has {m}")
            # one featuriser for both stages, fitted on the labelled texts (train + validation;
            # no labels are used), so the refit reuses the features
            X_all = self._concat(X, X_val)
            F_all = self._featurize_all(X_all)
            ntr, nall = self._length(X), self._length(X_all)
            Ftr, Fva = self._take(F_all, np.arange(ntr)), self._take(F_all, np.arange(ntr, nall))
            # the kernel predictors share one Gram matrix of all labelled rows: its leading
            # block is the training kernel, the rest the validation cross-kernel
            shared_all = self._shared_kernel(cands, F_all)
            shared_tr = shared_all.block(ntr) if shared_all is not None else None
            fitted = [self._fit_one(c, Ftr, Y, X, shared_tr) for c in cands]
            P = [self._val_mean(c, f, Fva, X_val, shared_tr, nall) for c, f in zip(cands, fitted)]
            Yv = Y_val
            # the refit on train + validation keeps the hyperparameters chosen on train
            for c, f in zip(cands, fitted):
                if hasattr(f, "frozen_params"):
                    c.set_params(**f.frozen_params())
        else:
            P, Yv = self._oof(cands, X, Y)
        self.val_brier_ = {nm: brier(Yv, p) for nm, p in zip(self.names_, P)}
        w, self.shrink_ = self._weights(P, Yv)
        self.weights_ = dict(zip(self.names_, w.tolist()))
        # refit the chosen candidates on everything labelled; with a validation sample each
        # kernel candidate starts its solver from its fit on the training part
        if have_val and self.refit:
            Y_all = np.vstack([Y, Y_val])
            warm = [(f, shared_tr.cross_rows(0, nall) if shared_tr is not None else None) for f in fitted]
        else:
            X_all, Y_all = X, Y
            F_all = self._featurize_all(X_all)
            shared_all = self._shared_kernel(cands, F_all)
            warm = [None] * len(cands)
        self.fitted_cands_ = []
        for c, wj, ws in zip(cands, w, warm):
            if wj > 0:
                self.fitted_cands_.append((float(wj), self._fit_one(c, F_all, Y_all, X_all, shared_all, ws)))
        self.fitted_ = True
        return self

    # ------------------------------------------------------------ helpers
    def _solve(self, P: list[np.ndarray], Yv: np.ndarray, rows: np.ndarray) -> np.ndarray:
        Ys = Yv[rows]
        obs = ~np.isnan(Ys)
        if self.mode == "select":
            w = np.zeros(len(P))
            w[int(np.argmin([brier(Ys, p[rows]) for p in P]))] = 1.0
            return w
        A = np.stack([p[rows][obs] for p in P], axis=1)
        return simplex_lsq(A, Ys[obs])

    def _weights(self, P: list[np.ndarray], Yv: np.ndarray) -> tuple[np.ndarray, float]:
        """Weights on all validation queries, shrunk toward the base rate by how surely they
        beat it out of sample: 5-fold cross-validation over the validation queries gives each
        query's Brier gain d_i of the blend over the base rate; with t = mean(d)/se(d) the
        weights move a fraction clip(t / 2, 0, 1) from the base rate to the blend."""
        n = Yv.shape[0]
        w = self._solve(P, Yv, np.arange(n))
        ib = self.names_.index("base")
        e = np.zeros(len(P))
        e[ib] = 1.0
        if n < 4:
            return e, 0.0
        folds = np.array_split(rng_of(int(self.seed) + 1).permutation(n), min(5, n))
        d = np.full(n, np.nan)
        for f in folds:
            tr = np.setdiff1d(np.arange(n), f)
            wf = self._solve(P, Yv, tr)
            blend = sum(wj * p[f] for wj, p in zip(wf, P))
            err_b = np.nansum((P[ib][f] - Yv[f]) ** 2, axis=1)
            err_w = np.nansum((blend - Yv[f]) ** 2, axis=1)
            d[f] = err_b - err_w
        se = d.std(ddof=1) / np.sqrt(n)
        t = d.mean() / se if se > 0 else (np.inf if d.mean() > 0 else 0.0)
        s = float(np.clip(t / 2.0, 0.0, 1.0))
        return s * w + (1 - s) * e, s

    def _featurize_all(self, X: Any) -> Any:
        """Fit the featuriser on X (texts) and return X's features (one tokenisation pass);
        feature matrices pass through."""
        from optllm.predict.features import fit_transform, make_featurizer

        if not self.texts_:
            self.featurizer_ = None
            return X
        self.featurizer_ = make_featurizer(self.featurizer)
        return fit_transform(self.featurizer_, list(X))

    def _feat_pair(self, X: Any, X2: Any) -> tuple[Any, Any]:
        from optllm.predict.features import fit_transform, make_featurizer

        if not self.texts_:
            return X, X2
        f = make_featurizer(self.featurizer)
        return fit_transform(f, list(X)), f.transform(list(X2))

    @staticmethod
    def _own_featurizer(c: Any) -> bool:
        return getattr(c, "featurizer", None) is not None and getattr(c, "uses_features", True)

    def _arg(self, c: Any, F: Any, X: Any) -> Any:
        return X if (self._own_featurizer(c) and self.texts_) else F

    def _on_shared(self, c: Any) -> bool:
        """Whether candidate c is a kernel predictor fitted on the selector's features."""
        return getattr(c, "uses_kernel", False) and not (self._own_featurizer(c) and self.texts_)

    def _shared_kernel(self, cands: list[Any], F: Any) -> Any:
        """The Gram matrix of F's rows, computed once for the kernel candidates (None if none)."""
        from optllm.predict.base import as_matrix
        from optllm.predict.kernel import SharedKernel, needs_landmarks

        n = F.shape[0]
        # past its landmarks a kernel candidate fits a Nyström map of its own (O(n·L) memory),
        # never an n x n Gram matrix
        if not any(self._on_shared(c) and not needs_landmarks(n, getattr(c, "landmarks", None)) for c in cands):
            return None
        return SharedKernel.of(as_matrix(F))

    def _fit_one(self, c: Any, F: Any, Y: np.ndarray, X: Any, shared: Any = None, warm: Any = None) -> Any:
        import copy

        c = copy.deepcopy(c)
        if self._on_shared(c):  # hints, taken off the candidate by its fit
            if shared is not None:
                c._shared_kernel = shared
            if warm is not None:
                c._warm_start = warm
        return c.fit(self._arg(c, F, X), Y, models=self.models_)

    def _val_mean(self, c: Any, f: Any, Fva: Any, X_val: Any, shared_tr: Any, nall: int) -> np.ndarray:
        """The fitted candidate f's mean prediction for the validation rows; a kernel candidate
        fitted on the shared kernel takes its validation cross-kernel from the shared Gram."""
        from optllm.predict.base import sigmoid

        km = getattr(f, "kmap_", None)
        if (shared_tr is not None and self._on_shared(c) and km is not None and km.F_ is shared_tr.normalised
                and hasattr(f, "logits") and not getattr(f, "moderate", True)):
            mean = sigmoid(f.logits(None, cos=shared_tr.cross_rows(shared_tr.n, nall)))
            return np.clip(np.nan_to_num(mean, nan=0.5), 0.0, 1.0)
        arg = self._arg(c, Fva, X_val)
        return f.predict_mean(arg) if hasattr(f, "predict_mean") else f.predict(arg).mean

    @staticmethod
    def _concat(A: Any, B: Any) -> Any:
        import scipy.sparse as sp

        if sp.issparse(A):
            return sp.vstack([A, B], format="csr")
        if isinstance(A, np.ndarray) and A.ndim == 2:
            return np.vstack([A, np.asarray(B)])
        return list(A) + list(B)

    @staticmethod
    def _take(X: Any, idx: np.ndarray) -> Any:
        if hasattr(X, "shape") and not isinstance(X, list):
            return X[idx]
        return [X[i] for i in idx]

    def _oof(self, cands: list[Any], X: Any, Y: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        n = Y.shape[0]
        k = max(2, min(int(self.cv), n))
        folds = np.array_split(rng_of(self.seed).permutation(n), k)
        P = [np.zeros_like(Y) for _ in cands]
        for f in folds:
            tr = np.setdiff1d(np.arange(n), f)
            Xtr, Xte = self._take(X, tr), self._take(X, f)
            Ftr, Fte = self._feat_pair(Xtr, Xte)
            for j, c in enumerate(cands):
                fj = self._fit_one(c, Ftr, Y[tr], Xtr)
                arg = self._arg(c, Fte, Xte)
                P[j][f] = fj.predict_mean(arg) if hasattr(fj, "predict_mean") else fj.predict(arg).mean
        return P, Y

    def _ready(self, X: Any) -> int:
        n = super()._ready(X)
        if n and self.texts_ != is_texts(X):
            raise OptLLMError(f"{self.name}: fitted on {'texts' if self.texts_ else 'features'}; predict() needs the same")
        return n

    def predict(self, X: Any):  # type: ignore[override]
        from optllm.predict.base import Prediction

        n = self._ready(X)
        if n == 0:
            z = np.zeros((0, len(self.models_)))
            return Prediction(z, z.copy(), self.models_)
        F = self.featurizer_.transform(list(X)) if self.featurizer_ is not None else X
        preds = [(w, c.predict(self._arg(c, F, X))) for w, c in self.fitted_cands_]
        mean = sum(w * p.mean for w, p in preds)
        var = sum(w * (p.std ** 2 + (p.mean - mean) ** 2) for w, p in preds)
        return Prediction(np.clip(mean, 0, 1), np.sqrt(var), self.models_)

    def predict_mean(self, X: Any) -> np.ndarray:
        """`predict(X).mean` alone (each candidate's `predict_mean`; candidates of weight 0 skipped)."""
        n = self._ready(X)
        if n == 0:
            return np.zeros((0, len(self.models_)))
        F = self.featurizer_.transform(list(X)) if self.featurizer_ is not None else X
        mean = np.zeros((n, len(self.models_)))
        for w, c in self.fitted_cands_:
            if w > 0:
                arg = self._arg(c, F, X)
                mean += w * (c.predict_mean(arg) if hasattr(c, "predict_mean") else c.predict(arg).mean)
        return np.clip(mean, 0, 1)
