"""Durable, append-only records: `answers.jsonl` (one line per answered query) and its
ledger (every reservation, answer, error and stop), and the resume state read back from them.

Every line is written whole, flushed and fsynced before the code that depends on it goes on
(a reservation is durable before its request is sent; an answer is durable before its
reservation is released). Concurrent writers share one fsync per batch (group commit).

Spend read back from the files (`ResumeState.spent`) is conservative: answers count at their
real cost, errors at what they may have cost (0 for a refused request such as 429/5xx, the
whole reservation when the request may have been processed: timeouts, dropped connections,
responses without usage), and a reservation with no recorded outcome (the process died while
the request was in flight) at its full amount.
"""
from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optllm.errors import OptLLMError
from optllm.secrets import redact_known


USAGE_MISSING = "usage missing"  # the note of an answer priced at its reservation (no usage in the response)


def ledger_path(answers: str | os.PathLike[str]) -> Path:
    """The ledger beside an answers file: `answers.jsonl` -> `answers.ledger.jsonl`."""
    p = Path(answers)
    stem = p.name[: -len(".jsonl")] if p.name.endswith(".jsonl") else p.name
    return p.with_name(f"{stem}.ledger.jsonl")


def read_jsonl(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """Records of a JSONL file written by this module. A last line cut short by a crash is
    ignored (and cut off the file when `repair`); a bad line elsewhere is an error."""
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    out: list[dict[str, Any]] = []
    good_end = 0
    pos = 0
    for i, raw in enumerate(lines):
        last = i == len(lines) - 1
        end = pos + len(raw) + (0 if last else 1)
        if raw.strip():
            try:
                rec = json.loads(raw)
                if not isinstance(rec, dict):
                    raise ValueError("not an object")
            except ValueError:
                # a partial final record (no newline after it, or only blank lines follow)
                if last or all(not x.strip() for x in lines[i + 1:]):
                    break
                raise OptLLMError(f"{path}: line {i + 1} is not a JSON object; the file was edited or corrupted") from None
            if last:  # complete JSON but no newline: keep it, but terminate the line on repair
                out.append(rec)
                good_end = -1
                break
            out.append(rec)
        good_end = end
        pos = end
    if repair:
        if good_end == -1:
            with open(path, "ab") as fh:
                fh.write(b"\n")
                fh.flush()
                os.fsync(fh.fileno())
        elif good_end < len(data):
            with open(path, "r+b") as fh:
                fh.truncate(good_end)
                fh.flush()
                os.fsync(fh.fileno())
    return out


class DurableLog:
    """An append-only JSONL file; `await append(rec)` returns once the line is on disk.

    Lines queued while a write is in progress are written and fsynced together."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: Any = None
        self._pending: list[tuple[str, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    def open(self) -> "DurableLog":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")
        return self

    @staticmethod
    def line(rec: dict[str, Any]) -> str:
        """One record as written: JSON, with every API key optllm read replaced."""
        return redact_known(json.dumps(rec, ensure_ascii=False)) + "\n"

    def write_many(self, recs: list[dict[str, Any]]) -> None:
        """Synchronous append of many records with one fsync."""
        self._write_batch([self.line(r) for r in recs])

    def write_now(self, rec: dict[str, Any]) -> None:
        """Synchronous append + fsync (for records outside the event loop)."""
        self._fh.write(self.line(rec))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    async def append(self, rec: dict[str, Any]) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((self.line(rec), fut))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        await asyncio.shield(fut)

    def _write_batch(self, lines: list[str]) -> None:
        self._fh.write("".join(lines))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await asyncio.to_thread(self._write_batch, [line for line, _ in batch])
            except BaseException as e:  # noqa: BLE001 - hand the failure to every waiter
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e if isinstance(e, Exception) else OSError(str(e)))
                raise
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)

    async def flush(self) -> None:
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


@dataclass
class ResumeState:
    """What earlier runs left: answered ids, money spent (conservative), calls made."""

    answered: dict[str, dict[str, Any]] = field(default_factory=dict)
    spent: float = 0.0
    spent_known: float = 0.0
    spent_uncertain: float = 0.0
    unresolved_calls: int = 0
    unresolved_ids: set[str] = field(default_factory=set)  # queries of those calls (in flight at a kill)
    reserved_in_batches: float = 0.0  # reservations of provider batches still running (counted in `spent`)
    runs: int = 0
    calls: int = 0
    # provider batches (`dispatch --via batch`): token -> model, endpoint, ids, batch_id, status
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def pending_batches(self) -> dict[str, dict[str, Any]]:
        """Batches prepared or submitted by an earlier run whose results are not collected yet."""
        return {t: b for t, b in self.batches.items() if b.get("status") is None}

    @property
    def in_pending_batch(self) -> set[str]:
        """Queries inside a pending batch: never sent another way until it is collected."""
        return {q for b in self.pending_batches.values() for q in b["ids"] if q not in self.answered}

    @classmethod
    def read(cls, answers: Path, ledger: Path, repair: bool = True) -> "ResumeState":
        # a file that is not ours (a prompts file given as --out) is refused before it is read or repaired
        for path, head, what in ((answers, b'{"id": ', "an answers file"), (ledger, b'{"event": ', "a ledger")):
            if path.exists() and path.stat().st_size:
                with open(path, "rb") as fh:
                    first = fh.read(len(head))
                if first != head[:len(first)] or len(first) < len(head) and b"\n" in first:
                    raise OptLLMError(f"{path}: is not {what} written by optllm dispatch (its first line does not "
                                      "start as one); give a new file or the one an earlier dispatch wrote")
        st = cls()
        cost_by_call: dict[str, float] = {}
        usage_missing: set[str] = set()
        for i, rec in enumerate(read_jsonl(answers, repair=repair)):
            if "answer" not in rec or "model" not in rec:
                raise OptLLMError(f"{answers}: line {i + 1} is not an answer record (no 'answer' or 'model'): this "
                                  "is not an answers file written by optllm dispatch; give a new file or that one")
            qid = str(rec.get("id"))
            if qid not in st.answered:
                st.answered[qid] = rec
            call = rec.get("call")
            if call is not None:
                cost_by_call[str(call)] = float(rec.get("cost") or 0.0)
                if str(rec.get("note", "")).startswith(USAGE_MISSING):
                    usage_missing.add(str(call))  # charged its reservation: unknown
        reserved: dict[str, float] = {}
        query_of: dict[str, str] = {}
        resolved: dict[str, float] = {}
        unknown: set[str] = set()
        answered_calls: set[str] = set()
        for rec in read_jsonl(ledger, repair=repair):
            ev = rec.get("event")
            if ev == "reserve":
                reserved[str(rec["call"])] = float(rec["amount"])
                query_of[str(rec["call"])] = str(rec.get("id"))
            elif ev == "answer":
                resolved[str(rec["call"])] = float(rec.get("cost") or 0.0)
                answered_calls.add(str(rec["call"]))
            elif ev == "error":  # what it may have cost: unknown, kept reserved
                resolved[str(rec["call"])] = float(rec.get("charged") or 0.0)
                unknown.add(str(rec["call"]))
            elif ev == "run_start":
                st.runs += 1
            elif ev == "batch_prepare":
                st.batches[str(rec["token"])] = {"model": rec.get("model"), "endpoint": rec.get("endpoint"),
                                                 "ids": list(rec.get("ids") or []), "batch_id": None, "status": None}
            elif ev == "batch_submit" and str(rec.get("token")) in st.batches:
                st.batches[str(rec["token"])]["batch_id"] = rec.get("batch_id")
            elif ev == "batch_end" and str(rec.get("token")) in st.batches:
                st.batches[str(rec["token"])]["status"] = rec.get("status") or "ended"
        known = uncertain = pending = 0.0
        for call, amount in reserved.items():
            if call in cost_by_call:
                if call in usage_missing:
                    uncertain += cost_by_call[call]
                else:
                    known += cost_by_call[call]
            elif call in unknown:
                uncertain += resolved[call]
            elif call in resolved:
                known += resolved[call]
                if call in answered_calls and query_of[call] not in st.answered:
                    st.unresolved_ids.add(query_of[call])  # killed between the ledger's line and the answer's
            elif _in_batch(call, st.batches):
                pending += amount  # a batch still running holds it: reserved, not lost
            else:
                uncertain += amount
                st.unresolved_calls += 1
                if query_of[call] not in st.answered:
                    st.unresolved_ids.add(query_of[call])
        # answers whose reservation is missing from the ledger (ledger deleted): count them
        known += sum(c for call, c in cost_by_call.items() if call not in reserved)
        st.calls = len(reserved)
        st.spent_known, st.spent_uncertain, st.reserved_in_batches = known, uncertain, pending
        st.spent = known + uncertain + pending
        return st


def _in_batch(call: str, batches: dict[str, dict[str, Any]]) -> bool:
    """A call of a provider batch (`TOKEN:ID`): still in flight at the provider, not lost."""
    return ":" in call and call.split(":", 1)[0] in batches
