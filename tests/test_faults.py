"""The fault campaign: dispatch runs of a few hundred queries against the fake server on
127.0.0.1 with random 429/500s, servers that bill more than reserved, and a random SIGKILL,
SIGINT or SIGTERM mid-run, each resumed to completion. What must hold (README, Guarantees):

- nothing is lost: every query ends with exactly one answer in answers.jsonl;
- a query is billed twice only when its call was in flight at a SIGKILL, and the resume
  reports every such re-send (after SIGINT/SIGTERM: none);
- under a cap, what the server billed stays within the cap when it bills no more than
  reserved, and within one call per model per run beyond it when it overbills (reported as
  `over_cap`), and optllm's own count of spend is never below what the server billed.
"""
from __future__ import annotations

import json
import subprocess
import os
import random
import signal
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_openai import FakeOpenAI  # noqa: E402

from optllm.cost import count_tokens, parse_catalogue  # noqa: E402

RUNS = 30
pytestmark = pytest.mark.slow


class Launcher:
    """Talks to tests/fault_driver.py, the fork server that runs each dispatch in a child."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("fault_driver.py"))],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert json.loads(self._read())["ready"]

    def _read(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the fork server died"
        return line

    def _ask(self, msg: dict) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        return json.loads(self._read())

    def start(self, **args) -> int:  # type: ignore[no-untyped-def]
        return int(self._ask({"cmd": "run", "args": args})["pid"])

    def wait(self, pid: int) -> int:
        return int(self._ask({"cmd": "wait", "pid": pid})["status"])

    def close(self) -> None:
        try:
            self._ask({"cmd": "quit"})
        except (AssertionError, BrokenPipeError, ValueError):
            pass
        self.proc.wait(10)


class _Run:
    """A child started by the launcher (a zombie, state Z, once it has exited)."""

    def __init__(self, launcher: Launcher, pid: int) -> None:
        self.launcher, self.pid = launcher, pid


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, IndexError):
        return "Z"


@pytest.fixture(scope="module")
def ctx():  # type: ignore[no-untyped-def]
    launcher = Launcher()
    yield launcher
    launcher.close()


def _catalogue(url: str) -> dict:
    return {"defaults": {"base_url": url, "max_output_tokens": 20, "tokenizer": "cl100k_base", "timeout_s": 5},
            "models": [{"name": "a", "input_per_million": 100, "output_per_million": 200, "per_request": 0.0001},
                       {"name": "b", "input_per_million": 1000, "output_per_million": 3000}]}


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _child(ctx: Launcher, items, cat, out: Path, result: Path, **kw) -> _Run:  # type: ignore[no-untyped-def]
    result.unlink(missing_ok=True)
    return _Run(ctx, ctx.start(items=items, catalogue=cat, out=str(out), result=str(result), **kw))


def _finish(run: _Run, result: Path, timeout: float = 120) -> dict | None:
    deadline = time.monotonic() + timeout
    while _state(run.pid) not in ("Z", "X") and time.monotonic() < deadline:
        time.sleep(0.005)
    assert time.monotonic() < deadline, "a dispatch run hung"
    run.launcher.wait(run.pid)
    return json.loads(result.read_text()) if result.exists() else None


def _one_run(ctx: Launcher, tmp: Path, seed: int) -> dict:
    rng = random.Random(seed)
    n = rng.randint(120, 250)
    overbill = rng.choice(["none", "none", "max_tokens", "prompt"])
    sig = rng.choice([signal.SIGKILL, signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
    conc = rng.choice([4, 8, 16])
    server = dict(latency=rng.choice([0.002, 0.005, 0.01]), p429=rng.choice([0.0, 0.1, 0.25]),
                  p500=rng.choice([0.0, 0.1]), seed=seed, completion_tokens=15)
    if overbill == "max_tokens":
        server.update(completion_tokens=60, ignore_max_tokens=True)
    elif overbill == "prompt":
        server.update(completion_tokens=20, prompt_token_factor=1.13)
    kw = dict(concurrency=conc, max_attempts=6, backoff_base=0.002, backoff_cap=0.02, seed=seed)
    run_dir = tmp / f"run{seed}"
    run_dir.mkdir()
    out, result = run_dir / "answers.jsonl", run_dir / "report.json"
    with FakeOpenAI(**server) as srv:
        cat_d = _catalogue(srv.base_url)
        cat = parse_catalogue(cat_d)
        items = [[f"q{i}", f"campaign {seed} question {i}: " + "word " * rng.randint(0, 30), rng.choice("ab")]
                 for i in range(n)]
        upper = sum(cat[m].reservation(count_tokens([p])[0] + 7) for _, p, m in items)
        cap1 = rng.uniform(0.3, 0.8) * upper
        # phase 1: a tight cap, interrupted at a random point, resumed until it stops
        k = rng.randint(5, max(6, n // 4))
        p = _child(ctx, items, cat_d, out, result, max_spend=cap1, **kw)
        while _state(p.pid) not in ("Z", "X") and _lines(out) < k:
            time.sleep(0.002)
        if _state(p.pid) not in ("Z", "X"):
            os.kill(p.pid, sig)
        reports = [r for r in [_finish(p, result)] if r is not None]
        if sig != signal.SIGKILL:
            assert reports and (reports[0]["interrupted"] or reports[0]["remaining"] == 0 or reports[0]["stopped"])
        phase1_runs = 1
        while True:
            r = _finish(_child(ctx, items, cat_d, out, result, max_spend=cap1, **kw), result)
            assert r is not None
            reports.append(r)
            phase1_runs += 1
            if r["stopped"] or r["remaining"] == 0 or r["calls"] == 0:
                break
        truth1 = sum(cat[m].call_cost(pt, ct) for m, _, pt, ct in srv.billed)
        max_call = max((cat[m].call_cost(pt, ct) for m, _, pt, ct in srv.billed), default=0.0)
        bound = 0.0 if overbill == "none" else phase1_runs * len(cat) * max_call
        counted1 = reports[-1]["spent_total"]
        # phase 2: resume with room for everything
        cap2 = cap1 + 4 * upper
        for _ in range(5):  # a query can fail every attempt under 25% 429s + 10% 500s: resumed again
            r = _finish(_child(ctx, items, cat_d, out, result, max_spend=cap2, **kw), result)
            assert r is not None
            reports.append(r)
            if r["remaining"] == 0:
                break
        truth = sum(cat[m].call_cost(pt, ct) for m, _, pt, ct in srv.billed)
        served = dict(srv.served)
    rows = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
    ids = [row["id"] for row in rows]
    prompt_of = {i: pr for i, pr, _ in items}
    dups = sum(served.get(prompt_of[i], 0) - 1 for i in prompt_of if served.get(prompt_of[i], 0) > 1)
    resent = sum(rep["resent_after_crash"] for rep in reports)
    return dict(seed=seed, n=n, signal=signal.Signals(sig).name, overbill=overbill, concurrency=conc,
                lost=n - len(set(ids)), answer_rows=len(rows), dups=dups, resent_reported=resent,
                truth1=truth1, cap1=cap1, bound=bound, counted1=counted1, truth=truth, cap2=cap2,
                counted=r["spent_total"], over_cap=max(rep["over_cap"] for rep in reports),
                overruns=sum(rep["overruns"] for rep in reports), remaining=r["remaining"])


def test_fault_campaign(ctx: Launcher, tmp_path: Path) -> None:
    runs = [_one_run(ctx, tmp_path, seed) for seed in range(RUNS)]
    for x in runs:
        assert x["lost"] == 0 and x["answer_rows"] == x["n"] and x["remaining"] == 0, x
        assert x["dups"] <= x["resent_reported"], x  # every double bill was in flight at a kill, and reported
        if x["signal"] != "SIGKILL":
            assert x["dups"] == 0, x
        assert x["truth1"] <= x["cap1"] + x["bound"] + 1e-12, x
        assert x["truth"] <= x["cap2"] + x["bound"] + 1e-12, x
        if x["overbill"] == "none":
            assert x["truth1"] <= x["cap1"] + 1e-12 and x["over_cap"] == 0.0, x
            assert x["counted1"] >= x["truth1"] - 1e-12 and x["counted"] >= x["truth"] - 1e-12, x
        else:
            assert x["overruns"] >= 1, x
    kills = [x for x in runs if x["signal"] == "SIGKILL"]
    print(f"\nfault campaign: {len(runs)} runs ({len(kills)} SIGKILL, {len(runs) - len(kills)} SIGINT/SIGTERM; "
          f"{sum(x['overbill'] != 'none' for x in runs)} with an overbilling server), "
          f"{sum(x['n'] for x in runs)} queries")
    print(f"  lost: {sum(x['lost'] for x in runs)}; billed twice: {sum(x['dups'] for x in runs)} "
          f"(re-sends reported after a kill: {sum(x['resent_reported'] for x in runs)}; "
          f"after SIGINT/SIGTERM: {sum(x['dups'] for x in runs if x['signal'] != 'SIGKILL')})")
    print(f"  tight cap held (billed <= cap): {sum(x['truth1'] <= x['cap1'] + 1e-12 for x in runs)}/{len(runs)}; "
          f"over the cap, overbilling servers only: {sum(x['over_cap'] > 0 for x in runs)} runs, largest "
          f"${max(x['over_cap'] for x in runs):.6f} (bound ${max(x['bound'] for x in runs):.6f})")
    print(f"  spend counted >= billed (honest servers): "
          f"{sum(x['counted1'] >= x['truth1'] - 1e-12 for x in runs if x['overbill'] == 'none')}/"
          f"{sum(x['overbill'] == 'none' for x in runs)}")
