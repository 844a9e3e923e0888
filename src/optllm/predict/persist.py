"""Save a fitted predictor (featuriser and model names included) to one file, and load it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from optllm.errors import OptLLMError

FORMAT = "optllm-predictor"
VERSION = 1


def save_predictor(predictor: Any, path: str | os.PathLike[str]) -> Path:
    """Write a fitted predictor with joblib (compressed), atomically. Returns the path."""
    import joblib

    from optllm.io import write_with

    if not getattr(predictor, "fitted_", False):
        raise OptLLMError("save_predictor: the predictor is not fitted")
    import sklearn

    payload = {
        "format": FORMAT,
        "version": VERSION,
        "class": type(predictor).__name__,
        "models": list(predictor.models_),
        "sklearn": sklearn.__version__,
        "predictor": predictor,
    }
    write_with(path, lambda tmp: joblib.dump(payload, tmp, compress=3))
    return Path(path)


def load_predictor(path: str | os.PathLike[str]) -> Any:
    """Read a predictor written by `save_predictor`. Only load files you trust (pickle)."""
    import joblib

    p = Path(path)
    if not p.exists():
        raise OptLLMError(f"{p}: file not found")
    try:
        payload = joblib.load(p)
    except Exception as e:  # corrupt or not a joblib file
        raise OptLLMError(f"{p}: not a saved optllm predictor ({type(e).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise OptLLMError(f"{p}: not a saved optllm predictor")
    if payload.get("version", 0) > VERSION:
        raise OptLLMError(f"{p}: saved by a newer optllm (format version {payload['version']})")
    return payload["predictor"]
