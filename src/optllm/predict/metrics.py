"""Scores of probabilistic predictions against 0/1 (or graded) labels; NaN labels are skipped."""
from __future__ import annotations

import numpy as np


def _flat(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and predictions {p.shape} differ in shape")
    ok = ~np.isnan(y)
    return y[ok], p[ok]


def brier(y: np.ndarray, p: np.ndarray) -> float:
    """Mean squared error of the probabilities over all observed cells."""
    y, p = _flat(y, p)
    return float(np.mean((p - y) ** 2)) if y.size else float("nan")


def log_loss(y: np.ndarray, p: np.ndarray, eps: float = 1e-6) -> float:
    """Mean negative log-likelihood (natural log), probabilities clipped to [eps, 1 − eps]."""
    y, p = _flat(y, p)
    if not y.size:
        return float("nan")
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC AUC of scores s for binary labels y (ties count one half); NaN with one class."""
    y, s = _flat(y, s)
    y = y >= 0.5
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return float("nan")
    from scipy.stats import rankdata

    r = rankdata(s)
    return float((r[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def mean_auc(Y: np.ndarray, P: np.ndarray) -> float:
    """Mean over models (columns) of the per-model AUC, skipping models with one class."""
    vals = [auc(Y[:, k], P[:, k]) for k in range(Y.shape[1])]
    vals = [v for v in vals if np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: |mean label − mean probability| per equal-width probability
    bin, weighted by the bin's share of cells."""
    y, p = _flat(y, p)
    if not y.size:
        return float("nan")
    b = np.minimum((p * bins).astype(int), bins - 1)
    cnt = np.bincount(b, minlength=bins)
    sy = np.bincount(b, weights=y, minlength=bins)
    sp_ = np.bincount(b, weights=p, minlength=bins)
    return float(np.abs(sy - sp_).sum() / y.size)


def scores(Y: np.ndarray, P: np.ndarray) -> dict[str, float]:
    """Brier, log loss, mean per-model AUC and ECE in one dict."""
    return {"brier": brier(Y, P), "log_loss": log_loss(Y, P), "auc": mean_auc(Y, P), "ece": ece(Y, P)}
