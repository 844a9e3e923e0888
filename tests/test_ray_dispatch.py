"""`dispatch --engine ray` on a local 2-CPU Ray cluster against the fake OpenAI server (127.0.0.1):
every query answered once with the local engine's answers, one global spend cap with workers
racing, crash and resume (either engine) without a query sent twice, no API key written."""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_openai import FakeOpenAI, read_log, spawn  # noqa: E402

from optllm.cost import count_tokens  # noqa: E402
from optllm.dispatch import dispatch, ledger_path  # noqa: E402
from optllm.engine import ray_available
from optllm.errors import OptLLMError  # noqa: E402
from optllm.planning import PlanItem  # noqa: E402
from test_dispatch import FAST, answers, catalogue, items  # noqa: E402


# the Ray workers inherit the environment of the cluster's start: never a proxy for 127.0.0.1
for _var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy", "OPENAI_BASE_URL"):
    os.environ.pop(_var, None)
os.environ["NO_PROXY"] = "127.0.0.1,localhost"


def _ray_dispatch(*args, **kw):
    from optllm.engine.ray_dispatch import ray_dispatch

    return ray_dispatch(*args, **kw)


def _rows(path: Path) -> dict[str, tuple]:
    """What the answers file says of each query, without timings and call ids."""
    return {r["id"]: (r["model"], r["answer"], r["prompt_tokens"], r["completion_tokens"], r["cost"],
                      r["finish_reason"], r["planned_model"]) for r in answers(path)}


def test_all_answered_once_same_answers_as_local(cluster, tmp_path: Path) -> None:
    its = items(40) + [PlanItem(f"b{i}", f"other {i} " * (i % 3 + 1), "b") for i in range(20)]
    with FakeOpenAI(completion_tokens=6, responder=lambda model, prompt: f"{model}|{prompt[::-1]}") as srv:
        cat = catalogue(srv.base_url)
        rep = _ray_dispatch(its, cat, tmp_path / "ray.jsonl", concurrency=4, workers=2, **FAST)
        assert rep.answered == 60 and not rep.failed and rep.remaining == 0 and rep.not_sent == 0
        assert rep.workers == 2 and sum(rep.shards) == 60
        assert max(srv.served.values()) == 1 and sum(srv.requests.values()) == 60
        local = dispatch(its, cat, tmp_path / "local.jsonl", concurrency=4, **FAST)
    assert local.answered == 60
    ray_rows, local_rows = _rows(tmp_path / "ray.jsonl"), _rows(tmp_path / "local.jsonl")
    assert len(answers(tmp_path / "ray.jsonl")) == 60 and ray_rows == local_rows
    assert rep.spent_total == pytest.approx(sum(r[4] for r in ray_rows.values()))
    events = [json.loads(x)["event"] for x in ledger_path(tmp_path / "ray.jsonl").read_text().splitlines()]
    assert events[0] == "run_start" and events[-1] == "run_end"
    assert events.count("reserve") == events.count("answer") == 60
    # a second run (either engine) has nothing to send
    with FakeOpenAI() as srv2:
        again = _ray_dispatch(its, catalogue(srv2.base_url), tmp_path / "ray.jsonl", workers=2, **FAST)
        assert again.already_answered == 60 and again.answered == 0 and sum(srv2.requests.values()) == 0


@pytest.mark.parametrize("calls", [0.0, 3.5, 9.2])
def test_global_cap_holds_with_workers_racing(cluster, tmp_path: Path, calls: float) -> None:
    out = tmp_path / "a.jsonl"
    its = items(40, "b")
    with FakeOpenAI(completion_tokens=15, latency=0.01) as srv:
        cat = catalogue(srv.base_url)
        worst = max(cat["b"].reservation(count_tokens([it.prompt])[0] + 7) for it in its)
        cap = calls * worst
        rep = _ray_dispatch(its, cat, out, concurrency=8, max_spend=cap, workers=2, **FAST)
        real = sum(r["cost"] for r in answers(out))
        assert real <= cap and rep.spent_total <= cap and rep.over_cap == 0
        assert rep.answered >= int(calls) and rep.answered + rep.not_sent == 40 and not rep.failed
        assert rep.stopped and "would exceed the spend cap" in rep.stopped
        assert sum(srv.requests.values()) == rep.answered  # refused queries were not sent
        assert real + worst > cap  # the next call could have broken the cap
        # a local resume with a bigger cap: one cap over both runs, nothing sent twice
        rep2 = dispatch(its, cat, out, concurrency=4, max_spend=cap + 3 * worst, **FAST)
        assert sum(r["cost"] for r in answers(out)) <= cap + 3 * worst
        assert rep2.already_answered == rep.answered and rep2.answered >= 3
        assert max(srv.served.values()) == 1


