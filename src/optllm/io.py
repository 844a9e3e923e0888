"""Outputs: checked before any long work, and written atomically.

`check_output_file` / `check_output_dir` are the one rule for "can this output be written"
(every command calls them on its output options before it loads or fits anything); a file
is written to a temporary sibling and renamed into place (`atomic_path`, `atomic_open`,
`write_json`, `write_with`), and an output folder is written all-or-nothing
(`atomic_dir`). Files get the mode a new file normally gets (0666 & ~umask), folders
0777 & ~umask; a file or folder that is replaced keeps its mode."""
from __future__ import annotations

import fnmatch
import json
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, IO

import numpy as np

from optllm.errors import OptLLMError

__all__ = ["WriteFailed", "atomic_dir", "atomic_open", "atomic_path", "check_output_dir", "check_output_file", "clean_json",
           "dumps_json", "foreign_files", "write_json", "write_with"]

class WriteFailed(OptLLMError):
    """An output could not be written (disk full, permissions changed meanwhile): nothing was
    changed. `reason` is the system's word for it."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


_UMASK: int | None = None
_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process umask. It can only be read by setting it, so it is read once (set to 0,
    restored at once, under a lock) and kept."""
    global _UMASK
    if _UMASK is None:
        with _UMASK_LOCK:
            if _UMASK is None:
                mask = os.umask(0)
                os.umask(mask)
                _UMASK = mask
    return _UMASK


