"""Send each planned prompt to its model through the official `openai` client (any
OpenAI-compatible server), with bounded concurrency, per-model rate limits, retries, optional
fallback along the query's hull, a hard spend cap, a durable ledger and resume.

Guarantees (tested in tests/test_dispatch.py and the fault campaign, tests/test_faults.py):
- Nothing is sent before the catalogue is valid, every model used is in it and every API-key
  variable is set (one `OptLLMError` naming what is missing).
- A query with an answer in `answers.jsonl` is never sent again. Every request is journaled
  (its reservation, fsynced) before it is sent and its answer is fsynced on arrival, before
  anything else happens. Ctrl-C or SIGTERM stops sending, waits for the calls in flight and
  records them (a second signal abandons them: they count as spent and are sent again on
  resume); after SIGKILL, only the calls in flight at the kill can be sent again, once, and
  the resume reports how many.
- Spend (this and earlier runs together, counted conservatively; see `ledger`) plus the
  reservations of calls in flight never exceeds `max_spend` while the server bills no more
  than reserved. A call's reservation is its upper-bound cost: prompt tokens counted (× 1 +
  margin for approximate tokenizers) × input price + max_output_tokens × output price +
  per-request price; `max_output_tokens` is sent as `max_tokens` (or `max_completion_tokens`).
  A server that bills more (ignores max_tokens, counts more prompt tokens) is caught by
  reconciling every answer with its billed usage: that model's later reservations grow to the
  largest ratio seen (+5%), and calls to a model go one at a time until its bills have been
  seen to fit (the window doubles with each call billed within its reservation and falls back
  to one after an overrun). The worst case over the cap is therefore the excess of one call
  per model at a time when a server starts billing more than ever before; it is reported
  (`over_cap`, `overruns`), never silent.
- Calls whose outcome is unknown (timeouts, dropped connections after sending, answers
  without usage) keep their whole reservation counted as spent, in this run and on resume;
  they are reported apart (`spent_uncertain`).
- 429, 408, 409, 5xx, timeouts and dropped connections are retried with exponential backoff
  and jitter (Retry-After honoured); 401/403/404 disable the model for the rest of the run;
  `breaker` connection failures or timeouts in a row on one endpoint stop sending there.
- Under a cap smaller than the plan's upper-bound cost, the cheapest calls go first, so the
  cap answers as many queries as it can; what was left is reported per model.
- No API key is written to the answers, the ledger or any message (`optllm.secrets`).
"""
from __future__ import annotations

import asyncio
import itertools
import math
import os
import random
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from optllm.cost import Catalogue, ModelSpec, prompt_tokens
from optllm.dispatch.ledger import USAGE_MISSING, DurableLog, ResumeState, ledger_path
from optllm.dispatch.limits import BilledScale, CircuitBreaker, RateLimiter, SlowStart, SpendGuard, backoff_delay
from optllm.errors import OptLLMError
from optllm.planning.items import PlanItem
from optllm.secrets import redact


