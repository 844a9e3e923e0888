"""Provider batch APIs as a price tier (issue 19): the catalogue's batch tier, `plan --tier`,
and `dispatch --via batch` against a fake `/v1/files` + `/v1/batches` on 127.0.0.1."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_batches import FakeBatchOpenAI  # noqa: E402

from optllm.cost import count_tokens, parse_catalogue  # noqa: E402
from optllm.dispatch import dispatch  # noqa: E402
from optllm.dispatch.batch import dispatch_batch  # noqa: E402
from optllm.dispatch.ledger import DurableLog  # noqa: E402
from optllm.errors import OptLLMError  # noqa: E402
from optllm.planning import PlanItem  # noqa: E402

FAST = {"poll_interval": 0.01, "poll_max": 0.05}
ONLINE = {"backoff_base": 0.002, "backoff_cap": 0.01}


@pytest.fixture(autouse=True)
def _local_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def catalogue(url: str, batch_b: bool = True):  # type: ignore[no-untyped-def]
    b = {"name": "b", "input_per_million": 1000, "output_per_million": 3000}
    if batch_b:
        b["batch"] = {"input_per_million": 500, "output_per_million": 1500}
    return parse_catalogue({"defaults": {"base_url": url, "max_output_tokens": 20, "tokenizer": "cl100k_base"},
                            "models": [{"name": "a", "input_per_million": 100, "output_per_million": 200,
                                        "batch": {"discount": 0.5}}, b]}, "batch-models.yaml")


def items(n: int, models: str = "ab") -> list[PlanItem]:
    return [PlanItem(f"q{i}", f"batch question {i}: " + "word " * (i % 9), models[i % len(models)], (), "batch")
            for i in range(n)]


def rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_catalogue_batch_tier_prices_and_errors() -> None:
    cat = catalogue("http://127.0.0.1:9/v1", batch_b=False)
    assert cat.batch_models() == ("a",)
    auto = cat.priced("auto")
    assert auto["a"].input_per_million == 50 and auto["a"].output_per_million == 100
    assert auto["b"].input_per_million == 1000  # no batch tier: online prices
    assert cat.priced("online") is cat
    with pytest.raises(OptLLMError, match="model\\(s\\) b have no batch tier"):
        cat.priced("batch")
    with pytest.raises(OptLLMError, match="--tier must be one of"):
        cat.priced("cheap")
    for bad in ({"discount": 0.5, "input_per_million": 1}, {"input_per_million": 1}, {"discount": 2},
                {"discount": 0.5, "completion_window": "tomorrow"}):
        with pytest.raises(OptLLMError, match="field 'batch"):
            parse_catalogue({"models": [{"name": "a", "input_per_million": 1, "output_per_million": 1,
                                         "batch": bad}]})


def test_batch_dispatch_end_to_end_at_the_batch_price(tmp_path: Path) -> None:
    out = tmp_path / "answers.jsonl"
    with FakeBatchOpenAI(p_line_error=0.1, completion_tokens=15, seed=3) as srv:
        cat = catalogue(srv.base_url)
        its = items(300)
        rep = dispatch_batch(its, cat, out, **FAST, **ONLINE)
        got = rows(out)
        assert rep.remaining == 0 and len(got) == 300 and len({r["id"] for r in got}) == 300
        assert max(srv.submitted.values()) == 1  # no prompt went into two batches
        failed_lines = sum(b["failed"] for b in rep.batches)
        assert failed_lines > 0 and sum(srv.requests.values()) == failed_lines  # only those went online
        assert {(b["model"], b["status"]) for b in rep.batches} == {("a", "completed"), ("b", "completed")}
        for r in got:
            spec = cat[r["model"]]
            if r.get("tier") == "batch":
                assert r["cost"] == pytest.approx(spec.at_batch_price().call_cost(r["prompt_tokens"],
                                                                                  r["completion_tokens"]))
                assert r["cost"] < spec.call_cost(r["prompt_tokens"], r["completion_tokens"])
            else:
                assert r["cost"] == pytest.approx(spec.call_cost(r["prompt_tokens"], r["completion_tokens"]))
        assert sum(1 for r in got if r.get("tier") == "batch") == 300 - failed_lines
        assert rep.spent_total == pytest.approx(sum(r["cost"] for r in got))
        at_online = sum(cat[r["model"]].call_cost(r["prompt_tokens"], r["completion_tokens"]) for r in got)
        print(f"\nbatch dispatch: {len(got)} queries, {len(rep.batches)} batches "
              f"({', '.join(b['model'] + ' ' + b['status'] for b in rep.batches)}), "
              f"{300 - failed_lines} answered in batches, {failed_lines} failed lines answered online; "
              f"submitted at most {max(srv.submitted.values())}x per query; spent ${rep.spent_total:.4f} "
              f"against ${at_online:.4f} at online prices")


def test_interrupted_batch_is_polled_again_never_submitted_twice(tmp_path: Path) -> None:
    out = tmp_path / "answers.jsonl"
    with FakeBatchOpenAI(polls_to_finish=3) as srv:
        cat = catalogue(srv.base_url)
        its = items(120)
        first = dispatch_batch(its, cat, out, wait=False, **FAST)  # submit, poll once, leave
        assert first.answered == 0 and first.in_pending_batches == 120 and len(srv.batches) == 2
        assert all(b["status"] is None and b["batch_id"] for b in first.batches)
        online = dispatch(its, cat, out, **ONLINE)  # online dispatch holds back what a batch holds
        assert online.calls == 0 and online.in_pending_batches == 120 and sum(srv.requests.values()) == 0
        second = dispatch_batch(its, cat, out, **FAST)
        assert second.remaining == 0 and len(srv.batches) == 2 and max(srv.submitted.values()) == 1
        third = dispatch_batch(its, cat, out, **FAST)
        assert third.answered == 0 and third.already_answered == 120 and not third.batches


def test_killed_between_create_and_journal_adopts_the_providers_batch(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "answers.jsonl"
    real = DurableLog.write_now

    def die_on_submit(self, rec):  # type: ignore[no-untyped-def]
        if rec.get("event") == "batch_submit":
            raise KeyboardInterrupt  # the process dies right after the provider created the batch
        return real(self, rec)

    with FakeBatchOpenAI() as srv:
        cat = catalogue(srv.base_url)
        its = items(40, "a")
        monkeypatch.setattr(DurableLog, "write_now", die_on_submit)
        with pytest.raises(KeyboardInterrupt):
            dispatch_batch(its, cat, out, handle_signals=False, **FAST)
        monkeypatch.setattr(DurableLog, "write_now", real)
        assert len(srv.batches) == 1
        rep = dispatch_batch(its, cat, out, **FAST)
        assert rep.remaining == 0 and len(srv.batches) == 1 and max(srv.submitted.values()) == 1


def test_expired_batch_reports_what_ran_and_retries_the_rest_online(tmp_path: Path) -> None:
    out = tmp_path / "answers.jsonl"
    with FakeBatchOpenAI(outcome="expired") as srv:
        cat = catalogue(srv.base_url)
        its = items(50, "a")
        rep = dispatch_batch(its, cat, out, retry="none", **FAST)
        (b,) = rep.batches
        assert b["status"] == "expired" and b["answered"] == 25 and b["not_run"] == 25 and b["failed"] == 0
        assert "completion window expired" in b["error"] or "expired" in b["error"]
        assert rep.answered == 25 and rep.remaining == 25 and len(rep.failed) == 25
        assert sum(srv.requests.values()) == 0  # retry none: nothing online
        # the same command again: the 25 go into a new batch (it expires too), what it did not run goes online
        again = dispatch_batch(its, cat, out, retry="online", **FAST, **ONLINE)
        assert again.remaining == 0 and len(again.batches) == 1 and again.batches[0]["lines"] == 25
        assert sum(srv.requests.values()) == again.batches[0]["not_run"] == 13 and max(srv.submitted.values()) == 2


def test_failed_validation_goes_online_and_follow_up_batches(tmp_path: Path) -> None:
    with FakeBatchOpenAI(outcome="failed") as srv:
        cat = catalogue(srv.base_url)
        rep = dispatch_batch(items(30, "a"), cat, tmp_path / "a.jsonl", **FAST, **ONLINE)
        (b,) = rep.batches
        assert b["status"] == "failed" and "not available in batch" in b["error"] and b["not_run"] == 30
        assert rep.remaining == 0 and sum(srv.requests.values()) == 30
    with FakeBatchOpenAI(p_line_error=0.3, seed=5) as srv:
        cat = catalogue(srv.base_url)
        rep = dispatch_batch(items(60, "a"), cat, tmp_path / "b.jsonl", retry="batch", max_rounds=4, **FAST)
        assert len(srv.batches) >= 2 and sum(srv.requests.values()) == 0  # follow-up batches, not online
        assert max(srv.submitted.values()) <= 4
        assert rep.answered + len(rep.failed) == 60 and rep.answered >= 55


def test_cap_is_reserved_at_the_batch_price(tmp_path: Path) -> None:
    with FakeBatchOpenAI() as srv:
        cat = catalogue(srv.base_url)
        its = items(80)
        upper = sum(cat[it.model].at_batch_price().reservation(count_tokens([it.prompt])[0] + 7) for it in its)
        cap = 0.4 * upper
        rep = dispatch_batch(its, cat, tmp_path / "a.jsonl", max_spend=cap, **FAST, **ONLINE)
        truth = sum(cat[m].at_batch_price().call_cost(p, c) for m, _, p, c in srv.batch_billed)
        assert truth <= cap and rep.spent_total <= cap and rep.stopped and "batch price" in rep.stopped
        assert rep.order.startswith("cheapest first") and rep.not_sent > 0
        assert sum(srv.requests.values()) == 0  # what the cap refused is not sent online either
        online = dispatch(its, cat, tmp_path / "online.jsonl", max_spend=cap, **ONLINE)
        assert rep.answered > online.answered > 0  # the same cap buys more at the batch price


def test_models_without_a_batch_tier_are_sent_online(tmp_path: Path) -> None:
    with FakeBatchOpenAI() as srv:
        cat = catalogue(srv.base_url, batch_b=False)
        rep = dispatch_batch(items(20), cat, tmp_path / "a.jsonl", **FAST, **ONLINE)
        assert rep.remaining == 0 and [b["model"] for b in rep.batches] == ["a"]
        assert srv.by_model["b"] == 10 and sum(srv.submitted.values()) == 10 and rep.online_answered == 10
        # the online queries went while the batch ran, not after it ended
        events = rows(tmp_path / "a.ledger.jsonl")
        first_online = min(i for i, e in enumerate(events) if e["event"] == "answer" and ":" not in e["call"])
        assert first_online < min(i for i, e in enumerate(events) if e["event"] == "batch_end")


def test_cli_plan_tier_auto_then_dispatch_through_batches(tmp_path: Path) -> None:
    import numpy as np
    import pandas as pd
    import yaml
    from typer.testing import CliRunner

    from optllm.cli import app
    from optllm.data import load

    runner = CliRunner()
    data = load("demo").subset(np.arange(160))
    pd.DataFrame({"id": [f"case-{i}" for i in data.query_ids], "prompt": data.texts}).to_json(
        tmp_path / "prompts.jsonl", orient="records", lines=True)
    lab = np.arange(0, 160, 8)
    pd.DataFrame([{"query_id": f"case-{data.query_ids[i]}", "model": m, "correct": data.correct[i, k],
                   "cost": data.cost[i, k]} for i in lab for k, m in enumerate(data.models)]).to_csv(
        tmp_path / "labels.csv", index=False)
    cat = yaml.safe_load((Path(__file__).resolve().parents[1] / "examples" / "models.yaml").read_text())
    with FakeBatchOpenAI(polls_to_finish=2) as srv:
        cat["defaults"].update(base_url=srv.base_url, api_key_env=None)
        for m in cat["models"]:
            m.pop("base_url", None)
            m.pop("api_key_env", None)
            if m["name"] not in ("gptj_6B", "medium"):  # two models stay online-only
                m["batch"] = {"discount": 0.5}
        (tmp_path / "models.yaml").write_text(yaml.safe_dump(cat))
        base = ["plan", str(tmp_path / "prompts.jsonl"), "--models", str(tmp_path / "models.yaml"), "--labels",
                str(tmp_path / "labels.csv"), "--budget", "3"]
        r = runner.invoke(app, base + ["--tier", "auto", "--out", str(tmp_path / "plan"), "--json"])
        assert r.exit_code == 0, r.output
        tier = json.loads(r.stdout)["tier"]
        assert tier["tier"] == "auto" and tier["cost_mean"] < tier["cost_mean_online"], (tier, json.loads(r.stdout)["assigned"])
        plan = pd.read_csv(tmp_path / "plan" / "plan.csv")
        assert set(plan["tier"]) <= {"batch", "online"}
        batch_models = {m["name"] for m in cat["models"] if "batch" in m}
        assert (plan["tier"] == "batch").sum() == plan["model"].isin(batch_models).sum() == tier["queries_batch"]
        r = runner.invoke(app, ["dispatch", str(tmp_path / "plan"), "--models", str(tmp_path / "models.yaml"),
                                "--out", str(tmp_path / "answers.jsonl"), "--max-spend", "10", "--poll-interval",
                                "0.01", "--no-progress"])
        assert r.exit_code == 0, r.output
        assert "Provider batches" in r.output and "completed" in r.output
        got = rows(tmp_path / "answers.jsonl")
        assert len(got) == len(plan) and max(srv.submitted.values(), default=0) == 1
        assert sum(1 for g in got if g.get("tier") == "batch") == tier["queries_batch"]
        assert sum(srv.requests.values()) == len(plan) - tier["queries_batch"]  # the rest went online


def test_pending_batches_are_reported_as_reserved_not_unknown(tmp_path: Path) -> None:
    out = tmp_path / "answers.jsonl"
    with FakeBatchOpenAI(polls_to_finish=3) as srv:
        cat = catalogue(srv.base_url)
        its = items(40)
        first = dispatch_batch(its, cat, out, wait=False, **FAST)
        assert first.reserved_in_batches > 0 and first.spent_uncertain == 0.0
        assert first.spent_this_run == 0.0 and first.spent_total == pytest.approx(first.reserved_in_batches)
        second = dispatch_batch(its, cat, out, **FAST)
        billed = sum(r["cost"] for r in rows(out))
        assert second.reserved_in_batches == 0.0 and second.spent_this_run == pytest.approx(billed)
        assert second.spent_total == pytest.approx(billed)
