"""How fast is the exact front? (issue 4, same function as `optllm bench-speed`)

Times `optllm.optimize.pareto_front` on synthetic n × m probabilities against
`np.argsort` of the same n·m floats in the same run (best of --repeat), with the peak
extra memory (tracemalloc) against the input arrays. Goal: 10^6 × 12 at ≤ 1.0× argsort.

    .venv/bin/python benchmarks/bench_speed.py                          # 1e4, 1e5, 1e6 × 12, 1e6 × 40
    .venv/bin/python benchmarks/bench_speed.py --sizes 1e6x12 --backend numpy --json out/speed.json
"""
from __future__ import annotations

import argparse

from optllm.cli.front_cmds import print_speed_table
from optllm.io import write_json
from optllm.optimize.speed import DEFAULT_SIZES, bench_speed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), help="n×m sizes, e.g. 1e6x12")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", default="auto", choices=["auto", "numba", "numpy"])
    ap.add_argument("--paper", action="store_true", help="also time the paper's OptLLM-M (n ≤ --paper-max-n)")
    ap.add_argument("--paper-max-n", type=int, default=100_000)
    ap.add_argument("--json", dest="json_path", default=None, help="write the rows to this JSON file")
    a = ap.parse_args()
    rows = bench_speed(a.sizes, repeat=a.repeat, seed=a.seed, backend=a.backend, paper=a.paper,
                       paper_max_n=a.paper_max_n, progress=lambda s: print(s, flush=True))
    print_speed_table(rows)
    if a.json_path:
        write_json(a.json_path, {"rows": rows, "repeat": a.repeat, "seed": a.seed})


if __name__ == "__main__":
    main()