@dataclass
class DispatchReport:
    """What a run did (and the state of the whole plan after it)."""

    planned: int = 0
    already_answered: int = 0
    answered: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    not_sent: int = 0
    not_sent_by_model: dict[str, int] = field(default_factory=dict)
    not_sent_upper_cost: float = 0.0
    stopped: str = ""
    interrupted: str = ""
    endpoints_down: dict[str, str] = field(default_factory=dict)
    order: str = "as planned"
    resent_after_crash: int = 0
    via: str = "online"
    batches: list[dict[str, Any]] = field(default_factory=list)  # with --via batch: one row per provider batch
    in_pending_batches: int = 0  # queries held back: inside a provider batch not collected yet
    reserved_in_batches: float = 0.0  # their reservations (part of spent_total; settled when collected)
    billed_this_run: float | None = None  # with batches: what became billed (or unknown) in this run
    abandoned: int = 0  # calls in flight abandoned by a second signal
    online_answered: int = 0  # with batches: queries answered one request each (no batch tier, or retried)
    answered_by_other_model: int = 0  # answers already in --out from a model this plan does not plan
    spent_before: float = 0.0
    spent_total: float = 0.0
    spent_uncertain: float = 0.0
    max_spend: float | None = None
    calls: int = 0
    retries: int = 0
    fallbacks_used: int = 0
    overruns: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    answers_path: str = ""
    ledger_path: str = ""

    @property
    def spent_this_run(self) -> float:
        if self.billed_this_run is not None:
            return self.billed_this_run
        return self.spent_total - self.spent_before

    def resume_from(self, state: ResumeState, items: Sequence[PlanItem]) -> None:
        """Start from what earlier runs on the same answers file left."""
        plan_ids = {it.id for it in items}
        self.planned = len(items)
        self.already_answered = sum(1 for q in state.answered if q in plan_ids)
        self.spent_before = state.spent
        self.spent_uncertain = state.spent_uncertain
        self.reserved_in_batches = state.reserved_in_batches
        planned = {it.id: (it.model, *it.fallbacks) for it in items}
        self.answered_by_other_model = sum(1 for q, rec in state.answered.items()
                                           if q in planned and rec.get("model") not in planned[q])

    @property
    def over_cap(self) -> float:
        """USD counted beyond --max-spend (only a server billing more than reserved can cause it)."""
        return 0.0 if self.max_spend is None else max(0.0, self.spent_total - self.max_spend)

    @property
    def remaining(self) -> int:
        """Queries of the plan still without an answer."""
        return self.planned - self.already_answered - self.answered

    def as_dict(self) -> dict[str, Any]:
        return {
            "planned": self.planned, "already_answered": self.already_answered, "answered": self.answered,
            "failed": len(self.failed), "failed_examples": dict(itertools.islice(self.failed.items(), 10)),
            "not_sent": self.not_sent, "not_sent_by_model": self.not_sent_by_model,
            "not_sent_upper_cost": self.not_sent_upper_cost, "remaining": self.remaining,
            "stopped": self.stopped or None, "interrupted": self.interrupted or None,
            "endpoints_down": self.endpoints_down, "order": self.order,
            "resent_after_crash": self.resent_after_crash, "over_cap": self.over_cap, "via": self.via,
            "batches": self.batches, "in_pending_batches": self.in_pending_batches,
            "reserved_in_batches": self.reserved_in_batches, "online_answered": self.online_answered,
            "abandoned": self.abandoned, "answered_by_other_model": self.answered_by_other_model,
            "spent_before": self.spent_before, "spent_this_run": self.spent_this_run,
            "spent_total": self.spent_total, "spent_uncertain": self.spent_uncertain,
            "max_spend": self.max_spend, "calls": self.calls, "retries": self.retries,
            "fallbacks_used": self.fallbacks_used, "overruns": self.overruns, "errors": self.errors,
            "elapsed_s": self.elapsed_s, "answers": self.answers_path, "ledger": self.ledger_path,
        }


@dataclass(frozen=True)
class CallError:
    kind: str
    retryable: bool
    maybe_charged: bool
    retry_after: float | None = None
    disables_model: bool = False
    message: str = ""


def _not_sent(exc: BaseException) -> bool:
    """True when the connection failed before the request could reach the server."""
    seen = 0
    e: BaseException | None = exc
    while e is not None and seen < 8:
        name = type(e).__name__
        if name in ("ConnectError", "ConnectTimeout", "PoolTimeout") or isinstance(e, ConnectionRefusedError):
            return True
        e = e.__cause__ or e.__context__
        seen += 1
    return False


def _retry_after(exc: Any) -> float | None:
    resp = getattr(exc, "response", None)
    headers = getattr(resp, "headers", None)
    if headers is None:
        return None
    for key, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        v = headers.get(key)
        if v is not None:
            try:
                return max(0.0, float(v) * scale)
            except ValueError:
                continue
    return None


