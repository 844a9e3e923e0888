"""Random-forest predictors: the paper's bootstrap ensemble, faithfully, and a fast one-forest
variant with the spread over its own trees.

Both use a multi-output `RandomForestRegressor` on the 0/1 labels with `max_features="sqrt"`:
on 0/1 targets the squared-error split criterion is the Gini criterion (variance p(1−p) is half
the Gini impurity) and a leaf's mean is the classifier's leaf probability, so this is the
classifier forest; it also accepts graded scores and a column with a single class.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from optllm.predict.base import Predictor, beta_posterior, rng_of


def _fill(Y: np.ndarray) -> np.ndarray:
    """NaN labels replaced by the model's mean (forests need complete targets)."""
    col = np.nanmean(np.where(np.isnan(Y).all(axis=0, keepdims=True), 0.5, Y), axis=0)
    return np.where(np.isnan(Y), col, Y)


def _as_tree_input(F: Any) -> Any:
    """Features in the dtype/layout sklearn trees use, converted once for all trees."""
    if sp.issparse(F):
        Fc = sp.csr_matrix(F, dtype=np.float32)
        Fc.sort_indices()
        return Fc
    return np.ascontiguousarray(F, dtype=np.float32)


def _forest(n_estimators: int, max_depth: int | None, seed: int, min_samples_leaf: int = 1) -> Any:
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(n_estimators=n_estimators, max_depth=max_depth, max_features="sqrt",
                                 min_samples_leaf=min_samples_leaf, n_jobs=1, random_state=seed)


class _PerLabel:
    """One forest per model (the paper's code: sklearn MultiOutputClassifier)."""

    def __init__(self, n_estimators: int, max_depth: int | None, seed: int) -> None:
        self.args = (n_estimators, max_depth, seed)

    def fit(self, F: Any, Y: np.ndarray) -> "_PerLabel":
        self.forests = [_forest(self.args[0], self.args[1], self.args[2] + k).fit(F, Y[:, k])
                        for k in range(Y.shape[1])]
        return self

    def predict(self, F: Any) -> np.ndarray:
        return np.stack([f.predict(F) for f in self.forests], axis=1)


