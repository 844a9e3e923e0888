"""`optllm.dispatch` against a local fake OpenAI server (127.0.0.1 only): answers and real
costs recorded, retries, fallback, hard spend cap, resume after a crash, errors before any call."""
from __future__ import annotations

import asyncio
import json
import math
import random
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_openai import FakeOpenAI, read_log, spawn  # noqa: E402

from optllm.cost import Catalogue, count_tokens, parse_catalogue  # noqa: E402
from optllm.dispatch import ResumeState, dispatch, dispatch_async, ledger_path  # noqa: E402
from optllm.planning import PlanItem  # noqa: E402
from optllm.dispatch.ledger import read_jsonl  # noqa: E402
from optllm.dispatch.limits import RateLimiter, SpendGuard, backoff_delay  # noqa: E402
from optllm.errors import OptLLMError  # noqa: E402

FAST = {"backoff_base": 0.005, "backoff_cap": 0.05}


@pytest.fixture(autouse=True)
def _local_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never route 127.0.0.1 through a proxy from the environment."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def catalogue(base_url: str, **extra) -> Catalogue:
    models = [
        {"name": "a", "input_per_million": 100, "output_per_million": 200, "per_request": 0.0001},
        {"name": "b", "input_per_million": 1000, "output_per_million": 3000},
    ]
    for mdl in models:
        mdl.update(extra.get(mdl["name"], {}))
    return parse_catalogue({"defaults": {"base_url": base_url, "max_output_tokens": 20, "tokenizer": "cl100k_base",
                                         "timeout_s": 5, **extra.get("defaults", {})},
                            "models": models}, "test-models.yaml")


def items(n: int, model: str = "a", fallbacks: tuple[str, ...] = ()) -> list[PlanItem]:
    return [PlanItem(f"q{i}", f"question {i}: " + "word " * (i % 5), model, fallbacks) for i in range(n)]


