"""`optllm dispatch` as a user runs it, under faults: Ctrl-C mid-run, keys in every format
never shown, a server that is down, a cap below the plan's cost (issue 16)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_openai import FakeOpenAI, read_log, spawn  # noqa: E402

from optllm.cli import app  # noqa: E402
from optllm.cost import load_catalogue  # noqa: E402
from optllm.errors import OptLLMError  # noqa: E402

runner = CliRunner()

KEYS = {  # one of each common format (none is real)
    "openai": "sk-proj-Zq3vT8wLmN2pR5sX7yB1cD4fG6hJ9kA0eI2oU5",
    "google": "AIzaSyD4x7Qm2Lp9Rt1Vb6Nc8Kd3Hf5Jg0Sw2Ze",
    "hex32": "9f86d081884c7d659a2feaa0c55ad015",
    "github": "ghp_R2d4F6h8J0k2L4m6N8p0Q2r4S6t8V0w2X4y6",
    "slack": "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOp",
    "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "base64": "Xy7Pq2Lm9Rt4Vb8Nc3Kd6Hf1Jg5Sw0ZeQa7Tb2Uc",
}


@pytest.fixture(autouse=True)
def _local_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def plan_folder(d: Path, n: int, models: str = "a") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    rows = ["id,model,fallbacks"] + [f"q{i},{models[i % len(models)]}," for i in range(n)]
    (d / "plan.csv").write_text("\n".join(rows) + "\n")
    (d / "prompts.jsonl").write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"question {i} " + "x " * (i % 7)})
                                             + "\n" for i in range(n)))
    return d


def catalogue_file(path: Path, url: str, key_env: str | None = None) -> Path:
    env = "null" if key_env is None else key_env
    path.write_text(f"""defaults:
  base_url: {url}
  api_key_env: {env}
  max_output_tokens: 20
  tokenizer: cl100k_base
  timeout_s: 5
models:
  - {{name: a, input_per_million: 100, output_per_million: 200}}
  - {{name: b, input_per_million: 1000, output_per_million: 3000}}
