"""What the predictors should learn: the shared (IRT) model finds a difficulty signal, the
selector falls back to the base rate where the text is noise, kNN/base-rate priors."""
from __future__ import annotations

import numpy as np

from optllm.data import synthetic
from optllm.predict import KNN, BaseRate, Logistic, Selector, SharedIRT, brier


def _parts(n_train: int, m: int = 8, seed: int = 0):
    data = synthetic(n=1200, m=m, seed=seed, texts=True)
    rng = np.random.default_rng(seed)
    idx = rng.permutation(data.n)
    tr, va, te = idx[:n_train], idx[n_train:2 * n_train], idx[2 * n_train:]
    T = np.asarray(data.texts, dtype=object)
    return data, (list(T[tr]), data.correct[tr]), (list(T[va]), data.correct[va]), (list(T[te]), data.correct[te])


def test_irt_beats_base_rate_with_a_difficulty_signal():
    wins = []
    for seed in range(3):
        _, (Xtr, Ytr), _, (Xte, Yte) = _parts(24, seed=seed)
        base = brier(Yte, BaseRate().fit(Xtr, Ytr).predict(Xte).mean)
        irt = brier(Yte, SharedIRT(seed=seed).fit(Xtr, Ytr).predict(Xte).mean)
        wins.append(base - irt)
    assert min(wins) > 0.005, wins


def test_irt_shares_information_across_models():
    # one label per query, each query labelled for a single model: a per-model classifier sees
    # 1/m of the data, the shared model pools it
    gains_irt, gains_lr = [], []
    for seed in range(3):
        _, (Xtr, Ytr), _, (Xte, Yte) = _parts(120, seed=seed)
        rng = np.random.default_rng(seed)
        keep = rng.integers(0, Ytr.shape[1], Ytr.shape[0])
        Ym = np.full_like(Ytr, np.nan)
        Ym[np.arange(len(keep)), keep] = Ytr[np.arange(len(keep)), keep]
        base = brier(Yte, BaseRate().fit(Xtr, Ym).predict(Xte).mean)
        gains_irt.append(base - brier(Yte, SharedIRT(seed=seed).fit(Xtr, Ym).predict(Xte).mean))
        gains_lr.append(base - brier(Yte, Logistic(seed=seed).fit(Xtr, Ym).predict(Xte).mean))
    assert np.mean(gains_irt) > np.mean(gains_lr) and np.mean(gains_irt) > 0


def test_selector_falls_back_to_base_rate_on_noise_texts():
    data = synthetic(n=1500, m=6, seed=5)
    rng = np.random.default_rng(5)
    words = np.array("lorem ipsum dolor sit amet consectetur adipiscing elit sed do".split())
    noise = [" ".join(words[rng.integers(0, len(words), 8)]) for _ in range(data.n)]
    diffs = []
    for seed in range(3):
        idx = np.random.default_rng(seed).permutation(data.n)
        tr, va, te = idx[:30], idx[30:60], idx[60:]
        T = np.asarray(noise, dtype=object)
        Y = data.correct
        # the selector refits on train + validation, so compare with the base rate on both
        base_all = BaseRate().fit(list(T[np.r_[tr, va]]), Y[np.r_[tr, va]])
        sel = Selector(seed=seed).fit(list(T[tr]), Y[tr], list(T[va]), Y[va])
        b_sel = brier(Y[te], sel.predict(list(T[te])).mean)
        b_base = brier(Y[te], base_all.predict(list(T[te])).mean)
        diffs.append(b_sel - b_base)
        assert sel.weights_["base"] > 0.2
    assert np.mean(diffs) < 0.003, diffs


def test_selector_uses_text_when_it_helps():
    _, (Xtr, Ytr), (Xva, Yva), (Xte, Yte) = _parts(40, seed=1)
    sel = Selector(seed=1).fit(Xtr, Ytr, Xva, Yva)
    base_all = BaseRate().fit(Xtr + Xva, np.vstack([Ytr, Yva]))
    assert sel.weights_["base"] < 0.9
    assert brier(Yte, sel.predict(Xte).mean) < brier(Yte, base_all.predict(Xte).mean) - 0.005


def test_selector_without_validation_uses_cross_validation():
    _, (Xtr, Ytr), _, (Xte, _) = _parts(20, seed=2)
    sel = Selector(candidates=("knn", "logistic"), mode="select", seed=2).fit(Xtr, Ytr)
    assert sum(w > 0 for w in sel.weights_.values()) == 1
    assert set(sel.weights_) == {"base", "knn", "logistic"}
    assert sel.predict(Xte).mean.shape == (len(Xte), Ytr.shape[1])


def test_base_rate_beta_posterior():
    Y = np.array([[1, 0], [1, 0], [1, np.nan], [1, 0]], dtype=float)
    p = BaseRate(prior_strength=2.0).fit(np.zeros((4, 1)), Y)
    pooled = (4 + 1) / (7 + 2)
    a1, b1 = 4 + 2 * pooled, 0 + 2 * (1 - pooled)
    assert np.isclose(p.rate_[0], a1 / (a1 + b1))
    assert np.isclose(p.rate_[1], (0 + 2 * pooled) / (3 + 2))
    pred = p.predict(np.zeros((3, 1)))
    assert np.allclose(pred.mean, pred.mean[0]) and (pred.std > 0).all()


def test_knn_is_the_prior_far_from_every_training_query():
    Xtr = ["disk failure node", "disk failure rack", "user login ok"]
    Y = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    p = KNN(k=2, prior_strength=1.0).fit(Xtr, Y)
    far = p.predict(["zzzz qqqq"]).mean[0]
    assert np.allclose(far, p.rate_)
    near = p.predict(["disk failure node"]).mean[0]
    assert near[0] > far[0] and near[1] < far[1]


def test_logistic_evidence_picks_a_grid_value_per_model():
    _, (Xtr, Ytr), _, _ = _parts(40, seed=3)
    p = Logistic().fit(Xtr, Ytr)
    assert set(np.unique(p.C_)) <= set(p.C_grid)
    assert p.C_.shape == (Ytr.shape[1],)
