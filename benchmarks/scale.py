"""End-to-end scale benchmark (issue 17): `optllm run` on synthetic:N x 12 with texts and 1%
labels, each size in a fresh process, printing wall time, peak resident memory and the ratio
of the whole run to featurising the same texts alone in the same process (the work no
pipeline can skip: the default predictor's TF-IDF fitted on the labelled queries, then
applied to every query).

    .venv/bin/python benchmarks/scale.py --sizes 10000,100000 --json-out bench-results/scale.json

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


def child(n: int, m: int, seed: int) -> dict:
    import numpy as np

    from optllm.data import load
    from optllm.evaluate.pipeline import RunConfig, run_pipeline
    from optllm.data import split
    from optllm.predict.features import fit_transform, make_featurizer

    t = time.perf_counter()
    data = load(f"synthetic:{n}x{m}")
    gen_s = time.perf_counter() - t
    cfg = RunConfig(seed=seed)
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
    texts = [str(x) for x in data.texts]
    for lo in range(0, len(texts), 32_768):
        f.transform(texts[lo:lo + 32_768])
    feat_s = time.perf_counter() - t
    sel = res.selection
    return {"n": n, "m": m, "generate_s": gen_s, "run_s": run_s, "featurise_s": feat_s,
            "ratio_to_featurise": run_s / feat_s, "peak_rss_mb": rss_run,
            "timings_s": res.timings, "realised_accuracy": None if res.realised is None else res.realised.accuracy,
            "reachable": bool(sel.reachable), "n_labelled": int(np.asarray(train.correct).shape[0])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000", help="comma-separated numbers of queries")
    ap.add_argument("--models", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child is not None:
        print(json.dumps(child(a.child, a.models, a.seed)))
        return
    rows = []
    print(f"{'n':>10} {'run s':>8} {'featurise s':>12} {'ratio':>6} {'peak MB':>8}  stages (s)")
    for n in (int(float(x)) for x in a.sizes.split(",")):
        out = subprocess.run([sys.executable, __file__, "--child", str(n), "--models", str(a.models),
                              "--seed", str(a.seed)], capture_output=True, text=True, env=os.environ)
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


if __name__ == "__main__":
    main()
