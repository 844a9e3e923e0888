"""What a plan folder keeps of its fit, so that `optllm serve --from PLAN_DIR` routes new
prompts exactly as the plan was made: the fitted predictor (featuriser inside; the
`optllm.predict.persist` format, joblib) and the output-length model its costs rest on
(`output_tokens.json`, plain JSON).

`predictor.joblib` is a pickle: load only folders you wrote yourself or trust.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optllm.cost import OutputTokens
from optllm.errors import OptLLMError

PREDICTOR_FILE = "predictor.joblib"
OUTPUT_TOKENS_FILE = "output_tokens.json"
FITTED_FILES = (PREDICTOR_FILE, OUTPUT_TOKENS_FILE)

_ARRAYS = ("median", "mean", "std", "upper", "cap", "n_samples")
_OPTIONAL = ("slope", "intercept", "resid_upper")


@dataclass(frozen=True)
class Fitted:
    """A fitted predictor and, when known, the output-length model of the same fit."""

    predictor: Any
    output_tokens: OutputTokens | None
    source: str

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self.predictor.models_)


def output_tokens_dict(ot: OutputTokens) -> dict[str, Any]:
    d: dict[str, Any] = {"models": list(ot.models), "quantile": float(ot.quantile), "source": list(ot.source)}
    for k in _ARRAYS + _OPTIONAL:
        v = getattr(ot, k)
        d[k] = None if v is None else [float(x) for x in np.asarray(v, dtype=np.float64)]
    return d


def output_tokens_from(d: Any, where: str) -> OutputTokens:
    try:
        models = tuple(str(x) for x in d["models"])
        m = len(models)
        arrays = {}
        for k in _ARRAYS + _OPTIONAL:
            v = d.get(k)
            if v is None and k in _OPTIONAL:
                arrays[k] = None
                continue
            a = np.asarray(v, dtype=np.float64)
            if a.shape != (m,) or not np.isfinite(a).all():
                raise ValueError(f"{k} must be {m} finite numbers")
            arrays[k] = a
        return OutputTokens(models=models, quantile=float(d["quantile"]), source=tuple(str(x) for x in d["source"]),
                            **arrays)
    except (KeyError, TypeError, ValueError) as e:
        raise OptLLMError(f"{where}: not an output-length model written by `optllm plan` ({e})") from None


def write_fitted(folder: str | Path, predictor: Any, output_tokens: OutputTokens | None) -> list[str]:
    """Write the fitted predictor (and the output-length model) into `folder` → the file names."""
    from optllm.io import write_json
    from optllm.predict.persist import save_predictor

    d = Path(folder)
    save_predictor(predictor, d / PREDICTOR_FILE)
    files = [PREDICTOR_FILE]
    if output_tokens is not None:
        write_json(d / OUTPUT_TOKENS_FILE, output_tokens_dict(output_tokens))
        files.append(OUTPUT_TOKENS_FILE)
    return files


def read_fitted(path: str | Path) -> Fitted:
    """A plan folder's fit, or a predictor file written by `save_predictor` (then without an
    output-length model). Errors name the path and say what to run."""
    from optllm.predict.persist import load_predictor

    p = Path(path)
    if p.is_dir():
        f = p / PREDICTOR_FILE
        if not f.is_file():
            raise OptLLMError(f"{p}: no {PREDICTOR_FILE} in this folder; write the plan again with this optllm "
                              f"(`optllm plan ... --out {p}`), or pass a predictor file saved with save_predictor")
        pred = load_predictor(f)
        ot_path = p / OUTPUT_TOKENS_FILE
        ot = None
        if ot_path.is_file():
            try:
                raw = json.loads(ot_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise OptLLMError(f"{ot_path}: not valid JSON ({type(e).__name__})") from None
            ot = output_tokens_from(raw, str(ot_path))
            if tuple(ot.models) != tuple(pred.models_):
                raise OptLLMError(f"{ot_path}: models {list(ot.models)} differ from the predictor's "
                                  f"{list(pred.models_)}")
        return Fitted(pred, ot, str(p))
    if not p.exists():
        raise OptLLMError(f"{p}: not found (give a plan folder written by `optllm plan` or a saved predictor file)")
    return Fitted(load_predictor(p), None, str(p))