class BootstrapForest(Predictor):
    """The OptLLM paper's robust predictor: `u` bootstrap resamples of the training set, one
    random forest each (`n_estimators` trees of depth `max_depth`), weighted by accuracy on the
    validation sample (out-of-bag rows when none is given); mean = weighted mean of the u
    forests, std = their spread (unweighted, as the paper's code). Use
    `Prediction.robust(alpha)` for p̄ + α·σ. `per_label=True` grows one forest per model as
    the paper's code does (m times slower); the default grows one multi-output forest."""

    name = "bootstrap_forest"

    def __init__(self, u: int = 100, n_estimators: int = 100, max_depth: int | None = 10,
                 per_label: bool = False, featurizer: Any = "tfidf", seed: int = 0) -> None:
        super().__init__(featurizer=featurizer, seed=seed)
        self.u = u
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.per_label = per_label

    def _make(self, seed: int) -> Any:
        if self.per_label:
            return _PerLabel(self.n_estimators, self.max_depth, seed)
        return _forest(self.n_estimators, self.max_depth, seed)

    def _fit(self, F: Any, Y: np.ndarray, F_val: Any, Y_val: np.ndarray | None) -> None:
        rng = rng_of(self.seed)
        Yf = _fill(Y)
        n = Y.shape[0]
        self.estimators_, scores = [], []
        for j in range(max(1, int(self.u))):
            idx = rng.integers(0, n, n)
            est = self._make(int(rng.integers(2**31 - 1))).fit(F[idx], Yf[idx])
            if F_val is not None:
                Fv, Yv = F_val, Y_val
            else:
                oob = np.setdiff1d(np.arange(n), idx)
                Fv, Yv = (F[oob], Y[oob]) if oob.size else (F, Y)
            pv = np.asarray(est.predict(Fv)).reshape(Yv.shape)
            obs = ~np.isnan(Yv)
            scores.append(float(((pv.round() == Yv) & obs).sum() / max(obs.sum(), 1)))
            self.estimators_.append(est)
        s = np.asarray(scores)
        self.val_scores_ = s
        self.weights_ = s / s.sum() if s.sum() > 0 else np.full(s.size, 1.0 / s.size)

    def _predict(self, F: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
        mean = None
        s1 = s2 = None
        for w, est in zip(self.weights_, self.estimators_):
            p = np.asarray(est.predict(F)).reshape(n, -1)
            if mean is None:
                mean, s1, s2 = w * p, p.copy(), p * p
            else:
                mean += w * p
                s1 += p
                s2 += p * p
        u = len(self.estimators_)
        std = np.sqrt(np.maximum(s2 / u - (s1 / u) ** 2, 0.0))
        return mean, std


class FastForest(Predictor):
    """One random forest; mean over its trees (shrunk toward the base rate by `prior_strength`
    pseudo-labels, so a leaf of one query never says 0 or 1), std = spread over the trees."""

    name = "forest"

    def __init__(self, n_estimators: int = 100, max_depth: int | None = 10, min_samples_leaf: int = 1,
                 prior_strength: float = 1.0, featurizer: Any = "tfidf", seed: int = 0) -> None:
        super().__init__(featurizer=featurizer, seed=seed)
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.prior_strength = prior_strength

    def _fit(self, F: Any, Y: np.ndarray, F_val: Any, Y_val: np.ndarray | None) -> None:
        seed = int(rng_of(self.seed).integers(2**31 - 1))
        self.forest_ = _forest(self.n_estimators, self.max_depth, seed, self.min_samples_leaf).fit(F, _fill(Y))
        self.rate_, _ = beta_posterior(Y)
        self.n_train_ = Y.shape[0]

    def _predict(self, F: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
        s1 = s2 = None
        Fc = _as_tree_input(F)
        for t in self.forest_.estimators_:
            p = np.asarray(t.predict(Fc, check_input=False)).reshape(n, -1)
            s1 = p.copy() if s1 is None else s1 + p
            s2 = p * p if s2 is None else s2 + p * p
        T = len(self.forest_.estimators_)
        mean, std = s1 / T, np.sqrt(np.maximum(s2 / T - (s1 / T) ** 2, 0.0))
        a = self.prior_strength / (self.n_train_ + self.prior_strength)
        return (1 - a) * mean + a * self.rate_, (1 - a) * std

    def _predict_mean(self, F: Any, n: int) -> np.ndarray:
        """The mean alone. A few queries (a router's one) walk every tree at once on stacked
        node arrays (`_StackedTrees`, ~0.1 ms for 100 trees); more go tree by tree through
        the compiled `tree_.predict` (what `predict` calls after its input checks)."""
        T = len(self.forest_.estimators_)
        if n <= _STACKED_ROWS:
            s1 = self._stacked().sum(F)
        else:
            Fc = _as_tree_input(F)
            s1 = None
            for t in self.forest_.estimators_:
                p = t.tree_.predict(Fc).reshape(n, -1)
                s1 = p.copy() if s1 is None else s1 + p
        a = self.prior_strength / (self.n_train_ + self.prior_strength)
        return (1 - a) * (s1 / T) + a * self.rate_

    def _stacked(self) -> "_StackedTrees":
        st = self.__dict__.get("_stacked_trees")
        if st is None:
            st = self.__dict__["_stacked_trees"] = _StackedTrees(self.forest_.estimators_)
        return st

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_stacked_trees", None)  # a cache: rebuilt on first use
        return state


_STACKED_ROWS = 4


class _StackedTrees:
    """The nodes of a forest's trees in padded [tree, node] arrays, walked level by level for
    all trees at once: the same comparisons as sklearn (float32 feature ≤ float64 threshold,
    absent sparse entries are 0), so the same leaves; their values summed over the trees."""

    def __init__(self, trees: Any) -> None:
        ts = [t.tree_ for t in trees]
        T, N = len(ts), max(t.node_count for t in ts)
        self.left = np.full((T, N), -1, dtype=np.int64)
        self.right = np.full((T, N), -1, dtype=np.int64)
        self.feature = np.zeros((T, N), dtype=np.int64)
        self.threshold = np.zeros((T, N), dtype=np.float64)
        out = ts[0].value.shape[1]
        self.value = np.zeros((T, N, out), dtype=np.float64)
        for j, t in enumerate(ts):
            c = t.node_count
            self.left[j, :c], self.right[j, :c] = t.children_left, t.children_right
            self.feature[j, :c] = np.maximum(t.feature, 0)
            self.threshold[j, :c] = t.threshold
            self.value[j, :c] = t.value[:, :, 0]
        self.depth = max(t.max_depth for t in ts)
        self.n_features = int(ts[0].n_features)
        self.rows = np.arange(T)

    def sum(self, F: Any) -> np.ndarray:
        """Σ over trees of each row's leaf value, (n, outputs)."""
        X = F.toarray() if sp.issparse(F) else np.asarray(F)
        X = np.asarray(X, dtype=np.float32)
        out = np.empty((X.shape[0], self.value.shape[2]))
        r = self.rows
        for i in range(X.shape[0]):
            x = X[i]
            node = np.zeros(r.size, dtype=np.int64)
            for _ in range(self.depth):
                left = self.left[r, node]
                go = np.where(x[self.feature[r, node]] <= self.threshold[r, node], left, self.right[r, node])
                node = np.where(left < 0, node, go)
            out[i] = self.value[r, node].sum(axis=0)
        return out
