"""The OpenAI-compatible app: `POST /v1/chat/completions` (plain and streamed), `GET
/v1/models`, `GET /metrics`, `GET /healthz`.

Request `model`:
- `optllm-auto` (or `auto`, or none): routed (`optllm.serve.router`) at the pacer's λ, with
  fallbacks along the query's hull; the answer's cost moves λ (`optllm.serve.pacing`);
- a catalogue model name: sent to that model only (retries, no fallback); spends under the
  hard cap but does not move λ;
- anything else: 404 `model_not_found`, as OpenAI answers.
The response's `model` field and the `x-optllm-model` header name the model that answered;
`x-optllm-routed-model`, `x-optllm-route-ms`, `x-optllm-lambda`, `x-optllm-fallback` and
`x-optllm-cost-usd` say how it was chosen and what it cost (streams: all but the cost);
`x-optllm-presend-ms` is the handler's time until the upstream request went out, of which
`x-optllm-wait-ms` waiting for a slot (a model's slow-start window or its rate limit: waits on
other requests' upstream calls), and `x-optllm-overhead-ms` (plain requests) its whole time,
the response serialised, minus the waits on upstreams and on slots: the router's own work.

`tools` (and `tool_choice`, tool messages) and `n` > 1 are forwarded: the tools' schemas and
the messages' tool calls are counted into the reservation's prompt, the completion bound is
n × max_tokens, and the call is metered from its usage (all n choices); a server billing more
than counted is caught by dispatch's `BilledScale` (`optllm.serve.upstream`). The router reads
the last user message only.

With `shadow` set, every request goes to that model and the router's choice, with its
predicted accuracy and cost, is only logged (and λ moves on the router's estimated costs).
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request  # the `serve` extra
from fastapi.responses import JSONResponse, Response, StreamingResponse

from optllm.cost import Catalogue
from optllm.errors import OptLLMError
from optllm.secrets import redact
from optllm.serve.metrics import Metrics
from optllm.serve.pacing import Pacer
from optllm.serve.router import Decision, Router, tokens_one
from optllm.serve.upstream import Answer, Exhausted, Upstreams

AUTO = "optllm-auto"
AUTO_ALIASES = (AUTO, "auto", "", None)
EXTRA_MESSAGE_TOKENS = 4  # chat framing of every message after the first (the catalogue's overhead covers one)


@dataclass
class Server:
    """Everything the app needs (built from files by `optllm.serve.setup.build_server`)."""

    router: Router
    upstreams: Upstreams
    catalogue: Catalogue  # every model that may be called (the router's and direct-call ones)
    metrics: Metrics
    token: str | None = None  # clients' bearer token; None: no auth (loopback only, see the CLI)
    shadow: str | None = None  # the fixed model every request goes to in shadow mode
    log_path: str | None = None  # JSONL of every routed decision (no prompt text)
    info: dict[str, Any] = field(default_factory=dict)
    _log: Any = None

    @property
    def pacer(self) -> Pacer:
        return self.router.pacer

    def log(self, rec: dict[str, Any]) -> None:
        if self.log_path is None:
            return
        if self._log is None:
            self._log = open(self.log_path, "a", encoding="utf-8")
        clean = {k: (None if isinstance(v, float) and v != v else v) for k, v in rec.items()}  # NaN: not a router model
        self._log.write(redact(json.dumps(clean)) + "\n")
        self._log.flush()

    async def close(self) -> None:
        await self.upstreams.close()
        if self._log is not None:
            self._log.close()
            self._log = None


def _error(status: int, message: str, kind: str, code: str | None = None, headers: dict[str, str] | None = None) -> Any:
    return JSONResponse({"error": {"message": redact(message), "type": kind, "param": None, "code": code}},
                        status_code=status, headers=headers)


def message_text(messages: list[dict[str, Any]], last_user: bool) -> str:
    """The text of the last user message (what the router reads) or of all messages (what the
    reservation counts); list contents keep their text parts."""
    def text(m: dict[str, Any]) -> str:
        c = m.get("content")
        if isinstance(c, str):
            return c
        if isinstance(c, list):
            return "\n".join(str(p.get("text", "")) for p in c if isinstance(p, dict))
        return "" if c is None else str(c)

    if last_user:
        users = [m for m in messages if m.get("role") == "user"]
        return text(users[-1] if users else messages[-1])
    return "\n".join(text(m) + (json.dumps(m["tool_calls"]) if m.get("tool_calls") else "") for m in messages)


def _check_body(body: Any) -> tuple[list[dict[str, Any]], str | None, bool, dict[str, Any]]:
    if not isinstance(body, dict):
        raise ValueError("the request body must be a JSON object")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) for m in msgs):
        raise ValueError("'messages' must be a non-empty list of message objects")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ValueError("'model' must be a string")
    n = body.get("n", 1)
    if n is not None and (not isinstance(n, int) or n < 1):
        raise ValueError("'n' must be a positive integer")
    tools = body.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)):
        raise ValueError("'tools' must be a list of tool objects")
    for k in ("max_tokens", "max_completion_tokens"):
        v = body.get(k)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ValueError(f"'{k}' must be a positive integer")
    params = {k: v for k, v in body.items() if k not in ("model", "messages", "stream")}
    return msgs, model, bool(body.get("stream")), params


def create_app(server: Server) -> Any:
    """The FastAPI app over `server` (closed with the app)."""
    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        server.upstreams.warm()
        # everything built so far (the predictor's vocabulary, the encodings, the clients) lives
        # as long as the server: out of the collector's sight, a full collection during a
        # request walks only what requests allocate (a full walk of the startup heap took
        # 150-300 ms, the routing overhead's p99 in the replay before this)
        gc.collect()
        gc.freeze()
        yield
        await server.close()

    app = FastAPI(title="optllm serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    m = server.metrics
    m.lam.set(server.pacer.lam)
    if server.pacer.mode == "budget":
        m.budget_rate.set(server.pacer.rate)

    def authorised(request: Request) -> bool:
        if server.token is None:
            return True
        got = request.headers.get("authorization", "")
        return hmac.compare_digest(got.encode(), f"Bearer {server.token}".encode())

    def unauthorised() -> Any:
        return _error(401, "missing or wrong bearer token (Authorization: Bearer ...)", "invalid_request_error",
                      "invalid_api_key")

    @app.get("/healthz")
    async def healthz() -> Any:
        g = server.upstreams.guard
        return {"status": "ok", "models": len(server.catalogue), "lambda": server.pacer.lam,
                "spent": g.spent, "cap": g.cap}

    @app.get("/metrics")
    async def metrics(request: Request) -> Any:
        if not authorised(request):
            return unauthorised()
        g = server.upstreams.guard
        m.cap_left.set(g.remaining)
        body, ctype = m.render()
        return Response(body, media_type=ctype)

    @app.get("/v1/models")
    async def models(request: Request) -> Any:
        if not authorised(request):
            return unauthorised()
        now = int(server.info.get("started", time.time()))
        data = [{"id": AUTO, "object": "model", "created": now, "owned_by": "optllm"}]
        data += [{"id": s.name, "object": "model", "created": now, "owned_by": "optllm-catalogue"}
                 for s in server.catalogue.models]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        t_start = time.perf_counter()
        if not authorised(request):
            return unauthorised()
        try:
            body = json.loads(await request.body())
            messages, model, stream, params = _check_body(body)
        except ValueError as e:
            return _error(400, f"invalid request: {e}", "invalid_request_error")
        decision: Decision | None = None
        if model in AUTO_ALIASES:
            try:
                decision = server.router.route(message_text(messages, last_user=True))
            except OptLLMError as e:
                return _error(400, str(e), "invalid_request_error", "context_length_exceeded")
            m.routing.observe(decision.route_s)
            mode = "shadow" if server.shadow else "auto"
            chain = (server.shadow,) if server.shadow else decision.chain
        elif model in server.catalogue:
            mode, chain = "forced", (model,)
        else:
            return _error(404, f"The model `{model}` does not exist; use {AUTO} or one of "
                          f"{', '.join(server.catalogue.names)}", "invalid_request_error", "model_not_found")
        tools = params.get("tools")
        if decision is not None and len(messages) == 1 and not server.shadow and not tools \
                and not messages[0].get("tool_calls"):
            ptok = {name: float(decision.prompt_tokens[k]) for k, name in enumerate(decision.models)}
        else:  # the whole conversation and the tools' schemas, as the reservation must bound them
            specs = [server.catalogue[name] for name in chain]
            whole = message_text(messages, last_user=False) + ("\n" + json.dumps(tools) if tools else "")
            pt = tokens_one(whole, specs) + EXTRA_MESSAGE_TOKENS * (len(messages) - 1)
            ptok = {name: float(pt[k]) for k, name in enumerate(chain)}
        try:
            ans = await server.upstreams.send(chain, messages, params, ptok, stream=stream)
        except Exhausted as e:
            m.failed(mode, e.status)
            if e.kind == "insufficient_quota":  # the spend cap: retrying will not help
                hdr, kind = {"x-should-retry": "false"}, "insufficient_quota"
            elif e.kind == "rate_limit_exceeded":  # every model of the route at its rpm/tpm: retry later
                hdr, kind = {"retry-after": str(max(1, math.ceil(e.retry_after or 0.0)))}, "requests"
            else:
                hdr, kind = None, "api_error"
            return _error(e.status, e.message, kind, e.kind, headers=hdr)
        headers = {"x-optllm-model": ans.model, "x-optllm-fallback": str(ans.position),
                   "x-optllm-lambda": f"{server.pacer.lam:.6g}"}
        if decision is not None:
            headers["x-optllm-routed-model"] = decision.model
            headers["x-optllm-route-ms"] = f"{decision.route_s * 1e3:.3f}"
        if ans.sent_at == ans.sent_at:  # the server's own time before the upstream request went out
            headers["x-optllm-presend-ms"] = f"{(ans.sent_at - t_start) * 1e3:.3f}"
        headers["x-optllm-wait-ms"] = f"{ans.waited_s * 1e3:.3f}"  # of it, waiting for a slot

        finished: list[bool] = []

        def finish(a: Answer) -> None:  # metrics, λ and the log: once per request
            if not finished:
                finished.append(True)
                _after(server, a, decision, mode, stream, t_start)

        if not stream:
            finish(ans)
            out = ans.response.to_dict() if hasattr(ans.response, "to_dict") else dict(ans.response)
            out["model"] = ans.model
            headers["x-optllm-cost-usd"] = f"{ans.cost:.8g}"
            body = json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode()
            # the server's whole time in this handler (the body serialised) minus its waits on
            # upstreams and on slots (a model's slow-start window or rate limit)
            own = time.perf_counter() - t_start - ans.upstream_s - ans.waited_s
            headers["x-optllm-overhead-ms"] = f"{own * 1e3:.3f}"
            return Response(body, media_type="application/json", headers=headers)

        want_usage = bool((params.get("stream_options") or {}).get("include_usage"))

        async def events() -> Any:
            chunks = server.upstreams.stream_rest(ans)
            try:
                async for chunk in chunks:
                    d = chunk.to_dict() if hasattr(chunk, "to_dict") else dict(chunk)
                    d["model"] = ans.model
                    if not want_usage:
                        if not d.get("choices"):
                            continue  # the usage chunk we asked for to meter the stream
                        d.pop("usage", None)
                    yield f"data: {json.dumps(d, ensure_ascii=False)}\n\n"
                yield "data: [DONE]\n\n"
            finally:
                await chunks.aclose()
                finish(ans)

        async def never_read() -> None:  # the body never started: the stream still settles, once
            await server.upstreams.abandon(ans)  # a no-op once stream_rest has settled it
            finish(ans)

        return _SettledStream(events(), never_read, media_type="text/event-stream", headers=headers)

    return app


class _SettledStream(StreamingResponse):
    """A streaming response that runs `on_end` however its sending ends: Starlette does not
    start the body's generator when the client has gone before it (so the generator's own
    `finally` never runs, and the call's reservation and slow-start slot would be held)."""

    def __init__(self, content: Any, on_end: Any, **kw: Any) -> None:
        super().__init__(content, **kw)
        self._on_end = on_end

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await asyncio.shield(self._on_end())