def answers(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_answers_are_recorded_with_real_usage_and_cost(tmp_path: Path) -> None:
    out = tmp_path / "answers.jsonl"
    with FakeOpenAI(completion_tokens=7, answer="No") as srv:
        cat = catalogue(srv.base_url)
        rep = dispatch(items(12), cat, out, concurrency=4, **FAST)
    assert rep.answered == 12 and not rep.failed and rep.remaining == 0
    rows = answers(out)
    assert sorted(r["id"] for r in rows) == sorted(f"q{i}" for i in range(12))
    spec = cat["a"]
    for r in rows:
        assert r["answer"] == "No" and r["model"] == "a" and r["completion_tokens"] == 7
        prompt = next(it.prompt for it in items(12) if it.id == r["id"])
        assert r["prompt_tokens"] == count_tokens([prompt])[0] + 7
        assert r["cost"] == pytest.approx(spec.call_cost(r["prompt_tokens"], 7))
    assert rep.spent_total == pytest.approx(sum(r["cost"] for r in rows))
    assert max(srv.served.values()) == 1 and sum(srv.requests.values()) == 12
    events = [e["event"] for e in read_jsonl(ledger_path(out))]
    assert events[0] == "run_start" and events[-1] == "run_end"
    assert events.count("reserve") == events.count("answer") == 12


def test_retries_on_429_and_500(tmp_path: Path) -> None:
    with FakeOpenAI(fail_first=2) as srv:  # each prompt: 429, then 500, then an answer
        rep = dispatch(items(6), catalogue(srv.base_url), tmp_path / "ans.jsonl", concurrency=3, **FAST)
    assert rep.answered == 6 and rep.retries == 12 and rep.errors == {"429": 6, "500": 6}
    assert all(v == 3 for v in srv.requests.values()) and all(v == 1 for v in srv.served.values())
    assert rep.spent_uncertain == 0  # refused requests cost nothing


def test_random_errors_never_duplicate_answers(tmp_path: Path) -> None:
    with FakeOpenAI(p429=0.25, p500=0.15, seed=1, latency=0.002) as srv:
        rep = dispatch(items(40), catalogue(srv.base_url), tmp_path / "a.jsonl", concurrency=8, max_attempts=8,
                       **FAST)
    assert rep.answered == 40 and rep.retries > 0
    assert len(srv.served) == 40 and max(srv.served.values()) == 1


def test_gives_up_after_max_attempts_and_falls_back(tmp_path: Path) -> None:
    with FakeOpenAI(fail_models=("a",)) as srv:
        cat = catalogue(srv.base_url)
        rep = dispatch(items(4, "a", ("b",)), cat, tmp_path / "x.jsonl", max_attempts=2, **FAST)
        assert rep.answered == 0 and len(rep.failed) == 4 and "500 after 2 attempt(s)" in rep.failed["q0"]
        assert srv.by_model["a"] == 8 and srv.by_model["b"] == 0
        out = tmp_path / "y.jsonl"
        rep = dispatch(items(4, "a", ("b",)), cat, out, max_attempts=2, fallback=True, **FAST)
    assert rep.answered == 4 and rep.fallbacks_used == 4
    assert all(r["model"] == "b" and r["fallback"] and r["planned_model"] == "a" for r in answers(out))


def test_auth_error_disables_model_quickly(tmp_path: Path) -> None:
    with FakeOpenAI(require_key="right") as srv:
        cat = catalogue(srv.base_url, defaults={"api_key_env": "FAKE_KEY"})
        rep = dispatch(items(30), cat, tmp_path / "a.jsonl", concurrency=2, environ={"FAKE_KEY": "wrong"}, **FAST)
        assert rep.answered == 0 and len(rep.failed) == 30 and "401" in rep.failed["q0"]
        assert srv.statuses[401] <= 2  # the model is disabled after the first refusals
        rep = dispatch(items(3), cat, tmp_path / "b.jsonl", environ={"FAKE_KEY": "right"}, **FAST)
        assert rep.answered == 3


def test_missing_key_or_unknown_model_fails_before_any_call(tmp_path: Path) -> None:
    with FakeOpenAI() as srv:
        cat = catalogue(srv.base_url, b={"api_key_env": "KEY_FOR_B"})
        with pytest.raises(OptLLMError, match=r"KEY_FOR_B \(model 'b'\)"):
            dispatch(items(3, "a", ("b",)), cat, tmp_path / "a.jsonl", fallback=True, environ={})
        with pytest.raises(OptLLMError, match=r"\['c'\] used in the plan are not in the catalogue"):
            dispatch(items(3, "c"), cat, tmp_path / "a.jsonl", environ={})
        with pytest.raises(OptLLMError, match="twice"):
            dispatch(items(3) + items(1), cat, tmp_path / "a.jsonl", environ={})
        assert sum(srv.requests.values()) == 0
    assert not (tmp_path / "a.jsonl").exists()


@pytest.mark.parametrize("calls, concurrency", [(0, 4), (2.5, 1), (5.5, 8), (12.2, 16)])
def test_spend_never_exceeds_cap(tmp_path: Path, calls: float, concurrency: int) -> None:
    out = tmp_path / "a.jsonl"
    with FakeOpenAI(completion_tokens=15, latency=0.003) as srv:
        cat = catalogue(srv.base_url)
        its = items(30, "b")
        worst = max(cat["b"].reservation(count_tokens([it.prompt])[0] + 7) for it in its)
        cap = calls * worst  # room for about `calls` worst-case calls
        rep = dispatch(its, cat, out, concurrency=concurrency, max_spend=cap, **FAST)
        real = sum(r["cost"] for r in answers(out))
        assert real <= cap and rep.spent_total <= cap
        assert rep.answered >= int(calls) and rep.answered + rep.not_sent == 30
        assert rep.stopped and "would exceed the spend cap" in rep.stopped
        assert real + worst > cap  # the next call could have broken the cap
        assert sum(srv.requests.values()) == rep.answered
        # resume with a bigger cap: the cap covers both runs together
        rep2 = dispatch(its, cat, out, concurrency=concurrency, max_spend=cap + 3 * worst, **FAST)
        total = sum(r["cost"] for r in answers(out))
        assert total <= cap + 3 * worst and rep2.spent_total <= cap + 3 * worst
        assert rep2.already_answered == rep.answered and rep2.answered >= 3
        assert max(srv.served.values()) == 1


def test_resume_after_interrupt_loses_nothing_repeats_nothing(tmp_path: Path) -> None:
    out = tmp_path / "a.jsonl"
    its = items(40)
    with FakeOpenAI(latency=0.01) as srv:
        cat = catalogue(srv.base_url)

        async def interrupted() -> None:
            task: asyncio.Task | None = None
            seen = []

            def on_answer(rec: dict) -> None:
                seen.append(rec["id"])
                if len(seen) == 10 and task is not None:
                    task.cancel()  # what Ctrl-C does to asyncio.run

            task = asyncio.ensure_future(dispatch_async(its, cat, out, concurrency=4, on_answer=on_answer, **FAST))
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(interrupted())
        first = {r["id"] for r in answers(out)}
        assert 10 <= len(first) < 40
        st0 = ResumeState.read(out, ledger_path(out))
        assert st0.unresolved_calls <= 4  # calls cut off in flight are counted as spent
        assert st0.spent == pytest.approx(st0.spent_known + st0.spent_uncertain)
        before = dict(srv.requests)
        rep = dispatch(its, cat, out, concurrency=4, **FAST)
        assert rep.already_answered == len(first) and rep.answered == 40 - len(first)
        rows = answers(out)
        assert len(rows) == 40 and len({r["id"] for r in rows}) == 40
        prompts = {it.id: it.prompt for it in its}
        for qid in first:  # answered before the interrupt: never sent again
            assert srv.requests[prompts[qid]] == before[prompts[qid]] == 1
        assert rep.spent_before == pytest.approx(st0.spent)
        rep3 = dispatch(its, cat, out, **FAST)  # a third run has nothing to do
        assert rep3.answered == 0 and rep3.calls == 0 and rep3.remaining == 0


def test_server_killed_mid_run_then_resume(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    out = tmp_path / "a.jsonl"
    its = items(60)
    proc, port = spawn(log, latency=0.02)
    try:
        cat = catalogue(f"http://127.0.0.1:{port}/v1")
        killer_done = []

        def on_answer(rec: dict) -> None:
            if len(killer_done) == 0 and sum(1 for _ in open(out)) >= 15:
                proc.kill()  # SIGKILL: connections drop mid-request
                killer_done.append(True)

        rep = dispatch(its, cat, out, concurrency=4, max_attempts=2, on_answer=on_answer, **FAST)
    finally:
        proc.kill()
        proc.wait(10)
    first = {r["id"] for r in answers(out)}
    assert killer_done and 15 <= len(first) < 60 and rep.failed
    assert set(rep.errors) <= {"connection", "timeout"}
    proc2, port2 = spawn(log, latency=0.0)
    try:
        rep2 = dispatch(its, catalogue(f"http://127.0.0.1:{port2}/v1"), out, concurrency=4, **FAST)
    finally:
        proc2.kill()
        proc2.wait(10)
    assert rep2.answered == 60 - len(first) and not rep2.failed
    rows = answers(out)
    assert len(rows) == 60 and len({r["id"] for r in rows}) == 60
    requests, served = read_log(log)
    prompts = {it.id: it.prompt for it in its}
    for qid in first:
        assert requests[prompts[qid]] == 1 and served[prompts[qid]] == 1
    # dropped connections may have been billed: their reservations count as spent
    assert rep2.spent_before >= sum(r["cost"] for r in rows if r["id"] in first)


# ---------------------------------------------------------------- pieces
def test_partial_last_line_is_repaired(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_text('{"id": "q1", "model": "a", "answer": "x", "cost": 0.5, "call": "c1"}\n{"id": "q2", "co')
    assert [r["id"] for r in read_jsonl(p, repair=True)] == ["q1"]
    assert p.read_text() == '{"id": "q1", "model": "a", "answer": "x", "cost": 0.5, "call": "c1"}\n'
    p.write_text('{"id": "q1"}\nnot json\n{"id": "q3"}\n')
    with pytest.raises(OptLLMError, match="line 2"):
        read_jsonl(p)
    led = tmp_path / "a.ledger.jsonl"
    p.write_text('{"id": "q1", "model": "a", "answer": "x", "cost": 0.5, "call": "c1"}\n')
    led.write_text('{"event": "reserve", "call": "c1", "amount": 1.0}\n{"event": "reserve", "call": "c2", "amount": 2.0}\n'
                   '{"event": "reserve", "call": "c3", "amount": 4.0}\n{"event": "error", "call": "c3", "charged": 0}\n')
    s = ResumeState.read(p, led)
    assert s.spent_known == 0.5 and s.spent_uncertain == 2.0 and s.unresolved_calls == 1 and "q1" in s.answered
    assert ledger_path(tmp_path / "answers.jsonl").name == "answers.ledger.jsonl"


@settings(max_examples=40, deadline=None)
@given(cap=st.floats(0, 5), amounts=st.lists(st.floats(0.01, 1), min_size=1, max_size=30),
       frac=st.floats(0, 1), seed=st.integers(0, 1000))
def test_spend_guard_invariant(cap: float, amounts: list[float], frac: float, seed: int) -> None:
    async def run() -> tuple[float, float]:
        g = SpendGuard(cap)
        rng = random.Random(seed)
        peak = 0.0

        async def call(a: float) -> None:
            nonlocal peak
            if await g.reserve(a):
                peak = max(peak, g.spent + g.reserved)
                await asyncio.sleep(rng.random() * 1e-3)
                await g.settle(a, a * frac)

        await asyncio.gather(*(call(a) for a in amounts))
        return g.spent, peak

    spent, peak = asyncio.run(run())
    assert spent <= cap + 1e-12 and peak <= cap + 1e-12


def test_rate_limiter_spaces_requests() -> None:
    async def run() -> float:
        lim = RateLimiter(rpm=3000)  # 50/s, burst 50
        t0 = time.monotonic()
        for _ in range(60):
            await lim.acquire()
        return time.monotonic() - t0

    assert 0.15 <= asyncio.run(run()) < 2.0

    async def tokens() -> float:
        lim = RateLimiter(tpm=60_000)  # 1000 tokens/s
        t0 = time.monotonic()
        for _ in range(3):
            await lim.acquire(tokens=400)
        return time.monotonic() - t0

    assert 0.15 <= asyncio.run(tokens()) < 2.0


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    rng = random.Random(0)
    d = [backoff_delay(a, 0.5, 30, rng) for a in range(1, 8)]
    assert 0.25 <= d[0] <= 0.5 and 2.0 <= d[3] <= 4.0 and all(x <= 30 for x in d)
    assert backoff_delay(1, 0.5, 30, rng, retry_after=7) == 7
    assert backoff_delay(1, 0.5, 30, rng, retry_after=3600) == 30
    assert not math.isnan(backoff_delay(40, 0.5, 30, rng))


# ---------------------------------------------------------------- faults (issue 16)
def billed(srv: FakeOpenAI, cat: Catalogue) -> float:
    """What the server billed, from its own usage counts."""
    return sum(cat[m].call_cost(p, c) for m, _, p, c in srv.billed)


@pytest.mark.parametrize("fault", [{"completion_tokens": 200, "ignore_max_tokens": True},
                                   {"completion_tokens": 20, "prompt_token_factor": 1.13}])
@pytest.mark.parametrize("concurrency", [1, 16])
def test_cap_holds_when_the_server_bills_more_than_reserved(tmp_path: Path, fault: dict, concurrency: int) -> None:
    # a server that ignores max_tokens (200 billed against 20 reserved) or counts 13% more prompt tokens
    with FakeOpenAI(latency=0.003, **fault) as srv:
        cat = catalogue(srv.base_url, b={"prompt_token_margin": 0.0})
        its = items(60, "b")
        worst = max(cat["b"].reservation(count_tokens([it.prompt])[0] + 7) for it in its)
        cap = 12 * worst  # the overbilled plan costs far more than this
        rep = dispatch(its, cat, tmp_path / "a.jsonl", concurrency=concurrency, max_spend=cap, **FAST)
        truth = billed(srv, cat)
        assert truth <= cap and rep.over_cap == 0.0
        assert rep.spent_total == pytest.approx(truth)  # every answer reconciled with its billed usage
        assert rep.overruns >= 1 and rep.stopped and rep.not_sent > 0
        # the cap was used, not abandoned early: the next (grown) reservation would not fit
        assert truth > cap / 2


def test_first_overrun_is_bounded_by_one_call_and_reported(tmp_path: Path) -> None:
    with FakeOpenAI(completion_tokens=400, ignore_max_tokens=True) as srv:
        cat = catalogue(srv.base_url)
        its = items(30, "b")
        cap = 1.2 * cat["b"].reservation(count_tokens([its[0].prompt])[0] + 7)  # room for one reserved call
        rep = dispatch(its, cat, tmp_path / "a.jsonl", concurrency=16, max_spend=cap, **FAST)
        truth = billed(srv, cat)
        assert sum(srv.requests.values()) == 1  # the model's first call goes alone; nothing after the overrun
        assert rep.over_cap == pytest.approx(truth - cap) and rep.over_cap > 0 and rep.overruns == 1
        assert rep.as_dict()["over_cap"] > 0


def test_capped_dispatch_sends_cheapest_calls_first(tmp_path: Path) -> None:
    with FakeOpenAI(completion_tokens=15) as srv:
        cat = catalogue(srv.base_url)
        its = items(20, "b") + [PlanItem(f"c{i}", f"cheap {i}", "a") for i in range(20)]  # expensive first
        total = sum(cat[it.model].reservation(count_tokens([it.prompt])[0] + 7) for it in its)
        rep = dispatch(its, cat, tmp_path / "a.jsonl", concurrency=4, max_spend=0.4 * total, **FAST)
        got = {r["id"] for r in answers(tmp_path / "a.jsonl")}
        assert {f"c{i}" for i in range(20)} <= got  # every cheap query answered
        assert rep.answered >= 20 and rep.order.startswith("cheapest first")
        assert rep.not_sent_by_model == {"b": rep.not_sent} and rep.not_sent_upper_cost > 0
        assert rep.answered + rep.not_sent == 40


def test_server_down_opens_the_circuit_fast_and_names_the_url(tmp_path: Path) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    url = f"http://127.0.0.1:{port}/v1"
    cat = catalogue(url)
    t0 = time.monotonic()
    rep = dispatch(items(200, "a", ("b",)), cat, tmp_path / "a.jsonl", concurrency=16, fallback=True, **FAST)
    assert time.monotonic() - t0 < 20
    assert rep.calls <= 8 and list(rep.endpoints_down) == [url]
    assert len(rep.failed) == 200 and all("unreachable" in why for why in rep.failed.values())
    assert url in rep.failed["q0"] and rep.spent_total == 0.0


def test_timeouts_are_reported_as_unknown_and_kept_reserved(tmp_path: Path) -> None:
    with FakeOpenAI(latency=1.0) as srv:
        cat = catalogue(srv.base_url, defaults={"timeout_s": 0.2})
        rep = dispatch(items(3), cat, tmp_path / "a.jsonl", concurrency=3, max_attempts=1, breaker=50, **FAST)
        assert rep.errors == {"timeout": 3} and rep.answered == 0
        assert rep.spent_uncertain == pytest.approx(rep.spent_this_run) and rep.spent_this_run > 0
        st = ResumeState.read(tmp_path / "a.jsonl", ledger_path(tmp_path / "a.jsonl"))
        assert st.spent_uncertain == pytest.approx(rep.spent_this_run) and st.spent_known == 0.0


def test_a_resume_remembers_what_the_server_billed(tmp_path: Path) -> None:
    # the first run learns that the server ignores max_tokens; a resume reserves the larger amount at once
    with FakeOpenAI(completion_tokens=200, ignore_max_tokens=True) as srv:
        cat = catalogue(srv.base_url)
        its = items(30, "b")
        one = cat["b"].reservation(count_tokens([its[0].prompt])[0] + 7)
        out = tmp_path / "a.jsonl"
        first = dispatch(its, cat, out, concurrency=1, max_spend=4 * one, **FAST)
        assert first.overruns >= 1
        spent = first.spent_total
        second = dispatch(its, cat, out, concurrency=1, max_spend=spent + 12 * one, **FAST)
        assert second.overruns == 0 and second.over_cap == 0.0 and second.answered >= 1
