"""Wide layout readers: one row per query, `<m>` correctness and `<m>_cost` columns
(the OptLLM/FrugalGPT layout of overruling, AGNEWS, COQA, HEADLINES, SCIQ), and the generic
long format (`query_id, model, correct, cost`)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from optllm.data.outcomes import Outcomes
from optllm.errors import OptLLMError


def read_table(path: str | Path, **kw: Any) -> pd.DataFrame:
    """Read CSV, JSONL/JSON, Parquet (optionally .gz) into a DataFrame with clear errors."""
    p = Path(path)
    if not p.exists():
        raise OptLLMError(f"{p}: file not found")
    if p.is_dir():
        raise OptLLMError(f"{p}: is a folder, expected a CSV, JSONL or Parquet file")
    suffixes = [s.lower() for s in p.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2", ".xz", ".zst"):
        suffixes = suffixes[:-1]
    kind = suffixes[-1] if suffixes else ""
    try:
        if kind in (".csv", ".tsv", ".txt", ""):
            sep = "\t" if kind == ".tsv" else ","
            return _delimited(p, pd.read_csv(p, sep=sep, **kw), sep)
        if kind in (".jsonl", ".ndjson"):
            return pd.read_json(p, lines=True, **kw)
        if kind == ".json":
            return pd.read_json(p, **kw)
        if kind in (".parquet", ".pq"):
            return pd.read_parquet(p, **kw)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, UnicodeDecodeError, OSError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OptLLMError(f"{p}: cannot read as {kind or 'CSV'}: {msg}") from None
    raise OptLLMError(f"{p}: unknown file type {kind!r}; use .csv, .jsonl or .parquet")


def read_long_table(path: str | Path) -> pd.DataFrame:
    """A long-format table as it is on disk, its ids kept as text in CSV ("007" is not 7)."""
    p = Path(path)
    kinds = {x.lower() for x in p.suffixes}
    text_ids = {} if kinds & {".parquet", ".pq", ".json", ".jsonl", ".ndjson"} else {"dtype": {"query_id": str}}
    return read_table(p, **text_ids)


def row_of(path: str | Path, r: int) -> str:
    """Where row r (0-based, of the table read) is, as the user sees the file: a CSV's line
    (its header is line 1, so r + 2); in JSONL, JSON or Parquet the record's number (r + 1)."""
    kinds = {s.lower() for s in Path(path).suffixes}
    return f"row {r + 1}" if kinds & {".parquet", ".pq", ".jsonl", ".ndjson", ".json"} else f"row {r + 2}"


def is_parquet(path: str | Path) -> bool:
    """A Parquet file by its name (.parquet / .pq)."""
    return Path(path).suffix.lower() in (".parquet", ".pq")


def parquet_schema(path: str | Path) -> Any:
    """A Parquet file's schema, read from its footer alone, with one-line errors."""
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.exists():
        raise OptLLMError(f"{p}: file not found")
    try:
        return pq.read_schema(p)
    except (OSError, ValueError) as e:
        raise OptLLMError(f"{p}: cannot read as Parquet: {str(e).strip().splitlines()[0] if str(e).strip() else e}") from None


def parquet_columns(path: str | Path, schema: Any = None) -> list[str]:
    """The column names of a Parquet file (its `schema`, read from the footer when not given),
    pandas' index columns left out."""
    schema = parquet_schema(path) if schema is None else schema
    try:
        index = set((schema.pandas_metadata or {}).get("index_columns") or [])
    except (ValueError, TypeError):
        index = set()
    index = {c for c in index if isinstance(c, str)}  # (a RangeIndex is described by a dict, not stored)
    return [c for c in schema.names if not c.startswith("__index_level_") and c not in index]


def _on_disk_ok(schema: Any, column: str, id_column: str | None) -> bool:
    """Whether a Parquet text column can stay on disk: a string column that is not also the
    ids (a number or a boolean column is read into memory and made text as in a CSV)."""
    import pyarrow as pa

    if column == id_column or (id_column is None and column in ID_COLUMNS):
        return False
    t = schema.field(column).type
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _cost_rx(cost_pattern: str) -> "re.Pattern[str]":
    """The cost columns' names as a regex, the model name its group."""
    return re.compile("^" + re.escape(cost_pattern).replace(re.escape("{model}"), "(.+)") + "$")


