"""Choosing which queries to label (send to every candidate model) before planning.

- `random`: a seeded uniform sample.
- `diverse`: covers the text space. Prompts become TF-IDF vectors (word 1–2-grams; terms in
  over 90% of prompts, such as a shared few-shot prefix, dropped), reduced by truncated SVD
  (dim = 2k, between 8 and 64) and L2-normalised, then clustered by k-means with k = sample
  size. Methods:
  - `stratified` (default): random draws inside each cluster in proportion to its size
    (largest remainders). The sample keeps the batch's mix of prompt types (unbiased rates)
    and no large group is missed. Measured (benchmarks/bench_sampling.py, Brier score of
    base-rate, kNN and logistic predictors, 1–5% labels): better than random in every
    dataset × size × predictor cell on overruling and logparsing.
  - `kmeans`: the prompt nearest each centre — one per cluster. Best on overruling (about
    half the labels of random for kNN), but on logparsing, where a few log templates make up
    most lines, it over-samples rare templates and is worse than random.
  - `farthest`: greedy farthest-point traversal (max coverage, but it favours outliers).

Sizes: a fraction (`0.01`, `"1%"`) or a count (`20`, `"20"`); at least one query.
"""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np

from optllm.errors import OptLLMError

Strategy = Literal["random", "diverse"]
STRATEGIES = ("random", "diverse")
METHODS = ("kmeans", "stratified", "farthest")


def parse_size(size: str | float | int, n: int, option: str = "--size") -> int:
    """Number of queries for `size` given as `"1%"`, a fraction below 1, or a count."""
    text = str(size).strip()
    try:
        if text.endswith("%"):
            frac = float(text[:-1]) / 100.0
            if not 0 < frac <= 1:
                raise ValueError
            k = int(round(frac * n))
        else:
            v = float(text)
            if v <= 0:
                raise ValueError
            if v < 1:
                k = int(round(v * n))
            elif v.is_integer():
                k = int(v)
            else:
                raise ValueError
    except ValueError:
        raise OptLLMError(
            f"{option} {size!r}: give a percentage (1%), a fraction below 1 (0.01) or a whole count (20)"
        ) from None
    k = max(k, 1)
    if k > n:
        raise OptLLMError(f"{option} {size!r}: asks for {k} queries but there are only {n}")
    return k


