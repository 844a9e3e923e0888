"""Replay a labelled dataset through `optllm serve` and compare with the batch plan.

    OPTLLM_DATA_DIR=/work/shared/datasets .venv/bin/python benchmarks/serve_replay.py \
        [--data overruling] [--budget-per-1k USD] [--rate 100] [--n N] [--out bench-results/serve_replay.json]

The steps and figures are `optllm.serve.replay`'s (the slow test runs the same code in one process):

1. Split the dataset (seeded): 10% labelled, 40% the plan's batch, 50% replayed.
2. `build_plan` + `write_plan` on the batch (the catalogue examples/models.yaml), as
   `optllm plan` does: the plan folder holds the fitted predictor.
3. A fake upstream (tests/fake_stream.py, its own process, 127.0.0.1) answers "correct" or
   "wrong" with the dataset's recorded correctness of that model on that query, and bills
   usage (prompt tokens counted, `--completion-tokens` completion tokens).
4. `optllm serve --from PLAN --budget-per-1k B --max-spend B*n/1000` in its own process; the
   replayed queries are sent once each, in random order, open loop at `--rate` requests/s
   with the official async `openai` client from this process.
5. Figures: the server's billed spend against the budget, its realised accuracy (the
   dataset's truth), the batch plan's at the same budget on the same queries (the exact front
   on the same predictions, priced at the same bills; and at the router's estimated costs),
   and the routing overhead (x-optllm-route-ms: features, prediction, prices, choice; the
   upstream excluded) and whole-request latency, p50/p99.
Prints the figures and writes them as JSON.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def upstream_main(data: str, completion_tokens: int) -> None:
    """Child process: the fake upstream answering with the dataset's recorded correctness."""
    from aiohttp import web

    from fake_stream import FakeStreamOpenAI
    from optllm.data import load
    from optllm.serve.replay import responder

    srv = FakeStreamOpenAI(responder=responder(load(data)), completion_tokens=completion_tokens)
    srv.warm()  # its token counter's encoding loaded before the first request, as a live server's is

    async def run() -> None:
        runner = web.AppRunner(srv.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(f"PORT {site._server.sockets[0].getsockname()[1]}", flush=True)  # noqa: SLF001
        await asyncio.Event().wait()

    asyncio.run(run())


def _spawn(args: list[str], ready: str, env: dict[str, str], timeout: float = 300) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if ready in line:
            return proc, line
    proc.kill()
    raise RuntimeError(f"{args[:3]} did not start: {''.join(lines)[-2000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="overruling")
    ap.add_argument("--budget-per-1k", type=float, default=None,
                    help="USD per 1k requests (default: a third of the way from the cheapest to the best routing)")
    ap.add_argument("--rate", type=float, default=100.0, help="requests per second (open loop)")
    ap.add_argument("--completion-tokens", type=int, default=2)
    ap.add_argument("--eta", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--predictor", default="default")
    ap.add_argument("--n", type=int, default=None, help="replay only the first N of the replayed split")
    ap.add_argument("--out", default="bench-results/serve_replay.json")
    ap.add_argument("--upstream", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.upstream:
        upstream_main(a.data, a.completion_tokens)
        return

    from optllm.data import load
    from optllm.serve.replay import prepare, report, send, summarise, upstream_catalogue

    work = Path(tempfile.mkdtemp(prefix="serve_replay."))
    rp = prepare(load(a.data), ROOT / "examples" / "models.yaml", work, budget_per_1k=a.budget_per_1k,
                 seed=a.seed, predictor=a.predictor, completion_tokens=a.completion_tokens, n_replay=a.n)

    # --- the fake upstream and the server, each in its own process
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(NO_PROXY="127.0.0.1,localhost", PYTHONUNBUFFERED="1")
    env.pop("OPTLLM_SERVE_TOKEN", None)
    up, line = _spawn([sys.executable, __file__, "--upstream", "--data", a.data,
                       "--completion-tokens", str(a.completion_tokens)], "PORT", env)
    up_url = f"http://127.0.0.1:{int(line.split()[1])}/v1"
    cat = upstream_catalogue(ROOT / "examples" / "models.yaml", up_url, work / "models.yaml")
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv, _ = _spawn([sys.executable, "-m", "optllm", "serve", "--models", str(cat),
                     "--from", str(rp.plan_dir), "--budget-per-1k", f"{rp.rho * 1000:.12g}",
                     "--max-spend", f"{rp.budget:.12g}", "--eta", str(a.eta), "--port", str(port),
                     "--log", str(work / "decisions.jsonl")], "optllm serve:", env)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(base.replace("/v1", "/healthz"), timeout=1).read()
                break
            except OSError:
                time.sleep(0.05)
        res, wall = asyncio.run(send(base, rp, a.rate))
        metrics = urllib.request.urlopen(base.replace("/v1", "/metrics"), timeout=5).read().decode()
    finally:
        for p in (srv, up):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    lam = [float(x.split()[1]) for x in metrics.splitlines() if x.startswith("optllm_lambda ")]
    fig = summarise(rp, res, wall, a.rate, lam[0] if lam else None)
    fig["data"] = a.data
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(fig, indent=2) + "\n")
    for line in report(fig):
        print(line)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