ID_COLUMNS = ("query_id", "id", "sample_id")  # a wide table's id column, when not named
TEXT_COLUMNS = ("query", "prompt", "content", "text")  # a wide table's text column, when not named


def _delimited(p: Path, df: pd.DataFrame, sep: str) -> pd.DataFrame:
    """A CSV read into one column whose header holds another delimiter was written with it."""
    if len(df.columns) == 1:
        head = str(df.columns[0])
        other = next((c for c in (";", "\t", "|", ",") if c != sep and c in head), None)
        if other is not None:
            say = {"\t": "a tab"}
            fix = "rename it .tsv or save it comma-separated" if other == "\t" else (
                "save it tab-separated" if sep == "\t" else "save it comma-separated")
            raise OptLLMError(f"{p}: the delimiter looks like {say.get(other, repr(other))}, not "
                              f"{say.get(sep, repr(sep))} (header {head[:40]!r}); {fix}")
    return df


def _numeric(df: pd.DataFrame, col: str, path: Path, kind: str) -> np.ndarray:
    """A column as float, naming the first row that is not a number."""
    s = df[col]
    if s.dtype == bool:
        return s.to_numpy(dtype=np.float64)
    if s.dtype == object:
        low = s.astype(str).str.strip().str.lower()
        s = s.where(~low.isin(["true", "false"]), low.map({"true": 1.0, "false": 0.0}))
    v = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64)
    bad = np.isnan(v) & s.notna().to_numpy()
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise OptLLMError(f"{path}: {row_of(path, r)}, column {col!r}: {kind} {df[col].iloc[r]!r} is not a number")
    return v


def _check_values(v: np.ndarray, path: Path, col: str, kind: str, ids: np.ndarray | None = None) -> None:
    nan = np.isnan(v)
    if nan.any():
        r = int(np.flatnonzero(nan)[0])
        raise OptLLMError(f"{path}: {row_of(path, r)}, column {col!r}: {kind} is missing (NaN); {int(nan.sum())} such rows")
    if kind == "cost" and (v < 0).any():
        r = int(np.flatnonzero(v < 0)[0])
        raise OptLLMError(f"{path}: {row_of(path, r)}, column {col!r}: negative cost {v[r]}")
    if kind == "correct" and ((v < 0) | (v > 1)).any():
        r = int(np.flatnonzero((v < 0) | (v > 1))[0])
        raise OptLLMError(f"{path}: {row_of(path, r)}, column {col!r}: correct must be in [0, 1], got {v[r]}")