def test_server_killed_mid_run_then_resume_sends_nothing_twice(cluster, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    out = tmp_path / "a.jsonl"
    its = items(80)
    proc, port = spawn(log, latency=0.03)
    killed = threading.Event()

    def killer() -> None:  # SIGKILL the server once a few answers are on disk: requests drop mid-flight
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if out.exists() and sum(1 for _ in open(out)) >= 12:
                proc.kill()
                killed.set()
                return
            time.sleep(0.005)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        rep = _ray_dispatch(its, catalogue(f"http://127.0.0.1:{port}/v1"), out, concurrency=3, workers=2,
                            max_attempts=2, **FAST)
    finally:
        t.join(70)
        proc.kill()
        proc.wait(10)
    first = {r["id"] for r in answers(out)}
    assert killed.is_set() and 12 <= len(first) < 80 and rep.failed
    assert set(rep.errors) <= {"connection", "timeout"}
    proc2, port2 = spawn(log, latency=0.0)
    try:
        rep2 = _ray_dispatch(its, catalogue(f"http://127.0.0.1:{port2}/v1"), out, concurrency=3, workers=2, **FAST)
    finally:
        proc2.kill()
        proc2.wait(10)
    assert rep2.already_answered == len(first) and rep2.answered == 80 - len(first) and not rep2.failed
    rows = answers(out)
    assert len(rows) == 80 and len({r["id"] for r in rows}) == 80
    requests, served = read_log(log)
    prompts = {it.id: it.prompt for it in its}
    for qid in first:  # answered before the crash: never sent again
        assert requests[prompts[qid]] == 1 and served[prompts[qid]] == 1
    assert max(served.values()) == 1
    # dropped connections may have been billed: their reservations count as spent
    assert rep2.spent_before >= sum(r["cost"] for r in rows if r["id"] in first) - 1e-12


def test_no_api_key_in_files_or_report(cluster, tmp_path: Path) -> None:
    key = "sk-ray" + "Zq7" * 10
    out = tmp_path / "a.jsonl"
    with FakeOpenAI(require_key=key, echo_key=True) as srv:
        cat = catalogue(srv.base_url, defaults={"api_key_env": "FAKE_RAY_KEY"})
        rep = _ray_dispatch(items(10), cat, out, workers=2, environ={"FAKE_RAY_KEY": key}, **FAST)
        assert rep.answered == 10
        bad = _ray_dispatch(items(12), cat, tmp_path / "b.jsonl", workers=2,
                            environ={"FAKE_RAY_KEY": key[:-1] + "X"}, **FAST)  # the server quotes it back
        assert bad.answered == 0 and bad.failed
    for path in (out, ledger_path(out), tmp_path / "b.jsonl", ledger_path(tmp_path / "b.jsonl")):
        if path.exists():
            text = path.read_text()
            assert key not in text and key[:-1] + "X" not in text
    for r in (rep, bad):
        text = json.dumps(r.as_dict())
        assert key not in text and key[:-1] + "X" not in text


def test_checked_before_a_cluster_starts(tmp_path: Path) -> None:
    with FakeOpenAI() as srv:
        cat = catalogue(srv.base_url)
        if not ray_available():
            with pytest.raises(OptLLMError, match=r"pip install 'optllm\[ray\]'"):
                _ray_dispatch(items(3), cat, tmp_path / "a.jsonl")
            return
        with pytest.raises(OptLLMError, match="twice"):
            _ray_dispatch(items(3) + items(1), cat, tmp_path / "a.jsonl", environ={})
        with pytest.raises(OptLLMError, match="--workers"):
            _ray_dispatch(items(3), cat, tmp_path / "a.jsonl", workers=0)
        with pytest.raises(OptLLMError, match="--concurrency"):
            _ray_dispatch(items(3), cat, tmp_path / "a.jsonl", concurrency=0)
        assert sum(srv.requests.values()) == 0
    assert not (tmp_path / "a.jsonl").exists()


def test_ctrl_c_stops_every_worker_records_their_calls_and_resume_sends_nothing_twice(cluster, tmp_path: Path) -> None:
    """SIGINT to `dispatch --engine ray`: no worker starts a new call, the calls in flight are
    recorded, the run exits 130 with the summary and says so in the ledger, and a resume sends
    each query once in all."""
    from test_dispatch_cli import ctrl_c_then_resume

    address = cluster.get_runtime_context().gcs_address
    out = ctrl_c_then_resume(tmp_path, 80, "--engine", "ray", "--address", address, "--workers", "2",
                             "--concurrency", "4")
    events = [json.loads(x) for x in ledger_path(out).read_text().splitlines()]
    assert any(e.get("event") == "stopped" and "interrupted by SIGINT" in e.get("reason", "") for e in events)
