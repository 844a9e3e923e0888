"""PNG plots of fronts and bar charts, written atomically (matplotlib's Agg canvas, no
pyplot: nothing global changes and no display is needed)."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from optllm.io import write_with
from optllm.optimize.types import thin_indices

__all__ = ["plot_front", "bar_chart", "plot_calibration"]

Series = Mapping[str, "tuple[Sequence[float] | np.ndarray, Sequence[float] | np.ndarray]"]


def _figure(figsize: tuple[float, float]) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | os.PathLike[str]) -> None:
    write_with(path, lambda tmp: fig.savefig(tmp, format="png"))


def plot_front(
    path: str | os.PathLike[str],
    series: Series | None = None,
    points: Mapping[str, tuple[float, float]] | None = None,
    marks: Mapping[str, tuple[float, float]] | None = None,
    *,
    title: str = "",
    xlabel: str = "total cost (USD)",
    ylabel: str = "accuracy",
    logx: bool = False,
    max_points: int = 5000,
) -> Path:
    """Plot named (cost, accuracy) curves (fronts), labelled single points (e.g. each LLM
    alone, as dots) and highlighted marks (e.g. the chosen plan, as stars) to a PNG."""
    fig = _figure((7.0, 4.6))
    ax = fig.add_subplot()
    for name, (c, a) in (series or {}).items():
        c, a = np.asarray(c, dtype=float), np.asarray(a, dtype=float)
        if c.size > max_points:  # even thinning by index, ends kept
            idx = thin_indices(c.size, max_points)
            c, a = c[idx], a[idx]
        style = dict(marker="o", markersize=3) if c.size <= 60 else {}
        ax.plot(c, a, label=name, linewidth=1.6, **style)
    if points:
        xs = np.array([float(v[0]) for v in points.values()])
        ys = np.array([float(v[1]) for v in points.values()])
        ax.scatter(xs, ys, s=22, color="black", zorder=3, label="single LLMs" if series else None)
        for (name, _), x, y in zip(points.items(), xs, ys):
            ax.annotate(str(name), (x, y), xytext=(4, 3), textcoords="offset points", fontsize=7)
    for name, (x, y) in (marks or {}).items():
        ax.scatter([float(x)], [float(y)], s=110, marker="*", zorder=4, label=name)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower right")
    _save(fig, path)
    return Path(path)


def bar_chart(
    path: str | os.PathLike[str],
    groups: Mapping[str, Mapping[str, float]],
    *,
    ylabel: str = "",
    title: str = "",
) -> Path:
    """Grouped bars: one group per key of `groups` (e.g. dataset), one bar per inner key
    (e.g. method), to a PNG."""
    names = list(groups)
    series = list(dict.fromkeys(k for g in groups.values() for k in g))
    fig = _figure((max(5.0, 1.2 * len(names) * max(1, len(series)) / 3 + 3), 4.2))
    ax = fig.add_subplot()
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(names))
    for j, s in enumerate(series):
        vals = [float(groups[g].get(s, np.nan)) for g in names]
        ax.bar(x + (j - (len(series) - 1) / 2) * width, vals, width, label=s)
    ax.set_xticks(x, names)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    _save(fig, path)
    return Path(path)


def plot_calibration(path: str | os.PathLike[str], cells: Sequence[Any], *, title: str = "") -> None:
    """Nominal confidence (x) against what held (y) for each dataset (one panel each) and
    bound construction (colour): pointwise coverage (solid), whole-front band (dashed) and the
    target promise kept at 100% of the best LLM (dotted). `cells`: `coverage.Cell`s."""
    names = list(dict.fromkeys(c.dataset for c in cells))
    fig = _figure((3.2 * max(len(names), 1), 3.2))
    axes = fig.subplots(1, max(len(names), 1), squeeze=False)[0]
    colours = {}
    for ax, name in zip(axes, names):
        ax.plot([0.5, 1.0], [0.5, 1.0], color="0.6", lw=0.8)
        mine = [c for c in cells if c.dataset == name]
        for est in dict.fromkeys(c.estimator for c in mine):
            colour = colours.setdefault(est, f"C{len(colours)}")
            for f in sorted({c.fraction for c in mine}):
                cs = sorted((c for c in mine if c.estimator == est and c.fraction == f), key=lambda c: c.confidence)
                x = [c.confidence for c in cs]
                lab = est if f == min(c.fraction for c in mine) else None
                ax.plot(x, [c.points for c in cs], "-o", color=colour, ms=3, lw=1, label=lab)
                ax.plot(x, [c.band for c in cs], "--", color=colour, lw=0.8)
                key = max(cs[0].targets, key=float) if cs and cs[0].targets else None
                if key is not None:
                    ax.plot(x, [c.targets[key]["kept"] for c in cs], ":", color=colour, lw=0.8)
        ax.set_xlim(0.75, 1.0)
        ax.set_ylim(0.5, 1.01)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("nominal confidence", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("realised share (— points, -- band, ··· target)", fontsize=8)
    axes[0].legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=9)
    _save(fig, path)
