"""Atomic output: every file is written to a temporary sibling and renamed into place,
so a crash never leaves half a plan."""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, IO

import numpy as np


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kw: Any) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; it replaces `path` only when the block succeeds."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kw) as fh:
            yield fh


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def clean_json(obj: Any) -> Any:
    """Replace NaN/inf floats by None recursively so the JSON is strict."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean_json(obj.tolist())
    if isinstance(obj, np.floating):
        return clean_json(float(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def dumps_json(obj: Any) -> str:
    """Strict JSON text (NaN → null) for machines."""
    return json.dumps(clean_json(obj), indent=2, default=_json_default)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write `obj` as strict JSON, atomically."""
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(dumps_json(obj))
        fh.write("\n")


def write_with(path: str | os.PathLike[str], writer: Callable[[Path], None]) -> None:
    """Call `writer(tmp_path)` (e.g. `df.to_csv`, `fig.savefig`) and move the result into place."""
    with atomic_path(path) as tmp:
        writer(tmp)


def foreign_files(path: str | os.PathLike[str], names: Iterable[str]) -> list[str]:
    """Files in folder `path` that are not among `names` (what an output folder of ours may
    hold); sub-folders and our hidden temporaries are not counted."""
    target, own = Path(path), set(names)
    if not target.is_dir():
        return []
    return sorted(e.name for e in target.iterdir()
                  if not e.is_dir() and e.name not in own and not e.name.endswith((".tmp", ".old")))


@contextmanager
def atomic_dir(path: str | os.PathLike[str], names: Iterable[str]) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path` whole, so readers
    see the old outputs or the new ones, never a mix. `names` are the files an output folder
    of ours holds: a folder at `path` holding any other file is refused (never deleted), and
    its sub-folders are carried over. On failure `path` is left as it was."""
    import shutil

    target = Path(path)
    check_out_dir(target, names, option="")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        old = None
        if target.exists():
            for sub in target.iterdir():
                if sub.is_dir() and not (tmp / sub.name).exists():
                    os.replace(sub, tmp / sub.name)
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, old / "x")
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def check_out_dir(path: str | os.PathLike[str], names: Iterable[str], option: str = "--out") -> None:
    """Fail before any long work when the output folder cannot be written, or holds files
    that are not ours (`names`), which writing it would replace."""
    from optllm.errors import OptLLMError

    target = Path(path)
    where = f"{option} {target}".strip()
    if target.exists() and not target.is_dir():
        raise OptLLMError(f"{where}: exists and is not a folder")
    other = foreign_files(target, names)
    if other:
        raise OptLLMError(f"{where}: holds files optllm did not write ({', '.join(other[:3])}); "
                          "give a new or empty folder")
    parent = target.parent  # the folder is written beside itself, then renamed into place
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise OptLLMError(f"{where}: {parent} is not writable")