def text_features(texts: Sequence[str], dim: int = 64, seed: int = 0, max_features: int = 50_000) -> np.ndarray:
    """Dense, L2-normalised TF-IDF/SVD features of `texts`, shape (n, ≤ dim)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize

    docs = ["" if t is None else str(t) for t in texts]
    n = len(docs)
    if n == 0:
        return np.zeros((0, 0))
    # terms in more than 90% of prompts (a shared instruction or few-shot prefix) carry no
    # information about which prompts differ, so they are dropped
    vec = TfidfVectorizer(sublinear_tf=True, max_df=0.9 if n >= 10 else 1.0, max_features=max_features,
                          ngram_range=(1, 2), token_pattern=r"(?u)\b\w+\b", dtype=np.float32)
    try:
        X = vec.fit_transform(docs)
    except ValueError:  # empty vocabulary (all texts empty or identical)
        return np.zeros((n, 1))
    k = min(dim, X.shape[1] - 1, n - 1)
    if k >= 2:
        X = TruncatedSVD(n_components=k, random_state=seed, algorithm="randomized").fit_transform(X)
    else:
        X = X.toarray()
    return normalize(np.asarray(X, dtype=np.float64))


def _kmeans_pick(X: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans, MiniBatchKMeans

    n = X.shape[0]
    if k >= n:
        return np.arange(n)
    if n > 20_000:
        km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096)
    else:
        km = KMeans(n_clusters=k, random_state=seed, n_init=1)
    labels = km.fit_predict(X)
    centres = km.cluster_centers_
    d = ((X - centres[labels]) ** 2).sum(axis=1)
    chosen: list[int] = []
    taken = np.zeros(n, dtype=bool)
    for c in range(k):
        members = np.flatnonzero(labels == c)
        if members.size:
            j = members[np.argmin(d[members])]
            chosen.append(int(j))
            taken[j] = True
    # empty clusters or duplicates: fill with the points farthest from the chosen set
    if len(chosen) < k:
        rest = _farthest_pick(X, k, seed, start=np.array(chosen, dtype=np.int64))
        chosen = list(dict.fromkeys(chosen + rest.tolist()))[:k]
    return np.asarray(chosen, dtype=np.int64)


def _kmeans_labels(X: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if X.shape[0] > 20_000:
        km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096)
    else:
        km = KMeans(n_clusters=k, random_state=seed, n_init=1)
    return km.fit_predict(X)


def _stratified_pick(X: np.ndarray, k: int, seed: int) -> np.ndarray:
    n = X.shape[0]
    if k >= n:
        return np.arange(n)
    labels = _kmeans_labels(X, k, seed)
    sizes = np.bincount(labels, minlength=k).astype(np.float64)
    quota = sizes * k / n
    take = np.floor(quota).astype(np.int64)
    rng = np.random.default_rng(seed)
    short = k - int(take.sum())
    if short > 0:  # largest remainders, ties broken at random
        rem = quota - take + rng.random(k) * 1e-9
        take[np.argsort(-rem)[:short]] += 1
    chosen: list[int] = []
    for c in np.flatnonzero(take):
        members = np.flatnonzero(labels == c)
        chosen.extend(rng.choice(members, size=min(int(take[c]), members.size), replace=False).tolist())
    return np.asarray(chosen, dtype=np.int64)


def _farthest_pick(X: np.ndarray, k: int, seed: int, start: np.ndarray | None = None) -> np.ndarray:
    n = X.shape[0]
    rng = np.random.default_rng(seed)
    if start is None or start.size == 0:
        centre = X.mean(axis=0)
        first = int(np.argmin(((X - centre) ** 2).sum(axis=1) + rng.random(n) * 1e-12))
        chosen = [first]
    else:
        chosen = [int(x) for x in start]
    dist = np.full(n, np.inf)
    for j in chosen:
        dist = np.minimum(dist, ((X - X[j]) ** 2).sum(axis=1))
    while len(chosen) < k:
        dist[chosen] = -1.0
        j = int(np.argmax(dist))
        if dist[j] < 0:
            break
        chosen.append(j)
        dist = np.minimum(dist, ((X - X[j]) ** 2).sum(axis=1))
    return np.asarray(chosen, dtype=np.int64)


def choose_sample(
    texts: Sequence[str],
    size: str | float | int,
    strategy: str = "random",
    seed: int = 0,
    method: str = "stratified",
    features: np.ndarray | None = None,
) -> np.ndarray:
    """Sorted row indices of the queries to label.

    `features` (n, d) may be given to reuse an embedding (e.g. sentence vectors); otherwise
    `text_features(texts)` is used for `diverse`."""
    n = len(texts) if features is None else features.shape[0]
    if n == 0:
        raise OptLLMError("no prompts to sample from")
    k = parse_size(size, n)
    if strategy not in STRATEGIES:
        raise OptLLMError(f"unknown sampling strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    if strategy == "random" or k >= n:
        return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))
    if method not in METHODS:
        raise OptLLMError(f"unknown diverse method {method!r}; use one of {', '.join(METHODS)}")
    # beyond ~2k directions the SVD keeps mostly noise, which a k-point cover would chase
    dim = int(min(64, max(8, 2 * k)))
    X = text_features(texts, dim=dim, seed=seed) if features is None else np.asarray(features, dtype=np.float64)
    pick = {"kmeans": _kmeans_pick, "stratified": _stratified_pick, "farthest": _farthest_pick}[method](X, k, seed)
    return np.sort(pick)
