"""`dispatch --engine ray`: the plan's queries sent from Ray workers under one global spend cap.

One coordinator actor owns everything that must be global:

- the spend cap: a `SpendGuard` (the very object local dispatch uses) lives inside the actor.
  Ray runs an async actor's methods on one event loop in one process, so every worker's
  `reserve`/`settle` goes through the same guard, one at a time: a reservation is granted only
  when `spent + reserved + amount <= cap` *in that single guard*, whatever the number of workers
  racing. That is why the cap holds under concurrency: there is no per-worker budget to
  over-commit, and a worker sends a request only after its reservation of the request's
  upper-bound cost (local dispatch's own `BilledScale.reservation` rule) came back granted.
- the answers file and its ledger: the coordinator appends to the same `answers.jsonl` and
  `answers.ledger.jsonl` as local dispatch, with the same `DurableLog` (each line fsynced before
  the worker that wrote it goes on: a reservation is on disk before its request is sent). So a
  local resume and a Ray resume read the same files, in either order.
- which queries go out: the coordinator reads `ResumeState` once, and the driver deals the
  unanswered queries into disjoint shards (each query in exactly one shard; already answered
  ones, and those held by a provider batch, in none). So a query is sent by one worker only,
  and after a crash a rerun skips everything the answers file records as answered (a request
  whose reservation has no outcome counts as spent, as for local dispatch).

Workers are Ray tasks running local dispatch's `Dispatcher` on their shard (same client pool,
classification, retries with backoff, circuit breaker, rate limiter and slow start), with its
guard and its two logs replaced by thin proxies to the coordinator. Rate limits (`rpm`/`tpm`)
are per worker process: each worker gets its share (the model's limit / workers).

SIGINT/SIGTERM on the driver (`_StopSignals`) as for local dispatch: the first stops the
coordinator's guard, so no worker is granted a new reservation and the calls in flight finish
and are recorded; a second cancels the workers (their calls in flight abandoned, counted as
spent, sent again on resume).
"""
from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

from optllm.cost import Catalogue, prompt_tokens
from optllm.dispatch.client import (DispatchReport, Dispatcher, _now, _Progress, check_options, check_ready)
from optllm.dispatch.ledger import DurableLog, ResumeState, ledger_path
from optllm.dispatch.limits import RateLimiter, SlowStart, SpendGuard
from optllm.engine import RAY_HINT, cluster_workers, join_or_start
from optllm.errors import OptLLMError
from optllm.planning.items import PlanItem
from optllm.secrets import redact, remember

__all__ = ["ray_dispatch", "RayDispatchReport"]


@dataclasses.dataclass
class RayDispatchReport(DispatchReport):
    """A `DispatchReport` for the whole plan, plus the Ray run's shape."""

    workers: int = 0
    shards: list[int] = dataclasses.field(default_factory=list)  # queries dealt to each worker

    def as_dict(self) -> dict[str, Any]:
        d = super().as_dict()
        d.update({"engine": "ray", "workers": self.workers, "shards": self.shards})
        return d


class Coordinator:
    """The global ledger and spend cap (a Ray async actor; see the module docstring)."""

    def __init__(self, out: str, max_spend: float | None, keys: Sequence[str]) -> None:
        for k in keys:  # so the logs written here hide them too
            remember(k)
        self.out = Path(out)
        self.ledger_file = ledger_path(self.out)
        self.state = ResumeState.read(self.out, self.ledger_file, repair=True)
        self.guard = SpendGuard(max_spend, spent=self.state.spent)
        self.logs = {"answers": DurableLog(self.out).open(), "ledger": DurableLog(self.ledger_file).open()}

    def resume_state(self) -> ResumeState:
        return self.state

    # -- the cap: SpendGuard itself, on this actor's single event loop
    async def reserve(self, amount: float) -> bool:
        return await self.guard.reserve(amount)

    async def settle(self, amount: float, charged: float) -> None:
        await self.guard.settle(amount, charged)

    async def stop(self, reason: str) -> None:
        await self.guard.stop(reason)

    async def abandon(self, amount: float, logged: bool) -> None:
        """A worker's call cancelled mid-flight: its reservation is released, and kept as spent
        when its request may have gone out (as the ledger's unresolved reservation will be)."""
        self.guard.reserved = max(0.0, self.guard.reserved - amount)
        self.guard.in_flight -= 1
        if logged:
            self.guard.spent += amount
        async with self.guard._cond:
            self.guard._cond.notify_all()

    def guard_state(self) -> dict[str, Any]:
        g = self.guard
        return {"spent": g.spent, "reserved": g.reserved, "in_flight": g.in_flight, "stopped": g.stopped,
                "stop_reason": g.stop_reason, "overruns": g.overruns}

    # -- the files
    async def append(self, which: str, rec: dict[str, Any]) -> None:
        await self.logs[which].append(rec)

    async def write_now(self, rec: dict[str, Any]) -> None:
        await self.logs["ledger"].flush()
        self.logs["ledger"].write_now(rec)

    async def close(self) -> None:
        for log in self.logs.values():
            await log.flush()
            log.close()


