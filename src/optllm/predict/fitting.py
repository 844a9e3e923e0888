"""Fit a predictor by name on a part of the data and predict another (`fit_predict`), and the
predictor input of a part of the data (`inputs_of`)."""
from __future__ import annotations

from typing import Any

import numpy as np

from optllm.data import Outcomes


def inputs_of(data: Outcomes, stream: bool = False) -> Any:
    """The predictor input for a part of the data: its texts, or one constant feature when the
    data has no texts (every predictor then reduces to the base rate).

    Texts left in their Parquet file (`optllm.data.texts.DiskTexts`) are read into memory,
    unless `stream`: then the `DiskTexts` itself, for `predict_in_chunks` to read a chunk at
    a time (the queries to assign; a fit needs its texts in memory)."""
    from optllm.data.texts import DiskTexts, text_list

    if data.texts is not None:
        if stream and isinstance(data.texts, DiskTexts):
            return data.texts
        return text_list(data.texts)
    return np.zeros((data.n, 1))


def fit_predict(name: str, train: Outcomes, val: Outcomes | None, test: Outcomes, seed: int = 0,
                **params: Any) -> tuple[np.ndarray, np.ndarray]:
    """Fit predictor `name` on `train` (with `val` as its validation sample) and predict
    `test` → (mean, std), each (n_test, m)."""
    from optllm.predict import make_predictor

    p = make_predictor(name, seed=seed, **params)
    has_val = val is not None and val.n > 0
    p.fit(inputs_of(train), train.correct, inputs_of(val) if has_val else None,
          val.correct if has_val else None, models=train.models)
    pred = p.predict(inputs_of(test))
    return pred.mean, pred.std
