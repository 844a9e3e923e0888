"""Loaders for the benchmark datasets in the data folder, read as they are.

Each loader returns an `Outcomes` whose metadata records the source files, the price
assumptions and what was dropped and why.
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from optllm.cost import OFFLINE_DEFAULT, count_tokens
from optllm.data.outcomes import Outcomes
from optllm.data.paths import data_dir
from optllm.data.wide import read_table
from optllm.errors import OptLLMError

LOG_SYSTEMS = ("Android", "Apache", "BGL", "HPC", "Hadoop", "HealthApp", "Linux", "OpenSSH",
               "Proxifier", "Spark", "Windows", "Zookeeper")
ROUTERBENCH_TASKS = ("arc_challenge", "mbpp", "winograde")
_WS = re.compile(r"\s+")


def _parts(part: str | None, known: tuple[str, ...], what: str) -> list[str]:
    if not part:
        return list(known)
    lower = {k.lower(): k for k in known}
    out = []
    for p in (x.strip() for x in part.split(",") if x.strip()):
        if p.lower() not in lower:
            raise OptLLMError(f"unknown {what} {p!r}; known: {', '.join(known)}")
        out.append(lower[p.lower()])
    return out


def load_prices(path: str | Path) -> dict[str, dict[str, Any]]:
    """A price file: {model: {cost_input, cost_output[, cost_fixed, column_prefix]}} in USD per token."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text())
    except FileNotFoundError:
        raise OptLLMError(f"{p}: price file not found") from None
    except json.JSONDecodeError as e:
        raise OptLLMError(f"{p}: not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from None
    prices = {k: v for k, v in raw.items() if not k.startswith("_")}
    for model, entry in prices.items():
        for fld in ("cost_input", "cost_output"):
            v = entry.get(fld) if isinstance(entry, dict) else None
            if not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
                raise OptLLMError(f"{p}: model {model!r}, field {fld!r}: expected a non-negative number, got {v!r}")
    return prices


def _norm(s: pd.Series) -> np.ndarray:
    return s.fillna("").astype(str).str.replace(_WS, " ", regex=True).str.strip().to_numpy(dtype=object)


def _read_str_csv(path: Path, usecols: list[str] | None = None) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (OSError, pd.errors.ParserError) as e:
        raise OptLLMError(f"{path}: cannot read: {e}") from None
    if usecols:
        miss = [c for c in usecols if c not in df.columns]
        if miss:
            raise OptLLMError(f"{path}: missing column(s) {miss}")
    return df


def _int_col(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    v = pd.to_numeric(df[col], errors="coerce")
    if v.isna().any():
        r = int(np.flatnonzero(v.isna().to_numpy())[0])
        raise OptLLMError(f"{path}: row {r + 2}, column {col!r}: {df[col].iloc[r]!r} is not a token count")
    return v.to_numpy(dtype=np.float64)


def load_logparsing(part: str | None = None, prices: str | Path | None = None,
                    encoding: str = OFFLINE_DEFAULT) -> Outcomes:
    """LogPai Loghub-2k parsed by 8 LLMs: `logparsing` (all systems found) or `logparsing:Apache,HDFS`.

    Correct = the model's template equals `EventTemplate` after whitespace normalisation (an
    empty template is wrong). Cost = prompt tokens × cost_input + completion tokens ×
    cost_output from the price file; AI21 completion tokens are estimated from the output text
    with tiktoken (recorded in metadata).
    """
    root = data_dir() / "log_parsing"
    if not root.is_dir():
        raise OptLLMError(f"{root}: log_parsing folder not found in the data folder")
    price_path = Path(prices) if prices else data_dir() / "prices" / "log_parsing_prices.json"
    table = load_prices(price_path)
    found = tuple(s for s in LOG_SYSTEMS if (root / f"togetherModel_{s}_raw.csv").exists())
    extra = sorted({f.name[len("togetherModel_"):-len("_raw.csv")] for f in root.glob("togetherModel_*_raw.csv")} - set(found))
    systems = _parts(part, found + tuple(extra), "log-parsing system")
    models = list(table)
    prefix = {m: table[m].get("column_prefix", m) for m in models}
    blocks: dict[str, list[np.ndarray]] = {k: [] for k in ("ids", "texts", "correct", "pt", "ct")}
    estimated = []
    for s in systems:
        tpath, apath = root / f"togetherModel_{s}_raw.csv", root / f"ai21_{s}_raw.csv"
        tog = _read_str_csv(tpath, ["LineId", "Content", "EventTemplate"])
        if not apath.exists():
            raise OptLLMError(f"{apath}: file not found (each system needs both files)")
        ai = _read_str_csv(apath, ["LineId", "EventTemplate", "token_num"])
        if len(tog) != len(ai) or not (tog["LineId"].to_numpy() == ai["LineId"].to_numpy()).all():
            ai = ai.set_index("LineId").reindex(tog["LineId"])
            if ai["token_num"].isna().any():
                raise OptLLMError(f"{apath}: LineIds do not match {tpath.name}")
            ai = ai.reset_index()
        truth = _norm(tog["EventTemplate"])
        n = len(tog)
        corr, pt, ct = (np.zeros((n, len(models))) for _ in range(3))
        for k, mdl in enumerate(models):
            pre = prefix[mdl]
            if f"{pre}_template" in tog.columns:
                src, path = tog, tpath
                pt[:, k] = _int_col(tog, f"{pre}_prompt_token_num", tpath)
                ct[:, k] = _int_col(tog, f"{pre}_completion_tokens_num", tpath)
            elif f"{pre}_template" in ai.columns:
                src, path = ai, apath
                pt[:, k] = _int_col(ai, "token_num", apath)
                ct[:, k] = count_tokens(ai[f"{pre}_output"].tolist(), encoding)
                if mdl not in estimated:
                    estimated.append(mdl)
            else:
                raise OptLLMError(f"{tpath.parent}: no column {pre}_template for model {mdl!r} (system {s})")
            corr[:, k] = _norm(src[f"{pre}_template"]) == truth
            del path
        blocks["ids"].append(np.array([f"{s}:{x}" for x in tog["LineId"]], dtype=object))
        blocks["texts"].append(tog["Content"].to_numpy(dtype=object))
        blocks["correct"].append(corr)
        blocks["pt"].append(pt)
        blocks["ct"].append(ct)
    pt, ct = np.vstack(blocks["pt"]), np.vstack(blocks["ct"])
    cin = np.array([table[m]["cost_input"] for m in models])
    cout = np.array([table[m]["cost_output"] for m in models])
    cfix = np.array([table[m].get("cost_fixed", 0.0) for m in models])
    return Outcomes(
        query_ids=np.concatenate(blocks["ids"]),
        models=tuple(models),
        correct=np.vstack(blocks["correct"]),
        cost=pt * cin + ct * cout + cfix,
        texts=np.concatenate(blocks["texts"]),
        prompt_tokens=pt,
        completion_tokens=ct,
        name="logparsing" if not part else f"logparsing:{','.join(systems)}",
        metadata={
            "source": str(root), "systems": systems, "price_file": str(price_path),
            "prices_unverified": [m for m in models if not table[m].get("verified", False)],
            "completion_tokens_estimated": {m: f"tiktoken {encoding} on the output text" for m in estimated},
            "correct_rule": "whitespace-normalised template == EventTemplate",
        },
    )


def _prompt_text(s: str) -> str:
    """RouterBench stores prompts as a stringified list; join its items."""
    if s.startswith("[") and s.endswith("]"):
        try:
            v = ast.literal_eval(s)
            if isinstance(v, (list, tuple)):
                return "\n".join(dict.fromkeys(str(x) for x in v))
        except (ValueError, SyntaxError):
            pass
    return s


def load_routerbench(part: str | None = None) -> Outcomes:
    """RouterBench 0-shot subsets (train + test files of each task): `routerbench` or `routerbench:mbpp`.

    Rows with NaN correctness for any model, and repeated `sample_id`s (the first is kept),
    are dropped and reported in metadata["dropped"].
    """
    root = data_dir() / "routerbench"
    if not root.is_dir():
        raise OptLLMError(f"{root}: routerbench folder not found in the data folder")
    tasks = _parts(part, ROUTERBENCH_TASKS, "routerbench task")
    frames = []
    for t in tasks:
        for sp in ("train", "test"):
            path = root / f"{t}_{sp}.csv"
            df = read_table(path)
            df["_file"] = path.name
            df["_row"] = np.arange(len(df)) + 2
            frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    models = [c[: -len("|total_cost")] for c in df.columns if str(c).endswith("|total_cost")]
    miss = [m for m in models if m not in df.columns]
    if not models or miss:
        raise OptLLMError(f"{root}: expected '<m>' and '<m>|total_cost' columns; missing {miss or 'all'}")
    corr = df[models].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    cost = df[[f"{m}|total_cost" for m in models]].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    nan_rows = np.isnan(corr).any(axis=1) | np.isnan(cost).any(axis=1)
    repeated = int(df["sample_id"].duplicated().sum())
    # after the NaN rows go, a sample_id still present twice keeps its first row
    keep = ~nan_rows
    dup = df["sample_id"].where(keep).duplicated().to_numpy() & keep
    keep &= ~dup

    def where(mask: np.ndarray) -> list[str]:
        return [f"{f}:{r} ({sid})" for f, r, sid in zip(df["_file"][mask], df["_row"][mask], df["sample_id"][mask])]

    dropped = {
        "nan_correctness_rows": int(nan_rows.sum()),
        "nan_cells": int(np.isnan(corr).sum()),
        "duplicate_sample_id_rows": int(dup.sum()),
        "repeated_sample_ids_in_files": repeated,
        "nan_examples": where(nan_rows)[:10],
        "duplicate_examples": where(dup)[:10],
    }
    df = df[keep]
    return Outcomes(
        query_ids=df["sample_id"].astype(str).to_numpy(),
        models=tuple(models),
        correct=corr[keep],
        cost=cost[keep],
        texts=np.array([_prompt_text(str(x)) for x in df["prompt"]], dtype=object),
        name="routerbench" if not part else f"routerbench:{','.join(tasks)}",
        metadata={"source": str(root), "tasks": tasks, "dropped": dropped,
                  "price_source": "given per call in <m>|total_cost"},
    )


def _bool_matrix(df: pd.DataFrame, models: list[str], path: Path) -> np.ndarray:
    out = np.empty((len(df), len(models)))
    for k, m in enumerate(models):
        s = df[m].astype(str).str.strip().str.lower()
        v = s.map({"true": 1.0, "false": 0.0, "1": 1.0, "0": 0.0, "1.0": 1.0, "0.0": 0.0})
        if v.isna().any():
            r = int(np.flatnonzero(v.isna().to_numpy())[0])
            raise OptLLMError(f"{path}: row {r + 2}, column {m!r}: {df[m].iloc[r]!r} is not true/false")
        out[:, k] = v.to_numpy(dtype=np.float64)
    return out


def load_routellm(part: str | None = None, prices: str | Path | None = None,
                  encoding: str = OFFLINE_DEFAULT, mmlu_output_tokens: float = 1.0,
                  drop_contaminated: bool = False) -> Outcomes:
    """RouteLLM's MMLU or GSM8K with its two models: `routellm:mmlu`, `routellm:gsm8k`.

    No costs ship with the data: cost = tiktoken prompt tokens × input price + output tokens ×
    output price (GSM8K: tokens of each model's response; MMLU: `mmlu_output_tokens`, one
    answer letter by default). Prices are configuration (`prices=`; default a packaged table
    of stated assumptions). Prompts in `contaminated_prompts.jsonl` are counted, and dropped
    with `drop_contaminated=True`.
    """
    from importlib import resources

    task = (part or "").lower()
    if task not in ("mmlu", "gsm8k"):
        raise OptLLMError(f"unknown routellm task {part!r}; use routellm:mmlu or routellm:gsm8k")
    root = data_dir() / "routellm" / task
    if not root.is_dir():
        raise OptLLMError(f"{root}: folder not found in the data folder")
    price_path = Path(prices) if prices else Path(str(resources.files("optllm") / "resources" / "routellm_prices.json"))
    table = load_prices(price_path)
    if task == "mmlu":
        files = sorted((root / "responses").glob("mmlu_*.csv"))
        if not files:
            raise OptLLMError(f"{root / 'responses'}: no mmlu_*.csv files")
        frames = []
        for f in files:
            d = _read_str_csv(f, ["prompt"])
            d["_id"] = [f"{f.stem[5:]}:{i}" for i in range(len(d))]
            frames.append(d)
        df = pd.concat(frames, ignore_index=True)
        path = root / "responses"
    else:
        path = root / "gsm8k_responses.csv"
        df = _read_str_csv(path, ["prompt"])
        df["_id"] = [f"gsm8k:{i}" for i in range(len(df))]
    models = [c for c in df.columns if c not in ("prompt", "_id") and not c.endswith("_response")]
    unknown = [m for m in models if m not in table]
    if unknown:
        raise OptLLMError(f"{price_path}: no price for model(s) {unknown}")
    correct = _bool_matrix(df, models, path)
    prompts = df["prompt"].tolist()
    pt = np.repeat(count_tokens(prompts, encoding)[:, None].astype(np.float64), len(models), axis=1)
    ct = np.empty_like(pt)
    for k, m in enumerate(models):
        if f"{m}_response" in df.columns:
            ct[:, k] = count_tokens(df[f"{m}_response"].tolist(), encoding)
        else:
            ct[:, k] = mmlu_output_tokens
    cin = np.array([table[m]["cost_input"] for m in models])
    cout = np.array([table[m]["cost_output"] for m in models])
    cont_path = root / "contaminated_prompts.jsonl"
    contaminated = np.zeros(len(df), dtype=bool)
    if cont_path.exists():
        evals = {json.loads(line).get("eval_prompt", "") for line in cont_path.read_text().splitlines() if line.strip()}
        contaminated = df["prompt"].isin(evals).to_numpy()
    meta: dict[str, Any] = {
        "source": str(root), "price_file": str(price_path), "encoding": encoding,
        "price_assumption": "no prices ship with RouteLLM; tokens × the price file",
        "contaminated_prompts": int(contaminated.sum()),
        "output_tokens": "tiktoken count of each response" if task == "gsm8k"
        else f"{mmlu_output_tokens} per answer (MMLU responses are not stored)",
    }
    keep = ~contaminated if drop_contaminated else np.ones(len(df), dtype=bool)
    if drop_contaminated:
        meta["dropped"] = {"contaminated_prompts": int(contaminated.sum())}
    # some MMLU prompts repeat across files: ids are per file and row, so they stay unique
    return Outcomes(
        query_ids=df["_id"].to_numpy()[keep],
        models=tuple(models),
        correct=correct[keep],
        cost=(pt * cin + ct * cout)[keep],
        texts=np.asarray(prompts, dtype=object)[keep],
        prompt_tokens=pt[keep],
        completion_tokens=ct[keep],
        name=f"routellm:{task}",
        metadata=meta,
    )
