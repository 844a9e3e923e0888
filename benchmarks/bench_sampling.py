"""Does a diverse labelled sample beat a random one? (issue 8, `optllm sample`)

For each dataset, sample size and seed: choose the labelled queries with `random` and with
`diverse` (`optllm.sample.choose_sample` on TF-IDF/SVD features: `kmeans` = the prompt nearest
each k-means centre, `stratified` = random draws inside k-means clusters in proportion to
their sizes), fit simple predictors on those labels, and score their probabilities on every
other query (Brier score over all models, lower is better). Printed: random's mean ± standard
error over seeds, then per method its mean and the paired difference to random (± s.e.,
and on how many seeds it was better).

Predictors: `base` (per-model rate: only the labels' balance matters), `knn` and `logistic`
(optllm.predict, fitted on the prompt texts with their own TF-IDF).

    .venv/bin/python benchmarks/bench_sampling.py                      # overruling + logparsing
    .venv/bin/python benchmarks/bench_sampling.py --datasets overruling --seeds 5 --sizes 1% 2%
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from optllm.data import load
from optllm.predict import brier, make_predictor
from optllm.sample import choose_sample, parse_size, text_features


def run(dataset: str, sizes: list[str], seeds: int, predictors: list[str], methods: list[str]) -> list[dict]:
    data = load(dataset)
    texts = list(data.texts)
    t0 = time.time()
    feats = text_features(texts, seed=0)  # shared by every diverse draw (unsupervised, all prompts)
    print(f"# {dataset}: n={data.n}, m={data.m}; features {feats.shape} in {time.time() - t0:.1f}s", flush=True)
    strategies = ["random"] + [f"diverse:{m}" for m in methods]
    rows = []
    se = lambda x: float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")  # noqa: E731
    for size in sizes:
        k = parse_size(size, data.n)
        scores: dict[tuple[str, str], list[float]] = {}
        for seed in range(seeds):
            for strategy in strategies:
                kind, _, method = strategy.partition(":")
                idx = choose_sample(texts, size, kind, seed=seed, method=method or "stratified", features=feats)
                rest = np.setdiff1d(np.arange(data.n), idx)
                Y = data.correct[idx]
                for name in predictors:
                    pred = make_predictor(name, seed=seed).fit([texts[i] for i in idx], Y, models=data.models)
                    p = pred.predict([texts[i] for i in rest]).mean
                    scores.setdefault((name, strategy), []).append(brier(data.correct[rest], p))
        for name in predictors:
            r = np.array(scores[(name, "random")])
            line = f"{dataset:11s} {size:>4s} (k={k:4d}) {name:9s} random {r.mean():.4f}±{se(r):.4f}"
            for strategy in strategies[1:]:
                d = np.array(scores[(name, strategy)])
                diff = d - r
                rows.append({"dataset": dataset, "size": size, "k": k, "predictor": name, "strategy": strategy,
                             "random": float(r.mean()), "random_se": se(r), "diverse": float(d.mean()),
                             "diverse_se": se(d), "diff": float(diff.mean()), "diff_se": se(diff),
                             "diverse_wins": int((diff < 0).sum()), "seeds": seeds})
                line += (f" | {strategy.split(':')[1]} {d.mean():.4f} ({diff.mean():+.4f}±{se(diff):.4f}, "
                         f"better {int((diff < 0).sum())}/{seeds})")
            print(line, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["overruling", "logparsing"])
    ap.add_argument("--sizes", nargs="+", default=["1%", "2%", "5%"])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--predictors", nargs="+", default=["base", "knn", "logistic"])
    ap.add_argument("--methods", nargs="+", default=["kmeans", "stratified"],
                    help="diverse methods to compare with random (kmeans, stratified, farthest)")
    a = ap.parse_args(argv)
    t0 = time.time()
    for ds in a.datasets:
        try:
            run(ds, a.sizes, a.seeds, a.predictors, a.methods)
        except Exception as e:  # noqa: BLE001 - a missing dataset should not hide the others
            print(f"# {ds}: skipped ({type(e).__name__}: {e})", flush=True)
    print(f"# total {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
