"""`optllm datasets` / `describe` end to end, and the one-line errors with exit code 2."""
from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from optllm.cli import app

runner = CliRunner()


def test_describe_json_shape() -> None:
    r = runner.invoke(app, ["describe", "demo", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["name"] == "overruling" and d["n_queries"] == 2160 and d["best_model"] == "gpt-4"
    assert {"name", "accuracy", "total_cost"} <= set(d["models"][0])
    assert {"accuracy", "total_cost"} <= set(d["oracle"])


def test_describe_table() -> None:
    r = runner.invoke(app, ["describe", "demo"])
    assert r.exit_code == 0 and "oracle" in r.stdout and "gpt-4" in r.stdout


def test_datasets_lists_registry() -> None:
    r = runner.invoke(app, ["datasets", "--json"])
    assert r.exit_code == 0
    names = {d["name"] for d in json.loads(r.stdout)}
    assert {"overruling", "logparsing", "routerbench", "routellm", "synthetic", "demo"} <= names


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from optllm.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=120, env=env)


def test_bad_input_exit_2_one_line(tmp_path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("query_id,model,correct,cost\nq1,a,1,-3\n")
    for args, needle in [(["describe", "/no/such.csv"], "file not found"),
                         (["describe", "nosuchset"], "unknown dataset"),
                         (["describe", str(bad)], "negative cost")]:
        r = _cli(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert needle in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_missing_data_folder_is_clear(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("OPTLLM_DATA_DIR", str(tmp_path / "nothing"))
    r = _cli("describe", "overruling")
    assert r.returncode == 2 and "data folder not found" in r.stderr


def test_bad_dataset_selectors_and_reps_are_one_line_errors() -> None:
    from typer.testing import CliRunner

    from optllm.cli import app

    for args, says in ((["describe", "synthetic:5x0"], "at least 2 queries"),
                       (["describe", "synthetic:-5x3"], "at least 2 queries"),
                       (["describe", "demo:x"], "has no parts"),
                       (["describe", "synthetic:abc"], "synthetic:abc: expected"),
                       (["bench", "synthetic:200x3", "--reps", "0"], "--reps must be at least 1")):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 2 and says in r.output and "Traceback" not in r.output, (args, r.output)


def test_negative_or_text_token_counts_in_labels_are_refused(tmp_path) -> None:
    import pytest

    from optllm.data import load_long
    from optllm.errors import OptLLMError

    p = tmp_path / "l.csv"
    p.write_text("query_id,model,correct,completion_tokens\nq1,a,1,-5\nq1,b,0,3\n")
    with pytest.raises(OptLLMError, match="row 2, column 'completion_tokens': negative"):
        load_long(p, require_cost=False)
    p.write_text("query_id,model,correct,prompt_tokens\nq1,a,1,many\nq1,b,0,3\n")
    with pytest.raises(OptLLMError, match="not a number"):
        load_long(p, require_cost=False)
    p.write_text("query_id,model,correct,prompt_tokens\nq1,a,1,\nq1,b,0,3\n")
    assert load_long(p, require_cost=False).n == 1  # unknown (empty) is allowed


def test_tables_are_not_cut_to_80_columns_in_a_pipe() -> None:
    import os

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    r = _cli("datasets", env=env)
    assert r.returncode == 0, r.stderr
    assert max(len(x) for x in r.stdout.splitlines()) > 80  # stdout is a pipe here, not a terminal
    assert "legal yes/no questions (FrugalGPT/OptLLM), 2,160 × 12" in r.stdout  # the description is whole
    narrow = _cli("datasets", env={**env, "COLUMNS": "80"})
    assert max(len(x) for x in narrow.stdout.splitlines()) <= 80  # the user's COLUMNS still wins
