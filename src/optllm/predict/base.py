"""`Prediction` and the shared machinery of every predictor: input checks, featurisers,
NaN-aware labels, Beta priors and the Gaussian helpers used for uncertainty.

Imports go one way: this module uses `optllm.predict.features` (featurisers and
`row_normalise`), never the reverse."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from optllm.errors import OptLLMError
from optllm.predict.features import fit_transform, make_featurizer


@dataclass(frozen=True, eq=False)
class Prediction:
    """Predicted P(model k answers query i correctly): `mean` and its uncertainty `std`, both
    (n, m), with the model names beside them."""

    mean: np.ndarray
    std: np.ndarray
    models: tuple[str, ...]

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float64)
        std = np.asarray(self.std, dtype=np.float64)
        if mean.ndim != 2 or std.shape != mean.shape:
            raise OptLLMError(f"Prediction: mean {mean.shape} and std {std.shape} must be equal (n, m) shapes")
        if mean.shape[1] != len(self.models):
            raise OptLLMError(f"Prediction: {mean.shape[1]} columns but {len(self.models)} model names")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "models", tuple(str(m) for m in self.models))

    @property
    def n(self) -> int:
        return int(self.mean.shape[0])

    @property
    def m(self) -> int:
        return int(self.mean.shape[1])

    def robust(self, alpha: float = 0.0) -> np.ndarray:
        """The paper's robust estimate: clip(mean + alpha·std, 0, 1)."""
        return np.clip(self.mean + float(alpha) * self.std, 0.0, 1.0)

    def subset(self, rows: Any) -> "Prediction":
        """The prediction for some queries."""
        return Prediction(self.mean[rows], self.std[rows], self.models)


# ---------------------------------------------------------------------- helpers
def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


def bernoulli_nll_grad(Z: np.ndarray, Y0: np.ndarray, mask: np.ndarray | None) -> tuple[float, np.ndarray]:
    """Σ mask·(softplus(Z) − y·Z) (the Bernoulli negative log likelihood of logits Z) and its
    gradient mask·(sigmoid(Z) − y), from one exponential per cell; `mask` None: every cell
    observed."""
    e = np.exp(-np.abs(Z))
    nll = np.maximum(Z, 0.0) + np.log1p(e) - Y0 * Z
    inv = 1.0 / (1.0 + e)
    R = np.where(Z >= 0, inv, e * inv) - Y0
    if mask is not None:
        nll *= mask
        R *= mask
    return float(nll.sum()), R


