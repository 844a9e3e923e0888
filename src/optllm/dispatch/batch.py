"""Send a plan through providers' batch APIs (`/v1/files` + `/v1/batches`) at the batch price.

One batch per endpoint and model (and at most `max_lines` requests each): a JSONL input file,
one line per planned query (`custom_id` = query id), uploaded with the official `openai`
client, then polled with backoff until it ends; its output and error files are downloaded and
the answers appended to the same answers file and ledger as online dispatch (so `dispatch`
without `--via batch`, `ResumeState` and the spend cap see one history).

Never paying twice:
- before anything is uploaded the ledger holds the batch's token, its queries and each
  query's reservation at the batch price (fsynced); the batch is created with the token in its
  metadata, and its id is journaled as soon as the provider returns it;
- a later run first collects every batch an earlier run left: a journaled id is polled again,
  never submitted again; a token without an id (the process died between creating the batch and
  journaling it) is looked up among the provider's batches by its metadata, and submitted again
  only when the provider has no batch with it;
- while a batch is pending, its queries are held back from every other way of sending
  (`ResumeState.in_pending_batch`, also honoured by online dispatch).

Spend: each query's upper-bound cost at the batch price is reserved against the same hard cap
before its batch is uploaded (queries that do not fit are not sent; under a cap smaller than
the plan, the cheapest go first) and settled with its billed usage when the batch ends (what
the cap refused is offered again in a next round, up to `max_rounds`, as answers usually cost
less than their reservations). Lines
that failed, and those an expired or cancelled batch did not run, cost nothing and are retried
(`retry`): online, within the same cap at the online price; in a follow-up batch, at the batch
price; or not at all. Every batch's fate (answered, failed, not run) is reported.
"""
from __future__ import annotations

import asyncio
import io
import json
import math
import signal
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from optllm.cost import Catalogue, ModelSpec, prompt_tokens
from optllm.dispatch.client import (ClientPool, DispatchReport, Dispatcher, _now, check_options, check_ready,
                                    classify, install_stop_signals, remove_stop_signals)
from optllm.dispatch.ledger import DurableLog, ResumeState, ledger_path
from optllm.errors import OptLLMError
from optllm.planning.items import PlanItem
from optllm.secrets import redact

FINAL = ("completed", "failed", "expired", "cancelled")
RETRY = ("online", "batch", "none")
ENDPOINT = "/v1/chat/completions"


def _field(obj: Any, name: str, default: Any = None) -> Any:
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)


def check_batch_options(*, retry: str = "online", poll_interval: float = 30.0, poll_max: float = 600.0,
                        max_lines: int = 50_000, max_rounds: int = 4) -> None:
    """The batch options, checked before anything else happens (one error naming the option)."""
    if retry not in RETRY:
        raise OptLLMError(f"--retry-failed must be one of {', '.join(RETRY)}, got {retry!r}")
    if not (poll_interval > 0 and math.isfinite(poll_interval)) or not (poll_max >= poll_interval):
        raise OptLLMError(f"--poll-interval must be a positive number of seconds (at most the longest wait "
                          f"{poll_max:g}), got {poll_interval}")
    if max_lines < 1 or max_rounds < 1:
        raise OptLLMError("a batch needs at least one line and one round")


