"""`DiskTexts`: a text column that stays in its Parquet file and is read in chunks.

A dataset of 10^7 prompts holds gigabytes of Python strings; everything else the pipeline
keeps per query is a few numbers. `load_wide` on a Parquet file reads the numeric columns
and leaves the text column on disk as a `DiskTexts`: the labelled sample is read into memory
(`tolist`), the queries to assign are featurised and predicted `chunks` at a time
(`optllm.planning.core.predict_in_chunks`), so memory holds one chunk of texts, not n.

A `DiskTexts` is a view: `rows` are the file's rows it stands for, in order (`take` makes a
sub-view, as `Outcomes.subset` does with an array). Reading a chunk reads the row groups
its rows fall in; views in file order (every split part is sorted) read each group once.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from optllm.errors import OptLLMError


class DiskTexts:
    """The texts of column `column` of Parquet file `path`, rows `rows` (all when None).

    Sequence-like: `len`, iteration (streamed a row group at a time), `t[i]` (one text),
    `t[index array | mask | slice]` (a sub-view), `tolist()` (all, in memory), and
    `chunks(size)` (lists of at most `size` texts, in order)."""

    def __init__(self, path: str | Path, column: str, rows: np.ndarray | None = None) -> None:
        import pyarrow.parquet as pq

        self.path = Path(path).resolve()  # a later chdir does not move it
        self.column = column
        try:
            pf = pq.ParquetFile(self.path)
        except (OSError, ValueError) as e:
            raise OptLLMError(f"{self.path}: cannot read as Parquet: {str(e).splitlines()[0] if str(e) else e}") from None
        if column not in pf.schema_arrow.names:
            raise OptLLMError(f"{self.path}: no text column {column!r} (columns: {', '.join(pf.schema_arrow.names[:10])})")
        meta = pf.metadata
        self._stamp = _stamp(self.path)  # the file as loaded: a replaced file is refused, not read
        sizes = np.array([meta.row_group(g).num_rows for g in range(meta.num_row_groups)], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(sizes)])  # row group g holds rows [starts[g], starts[g+1])
        total = int(self._starts[-1])
        if rows is None:
            self.rows = None
            self._n = total
        else:
            r = np.asarray(rows, dtype=np.int64)
            if r.ndim != 1 or (r.size and (r.min() < 0 or r.max() >= total)):
                raise OptLLMError(f"{self.path}: rows out of range 0..{total - 1}")
            r.setflags(write=False)
            self.rows = r
            self._n = int(r.size)
        self._cache: tuple[int, np.ndarray] | None = None  # the last row group read

    # ------------------------------------------------------------------ sequence
    def __len__(self) -> int:
        return self._n

    @property
    def shape(self) -> tuple[int]:
        return (self._n,)

    def __repr__(self) -> str:
        return f"DiskTexts({str(self.path)!r}, column={self.column!r}, n={self._n})"

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__, _cache=None)  # a pickled view carries no texts

    def file_rows(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """The file rows of view positions lo..hi."""
        hi = self._n if hi is None else hi
        return np.arange(lo, hi, dtype=np.int64) if self.rows is None else self.rows[lo:hi]

    def take(self, idx: Any) -> "DiskTexts":
        """The sub-view of positions `idx` (an index array, a boolean mask or a slice)."""
        pos = np.arange(self._n)[idx] if isinstance(idx, slice) else np.asarray(idx)
        if pos.dtype == bool:
            if pos.shape != (self._n,):
                raise OptLLMError(f"{self.path}: a mask of {pos.shape} rows for {self._n} texts")
            pos = np.flatnonzero(pos)
        pos = pos.astype(np.int64, copy=False)
        if pos.size and (pos.min() < -self._n or pos.max() >= self._n):
            raise IndexError(f"text positions out of range 0..{self._n - 1}")
        pos = np.where(pos < 0, pos + self._n, pos)
        self._check_unchanged()  # the sub-view must read the file its parent was loaded from
        sub = object.__new__(DiskTexts)  # the same file: its footer is not read again
        rows = self.file_rows()[pos]
        rows.setflags(write=False)
        sub.__dict__.update(self.__dict__, rows=rows, _n=int(rows.size), _cache=None)
        return sub

    def __getitem__(self, idx: Any) -> Any:
        if isinstance(idx, (bool, np.bool_)):
            raise TypeError("DiskTexts: index with an int, a slice, an index array or a mask, not a bool")
        if isinstance(idx, (int, np.integer)):
            i = int(idx) + (self._n if idx < 0 else 0)
            if not 0 <= i < self._n:
                raise IndexError(f"text {idx} out of range 0..{self._n - 1}")
            return self._read(self.file_rows(i, i + 1))[0]
        return self.take(idx)

    @property
    def in_file_order(self) -> bool:
        """True when the view's rows ascend (every split part's do): chunks then read each row group once."""
        return self.rows is None or bool(np.all(self.rows[1:] >= self.rows[:-1]))

    def chunks(self, size: int) -> Iterator[list[str]]:
        """The texts in order, `size` at a time. A view in file order holds one chunk (and one
        row group) in memory at a time; a shuffled one is read whole first (each row group once,
        where chunk by chunk would read every group for every chunk)."""
        size = max(int(size), 1)
        if not self.in_file_order:
            texts = self.tolist()
            for lo in range(0, self._n, size):
                yield texts[lo:lo + size]
            return
        for lo in range(0, self._n, size):
            yield self._read(self.file_rows(lo, min(self._n, lo + size)))

    def __iter__(self) -> Iterator[str]:
        for chunk in self.chunks(int(np.diff(self._starts).max(initial=1))):
            yield from chunk

    def tolist(self) -> list[str]:
        """Every text of the view, in memory (for the labelled sample, not the whole file)."""
        return self._read(self.file_rows())

    # ------------------------------------------------------------------ reading
    def _read(self, rows: np.ndarray) -> list[str]:
        """The texts of file rows `rows` (any order), reading each row group they touch once."""
        if rows.size == 0:
            return []
        group = np.searchsorted(self._starts, rows, side="right") - 1
        out = np.empty(rows.size, dtype=object)
        order = np.argsort(group, kind="stable")
        bounds = np.flatnonzero(np.diff(group[order])) + 1
        for part in np.split(order, bounds):  # one pass per row group touched, vectorised within it
            g = int(group[part[0]])
            out[part] = self._group(g)[rows[part] - self._starts[g]]
        return out.tolist()

    def _check_unchanged(self) -> None:
        if _stamp(self.path) != self._stamp:
            raise OptLLMError(f"{self.path}: the file changed since it was loaded; load it again")

    def _group(self, g: int) -> np.ndarray:
        """Row group g's texts, an object array of str (nulls as "")."""
        cached = self._cache  # one read of the attribute: another thread may replace it
        if cached is not None and cached[0] == g:
            return cached[1]
        self._check_unchanged()
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        try:
            col = pq.ParquetFile(self.path).read_row_group(g, columns=[self.column]).column(0)
            if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
                col = pc.cast(col, pa.string())
            texts = pc.fill_null(col, "").to_numpy(zero_copy_only=False)
        except (OSError, ValueError, KeyError, pa.ArrowException) as e:
            raise OptLLMError(f"{self.path}: cannot read column {self.column!r} of row group {g}: "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        self._cache = (g, texts)
        return texts


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError as e:
        raise OptLLMError(f"{path}: cannot read the texts ({e.strerror or e})") from None
    return st.st_size, st.st_mtime_ns


def text_list(texts: Any) -> list[str]:
    """Texts (an array, a list or a `DiskTexts`) as a list of str in memory."""
    if isinstance(texts, DiskTexts):
        return texts.tolist()
    return [str(t) for t in texts]
