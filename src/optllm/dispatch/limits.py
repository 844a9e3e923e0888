"""Throttles: the hard spend guard, per-model rate limits, and retry backoff."""
from __future__ import annotations

import asyncio
import math
import random
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from optllm.cost import ModelSpec


class SpendGuard:
    """Never let spent + reserved exceed `cap`.

    Each call reserves its upper-bound cost before it is sent and settles it with what it
    really cost afterwards. A reservation that does not fit waits while other calls are in
    flight (their settlements may free room); when nothing is in flight and it still does
    not fit, the guard stops for good and every later reservation is refused.
    """

    def __init__(self, cap: float | None, spent: float = 0.0) -> None:
        self.cap = cap
        self.spent = float(spent)
        self.reserved = 0.0
        self.in_flight = 0
        self.stopped = False
        self.stop_reason = ""
        self.overruns = 0  # calls that cost more than their reservation
        self._cond = asyncio.Condition()

    @property
    def remaining(self) -> float:
        return math.inf if self.cap is None else self.cap - self.spent - self.reserved

    def fits(self, amount: float) -> bool:
        return self.cap is None or self.spent + self.reserved + amount <= self.cap

    async def reserve(self, amount: float) -> bool:
        """True once `amount` is reserved; False when the guard has stopped."""
        async with self._cond:
            while True:
                if self.stopped:
                    return False
                if self.fits(amount):
                    self.reserved += amount
                    self.in_flight += 1
                    return True
                if self.in_flight == 0:
                    self.stopped = True
                    self.stop_reason = (
                        f"the next call's upper-bound cost ${amount:.6f} would exceed the spend cap "
                        f"${self.cap:.6f} (spent ${self.spent:.6f})"
                    )
                    self._cond.notify_all()
                    return False
                await self._cond.wait()

    async def settle(self, amount: float, charged: float) -> None:
        """Release a reservation of `amount`; add what the call cost (`charged`)."""
        async with self._cond:
            self.in_flight -= 1
            # nothing in flight holds nothing reserved (no float residue to refuse a call by)
            self.reserved = max(0.0, self.reserved - amount) if self.in_flight else 0.0
            self.spent += charged
            if charged > amount + 1e-15:
                self.overruns += 1
            self._cond.notify_all()

    async def stop(self, reason: str) -> None:
        async with self._cond:
            self.stopped = True
            self.stop_reason = self.stop_reason or reason
            self._cond.notify_all()


class BilledScale:
    """Reservations grown for servers seen to bill more than reserved, per model: `prompt[m]`
    multiplies the counted prompt tokens and `completion[m]` the call's completion bound
    (max_output_tokens, or what the caller asked for), each set 5% above the largest ratio
    billed so far. Dispatch and serve share it: after a call billed beyond its reservation,
    later calls of that model reserve what the server was seen to bill."""

    GROWTH = 1.05

    def __init__(self, models: "list[str] | tuple[str, ...]") -> None:
        self.prompt = {m: 1.0 for m in models}
        self.completion = {m: 1.0 for m in models}

    def reservation(self, spec: "ModelSpec", prompt_tokens: float, completion_tokens: float | None = None) -> float:
        """`spec.reservation` of a call with `prompt_tokens` counted and a completion bound of
        `completion_tokens` (None: max_output_tokens), both grown by what the model was seen to bill."""
        cs = self.completion[spec.name]
        if completion_tokens is None:
            bound = None if cs == 1.0 else spec.max_output_tokens * cs
        else:
            bound = completion_tokens * cs
        return spec.reservation(prompt_tokens * self.prompt[spec.name], bound)

    def learn_prompt(self, spec: "ModelSpec", counted: float, billed: float) -> None:
        """A call of `counted` prompt tokens was billed `billed`: grow when over what was reserved."""
        ps = self.prompt[spec.name]
        if counted > 0 and billed > math.ceil(counted * ps * (1 + spec.margin)):
            self.prompt[spec.name] = max(ps, billed / (counted * (1 + spec.margin)) * self.GROWTH)

    def learn_completion(self, spec: "ModelSpec", billed: float, bound: float | None = None) -> None:
        """A call with a completion bound `bound` (None: max_output_tokens) was billed `billed`
        completion tokens: grow when over the (grown) bound."""
        bound = spec.max_output_tokens if bound is None else bound
        cs = self.completion[spec.name]
        if bound > 0 and billed > bound * cs:
            self.completion[spec.name] = max(cs, billed / bound * self.GROWTH)

    @staticmethod
    def within(amount: float, cost: float) -> bool:
        """Whether a call billed `cost` stayed within its reservation `amount`."""
        return cost <= amount * (1 + 1e-9) + 1e-15