def weighted_grams(X: np.ndarray, W: np.ndarray, ridge: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of Xᵀ diag(W[:, k]) X + diag(ridge[:, k]) for every column k
    (X: (n, d), W: (n, m) ≥ 0, ridge: (d, m) > 0) → (m, d, d). The Gram matrices come from
    symmetric rank-k updates (half the work of a full product)."""
    from scipy.linalg import blas, lapack

    n, d = X.shape
    m = W.shape[1]
    out = np.zeros((m, d, d))
    if d == 0 or n == 0:  # nothing to factor (no feature directions), or only the ridge
        for k in range(m):
            out[k][np.diag_indices(d)] = np.sqrt(ridge[:, k])
        return out
    Xt = np.asfortranarray(X.T)  # (d, n): syrk(trans=0) forms Xt·Xtᵀ
    for k in range(m):
        A = Xt * np.sqrt(W[:, k])[None, :]
        H = blas.dsyrk(1.0, A, lower=1)
        H[np.diag_indices(d)] += ridge[:, k]
        L, info = lapack.dpotrf(H, lower=1, clean=1, overwrite_a=1)
        if info != 0:
            raise np.linalg.LinAlgError("Matrix is not positive definite")
        out[k] = L
    return out


def logit(p: np.ndarray | float, eps: float = 1e-6) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return np.log(p) - np.log1p(-p)


def moderated(mu: np.ndarray, var: np.ndarray, moderate: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of sigmoid(f) for f ~ N(mu, var): the mean is sigmoid(mu) (plug-in), or with
    `moderate` the probit approximation of E[sigmoid(f)]; the std is the delta-method one,
    capped at the Bernoulli maximum."""
    p = sigmoid(mu / np.sqrt(1.0 + np.pi * var / 8.0)) if moderate else sigmoid(mu)
    std = np.minimum(p * (1 - p) * np.sqrt(var), np.sqrt(p * (1 - p)))
    return p, std


def beta_posterior(Y: np.ndarray, strength: float = 2.0, prior_mean: float | np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Per-model Beta posterior mean and std from NaN-masked labels Y (n, m).

    The prior has mean `prior_mean` (default: the pooled rate over all models) and weight
    `strength` pseudo-observations, so a model with all-0 or all-1 labels stays inside (0, 1).
    """
    obs = ~np.isnan(Y)
    s = np.where(obs, Y, 0.0).sum(axis=0)
    c = obs.sum(axis=0).astype(np.float64)
    if prior_mean is None:
        tot = c.sum()
        prior_mean = (s.sum() + 1.0) / (tot + 2.0)
    a = s + strength * np.asarray(prior_mean)
    b = (c - s) + strength * (1.0 - np.asarray(prior_mean))
    mean = a / (a + b)
    std = np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1.0)))
    return mean, std


def check_labels(Y: Any, n: int | None = None, where: str = "Y") -> np.ndarray:
    """Y as float (n, m) in [0, 1] with NaN for unobserved cells; clear errors otherwise."""
    try:
        Y = np.array(Y, dtype=np.float64)
    except (TypeError, ValueError):
        raise OptLLMError(f"{where}: labels must be numbers in [0, 1] (NaN = not observed)") from None
    if Y.ndim == 1:
        Y = Y[:, None]
    if Y.ndim != 2 or Y.shape[1] == 0:
        raise OptLLMError(f"{where}: labels must have shape (n_queries, n_models), got {Y.shape}")
    if n is not None and Y.shape[0] != n:
        raise OptLLMError(f"{where}: {Y.shape[0]} label rows for {n} queries")
    if Y.shape[0] == 0:
        raise OptLLMError(f"{where}: no labelled queries")
    fin = Y[~np.isnan(Y)]
    if np.isinf(fin).any() or (fin.size and (fin.min() < 0 or fin.max() > 1)):
        raise OptLLMError(f"{where}: labels must lie in [0, 1] (NaN = not observed)")
    return Y


def is_texts(X: Any) -> bool:
    """True when X is a sequence of strings (not a numeric feature matrix)."""
    if sp.issparse(X):
        return False
    if isinstance(X, str):
        raise OptLLMError("expected a list of texts or a feature matrix, got a single string")
    arr = np.asarray(X, dtype=object) if not isinstance(X, np.ndarray) else X
    if arr.ndim != 1:
        return False
    return arr.size == 0 or all(isinstance(x, str) for x in arr[: min(arr.size, 64)])


def as_matrix(X: Any) -> np.ndarray | sp.csr_matrix:
    """A numeric feature matrix (dense float or CSR)."""
    if sp.issparse(X):
        return sp.csr_matrix(X, dtype=np.float64)
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise OptLLMError(f"features must be a 2-D matrix, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise OptLLMError("features contain NaN or inf")
    return arr


def dense_dot(A: Any, B: Any) -> np.ndarray:
    """A @ B.T as a dense array (sparse or dense inputs)."""
    out = A @ B.T
    return out.toarray() if sp.issparse(out) else np.asarray(out)


def rng_of(seed: int | np.random.Generator | None) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(0 if seed is None else seed)


def preload() -> None:
    """Import on this thread what the predictors import lazily (scikit-learn, SciPy's linear
    algebra): two threads importing scikit-learn for the first time at once can find it
    partially initialised (ImportError "cannot import name 'clone'"), as a fit on the main
    thread beside the cross-fits on a second one did in a fresh process."""
    import scipy.linalg  # noqa: F401
    import scipy.stats  # noqa: F401
    import sklearn.base  # noqa: F401
    import sklearn.ensemble  # noqa: F401
    import sklearn.feature_extraction.text  # noqa: F401
    import threadpoolctl  # noqa: F401


def single_thread_blas() -> Any:
    """Context: BLAS on one thread. The fits work on n_train-sized matrices, where threads only
    add overhead, and on a busy machine oversubscribed BLAS threads slow them 10-50×."""
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(limits=1, user_api="blas")
    except Exception:  # threadpoolctl missing: no limit
        import contextlib

        return contextlib.nullcontext()


class Predictor:
    """Base class: stores a featuriser and model names, turns texts into features, checks labels.

    Subclasses implement `_fit(F, Y, F_val, Y_val)` and `_predict(F) -> (mean, std)`.
    `__init__` only stores parameters; fitted attributes end with `_`.
    """

    name = "predictor"
    uses_features = True

    def __init__(self, featurizer: Any = "tfidf", seed: int = 0) -> None:
        self.featurizer = featurizer
        self.seed = seed

    # -------------------------------------------------------------- features
    def _features(self, X: Any, fit: bool = False) -> Any:
        if not self.uses_features:
            return None
        if is_texts(X):
            if fit:
                self.featurizer_ = make_featurizer(self.featurizer)
                return fit_transform(self.featurizer_, list(X))
            elif getattr(self, "featurizer_", None) is None:
                raise OptLLMError(f"{self.name}: fitted on a feature matrix, so predict() needs one too")
            return self.featurizer_.transform(list(X))
        if fit:
            self.featurizer_ = None
        elif getattr(self, "featurizer_", None) is not None:
            raise OptLLMError(f"{self.name}: fitted on texts, so predict() needs texts too")
        F = as_matrix(X)
        if not fit and F.shape[1] != self.n_features_:
            raise OptLLMError(f"{self.name}: fitted on {self.n_features_} features, got {F.shape[1]}")
        return F

    @staticmethod
    def _length(X: Any) -> int:
        return X.shape[0] if (sp.issparse(X) or isinstance(X, np.ndarray)) else len(X)

    # -------------------------------------------------------------- API
    def fit(self, X: Any, Y: Any, X_val: Any = None, Y_val: Any = None,
            models: Sequence[str] | None = None) -> "Predictor":
        """Fit on texts (or a feature matrix) X and labels Y (n, m) in [0, 1], NaN = unobserved.

        `X_val, Y_val` is an optional held-out labelled sample: `BootstrapForest` weights its
        resamples with it and `Selector` chooses/blends with it; other predictors ignore it.
        """
        n = self._length(X)
        Y = check_labels(Y, n)
        m = Y.shape[1]
        if models is None:
            models = tuple(f"model_{k}" for k in range(m))
        if len(models) != m:
            raise OptLLMError(f"{self.name}: {len(models)} model names for {m} label columns")
        self.models_ = tuple(str(x) for x in models)
        F = self._features(X, fit=True)
        self.n_features_ = None if F is None else F.shape[1]
        F_val = None
        if X_val is not None and Y_val is not None:
            Y_val = check_labels(Y_val, self._length(X_val), where="Y_val")
            if Y_val.shape[1] != m:
                raise OptLLMError(f"{self.name}: Y_val has {Y_val.shape[1]} models, Y has {m}")
            F_val = self._features(X_val)
        else:
            Y_val = None
        with single_thread_blas():
            self._fit(F, Y, F_val, Y_val)
        self.fitted_ = True
        return self

    def _ready(self, X: Any) -> int:
        """The number of rows of X, once it is known that X can be predicted (fitted first)."""
        if not getattr(self, "fitted_", False):
            raise OptLLMError(f"{self.name}: call fit() before predict()")
        return self._length(X)

    def predict(self, X: Any) -> Prediction:
        """Mean and std of P(correct) for every query in X and every model."""
        n = self._ready(X)
        if n == 0:
            z = np.zeros((0, len(self.models_)))
            return Prediction(z, z.copy(), self.models_)
        F = self._features(X)
        mean, std = self._predict(F, n)
        mean = np.clip(np.nan_to_num(mean, nan=0.5), 0.0, 1.0)
        std = np.clip(np.nan_to_num(std, nan=0.5), 0.0, 0.5)
        return Prediction(mean, std, self.models_)

    def predict_mean(self, X: Any) -> np.ndarray:
        """`predict(X).mean` alone: subclasses skip the work only the std needs."""
        n = self._ready(X)
        if n == 0:
            return np.zeros((0, len(self.models_)))
        mean = self._predict_mean(self._features(X), n)
        return np.clip(np.nan_to_num(mean, nan=0.5), 0.0, 1.0)

    def _predict_mean(self, F: Any, n: int) -> np.ndarray:
        return self._predict(F, n)[0]

    def _fit(self, F: Any, Y: np.ndarray, F_val: Any, Y_val: np.ndarray | None) -> None:
        raise NotImplementedError

    def _predict(self, F: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def get_params(self) -> dict[str, Any]:
        import inspect

        sig = inspect.signature(type(self).__init__)
        return {k: getattr(self, k) for k in sig.parameters if k != "self" and hasattr(self, k)}

    def set_params(self, **params: Any) -> "Predictor":
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"
