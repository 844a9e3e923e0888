"""Streaming pieces of the pipeline (issue 17): the kernel's sparse x dense fast path gives
the numbers of the plain product, and chunked prediction gives those of one call."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.sparse as sp

from optllm.data import load
from optllm.planning.core import predict_in_chunks
from optllm.predict import inputs_of, make_predictor
from optllm.predict.features import TfidfFeaturizer, fit_transform
from optllm.predict.kernel import KernelMap


@pytest.fixture(scope="module")
def feats():  # type: ignore[no-untyped-def]
    d = load("synthetic:2000x4")
    f = TfidfFeaturizer()
    F = fit_transform(f, [str(t) for t in d.texts[:150]])
    G = f.transform([str(t) for t in d.texts])
    return F, G


@pytest.mark.parametrize("gamma", [0.0, 0.7])
def test_kernel_fast_path_equals_the_plain_product(feats, gamma: float) -> None:  # type: ignore[no-untyped-def]
    F, G = feats
    assert sp.issparse(F) and sp.issparse(G)
    fast = KernelMap(gamma)
    fast.fit(F)
    slow = KernelMap(gamma)
    slow.fit(F)
    slow.__dict__["_dense"] = None  # no dense block: the sparse x sparse product
    np.testing.assert_allclose(fast.transform(G), slow.transform(G), rtol=0, atol=1e-10)
    np.testing.assert_allclose(fast.cross(G), slow.cross(G), rtol=0, atol=1e-12)
    assert fast.__dict__.get("_dense") is not None  # the fast path was taken
    again = pickle.loads(pickle.dumps(fast))  # caches are not pickled, and rebuilt
    assert "_dense" not in again.__dict__
    np.testing.assert_allclose(again.transform(G), slow.transform(G), rtol=0, atol=1e-10)
    # a row using words the training rows never use has cosine 0 with all of them
    empty = sp.csr_matrix((1, G.shape[1]))
    assert np.allclose(fast.cross(sp.vstack([G[:1], empty]).tocsr())[1], 0.0 if not gamma else np.exp(-gamma))


def test_predicting_in_chunks_gives_the_same_numbers() -> None:
    d = load("synthetic:3000x4")
    tr = d.subset(np.arange(200))
    m = make_predictor("default", seed=0)
    m.fit(inputs_of(tr), tr.correct, None, None, models=tr.models)
    X = inputs_of(d)
    whole = m.predict(X)
    mean, std = predict_in_chunks(m, X, rows=700)
    np.testing.assert_allclose(mean, whole.mean, rtol=0, atol=1e-12)
    np.testing.assert_allclose(std, whole.std, rtol=0, atol=1e-12)
    assert mean.shape == (3000, 4)
    means_only, none = predict_in_chunks(m, X, rows=700, with_std=False)
    assert none is None
    np.testing.assert_allclose(means_only, whole.mean, rtol=0, atol=1e-12)


def test_nystroem_is_exact_up_to_its_landmarks_and_reproduces_a_low_rank_kernel() -> None:
    rng = np.random.default_rng(3)
    F = rng.normal(size=(300, 20)) @ rng.normal(size=(20, 60))  # rank 20: 100 landmarks span it
    new = rng.normal(size=(40, 20)) @ rng.normal(size=(20, 60))
    exact = KernelMap(max_rank=None)
    Phi_e = exact.fit(F)
    # up to `landmarks` rows the map is the exact one, number for number
    same = KernelMap(max_rank=None, landmarks=300)
    np.testing.assert_array_equal(same.fit(F), Phi_e)
    assert same.landmarks_ is None
    ny = KernelMap(max_rank=None, landmarks=100, seed=1)
    Phi = ny.fit(F)
    assert ny.F_.shape[0] == ny.landmarks_.size == 20  # the landmark rows only; rank 20 needs no more
    np.testing.assert_allclose(Phi @ Phi.T, Phi_e @ Phi_e.T, atol=1e-8)  # the same kernel among training rows
    np.testing.assert_allclose(ny.transform(new) @ Phi.T, exact.transform(new) @ Phi_e.T, atol=1e-8)
    # a warm start's coordinates: the θ with Φθ = z is found again
    theta = rng.normal(size=(Phi.shape[1], 3))
    np.testing.assert_allclose(ny.coordinates(Phi, Phi @ theta), theta, atol=1e-6)
    theta_e = rng.normal(size=(Phi_e.shape[1], 3))
    np.testing.assert_allclose(exact.coordinates(Phi_e, Phi_e @ theta_e), theta_e, atol=1e-6)


@pytest.mark.parametrize("name", ["logistic", "irt", "default"])
def test_kernel_predictors_past_their_landmarks_fit_nystroem_maps_and_stay_close(name: str) -> None:
    d = load("synthetic:2400x4")
    tr, va, te = d.subset(np.arange(600)), d.subset(np.arange(600, 900)), d.subset(np.arange(900, 2400))
    kw = {"landmarks": 200} if name != "default" else {}
    small = make_predictor(name, seed=0, **kw)
    if name == "default":  # the selector's kernel candidates with 200 landmarks
        from optllm.predict import Selector

        small = Selector(candidates=[make_predictor(c, seed=0, featurizer=None, landmarks=200) for c in ("logistic", "irt")])
    small.fit(inputs_of(tr), tr.correct, inputs_of(va), va.correct, models=tr.models)
    exact = make_predictor(name, seed=0, **({"landmarks": None} if name != "default" else {}))
    exact.fit(inputs_of(tr), tr.correct, inputs_of(va), va.correct, models=tr.models)
    kms = [c.kmap_ for _, c in small.fitted_cands_ if hasattr(c, "kmap_")] if name == "default" else [small.kmap_]
    assert kms and all(0 < k.F_.shape[0] <= 200 and k.landmarks_ is not None for k in kms)
    p = small.predict(inputs_of(te))
    assert np.all((p.mean >= 0) & (p.mean <= 1)) and np.all(np.isfinite(p.std))
    y = te.correct
    b_small, b_exact = np.mean((p.mean - y) ** 2), np.mean((exact.predict_mean(inputs_of(te)) - y) ** 2)
    base = np.mean((tr.correct.mean(axis=0) - y) ** 2)
    assert b_small < base  # it still learns from the text
    assert b_small <= b_exact + 0.01


def test_knn_takes_the_cosines_fast_path_with_the_same_numbers() -> None:
    from optllm.predict.base import dense_dot

    d = load("synthetic:1500x4")
    f = TfidfFeaturizer()
    F = fit_transform(f, [str(t) for t in d.texts[:500]])
    G = f.transform([str(t) for t in d.texts[500:]])
    knn = make_predictor("knn", featurizer=None).fit(F, d.correct[:500], models=d.models)
    fast = knn.predict(G)
    assert knn.rows_.__dict__.get("_dense") is not None  # the sparse x dense path was taken
    plain = pickle.loads(pickle.dumps(knn))
    assert "_dense" not in plain.rows_.__dict__  # caches are not pickled
    plain.rows_.DENSE_BLOCK_MAX_BYTES = 0  # force the sparse x sparse product
    slow = plain.predict(G)
    np.testing.assert_allclose(fast.mean, slow.mean, rtol=0, atol=1e-12)
    np.testing.assert_allclose(fast.std, slow.std, rtol=0, atol=1e-12)
    from optllm.predict.features import row_normalise

    np.testing.assert_allclose(knn.rows_.cosines(row_normalise(G)), dense_dot(row_normalise(G), knn.F_), atol=1e-12)


def test_the_cross_fit_thread_starts_after_the_predictors_imports() -> None:
    """Two threads importing scikit-learn for the first time at once can see it half
    initialised (CI once failed with "cannot import name 'clone' from partially initialized
    module 'sklearn.base'"): in a fresh interpreter, the modules the predictors import lazily
    are loaded before the cross-fit thread starts."""
    import subprocess
    import sys

    code = """
import sys
import optllm.planning.core as core
seen = []
real = core.Background
def spy(*a):
    seen.append(all(m in sys.modules for m in ("sklearn.base", "sklearn.ensemble", "sklearn.feature_extraction.text")))
    return real(*a)
core.Background = spy
from optllm.data import synthetic
from optllm.planning.core import PlanSettings, plan_queries
from optllm.selection import Goal
d = synthetic(n=400, m=3, seed=3, texts=True)
tr, va, te = d.subset(range(0, 40)), d.subset(range(40, 80)), d.subset(range(80, 400))
plan_queries(tr, va, [str(t) for t in te.texts], te.cost, Goal(), PlanSettings(folds=3))
print("imported before the thread:", seen)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "imported before the thread: [True]" in r.stdout, r.stdout + r.stderr[-2000:]
