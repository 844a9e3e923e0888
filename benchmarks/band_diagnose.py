"""Where and why the whole-front band misses (issue 14, overruling at 10% labels).

    python benchmarks/band_diagnose.py overruling 0.1 16 [locate|moves|grid]

locate: per split, the band's critical value, pointwise coverage and, where the band failed,
        the worst point (estimate, realised, bound, effective trials) and the failing range;
moves:  band coverage with the labelled point matched by the share of moves instead of the
        slope (each split: slope vs moves);
grid:   band coverage with the bootstrap's max over 4000 points instead of 256.
Seeds as in `optllm coverage` (split r: seed r); default predictor, 5 folds, C = 0.9.
"""
from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np

from optllm.data import load, split
from optllm.evaluate import uncertainty as U
from optllm.evaluate.coverage import CoverageConfig
from optllm.optimize import pareto_front
from optllm.planning.core import cross_fit
from optllm.predict import fit_predict


def by_moves(front, p, cost, held, points=None):  # noqa: ANN001, ANN201 - drop-in for U.labelled_points
    t_l, t = len(held.rectifier.front) - 1, len(front) - 1
    pts = np.round(np.arange(len(front)) * t_l / max(t, 1)).astype(int)
    return pts if points is None else pts[points]


def main() -> None:
    name, frac, reps = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    mode = sys.argv[4] if len(sys.argv) > 4 else "locate"
    cfg = CoverageConfig()
    data = load(name)
    held_band = []
    for rep in range(reps):
        seed = cfg.seed + rep
        train, val, test = split(data, train=frac, val=frac, seed=seed).parts(data)
        mean, _ = fit_predict(cfg.predictor, train, val, test, seed)
        front = pareto_front(mean, test.cost, models=test.models)
        held = cross_fit(cfg.predictor, train, val, cfg.folds, seed)
        real = U.values_along(front, test.correct)
        b = U.bounds_along(front, mean, test.cost, held, 0.9, seed=seed)
        ok = bool(np.all(real >= b.lower_band - 1e-12))
        if mode == "locate":
            bad = np.flatnonzero(real < b.lower_band - 1e-12)
            line = f"split {rep}: z {b.z:.2f} band z {b.z_band:.2f} points {np.mean(real >= b.lower):.3f} band {ok}"
            if bad.size:
                i = bad[np.argmax(b.lower_band[bad] - real[bad])]
                line += (f" worst {i}/{len(front)} estimate {b.estimate[i]:.4f} realised {real[i]:.4f} "
                         f"band {b.lower_band[i]:.4f} trials {b.trials[i]:.1f} failing {bad.min()}-{bad.max()}")
            print(line, flush=True)
            held_band.append(ok)
            continue
        if mode == "moves":
            orig = U.labelled_points
            U.labelled_points = by_moves
            try:
                alt = U.bounds_along(front, mean, test.cost, held, 0.9, seed=seed)
            finally:
                U.labelled_points = orig
        else:
            t = U.labelled_points(front, mean, test.cost, held)
            alt = replace(b, z_band=held.rectifier.band(t, 0.9, seed=seed, max_points=4000))
        ok2 = bool(np.all(real >= alt.lower_band - 1e-12))
        print(f"split {rep}: band (slope, 256 points) {ok}, {mode} {ok2}", flush=True)
        held_band.append((ok, ok2))
    print("band held:", np.mean(np.array(held_band, dtype=float), axis=0))


if __name__ == "__main__":
    main()
