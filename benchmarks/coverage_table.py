"""Summarise committed `optllm coverage` outputs (bench-results/coverage/*/coverage.json) as
the Markdown table in docs/bounds.md: C = 0.9, every dataset × fraction × bound construction."""
from __future__ import annotations

import json
import sys
from pathlib import Path


def main(root: str = "bench-results/coverage", confidence: float = 0.9) -> None:
    print("| dataset | labels | splits | bound | points | band | target kept (worst) | picked @100% | saving @100% | saving @90% | budget no worse | width |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for f in sorted(Path(root).glob("*/coverage.json")):
        for c in json.loads(f.read_text())["cells"]:
            if abs(c["confidence"] - confidence) > 1e-9:
                continue
            t = c["targets"]
            nw = [v["no_worse"] for v in c["budgets"].values() if v["no_worse"] is not None]
            print(f"| {c['dataset']} | {c['fraction']:.0%} | {c['splits']} | {c['estimator']} | {c['points']:.1%} | "
                  f"{c['band']:.0%} | {min(v['kept'] for v in t.values()):.0%} | {t['100']['picked']:.0%} | "
                  f"{t['100']['saving']:.1%} | {t['90']['saving']:.1%} | {min(nw) if nw else float('nan'):.0%} | "
                  f"{c['width']:.3f} |")


if __name__ == "__main__":
    main(*sys.argv[1:2])