def _after(server: Server, ans: Answer, decision: Decision | None, mode: str, stream: bool, t_start: float) -> None:
    """Metrics, λ and the decision log once an answer's cost is known."""
    m = server.metrics
    m.answered(ans.model, mode, ans.prompt_tokens, ans.completion_tokens, ans.cost, ans.position)
    m.latency.labels(str(stream).lower()).observe(time.perf_counter() - t_start)
    if decision is None:
        return
    if mode == "shadow":  # the router's choice was not sent: λ follows its estimated cost
        server.pacer.observe(decision.cost_of(decision.model), decision.p_of(decision.model))
        if decision.model != ans.model:
            m.shadow.inc()
    else:
        server.pacer.observe(ans.cost, decision.p_of(ans.model))
    m.lam.set(server.pacer.lam)
    s = server.pacer.state
    if s.requests:
        m.spend_rate.set(s.spend / s.requests)
    server.log({"time": time.time(), "id": uuid.uuid4().hex[:12], "mode": mode, "served": ans.model,
                "routed": decision.model, "p_routed": decision.p_of(decision.model),
                "cost_routed_est": decision.cost_of(decision.model), "p_served": decision.p_of(ans.model),
                "cost_served_est": decision.cost_of(ans.model), "cost": ans.cost, "fallback": ans.position,
                "lambda": decision.lam, "route_ms": round(decision.route_s * 1e3, 3),
                "prompt_tokens": int(decision.prompt_tokens.min())})