def classify(exc: BaseException) -> CallError:
    """How to treat a failed call: retry?, may it have been billed?, disable the model?"""
    import openai

    msg = redact(str(exc).splitlines()[0][:300]) if str(exc) else type(exc).__name__
    if isinstance(exc, openai.APITimeoutError):
        return CallError("timeout", True, True, message=msg)
    if isinstance(exc, openai.APIConnectionError):
        return CallError("connection", True, not _not_sent(exc), message=msg)
    if isinstance(exc, openai.APIStatusError):
        s = int(exc.status_code)
        if s in (408, 409, 429) or s >= 500:
            return CallError(str(s), True, False, _retry_after(exc), message=msg)
        return CallError(str(s), False, False, disables_model=s in (401, 403, 404), message=msg)
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return CallError("timeout", True, True, message=msg)
    # a response we could not use (malformed JSON, no choices): it may have been billed
    return CallError("invalid_response", True, True, message=f"{type(exc).__name__}: {msg}")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def check_ready(items: Sequence[PlanItem], catalogue: Catalogue, fallback: bool,
                environ: Mapping[str, str] | None = None) -> tuple[Catalogue, dict[str, str]]:
    """Everything that must hold before the first call: models known, keys set."""
    used: list[str] = []
    for it in items:
        for name in (it.model, *(it.fallbacks if fallback else ())):
            if name not in used:
                used.append(name)
    cat = catalogue.select(used, what="the plan")
    keys = cat.check_keys(environ)
    return cat, keys


def check_options(*, concurrency: int = 16, max_spend: float | None = None, max_attempts: int = 4,
                  backoff_base: float = 0.5, backoff_cap: float = 30.0, breaker: int = 8) -> None:
    """The dispatcher's options, checked before anything else happens (one error naming the option)."""
    if concurrency < 1:
        raise OptLLMError(f"--concurrency must be at least 1, got {concurrency}")
    if max_spend is not None and not (max_spend >= 0 and math.isfinite(max_spend)):
        raise OptLLMError(f"--max-spend must be a non-negative amount in USD, got {max_spend}")
    if max_attempts < 1:
        raise OptLLMError(f"--max-attempts must be at least 1, got {max_attempts}")
    if not (backoff_base >= 0 and math.isfinite(backoff_base)):
        raise OptLLMError(f"--backoff must be a non-negative number of seconds, got {backoff_base}")
    if not (backoff_cap >= 0 and math.isfinite(backoff_cap)):
        raise OptLLMError(f"backoff_cap must be a non-negative number of seconds, got {backoff_cap}")
    if breaker < 1:
        raise OptLLMError(f"breaker must be at least 1 failure, got {breaker}")


def default_client(spec: ModelSpec, key: str) -> Any:
    """The official async client for one endpoint (optllm does its own retries)."""
    from openai import AsyncOpenAI

    return AsyncOpenAI(api_key=key, base_url=spec.base_url, max_retries=0, timeout=spec.timeout_s)


class ClientPool:
    """One official client per endpoint and key variable, built on first use, closed together."""

    def __init__(self, keys: Mapping[str, str], factory: Callable[[ModelSpec, str], Any] | None = None) -> None:
        self.keys = dict(keys)
        self.factory = factory or default_client
        self._clients: dict[tuple[str, str], Any] = {}

    def __len__(self) -> int:
        return len(self._clients)

    def get(self, spec: ModelSpec) -> Any:
        k = (spec.base_url, spec.api_key_env or "")
        if k not in self._clients:
            self._clients[k] = self.factory(spec, self.keys[spec.name])
        return self._clients[k]

    async def close(self) -> None:
        """Close every client; a failure to close never masks what the caller is doing."""
        for c in self._clients.values():
            close = getattr(c, "close", None)
            if close is not None:
                try:
                    await close()
                except Exception:  # noqa: BLE001
                    pass
        self._clients.clear()


def install_stop_signals(handler: Callable[[int], None]) -> list[int]:
    """Route SIGINT and SIGTERM to `handler(sig)` in the running loop (main thread only) → the
    signals installed, for `remove_stop_signals`."""
    if threading.current_thread() is not threading.main_thread():
        return []
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, handler, sig)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    return installed


def remove_stop_signals(signals: list[int]) -> None:
    loop = asyncio.get_running_loop()
    for sig in signals:
        loop.remove_signal_handler(sig)