""")
    return path


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def everything_written(d: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in d.rglob("*") if p.is_file())


def shown(text: str) -> str:
    """Output with line wrapping undone (a key split over two lines is still shown)."""
    return "".join(text.split())


def ctrl_c_then_resume(tmp_path: Path, n: int, *options: str) -> Path:
    """`optllm dispatch PLAN ... *options` on n queries against a slow fake server, SIGINT once
    5 answers are in: exit 130 with the summary, every call in flight waited for and recorded;
    the same command again answers the rest, each query served once in all → the answers file."""
    log = tmp_path / "server.log"
    proc, port = spawn(log, latency=0.3)
    try:
        plan = plan_folder(tmp_path / "plan", n)
        cat = catalogue_file(tmp_path / "models.yaml", f"http://127.0.0.1:{port}/v1")
        out = tmp_path / "answers.jsonl"
        cmd = [sys.executable, "-m", "optllm", "dispatch", str(plan), "--models", str(cat), "--out", str(out),
               "--no-progress", *options]
        env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost"}
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 5):
            time.sleep(0.02)
        child.send_signal(signal.SIGINT)
        stdout, stderr = child.communicate(timeout=120)
        assert child.returncode == 130, stderr[-2000:]
        assert "interrupted by SIGINT" in stdout and "answered" in stdout and "Traceback" not in stderr
        first = out.read_text().count("\n")
        assert 5 <= first < n
        requests, _ = read_log(log)
        assert sum(requests.values()) == first  # every call in flight at Ctrl-C was waited for and recorded
        again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
        assert again.returncode == 0, again.stderr[-2000:]
        requests, served = read_log(log)
        assert len(served) == n and max(requests.values()) == 1 and max(served.values()) == 1
        return out
    finally:
        proc.kill()
        proc.wait(10)


def test_ctrl_c_waits_for_calls_in_flight_prints_a_summary_and_resume_sends_nothing_twice(tmp_path: Path) -> None:
    ctrl_c_then_resume(tmp_path, 60, "--concurrency", "8", "--max-spend", "5")


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_a_key_in_the_catalogue_is_refused_without_being_shown(tmp_path: Path, kind: str) -> None:
    key = KEYS[kind]
    cat = catalogue_file(tmp_path / "models.yaml", "http://127.0.0.1:9/v1", key_env=key)
    with pytest.raises(OptLLMError) as e:
        load_catalogue(cat)
    assert key not in str(e.value) and "looks like an API key" in str(e.value)
    plan = plan_folder(tmp_path / "plan", 3)
    r = runner.invoke(app, ["dispatch", str(plan), "--models", str(cat), "--out", str(tmp_path / "a.jsonl")])
    assert r.exit_code == 2 and key not in shown(r.output) and len(r.output.strip().splitlines()) == 1


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_a_key_never_appears_in_output_ledger_or_answers(tmp_path: Path, kind: str) -> None:
    key = KEYS[kind]
    plan = plan_folder(tmp_path / "plan", 4)
    out = tmp_path / "out" / "answers.jsonl"
    # a server that rejects the key and quotes it back in its error message
    with FakeOpenAI(require_key="the-right-one", echo_key=True) as srv:
        cat = catalogue_file(tmp_path / "models.yaml", srv.base_url, key_env="MY_LLM_KEY")
        r = runner.invoke(app, ["dispatch", str(plan), "--models", str(cat), "--out", str(out), "--no-progress"],
                          env={"MY_LLM_KEY": key})
    assert r.exit_code == 1 and "401" in r.output
    assert key not in shown(r.output) and key not in everything_written(tmp_path / "out")
    # a key in the URL (a query parameter) of a server that is down
    url = f"http://127.0.0.1:{free_port()}/v1?api_key={key}"
    cat = catalogue_file(tmp_path / "models2.yaml", url)
    r = runner.invoke(app, ["dispatch", str(plan), "--models", str(cat), "--out", str(out), "--no-progress",
                            "--backoff", "0.001"])
    assert r.exit_code == 1 and key not in shown(r.output) and key not in everything_written(tmp_path / "out")


def test_server_down_fails_fast_with_one_line_naming_the_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    plan = plan_folder(tmp_path / "plan", 300)
    cat = catalogue_file(tmp_path / "models.yaml", url)
    t0 = time.monotonic()
    r = runner.invoke(app, ["dispatch", str(plan), "--models", str(cat), "--out", str(tmp_path / "a.jsonl"),
                            "--no-progress", "--backoff", "0.01"])
    assert time.monotonic() - t0 < 30 and r.exit_code == 1
    lines = [x for x in r.output.splitlines() if url in x]
    assert len(lines) == 1 and "cannot reach" in lines[0] and "model(s) a" in lines[0]
    assert r.output.count("Connection error.") == 1  # one line, not one per query


def test_capped_dispatch_says_what_was_left(tmp_path: Path) -> None:
    with FakeOpenAI() as srv:
        plan = plan_folder(tmp_path / "plan", 40, models="ba")
        cat = catalogue_file(tmp_path / "models.yaml", srv.base_url)
        r = runner.invoke(app, ["dispatch", str(plan), "--models", str(cat), "--out", str(tmp_path / "a.jsonl"),
                                "--no-progress", "--max-spend", "0.5"])
    assert r.exit_code == 1
    assert "order: cheapest first" in r.output and "not sent" in r.output and "upper-bound cost" in r.output
    assert "stopped: the next call's upper-bound cost" in r.output


@pytest.mark.parametrize("args, option", [(["--backoff", "-5"], "--backoff"), (["--backoff", "nan"], "--backoff"),
                                          (["--concurrency", "0"], "--concurrency"),
                                          (["--max-attempts", "0"], "--max-attempts"),
                                          (["--max-spend", "-1"], "--max-spend"), (["--via", "fax"], "--via"),
                                          (["--poll-interval", "0", "--via", "batch"], "--poll-interval")])
def test_bad_dispatch_options_are_one_line_before_anything_else(tmp_path: Path, args: list, option: str) -> None:
    plan = plan_folder(tmp_path / "plan", 3)
    cat = catalogue_file(tmp_path / "models.yaml", "http://127.0.0.1:9/v1")
    r = runner.invoke(app, ["dispatch", str(plan), "--models", str(cat), "--out", str(tmp_path / "a.jsonl"), *args])
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and option in lines[0], r.output
    assert not (tmp_path / "a.jsonl").exists()


def test_a_missing_key_is_the_only_line_printed(tmp_path: Path) -> None:
    plan = plan_folder(tmp_path / "plan", 3)
    cat = catalogue_file(tmp_path / "models.yaml", "http://127.0.0.1:9/v1", key_env="SURELY_UNSET_KEY_VAR")
    r = runner.invoke(app, ["dispatch", str(plan), "--models", str(cat), "--out", str(tmp_path / "a.jsonl")],
                      env={"SURELY_UNSET_KEY_VAR": ""})
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and "SURELY_UNSET_KEY_VAR" in lines[0], r.output


def test_an_out_that_is_not_an_answers_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    plan = plan_folder(tmp_path / "plan", 3)
    cat = catalogue_file(tmp_path / "models.yaml", "http://127.0.0.1:9/v1")
    for text in ((plan / "prompts.jsonl").read_text(), "this is not json", '{"foo": 1}', "[1, 2]\n"):
        out = tmp_path / "answers.jsonl"
        out.write_text(text)
        r = runner.invoke(app, ["dispatch", str(plan), "--models", str(cat), "--out", str(out), "--max-spend", "1"])
        assert r.exit_code == 2 and "is not an answers file written by optllm dispatch" in r.output, r.output
        assert out.read_text() == text  # not "repaired"


@pytest.mark.parametrize("args", [["dispatch", "p", "--models", "m.yaml", "--out", "a.jsonl", "--max-spend", "abc"],
                                  ["plan", "p.jsonl", "--budget", "abc"], ["run", "demo", "--no-such-option"]])
def test_usage_errors_are_one_line_too(args: list) -> None:
    r = runner.invoke(app, args)
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "--help" in lines[0], r.output