def _mode_for(target: Path, new: int) -> int:
    """The permission bits for `target`: those of the file or folder it replaces, or `new`
    (0o666 for a file, 0o777 for a folder) less the umask."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        return new & ~_umask()


def _real(path: str | os.PathLike[str]) -> Path:
    """Where `path` is written: through a symbolic link (the link stays a link)."""
    p = Path(path)
    return Path(os.path.realpath(p)) if p.is_symlink() else p


def _make_parents(folder: Path) -> list[Path]:
    """mkdir -p `folder`; the folders it created, deepest first (to remove on failure)."""
    missing = []
    d = folder
    while not d.exists():
        missing.append(d)
        d = d.parent
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for d in folders:
        try:
            d.rmdir()
        except OSError:
            break


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path` (nothing
    changes on failure, and folders made for it are removed again). The file gets the normal
    mode of a new file (0666 & ~umask), or the mode of the file it replaces."""
    target = _real(path)
    created = _make_parents(target.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except BaseException:
        _remove_empty(created)
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    ok = False
    try:
        try:
            yield tmp_path
            os.chmod(tmp_path, _mode_for(target, 0o666))
            with open(tmp_path, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp_path, target)
        except OSError as e:
            reason = e.strerror or str(e)
            raise WriteFailed(f"{path}: could not be written ({reason}); it was left as it was", reason) from None
        ok = True
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
        if not ok:
            _remove_empty(created)


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


CSV_CHUNK = 1 << 18  # rows of a large table built and written at a time


def write_csv_chunks(path: str | os.PathLike[str], n: int, rows_of: Callable[[int, int], Any],
                     chunk: int = CSV_CHUNK) -> None:
    """Write an n-row CSV table atomically, `chunk` rows at a time: `rows_of(lo, hi)` gives
    rows lo..hi as a DataFrame (the same columns each time), so a plan of 10^7 queries never
    becomes one 10^7-row frame. The file equals `rows_of(0, n).to_csv(index=False)`."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        for lo in range(0, max(n, 1), chunk):
            rows_of(lo, min(n, lo + chunk)).to_csv(fh, index=False, header=lo == 0)


# ---------------------------------------------------------------------- checks before work
def _where(option: str, path: str | os.PathLike[str]) -> str:
    return f"{option} {path}".strip()


def _nearest_existing(p: Path) -> Path:
    while not (p.exists() or p.is_symlink()) and p != p.parent:
        p = p.parent
    return p


def _can_create_in(folder: Path, where: str) -> None:
    """`folder` (the nearest existing one) must be a folder we can create files in: asked of
    the permissions, then tried (a read-only file system or /proc says no only then)."""
    if not folder.is_dir():
        raise OptLLMError(f"{where}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OptLLMError(f"{where}: cannot write in {folder} (permission denied)")
    try:
        fd, probe = tempfile.mkstemp(prefix=".optllm-probe.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OptLLMError(f"{where}: cannot write in {folder} ({e.strerror or e})") from None


def _inside_cwd(p: Path) -> bool:
    try:
        here, there = Path.cwd().resolve(), p.resolve()
    except OSError:
        return False
    return there == here or there in here.parents


def check_output_file(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """Fail (OptLLMError, one line naming `option` and `path`) unless `path` can be written as
    a file: not a folder, not a device or other special file, not read-only, and its folder
    (or the nearest one that exists: the rest is created) one we can create files in. Call it
    before any long work. Returns `path` as a Path."""
    p = Path(path)
    where = _where(option, path)
    try:
        if str(path).strip() == "":
            raise OptLLMError(f"{option}: give a file name (got an empty path)")
        real = _real(p)
        if real.is_dir():
            raise OptLLMError(f"{where}: is a folder; give a file name")
        if real.exists():
            if not real.is_file():
                raise OptLLMError(f"{where}: is not a regular file")
            if not os.access(real, os.W_OK):
                raise OptLLMError(f"{where}: is read-only")
        _can_create_in(_nearest_existing(real.parent), where)
    except OSError as e:  # a name too long, a folder we may not look into, ...
        raise OptLLMError(f"{where}: cannot be written ({e.strerror or e})") from None
    return p


def _ours(name: str, names: Iterable[str]) -> bool:
    """Whether a file name in an output folder is one of ours: one of `names` (glob patterns
    allowed, e.g. '*_fronts.png') or the hidden temporary of one (`.NAME.*.tmp`)."""
    for pat in names:
        if fnmatch.fnmatchcase(name, pat) or fnmatch.fnmatchcase(name, f".{pat}.*.tmp"):
            return True
    return False


def foreign_files(path: str | os.PathLike[str], names: Iterable[str]) -> list[str]:
    """Files in folder `path` that are not ours (`names`, see `_ours`); sub-folders are not
    counted (they are carried over, see `atomic_dir`)."""
    target, own = Path(path), tuple(names)
    if not target.is_dir():
        return []
    return sorted(e.name for e in target.iterdir() if not e.is_dir() and not _ours(e.name, own))


def check_output_dir(path: str | os.PathLike[str], option: str = "--out",
                     names: Iterable[str] | None = None) -> Path:
    """Fail (OptLLMError, one line naming `option` and `path`) unless `path` can be written as
    a folder. Call it before any long work. Returns `path` as a Path.

    With `names` (the files an output folder of ours holds, glob patterns allowed), the folder
    is one `atomic_dir` writes whole: if it exists it may hold only those files and
    sub-folders (anything else is refused, never deleted; see `atomic_dir`), it and its
    sub-folders must be writable (they are moved), and its parent must take the temporary
    sibling. Without `names` it is a folder files are added to (journals): it must be a
    folder we can create files in, or creatable."""
    p = Path(path)
    where = _where(option, path)
    try:
        if str(path).strip() == "":
            raise OptLLMError(f"{option}: give a folder name (got an empty path)")
        real = _real(p)
        if real.exists() and not real.is_dir():
            raise OptLLMError(f"{where}: is a file, not a folder")
        if names is None:
            _can_create_in(real if real.is_dir() else _nearest_existing(real.parent), where)
            return p
        own = tuple(names)
        if _inside_cwd(real):
            raise OptLLMError(f"{where}: is the current folder or holds it; give a folder for the outputs")
        if real.is_dir():
            other = foreign_files(real, own)
            if other:
                more = f" and {len(other) - 3} more" if len(other) > 3 else ""
                raise OptLLMError(f"{where}: holds files optllm did not write ({', '.join(other[:3])}{more}); "
                                  "give a new or empty folder")
            if not os.access(real, os.W_OK | os.X_OK):
                raise OptLLMError(f"{where}: is read-only")
            for sub in sorted(real.iterdir()):
                if sub.is_dir() and not sub.is_symlink() and not os.access(sub, os.W_OK):
                    raise OptLLMError(f"{where}: its sub-folder {sub.name} is read-only (sub-folders are moved "
                                      "into the new output folder)")
        _can_create_in(_nearest_existing(real.parent), where)
    except OSError as e:
        raise OptLLMError(f"{where}: cannot be written ({e.strerror or e})") from None
    return p


# ---------------------------------------------------------------------- output folders
@contextmanager
def atomic_dir(path: str | os.PathLike[str], names: Iterable[str], option: str = "--out") -> Iterator[Path]:
    """Write an output folder all-or-nothing: yield an empty temporary folder beside `path`
    to write into; when the block succeeds it takes the place of `path` in one rename, so a
    reader sees the old outputs or the new ones, never a mix. `names` are the files the
    folder holds (glob patterns allowed).

    The rule for a folder that exists (checked first, by `check_output_dir`):
    - it may hold only files named in `names` and sub-folders; a folder holding any other
      file is refused before any work and is never touched (let alone deleted);
    - on success its files from `names` are replaced as a set: one of the last run's files
      that this run does not write (plan.csv of a target that is no longer certified) is
      gone, not left beside the new ones;
    - its sub-folders (and anything not ours that appeared while we worked) are moved into
      the new folder unchanged: nothing but our own files is ever deleted;
    - the new folder keeps the old one's mode; a new one gets 0777 & ~umask.
    On failure (an exception in the block, or in the rename) `path` is left exactly as it
    was, or absent if it was, and the temporary folder is removed. If moving a sub-folder
    over fails after the swap, the error says where it was left (a hidden `.NAME.*.old`
    beside `path`)."""
    target = _real(path)
    own = tuple(names)
    check_output_dir(path, option, own)
    created = _make_parents(target.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except BaseException:
        _remove_empty(created)
        raise
    swapped = False
    try:
        try:
            yield tmp
            os.chmod(tmp, _mode_for(target, 0o777))
            old = None
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
                try:
                    os.replace(target, old)  # onto the empty folder: a rename in the same parent
                except BaseException:
                    old.rmdir()
                    raise
            try:
                os.replace(tmp, target)
            except BaseException:
                if old is not None:
                    os.replace(old, target)
                raise
            swapped = True
        except (OSError, WriteFailed) as e:
            reason = e.reason if isinstance(e, WriteFailed) else (e.strerror or str(e))
            state = "it was left as it was" if target.exists() else "nothing was written"
            raise WriteFailed(f"{_where(option, path)}: could not be written ({reason}); {state}", reason) from None
        if old is not None:
            _carry_over(old, target, own, _where(option, path))
    finally:
        if not swapped:
            shutil.rmtree(tmp, ignore_errors=True)  # only what the block wrote
            _remove_empty(created)


def _carry_over(old: Path, new: Path, own: tuple[str, ...], where: str) -> None:
    """After the swap: move what is not ours from the old folder into the new one, delete our
    old files, remove the old folder (never recursively)."""
    stuck = []
    for entry in sorted(old.iterdir()):
        if not entry.is_dir() and _ours(entry.name, own):
            entry.unlink()
            continue
        dest = new / entry.name
        if dest.exists() or dest.is_symlink():
            stuck.append(entry.name)  # this run wrote the same name: keep the user's, beside
            continue
        try:
            os.replace(entry, dest)
        except OSError:
            stuck.append(entry.name)
    if stuck:
        raise OptLLMError(f"{where}: written, but {', '.join(stuck[:3])} of the old folder could not be moved "
                          f"into it; left in {old}")
    old.rmdir()
