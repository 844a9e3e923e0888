"""How many Nyström landmarks the kernel predictors need (issue 17): the held-out Brier score
and fit time of `logistic` and `irt` with L landmarks against the exact kernel, on labelled
samples larger than L. The default (`optllm.predict.kernel.LANDMARKS`) is the smallest L whose
Brier score is within noise of the exact kernel's on every row.

    .venv/bin/python benchmarks/landmarks.py --data logparsing,synthetic:60000x12 \
        --train 2000,4000 --landmarks 256,512,1024,2048,0 --json-out bench-results/landmarks.json

`0` is the exact kernel. Each row: one random labelled sample (seeded) and 10,000 other
queries of the same dataset to score on; `se` is the standard error of the Brier difference
to the exact kernel over those queries (paired), so "within noise" means |diff| < 2 se.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def main() -> None:
    from optllm.data import load
    from optllm.predict import make_predictor
    from optllm.predict.features import fit_transform, make_featurizer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="logparsing,synthetic:60000x12")
    ap.add_argument("--train", default="2000,4000", help="labelled sample sizes")
    ap.add_argument("--landmarks", default="256,512,1024,2048,0", help="0 = exact kernel")
    ap.add_argument("--predictors", default="logistic,irt")
    ap.add_argument("--max-rank", type=int, default=256, help="the predictors' rank cap; 0 = none")
    ap.add_argument("--test", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json-out", default=None)
    a = ap.parse_args()
    rows = []
    print(f"{'data':<22} {'n_train':>7} {'predictor':<9} {'L':>6} {'fit s':>7} {'brier':>8} {'- exact':>9} {'se':>7}")
    for name in a.data.split(","):
        data = load(name)
        texts = [str(x) for x in data.texts]
        Y = np.asarray(data.correct, dtype=float)
        for n_tr in (int(x) for x in a.train.split(",")):
            idx = np.random.default_rng(a.seed).permutation(data.n)
            tr, te = idx[:n_tr], idx[n_tr:n_tr + a.test]
            f = make_featurizer("tfidf")
            Ftr = fit_transform(f, [texts[i] for i in tr])
            Fte = f.transform([texts[i] for i in te])
            for pname in a.predictors.split(","):
                errs = {}
                for L in (int(x) for x in a.landmarks.split(",")):
                    p = make_predictor(pname, seed=a.seed, featurizer=None, landmarks=L or None,
                                       max_rank=a.max_rank or None)
                    t = time.perf_counter()
                    p.fit(Ftr, Y[tr], models=data.models)
                    fit_s = time.perf_counter() - t
                    mean = p.predict_mean(Fte)
                    errs[L] = np.nanmean((mean - Y[te]) ** 2, axis=1)
                    rows.append({"data": name, "n_train": n_tr, "predictor": pname, "landmarks": L or None,
                                 "max_rank": a.max_rank or None,
                                 "fit_s": fit_s, "brier": float(errs[L].mean())})
                exact = errs.get(0)
                for r in rows:
                    if r["data"] == name and r["n_train"] == n_tr and r["predictor"] == pname:
                        L = r["landmarks"] or 0
                        if exact is not None:
                            d = errs[L] - exact
                            r["diff_to_exact"] = float(d.mean())
                            r["se"] = float(d.std(ddof=1) / np.sqrt(d.size))
                        print(f"{name:<22} {n_tr:>7} {pname:<9} {L or 'exact':>6} {r['fit_s']:>7.2f} {r['brier']:>8.5f} "
                              f"{r.get('diff_to_exact', float('nan')):>+9.5f} {r.get('se', float('nan')):>7.5f}", flush=True)
    if a.json_out:
        from optllm.io import write_json

        write_json(a.json_out, {"command": " ".join(sys.argv), "rows": rows})


if __name__ == "__main__":
    main()