class _Progress:
    """Rich progress bar (answers, failures, spend, ETA), or nothing."""

    def __init__(self, total: int, done: int, cap: float | None, show: bool, console: Any = None) -> None:
        self.bar = None
        self.cap = cap
        if not show:
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self.bar = Progress(
            TextColumn("[bold]dispatch"), BarColumn(), MofNCompleteColumn(),
            TextColumn("answers {task.fields[ok]} · failed {task.fields[failed]} · ${task.fields[spent]}"),
            TextColumn("eta"), TimeRemainingColumn(), TimeElapsedColumn(), console=console, transient=False,
        )
        self.task = self.bar.add_task("dispatch", total=total, completed=done, ok=0, failed=0, spent=self._spent(0.0))
        self.bar.start()

    def _spent(self, spent: float) -> str:
        return f"{spent:.4f}" + (f" of {self.cap:.4f}" if self.cap is not None else "")

    def update(self, ok: int, failed: int, spent: float, advance: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=advance, ok=ok, failed=failed, spent=self._spent(spent))

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


@dataclass(frozen=True)
class _Outcome:
    """How one attempt ended: "answered" (billed within its reservation or not), "error", "stopped"."""

    kind: str
    within: bool | None = None
    error: CallError | None = None
    message: str = ""


class Dispatcher:
    """One run over a list of items (see `dispatch`)."""

    def __init__(
        self,
        items: Sequence[PlanItem],
        catalogue: Catalogue,
        out: str | os.PathLike[str],
        *,
        keys: Mapping[str, str],
        concurrency: int = 16,
        max_spend: float | None = None,
        fallback: bool = False,
        max_attempts: int = 4,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        breaker: int = 8,
        cheapest_first: bool = True,
        seed: int = 0,
        progress: bool = False,
        console: Any = None,
        client_factory: Callable[[ModelSpec, str], Any] | None = None,
        on_answer: Callable[[dict[str, Any]], None] | None = None,
        handle_signals: bool = True,
    ) -> None:
        check_options(concurrency=concurrency, max_spend=max_spend, max_attempts=max_attempts,
                      backoff_base=backoff_base, backoff_cap=backoff_cap, breaker=breaker)
        self.items = list(items)
        self.cat = catalogue
        self.out = Path(out)
        self.ledger_file = ledger_path(self.out)
        self.keys = dict(keys)
        self.concurrency = concurrency
        self.max_spend = max_spend
        self.fallback = fallback
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.cheapest_first = cheapest_first
        self.rng = random.Random(seed)
        self.show_progress = progress
        self.console = console
        self.clients = ClientPool(keys, client_factory)
        self.on_answer = on_answer
        self.handle_signals = handle_signals
        self.report = DispatchReport(max_spend=max_spend, answers_path=str(self.out),
                                     ledger_path=str(self.ledger_file))
        self.run_id = uuid.uuid4().hex[:8]
        self._seq = itertools.count(1)
        self._disabled: dict[str, str] = {}
        # growth of reservations for servers seen to bill more than reserved (prompt, completion)
        self.scales = BilledScale(catalogue.names)
        self.breaker = CircuitBreaker(breaker)
        self._answered_now: set[str] = set()
        self._workers: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ clients
    def _client(self, spec: ModelSpec) -> Any:
        return self.clients.get(spec)

    # ------------------------------------------------------------------ signals
    def _notice(self, text: str) -> None:
        con = self.bar.bar.console if getattr(self, "bar", None) is not None and self.bar.bar is not None \
            else self.console
        text = redact(text)
        if con is not None:
            con.print(text, markup=False, highlight=False, emoji=False)
        else:
            print(text, file=sys.stderr, flush=True)

    def _install_signals(self) -> list[int]:
        return install_stop_signals(self._on_signal) if self.handle_signals else []

    def _on_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        if not self.report.interrupted:
            self.report.interrupted = name
            self._stop_event.set()
            asyncio.ensure_future(self.guard.stop(f"interrupted by {name}"))
            self._notice(f"{name}: no new calls; waiting for the {self.guard.in_flight} in flight to be recorded "
                         f"(again to abandon them: they then count as spent and are sent again on resume)")
        else:
            self._notice(f"{name} again: abandoning {self.guard.in_flight} call(s) in flight")
            self.report.abandoned = self.guard.in_flight
            for w in self._workers:
                w.cancel()

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless interrupted first → False when interrupted."""
        try:
            await asyncio.wait_for(self._stop_event.wait(), timeout=seconds)
            return False
        except asyncio.TimeoutError:
            return True

    async def _unless_stopped(self, aw: Any) -> bool:
        """Await `aw` (a wait such as a rate limit) unless interrupted first → False when interrupted."""
        task = asyncio.ensure_future(aw)
        stop = asyncio.ensure_future(self._stop_event.wait())
        try:
            done, _ = await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if task in done:
            task.result()
            return True
        task.cancel()
        return False

    # ------------------------------------------------------------------ run
    def _reservation(self, spec: ModelSpec, pt: float) -> float:
        return self.scales.reservation(spec, pt)

    async def run(self) -> DispatchReport:
        t0 = time.monotonic()
        rep = self.report
        state = ResumeState.read(self.out, self.ledger_file, repair=True)
        rep.resume_from(state, self.items)
        held = state.in_pending_batch  # a provider batch still holds them: collect it, never send twice
        rep.in_pending_batches = sum(1 for it in self.items if it.id in held)
        todo = [it for it in self.items if it.id not in state.answered and it.id not in held]
        rep.resent_after_crash = sum(1 for it in todo if it.id in state.unresolved_ids)
        self._learn_from(state)
        self.guard = SpendGuard(self.max_spend, spent=state.spent)
        self.limiters = {m.name: RateLimiter(m.rpm, m.tpm) for m in self.cat.models}
        self.window = SlowStart(self.concurrency, self.cat.names)
        self._stop_event = asyncio.Event()
        # prompt tokens of each item under each model it may use
        self.ptok: dict[tuple[str, str], float] = {}
        if todo:
            counts = prompt_tokens([it.prompt for it in todo], self.cat)
            col = {name: k for k, name in enumerate(self.cat.names)}
            for i, it in enumerate(todo):
                for name in (it.model, *(it.fallbacks if self.fallback else ())):
                    self.ptok[(it.id, name)] = float(counts[i, col[name]])
        upper = {it.id: self._reservation(self.cat[it.model], self.ptok[(it.id, it.model)]) for it in todo}
        if self.cheapest_first and self.max_spend is not None and sum(upper.values()) > self.guard.remaining:
            todo.sort(key=lambda it: upper[it.id])
            rep.order = "cheapest first (the cap is below the plan's upper-bound cost)"
        self.answers = DurableLog(self.out).open()
        self.ledger = DurableLog(self.ledger_file).open()
        self.ledger.write_now({"event": "run_start", "run": self.run_id, "time": _now(), "planned": rep.planned,
                               "to_send": len(todo), "max_spend": self.max_spend, "spent_before": state.spent,
                               "fallback": self.fallback, "concurrency": self.concurrency, "order": rep.order,
                               "resent_after_crash": rep.resent_after_crash})
        self.bar = _Progress(rep.planned, rep.already_answered, self.max_spend, self.show_progress, self.console)
        queue: asyncio.Queue[PlanItem] = asyncio.Queue()
        for it in todo:
            queue.put_nowait(it)
        signals = self._install_signals()
        self._workers = [asyncio.create_task(self._worker(queue))
                         for _ in range(min(self.concurrency, max(1, len(todo))))]
        try:
            results = await asyncio.gather(*self._workers, return_exceptions=True)
            for r in results:  # a worker's bug is raised; workers abandoned by a second signal are not
                if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                    raise r
        finally:
            remove_stop_signals(signals)
            for w in self._workers:
                w.cancel()
            self.bar.stop()
            await self.clients.close()
            left = [it for it in todo if it.id not in self._answered_now and it.id not in rep.failed]
            rep.not_sent = len(left)
            rep.not_sent_by_model = dict(Counter(it.model for it in left))
            rep.not_sent_upper_cost = float(sum(upper[it.id] for it in left))
            rep.endpoints_down = {
                redact(url): f"model(s) {', '.join(m.name for m in self.cat.models if m.base_url == url)}: {why}"
                for url, why in self.breaker.open.items()}
            rep.stopped = self.guard.stop_reason if self.guard.stopped else ""
            rep.spent_total = self.guard.spent + self.guard.reserved  # reserved > 0 only if interrupted
            rep.overruns = self.guard.overruns
            rep.elapsed_s = time.monotonic() - t0
            try:
                for log in (self.answers, self.ledger):
                    try:
                        await asyncio.shield(log.flush())
                    except BaseException:  # noqa: BLE001 - still close the files
                        pass
                if rep.stopped:
                    self.ledger.write_now({"event": "stopped", "run": self.run_id, "time": _now(),
                                           "reason": rep.stopped, "not_sent": rep.not_sent})
                self.ledger.write_now({"event": "run_end", "run": self.run_id, "time": _now(),
                                       "answered": rep.answered, "failed": len(rep.failed),
                                       "not_sent": rep.not_sent, "spent_total": rep.spent_total,
                                       "over_cap": rep.over_cap, "interrupted": rep.interrupted or None})
            finally:
                self.answers.close()
                self.ledger.close()
        return rep

    def _learn_from(self, state: ResumeState) -> None:
        """Start from what earlier runs saw a server bill: reservations grow for a model whose
        answers were billed more completion or prompt tokens than reserved (so a resume does not
        overrun the cap again on its first call)."""
        prompt_of = {it.id: it.prompt for it in self.items}
        over = [(q, r) for q, r in state.answered.items() if r.get("model") in self.scales.completion
                and str(r.get("note", "")).startswith("billed") and r.get("prompt_tokens") is not None]
        for _, r in state.answered.items():
            m, ct = r.get("model"), r.get("completion_tokens")
            if m in self.scales.completion and isinstance(ct, (int, float)):
                self.scales.learn_completion(self.cat[m], ct)
        known = [(q, r) for q, r in over if q in prompt_of]
        if known:
            counts = prompt_tokens([prompt_of[q] for q, _ in known], self.cat)
            col = {name: k for k, name in enumerate(self.cat.names)}
            for i, (_, r) in enumerate(known):
                spec = self.cat[r["model"]]
                self.scales.learn_prompt(spec, float(counts[i, col[spec.name]]), r["prompt_tokens"])

    async def _worker(self, queue: asyncio.Queue[PlanItem]) -> None:
        while True:
            try:
                it = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            if await self._process(it) == "stopped":
                return

    async def _process(self, it: PlanItem) -> str:
        rep = self.report
        chain = [it.model, *(m for m in it.fallbacks if m != it.model)] if self.fallback else [it.model]
        reasons: list[str] = []
        for pos, name in enumerate(chain):
            if name in self._disabled:
                reasons.append(f"{name}: disabled ({self._disabled[name]})")
                continue
            if pos > 0:
                rep.fallbacks_used += 1
            result = await self._try_model(it, self.cat[name], fallback_from=it.model if pos else None)
            if result is None:
                return "answered"
            if result == "stopped":
                return "stopped"
            reasons.append(f"{name}: {result}")
        reason = "; ".join(reasons)
        rep.failed[it.id] = reason
        await self.ledger.append({"event": "failed", "run": self.run_id, "id": it.id, "reason": reason,
                                  "time": _now()})
        self.bar.update(rep.answered, len(rep.failed), self.guard.spent)
        return "failed"

    async def _try_model(self, it: PlanItem, spec: ModelSpec, fallback_from: str | None) -> str | None:
        """None when answered; "stopped" when the spend cap or a signal stops sending; else why it failed."""
        pt = self.ptok[(it.id, spec.name)]
        last = ""
        for attempt in range(1, self.max_attempts + 1):
            if spec.name in self._disabled:
                return f"disabled ({self._disabled[spec.name]})"
            if self._stop_event.is_set():
                return "stopped"
            await self.window.acquire(spec.name)
            outcome = _Outcome("stopped")
            try:
                if spec.name in self._disabled:  # disabled while this call waited for its turn
                    return f"disabled ({self._disabled[spec.name]})"
                amount = self._reservation(spec, pt)
                if await self.guard.reserve(amount):
                    outcome = await self._attempt(it, spec, pt, amount, attempt, fallback_from)
            finally:
                self.window.release(spec.name, outcome.within)
            if outcome.kind == "answered":
                return None
            if outcome.kind == "stopped":
                return "stopped"
            assert outcome.error is not None
            last = outcome.message
            if not outcome.error.retryable:
                return last
            if attempt < self.max_attempts:
                delay = backoff_delay(attempt, self.backoff_base, self.backoff_cap, self.rng,
                                      outcome.error.retry_after)
                if not await self._sleep(delay):
                    return "stopped"
        return last or "failed"

    async def _attempt(self, it: PlanItem, spec: ModelSpec, pt: float, amount: float, attempt: int,
                       fallback_from: str | None) -> _Outcome:
        """One call under a reservation of `amount`: journal it, send it, record what came back."""
        rep = self.report
        call = f"{self.run_id}-{next(self._seq)}"
        settled = logged = False
        try:
            if not await self._unless_stopped(self.limiters[spec.name].acquire(tokens=pt + spec.max_output_tokens)):
                await self.guard.settle(amount, 0.0)
                settled = True
                return _Outcome("stopped")
            await self.ledger.append({"event": "reserve", "call": call, "id": it.id, "model": spec.name,
                                      "amount": amount, "attempt": attempt, "time": _now()})
            logged = True
            rep.calls += 1
            if attempt > 1:
                rep.retries += 1
            t0 = time.monotonic()
            try:
                parsed = self._parse(await self._send(spec, it.prompt))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified in _record_error
                err, message = await self._record_error(it, spec, call, amount, attempt, exc)
                settled = True
                return _Outcome("error", error=err, message=message)
            rec, within = await self._record_answer(it, spec, call, amount, attempt, parsed, pt, t0, fallback_from)
            settled = True
            rep.answered += 1
            self._answered_now.add(it.id)
            self.bar.update(rep.answered, len(rep.failed), self.guard.spent)
            if self.on_answer is not None:
                self.on_answer(rec)
            return _Outcome("answered", within=within)
        finally:
            if not settled:
                # cancelled (a second signal, or the caller's task): a call that may have been sent
                # stays counted as spent (as the ledger's unresolved reservation will be on resume)
                self.guard.reserved -= amount
                self.guard.in_flight -= 1
                if logged:
                    self.guard.spent += amount
                    self.report.spent_uncertain += amount

    async def _record_error(self, it: PlanItem, spec: ModelSpec, call: str, amount: float, attempt: int,
                            exc: Exception) -> tuple[CallError, str]:
        """Classify a failed call, journal it, settle its reservation (kept as spent when the
        call may have been charged), disable the model, pause its limiter or open the
        endpoint's circuit where the error says so; → (the classified error, the failure message)."""
        rep = self.report
        err = classify(exc)
        charged = amount if err.maybe_charged else 0.0
        rep.spent_uncertain += charged
        rep.errors[err.kind] = rep.errors.get(err.kind, 0) + 1
        await self.ledger.append({"event": "error", "call": call, "id": it.id, "model": spec.name,
                                  "kind": err.kind, "retryable": err.retryable, "charged": charged,
                                  "message": err.message, "time": _now()})
        await self.guard.settle(amount, charged)
        if err.disables_model:
            self._disabled[spec.name] = f"HTTP {err.kind}"
        if err.kind in ("connection", "timeout"):
            if self.breaker.failure(spec.base_url, err.message):
                for m in self.cat.models:
                    if m.base_url == spec.base_url:
                        self._disabled.setdefault(m.name, redact(f"endpoint {spec.base_url} unreachable"))
        else:
            self.breaker.success(spec.base_url)  # an HTTP answer: the endpoint is up
        if err.retryable and err.kind == "429" and err.retry_after:
            self.limiters[spec.name].pause(min(err.retry_after, self.backoff_cap))
        return err, redact(f"{err.kind} after {attempt} attempt(s) at {spec.base_url}: {err.message}")

    async def _record_answer(self, it: PlanItem, spec: ModelSpec, call: str, amount: float, attempt: int,
                             parsed: tuple[Any, Any, Any, Any], pt: float, t0: float,
                             fallback_from: str | None) -> tuple[dict[str, Any], bool]:
        """Price an answered call from its billed usage (the reservation when usage is
        missing), grow that model's later reservations when the server billed more prompt or
        completion tokens than reserved, append the answer and journal it, and settle the
        reservation → (the record, whether it was billed within its reservation)."""
        answer, usage_p, usage_c, finish = parsed
        name = spec.name
        within: bool
        if usage_p is None or usage_c is None:
            # no usage, so no overrun can be seen: charged its reservation, and the window may grow
            cost, usage_note = amount, f"{USAGE_MISSING}: charged the reservation"
            self.report.spent_uncertain += amount
            within = True
        else:
            cost, usage_note = float(spec.call_cost(usage_p, usage_c)), None
            within = self.scales.within(amount, cost)
            self.scales.learn_prompt(spec, pt, usage_p)
            self.scales.learn_completion(spec, usage_c)
        self.breaker.success(spec.base_url)
        rec = {"id": it.id, "model": name, "answer": answer, "prompt_tokens": usage_p,
               "completion_tokens": usage_c, "cost": cost, "finish_reason": finish,
               "latency_s": round(time.monotonic() - t0, 4), "attempt": attempt,
               "planned_model": it.model, "fallback": fallback_from is not None, "call": call,
               "time": _now()}
        if usage_note:
            rec["note"] = usage_note
        if within is False:
            rec["note"] = f"billed ${cost:.6f}, more than the ${amount:.6f} reserved"
        # both lines fsynced together: the answers file alone decides what is answered (see ledger)
        await asyncio.gather(self.answers.append(rec),
                             self.ledger.append({"event": "answer", "call": call, "id": it.id, "model": name,
                                                 "cost": cost, "reserved": amount, "time": rec["time"]}))
        await self.guard.settle(amount, cost)
        return rec, within

    async def _send(self, spec: ModelSpec, prompt: str) -> Any:
        kwargs: dict[str, Any] = dict(spec.params)
        kwargs[spec.max_tokens_param] = spec.max_output_tokens
        if spec.temperature is not None and "temperature" not in kwargs:
            kwargs["temperature"] = spec.temperature
        client = self._client(spec)
        return await client.chat.completions.create(
            model=spec.model_id, messages=[{"role": "user", "content": prompt}], **kwargs
        )

    @staticmethod
    def _parse(resp: Any) -> tuple[str, int | None, int | None, str | None]:
        choices = getattr(resp, "choices", None)
        if not choices:
            raise ValueError("response has no choices")
        msg = choices[0].message
        text = getattr(msg, "content", None) or ""
        usage = getattr(resp, "usage", None)
        p = getattr(usage, "prompt_tokens", None) if usage is not None else None
        c = getattr(usage, "completion_tokens", None) if usage is not None else None
        return text, (None if p is None else int(p)), (None if c is None else int(c)), choices[0].finish_reason


