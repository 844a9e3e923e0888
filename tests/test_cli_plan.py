"""`optllm sample`, `optllm plan` and `optllm dispatch` end to end on the bundled overruling
data and a local fake OpenAI server (127.0.0.1 only)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_openai import FakeOpenAI  # noqa: E402

from optllm.cli import app  # noqa: E402
from optllm.data import load  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "models.yaml"
runner = CliRunner()
N, EVERY = 160, 8  # 160 prompts, every 8th labelled (20)


@pytest.fixture(autouse=True)
def _local_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """prompts.jsonl (160 overruling prompts), labels.csv (20 of them × 12 models, long format)."""
    d = tmp_path_factory.mktemp("ws")
    data = load("demo").subset(np.arange(N))
    pd.DataFrame({"id": [f"case-{i}" for i in data.query_ids], "prompt": data.texts}).to_json(
        d / "prompts.jsonl", orient="records", lines=True)
    lab = np.arange(0, N, EVERY)
    rows = [{"query_id": f"case-{data.query_ids[i]}", "model": mdl, "correct": data.correct[i, k],
             "cost": data.cost[i, k]} for i in lab for k, mdl in enumerate(data.models)]
    pd.DataFrame(rows).to_csv(d / "labels.csv", index=False)
    return d


def run(*args: str, env: dict | None = None):
    r = runner.invoke(app, list(args), env=env)
    return r


@pytest.fixture(scope="module")
def planned(ws: Path) -> Path:
    out = ws / "plan"
    r = run("plan", str(ws / "prompts.jsonl"), "--models", str(EXAMPLE), "--labels", str(ws / "labels.csv"),
            "--budget", "0.3", "--out", str(out), "--predictor", "knn")
    assert r.exit_code == 0, r.output
    return out


def fake_catalogue(path: Path, base_url: str, key_env: str | None = "FAKE_KEY") -> Path:
    """The example catalogue with every model pointed at the fake server."""
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["defaults"].update({"base_url": base_url, "api_key_env": key_env, "timeout_s": 10})
    raw["defaults"].pop("rpm", None)  # the example's 600 requests/minute would slow the test down
    for mdl in raw["models"]:
        mdl.pop("base_url", None)
        mdl.pop("api_key_env", None)
        mdl.pop("rpm", None)
        mdl.pop("tpm", None)
    path.write_text(yaml.safe_dump(raw))
    return path


# ---------------------------------------------------------------- sample
@pytest.mark.parametrize("strategy", ["random", "diverse"])
def test_sample_writes_chosen_prompts(ws: Path, tmp_path: Path, strategy: str) -> None:
    out = tmp_path / "s.jsonl"
    r = run("sample", str(ws / "prompts.jsonl"), "--size", "5%", "--strategy", strategy, "--seed", "1",
            "--out", str(out), "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert info["sampled"] == len(rows) == 8 and {"id", "prompt"} == set(rows[0])
    assert all(x["id"].startswith("case-") for x in rows) and len({x["id"] for x in rows}) == 8


def test_sample_errors(ws: Path, tmp_path: Path) -> None:
    r = run("sample", str(ws / "prompts.jsonl"), "--size", "lots", "--out", str(tmp_path / "s.jsonl"))
    assert r.exit_code == 2 and "--size 'lots'" in r.output
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n")
    r = run("sample", str(bad), "--size", "1", "--out", str(tmp_path / "s.jsonl"))
    assert r.exit_code == 2 and "missing column(s) ['id', 'prompt']" in r.output


# ---------------------------------------------------------------- plan
def test_plan_outputs(planned: Path) -> None:
    for f in ("plan.csv", "prompts.jsonl", "front.csv", "front.png", "summary.json"):
        assert (planned / f).is_file(), f
    assert (planned / "front.png").read_bytes()[:4] == b"\x89PNG"
    plan = pd.read_csv(planned / "plan.csv")
    assert list(plan.columns[:5]) == ["id", "model", "est_cost", "est_cost_upper", "p"]
    assert len(plan) == N - N // EVERY  # labelled prompts are not planned
    assert plan["est_cost"].sum() <= 0.3 + 1e-9 and (plan["est_cost_upper"] >= plan["est_cost"] - 1e-12).all()
    assert plan["p"].between(0, 1).all()
    s = json.loads((planned / "summary.json").read_text())
    assert s["n_planned"] == len(plan) and s["n_labelled"] == N // EVERY
    assert s["cost"]["cost_mean"] == pytest.approx(plan["est_cost"].sum())
    sel = s["selection"]  # the same Selection as `optllm run`, with its bounds
    assert sel["reachable"] and sel["goal"]["kind"] == "budget" and sel["confidence"] == 0.9
    assert sel["chosen"]["lower"] <= sel["chosen"]["estimated_accuracy"] <= sel["chosen"]["upper"]
    assert sel["reference"] is not None and s["n_train"] + s["n_validation"] == N // EVERY
    assert sum(s["assigned"].values()) == len(plan)
    assert {r["source"] for r in s["output_tokens"]} == {"derived from cost"}
    assert any("approximate" in n for n in s["notes"])
    front = pd.read_csv(planned / "front.csv")
    assert (np.diff(front["cost"]) >= -1e-12).all() and (np.diff(front["predicted_accuracy"]) >= -1e-12).all()
    assert (front["lower_bound"] <= front["estimated_accuracy"] + 1e-12).all()
    # every fallback is a catalogue model other than the chosen one
    fb = plan["fallbacks"].fillna("")
    assert all(m not in f.split(";") for m, f in zip(plan["model"], fb))


def test_plan_with_risk_and_target(ws: Path, tmp_path: Path) -> None:
    common = [str(ws / "prompts.jsonl"), "--models", str(EXAMPLE), "--labels", str(ws / "labels.csv"),
              "--predictor", "knn", "--json"]
    r = run("plan", *common, "--budget", "0.3", "--risk", "0.99", "--out", str(tmp_path / "p1"))
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["selection"]["goal"]["risk"] == 0.99 and s["cost"]["cost_at_risk"] <= 0.3
    assert s["selection"]["chosen"]["cost_at_risk"] <= 0.3 + 1e-12
    r = run("plan", *common, "--budget", "0.3", "--risk", "0.95", "--risk-method", "quantile", "--out",
            str(tmp_path / "p2"))
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["cost"]["cost_upper_sum_q95"] <= 0.3
    r = run("plan", *common, "--target-accuracy", "0.6", "--out", str(tmp_path / "p3"))
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    # certified, not predicted: the lower confidence bound reaches the target
    assert s["selection"]["reachable"] and s["selection"]["chosen"]["lower"] >= 0.6 - 1e-9


def test_plan_unreachable_target_declines_with_the_labels_it_needs(ws: Path, tmp_path: Path) -> None:
    out = tmp_path / "p"
    r = run("plan", str(ws / "prompts.jsonl"), "--models", str(EXAMPLE), "--labels", str(ws / "labels.csv"),
            "--predictor", "base", "--target-accuracy", "0.93", "--out", str(out))
    assert r.exit_code == 1, r.output
    assert "no plan reaches accuracy 0.9300" in r.output
    s = json.loads((out / "summary.json").read_text())
    assert s["selection"]["reachable"] is False and s["cost"] is None
    assert not (out / "plan.csv").exists() and (out / "front.csv").exists()
    if s["selection"]["labels_needed"]:
        assert "optllm sample" in s["next_step"] and "--exclude" in s["next_step"]
    # nothing to dispatch from such a folder, and it says why
    r = run("dispatch", str(out), "--models", str(EXAMPLE), "--out", str(tmp_path / "a.jsonl"))
    assert r.exit_code == 2 and "not certified" in r.output


def test_plan_without_goal_takes_the_knee_like_run(ws: Path, tmp_path: Path) -> None:
    r = run("plan", str(ws / "prompts.jsonl"), "--models", str(EXAMPLE), "--labels", str(ws / "labels.csv"),
            "--predictor", "base", "--out", str(tmp_path / "p"), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["selection"]["goal"]["kind"] == "knee"


def test_plan_default_predictor(ws: Path, tmp_path: Path) -> None:
    r = run("plan", str(ws / "prompts.jsonl"), "--models", str(EXAMPLE), "--labels", str(ws / "labels.csv"),
            "--budget", "0.5", "--out", str(tmp_path / "p"))
    assert r.exit_code == 0, r.output
    assert "estimated cost" in r.stdout and "held-out" in r.stdout and (tmp_path / "p" / "plan.csv").exists()


@pytest.mark.parametrize("extra, words", [
    (["--budget", "0.001"], "is below the cheapest plan"),
    (["--budget", "0.2", "--risk", "0.95", "--target-accuracy", "0.5"], "not both"),
    (["--budget", "0.2", "--confidence", "1.2"], "--confidence must lie in [0.5, 1)"),
    (["--budget", "0.2", "--folds", "1"], "--folds must be 0"),
    (["--budget", "0.2", "--predictor", "magic"], "unknown predictor"),
    (["--budget", "0.2", "--val-share", "1.5"], "--val-share"),
    (["--budget", "0.2", "--seed", "-1"], "--seed must be a non-negative integer"),
    (["--target-accuracy", "0.5", "--no-safe"], "--no-safe applies to --budget"),
    (["--target-accuracy", "0.5", "--risk", "0.9"], "--risk applies to --budget"),
    (["--budget", "0.3", "--risk", "0.95", "--risk-method", "magic"], "--risk-method"),
])
def test_plan_errors(ws: Path, tmp_path: Path, extra: list[str], words: str) -> None:
    r = run("plan", str(ws / "prompts.jsonl"), "--models", str(EXAMPLE), "--labels", str(ws / "labels.csv"),
            "--predictor", "base", "--out", str(tmp_path / "p"), *extra)
    assert r.exit_code == 2, r.output
    assert words in r.output and not (tmp_path / "p" / "plan.csv").exists()
    if "cheapest" in words:
        assert "reachable budgets: $" in r.output


def test_plan_label_model_typo_is_named(ws: Path, tmp_path: Path) -> None:
    lab = pd.read_csv(ws / "labels.csv")
    lab.loc[4, "model"] = "gpt-5"  # one row names a model no other query has
    bad = tmp_path / "labels.csv"
    lab.to_csv(bad, index=False)
    r = run("plan", str(ws / "prompts.jsonl"), "--models", str(EXAMPLE), "--labels", str(bad), "--budget", "1",
            "--out", str(tmp_path / "p"))
    assert r.exit_code == 2 and "['gpt-5']" in r.output and "typo" in r.output and "np.int64" not in r.output


def test_plan_label_model_missing_from_catalogue(ws: Path, tmp_path: Path) -> None:
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["models"] = [m for m in raw["models"] if m["name"] != "gpt-4"]
    cat = tmp_path / "m.yaml"
    cat.write_text(yaml.safe_dump(raw))
    r = run("plan", str(ws / "prompts.jsonl"), "--models", str(cat), "--labels", str(ws / "labels.csv"),
            "--budget", "1", "--out", str(tmp_path / "p"))
    assert r.exit_code == 2 and "['gpt-4']" in r.output and str(cat) in r.output


def test_plan_reports_prompts_over_context(ws: Path, tmp_path: Path) -> None:
    prompts = pd.read_json(ws / "prompts.jsonl", lines=True)
    prompts.loc[len(prompts)] = {"id": "huge", "prompt": "objection sustained " * 1100}  # ~2,200 tokens
    p = tmp_path / "prompts.csv"
    prompts.to_csv(p, index=False)
    r = run("plan", str(p), "--models", str(EXAMPLE), "--labels", str(ws / "labels.csv"), "--budget", "5",
            "--predictor", "base", "--out", str(tmp_path / "plan"), "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    # 2,048-token models cannot take it with 16 output tokens; the 4k/8k OpenAI ones can
    assert s["infeasible_pairs"]["gptj_6B"] == 1 and "gpt-4" not in s["infeasible_pairs"]
    assert any(e["id"] == "huge" and e["context"] == 2048 for e in s["infeasible_examples"])
    plan = pd.read_csv(tmp_path / "plan" / "plan.csv", dtype={"id": str})
    assert plan.loc[plan["id"] == "huge", "model"].iloc[0] in ("text-davinci-002", "gpt-3.5-turbo", "gpt-4")


# ---------------------------------------------------------------- dispatch
def test_dispatch_end_to_end_and_resume(planned: Path, tmp_path: Path) -> None:
    out = tmp_path / "answers.jsonl"
    with FakeOpenAI(completion_tokens=2) as srv:
        cat = fake_catalogue(tmp_path / "m.yaml", srv.base_url)
        r = run("dispatch", str(planned), "--models", str(cat), "--out", str(out), "--concurrency", "8",
                "--max-spend", "1.0", "--json", env={"FAKE_KEY": "k"})
        assert r.exit_code == 0, r.output
        rep = json.loads(r.stdout)
        plan = pd.read_csv(planned / "plan.csv", dtype={"id": str})
        assert rep["answered"] == len(plan) and rep["failed"] == 0 and rep["spent_total"] <= 1.0
        rows = [json.loads(x) for x in out.read_text().splitlines()]
        assert {x["id"] for x in rows} == set(plan["id"])
        assert dict(zip(plan["id"], plan["model"])) == {x["id"]: x["model"] for x in rows}
        r = run("dispatch", str(planned), "--models", str(cat), "--out", str(out), "--json", env={"FAKE_KEY": "k"})
        assert r.exit_code == 0 and json.loads(r.stdout)["already_answered"] == len(plan)
        assert max(srv.served.values()) == 1


def test_dispatch_refuses_before_sending(planned: Path, tmp_path: Path) -> None:
    with FakeOpenAI() as srv:
        cat = fake_catalogue(tmp_path / "m.yaml", srv.base_url, key_env="OPTLLM_TEST_MISSING_KEY")
        r = run("dispatch", str(planned), "--models", str(cat), "--out", str(tmp_path / "a.jsonl"))
        assert r.exit_code == 2 and "OPTLLM_TEST_MISSING_KEY" in r.output
        bad = tmp_path / "bad.yaml"
        bad.write_text(cat.read_text().replace("input_per_million: 30", "input_per_million: -30"))
        r = run("dispatch", str(planned), "--models", str(bad), "--out", str(tmp_path / "a.jsonl"),
                env={"OPTLLM_TEST_MISSING_KEY": "x"})
        assert r.exit_code == 2 and "model 'gpt-4', field 'input_per_million'" in r.output
        r = run("dispatch", str(tmp_path / "nope"), "--models", str(cat), "--out", str(tmp_path / "a.jsonl"))
        assert r.exit_code == 2 and "plan folder not found" in r.output
        assert sum(srv.requests.values()) == 0
    assert not (tmp_path / "a.jsonl").exists()


@pytest.mark.slow
def test_dispatch_process_killed_then_resumed(planned: Path, tmp_path: Path) -> None:
    out = tmp_path / "answers.jsonl"
    plan = pd.read_csv(planned / "plan.csv", dtype={"id": str})
    prompts = {json.loads(x)["id"]: json.loads(x)["prompt"] for x in (planned / "prompts.jsonl").read_text().splitlines()}
    with FakeOpenAI(latency=0.03) as srv:
        cat = fake_catalogue(tmp_path / "m.yaml", srv.base_url)
        args = [sys.executable, "-c", "from optllm.cli import main; main()", "dispatch", str(planned), "--models",
                str(cat), "--out", str(out), "--concurrency", "4", "--no-progress"]
        env = {**os.environ, "FAKE_KEY": "k", "NO_PROXY": "127.0.0.1,localhost"}
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 90
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                if out.exists() and out.read_text().count("\n") >= 20:
                    proc.send_signal(signal.SIGKILL)
                    break
                time.sleep(0.005)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode() if proc.stderr else ""
        first = {json.loads(x)["id"] for x in out.read_text().splitlines() if x.endswith("}")}
        assert 20 <= len(first) < len(plan)
        sent_before = dict(srv.requests)
        r = run("dispatch", str(planned), "--models", str(cat), "--out", str(out), "--concurrency", "8", "--json",
                env={"FAKE_KEY": "k"})
        assert r.exit_code == 0, r.output
        rows = [json.loads(x) for x in out.read_text().splitlines()]
        assert len(rows) == len(plan) and {x["id"] for x in rows} == set(plan["id"])  # nothing lost, no duplicate
        for qid in first:  # answered before the kill: never sent again
            assert srv.requests[prompts[qid]] == sent_before[prompts[qid]] == 1
        # at most the calls in flight at the kill (concurrency 4) were sent twice
        assert sum(v - 1 for v in srv.requests.values()) <= 4


def test_read_prompts_formats_and_errors(tmp_path: Path) -> None:
    from optllm.planning import read_prompts
    from optllm.errors import OptLLMError

    df = pd.DataFrame({"id": ["007", "8"], "prompt": ["a", "b"]})
    df.to_csv(tmp_path / "p.csv", index=False)
    df.to_parquet(tmp_path / "p.parquet")
    df.to_json(tmp_path / "p.jsonl", orient="records", lines=True)
    for f in ("p.csv", "p.parquet", "p.jsonl"):
        ids, texts = read_prompts(tmp_path / f)
        assert ids.tolist() == ["007", "8"] and texts == ["a", "b"], f
    (tmp_path / "dup.csv").write_text("id,prompt\n1,a\n1,b\n")
    with pytest.raises(OptLLMError, match=r"dup.csv: row 2: duplicate id '1'"):
        read_prompts(tmp_path / "dup.csv")
    (tmp_path / "noid.csv").write_text("id,prompt\n,a\n")
    with pytest.raises(OptLLMError, match="missing 'id'"):
        read_prompts(tmp_path / "noid.csv")
