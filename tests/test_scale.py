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
