"""Calls to the upstream OpenAI-compatible servers, with dispatch's rules (imported, not
copied): `classify` decides what a failure means (retry? may it have been billed? disable
the model?), `backoff_delay` spaces the retries, a `CircuitBreaker` per endpoint stops
calling a server that keeps refusing connections, and the `SpendGuard` holds every call's
upper-bound cost (`ModelSpec.reservation`, as in dispatch) before it is sent, so spend plus
reservations in flight never exceeds the hard cap while servers bill no more than reserved.
For servers that bill more (a prompt counted short, max_tokens ignored) serve is as safe as
dispatch, with the same two rules imported from it: `BilledScale` grows a model's later
reservations to 5% above what it was seen to bill, and `SlowStart` lets a model have one call
in flight until a bill has confirmed its reservation (the window then doubles per call billed
within, up to `max_in_flight`, and falls back to one after an overrun). So at most one call
per model can overrun the cap, as in a dispatch run.

A request walks its chain (the routed model, then its hull fallbacks): a model whose
reservation does not fit under the cap, which is disabled (401/403/404) or whose endpoint's
circuit is open is skipped; a retryable failure is retried up to `max_attempts` times, then
the next model is tried. A streamed request can fall back only until its first chunk has
arrived; after that it is metered from the final usage chunk (`stream_options.include_usage`)
or, when none arrives or the stream breaks, charged its whole reservation (unknown spend).

Rate limits (the catalogue's `rpm`/`tpm`, dispatch's `RateLimiter` token buckets, one per
model). A model at its limit is passed over at once for the next model of the chain (the
query's hull: the model the front itself would pick next), since a router is there to answer
now; only when every model of the chain is at its limit does the request wait, at most
`rate_wait_s` seconds in all, for the soonest of them to free. Past that it is answered 429
`rate_limit_exceeded` with a `Retry-After`. A retry of the same model after a failure takes
a slot too (waiting at most `rate_wait_s`), and an upstream 429 with a Retry-After pauses that
model's limiter, as in dispatch.

Unlike a dispatch run, a server lives on: a disabled model or an open circuit is tried
again after `cooldown_s`.
"""
from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Mapping, Sequence

from optllm.cost import Catalogue, ModelSpec
from optllm.dispatch.client import ClientPool, classify
from optllm.dispatch.limits import BilledScale, CircuitBreaker, RateLimiter, SlowStart, SpendGuard, backoff_delay
from optllm.secrets import redact


