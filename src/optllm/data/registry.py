"""`load(name_or_path)`: one registry of named datasets, plus any file in a generic format."""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from optllm.data.outcomes import Outcomes
from optllm.data.paths import data_dir
from optllm.errors import OptLLMError


@dataclass(frozen=True)
class DatasetInfo:
    """A named dataset: how to load it and which files it needs (relative to the data dir)."""

    name: str
    description: str
    loader: Callable[..., Outcomes]
    files: tuple[str, ...] = ()
    parts: tuple[str, ...] = ()  # valid `name:part` selectors

    def available(self) -> bool:
        """True when every needed file is present (bundled sets are always available)."""
        if not self.files:
            return True
        d = data_dir(required=False)
        return d is not None and all((d / f).exists() for f in self.files)


REGISTRY: dict[str, DatasetInfo] = {}


def register(info: DatasetInfo) -> None:
    """Add (or replace) a named dataset."""
    REGISTRY[info.name] = info


def _overruling(**kw: Any) -> Outcomes:
    from optllm.data.wide import load_wide

    path = data_dir() / "overruling" / "overruling.csv"
    out = load_wide(path, name="overruling", text_column=kw.pop("text_column", "query"), **kw)
    out.metadata["price_source"] = "given per call in <m>_cost (FrugalGPT serviceinfo.json prices)"
    return out


def bundled_path() -> Path:
    """The compressed copy of overruling.csv that ships inside the package."""
    return Path(str(resources.files("optllm") / "resources" / "overruling.csv.gz"))


def _demo(**kw: Any) -> Outcomes:
    from optllm.data.wide import load_wide

    return load_wide(bundled_path(), name="overruling", text_column=kw.pop("text_column", "query"), **kw)


def _builtin() -> None:
    from optllm.data import benchmarks as b
    from optllm.data.synthetic import synthetic

    register(DatasetInfo("overruling", "legal yes/no questions (FrugalGPT/OptLLM), 2,160 × 12",
                         _overruling, ("overruling/overruling.csv",)))
    register(DatasetInfo("demo", "bundled compressed copy of overruling (works offline, no data dir)", _demo))
    register(DatasetInfo("logparsing", "LogPai Loghub-2k log parsing (OptLLM), 12 systems × 2,000 × 8",
                         b.load_logparsing, ("log_parsing", "prices/log_parsing_prices.json"),
                         parts=b.LOG_SYSTEMS))
    register(DatasetInfo("routerbench", "RouterBench 0-shot subsets (ARC, MBPP, Winogrande) × 11",
                         b.load_routerbench, ("routerbench",), parts=b.ROUTERBENCH_TASKS))
    register(DatasetInfo("routellm", "RouteLLM MMLU / GSM8K, 2 models, token-priced",
                         b.load_routellm, ("routellm",), parts=("mmlu", "gsm8k")))
    register(DatasetInfo("synthetic", "seeded item-response generator with texts (synthetic:N or synthetic:NxM)",
                         lambda part=None, **kw: synthetic(**{"texts": True, **_synthetic_args(part), **kw})))
    register(DatasetInfo("synthetic-hidden", "generated world for the guarantees: 200 near-duplicate templates whose "
                         "models fail together, and clusters the text does not show (synthetic-hidden:NxM)",
                         lambda part=None, **kw: synthetic(**{"texts": True, "templates": 200, "hidden": 1.0, "seed": 1,
                                                              **_synthetic_args(part), **kw})))


def _synthetic_args(part: str | None) -> dict[str, int]:
    if not part:
        return {"n": 10_000, "m": 12}
    try:
        if "x" in part:
            n, m = part.lower().split("x")
            out = {"n": int(float(n)), "m": int(m)}
        else:
            out = {"n": int(float(part)), "m": 12}
    except ValueError:
        raise OptLLMError(f"synthetic:{part}: expected synthetic:N or synthetic:NxM, e.g. synthetic:100000x12") from None
    if out["n"] < 2 or out["m"] < 1:
        raise OptLLMError(f"synthetic:{part}: needs at least 2 queries and 1 model (synthetic:NxM, e.g. synthetic:1000x5)")
    return out


def load(name_or_path: str | Path, **options: Any) -> Outcomes:
    """Load a named dataset (`overruling`, `logparsing[:Apache,HDFS]`, `routerbench[:mbpp]`,
    `routellm:gsm8k`, `synthetic[:NxM]`, `demo`) or a file in the long or wide format."""
    if not REGISTRY:
        _builtin()
    text = str(name_or_path)
    base, _, part = text.partition(":")
    if base in REGISTRY and not Path(text).exists():
        info = REGISTRY[base]
        if part:
            import inspect

            if "part" not in inspect.signature(info.loader).parameters:
                raise OptLLMError(f"{text}: the dataset {base!r} has no parts; use {base!r} alone")
            options["part"] = part
        elif base == "routellm":
            raise OptLLMError("routellm needs a task: routellm:mmlu or routellm:gsm8k")
        return info.loader(**options)
    path = Path(text).expanduser()
    if not path.exists():
        if path.suffix or "/" in text or "\\" in text:
            raise OptLLMError(f"{path}: file not found")
        raise OptLLMError(f"unknown dataset {text!r}; named datasets: {', '.join(sorted(REGISTRY))}, or a file path")
    return load_file(path, **options)


def load_file(path: Path, **options: Any) -> Outcomes:
    """A user's own file: long format if it has `query_id, model, correct`, else wide."""
    from optllm.data.wide import is_parquet, load_long, load_wide, looks_long, parquet_columns, read_table

    if is_parquet(path) and not looks_long(parquet_columns(path)):
        return load_wide(path, **options)  # its text column left on disk
    df = read_table(path)
    if looks_long(df):
        return load_long(path, df=df, **options)
    return load_wide(path, df=df, **options)


def datasets() -> list[DatasetInfo]:
    """All named datasets."""
    if not REGISTRY:
        _builtin()
    return list(REGISTRY.values())
