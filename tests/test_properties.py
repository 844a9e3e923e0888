"""Property tests of every loader on generated malformed files: random bytes, truncated
files, wrong types, NaN/inf/negative numbers, missing and duplicate columns, bad encodings.

Whatever the file holds, a loader either returns or raises `OptLLMError` with a one-line
message; nothing else ever escapes (no pandas, pyarrow, yaml, toml or numpy exception), and
the CLI turns it into exit code 2 and one line on stderr.
"""
from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optllm.cost import load_catalogue, parse_catalogue
from optllm.data import load, load_long
from optllm.errors import OptLLMError
from optllm.planning import read_plan
from optllm.planning.prompts import read_prompt_table

# OPTLLM_PROPERTY_EXAMPLES=1000 hunts longer; the default keeps the file well under a minute
EXAMPLES = int(os.environ.get("OPTLLM_PROPERTY_EXAMPLES", "40"))
FAST = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------- cells and tables
NUMBERS = st.sampled_from([0, 1, 0.5, -1, -0.0, 2, 1e308, float("nan"), float("inf"), float("-inf")])
TEXTS = st.sampled_from(["", " ", "x", "NaN", "nan", "inf", "-inf", "true", "False", "None", "null", "1e999",
                         "0x10", "1,5", "\"", "a\nb", "é", "\u0000", "007", ";", "\t"])
CELL = st.one_of(NUMBERS, TEXTS, st.none(), st.booleans(), st.integers(-10**20, 10**20),
                 st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6))

LONG_COLS = ["query_id", "model", "correct", "cost", "prompt", "prompt_tokens", "completion_tokens", "split"]
WIDE_COLS = ["id", "query", "a", "a_cost", "b", "b_cost"]
PROMPT_COLS = ["id", "prompt", "reference"]
PLAN_COLS = ["id", "model", "est_cost", "fallbacks"]


@st.composite
def tables(draw: Any, base: list[str]) -> tuple[list[str], list[list[Any]]]:
    """Column names (some missing, renamed or duplicated) and rows of cells: half the tables
    are well-formed with at most two cells spoiled, half are made of mixed, often bad, cells."""
    cols = [c for c in base if draw(st.integers(0, 5)) > 0]  # most columns kept
    if draw(st.integers(0, 2)) == 0 and cols:
        cols.append(draw(st.sampled_from(cols)))  # a duplicate column
    if draw(st.integers(0, 4)) == 0:
        cols.append(draw(st.sampled_from(["", "extra", "Unnamed: 0", "x_cost"])))
    n = draw(st.integers(0, 8))
    if draw(st.booleans()):
        rows = [[_plausible(c, r, draw) for c in cols] for r in range(n)]
        for _ in range(draw(st.integers(0, 2)) if rows and cols else 0):
            rows[draw(st.integers(0, n - 1))][draw(st.integers(0, len(cols) - 1))] = draw(CELL)
    else:
        rows = [[draw(CELL) for _ in cols] for _ in range(n)]
    return cols, rows


def _plausible(col: str, r: int, draw: Any) -> Any:
    if col in ("query_id", "id"):
        return f"q{r // 2}" if col == "query_id" else f"q{r}"
    if col == "model":
        return "ab"[r % 2]
    if col in ("correct", "a", "b"):
        return draw(st.sampled_from([0, 1]))
    if col.endswith("cost") or col.endswith("tokens"):
        return draw(st.sampled_from([0.001, 3, 10.5]))
    if col == "split":
        return draw(st.sampled_from(["train", "val"]))
    return f"text {r}"


def _csv_cell(v: Any) -> str:
    s = "" if v is None else str(v)
    return '"' + s.replace('"', '""') + '"' if any(ch in s for ch in ',"\n\r') else s