class BatchDispatcher:
    """One `dispatch --via batch` run (see the module docstring)."""

    def __init__(self, items: Sequence[PlanItem], catalogue: Catalogue, out: str | Path, *, keys: Mapping[str, str],
                 max_spend: float | None = None, retry: str = "online", wait: bool = True,
                 poll_interval: float = 30.0, poll_max: float = 600.0, max_lines: int = 50_000,
                 max_rounds: int = 4, concurrency: int = 16, client_factory: Callable[[ModelSpec, str], Any] | None = None,
                 console: Any = None, handle_signals: bool = True, follow_plan: bool = False,
                 **online_kw: Any) -> None:
        check_options(concurrency=concurrency, max_spend=max_spend)
        check_batch_options(retry=retry, poll_interval=poll_interval, poll_max=poll_max, max_lines=max_lines,
                            max_rounds=max_rounds)
        self.items = list(items)
        self.cat = catalogue
        self.out = Path(out)
        self.ledger_file = ledger_path(self.out)
        self.keys = dict(keys)
        self.max_spend = max_spend
        self.retry, self.wait = retry, wait
        self.poll_interval, self.poll_max = poll_interval, poll_max
        self.max_lines, self.max_rounds = max_lines, max_rounds
        self.concurrency = concurrency
        self.client_factory = client_factory
        self.clients = ClientPool(keys, client_factory)
        self.console = console
        self.handle_signals = handle_signals
        self.online_kw = online_kw
        self.follow_plan = follow_plan  # batch only the queries the plan priced at the batch tier
        self.report = DispatchReport(max_spend=max_spend, answers_path=str(self.out), ledger_path=str(self.ledger_file),
                                     via="batch")
        self._stop = False

    # ------------------------------------------------------------------ plumbing
    def _client(self, spec: ModelSpec) -> Any:
        return self.clients.get(spec)

    def _say(self, text: str) -> None:
        if self.console is not None:
            self.console.print(redact(text), markup=False, highlight=False, emoji=False)

    def _on_signal(self, sig: int) -> None:
        self._stop = True
        self._say("interrupted: polling stops; the batches keep running at the provider, and the same command "
                  "collects them later")
        self.report.interrupted = signal.Signals(sig).name

    # ------------------------------------------------------------------ run
    async def run(self) -> DispatchReport:
        t0 = time.monotonic()
        rep = self.report
        state = ResumeState.read(self.out, self.ledger_file, repair=True)
        rep.resume_from(state, self.items)
        self.spent = state.spent  # conservative: pending batches count at their reservations
        self.by_id = {it.id: it for it in self.items}
        self.answers = DurableLog(self.out).open()
        self.ledger = DurableLog(self.ledger_file).open()
        self.ledger.write_now({"event": "run_start", "run": uuid.uuid4().hex[:8], "time": _now(), "via": "batch",
                               "planned": rep.planned, "max_spend": self.max_spend, "spent_before": state.spent})
        self._signals = install_stop_signals(self._on_signal) if self.handle_signals else []
        self.rows: dict[str, dict[str, Any]] = {}
        self._amounts = _reservations(self.ledger_file)
        self.refused: set[str] = set()  # not sent: the cap could not hold their reservation
        answered = set(state.answered)
        try:
            # what earlier runs submitted: adopted or released, and polled once (waited for below)
            for token, b in state.pending_batches.items():
                self.rows[token] = {"token": token, "batch_id": b["batch_id"], "model": b["model"],
                                    "endpoint": redact(str(b["endpoint"])), "lines": len(b["ids"]), "status": None,
                                    "answered": 0, "failed": 0, "not_run": 0, "round": 0, "ids": b["ids"]}
                if b["batch_id"] is None:
                    await self._adopt_or_release(token)
            await self._collect(answered, wait=False)
            for rnd in range(1, self.max_rounds + 1):
                # a next round for lines that failed (--retry-failed batch), and for queries the cap refused:
                # answers cost less than their reservations, so the cap may have room again
                if self._stop or (rnd > 1 and self.retry != "batch" and not self.refused):
                    break
                self.refused, self.report.stopped = set(), ""
                held = self._held()
                tried = set(rep.failed) if self.retry != "batch" else set()  # lines a batch could not answer
                todo = [it for it in self.items if it.id not in answered and it.id not in held
                        and it.id not in tried and it.id not in self.refused and self._batchable(it)]
                if todo:
                    await self._submit(todo, rnd)
                if rnd == 1:  # queries priced online go now, while the batches run at the provider
                    await self._online([it for it in self.items if it.id not in answered
                                        and it.id not in self._held() and not self._batchable(it)], answered)
                if not self.wait or (not todo and rnd > 1):
                    break
                await self._collect(answered)
            held = self._held()
            left = [it for it in self.items if it.id not in answered and it.id not in held]
            if self.retry == "online":  # the lines batches could not answer: online, same cap and files
                await self._online([it for it in left if it.id in rep.failed and it.id not in self.refused
                                    and self._batchable(it)], answered)
        finally:
            remove_stop_signals(self._signals)
            await self.clients.close()
            self.answers.close()
            self.ledger.close()
        held = self._held()
        rep.batches = [{k: v for k, v in r.items() if k != "ids"} for r in self.rows.values()]
        rep.in_pending_batches = sum(1 for q in held if q in self.by_id)
        left = [it for it in self.items if it.id not in answered and it.id not in held]
        rep.not_sent = sum(1 for it in left if it.id not in rep.failed)
        rep.not_sent_by_model = dict(Counter(it.model for it in left if it.id not in rep.failed))
        final = ResumeState.read(self.out, self.ledger_file, repair=False)
        rep.spent_total, rep.spent_uncertain = final.spent, final.spent_uncertain
        rep.reserved_in_batches = final.reserved_in_batches
        rep.billed_this_run = max(0.0, (final.spent_known + final.spent_uncertain)
                                  - (state.spent_known + state.spent_uncertain))
        if left:  # what the cap or a failure left, at its upper-bound cost (batch price where it has one)
            counts = prompt_tokens([it.prompt for it in left], self.cat)
            col = {n: k for k, n in enumerate(self.cat.names)}
            rep.not_sent_upper_cost = float(sum(
                (self.cat[it.model].at_batch_price() if self._batchable(it) else self.cat[it.model]).reservation(
                    float(counts[i, col[it.model]])) for i, it in enumerate(left) if it.id not in rep.failed))
        rep.elapsed_s = time.monotonic() - t0
        return rep

    async def _online(self, items: list[PlanItem], answered: set[str]) -> None:
        """Send `items` one request each (dispatch's own path) into the same files and cap, and
        fold its report into this one."""
        if not items or self._stop:
            return
        rep = self.report
        for log in (self.answers, self.ledger):
            log.close()  # the online run appends to the same files
        remove_stop_signals(self._signals)  # it handles Ctrl-C itself while it runs
        try:
            sub = await Dispatcher(items, self.cat, self.out, keys=self.keys, concurrency=self.concurrency,
                                   max_spend=self.max_spend, handle_signals=self.handle_signals,
                                   console=self.console, client_factory=self.client_factory, **self.online_kw).run()
        finally:
            self.answers.open()
            self.ledger.open()
            self._signals = install_stop_signals(self._on_signal) if self.handle_signals and not self._stop else []
        now = ResumeState.read(self.out, self.ledger_file, repair=False)
        self.spent = now.spent
        got = {it.id for it in items if it.id in now.answered}
        answered |= got
        rep.answered += len(got)
        for it in items:
            rep.failed.pop(it.id, None)
        rep.failed.update(sub.failed)
        rep.calls += sub.calls
        rep.retries += sub.retries
        rep.overruns += sub.overruns
        rep.online_answered += len(got)
        for k, v in sub.errors.items():
            rep.errors[k] = rep.errors.get(k, 0) + v
        rep.stopped = rep.stopped or sub.stopped
        if sub.interrupted:
            rep.interrupted, self._stop = sub.interrupted, True
        rep.endpoints_down.update(sub.endpoints_down)

    # ------------------------------------------------------------------ submit
    async def _submit(self, items: list[PlanItem], rnd: int) -> None:
        """Reserve and submit `items` as batches (one per endpoint and model, `max_lines` each)."""
        specs = {name: self.cat[name].at_batch_price() for name in {it.model for it in items}}
        counts = prompt_tokens([it.prompt for it in items], self.cat)
        col = {n: k for k, n in enumerate(self.cat.names)}
        upper = {it.id: specs[it.model].reservation(float(counts[i, col[it.model]])) for i, it in enumerate(items)}
        room = math.inf if self.max_spend is None else self.max_spend - self.spent
        if sum(upper.values()) > room:
            items = sorted(items, key=lambda it: upper[it.id])  # the cap answers as many as it can
            self.report.order = "cheapest first (the cap is below the plan's upper-bound cost)"
        chosen: list[PlanItem] = []
        for it in items:
            if upper[it.id] <= room:
                room -= upper[it.id]
                chosen.append(it)
                continue
            self.refused.add(it.id)
            if not self.report.stopped:
                self.report.stopped = (f"the next query's upper-bound cost at the batch price ${upper[it.id]:.6f} "
                                       f"would exceed the spend cap ${self.max_spend:.6f}")
        groups: dict[tuple[str, str], list[PlanItem]] = {}
        for it in chosen:
            groups.setdefault((self.cat[it.model].base_url, it.model), []).append(it)
        for (_, model), group in groups.items():
            for start in range(0, len(group), self.max_lines):
                part = group[start:start + self.max_lines]
                await self._submit_one(specs[model], part, {it.id: upper[it.id] for it in part}, rnd)

    async def _submit_one(self, spec: ModelSpec, part: list[PlanItem], upper: dict[str, float], rnd: int) -> None:
        token = uuid.uuid4().hex
        self.ledger.write_many([{"event": "batch_prepare", "token": token, "model": spec.name,
                                 "endpoint": spec.base_url, "ids": [it.id for it in part], "round": rnd,
                                 "time": _now()}]
                               + [{"event": "reserve", "call": f"{token}:{it.id}", "id": it.id, "model": spec.name,
                                   "amount": upper[it.id], "tier": "batch", "time": _now()} for it in part])
        self.spent += sum(upper.values())
        self._amounts.update({f"{token}:{q}": a for q, a in upper.items()})
        row = {"token": token, "batch_id": None, "model": spec.name, "endpoint": redact(spec.base_url),
               "lines": len(part), "status": None, "answered": 0, "failed": 0, "not_run": 0, "round": rnd,
               "ids": [it.id for it in part]}
        self.rows[token] = row
        body = "".join(json.dumps({"custom_id": it.id, "method": "POST", "url": ENDPOINT,
                                   "body": _request_body(spec, it.prompt)}, ensure_ascii=False) + "\n" for it in part)
        client = self._client(spec)
        try:
            f = await client.files.create(file=(f"optllm-{token}.jsonl", io.BytesIO(body.encode("utf-8"))),
                                          purpose="batch")
            b = await client.batches.create(input_file_id=f.id, endpoint=ENDPOINT,
                                            completion_window=spec.batch.completion_window,  # type: ignore[union-attr]
                                            metadata={"optllm_token": token})
        except Exception as exc:  # noqa: BLE001 - nothing was created (or we cannot know): released below
            err = classify(exc)
            await self._adopt_or_release(token, why=f"{err.kind}: {err.message}")
            return
        self.ledger.write_now({"event": "batch_submit", "token": token, "batch_id": b.id, "input_file_id": f.id,
                               "time": _now()})
        row["batch_id"] = b.id
        self._say(f"submitted batch {b.id}: {len(part):,} queries to {spec.name}")

    async def _adopt_or_release(self, token: str, why: str = "the run stopped before the batch id was journaled") -> None:
        """A token without a journaled batch id: adopt the provider's batch that carries it, or
        (when the provider has none) release its reservations so its queries can be sent again."""
        row = self.rows[token]
        spec = self.cat[row["model"]]
        found = None
        try:
            async for b in self._client(spec).batches.list(limit=100):
                if (_field(b, "metadata") or {}).get("optllm_token") == token:
                    found = b
                    break
        except Exception as exc:  # noqa: BLE001 - cannot tell: keep it pending, never submit twice
            self._say(f"cannot list batches at {spec.base_url} ({classify(exc).message}); batch {token[:8]} stays "
                      "pending and is looked for again next run")
            return
        if found is not None:
            self.ledger.write_now({"event": "batch_submit", "token": token, "batch_id": found.id, "adopted": True,
                                   "time": _now()})
            row["batch_id"] = found.id
            return
        self.ledger.write_many([{"event": "error", "call": f"{token}:{q}", "id": q, "model": row["model"],
                                 "kind": "not_submitted", "retryable": True, "charged": 0.0, "message": redact(why),
                                 "time": _now()} for q in row["ids"]]
                               + [{"event": "batch_end", "token": token, "batch_id": None, "status": "not_submitted",
                                   "message": redact(why), "time": _now()}])
        self.spent -= self._reserved(token)
        row["status"] = "not_submitted"
        row["error"] = redact(why)

    def _reserved(self, token: str) -> float:
        return sum(self._amounts.get(f"{token}:{q}", 0.0) for q in self.rows[token]["ids"])

    def _batchable(self, it: PlanItem) -> bool:
        return self.cat[it.model].batch is not None and (not self.follow_plan or it.tier == "batch")

    def _held(self) -> set[str]:
        """Queries inside a batch that has not ended: sent no other way."""
        return {q for r in self.rows.values() if r["status"] is None for q in r["ids"]}

    # ------------------------------------------------------------------ poll and collect
    async def _collect(self, answered: set[str], wait: bool | None = None) -> None:
        """Poll every pending batch (until each ends, or once with --no-wait or `wait=False`) and
        record its results."""
        wait = self.wait if wait is None else wait
        delay = self.poll_interval
        while True:
            pending = [r for r in self.rows.values() if r["status"] is None and r["batch_id"] is not None]
            for row in pending:
                spec = self.cat[row["model"]]
                try:
                    b = await self._client(spec).batches.retrieve(row["batch_id"])
                except Exception as exc:  # noqa: BLE001 - polled again later
                    err = classify(exc)
                    if not err.retryable:
                        self._say(f"batch {row['batch_id']}: {err.kind} {err.message}; kept pending")
                    continue
                status = str(_field(b, "status"))
                row["provider_status"] = status
                if status in FINAL:
                    await self._finish(row, b, spec.at_batch_price(), answered)
            if self._stop or not wait or not any(r["status"] is None and r["batch_id"] is not None
                                                      for r in self.rows.values()):
                return
            await asyncio.sleep(delay)
            delay = min(self.poll_max, delay * 1.5)

    async def _download(self, spec: ModelSpec, file_id: str | None) -> list[dict[str, Any]]:
        if not file_id:
            return []
        resp = await self._client(spec).files.content(file_id)
        data = resp.content if hasattr(resp, "content") else resp.read()
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else str(data)
        out = []
        for line in text.splitlines():
            if line.strip():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a damaged line: its query counts as not run, and is retried
                if isinstance(rec, dict):
                    out.append(rec)
        return out

    async def _finish(self, row: dict[str, Any], b: Any, spec: ModelSpec, answered: set[str]) -> None:
        """Record an ended batch: answers at the batch price, failed lines, lines not run."""
        status = str(_field(b, "status"))
        token = row["token"]
        lines = await self._download(spec, _field(b, "output_file_id")) + \
            await self._download(spec, _field(b, "error_file_id"))
        mine = set(row["ids"])
        seen: set[str] = set()
        answers, events = [], []
        for rec in lines:
            q = str(rec.get("custom_id"))
            if q not in mine or q in seen:
                continue
            seen.add(q)
            call = f"{token}:{q}"
            amount = self._amounts.get(call, 0.0)
            resp = rec.get("response") or {}
            body = resp.get("body") if isinstance(resp, dict) else None
            ok = isinstance(resp, dict) and resp.get("status_code") == 200 and isinstance(body, dict) \
                and body.get("choices")
            if ok and q not in answered:
                usage = body.get("usage") or {}
                pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
                cost = amount if pt is None or ct is None else float(spec.call_cost(pt, ct))
                if cost > amount * (1 + 1e-9) + 1e-15:
                    self.report.overruns += 1
                msg = body["choices"][0].get("message") or {}
                answers.append({"id": q, "model": spec.name, "answer": msg.get("content") or "", "prompt_tokens": pt,
                                "completion_tokens": ct, "cost": cost,
                                "finish_reason": body["choices"][0].get("finish_reason"), "attempt": 1,
                                "planned_model": self.by_id[q].model if q in self.by_id else spec.name,
                                "fallback": False, "call": call, "tier": "batch", "batch_id": row["batch_id"],
                                "time": _now()})
                events.append({"event": "answer", "call": call, "id": q, "model": spec.name, "cost": cost,
                               "reserved": amount, "time": _now()})
                answered.add(q)
                row["answered"] += 1
                self.spent += cost - amount
            elif str(_field(rec.get("error") or {}, "code") or "") in ("batch_expired", "batch_cancelled"):
                seen.discard(q)  # the batch ended before running it: counted below as not run
                continue
            else:
                err = rec.get("error") or (body.get("error") if isinstance(body, dict) else None) or {}
                why = redact(str(_field(err, "message") or f"HTTP {resp.get('status_code') if isinstance(resp, dict) else '?'}"))
                events.append({"event": "error", "call": call, "id": q, "model": spec.name, "kind": "batch_line",
                               "retryable": True, "charged": 0.0, "message": why, "time": _now()})
                self.report.failed.setdefault(q, f"{spec.name} batch {row['batch_id']}: {why}")
                row["failed"] += 1
                self.spent -= amount
        batch_errors = _field(_field(b, "errors"), "data") or []
        reason = redact(str(_field(batch_errors[0], "message"))) if batch_errors else f"batch {status}"
        for q in row["ids"]:
            if q not in seen:  # an expired, cancelled or failed batch did not run it: costs nothing
                call = f"{token}:{q}"
                events.append({"event": "error", "call": call, "id": q, "model": spec.name, "kind": f"batch_{status}",
                               "retryable": True, "charged": 0.0, "message": reason, "time": _now()})
                row["not_run"] += 1
                self.spent -= self._amounts.get(call, 0.0)
                self.report.failed.setdefault(q, f"{spec.name} batch {row['batch_id']}: {reason}")
        if answers:
            self.answers.write_many(answers)
        self.ledger.write_many(events + [{"event": "batch_end", "token": token, "batch_id": row["batch_id"],
                                          "status": status, "answered": row["answered"], "failed": row["failed"],
                                          "not_run": row["not_run"], "time": _now()}])
        row["status"] = status
        if status != "completed":
            row["error"] = reason
        # a line that failed is only a failure for good if nothing answers it later
        for q in list(self.report.failed):
            if q in answered:
                del self.report.failed[q]
        self.report.answered += row["answered"]
        self._say(f"batch {row['batch_id']} {status}: {row['answered']:,} answered, {row['failed']:,} failed, "
                  f"{row['not_run']:,} not run")


