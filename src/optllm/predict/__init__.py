"""Predict P(model k answers query i correctly) with uncertainty.

Featurisers (`TfidfFeaturizer`, `LexicalFeaturizer`, `EmbeddingFeaturizer`) turn texts into
features, fitted on the training texts only. Predictors are sklearn-like:
`fit(texts_or_features, Y, X_val=None, Y_val=None, models=None)` with Y (n, m) in [0, 1]
(NaN = not observed) and `predict(texts_or_features) -> Prediction(mean, std, models)`.
`make_predictor(name)` builds one by name (`PREDICTORS`); `save_predictor`/`load_predictor`
persist a fitted one, featuriser included. (Comparing predictors end to end, through the
optimiser, is `optllm.evaluate.predictors.evaluate_predictors`.)
"""
from __future__ import annotations

from typing import Any

from optllm.errors import OptLLMError
from optllm.predict.base import Prediction, Predictor
from optllm.predict.features import (
    FEATURIZERS, EmbeddingFeaturizer, LexicalFeaturizer, TfidfFeaturizer, UnionFeaturizer, make_featurizer,
)
from optllm.predict.fitting import fit_predict, inputs_of
from optllm.predict.forest import BootstrapForest, FastForest
from optllm.predict.irt import SharedIRT
from optllm.predict.metrics import auc, brier, ece, log_loss, mean_auc, scores
from optllm.predict.models import KNN, BaseRate, Logistic
from optllm.predict.persist import load_predictor, save_predictor
from optllm.predict.select import Selector

PREDICTORS: dict[str, type] = {
    "base": BaseRate,
    "knn": KNN,
    "logistic": Logistic,
    "irt": SharedIRT,
    "forest": FastForest,
    "bootstrap_forest": BootstrapForest,
    "selector": Selector,
}
DEFAULT_PREDICTOR = "selector"
ALIASES = {"default": DEFAULT_PREDICTOR, "bootstrap": "bootstrap_forest", "paper": "bootstrap_forest",
           "fast_forest": "forest", "base_rate": "base", "stack": "selector"}

_UNSET: Any = object()


def make_predictor(name: str = DEFAULT_PREDICTOR, seed: int = 0, featurizer: Any = _UNSET, **params: Any) -> Predictor:
    """A fresh predictor by name; `name@featuriser` picks its features (e.g. `knn@embed`)."""
    base, _, feat = str(name).partition("@")
    base = base.strip().lower().replace("-", "_")
    base = ALIASES.get(base, base)
    if base not in PREDICTORS:
        raise OptLLMError(f"unknown predictor {name!r}; known: {', '.join(PREDICTORS)}")
    if feat:
        featurizer = feat
    kw = dict(params, seed=seed)
    if featurizer is not _UNSET:
        kw["featurizer"] = featurizer
    return PREDICTORS[base](**kw)


__all__ = [
    "Prediction", "Predictor", "BaseRate", "KNN", "Logistic", "SharedIRT", "FastForest", "BootstrapForest",
    "Selector", "TfidfFeaturizer", "LexicalFeaturizer", "EmbeddingFeaturizer", "UnionFeaturizer",
    "make_featurizer", "make_predictor", "save_predictor", "load_predictor", "PREDICTORS", "FEATURIZERS",
    "DEFAULT_PREDICTOR", "fit_predict", "inputs_of", "brier", "log_loss", "auc", "mean_auc", "ece", "scores",
]