def to_csv(cols: list[str], rows: list[list[Any]], sep: str = ",") -> bytes:
    lines = [sep.join(_csv_cell(c) for c in cols)] + [sep.join(_csv_cell(v) for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")


def to_jsonl(cols: list[str], rows: list[list[Any]]) -> bytes:
    # json.dumps writes NaN/Infinity for non-finite floats; a dict keeps a duplicate column's last value
    return "".join(json.dumps(dict(zip(cols, row)), default=str) + "\n" for row in rows).encode("utf-8", "surrogatepass")


def to_parquet(cols: list[str], rows: list[list[Any]]) -> bytes:
    cols = list(dict.fromkeys(cols))  # Parquet has no duplicate columns
    df = pd.DataFrame([dict(zip(cols, row)) for row in rows], columns=cols)
    buf = io.BytesIO()
    try:
        df.to_parquet(buf)
    except Exception:  # mixed types Arrow cannot store: store them as text
        df.astype(str).to_parquet(buf)
    return buf.getvalue()


@st.composite
def spoiled(draw: Any, data: bytes) -> bytes:
    """The bytes as they are, truncated, with a bad byte put in, or re-encoded."""
    how = draw(st.sampled_from(["as is", "as is", "truncate", "bad byte", "latin-1", "utf-16", "bom", "nul"]))
    if how == "truncate" and data:
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "bad byte":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.sampled_from([b"\xff", b"\xe9", b"\x80\x81", b"\xc3"])) + data[at:]
    if how == "latin-1":
        return data.decode("utf-8", "replace").encode("latin-1", "replace") + b"caf\xe9\n"
    if how == "utf-16":
        return data.decode("utf-8", "replace").encode("utf-16")
    if how == "bom":
        return b"\xef\xbb\xbf" + data
    if how == "nul":
        return data + b"\x00\x00"
    return data


def file_bytes(base: list[str], kinds: tuple[str, ...] = ("csv", "jsonl", "parquet", "tsv", "json")) -> st.SearchStrategy:
    """(suffix, bytes): random bytes, or a generated table written as CSV/TSV/JSONL/JSON/Parquet
    and perhaps spoiled."""

    @st.composite
    def make(draw: Any) -> tuple[str, bytes]:
        kind = draw(st.sampled_from(kinds))
        if draw(st.integers(0, 5)) == 0:
            return kind, draw(st.binary(max_size=200))
        cols, rows = draw(tables(base))
        if kind == "csv":
            data = to_csv(cols, rows, sep=draw(st.sampled_from([",", ",", ",", ";", "\t"])))
        elif kind == "tsv":
            data = to_csv(cols, rows, sep=draw(st.sampled_from(["\t", "\t", ","])))
        elif kind == "jsonl":
            data = to_jsonl(cols, rows)
        elif kind == "json":
            data = json.dumps([dict(zip(cols, row)) for row in rows] if draw(st.booleans()) else
                              {c: [row[i] for row in rows] for i, c in enumerate(cols)},
                              default=str).encode("utf-8", "surrogatepass")
        else:
            data = to_parquet(cols, rows)
            if draw(st.integers(0, 3)):
                return kind, data  # a spoiled Parquet file is just unreadable: rarely worth a try
        return kind, draw(spoiled(data))

    return make()


def only_one_line_errors(fn: Callable[[], Any]) -> None:
    """Run `fn`: it returns, or raises OptLLMError with a non-empty one-line message."""
    try:
        fn()
    except OptLLMError as e:
        msg = str(e)
        assert msg.strip() and "\n" not in msg and "\r" not in msg, repr(msg)


def _write(folder: Path, name: str, data: bytes) -> Path:
    p = folder / name
    p.write_bytes(data)
    return p


# ---------------------------------------------------------------------------- outcome files
@FAST
@given(file_bytes(LONG_COLS))
def test_long_outcome_files(f: tuple[str, bytes]) -> None:
    kind, data = f
    with tempfile.TemporaryDirectory() as d:
        p = _write(Path(d), f"outcomes.{kind}", data)
        only_one_line_errors(lambda: load(p))


@FAST
@given(file_bytes(WIDE_COLS))
def test_wide_outcome_files(f: tuple[str, bytes]) -> None:
    kind, data = f
    with tempfile.TemporaryDirectory() as d:
        p = _write(Path(d), f"wide.{kind}", data)
        only_one_line_errors(lambda: load(p))


@FAST
@given(file_bytes(LONG_COLS))
def test_labels_files(f: tuple[str, bytes]) -> None:
    kind, data = f
    with tempfile.TemporaryDirectory() as d:
        p = _write(Path(d), f"labels.{kind}", data)
        only_one_line_errors(lambda: load_long(p, require_cost=False))
        only_one_line_errors(lambda: load_long(p, require_cost=False, on_missing="drop"))


@FAST
@given(file_bytes(PROMPT_COLS))
def test_prompt_tables(f: tuple[str, bytes]) -> None:
    kind, data = f
    with tempfile.TemporaryDirectory() as d:
        p = _write(Path(d), f"prompts.{kind}", data)
        only_one_line_errors(lambda: read_prompt_table(p))


@FAST
@given(file_bytes(PLAN_COLS, ("csv",)), file_bytes(PROMPT_COLS, ("jsonl",)))
def test_plan_folders(plan: tuple[str, bytes], prompts: tuple[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as d:
        _write(Path(d), "plan.csv", plan[1])
        _write(Path(d), "prompts.jsonl", prompts[1])
        only_one_line_errors(lambda: read_plan(d))


# ---------------------------------------------------------------------------- the catalogue
FIELDS = ["name", "model", "base_url", "api_key_env", "input_per_million", "output_per_million", "per_request",
          "tokenizer", "context", "max_output_tokens", "max_tokens_param", "prompt_overhead_tokens",
          "prompt_token_margin", "rpm", "tpm", "timeout_s", "expected_output_tokens", "nonsense"]
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=True),
                   st.text(max_size=8), TEXTS, NUMBERS)
VALUE = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                            max_size=3), max_leaves=6)
GOOD_MODEL = {"name": "m", "input_per_million": 1.0, "output_per_million": 2.0}