class RateLimiter:
    """Token buckets for requests/minute and tokens/minute of one model, each allowing a
    burst of one second's worth (at least one request / one call's tokens). A 429 can pause
    the whole model with `pause(seconds)`."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None, clock=time.monotonic) -> None:
        self._clock = clock
        self._lock = asyncio.Lock()
        self._paused_until = 0.0
        self._buckets: list[list[float]] = []  # [rate/s, capacity, level, last]
        now = clock()
        for per_min in (rpm, tpm):
            if per_min:
                rate = per_min / 60.0
                self._buckets.append([rate, max(1.0, rate), max(1.0, rate), now])
            else:
                self._buckets.append([])

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    def try_acquire(self, tokens: float = 0.0) -> float:
        """Take one request and `tokens` now if the buckets hold them → 0.0; else take nothing
        and → the seconds until they would (synchronous: atomic on the event loop)."""
        now = self._clock()
        wait = self._paused_until - now
        need = (1.0, tokens)
        for b, amount in zip(self._buckets, need):
            if not b:
                continue
            rate, cap, level, last = b
            level = min(cap, level + (now - last) * rate)
            b[2], b[3] = level, now
            amount = min(amount, cap)
            if level < amount:
                wait = max(wait, (amount - level) / rate)
        if wait > 0:
            return wait
        for b, amount in zip(self._buckets, need):
            if b:
                b[2] -= min(amount, b[1])
        return 0.0

    async def acquire(self, tokens: float = 0.0) -> None:
        async with self._lock:
            while True:
                wait = self.try_acquire(tokens)
                if wait <= 0:
                    return
                await asyncio.sleep(wait)


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random,
                  retry_after: float | None = None) -> float:
    """Exponential backoff with jitter: uniform(step/2, step) with step = min(cap,
    base·2^(attempt−1)), and never less than the server's Retry-After (itself capped at `cap`)."""
    step = min(cap, base * (2.0 ** max(0, attempt - 1)))
    delay = step * (0.5 + 0.5 * rng.random())
    if retry_after is not None and retry_after > 0:
        delay = max(delay, min(retry_after, cap))
    return delay


class SlowStart:
    """Calls in flight per model, grown only as billed usage confirms the reservations.

    A model starts at one call in flight; each call billed within its reservation doubles
    its window (up to `limit`); a call billed more than reserved sets it back to one. So
    before a server has shown how it bills, at most one of its calls can overrun the spend
    cap, and after an overrun the next calls go one at a time under the grown reservation.
    A waiter is always woken by a call of the same model finishing (the window is full only
    while that model has calls in flight). `release` is synchronous, so it also runs in the
    `finally` of a cancelled call."""

    def __init__(self, limit: int, models: "list[str] | tuple[str, ...]") -> None:
        self.limit = max(1, int(limit))
        self.window = {m: 1 for m in models}
        self.in_flight = {m: 0 for m in models}
        self._changed = asyncio.Event()

    async def acquire(self, model: str) -> None:
        while self.in_flight[model] >= self.window[model]:
            self._changed.clear()
            await self._changed.wait()
        self.in_flight[model] += 1

    def release(self, model: str, billed_within: bool | None) -> None:
        """`billed_within`: True/False for an answered call, None when nothing was billed
        or its bill is unknown (the window stays as it is)."""
        self.in_flight[model] -= 1
        if billed_within is True:
            self.window[model] = min(self.limit, self.window[model] * 2)
        elif billed_within is False:
            self.window[model] = 1
        self._changed.set()


class CircuitBreaker:
    """Per endpoint (base URL): `threshold` connection failures or timeouts in a row, with no
    answer or HTTP response in between, open the circuit for the rest of the run."""

    def __init__(self, threshold: int) -> None:
        self.threshold = max(1, int(threshold))
        self.streak: dict[str, int] = {}
        self.open: dict[str, str] = {}

    def success(self, endpoint: str) -> None:
        self.streak[endpoint] = 0

    def failure(self, endpoint: str, message: str) -> bool:
        """Count one failure; True when it opens the circuit."""
        if endpoint in self.open:
            return False
        n = self.streak.get(endpoint, 0) + 1
        self.streak[endpoint] = n
        if n >= self.threshold:
            self.open[endpoint] = f"{n} connection failures or timeouts in a row (last: {message})"
            return True
        return False
