"""Where the real datasets live: OPTLLM_DATA_DIR, else ../shared/datasets beside the repo
root, else ~/.cache/optllm."""
from __future__ import annotations

import os
from pathlib import Path

from optllm.errors import OptLLMError

_REPO_ROOT = Path(__file__).resolve().parents[3]


def candidate_dirs() -> list[Path]:
    """The places searched, in order."""
    env = os.environ.get("OPTLLM_DATA_DIR")
    if env:
        return [Path(env).expanduser()]
    return [(_REPO_ROOT / ".." / "shared" / "datasets").resolve(), Path.home() / ".cache" / "optllm"]


def data_dir(required: bool = True) -> Path | None:
    """The first existing data folder; a clear error (or None) when there is none."""
    for d in candidate_dirs():
        if d.is_dir():
            return d
    if required:
        tried = ", ".join(str(d) for d in candidate_dirs())
        raise OptLLMError(f"data folder not found (tried {tried}); set OPTLLM_DATA_DIR")
    return None