def load_wide(
    path: str | Path,
    models: list[str] | None = None,
    cost_pattern: str = "{model}_cost",
    correct_pattern: str = "{model}",
    id_column: str | None = None,
    text_column: str | None = None,
    name: str | None = None,
    df: pd.DataFrame | None = None,
) -> Outcomes:
    """Read a wide table: for each model a correctness column and a cost column.

    Models are found from `cost_pattern` (every column matching it whose correctness column
    exists) unless given. Text: `text_column`, else `query`, `prompt`, `content`, `text`. Ids:
    `id_column`, else `query_id`/`id`/`sample_id`, else the row number.

    A Parquet file's text column is not read: the texts stay in the file as a `DiskTexts`
    (read in chunks when the queries are predicted), so 10^7 prompts need no room in memory.
    """
    p = Path(path)
    disk_text = None
    if df is None and is_parquet(p):  # the text column stays in the file (DiskTexts), the rest is read
        schema = parquet_schema(p)
        names = parquet_columns(p, schema)
        disk_text = text_column or next((c for c in TEXT_COLUMNS if c in names), None)
        if text_column and text_column not in names:
            raise OptLLMError(f"{p}: text column {text_column!r} not found")
        if disk_text is not None and not _on_disk_ok(schema, disk_text, id_column):
            disk_text = None  # read as the other formats read it (not text, or also the ids)
        df = read_table(p, columns=[c for c in names if c != disk_text])
    elif df is None:
        df = read_table(p)
    if "{model}" not in cost_pattern or "{model}" not in correct_pattern:
        raise OptLLMError("patterns must contain '{model}'")
    cols = [str(c) for c in df.columns]
    if models is None:
        rx = _cost_rx(cost_pattern)
        models = []
        for c in cols:
            mt = rx.match(c)
            if mt and correct_pattern.format(model=mt.group(1)) in cols:
                models.append(mt.group(1))
        if not models:
            raise OptLLMError(
                f"{p}: no model columns found: expected pairs of columns like "
                f"'{correct_pattern.format(model='<m>')}' and '{cost_pattern.format(model='<m>')}'"
            )
    unpaired = _unpaired(df, models, cost_pattern, correct_pattern, {id_column, text_column, disk_text})
    n = len(df)
    correct = np.empty((n, len(models)))
    cost = np.empty((n, len(models)))
    for k, mdl in enumerate(models):
        for arr, pat, kind in ((correct, correct_pattern, "correct"), (cost, cost_pattern, "cost")):
            col = pat.format(model=mdl)
            if col not in df.columns:
                raise OptLLMError(f"{p}: missing column {col!r} for model {mdl!r}")
            arr[:, k] = _numeric(df, col, p, kind)
            _check_values(arr[:, k], p, col, kind)
    ids = _pick_ids(df, p, id_column)
    if disk_text is not None:
        from optllm.data.texts import DiskTexts

        text_col, texts = disk_text, DiskTexts(p, disk_text)
    else:
        text_col = text_column or next((c for c in TEXT_COLUMNS if c in df.columns), None)
        if text_column and text_column not in df.columns:
            raise OptLLMError(f"{p}: text column {text_column!r} not found")
        texts = None if text_col is None else df[text_col].fillna("").astype(str).to_numpy(dtype=object)
    return Outcomes(
        query_ids=ids,
        models=tuple(models),
        correct=correct,
        cost=cost,
        texts=texts,
        name=name or p.stem,
        metadata={"source": str(p), "format": "wide", "text_column": text_col,
                  **({"unpaired_columns": unpaired} if unpaired else {})},
    )


def _unpaired(df: pd.DataFrame, models: list[str], cost_pattern: str, correct_pattern: str,
              skip: set[str | None]) -> list[str]:
    """Columns that look like a model's correctness (numbers in [0, 1], not ids, texts, a
    split or a cost) but have no cost column, so are not models: most likely a cost column
    missing or misnamed. `wide_notes` says so; they are not an error (a 0-1 feature is legal)."""
    taken = {correct_pattern.format(model=m) for m in models} | {cost_pattern.format(model=m) for m in models}
    rx = _cost_rx(cost_pattern)
    out = []
    for c in map(str, df.columns):
        if c in taken or c in skip or c in ID_COLUMNS or c in TEXT_COLUMNS or c == "split" or rx.match(c):
            continue
        col = df[c]
        if col.dtype.kind not in "biuf" or col.isna().all():
            continue
        v = col.to_numpy(dtype=np.float64)
        if np.nanmin(v) >= 0 and np.nanmax(v) <= 1:
            out.append(c)
    return out


def wide_notes(data: Outcomes) -> list[str]:
    """What a user should know about how a wide table was read (the CLI prints these)."""
    cols = data.metadata.get("unpaired_columns") or []
    return [f"note: column {c!r} looks like a model's correctness but has no cost column, so it is not one of "
            f"the models here (give it a cost column, e.g. {c + '_cost'!r}, to route to it)" for c in cols]


def _pick_ids(df: pd.DataFrame, p: Path, id_column: str | None) -> np.ndarray:
    if id_column:
        if id_column not in df.columns:
            raise OptLLMError(f"{p}: id column {id_column!r} not found")
        ids = df[id_column]
    else:
        col = next((c for c in ID_COLUMNS if c in df.columns), None)
        if col is None:
            return np.arange(len(df))
        ids = df[col]
    dup = ids.duplicated()
    if dup.any():
        r = int(np.flatnonzero(dup.to_numpy())[0])
        raise OptLLMError(f"{p}: {row_of(p, r)}: duplicate query id {ids.iloc[r]!r}")
    if ids.isna().any():
        r = int(np.flatnonzero(ids.isna().to_numpy())[0])
        raise OptLLMError(f"{p}: {row_of(p, r)}: missing query id")
    return ids.to_numpy()


LONG_REQUIRED = ("query_id", "model", "correct", "cost")