@st.composite
def catalogues(draw: Any) -> Any:
    """A parsed catalogue: mostly the right shape with wrong, odd or missing fields."""
    if draw(st.integers(0, 5)) == 0:
        return draw(VALUE)
    models = []
    for i in range(draw(st.integers(0, 3))):
        m: dict[str, Any] = dict(GOOD_MODEL, name=f"m{i}") if draw(st.booleans()) else {}
        for k in draw(st.lists(st.sampled_from(FIELDS), max_size=4)):
            m[k] = draw(VALUE)
        models.append(m)
    data: dict[str, Any] = {"models": models if draw(st.integers(0, 4)) else {f"m{i}": m for i, m in enumerate(models)}}
    if draw(st.booleans()):
        data["defaults"] = {k: draw(VALUE) for k in draw(st.lists(st.sampled_from(FIELDS), max_size=3))}
    if draw(st.integers(0, 6)) == 0:
        data[draw(st.text(max_size=5))] = draw(VALUE)
    return data


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
    if isinstance(v, int):
        return str(v)
    if v is None:
        return '""'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return json.dumps(str(v))


def to_toml(data: Any) -> bytes:
    if not isinstance(data, dict):
        return f"models = {_toml_value(data)}\n".encode("utf-8", "surrogatepass")
    out = []
    for k, v in data.items():
        if k == "models" and isinstance(v, list):
            continue
        out.append(f"{json.dumps(str(k))} = {_toml_value(v)}")
    for m in data.get("models", []) if isinstance(data.get("models"), list) else []:
        out.append("[[models]]")
        out.extend(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in m.items())
    return ("\n".join(out) + "\n").encode("utf-8", "surrogatepass")


@FAST
@given(catalogues())
def test_parse_catalogue(data: Any) -> None:
    only_one_line_errors(lambda: parse_catalogue(data, "models.yaml"))


@FAST
@given(catalogues(), st.sampled_from(["yaml", "toml", "random"]), st.data())
def test_catalogue_files(data: Any, kind: str, draw: Any) -> None:
    import yaml

    if kind == "random":
        raw, suffix = draw.draw(st.binary(max_size=200)), draw.draw(st.sampled_from(["yaml", "toml"]))
    elif kind == "yaml":
        raw, suffix = yaml.safe_dump(data, allow_unicode=True).encode("utf-8", "surrogatepass"), "yaml"
    else:
        raw, suffix = to_toml(data), "toml"
    raw = draw.draw(spoiled(raw))
    with tempfile.TemporaryDirectory() as d:
        p = _write(Path(d), f"models.{suffix}", raw)
        only_one_line_errors(lambda: load_catalogue(p))


