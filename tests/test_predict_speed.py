"""The selector's shortcuts change its cost, not its result: one tokenisation pass, one Gram
matrix and eigen-decomposition shared by the kernel candidates, warm-started refits,
preconditioned solvers and half-work Hessians all give what the plain computation gives."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.sparse as sp

from optllm.data import synthetic
from optllm.predict import Logistic, Selector, SharedIRT, make_featurizer
from optllm.predict.base import bernoulli_nll_grad, sigmoid, weighted_grams
from optllm.predict.features import fit_transform
from optllm.predict.kernel import KernelMap, SharedKernel


def _texts(n: int = 300, m: int = 6, seed: int = 0):
    data = synthetic(n=n, m=m, seed=seed, texts=True)
    return list(np.asarray(data.texts, dtype=object)), data.correct


def _dense(A):
    return A.toarray() if sp.issparse(A) else np.asarray(A)


@pytest.mark.parametrize("spec", ["tfidf", "lexical", "tfidf+lexical"])
def test_fit_transform_equals_fit_then_transform(spec):
    X, _ = _texts()
    a = make_featurizer(spec).fit(X)
    b = make_featurizer(spec)
    Fb = fit_transform(b, X)
    np.testing.assert_allclose(_dense(Fb), _dense(a.transform(X)), atol=1e-12)
    # the fitted featurisers are the same too
    np.testing.assert_allclose(_dense(b.transform(X[:20])), _dense(a.transform(X[:20])), atol=1e-12)


def test_weighted_grams_and_bernoulli_helpers():
    rng = np.random.default_rng(0)
    X, W, r = rng.normal(size=(200, 30)), rng.random((200, 4)), rng.random((30, 4)) + 0.1
    L = weighted_grams(X, W, r)
    H = np.stack([(X * W[:, k, None]).T @ X + np.diag(r[:, k]) for k in range(4)])
    np.testing.assert_allclose(L, np.linalg.cholesky(H), atol=1e-10)
    assert weighted_grams(np.zeros((5, 0)), W[:5], r[:0]).shape == (4, 0, 0)
    np.testing.assert_allclose(weighted_grams(np.zeros((0, 30)), W[:0], r)[1], np.diag(np.sqrt(r[:, 1])))
    Z = rng.normal(size=(200, 4)) * 30  # large logits: no overflow
    Y = (rng.random((200, 4)) < 0.5).astype(float)
    mask = (rng.random((200, 4)) < 0.8).astype(float)
    f, R = bernoulli_nll_grad(Z, Y, mask)
    assert np.isclose(f, float((mask * (np.logaddexp(0.0, Z) - Y * Z)).sum()))
    np.testing.assert_allclose(R, mask * (sigmoid(Z) - Y), atol=1e-15)


def test_shared_kernel_blocks_match_their_own_kernel_maps():
    X, _ = _texts(120)
    F = make_featurizer("tfidf").fit_transform(X)
    shared = SharedKernel.of(F)
    tr = shared.block(70)
    km, Phi = tr.kernel_map(0.0, 1e-8, 256)
    own = KernelMap(0.0)
    Phi_own = own.fit(F[:70])
    np.testing.assert_allclose(Phi @ Phi.T, Phi_own @ Phi_own.T, atol=1e-10)
    np.testing.assert_allclose(km.transform(None, cos=tr.cross_rows(70, 120)) @ Phi.T,
                               own.transform(F[70:]) @ Phi_own.T, atol=1e-10)
    assert tr.kernel_map(0.0, 1e-8, 256)[0] is km  # computed once


@pytest.mark.parametrize("cls", [Logistic, SharedIRT])
def test_warm_started_refit_reaches_the_cold_fit(cls):
    X, Y = _texts(400)
    F = make_featurizer("tfidf").fit_transform(X)
    cold = cls(featurizer=None, seed=0).fit(F[:160], Y[:160])
    params = cold.frozen_params()
    ref = cls(featurizer=None, seed=0, **params).fit(F[:320], Y[:320])
    warm = cls(featurizer=None, seed=0, **params)
    shared = SharedKernel.of(F[:320])
    warm._shared_kernel = shared
    warm._warm_start = (cold, shared.cos[:, :160])
    warm.fit(F[:320], Y[:320])
    assert "_warm_start" not in warm.__dict__ and "_shared_kernel" not in warm.__dict__
    a, b = ref.predict(F[320:]), warm.predict(F[320:])
    assert np.abs(a.mean - b.mean).max() < 5e-3
    assert np.abs(a.mean - b.mean).mean() < 5e-4
    np.testing.assert_allclose(warm.predict_mean(F[320:]), b.mean, atol=1e-12)


def test_preconditioned_logistic_is_at_the_optimum():
    X, Y = _texts(300)
    F = make_featurizer("tfidf").fit_transform(X)
    p = Logistic(featurizer=None, C=4.0).fit(F, Y)
    Phi = p.kmap_.transform(F)
    Xd = np.hstack([Phi, np.ones((F.shape[0], 1))])
    R = sigmoid(p.offset_ + Xd @ p.theta_) - Y
    prec = np.r_[np.full(Phi.shape[1], 1 / 4.0), 1 / p.intercept_var]
    g = Xd.T @ R + prec[:, None] * p.theta_
    assert np.abs(g).max() < 1e-2  # the MAP's gradient vanishes


def test_selector_leaves_no_hints_and_matches_itself_without_sharing(monkeypatch):
    X, Y = _texts(500, seed=1)
    Xtr, Ytr, Xva, Yva, Xte = X[:60], Y[:60], X[60:120], Y[60:120], X[120:]
    cands = ("base", "logistic", "irt")
    s = Selector(candidates=cands, seed=0).fit(Xtr, Ytr, Xva, Yva)
    assert any(w > 0 for n, w in s.weights_.items() if n != "base")
    for _, c in s.fitted_cands_:
        assert "_shared_kernel" not in c.__dict__ and "_warm_start" not in c.__dict__
    pickle.loads(pickle.dumps(s)).predict(Xte[:5])
    # the same selector with every kernel computed by its own candidate, refits started cold
    monkeypatch.setattr(Selector, "_on_shared", lambda self, c: False)
    plain = Selector(candidates=cands, seed=0).fit(Xtr, Ytr, Xva, Yva)
    np.testing.assert_allclose(list(s.weights_.values()), list(plain.weights_.values()), atol=1e-3)
    a, b = s.predict(Xte), plain.predict(Xte)
    assert np.abs(a.mean - b.mean).max() < 5e-3 and np.abs(a.mean - b.mean).mean() < 5e-4