class Exhausted(Exception):
    """No model of the chain answered; `status` is the HTTP status to give the client."""

    def __init__(self, status: int, message: str, kind: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.retry_after = status, message, kind, retry_after


@dataclass
class Answer:
    """An answered call. For a stream, `first` is its first chunk and `rest` the iterator of
    the others; `settle` must be awaited once the stream has ended (or was abandoned)."""

    model: str
    response: Any = None
    cost: float = 0.0
    reserved: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    attempts: int = 1
    position: int = 0  # 0: the routed model; k: the k-th fallback
    skipped: list[str] = field(default_factory=list)
    first: Any = None
    rest: Any = None
    call: str = ""
    sent_at: float = math.nan  # perf_counter when the first upstream request was sent
    upstream_s: float = 0.0  # seconds spent waiting on upstream calls (to the answer or the first chunk)
    waited_s: float = 0.0  # seconds spent waiting for a slot (slow-start window, rate limit) before a send
    counted: float = 0.0  # the prompt tokens the reservation counted (a stream learns from its usage)
    bound: float | None = None  # its completion bound (None: max_output_tokens)
    settled: bool = False  # a stream's call settled (its slot released, its spend counted)


@dataclass
class _Tries:
    """What one request's attempts did so far: a call was sent; calls refused by the spend cap;
    the first send's time; the seconds waited on upstreams and on a slot (a model's
    slow-start window, its rate limit, room under the spend cap while calls in flight
    settle), which the server's overhead figure leaves out. Room under the cap is waited
    for until `deadline` at most, over the whole fallback chain."""

    deadline: float = math.inf  # the request's last moment to wait for room under the spend cap
    sent: bool = False
    cap_refused: int = 0
    sent_at: float = math.nan
    upstream_s: float = 0.0
    waited_s: float = 0.0

    def stamp(self, ans: "Answer", pos: int, reasons: list[str]) -> "Answer":
        ans.position, ans.skipped, ans.sent_at = pos, list(reasons), self.sent_at
        ans.upstream_s, ans.waited_s = self.upstream_s, self.waited_s
        return ans


class Upstreams:
    def __init__(self, catalogue: Catalogue, keys: Mapping[str, str], guard: SpendGuard, *, max_attempts: int = 3,
                 backoff_base: float = 0.2, backoff_cap: float = 5.0, breaker: int = 5, cooldown_s: float = 30.0,
                 seed: int = 0, client_factory: Callable[[ModelSpec, str], Any] | None = None,
                 ledger: Any = None, on_error: Callable[[str, str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, rate_wait_s: float = 1.0,
                 max_in_flight: int = 256) -> None:
        self.cat = catalogue
        self.keys = dict(keys)
        self.guard = guard
        self.max_attempts = max(1, int(max_attempts))
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.breaker = CircuitBreaker(breaker)
        self.cooldown_s = cooldown_s
        self.rng = random.Random(seed)
        self.clients = ClientPool(keys, client_factory)
        self.ledger = ledger
        self.on_error = on_error or (lambda model, kind: None)
        self.clock = clock
        self.rate_wait_s = max(0.0, float(rate_wait_s))
        self.limiters = {m.name: RateLimiter(m.rpm, m.tpm) for m in catalogue.models}
        self.scales = BilledScale(catalogue.names)
        self.window = SlowStart(max_in_flight, catalogue.names)
        self.disabled: dict[str, tuple[str, float]] = {}  # model -> (why, since)
        self._opened: dict[str, float] = {}  # endpoint -> when its circuit opened
        self._run = uuid.uuid4().hex[:8]
        self._seq = itertools.count(1)

    # ------------------------------------------------------------------ state
    def client(self, spec: ModelSpec) -> Any:
        return self.clients.get(spec)

    def warm(self) -> int:
        """Build the client of every endpoint whose key is known and load its chat resource, so
        no request pays for a client's construction or the client library's lazy imports
        (tens of milliseconds each, the first time) → the number of clients. Sends nothing."""
        for spec in self.cat.models:
            if spec.name in self.clients.keys:
                c = self.clients.get(spec)
                getattr(getattr(c, "chat", None), "completions", None)
        return len(self.clients)

    async def close(self) -> None:
        await self.clients.close()
        if self.ledger is not None:
            try:
                await self.ledger.flush()
            finally:
                self.ledger.close()

    def unavailable(self, spec: ModelSpec) -> str | None:
        """Why `spec` is not called now (disabled, circuit open), or None; expired ones reopen."""
        now = self.clock()
        d = self.disabled.get(spec.name)
        if d is not None:
            if now - d[1] < self.cooldown_s:
                return f"disabled ({d[0]})"
            del self.disabled[spec.name]
        url = spec.base_url
        if url in self.breaker.open:
            since = self._opened.setdefault(url, now)
            if now - since < self.cooldown_s:
                return redact(f"endpoint {url} unreachable ({self.breaker.open[url]})")
            del self.breaker.open[url]  # half-open: the next call decides
            self._opened.pop(url, None)
            self.breaker.streak[url] = max(0, self.breaker.threshold - 1)
        return None

    @staticmethod
    def _bound(spec: ModelSpec, n: int, max_tokens: int | None) -> float | None:
        """A call's completion bound: n × min(max_tokens, max_output_tokens) (None: the default
        max_output_tokens of one choice)."""
        if n == 1 and max_tokens is None:
            return None
        return float(n * (spec.max_output_tokens if max_tokens is None else min(int(max_tokens), spec.max_output_tokens)))

    def reservation(self, spec: ModelSpec, prompt_tokens: float, n: int = 1, max_tokens: int | None = None) -> float:
        """The spend guard's amount for one call: dispatch's rule (`ModelSpec.reservation`, grown
        by `BilledScale` for a model seen to bill more than reserved)."""
        return self.scales.reservation(spec, prompt_tokens, self._bound(spec, n, max_tokens))

    async def _journal(self, rec: dict[str, Any]) -> None:
        if self.ledger is not None:
            await self.ledger.append({**rec, "time": time.time()})

    # ------------------------------------------------------------------ calls
    def _kwargs(self, spec: ModelSpec, params: Mapping[str, Any], stream: bool) -> dict[str, Any]:
        body = dict(spec.params)
        body.update({k: v for k, v in params.items() if k not in ("max_tokens", "max_completion_tokens")})
        if spec.temperature is not None and "temperature" not in params:
            body["temperature"] = spec.temperature
        asked = params.get("max_tokens") or params.get("max_completion_tokens")
        body[spec.max_tokens_param] = min(int(asked), spec.max_output_tokens) if asked else spec.max_output_tokens
        if stream:
            body["stream"] = True
            body["stream_options"] = {**(params.get("stream_options") or {}), "include_usage": True}
        return body

    async def send(self, chain: Sequence[str], messages: list[dict[str, Any]], params: Mapping[str, Any],
                   prompt_tokens: Mapping[str, float], *, stream: bool = False) -> Answer:
        """Answer from the first model of `chain` that can; raises `Exhausted` when none can."""
        reasons: list[str] = []
        n = int(params.get("n") or 1)
        asked = params.get("max_tokens") or params.get("max_completion_tokens")
        cap_refused, tried = 0, _Tries(deadline=self.clock() + self.rate_wait_s)
        limited: list[tuple[float, int, str]] = []  # (seconds to a free slot, position, model): passed over
        for pos, name in enumerate(chain):
            spec = self.cat[name]
            why = self.unavailable(spec)
            if why:
                reasons.append(f"{name}: {why}")
                continue
            amount = self.reservation(spec, prompt_tokens[name], n, asked)
            if not self._could_fit(amount):
                cap_refused += 1
                reasons.append(f"{name}: its upper-bound cost ${amount:.6f} does not fit under the spend cap "
                               f"(${self.guard.remaining:.6f} left)")
                continue
            wait = self.limiters[name].try_acquire(self._limit_tokens(spec, prompt_tokens[name], n, asked))
            if wait > 0:
                limited.append((wait, pos, name))
                reasons.append(f"{name}: at its rate limit (rpm/tpm; a slot in {wait:.3g} s)")
                continue
            ans = await self._try(spec, amount, messages, params, stream, reasons, tried, prompt_tokens[name])
            if ans is not None:
                return tried.stamp(ans, pos, reasons)
        # every model of the chain was at its rate limit or failed: wait (bounded) for the soonest
        deadline = self.clock() + self.rate_wait_s
        for _, pos, name in sorted(limited):
            spec = self.cat[name]
            if self.unavailable(spec):
                continue
            amount = self.reservation(spec, prompt_tokens[name], n, asked)
            if not self._could_fit(amount):
                continue
            t_wait = time.perf_counter()
            got = await self._slot(spec, self._limit_tokens(spec, prompt_tokens[name], n, asked), deadline)
            tried.waited_s += time.perf_counter() - t_wait
            if not got:
                continue
            ans = await self._try(spec, amount, messages, params, stream, reasons, tried, prompt_tokens[name])
            if ans is not None:
                return tried.stamp(ans, pos, reasons)
        if (cap_refused or tried.cap_refused) and not tried.sent:
            raise Exhausted(429, "spend cap reached: " + "; ".join(reasons), "insufficient_quota")
        if limited and not tried.sent:
            waited = self.clock() - (deadline - self.rate_wait_s)
            soonest = max(0.0, min(w for w, _, _ in limited) - waited)
            raise Exhausted(429, f"every model of the route is at its rate limit (waited {self.rate_wait_s:g} s): "
                            + "; ".join(reasons), "rate_limit_exceeded", retry_after=soonest)
        raise Exhausted(502, "no upstream model answered: " + "; ".join(reasons), "upstream_error")

    @staticmethod
    def _limit_tokens(spec: ModelSpec, prompt_tokens: float, n: int, max_tokens: int | None) -> float:
        """What one call takes from the tokens/minute bucket: its prompt and its completion bound
        (as dispatch takes prompt + max_output_tokens)."""
        out = spec.max_output_tokens if max_tokens is None else min(int(max_tokens), spec.max_output_tokens)
        return float(prompt_tokens) + n * out

    def _could_fit(self, amount: float) -> bool:
        """Whether a reservation of `amount` fits under the cap once the calls in flight settle."""
        g = self.guard
        return g.cap is None or g.spent + amount <= g.cap

    async def _reserve(self, amount: float, deadline: float) -> bool:
        """Reserve `amount` under the spend cap → whether it was. When it fits only once calls in
        flight settle (a burst of reservations, each bounded by its worst case), wait for them
        until `deadline`, as for a rate-limit slot; when it cannot fit even then, refuse now."""
        g = self.guard
        if not self._could_fit(amount):
            return False
        if g.fits(amount):
            return await g.reserve(amount)
        try:
            return await asyncio.wait_for(g.reserve(amount), max(0.0, deadline - self.clock()))
        except asyncio.TimeoutError:
            return False

    async def _slot(self, spec: ModelSpec, tokens: float, deadline: float) -> bool:
        """A rate-limit slot of `spec` for a call of `tokens`, waiting until `deadline` at most."""
        lim = self.limiters[spec.name]
        while True:
            wait = lim.try_acquire(tokens)
            if wait <= 0:
                return True
            if self.clock() + wait > deadline:
                return False
            await asyncio.sleep(wait)

    async def _try(self, spec: ModelSpec, amount: float, messages: list[dict[str, Any]], params: Mapping[str, Any],
                   stream: bool, reasons: list[str], tried: "_Tries", prompt_tokens: float) -> Answer | None:
        """Up to `max_attempts` calls of `spec` (its first rate-limit slot already taken), each in
        the model's slow-start window and under a reservation grown by what it was seen to bill."""
        kwargs = self._kwargs(spec, params, stream)
        n = int(params.get("n") or 1)
        asked = params.get("max_tokens") or params.get("max_completion_tokens")
        bound = self._bound(spec, n, asked)
        for attempt in range(1, self.max_attempts + 1):
            if self.unavailable(spec):
                reasons.append(f"{spec.name}: {self.unavailable(spec)}")
                return None
            t_wait = time.perf_counter()
            got = attempt == 1 or await self._slot(spec, self._limit_tokens(spec, prompt_tokens, n, asked),
                                                   self.clock() + self.rate_wait_s)
            if not got:
                reasons.append(f"{spec.name}: at its rate limit for a retry (waited {self.rate_wait_s:g} s)")
                return None
            await self.window.acquire(spec.name)
            tried.waited_s += time.perf_counter() - t_wait
            held, within, delay = True, None, None
            try:
                amount = self.reservation(spec, prompt_tokens, n, asked)  # grown while this call waited?
                t_wait = time.perf_counter()
                got = await self._reserve(amount, tried.deadline)
                tried.waited_s += time.perf_counter() - t_wait
                if not got:
                    reasons.append(f"{spec.name}: its upper-bound cost ${amount:.6f} does not fit under the spend "
                                   f"cap (${self.guard.remaining:.6f} left)")
                    tried.cap_refused += 1
                    return None
                call = f"{self._run}-{next(self._seq)}"
                tried.sent = True
                await self._journal({"event": "reserve", "call": call, "id": call, "model": spec.name,
                                     "amount": amount, "attempt": attempt})
                t_post = time.perf_counter()
                if tried.sent_at != tried.sent_at:  # NaN: the request's first upstream send
                    tried.sent_at = t_post
                try:
                    try:
                        resp = await self._post(spec, {"model": spec.model_id, "messages": messages, **kwargs},
                                                stream)
                        first = None
                        if stream:
                            try:
                                first = await resp.__anext__()
                            except StopAsyncIteration:
                                raise ValueError("the stream ended before its first chunk") from None
                    finally:
                        tried.upstream_s += time.perf_counter() - t_post
                except asyncio.CancelledError:
                    await self._settle(spec, call, amount, amount, unknown=True)  # may have been sent: counted
                    raise
                except Exception as exc:  # noqa: BLE001 - classified
                    err = classify(exc)
                    charged = amount if err.maybe_charged else 0.0
                    await self._journal({"event": "error", "call": call, "id": call, "model": spec.name,
                                         "kind": err.kind, "retryable": err.retryable, "charged": charged,
                                         "message": err.message})
                    await self.guard.settle(amount, charged)
                    self.on_error(spec.name, err.kind)
                    if err.disables_model:
                        self.disabled[spec.name] = (f"HTTP {err.kind}", self.clock())
                    if err.kind in ("connection", "timeout"):
                        if self.breaker.failure(spec.base_url, err.message):
                            self._opened[spec.base_url] = self.clock()
                    else:
                        self.breaker.success(spec.base_url)
                    if err.retryable and err.kind == "429" and err.retry_after:
                        self.limiters[spec.name].pause(min(err.retry_after, self.backoff_cap))  # as dispatch
                    last = redact(f"{err.kind} after {attempt} attempt(s) at {spec.base_url}: {err.message}")
                    if not err.retryable or attempt == self.max_attempts:
                        reasons.append(f"{spec.name}: {last}")
                        return None
                    delay = backoff_delay(attempt, self.backoff_base, self.backoff_cap, self.rng, err.retry_after)
                else:
                    self.breaker.success(spec.base_url)
                    if stream:  # settled, learnt from and its window released at the stream's end
                        held = False
                        return Answer(spec.name, reserved=amount, attempts=attempt, first=first, rest=resp,
                                      call=call, counted=prompt_tokens, bound=bound)
                    pt, ct = _usage(resp)
                    unknown = pt is None or ct is None
                    cost = amount if unknown else float(spec.call_cost(pt, ct))
                    within = self._learn(spec, amount, cost, prompt_tokens, bound, pt, ct)
                    await self._settle(spec, call, amount, cost, unknown=unknown)
                    return Answer(spec.name, resp, cost, amount, pt, ct, attempt, call=call)
            finally:
                if held:
                    self.window.release(spec.name, within)
            await asyncio.sleep(delay)  # the backoff, outside the window
        return None  # pragma: no cover - the loop returns

    def _learn(self, spec: ModelSpec, amount: float, cost: float, counted: float, bound: float | None,
               pt: int | None, ct: int | None) -> bool:
        """dispatch's rule (`BilledScale`): grow the model's later reservations when a call was
        billed more prompt or completion tokens than reserved → whether it was billed within
        its reservation (usage unknown: charged the reservation, so within)."""
        if pt is None or ct is None:
            return True
        self.scales.learn_prompt(spec, counted, pt)
        self.scales.learn_completion(spec, ct, bound)
        return BilledScale.within(amount, cost)

    async def _post(self, spec: ModelSpec, body: dict[str, Any], stream: bool) -> Any:
        """POST /chat/completions through the official client's own request path (its errors,
        timeouts and SSE parsing), the request body passed as the client sent it: no per-call
        re-validation of the messages, which `chat.completions.create` would do."""
        from openai import AsyncStream
        from openai.types.chat import ChatCompletion, ChatCompletionChunk

        return await self.client(spec).post("/chat/completions", body=body, cast_to=ChatCompletion, stream=stream,
                                            stream_cls=AsyncStream[ChatCompletionChunk])

    def warm(self) -> None:
        """Build every endpoint's client now (imports, TLS context), not on the first request."""
        for spec in self.cat.models:
            self.client(spec)

    async def _settle(self, spec: ModelSpec, call: str, amount: float, cost: float, unknown: bool = False) -> None:
        await self._journal({"event": "answer", "call": call, "id": call, "model": spec.name, "cost": cost,
                             "reserved": amount, **({"note": "usage unknown: charged the reservation"}
                                                    if unknown else {})})
        await self.guard.settle(amount, cost)

    async def stream_rest(self, ans: Answer) -> AsyncIterator[Any]:
        """The chunks of a streamed answer (its first one included); on the end of the stream
        (or its abandonment) the call is settled from the usage chunk, else at its reservation."""
        usage: tuple[int | None, int | None] = (None, None)
        done = False
        try:
            chunk = ans.first
            while True:
                u = _usage(chunk)
                if u[0] is not None:
                    usage = u
                yield chunk
                try:
                    chunk = await ans.rest.__anext__()
                except StopAsyncIteration:
                    done = True
                    break
        finally:
            await self._end_stream(ans, usage if done else (None, None))

    async def abandon(self, ans: Answer) -> None:
        """Settle a streamed answer whose chunks were never read (the client went away before
        the body started): at its reservation, as it may have been billed. Once only: a
        stream already settled by `stream_rest` is left as it is."""
        await self._end_stream(ans, (None, None))

    async def _end_stream(self, ans: Answer, usage: tuple[int | None, int | None]) -> None:
        """Once per streamed answer: its cost from the usage (else its reservation), the
        billing lesson, the upstream stream closed, the slow-start slot and the spend settled."""
        if ans.settled:
            return
        ans.settled = True
        spec = self.cat[ans.model]
        pt, ct = usage
        if pt is not None and ct is not None:
            ans.prompt_tokens, ans.completion_tokens = pt, ct
            ans.cost = float(spec.call_cost(pt, ct))
            unknown = False
        else:
            ans.cost, unknown = ans.reserved, True
        within = self._learn(spec, ans.reserved, ans.cost, ans.counted, ans.bound,
                             *((pt, ct) if not unknown else (None, None)))
        try:
            close = getattr(ans.rest, "close", None)
            if close is not None and unknown:
                await close()
        finally:
            self.window.release(spec.name, within)
            await asyncio.shield(self._settle(spec, ans.call, ans.reserved, ans.cost, unknown=unknown))


def _usage(resp: Any) -> tuple[int | None, int | None]:
    u = getattr(resp, "usage", None)
    if u is None:
        return None, None
    p, c = getattr(u, "prompt_tokens", None), getattr(u, "completion_tokens", None)
    if p is None or c is None or not (math.isfinite(p) and math.isfinite(c)):
        return None, None
    return int(p), int(c)
