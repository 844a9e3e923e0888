"""`FakeOpenAI` with streamed answers: `stream: true` gets Server-Sent Events as OpenAI sends
them (a role chunk, the answer in word chunks, a finish chunk, then, when
`stream_options.include_usage` is set, a last chunk with empty choices and the usage, then
`data: [DONE]`; with `n` > 1 every chunk for each choice index), billed as `FakeOpenAI` bills (its `ignore_max_tokens` and
`prompt_token_factor` too). Plain requests with `n` > 1 or `tools`
get `n` choices (tool calls of the first tool); other plain requests are `FakeOpenAI`'s. 127.0.0.1 only."""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from fake_openai import FakeOpenAI, _count_prompt


class FakeStreamOpenAI(FakeOpenAI):
    """Extra options: `send_usage=False` never sends the usage chunk (a server that ignores
    include_usage); `chunk_delay` seconds between chunks; `up=False` answers 503 to everything
    (flip it during a test)."""

    def __init__(self, *args: Any, send_usage: bool = True, chunk_delay: float = 0.0, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.send_usage = send_usage
        self.chunk_delay = chunk_delay
        self.up = True
        self.streams = 0
        self.bodies: list[dict[str, Any]] = []  # every request body received

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat_or_stream)
        return app

    async def _chat_or_stream(self, request: web.Request) -> web.StreamResponse:
        if not self.up:
            return self._error(503, "service unavailable", "server_error")
        body = await request.json()  # aiohttp keeps the body: the parent's handler reads it again
        self.bodies.append(body)
        n = int(body.get("n") or 1)
        if not body.get("stream") and n == 1 and not body.get("tools"):
            return await self._chat(request)
        if self.require_key and request.headers.get("Authorization") != f"Bearer {self.require_key}":
            return self._error(401, "Incorrect API key provided", "invalid_request_error")
        content = str(body["messages"][-1]["content"])
        model = str(body.get("model"))
        self.requests[content] += 1
        self.by_model[model] += 1
        if model in self.fail_models:
            return self._error(500, f"model {model} is down", "server_error")
        r = self.rng.random()
        if r < self.p429:
            return self._error(429, "Rate limit reached", "rate_limit_error", {"retry-after-ms": "1"})
        if r < self.p429 + self.p500:
            return self._error(500, "internal error", "server_error")
        text = self.answer if self.responder is None else self.responder(model, content)
        cap = body.get("max_tokens") or body.get("max_completion_tokens")
        ct = self.completion_tokens if cap is None or self.ignore_max_tokens else min(self.completion_tokens, int(cap))
        pt = _count_prompt(content) + self.extra_prompt_tokens
        if self.prompt_token_factor != 1.0:
            pt = int(round(pt * self.prompt_token_factor))
        self.billed.append((model, content, pt, ct))
        self.billed[-1] = (model, content, pt, n * ct)  # every choice is billed
        self.served[content] += 1
        self.statuses[200] += 1
        if not body.get("stream"):
            return web.json_response(self._choices(body, model, text, n, pt, ct))
        self.streams += 1
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        base = {"id": f"chatcmpl-s{self.streams}", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model}
        words = text.split(" ")
        deltas = [{"role": "assistant", "content": ""}] + [
            {"content": w if i == 0 else " " + w} for i, w in enumerate(words)]
        usage_asked = bool((body.get("stream_options") or {}).get("include_usage"))
        for d in deltas:
            for k in range(n):
                await self._send(resp, {**base, "choices": [{"index": k, "delta": d, "finish_reason": None}],
                                        **({"usage": None} if usage_asked else {})})
        for k in range(n):
            await self._send(resp, {**base, "choices": [{"index": k, "delta": {}, "finish_reason": "stop"}],
                                    **({"usage": None} if usage_asked else {})})
        if usage_asked and self.send_usage:
            await self._send(resp, {**base, "choices": [], "usage": {
                "prompt_tokens": pt, "completion_tokens": n * ct, "total_tokens": pt + n * ct}})
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    def _choices(self, body: dict[str, Any], model: str, text: str, n: int, pt: int, ct: int) -> dict[str, Any]:
        """A plain answer with `n` choices; with `tools`, each choice calls the first tool with
        the prompt as its argument (finish_reason tool_calls)."""
        tools = body.get("tools") or []
        choices = []
        for k in range(n):
            if tools:
                fn = tools[0]["function"]["name"]
                msg = {"role": "assistant", "content": None, "tool_calls": [{
                    "id": f"call_{k}", "type": "function",
                    "function": {"name": fn, "arguments": json.dumps({"text": text})}}]}
                choices.append({"index": k, "message": msg, "finish_reason": "tool_calls"})
            else:
                choices.append({"index": k, "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop"})
        return {"id": f"chatcmpl-n{len(self.billed)}", "object": "chat.completion", "created": int(time.time()),
                "model": model, "choices": choices,
                "usage": {"prompt_tokens": pt, "completion_tokens": n * ct, "total_tokens": pt + n * ct}}

    async def _send(self, resp: web.StreamResponse, obj: dict[str, Any]) -> None:
        if self.chunk_delay:
            await asyncio.sleep(self.chunk_delay)
        await resp.write(f"data: {json.dumps(obj)}\n\n".encode())