def dispatch(
    items: Sequence[PlanItem],
    catalogue: Catalogue,
    out: str | os.PathLike[str],
    *,
    concurrency: int = 16,
    max_spend: float | None = None,
    fallback: bool = False,
    environ: Mapping[str, str] | None = None,
    **kw: Any,
) -> DispatchReport:
    """Send `items` (resuming from `out`), returning what happened. Checks the catalogue and
    the API keys before anything is sent. Other options: see `Dispatcher`."""
    cat, keys = check_ready(items, catalogue, fallback, environ)
    seen: set[str] = set()
    for it in items:
        if it.id in seen:
            raise OptLLMError(f"the plan lists query {it.id!r} twice")
        seen.add(it.id)
    d = Dispatcher(items, cat, out, keys=keys, concurrency=concurrency, max_spend=max_spend,
                   fallback=fallback, **kw)
    return asyncio.run(d.run())


async def dispatch_async(items: Sequence[PlanItem], catalogue: Catalogue, out: str | os.PathLike[str], *,
                         fallback: bool = False, environ: Mapping[str, str] | None = None,
                         **kw: Any) -> DispatchReport:
    """`dispatch` inside a running event loop."""
    cat, keys = check_ready(items, catalogue, fallback, environ)
    return await Dispatcher(items, cat, out, keys=keys, fallback=fallback, **kw).run()
