"""The fake OpenAI server with a batch API: `/v1/files` (upload, content) and `/v1/batches`
(create, retrieve, list, cancel), on 127.0.0.1 only.

A batch moves validating -> in_progress -> (after `polls_to_finish` retrievals) its end:
`outcome` "completed" (a share `p_line_error` of its lines in the error file with a 500),
"failed" (validation failed: no line runs), "expired" (only the first half of the lines run;
the rest go to the error file as batch_expired, as OpenAI does) or "cancelled". Answers and
usage are made as the chat endpoint makes them. `submitted` counts, per prompt, how many
times a batch line carried it: a test proves nothing was submitted twice.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

from aiohttp import web

from fake_openai import FakeOpenAI, _count_prompt


class FakeBatchOpenAI(FakeOpenAI):
    def __init__(self, *, polls_to_finish: int = 2, outcome: str = "completed", p_line_error: float = 0.0,
                 **kw: Any) -> None:
        super().__init__(**kw)
        self.polls_to_finish = polls_to_finish
        self.outcome = outcome
        self.p_line_error = p_line_error
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.polls: Counter[str] = Counter()
        self.submitted: Counter[str] = Counter()  # per prompt, over every batch created
        self.batch_billed: list[tuple[str, str, int, int]] = []  # (model, prompt, prompt_tokens, completion_tokens)

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{fid}/content", self._content)
        app.router.add_post("/v1/batches", self._create)
        app.router.add_get("/v1/batches", self._list)
        app.router.add_get("/v1/batches/{bid}", self._retrieve)
        app.router.add_post("/v1/batches/{bid}/cancel", self._cancel)
        return app

    def _file(self, data: bytes, name: str, purpose: str) -> dict[str, Any]:
        fid = f"file-{len(self.files) + 1}"
        self.files[fid] = data
        return {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()), "filename": name,
                "purpose": purpose, "status": "processed"}

    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        f = form["file"]
        data = f.file.read() if hasattr(f, "file") else bytes(str(f), "utf-8")
        return web.json_response(self._file(data, getattr(f, "filename", "input.jsonl"), str(form.get("purpose"))))

    async def _content(self, request: web.Request) -> web.Response:
        fid = request.match_info["fid"]
        if fid not in self.files:
            return self._error(404, f"no file {fid}", "invalid_request_error")
        return web.Response(body=self.files[fid], content_type="application/octet-stream")

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        fid = body["input_file_id"]
        if fid not in self.files:
            return self._error(404, f"no file {fid}", "invalid_request_error")
        lines = [json.loads(x) for x in self.files[fid].decode().splitlines() if x.strip()]
        for ln in lines:
            self.submitted[str(ln["body"]["messages"][-1]["content"])] += 1
        bid = f"batch_{len(self.batches) + 1}"
        self.batches[bid] = {
            "id": bid, "object": "batch", "endpoint": body["endpoint"], "errors": None, "input_file_id": fid,
            "completion_window": body["completion_window"], "status": "validating", "output_file_id": None,
            "error_file_id": None, "created_at": int(time.time()), "metadata": body.get("metadata"),
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
        }
        return web.json_response(self.batches[bid])

    async def _list(self, request: web.Request) -> web.Response:
        data = list(self.batches.values())[::-1]
        return web.json_response({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                                  "last_id": data[-1]["id"] if data else None, "has_more": False})

    async def _retrieve(self, request: web.Request) -> web.Response:
        bid = request.match_info["bid"]
        if bid not in self.batches:
            return self._error(404, f"no batch {bid}", "invalid_request_error")
        b = self.batches[bid]
        if b["status"] not in ("completed", "failed", "expired", "cancelled"):
            self.polls[bid] += 1
            if self.polls[bid] >= self.polls_to_finish:
                self._end(b, self.outcome)
            else:
                b["status"] = "in_progress"
        return web.json_response(b)

    async def _cancel(self, request: web.Request) -> web.Response:
        b = self.batches[request.match_info["bid"]]
        self._end(b, "cancelled")
        return web.json_response(b)

    def _end(self, b: dict[str, Any], outcome: str) -> None:
        lines = [json.loads(x) for x in self.files[b["input_file_id"]].decode().splitlines() if x.strip()]
        if outcome == "failed":
            b.update(status="failed", errors={"object": "list", "data": [
                {"code": "invalid_request", "message": "line 1: the model is not available in batch", "line": 1}]})
            return
        run = lines if outcome == "completed" else lines[: len(lines) // 2]
        ok, bad = [], []
        for ln in run:
            req = ln["body"]
            content = str(req["messages"][-1]["content"])
            if self.rng.random() < self.p_line_error:
                bad.append({"id": f"req_{len(bad)}", "custom_id": ln["custom_id"], "response": {
                    "status_code": 500, "request_id": "r", "body": {"error": {"message": "internal error",
                                                                                "type": "server_error"}}},
                            "error": None})
                continue
            cap = req.get("max_tokens") or req.get("max_completion_tokens")
            ct = self.completion_tokens if cap is None else min(self.completion_tokens, int(cap))
            pt = _count_prompt(content) + self.extra_prompt_tokens
            self.batch_billed.append((str(req["model"]), content, pt, ct))
            text = self.answer if self.responder is None else self.responder(str(req["model"]), content)
            ok.append({"id": f"req_{len(ok)}", "custom_id": ln["custom_id"], "response": {
                "status_code": 200, "request_id": "r", "body": {
                    "id": f"chatcmpl-b{len(ok)}", "object": "chat.completion", "created": int(time.time()),
                    "model": req["model"], "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                                        "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}}},
                "error": None})
        for ln in lines[len(run):]:
            bad.append({"id": f"req_x{len(bad)}", "custom_id": ln["custom_id"], "response": None,
                        "error": {"code": "batch_expired", "message": "This request could not be executed before "
                                                                      "the completion window expired."}})
        status = {"completed": "completed", "expired": "expired", "cancelled": "cancelled"}[outcome]
        out = self._file("".join(json.dumps(x) + "\n" for x in ok).encode(), "output.jsonl", "batch_output")
        b.update(status=status, output_file_id=out["id"] if ok else None,
                 request_counts={"total": len(lines), "completed": len(ok), "failed": len(bad)})
        if bad:
            err = self._file("".join(json.dumps(x) + "\n" for x in bad).encode(), "errors.jsonl", "batch_output")
            b["error_file_id"] = err["id"]