def load_long(
    path: str | Path,
    name: str | None = None,
    df: pd.DataFrame | None = None,
    require_cost: bool = True,
    on_missing: str = "error",
    binary: bool = False,
) -> Outcomes:
    """Read the long format: one row per (query, model) with `query_id, model, correct, cost`
    and optional `prompt, prompt_tokens, completion_tokens`.

    Queries that lack some models are reported: `on_missing="error"` (default) stops with
    the count and an example; `"drop"` drops those queries and records them in metadata.
    Missing pairs are never silently filled. With `binary` (a labelled sample for `optllm
    plan`, whose bounds count correct answers) `correct` must be 0 or 1; otherwise a graded
    score in [0, 1] is allowed.
    """
    p = Path(path)
    if df is None:
        df = read_long_table(p)
    df = _checked_long(df, p, require_cost, binary)
    cells = _Cells.of(df)
    meta: dict[str, Any] = {"source": str(p), "format": "long"}
    keep = _complete_queries(cells, p, on_missing, meta)
    texts = None
    if "prompt" in df.columns:
        texts = cells.per_query(df["prompt"].fillna("").astype(str).to_numpy())[keep]
    if "split" in df.columns:
        meta["split"] = _roles(df, cells.qpos, cells.n, p)[keep].tolist()
    tokens = {col: cells.grid(df[col])[keep] for col in ("prompt_tokens", "completion_tokens") if col in df.columns}
    return Outcomes(
        query_ids=np.asarray(cells.qids)[keep],
        models=cells.models,
        correct=cells.grid(df["correct"])[keep],
        cost=cells.grid(df["cost"])[keep],
        texts=texts,
        name=name or p.stem,
        metadata=meta,
        **tokens,
    )


def _checked_long(df: pd.DataFrame, p: Path, require_cost: bool, binary: bool = False) -> pd.DataFrame:
    """The long table with its columns checked: the required ones present, no missing query
    id or model, `correct` (and `cost`, 0 when optional and absent) numeric and in range,
    model names as text, no (query, model) pair twice. Errors name the first bad row."""
    required = LONG_REQUIRED if require_cost else LONG_REQUIRED[:3]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise OptLLMError(
            f"{p}: missing column(s) {missing}; the long format needs {list(required)}"
            f" (found {list(map(str, df.columns))[:10]})"
        )
    for col in ("query_id", "model"):
        if df[col].isna().any():
            r = int(np.flatnonzero(df[col].isna().to_numpy())[0])
            raise OptLLMError(f"{p}: {row_of(p, r)}, column {col!r}: missing value")
    corr = _numeric(df, "correct", p, "correct")
    _check_values(corr, p, "correct", "correct")
    if binary and not np.isin(corr, (0.0, 1.0)).all():
        bad = ~np.isin(corr, (0.0, 1.0))
        r = int(np.flatnonzero(bad)[0])
        raise OptLLMError(f"{p}: {row_of(p, r)}, column 'correct': {corr[r]:g} is not 0 or 1 ({int(bad.sum())} such "
                          "rows); labels are 0/1 (the plan's bounds count correct answers)")
    df = df.assign(correct=corr)
    if "cost" in df.columns:
        cst = _numeric(df, "cost", p, "cost")
        _check_values(cst, p, "cost", "cost")
        df = df.assign(cost=cst)
    elif not require_cost:
        df = df.assign(cost=0.0)
    for col in ("prompt_tokens", "completion_tokens"):  # optional; missing (NaN) means unknown
        if col in df.columns:
            v = _numeric(df, col, p, "token count")
            inf = np.isinf(v)
            if inf.any():
                r = int(np.flatnonzero(inf)[0])
                raise OptLLMError(f"{p}: {row_of(p, r)}, column {col!r}: token count {v[r]:g} is not a finite number")
            neg = v < 0
            if neg.any():
                r = int(np.flatnonzero(neg)[0])
                raise OptLLMError(f"{p}: {row_of(p, r)}, column {col!r}: negative token count {v[r]:g}")
            df = df.assign(**{col: v})
    df = df.assign(model=df["model"].astype(str))
    dup = df.duplicated(["query_id", "model"])
    if dup.any():
        r = int(np.flatnonzero(dup.to_numpy())[0])
        raise OptLLMError(
            f"{p}: {row_of(p, r)}: query {str(df['query_id'].iloc[r])!r} has model {df['model'].iloc[r]!r} twice"
        )
    return df


