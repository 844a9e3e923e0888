"""Reading and writing a user's prompt files: `id` and `prompt` columns in JSONL, CSV or
Parquet; ids are compared as text ("007" is not 7)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from optllm.errors import OptLLMError

ID_COLUMNS = ("id", "query_id")
PROMPT_COLUMNS = ("prompt", "query", "text")


def read_text_table(path: str | Path) -> Any:
    """A prompts-like table with its cells as written: ids and answers stay text in CSV and
    JSONL ("007" is not 7), Parquet keeps its types."""
    from optllm.data.wide import read_table

    p = Path(path)
    kinds = {s.lower() for s in p.suffixes}
    if kinds & {".jsonl", ".json", ".ndjson"}:
        return read_table(p, dtype=False)
    if kinds & {".parquet", ".pq"}:
        return read_table(p)
    return read_table(p, dtype=str, keep_default_na=False)


def read_prompts(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """Ids (as strings) and prompts of a JSONL/CSV/Parquet file with `id` and `prompt` columns."""
    ids, prompts, _ = read_prompt_table(path)
    return ids, prompts


def read_prompt_table(path: str | Path) -> tuple[np.ndarray, list[str], dict[str, list[str]]]:
    """`read_prompts`, plus every other column as text (a reference answer, a category...):
    what `optllm sample` carries into the sample and `optllm label` scores against."""
    p = Path(path)
    df = read_text_table(p)
    cols = [str(c) for c in df.columns]
    id_col = next((c for c in ID_COLUMNS if c in cols), None)
    pr_col = next((c for c in PROMPT_COLUMNS if c in cols), None)
    if id_col is None or pr_col is None:
        need = [n for n, c in (("id", id_col), ("prompt", pr_col)) if c is None]
        raise OptLLMError(f"{p}: missing column(s) {need}; prompts need 'id' and 'prompt' (found {cols[:10]})")
    ids = df[id_col]
    blank = ids.isna() | (ids.astype(str).str.strip() == "")
    if blank.any():
        r = int(np.flatnonzero(blank.to_numpy())[0])
        raise OptLLMError(f"{p}: row {r + 1}: missing {id_col!r}")
    ids = ids.map(id_str)
    dup = ids.duplicated()
    if dup.any():
        r = int(np.flatnonzero(dup.to_numpy())[0])
        raise OptLLMError(f"{p}: row {r + 1}: duplicate id {ids.iloc[r]!r}")
    prompts = df[pr_col]
    if prompts.isna().any():
        r = int(np.flatnonzero(prompts.isna().to_numpy())[0])
        raise OptLLMError(f"{p}: row {r + 1} (id {ids.iloc[r]!r}): missing {pr_col!r}")
    extra = {str(c): ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in df[c]]
             for c in df.columns if str(c) not in (id_col, pr_col)}
    return ids.to_numpy(dtype=object), prompts.astype(str).tolist(), extra


def id_str(x: Any) -> str:
    """Ids compare as strings; 3.0 read from a CSV is the id 3."""
    if isinstance(x, (float, np.floating)) and float(x).is_integer():
        return str(int(x))
    return str(x)


def write_prompts(path: str | Path, ids: Sequence[Any], prompts: Sequence[str],
                  extra: dict[str, Sequence[str]] | None = None) -> None:
    """JSONL with id and prompt (and the `extra` columns, row-aligned), written atomically."""
    from optllm.io import atomic_open

    cols = extra or {}
    with atomic_open(path, "w", encoding="utf-8") as fh:
        for r, (i, t) in enumerate(zip(ids, prompts)):
            rec = {"id": id_str(i), "prompt": t, **{c: v[r] for c, v in cols.items()}}
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def exclude_ids(ids: np.ndarray, path: str | Path) -> np.ndarray:
    """Rows of `ids` not listed in `path`: a labels file (long format, `query_id`) or a
    prompts file (`id`)."""
    from optllm.data.wide import read_table

    p = Path(path)
    kinds = {s.lower() for s in p.suffixes}
    df = read_table(p, dtype=False) if kinds & {".jsonl", ".json", ".ndjson"} else read_table(p)
    col = next((c for c in ("query_id", *ID_COLUMNS) if c in df.columns), None)
    if col is None:
        raise OptLLMError(f"{p}: no 'query_id' or 'id' column to exclude by (found {list(map(str, df.columns))[:10]})")
    seen = {id_str(x) for x in df[col].dropna()}
    return np.flatnonzero(np.array([q not in seen for q in ids], dtype=bool))