# ---------------------------------------------------------------------------- the CLI
CLI_SETTINGS = settings(max_examples=max(EXAMPLES // 5, 8), deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _cli_one_line(args: list[str]) -> None:
    from typer.testing import CliRunner

    from optllm.cli import app

    r = CliRunner().invoke(app, args)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    if r.exit_code != 0:
        assert r.exit_code == 2, (args, r.exit_code, r.output)
        err = r.stderr
        assert "Traceback" not in r.output and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err


@CLI_SETTINGS
@given(file_bytes(LONG_COLS + WIDE_COLS[2:]))
def test_cli_describe_on_bad_files(f: tuple[str, bytes]) -> None:
    kind, data = f
    with tempfile.TemporaryDirectory() as d:
        p = _write(Path(d), f"outcomes.{kind}", data)
        _cli_one_line(["describe", str(p)])


def _local_catalogue(folder: Path) -> Path:
    """Models a and b on a closed local port, their key variable unset: dispatch refuses to
    send anything, whatever the plan says."""
    p = folder / "models.yaml"
    p.write_text("defaults: {base_url: 'http://127.0.0.1:9/v1', api_key_env: OPTLLM_TEST_NEVER_SET,"
                 " input_per_million: 1, output_per_million: 1}\nmodels: [{name: a}, {name: b}]\n")
    return p


@CLI_SETTINGS
@given(file_bytes(PLAN_COLS, ("csv",)))
def test_cli_dispatch_on_bad_plan(plan: tuple[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "plan"
        folder.mkdir()
        _write(folder, "plan.csv", plan[1])
        _write(folder, "prompts.jsonl", b'{"id": "q0", "prompt": "hi"}\n')
        models = _local_catalogue(Path(d))
        _cli_one_line(["dispatch", str(folder), "--models", str(models), "--out", str(Path(d) / "answers.jsonl")])


@CLI_SETTINGS
@given(st.sampled_from(["yaml", "toml"]), st.binary(min_size=1, max_size=60))
def test_cli_plan_on_bad_catalogue(suffix: str, junk: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        cat = _write(Path(d), f"models.{suffix}", b"models:\n  - name: m\n" + junk)
        prompts = _write(Path(d), "prompts.jsonl", b'{"id": "q0", "prompt": "hi"}\n')
        _cli_one_line(["plan", str(prompts), "--models", str(cat), "--labels", str(Path(d) / "labels.csv"),
                       "--budget", "1", "--out", str(Path(d) / "out")])


@pytest.mark.parametrize("data", [b"", b"\x00\xff\xfe\x91binary\x00", b"id,model\n\xe9,a\n", b"id;model\nq0;a\n"])
def test_cli_dispatch_empty_or_binary_plan_csv(tmp_path: Path, data: bytes) -> None:
    """The cases of issue 16: an empty or a binary plan.csv is one line naming the file."""
    from typer.testing import CliRunner

    from optllm.cli import app

    folder = tmp_path / "plan"
    folder.mkdir()
    (folder / "plan.csv").write_bytes(data)
    (folder / "prompts.jsonl").write_text('{"id": "q0", "prompt": "hi"}\n')
    models = _local_catalogue(tmp_path)
    r = CliRunner().invoke(app, ["dispatch", str(folder), "--models", str(models), "--out",
                                 str(tmp_path / "answers.jsonl")])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and len(r.stderr.strip().splitlines()) == 1
    assert "plan.csv" in r.stderr, r.stderr


# ---------------------------------------------------------------------------- the cases of issue 16
def test_catalogue_with_a_byte_that_is_not_utf8_names_line_and_column(tmp_path: Path) -> None:
    p = tmp_path / "models.yaml"
    p.write_bytes(b"models:\n  - name: m\n# caf\xe9\n")
    with pytest.raises(OptLLMError, match=r"models.yaml: line 3, column 6: byte 0xe9 is not UTF-8"):
        load_catalogue(p)
    p = tmp_path / "models.toml"
    p.write_bytes(b'[[models]]\nname = "m\xff"\n')
    with pytest.raises(OptLLMError, match=r"models.toml: line 2, column 10: byte 0xff is not UTF-8"):
        load_catalogue(p)


def test_yaml_reader_errors_are_one_line(tmp_path: Path) -> None:
    p = tmp_path / "models.yaml"
    p.write_text("models:\n  - name: m\u0007\n")  # a control character yaml refuses, with a multi-line message
    with pytest.raises(OptLLMError, match="invalid YAML") as e:
        load_catalogue(p)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("text, says", [
    ("query_id;model;correct;cost\nq1;a;1;0.1\nq1;b;0;0.2\n", "the delimiter looks like ';', not ','"),
    ("query_id\tmodel\tcorrect\tcost\nq1\ta\t1\t0.1\n", "the delimiter looks like a tab, not ','"),
])
def test_other_delimiter_is_named_not_a_wide_format_problem(tmp_path: Path, text: str, says: str) -> None:
    p = tmp_path / "outcomes.csv"
    p.write_text(text)
    with pytest.raises(OptLLMError) as e:
        load(p)
    assert says in str(e.value) and "wide" not in str(e.value) and "model columns" not in str(e.value)