@dataclass(frozen=True, eq=False)
class _Cells:
    """Where each row of a long table lands in the (query × model) grid: queries and models
    in order of first appearance, and each row's query and model position."""

    qids: Any  # (n,) the distinct query ids
    models: tuple[str, ...]
    qpos: np.ndarray  # per row
    mpos: np.ndarray  # per row

    @classmethod
    def of(cls, df: pd.DataFrame) -> "_Cells":
        models = list(dict.fromkeys(df["model"].tolist()))
        qids = pd.unique(df["query_id"])
        return cls(qids, tuple(models), pd.Index(qids).get_indexer(df["query_id"]),
                   pd.Index(models).get_indexer(df["model"]))

    @property
    def n(self) -> int:
        return len(self.qids)

    @property
    def m(self) -> int:
        return len(self.models)

    def present(self) -> np.ndarray:
        """(n, m) bool: which pairs have a row."""
        have = np.zeros((self.n, self.m), dtype=bool)
        have[self.qpos, self.mpos] = True
        return have

    def grid(self, values: pd.Series) -> np.ndarray:
        """(n, m) float: a per-row column in its cells, NaN where a pair has no row."""
        g = np.full((self.n, self.m), np.nan)
        g[self.qpos, self.mpos] = values.to_numpy(dtype=np.float64)
        return g

    def per_query(self, values: np.ndarray) -> np.ndarray:
        """(n,) object: a per-row value that belongs to the query (the last row's wins)."""
        t = np.empty(self.n, dtype=object)
        t[self.qpos] = values
        return t


def _complete_queries(cells: _Cells, p: Path, on_missing: str, meta: dict[str, Any]) -> np.ndarray:
    """(n,) bool: the queries that have a row for every model. Incomplete ones are an error,
    or with `on_missing="drop"` dropped and recorded in `meta["dropped"]`."""
    have = cells.present()
    keep = have.all(axis=1)
    if not keep.all():
        bad = np.flatnonzero(~keep)
        ex_q = cells.qids[bad[0]]
        ex_m = [cells.models[k] for k in np.flatnonzero(~have[bad[0]])]
        msg = f"{len(bad)} of {cells.n} queries lack some models (e.g. query {str(ex_q)!r} has no row for {ex_m})"
        rows = have.sum(axis=0)
        rare = [cells.models[k] for k in np.flatnonzero(rows < 0.5 * rows.max())]
        if rare:  # a model named on a few rows only: most likely a typo in the model column
            msg += f"; model(s) {rare} appear on only {int(rows.min())} of {cells.n} queries (a typo?)"
        if on_missing != "drop":
            raise OptLLMError(f"{p}: {msg}; every labelled query needs a row for every model")
        meta["dropped"] = {"incomplete_queries": int(len(bad)), "reason": msg,
                           "example_ids": [str(x) for x in cells.qids[bad[:10]]]}
    return keep

ROLE_NAMES = {"train": "train", "val": "val", "validation": "val"}


def _roles(df: pd.DataFrame, qpos: np.ndarray, n: int, p: Path) -> np.ndarray:
    """The optional `split` column: each query's role in the labelled sample (train | val),
    the same on every row of the query."""
    raw = df["split"].astype(str).str.strip().str.lower()
    bad = ~raw.isin(list(ROLE_NAMES))
    if bad.any():
        r = int(np.flatnonzero(bad.to_numpy())[0])
        raise OptLLMError(f"{p}: {row_of(p, r)}, column 'split': {df['split'].iloc[r]!r} is not train or val")
    role = raw.map(ROLE_NAMES).to_numpy(dtype=object)
    out = np.empty(n, dtype=object)
    out[qpos] = role
    clash = out[qpos] != role
    if clash.any():
        r = int(np.flatnonzero(clash)[0])
        raise OptLLMError(f"{p}: {row_of(p, r)}, column 'split': query {str(df['query_id'].iloc[r])!r} is both train and val")
    return out


def looks_long(df: pd.DataFrame | list[str]) -> bool:
    """True when the columns (of a table, or the names) are those of the long format."""
    cols = df.columns if isinstance(df, pd.DataFrame) else df
    return {"query_id", "model", "correct"}.issubset(map(str, cols))
