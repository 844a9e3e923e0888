"""Ray vs single-process scale benchmark (issue 17): the exact front's plan on a p/cost Parquet
dataset of N queries x M models, by `optllm.optimize.front` in one process (the dataset read
shard by shard, `pareto_front_chunks`) and by `RayFront` on a local cluster of `--workers` CPUs,
at the same budget and accuracy target; the plans are checked to be identical.

    .venv/bin/python benchmarks/ray_scale.py --sizes 1000000 --json-out bench-results/ray_scale.json
    .venv/bin/python benchmarks/ray_scale.py --sizes 1000000,10000000 --with-texts 100000

Each engine runs in a fresh process (its peak RSS is its own): wall time of the whole plan
(read, hulls, plan at the budget, plan at the target, plan shards written by Ray / assignment
kept in memory locally), Ray's cluster start reported separately (not in Ray's wall time; it includes starting one
worker process per CPU and compiling the hull kernels there, `engine.ray_plan.warm_workers`),
peak RSS (VmHWM) of the driver and of every Ray worker process. The dataset is generated in
chunks (seeded: p ~ Beta per model, cost = price x length) and not timed.

`--with-texts N`: the full `optllm plan` (fit, predict, select, plan) on N prompts with 1%
labels (the bundled overruling prompts, cycled with a suffix so each is distinct) by
`planning.build_plan` and by `engine.ray_plan.ray_build_plan`, the plans compared.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


# ---------------------------------------------------------------------- data
def generate(folder: Path, n: int, m: int, seed: int, shard_rows: int) -> dict:
    """p/cost Parquet shards (part-NNNNN.parquet) of n x m, and the budget / target used."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    rng0 = np.random.default_rng(seed)
    a, b = rng0.uniform(1, 6, m), rng0.uniform(1, 6, m)
    price = np.sort(rng0.uniform(1e-7, 3e-5, m))
    lo_c = hi_c = lo_p = hi_p = 0.0
    names = [f"m{j:02d}" for j in range(m)]
    for i, s in enumerate(range(0, n, shard_rows)):
        r = min(shard_rows, n - s)
        rng = np.random.default_rng([seed, i])
        p = rng.beta(a, b, (r, m))
        cost = price * rng.integers(20, 2000, (r, 1)) * rng.uniform(0.8, 1.2, (r, m))
        lo_c += float(cost.min(1).sum())
        hi_c += float(cost.max(1).sum())
        lo_p += float(p.min(1).sum())
        hi_p += float(p.max(1).sum())
        cols = {f"p_{k}": p[:, j] for j, k in enumerate(names)}
        cols.update({f"cost_{k}": cost[:, j] for j, k in enumerate(names)})
        pq.write_table(pa.table(cols), str(folder / f"part-{i:05d}.parquet"))
    return {"budget": lo_c + 0.3 * (hi_c - lo_c), "target": (lo_p + 0.7 * (hi_p - lo_p)) / n}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _descendants_hwm(root: int) -> list[dict]:
    """Peak RSS (VmHWM) of every live descendant process of `root` (Ray's workers, raylet...)."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], list(kids.get(root, []))
    while todo:
        pid = todo.pop()
        todo += kids.get(pid, [])
        try:
            name = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            status = {x.split(":")[0]: x.split()[1] for x in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if x.startswith(("VmHWM", "RssAnon", "RssShmem"))}
            hwm = int(status["VmHWM"])
        except (OSError, KeyError, IndexError):
            continue
        # now (the job done, the shard states still in the object store): private memory apart from
        # the object store's shared pages the process has mapped, which RSS counts too
        out.append({"pid": pid, "name": name[:60], "peak_rss_mb": hwm / 1024,
                    "rss_anon_mb": int(status.get("RssAnon", 0)) / 1024,
                    "rss_shmem_mb": int(status.get("RssShmem", 0)) / 1024})
    return out


# ---------------------------------------------------------------------- children
def child_local(folder: str, budget: float, target: float, save: str) -> dict:
    import pyarrow.parquet as pq

    from optllm.engine.ray_engine import _read_parquet, scan_parquet
    from optllm.optimize.front import pareto_front_chunks

    t0 = time.perf_counter()
    files, rows, names = scan_parquet(folder)
    f = pareto_front_chunks((_read_parquet(x, names) for x in files), models=names)
    t1 = time.perf_counter()
    ab, aa = f.at_budget(budget), f.at_accuracy(target)
    wall = time.perf_counter() - t0
    np.save(save + ".budget.npy", np.asarray(ab.models, dtype=np.int16))
    np.save(save + ".target.npy", np.asarray(aa.models, dtype=np.int16))
    del pq
    return {"engine": "local", "wall_s": wall, "front_s": t1 - t0, "plans_s": wall - (t1 - t0),
            "moves": int(f.n_moves), "driver_peak_rss_mb": _peak_mb(),
            "budget_plan": {"cost": ab.cost, "accuracy": ab.accuracy},
            "target_plan": {"cost": aa.cost, "accuracy": aa.accuracy}}


def child_ray(folder: str, budget: float, target: float, save: str, workers: int, store_mb: int) -> dict:
    import ray

    from optllm.engine.ray_engine import RayFront
    from optllm.engine.ray_plan import warm_workers
    from optllm.planning.plan import read_plan_shards

    t0 = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
             object_store_memory=store_mb * 2**20 if store_mb else None)
    warm_workers(workers)  # worker processes started and the kernels compiled: part of the start overhead
    start = time.perf_counter() - t0
    t0 = time.perf_counter()
    with RayFront(parquet=folder) as rf:
        t1 = time.perf_counter()
        ab = rf.at_budget(budget, save + ".budget")
        aa = rf.at_accuracy(target, save + ".target")
        wall = time.perf_counter() - t0
        n_rows, models = rf.n, list(rf.models)
        procs = _descendants_hwm(os.getpid())
        res = {"engine": "ray", "wall_s": wall, "cluster_start_s": start, "build_s": t1 - t0,
               "plans_s": wall - (t1 - t0), "moves": int(rf.n_moves), "shards": rf.S, "workers": rf.workers,
               "shard_state_mb": [b / 2**20 for b in rf.shard_bytes],
               "budget_plan": {"cost": ab.cost, "accuracy": ab.accuracy,
                               **{k: ab.info[k] for k in ("rounds", "gathered", "candidates")}},
               "target_plan": {"cost": aa.cost, "accuracy": aa.accuracy,
                               **{k: aa.info[k] for k in ("rounds", "gathered", "candidates")}}}
    res["driver_peak_rss_mb"] = _peak_mb()
    res["worker_peak_rss_mb"] = sorted((p["peak_rss_mb"] for p in procs if p["name"].startswith("ray::")),
                                       reverse=True)
    res["worker_private_now_mb"] = sorted((p["rss_anon_mb"] for p in procs if p["name"].startswith("ray::")),
                                          reverse=True)
    res["worker_object_store_mapped_now_mb"] = sorted((p["rss_shmem_mb"] for p in procs
                                                      if p["name"].startswith("ray::")), reverse=True)
    res["other_ray_processes"] = [p for p in procs if not p["name"].startswith("ray::")]
    ray.shutdown()
    for k in ("budget", "target"):  # read back (after timing) for the comparison
        np.save(save + f".{k}.npy", read_plan_shards(save + f".{k}", n_rows, models).astype(np.int16))
    return res


def _texts_inputs(d: Path, n: int, seed: int) -> tuple[Path, Path]:
    import pandas as pd

    from optllm.data import load

    demo = load("demo")
    idx = np.arange(n) % demo.n
    ids = [f"q{i}" for i in range(n)]
    pd.DataFrame({"id": ids, "prompt": [f"{demo.texts[j]} (#{i})" for i, j in enumerate(idx)]}).to_json(
        d / "prompts.jsonl", orient="records", lines=True)
    lab = np.random.default_rng(seed).choice(n, max(n // 100, 40), replace=False)
    rows = [{"query_id": ids[i], "model": mdl, "correct": demo.correct[idx[i], k], "cost": demo.cost[idx[i], k]}
            for i in lab for k, mdl in enumerate(demo.models)]
    pd.DataFrame(rows).to_csv(d / "labels.csv", index=False)
    return d / "prompts.jsonl", d / "labels.csv"


def child_texts(engine: str, d: str, budget: float, predictor: str, workers: int, save: str) -> dict:
    from optllm.cost import load_catalogue
    from optllm.data import load_long
    from optllm.planning import PlanSettings, build_plan, read_prompts, write_plan
    from optllm.selection import Goal

    root = Path(__file__).resolve().parents[1]
    ids, texts = read_prompts(Path(d) / "prompts.jsonl")
    lab = load_long(Path(d) / "labels.csv", require_cost=False, binary=True)
    cat = load_catalogue(root / "examples" / "models.yaml")
    goal, st = Goal(budget=budget), PlanSettings(predictor=predictor, seed=0)
    res: dict = {"engine": engine}
    t0 = time.perf_counter()
    if engine == "local":
        pl = build_plan(ids, texts, cat, lab, goal, st)
        write_plan(pl, save + ".plan")
        choice, res["timings_s"] = pl.choice, pl.planned.timings
        res["rule"] = pl.selection.rule
    else:
        import ray

        from optllm.engine.ray_plan import ray_build_plan

        t1 = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        from optllm.engine.ray_plan import warm_workers

        warm_workers(workers)
        res["cluster_start_s"] = time.perf_counter() - t1
        t0 = time.perf_counter()
        rp = ray_build_plan(ids, texts, cat, lab, goal, st, save + ".plan")
        choice, res["timings_s"] = rp.choice, rp.timings
        res["plan_info"], res["rule"] = rp.info, rp.selection.rule
        res["worker_peak_rss_mb"] = sorted((p["peak_rss_mb"] for p in _descendants_hwm(os.getpid())
                                            if p["name"].startswith("ray::")), reverse=True)
        ray.shutdown()
    res["wall_s"] = time.perf_counter() - t0
    res["driver_peak_rss_mb"] = _peak_mb()
    np.save(save + ".npy", np.asarray([-1] if choice is None else choice, dtype=np.int16))
    return res


# ---------------------------------------------------------------------- parent
def _child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                         env=os.environ)
    if out.returncode != 0:
        raise SystemExit(f"child {args[0]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000000,10000000", help="comma-separated numbers of queries")
    ap.add_argument("--models", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2, help="CPUs of the local Ray cluster")
    ap.add_argument("--shard-rows", type=int, default=250_000, help="rows per Parquet shard (= per Ray shard)")
    ap.add_argument("--object-store-mb", type=int, default=0, help="Ray object store size (0: Ray's default)")
    ap.add_argument("--with-texts", type=int, default=0, help="also the full plan with texts at this many prompts")
    ap.add_argument("--texts-budget", type=float, default=None, help="budget of the texts plan (default: 2 x N/1000 USD)")
    ap.add_argument("--predictor", default="default", help="predictor of the texts plan")
    ap.add_argument("--tmp", default=None, help="where the datasets go (default: a temporary folder)")
    ap.add_argument("--json-out", default="bench-results/ray_scale.json")
    ap.add_argument("--child", nargs="+", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        kind, *rest = a.child
        if kind == "local":
            r = child_local(rest[0], float(rest[1]), float(rest[2]), rest[3])
        elif kind == "ray":
            r = child_ray(rest[0], float(rest[1]), float(rest[2]), rest[3], int(rest[4]), int(rest[5]))
        else:
            r = child_texts(rest[0], rest[1], float(rest[2]), rest[3], int(rest[4]), rest[5])
        print(json.dumps(r))
        return
    base = Path(tempfile.mkdtemp(prefix="ray_scale.", dir=a.tmp))
    rows: list[dict] = []
    try:
        for n in (int(float(x)) for x in a.sizes.split(",")):
            d = base / f"n{n}"
            t = time.perf_counter()
            goal = generate(d, n, a.models, a.seed, a.shard_rows)
            gen_s = time.perf_counter() - t
            disk = sum(f.stat().st_size for f in d.glob("*.parquet"))
            loc = _child("local", str(d), repr(goal["budget"]), repr(goal["target"]), str(base / f"loc{n}"))
            ray_ = _child("ray", str(d), repr(goal["budget"]), repr(goal["target"]), str(base / f"ray{n}"),
                          str(a.workers), str(a.object_store_mb))
            same = {k: bool(np.array_equal(np.load(base / f"loc{n}.{k}.npy"), np.load(base / f"ray{n}.{k}.npy")))
                    for k in ("budget", "target")}
            row = {"n": n, "m": a.models, "generate_s": gen_s, "dataset_mb": disk / 2**20,
                   "shard_rows": a.shard_rows, "shards": ray_["shards"], **goal, "identical": same,
                   "ratio_ray_local": ray_["wall_s"] / loc["wall_s"], "local": loc, "ray": ray_}
            rows.append(row)
            print(f"n={n:,} x {a.models}: dataset {disk / 2**20:.0f} MB in {ray_['shards']} shards of "
                  f"{a.shard_rows:,} rows; plans identical: budget {same['budget']}, target {same['target']}")
            print(f"  local: {loc['wall_s']:.2f} s (front {loc['front_s']:.2f}, plans {loc['plans_s']:.2f}); "
                  f"peak RSS {loc['driver_peak_rss_mb']:.0f} MB")
            print(f"  ray:   {ray_['wall_s']:.2f} s (hulls {ray_['build_s']:.2f}, plans {ray_['plans_s']:.2f}) + "
                  f"cluster start {ray_['cluster_start_s']:.2f} s; driver peak RSS "
                  f"{ray_['driver_peak_rss_mb']:.0f} MB; worker peak RSS "
                  f"{', '.join(f'{x:.0f}' for x in ray_['worker_peak_rss_mb'])} MB")
            print(f"  ratio ray/local {row['ratio_ray_local']:.2f} (cluster start excluded); bisection rounds "
                  f"{ray_['budget_plan']['rounds']}/{ray_['target_plan']['rounds']}, gathered "
                  f"{ray_['budget_plan']['gathered']}/{ray_['target_plan']['gathered']} moves")
            shutil.rmtree(d, ignore_errors=True)
        texts = None
        if a.with_texts:
            n = a.with_texts
            d = base / "texts"
            d.mkdir()
            _texts_inputs(d, n, a.seed)
            B = a.texts_budget if a.texts_budget is not None else 2.0 * n / 1000
            loc = _child("texts", "local", str(d), repr(B), a.predictor, str(a.workers), str(base / "tl"))
            ray_ = _child("texts", "ray", str(d), repr(B), a.predictor, str(a.workers), str(base / "tr"))
            same = bool(np.array_equal(np.load(base / "tl.npy"), np.load(base / "tr.npy")))
            texts = {"n": n, "budget": B, "predictor": a.predictor, "identical": same,
                     "ratio_ray_local": ray_["wall_s"] / loc["wall_s"], "local": loc, "ray": ray_}
            print(f"plan with texts, n={n:,}, budget ${B:g}, predictor {a.predictor}: plans identical {same}")
            print(f"  local: {loc['wall_s']:.1f} s, peak RSS {loc['driver_peak_rss_mb']:.0f} MB; stages "
                  + ", ".join(f"{k} {v:.1f}" for k, v in loc["timings_s"].items()))
            print(f"  ray:   {ray_['wall_s']:.1f} s + cluster start {ray_['cluster_start_s']:.1f} s; driver peak RSS "
                  f"{ray_['driver_peak_rss_mb']:.0f} MB, workers {', '.join(f'{x:.0f}' for x in ray_['worker_peak_rss_mb'])}"
                  " MB; stages " + ", ".join(f"{k} {v:.1f}" for k, v in ray_["timings_s"].items()))
            print(f"  ratio ray/local {texts['ratio_ray_local']:.2f}; rule: {ray_['rule']}; plan on Ray: "
                  f"{ray_['plan_info']}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if a.json_out:
        from optllm.io import write_json

        write_json(a.json_out, {"command": " ".join(sys.argv), "workers": a.workers, "rows": rows,
                                "with_texts": texts})
        print(f"-> {a.json_out}")


if __name__ == "__main__":
    main()
