"""End-to-end scale benchmark (issue 17): `optllm run` on synthetic:N x 12 with texts and 1%
labels, each size in a fresh process, printing wall time, peak resident memory and the ratio
of the whole run to featurising the same texts alone in the same process (the work no
pipeline can skip: the default predictor's TF-IDF fitted on the labelled queries, then
applied to every query).

    .venv/bin/python benchmarks/scale.py --sizes 10000,100000 --json-out bench-results/scale.json
    .venv/bin/python benchmarks/scale.py --sizes 10000000 --on-disk --train-frac 0.001 --val-frac 0.001

`--on-disk`: the world is first written (in chunks, by another process, not timed) to a wide
Parquet file, and `run` loads that file as a user's would: the numbers into memory, the texts
left on disk (`optllm.data.texts.DiskTexts`) and read a chunk at a time when predicted; the
featurising alone reads them the same way. Without it the texts are generated in memory.

Generating the synthetic texts is not timed. The budget is the knee of the predicted front
(no --budget), so every size runs the same code path.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def child(n: int, m: int, seed: int, path: str | None, train: float, val: float) -> dict:
    import numpy as np

    from optllm.data import load
    from optllm.data.texts import DiskTexts
    from optllm.evaluate.pipeline import RunConfig, run_pipeline
    from optllm.data import split
    from optllm.predict.features import fit_transform, make_featurizer

    t = time.perf_counter()
    data = load(path if path else f"synthetic:{n}x{m}")
    gen_s = time.perf_counter() - t
    cfg = RunConfig(seed=seed, train_frac=train, val_frac=val)
    t = time.perf_counter()
    res = run_pipeline(data, cfg)
    run_s = time.perf_counter() - t
    rss_run = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # the unskippable work on the same texts: fit the featuriser on the labelled part, transform all
    sp = split(data, train=cfg.train_frac, val=cfg.val_frac, seed=seed)
    train, _, _ = sp.parts(data)
    t = time.perf_counter()
    f = make_featurizer("tfidf")
    fit_transform(f, [str(x) for x in train.texts])
    if isinstance(data.texts, DiskTexts):
        for chunk in data.texts.chunks(32_768):
            f.transform(chunk)
    else:
        texts = [str(x) for x in data.texts]
        for lo in range(0, len(texts), 32_768):
            f.transform(texts[lo:lo + 32_768])
    feat_s = time.perf_counter() - t
    sel = res.selection
    return {"n": n, "m": m, "generate_s": gen_s, "run_s": run_s, "featurise_s": feat_s,
            "ratio_to_featurise": run_s / feat_s, "peak_rss_mb": rss_run,
            "timings_s": res.timings, "realised_accuracy": None if res.realised is None else res.realised.accuracy,
            "reachable": bool(sel.reachable), "n_labelled": int(np.asarray(train.correct).shape[0]),
            "texts": "on disk (Parquet, read in chunks)" if path else "in memory",
            "loaded_s" if path else "generated_s": gen_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="comma-separated numbers of queries")
    ap.add_argument("--models", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--on-disk", action="store_true", help="texts in a Parquet file, read in chunks")
    ap.add_argument("--disk-dir", default=None, help="where --on-disk writes its file (default: a temporary folder)")
    ap.add_argument("--train-frac", type=float, default=0.01)
    ap.add_argument("--val-frac", type=float, default=0.01)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--path", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child is not None:
        print(json.dumps(child(a.child, a.models, a.seed, a.path, a.train_frac, a.val_frac)))
        return
    rows = []
    print(f"{'n':>10} {'run s':>8} {'featurise s':>12} {'ratio':>6} {'peak MB':>8}  stages (s)")
    import tempfile

    for n in (int(float(x)) for x in a.sizes.split(",")):
        extra = ["--train-frac", str(a.train_frac), "--val-frac", str(a.val_frac)]
        tmp = None
        if a.on_disk:
            tmp = tempfile.TemporaryDirectory(dir=a.disk_dir)
            path = os.path.join(tmp.name, f"synthetic_{n}x{a.models}.parquet")
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import sys; from optllm.data.synthetic import write_synthetic; "
                            "write_synthetic(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))",
                            path, str(n), str(a.models), str(a.seed)], check=True, env=os.environ)
            print(f"wrote {path} ({os.path.getsize(path) / 2**20:,.0f} MB) in {time.perf_counter() - t:.1f} s")
            extra += ["--path", path]
        out = subprocess.run([sys.executable, __file__, "--child", str(n), "--models", str(a.models),
                              "--seed", str(a.seed), *extra], capture_output=True, text=True, env=os.environ)
        if tmp is not None:
            tmp.cleanup()
        if out.returncode != 0:
            print(f"{n:>10} failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
            rows.append({"n": n, "failed": out.stderr[-2000:]})
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(r)
        st = ", ".join(f"{k} {v:.1f}" for k, v in r["timings_s"].items())
        print(f"{n:>10,} {r['run_s']:>8.1f} {r['featurise_s']:>12.1f} {r['ratio_to_featurise']:>6.2f} "
              f"{r['peak_rss_mb']:>8.0f}  {st}")
    if a.json_out:
        from optllm.io import write_json

        write_json(a.json_out, {"command": " ".join(sys.argv), "rows": rows})
        print(f"wrote {a.json_out}")


if __name__ == "__main__":
    main()