class _RemoteGuard:
    """What `Dispatcher` needs of a `SpendGuard`, answered by the coordinator's guard."""

    def __init__(self, coord: Any) -> None:
        self.coord = coord
        self.spent = self.reserved = 0.0  # this worker's view, for its progress line only
        self.in_flight = 0
        self.stopped = False
        self.stop_reason = ""
        self.overruns = 0

    async def reserve(self, amount: float) -> bool:
        ok = bool(await self.coord.reserve.remote(amount))
        if ok:
            self.in_flight += 1
        else:
            self.stopped = True
        return ok

    async def settle(self, amount: float, charged: float) -> None:
        await self.coord.settle.remote(amount, charged)
        self.in_flight -= 1
        self.spent += charged
        if charged > amount + 1e-15:
            self.overruns += 1

    async def stop(self, reason: str) -> None:
        self.stopped, self.stop_reason = True, self.stop_reason or reason
        await self.coord.stop.remote(reason)


class _RemoteLog:
    """What `Dispatcher` needs of a `DurableLog`: `append` returns once the coordinator fsynced it."""

    def __init__(self, coord: Any, which: str) -> None:
        self.coord, self.which = coord, which

    async def append(self, rec: dict[str, Any]) -> None:
        await self.coord.append.remote(self.which, rec)