def _reservations(ledger: Path) -> dict[str, float]:
    """Every batch call's reservation (`TOKEN:ID` -> USD) journaled in the ledger."""
    from optllm.dispatch.ledger import read_jsonl

    return {str(r["call"]): float(r["amount"]) for r in read_jsonl(ledger)
            if r.get("event") == "reserve" and ":" in str(r.get("call", ""))}


def _request_body(spec: ModelSpec, prompt: str) -> dict[str, Any]:
    """The chat request of one batch line: what online dispatch would send."""
    body: dict[str, Any] = dict(spec.params)
    body["model"] = spec.model_id
    body["messages"] = [{"role": "user", "content": prompt}]
    body[spec.max_tokens_param] = spec.max_output_tokens
    if spec.temperature is not None and "temperature" not in body:
        body["temperature"] = spec.temperature
    return body


def dispatch_batch(items: Sequence[PlanItem], catalogue: Catalogue, out: str | Path, *,
                   environ: Mapping[str, str] | None = None, **kw: Any) -> DispatchReport:
    """`dispatch` through the providers' batch APIs (see the module docstring): checks the
    catalogue and keys first; models without a batch tier are sent online."""
    cat, keys = check_ready(items, catalogue, False, environ)
    seen: set[str] = set()
    for it in items:
        if it.id in seen:
            raise OptLLMError(f"the plan lists query {it.id!r} twice")
        seen.add(it.id)
    return asyncio.run(BatchDispatcher(items, cat, out, keys=keys, **kw).run())