class _ShardDispatcher(Dispatcher):
    """Local dispatch's `Dispatcher` on one shard, its cap and files held by the coordinator."""

    def __init__(self, coord: Any, *args: Any, run_id: str, shard: int, workers: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.coord = coord
        self.run_id = f"{run_id}w{shard}"  # call ids stay unique across workers
        self.n_workers = workers

    async def run_shard(self, state: ResumeState) -> DispatchReport:
        t0 = time.monotonic()
        rep = self.report
        self._learn_from(state)
        self.guard = _RemoteGuard(self.coord)  # type: ignore[assignment]
        self.limiters = {m.name: RateLimiter(None if m.rpm is None else m.rpm / self.n_workers,
                                             None if m.tpm is None else m.tpm / self.n_workers)
                         for m in self.cat.models}
        self.window = SlowStart(self.concurrency, self.cat.names)
        self._stop_event = asyncio.Event()
        todo = self.items
        self.ptok = {}
        if todo:
            counts = prompt_tokens([it.prompt for it in todo], self.cat)
            col = {name: k for k, name in enumerate(self.cat.names)}
            for i, it in enumerate(todo):
                for name in (it.model, *(it.fallbacks if self.fallback else ())):
                    self.ptok[(it.id, name)] = float(counts[i, col[name]])
        self.answers = _RemoteLog(self.coord, "answers")  # type: ignore[assignment]
        self.ledger = _RemoteLog(self.coord, "ledger")  # type: ignore[assignment]
        self.bar = _Progress(len(todo), 0, self.max_spend, False, None)
        queue: asyncio.Queue[PlanItem] = asyncio.Queue()
        for it in todo:
            queue.put_nowait(it)
        self._workers = [asyncio.create_task(self._worker(queue))
                         for _ in range(min(self.concurrency, max(1, len(todo))))]
        try:
            for r in await asyncio.gather(*self._workers, return_exceptions=True):
                if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                    raise r
        finally:
            await self.clients.close()
            self.bar.stop()
        left = [it for it in todo if it.id not in self._answered_now and it.id not in rep.failed]
        rep.not_sent = len(left)
        rep.not_sent_by_model = dict(Counter(it.model for it in left))
        rep.not_sent_upper_cost = float(sum(self._reservation(self.cat[it.model], self.ptok[(it.id, it.model)])
                                            for it in left))
        rep.endpoints_down = {
            redact(url): f"model(s) {', '.join(m.name for m in self.cat.models if m.base_url == url)}: {why}"
            for url, why in self.breaker.open.items()}
        rep.overruns = self.guard.overruns
        rep.elapsed_s = time.monotonic() - t0
        return rep


def _run_shard(coord: Any, items: list[PlanItem], cat: Catalogue, keys: dict[str, str], options: dict[str, Any],
               state: ResumeState, run_id: str, shard: int, workers: int) -> DispatchReport:
    """A Ray task: send one shard (see `_ShardDispatcher`)."""
    for k in keys.values():
        remember(k)
    d = _ShardDispatcher(coord, items, cat, "unused.jsonl", keys=keys, handle_signals=False, run_id=run_id,
                         shard=shard, workers=workers, **options)
    return asyncio.run(d.run_shard(state))


def _merge(total: RayDispatchReport, part: DispatchReport) -> None:
    total.answered += part.answered
    total.failed.update(part.failed)
    total.not_sent += part.not_sent
    for k, v in part.not_sent_by_model.items():
        total.not_sent_by_model[k] = total.not_sent_by_model.get(k, 0) + v
    total.not_sent_upper_cost += part.not_sent_upper_cost
    total.endpoints_down.update(part.endpoints_down)
    total.calls += part.calls
    total.retries += part.retries
    total.fallbacks_used += part.fallbacks_used
    total.overruns += part.overruns
    total.spent_uncertain += part.spent_uncertain
    for k, v in part.errors.items():
        total.errors[k] = total.errors.get(k, 0) + v


class _StopSignals:
    """SIGINT/SIGTERM on the driver, as local dispatch answers them: the first stops the
    coordinator's guard (no new reservation is granted, so no worker sends a new call; the
    calls in flight finish and are recorded), a second cancels the workers (their calls in
    flight are abandoned: their reservations stay in the ledger as spent, and a resume sends
    them again). Installed only on the main thread, and when `enabled`."""

    def __init__(self, coord: Any, refs: list[Any], enabled: bool) -> None:
        self.coord, self.refs = coord, refs
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.first = ""
        self.abandoned = False
        self.in_flight = 0
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopSignals":
        if self.enabled:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _on_signal(self, sig: int, _frame: Any) -> None:
        import ray

        name = signal.Signals(sig).name
        if not self.first:
            self.first = name
            self.coord.stop.remote(f"interrupted by {name}")
            print(f"{name}: no new calls; waiting for the calls in flight on the workers to be recorded (again to "
                  "abandon them: they then count as spent and are sent again on resume)", file=sys.stderr, flush=True)
            return
        if not self.abandoned:
            self.abandoned = True
            try:
                self.in_flight = int(ray.get(self.coord.guard_state.remote(), timeout=5)["in_flight"])
            except Exception:  # noqa: BLE001 - the count is for the report only
                self.in_flight = 0
            print(f"{name} again: abandoning {self.in_flight} call(s) in flight", file=sys.stderr, flush=True)
            for ref in self.refs:
                ray.cancel(ref, force=True)


def ray_dispatch(items: Sequence[PlanItem], catalogue: Catalogue, out: str | os.PathLike[str], *,
                 concurrency: int = 16, max_spend: float | None = None, fallback: bool = False,
                 environ: Mapping[str, str] | None = None, address: str | None = None,
                 workers: int | None = None, cheapest_first: bool = True, **kw: Any) -> RayDispatchReport:
    """`optllm.dispatch.dispatch` from Ray workers: same inputs (plus `address`: a running
    cluster, None: a local one; `workers`: shards, default the cluster's CPUs), same files
    (`out` and its ledger, resumable by either engine), a `DispatchReport` for the whole plan.
    `concurrency` is per worker. The catalogue, keys and options are checked before a cluster
    starts; without ray: `OptLLMError(RAY_HINT)`. The guarantees: see the module docstring."""
    try:
        import ray
    except Exception:
        raise OptLLMError(RAY_HINT) from None
    if workers is not None and workers < 1:
        raise OptLLMError(f"--workers must be at least 1, got {workers}")
    cat, keys = check_ready(items, catalogue, fallback, environ)
    seen: set[str] = set()
    for it in items:
        if it.id in seen:
            raise OptLLMError(f"the plan lists query {it.id!r} twice")
        seen.add(it.id)
    check_options(concurrency=concurrency, max_spend=max_spend,
                  **{k: kw[k] for k in ("max_attempts", "backoff_base", "backoff_cap", "breaker") if k in kw})
    allowed = {"max_attempts", "backoff_base", "backoff_cap", "breaker", "seed", "client_factory"}
    bad = sorted(set(kw) - allowed - {"progress", "console", "handle_signals", "on_answer"})
    if bad:
        raise OptLLMError(f"--engine ray does not take {', '.join(bad)}")
    options = {"concurrency": concurrency, "max_spend": max_spend, "fallback": fallback,
               **{k: v for k, v in kw.items() if k in allowed}}
    out = Path(out)
    t0 = time.monotonic()
    started = join_or_start(address, workers)
    try:
        n = cluster_workers(workers)
        coord = ray.remote(num_cpus=0)(Coordinator).remote(str(out.resolve()), max_spend, list(keys.values()))
        state: ResumeState = ray.get(coord.resume_state.remote())
        rep = RayDispatchReport(max_spend=max_spend, answers_path=str(out), ledger_path=str(ledger_path(out)),
                                workers=n)
        rep.resume_from(state, items)
        held = state.in_pending_batch
        rep.in_pending_batches = sum(1 for it in items if it.id in held)
        todo = [it for it in items if it.id not in state.answered and it.id not in held]
        rep.resent_after_crash = sum(1 for it in todo if it.id in state.unresolved_ids)
        if todo and max_spend is not None and cheapest_first:
            counts = prompt_tokens([it.prompt for it in todo], cat)
            col = {name: k for k, name in enumerate(cat.names)}
            upper = {it.id: cat[it.model].reservation(float(counts[i, col[it.model]])) for i, it in enumerate(todo)}
            if sum(upper.values()) > max_spend - state.spent:
                todo.sort(key=lambda it: upper[it.id])  # dealt round-robin: every worker goes cheapest first
                rep.order = "cheapest first (the cap is below the plan's upper-bound cost)"
        shards = [todo[k::n] for k in range(n)]
        rep.shards = [len(s) for s in shards]
        run_id = uuid.uuid4().hex[:8]
        ray.get(coord.write_now.remote({"event": "run_start", "run": run_id, "time": _now(), "engine": "ray",
                                        "workers": n, "planned": rep.planned, "to_send": len(todo),
                                        "max_spend": max_spend, "spent_before": state.spent, "fallback": fallback,
                                        "concurrency": concurrency, "order": rep.order,
                                        "resent_after_crash": rep.resent_after_crash}))
        task = ray.remote(num_cpus=1)(_run_shard)
        sent = [(k, s) for k, s in enumerate(shards) if s]
        refs = [task.remote(coord, s, cat, keys, options, state, run_id, k, n) for k, s in sent]
        stop = _StopSignals(coord, refs, kw.get("handle_signals", True))
        lost: list[list[PlanItem]] = []
        try:
            with stop:
                pending = list(refs)
                while pending:  # in short waits, so a signal's handler runs while the shards go on
                    _, pending = ray.wait(pending, num_returns=len(pending), timeout=0.25)
            for (k, s), ref in zip(sent, refs):
                try:
                    _merge(rep, ray.get(ref))
                except ray.exceptions.RayError:
                    if not stop.abandoned:
                        raise
                    lost.append(s)  # its worker was cancelled by a second signal: counted from the files below
        except Exception as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, OptLLMError):
                raise OptLLMError(str(cause)) from None
            raise
        finally:
            rep.interrupted = stop.first
            if stop.abandoned:
                rep.abandoned = stop.in_flight
            g = ray.get(coord.guard_state.remote())
            rep.stopped = g["stop_reason"] if g["stopped"] else ""
            rep.spent_total = g["spent"] + g["reserved"]
            rep.elapsed_s = time.monotonic() - t0
            if rep.stopped:
                ray.get(coord.write_now.remote({"event": "stopped", "run": run_id, "time": _now(),
                                                "reason": rep.stopped, "not_sent": rep.not_sent}))
            ray.get(coord.write_now.remote({"event": "run_end", "run": run_id, "time": _now(), "engine": "ray",
                                            "answered": rep.answered, "failed": len(rep.failed),
                                            "not_sent": rep.not_sent, "spent_total": rep.spent_total,
                                            "over_cap": rep.over_cap}))
            ray.get(coord.close.remote())
            ray.kill(coord)
        final = ResumeState.read(out, ledger_path(out), repair=False)
        rep.spent_uncertain = final.spent_uncertain
        for s in lost:  # shards whose report died with their worker: what the answers file says
            done = sum(1 for it in s if it.id in final.answered)
            rep.answered += done
            rep.not_sent += len(s) - done
        return rep
    finally:
        if started:
            ray.shutdown()
